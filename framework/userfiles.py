"""Files and folders a user names: read, check and write them with one-line errors.

Every path that comes from the command line or a config (a config, a scenario, an
events or blackout CSV, ``output.dir``, a journal, a run folder, an export folder)
goes through here, so that a missing file, a folder where a file is expected, a
FIFO, a file the user cannot read, a binary or non-UTF-8 file, an empty file or a
file over its size limit is one line naming the file (and the config key, when
there is one) and what is wrong, never a traceback or a hang.

The error class is the caller's (``ConfigError`` for configs, ``JournalError`` for
journals...), so the exit code stays the one the CLI documents for that input.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from strikebench.errors import ConfigError, StrikebenchError

__all__ = [
    "MAX_CSV_BYTES",
    "label",
    "os_problem",
    "read_text",
    "read_bytes",
    "check_file",
    "check_dir",
    "prepare_output_dir",
    "check_output_file",
    "make_dir",
    "write_atomic",
]

#: Size limit of a CSV a user names (events calendar, blackout calendar): 16 MiB.
MAX_CSV_BYTES = 16 * 1024 * 1024

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def label(path, key: str | None = None) -> str:
    """How an error names the input: ``events.calendar 'x.csv'`` or just ``x.csv``."""
    return f"{key} '{os.fspath(path)}'" if key else os.fspath(path)


def os_problem(exc: OSError, *, want: str = "file") -> str:
    """What an OSError means to the user, in a few words."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENOENT:
        return f"no such {want}"
    if code == errno.EISDIR:
        return f"is a folder, expected {_a(want)}"
    if code == errno.ENOTDIR:
        return "a part of the path is not a folder" if want != "folder" else "is not a folder"
    if code == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop)"
    if code == errno.EROFS:
        return "read-only file system"
    if code == errno.ENOSPC:
        return "no space left on the device"
    if code == errno.ENAMETOOLONG:
        return "the path is too long"
    if code == errno.EEXIST:
        return "already exists"
    return (exc.strerror or type(exc).__name__).lower()


def _a(what: str) -> str:
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what


def _stat(path, key, what: str, error) -> os.stat_result:
    p = os.fspath(path)
    try:
        return os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(p):
            raise error(f"{label(path, key)}: a symbolic link to a missing {what}") from None
        raise error(f"{label(path, key)}: {os_problem(exc, want=what)}") from None
    except ValueError:  # an embedded NUL byte
        raise error(f"{label(path, key)}: not a valid path") from None


def check_file(path, *, what: str = "file", key: str | None = None, error=ConfigError,
               max_bytes: int | None = None, nonempty: bool = False) -> os.stat_result:
    """The path is an existing regular file (not a folder, FIFO, device), within ``max_bytes``
    (and, with ``nonempty``, not empty)."""
    st = _stat(path, key, what, error)
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{label(path, key)}: is a folder, expected {_a(what)}")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise error(f"{label(path, key)}: is {kind}, expected {_a(what)}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{label(path, key)}: {_size(st.st_size)} is over the {_size(max_bytes)} limit of {_a(what)}")
    if nonempty and st.st_size == 0:
        raise error(f"{label(path, key)}: empty file, expected {_a(what)}")
    return st


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n} bytes"


def read_bytes(path, *, what: str = "file", key: str | None = None, error=ConfigError,
               max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file; never blocks on a FIFO (it is refused before opening)."""
    check_file(path, what=what, key=key, error=error, max_bytes=max_bytes)
    try:
        # O_NONBLOCK: if the path is swapped for a FIFO after the check, open() still returns
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{label(path, key)}: {os_problem(exc, want=what)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{label(path, key)}: is not a regular file, expected {_a(what)}")
        limit = max_bytes + 1 if max_bytes is not None else -1
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit)
    except OSError as exc:
        raise error(f"{label(path, key)}: cannot read: {os_problem(exc, want=what)}") from None
    finally:
        os.close(fd)
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{label(path, key)}: over the {_size(max_bytes)} limit of {_a(what)}")
    return data


def read_text(path, *, what: str = "file", key: str | None = None, error=ConfigError,
              max_bytes: int | None = None, allow_empty: bool = False) -> str:
    """UTF-8 text of a regular file (a leading BOM is dropped), refusing binary, non-UTF-8 and empty files."""
    data = read_bytes(path, what=what, key=key, error=error, max_bytes=max_bytes)
    return decode_text(data, path, what=what, key=key, error=error, allow_empty=allow_empty)


def decode_text(data: bytes, path, *, what: str = "file", key: str | None = None, error=ConfigError,
                allow_empty: bool = False) -> str:
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise error(f"{label(path, key)}: a binary file (NUL byte at offset {at}), expected a text {what}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"{label(path, key)}: not UTF-8 text (line {line}, byte {exc.start}: "
                    f"0x{data[exc.start]:02x}); save it as UTF-8") from None
    if not allow_empty and not text.strip():
        raise error(f"{label(path, key)}: the {what} is empty")
    return text


def check_dir(path, *, what: str = "folder", key: str | None = None, error=ConfigError) -> None:
    """The path is an existing folder we can list."""
    st = _stat(path, key, what, error)
    if not stat.S_ISDIR(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a file")
        raise error(f"{label(path, key)}: is {kind}, expected {_a(what)}")
    if not os.access(os.fspath(path), os.R_OK | os.X_OK):
        raise error(f"{label(path, key)}: permission denied")


def prepare_output_dir(path, *, key: str | None = None, error=ConfigError) -> None:
    """Check, creating nothing, that ``path`` is or can become a folder we can write in.

    The folder itself, or its nearest existing ancestor, must be a writable folder; a
    regular file anywhere on the way is named.
    """
    p = Path(os.fspath(path))
    probe = p
    while True:
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                raise error(f"{label(path, key)}: no such folder") from None
            probe = probe.parent
            continue
        except OSError as exc:
            raise error(f"{label(path, key)}: {os_problem(exc, want='folder')}") from None
        except ValueError:
            raise error(f"{label(path, key)}: not a valid path") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        where = "is a file" if probe == p else f"'{probe}' is a file"
        raise error(f"{label(path, key)}: {where}, expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == p else f" ('{probe}')"
        raise error(f"{label(path, key)}: folder{where} is not writable (permission denied)")


def check_output_file(path, *, key: str | None = None, error=ConfigError) -> None:
    """A file we are about to write: not a folder, and its folder can be written in."""
    p = Path(os.fspath(path))
    if p.is_dir():
        raise error(f"{label(path, key)}: is a folder, expected a file to write")
    prepare_output_dir(p.parent if str(p.parent) else ".", key=key, error=error)


def make_dir(path, *, key: str | None = None, error=ConfigError, exist_ok: bool = True) -> list[Path]:
    """Create a folder and its missing parents; returns the folders it created (outermost first),
    so a failed start can remove exactly those."""
    p = Path(os.fspath(path))
    missing = []
    probe = p
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    try:
        p.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as exc:
        raise error(f"{label(path, key)}: cannot create the folder: {os_problem(exc, want='folder')}") from None
    return list(reversed(missing))


def remove_created(folders: list[Path]) -> None:
    """Undo :func:`make_dir`: remove the folders it created, innermost first, and only if empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


def write_atomic(path, data: bytes | str, *, error=StrikebenchError) -> None:
    """Write a file whole or not at all: a temporary file beside it, then a rename."""
    p = Path(os.fspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    except OSError as exc:
        raise error(f"{p}: cannot write: {os_problem(exc, want='folder')}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # the mode a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, p)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise error(f"{p}: cannot write: {os_problem(exc)}") from None
