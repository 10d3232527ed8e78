"""The run journal: every decision, snapshot, order, fill and trade of a run, in one SQL database.

One module writes and reads it, so another backend (PostgreSQL by URL) can follow
without touching the engine, the plugin or the report. Today the URL is
``sqlite:///relative/path.sqlite``, ``sqlite:////absolute/path.sqlite`` or a plain
file path.

Storage rules (see docs/journal.md for every table and column):

* times are ISO 8601 text with their UTC offset (``2023-03-14T10:00:00-04:00``);
  session days are ``YYYY-MM-DD``;
* money is exact decimal text, never a binary float: dollars with 2 places
  (``'-252.56'``), prices per combo in index points (``'0.50'``);
  ``entry_credit`` is positive for a credit, ``exit_debit`` positive when closing
  cost money (the same numbers a trader quotes);
* a chain snapshot is stored once per checksum, losslessly, as a compact columnar
  blob (format ``columns-lz4``: each column's raw little-endian buffer, float bytes
  shuffled, one LZ4 frame; see :func:`snapshot_to_bytes`), and
  :meth:`Journal.load_snapshot` rebuilds a :class:`ChainSnapshot` and checks that its
  checksum is the stored one. Journals written before this format hold ``columns-zlib``
  (the same layout in one zlib stream) or ``parquet`` blobs, which are still read;
* each event is one transaction (WAL mode), or, for a backtest, transactions of whole
  sessions (:meth:`Journal.commit_per_session`: each event a savepoint inside the
  open transaction, committed at a session's end when the last commit is a quarter
  second old (:meth:`Journal.session_done`), on close and when the run is interrupted);
  the ``runs`` row says ``completed = 0`` until the run ends, so a crashed run reads as
  incomplete and holds whole sessions: every one it finished up to its last commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import math
import os
import re
import sqlite3
import struct
import subprocess
import threading
import time
import weakref
import zlib
from contextlib import contextmanager
from dataclasses import is_dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import Enum
from json.encoder import c_make_encoder, encode_basestring_ascii
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pandas as pd

from strikebench.api import Candidate
from strikebench.errors import StrikebenchError
from strikebench.journal_db import (POSTGRES, SQLITE, PgConnection, backend_of, column_names, insert_id, mask_url,
                                    revision, sqlite_path, table_names)
from strikebench.journal_schema import ALEMBIC_VERSION_DDL, HEAD_REVISION, REVISIONS, TABLES, sqlite_ddl

__all__ = [
    "Journal",
    "JournalError",
    "JOURNAL_FILE",
    "SCHEMA_VERSION",
    "dollars_text",
    "points_text",
    "iso_time",
    "to_json",
    "find_journal",
    "open_read_only",
    "check_journal_target",
    "ReadOnlyJournal",
    "split_run",
    "stored_url",
    "code_version",
]

JOURNAL_FILE = "journal.sqlite"
JOURNAL_URL_FILE = "journal.url"  # written in the run folder when the journal lives elsewhere
SCHEMA_VERSION = 1
SNAPSHOT_FORMAT = "columns-lz4"
#: what load_snapshot reads: columns-zlib (the same layout, zlib: journals of 2026-12-02 before the second speed
#: stop of issue 15) and parquet (journals before issue 15) are still read
SNAPSHOT_FORMATS = ("columns-lz4", "columns-zlib", "parquet")
_NY = "America/New_York"
_CENT = Decimal("0.01")
_POINT_PLACES = Decimal("0.0001")


class JournalError(StrikebenchError):
    """The journal cannot be opened, is missing, or holds something inconsistent."""

    exit_code = 6


# ------------------------------------------------------------------ encoding
def _decimal(value) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, np.integer)):
        return Decimal(int(value))
    f = float(value)
    if not math.isfinite(f):
        raise JournalError(f"cannot store a non-finite amount ({value!r}) in the journal")
    return Decimal(repr(f))


def _two_places(f: float) -> str | None:
    """A finite float's exact decimal text with 2 places when its shortest repr has at most 2 decimals and no
    exponent (``1.5`` -> ``'1.50'``, ``-3.0`` -> ``'-3.00'``, zero -> ``'0.00'``): what quantizing
    ``Decimal(repr(f))`` to cents gives, exactly, since nothing is rounded; None otherwise (the caller's
    Decimal path decides)."""
    text = repr(f)
    head, dot, tail = text.partition(".")
    if not dot or len(tail) > 2 or "e" in tail or "n" in text:  # 'inf', 'nan', '1e+16', '1.5e-07'
        return None
    if f == 0:
        return "0.00"
    return head + "." + tail + "0" if len(tail) == 1 else text


#: the text of floats dollars_text / points_text gave before, by value: a run's prices and amounts repeat (tick
#: grids, strikes, fees). The text is a function of the float's value (0.0 and -0.0, the only equal floats of
#: different bits, both write '0.00'); NaN/inf are never kept. Cleared when full.
_DOLLARS: dict = {}
_POINTS: dict = {}
_TEXT_MEMO = 8192


def dollars_text(value) -> str | None:
    """Dollars as exact text with 2 places: ``-252.56`` -> ``'-252.56'`` (None stays None)."""
    if value is None:
        return None
    if type(value) is float:
        text = _DOLLARS.get(value)
        if text is not None:
            return text
        text = _two_places(value)
        if text is None:
            text = _dollars_decimal(value)  # raises for NaN/inf: nothing kept
        if len(_DOLLARS) >= _TEXT_MEMO:
            _DOLLARS.clear()
        _DOLLARS[value] = text
        return text
    return _dollars_decimal(value)


def _dollars_decimal(value) -> str:
    d = _decimal(value).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return format(d, "f") if d != 0 else "0.00"


def cents_text(cents: int) -> str:
    """Integer cents as dollars text: ``-25256`` -> ``'-252.56'``."""
    sign = "-" if cents < 0 else ""
    c = abs(int(cents))
    return f"{sign}{c // 100}.{c % 100:02d}"


def text_cents(text: str | None) -> int | None:
    """Dollars text back to integer cents (exact)."""
    if text is None:
        return None
    return int((Decimal(text) * 100).to_integral_value())


def points_text(value) -> str | None:
    """A price in index points as text: 2 places (``'0.50'``), up to 4 when an average needs them."""
    if value is None:
        return None
    t = type(value)
    if t is float or t is np.float64:  # the usual case: a price on its tick grid ('1.45'), without Decimal
        f = float(value)
        text = _POINTS.get(f)
        if text is not None:
            return text
        if not math.isfinite(f):
            return None
        text = _two_places(round(f, 6))
        if text is None:
            text = _points_decimal(f)
        if len(_POINTS) >= _TEXT_MEMO:
            _POINTS.clear()
        _POINTS[f] = text
        return text
    return _points_decimal(value)


def _points_decimal(value) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    d = _decimal(round(float(value), 6) if not isinstance(value, Decimal) else value)
    two = d.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    if two == d:
        return "0.00" if two == 0 else format(two, "f")
    text = format(d.quantize(_POINT_PLACES, rounding=ROUND_HALF_EVEN), "f")
    while text[-1] == "0" and len(text.partition(".")[2]) > 2:  # '1.1250' -> '1.125'
        text = text[:-1]
    return text


#: text of the aware datetimes iso_time saw last, by (datetime, tzinfo, fold): a run's events repeat its bars' times
_ISO_TEXT: dict = {}
#: (the aware time iso_time formatted last, its text): a bar's decision, order events and fills mostly hand in the
#: same datetime object one after another (two thirds of the calls of the four strategies), found by identity
_ISO_LAST: tuple = (None, None)


def iso_time(value) -> str | None:
    """ISO 8601 with the UTC offset. Naive times are taken as America/New_York (the engine's zone)."""
    global _ISO_LAST
    if value is None:
        return None
    last = _ISO_LAST
    if value is last[0]:  # the same (immutable) object: the same text
        return last[1]
    t = type(value)
    if t is pd.Timestamp and value.tzinfo is not None and not value.nanosecond:
        # snapshots' times: nearly every one a new instant, so a memo's key would cost a Timestamp's hash for a miss.
        # Timestamp.isoformat writes its datetime part with datetime.isoformat and adds nanoseconds only when there
        # are any: without them its text is its datetime's, made at about half the cost
        text = value.to_pydatetime().isoformat()
        _ISO_LAST = (value, text)
        return text
    if (t is dt.datetime or t is pd.Timestamp) and value.tzinfo is not None:
        # the engine's clock (datetimes), snapshots' times (Timestamps): equal aware times are the same instant;
        # with the same tzinfo and fold they have the same wall time and offset, so the same text (fold: 01:30 of
        # a fall-back day twice, equal under one tzinfo). A Timestamp equal to a datetime has no nanoseconds and
        # writes the datetime's text; one with nanoseconds equals only Timestamps with the same
        key = (value, value.tzinfo, value.fold)
        text = _ISO_TEXT.get(key)
        if text is None:
            if len(_ISO_TEXT) >= 4096:
                _ISO_TEXT.clear()
            text = _ISO_TEXT[key] = value.isoformat()  # the same text as pd.Timestamp(value).isoformat()
        _ISO_LAST = (value, text)  # one assignment: a reader on another thread sees an old pair or this one
        return text
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(_NY)
    return ts.isoformat()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (dt.datetime, pd.Timestamp)):
        return iso_time(obj)
    if isinstance(obj, (dt.date, dt.time)):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if hasattr(obj, "occ_symbol"):  # an OptionContract
        return obj.occ_symbol.strip()
    if hasattr(obj, "contract") and hasattr(obj, "ratio"):  # a Leg
        return {"occ_symbol": obj.contract.occ_symbol.strip(), "ratio": int(obj.ratio)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if is_dataclass(obj):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    return str(obj)


def _clean(obj):
    """NaN/inf are not JSON: store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


_JSON_SCALARS = (str, int, type(None))


def _json_key(k) -> str:
    """A dict key as json.dumps writes it (True -> 'true', 1.5 -> '1.5')."""
    if isinstance(k, str):
        return k
    if k is True or k is False or k is None:
        return json.dumps(k)
    if isinstance(k, (int, float)):
        return json.dumps(float(k) if isinstance(k, float) else int(k))
    return str(k)


def _plain(obj):
    """Plain JSON data in one pass: records through :func:`_json_default`, NaN/inf as None."""
    t = type(obj)  # the exact built-in types first (what decisions' candidates hold): no isinstance chain
    if t is str or t is int or t is bool or obj is None:
        return obj
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is dict:
        return {k if type(k) is str else _json_key(k): _plain(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [_plain(v) for v in obj]
    return _plain_any(obj)


def _plain_any(obj):
    if isinstance(obj, _JSON_SCALARS):  # bool is an int
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {_json_key(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return _plain(_json_default(obj))


#: the exact types JSON writes as they are (a subclass such as numpy's float64 goes through :func:`_plain`)
_JSON_LEAVES = frozenset((str, int, float, bool, type(None)))


def _json_encoder(sort_keys: bool):
    """``JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), allow_nan=False).encode``, with json's C encoder made
    once instead of on every call (``JSONEncoder.iterencode`` builds it, a closure and a markers dict each time:
    ~1.3 us of a small list's ~2.5). The same C code writes the text; only the circular-reference check is left out
    (the journal's values are trees: :func:`_is_plain` walks them first, the fixed-shape columns are built here)."""
    reference = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)
    if c_make_encoder is None:  # pragma: no cover - CPython without _json
        return reference.encode
    encoder = c_make_encoder(None, reference.default, encode_basestring_ascii, None, ":", ",", sort_keys, False,
                             False)
    join = "".join

    def encode(obj) -> str:
        return join(encoder(obj, 0))

    return encode


_ENCODERS = {sort: _json_encoder(sort) for sort in (True, False)}


def _orjson_text(sort_keys: bool):
    """json's text of plain data (:func:`_is_plain`), NaN/inf as null (as :func:`_plain` makes them), written by orjson
    when its text is json's, else None (the caller asks json's encoder then).

    orjson writes a decision's candidates about ten times faster than json's own C encoder (~6 us against ~60). Its
    text is json's for such data but in three cases, each seen in the bytes and handed back to json: non-ASCII text
    (orjson writes UTF-8, json ``\\uXXXX``), DEL (json escapes it) and floats below 1e-4 or from 1e16 (repr writes
    them as ``9.999e-05``, ``1.5e-07``, ``1e+16``; orjson as ``0.00009999``, ``1.5e-7``, ``1e+16``: a text with ``0.0000``
    or an ``e`` and a sign after a digit goes to json, so a string holding ``1e-5`` does too). A value orjson refuses (an int past 64 bits, a lone surrogate, nesting past 255, any type but the exact
    built-in ones) goes to json as well.
    """
    dumps, error = orjson.dumps, orjson.JSONEncodeError
    # only the exact built-in types: a dataclass, a date or a subclass (numpy's float64, an enum) raises here too
    option = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
    if sort_keys:
        option |= orjson.OPT_SORT_KEYS
    exponent = re.compile(rb"e[-+]").search

    def text(obj) -> str | None:
        try:
            out = dumps(obj, option=option)
        except error:
            return None
        if not out.isascii() or b"\x7f" in out or b"0.0000" in out:  # (0.0000: orjson's 9.999e-05)
            return None
        m = exponent(out)
        while m is not None:
            i = m.start()
            if 48 <= out[i - 1] <= 57:  # (i > 0: the text starts with a quote, a bracket or a digit before any e)
                return None
            m = exponent(out, i + 2)
        return out.decode()

    return text


_ORJSON = {sort: _orjson_text(sort) for sort in (True, False)}


def _is_plain(obj) -> bool:
    """True when ``obj`` is already what :func:`_plain` returns for it, up to NaN/inf: dicts with str keys, lists,
    tuples and exact built-in scalars only (then its JSON text is json's own, in one C pass)."""
    t = type(obj)
    if t is dict:
        leaves = _JSON_LEAVES
        for k, v in obj.items():
            if type(k) is not str or (type(v) not in leaves and not _is_plain(v)):
                return False
        return True
    if t is list or t is tuple:
        leaves = _JSON_LEAVES
        for v in obj:
            if type(v) not in leaves and not _is_plain(v):
                return False
        return True
    return t in _JSON_LEAVES


def to_json(obj, *, sort_keys: bool = True) -> str:
    """Canonical JSON text (sorted keys, exact float repr, NaN as null) of plain data and records."""
    return _json_text(obj, sort_keys, _is_plain(obj))


def _json_text(obj, sort_keys: bool, plain: bool) -> str:
    """:func:`to_json` of ``obj``, ``plain`` its :func:`_is_plain`."""
    if plain:  # nothing to convert: json's text of it as is, a NaN/inf float as null
        text = _ORJSON[sort_keys](obj)
        if text is not None:
            return text
        try:
            return _ENCODERS[sort_keys](obj)
        except ValueError:
            pass
    return json.dumps(_plain(obj), sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


def _credit_text(credit) -> str | None:
    """A candidate's credit as decimal text (``format(_decimal(credit), "f")``); None when not finite."""
    if type(credit) is float:
        if not math.isfinite(credit):
            return None
        text = repr(credit)
        if "e" not in text:  # the shortest repr in positional notation is the Decimal's own text
            return text
    elif not math.isfinite(float(credit)):
        return None
    return format(_decimal(credit), "f")


def candidates_json(candidates) -> str:
    """Candidates of a decision as canonical JSON; ``credit`` as decimal text (index points)."""
    out = []
    plain = True  # every item checked plain (:func:`_is_plain`) field by field as it is built
    leaves = _JSON_LEAVES
    for c in candidates or ():
        walk = True  # (another record: _is_plain of the item)
        if isinstance(c, dict):
            item = dict(c)
        elif type(c) is Candidate:  # the API's record: its fields as they are (a tuple and a dict as they are:
            # json writes a tuple as a list, and nothing here changes them)
            description, legs, score, details = c.description, c.legs, c.score, c.details
            if type(legs) is not tuple:
                legs = list(legs or ())
            if type(details) is not dict:
                details = dict(details or {})
            item = {"description": description, "legs": legs, "score": score, "credit": c.credit, "details": details}
            # _is_plain(item), field by field (the credit below)
            plain = plain and type(description) in leaves and type(score) in leaves and _is_plain(legs) and \
                _is_plain(details)
            walk = False
        else:
            item = {"description": c.description if hasattr(c, "description") else str(c),  # no repr per candidate
                    "legs": list(getattr(c, "legs", ()) or ()),
                    "score": getattr(c, "score", None), "credit": getattr(c, "credit", None),
                    "details": dict(getattr(c, "details", {}) or {})}
        credit = item.get("credit")
        if credit is not None and not isinstance(credit, str):
            item["credit"] = credit = _credit_text(credit)
        plain = plain and (_is_plain(item) if walk else type(credit) in leaves)
        out.append(item)
    return _json_text(out, True, plain)


def code_version() -> tuple[str, str | None]:
    """(strikebench version, git commit of the source tree with '+dirty' or None)."""
    import importlib.metadata as md

    try:
        version = md.version("strikebench")
    except md.PackageNotFoundError:  # pragma: no cover - source tree without install
        version = "0+unknown"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        if commit:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            commit = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        commit = None
    return version, commit


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ snapshots
_SNAP_MAGIC = {"columns-zlib": b"SBC1", "columns-lz4": b"SBL1"}
_LZ4 = []


def _lz4():
    """pyarrow's LZ4 frame codec (pyarrow is a dependency for Parquet; its wheels ship LZ4)."""
    if not _LZ4:
        import pyarrow as pa

        _LZ4.append(pa.Codec("lz4"))
    return _LZ4[0]


def snapshot_to_bytes(snapshot, fmt: str = SNAPSHOT_FORMAT) -> bytes:
    """The snapshot's columns as one compact, lossless blob (format ``columns-lz4``, or ``columns-zlib``).

    Layout: ``SBL1`` (``SBC1`` for zlib), a 4-byte little-endian header length, a JSON
    header (rows, root names, and per column its dtype and byte count), then the
    columns' raw little-endian buffers in header order as one LZ4 frame (one zlib
    stream, level 1). ``root`` is stored as uint8 codes into the header's names,
    ``expiry`` as int32 days since 1970-01-01; 8-byte columns are byte-shuffled (all
    first bytes, then all second bytes...), which lets the compressor find the repeats
    in prices and greeks. LZ4 takes about 15 microseconds for a decision's slice where
    zlib took 120-190 (most of a decision's journal record), for a blob about 5 % larger.
    """
    if fmt not in _SNAP_MAGIC:
        raise ValueError(f"unknown snapshot blob format {fmt!r}")
    plan = _blob_plan()
    split = _BLOB_LISTING[0]
    # the leading columns that name the contracts (root codes, expiry days, strikes, rights) depend on the listing
    # alone: encoded once per listing (a session's slices of one listing share ChainSnapshot._static)
    static = getattr(snapshot, "_static", None)
    listing = static.get("blob_listing") if type(static) is dict else None
    if listing is None:
        listing = _listing_buffers(snapshot, plan[:split])
        if type(static) is dict:
            static["blob_listing"] = listing
    header, head, codes = listing
    payload = b"".join([head, *_column_buffers(snapshot, plan[split:], len(snapshot), codes)])
    packed = _lz4().compress(payload, asbytes=True) if fmt == "columns-lz4" else zlib.compress(payload, 1)
    return b"".join((_SNAP_MAGIC[fmt], header, packed))


def _listing_buffers(snapshot, plan: list) -> tuple[bytes, bytes, np.ndarray]:
    """(the blob's header with its length before it, the bytes of its leading columns ``plan``, the root code of
    each row): all three depend on the listing alone (its rows, their roots)."""
    from strikebench.options.chain import _factorize_roots

    roots, codes = _factorize_roots(np.asarray(snapshot.root))  # np.unique's (sorted roots, code per row)
    if len(roots) > 255:
        raise JournalError(f"snapshot has {len(roots)} roots; the journal stores at most 255")
    codes.flags.writeable = False
    n = len(snapshot)
    header = _blob_header(n, tuple(roots))
    return struct.pack("<I", len(header)) + header, b"".join(_column_buffers(snapshot, plan, n, codes)), codes


def _column_buffers(snapshot, plan: list, n: int, codes) -> list:
    """The blob's buffers of the columns ``plan`` (a run of the plan: :data:`_BLOB_LISTING`), ``codes`` the root
    codes."""
    buffers, run = [], []  # run: consecutive 8-byte columns, shuffled together in one copy
    for name, le, shuffled in plan:
        if name == "root":
            arr = codes.astype("<u1")
        elif name == "expiry":
            arr = np.asarray(snapshot.expiry).astype("datetime64[D]", copy=False).astype("<i4")
        else:
            arr = getattr(snapshot, name)
            if type(arr) is not np.ndarray or arr.dtype != le:  # (else astype(le, copy=False) would return arr)
                arr = np.asarray(arr).astype(le, copy=False)
        if shuffled and n:  # (a strided column, a batch's minute, is copied once: by the concatenation)
            run.append(arr.view(_U8))
            continue
        if run:
            buffers.append(_shuffled(run, n))
            run = []
        buffers.append(arr.tobytes())
    if run:
        buffers.append(_shuffled(run, n))
    return buffers


_U8 = np.dtype("<u8")


def _shuffled(run: list, n: int) -> bytes:
    """8-byte columns (as little-endian uint64 views) byte-shuffled, each in turn: all first bytes, then all second
    bytes... (``block.transpose(0, 2, 1)`` of the columns' (n, 8) byte views)."""
    return np.concatenate(run).view(np.uint8).reshape(len(run), n, 8).transpose(0, 2, 1).tobytes()


_BLOB_PLAN: list = []
#: [how many leading columns of the plan name the contracts] (the listing's: root, expiry, strike, is_call), cut
#: where no shuffled run crosses (each part's buffers are then the whole plan's)
_BLOB_LISTING: list = []


def _blob_plan() -> list:
    """(column, little-endian dtype it is stored as, shuffled) in the chain's column order."""
    if not _BLOB_PLAN:
        from strikebench.options.chain import _LISTING_COLUMNS, COLUMNS

        for name, dtype in COLUMNS.items():
            le = np.dtype({"root": "<u1", "expiry": "<i4"}.get(name, dtype)).newbyteorder("<")
            _BLOB_PLAN.append((name, le, le.itemsize == 8))
        split = 0
        while split < len(_BLOB_PLAN) and _BLOB_PLAN[split][0] in _LISTING_COLUMNS:
            split += 1
        while 0 < split < len(_BLOB_PLAN) and _BLOB_PLAN[split - 1][2] and _BLOB_PLAN[split][2]:
            split -= 1
        _BLOB_LISTING[:] = [split]
    return _BLOB_PLAN


@functools.lru_cache(maxsize=256)
def _blob_header(n: int, roots: tuple) -> bytes:
    """The blob's JSON header: rows, root names, per column [name, dtype, bytes, shuffled]."""
    columns = [[name, le.str, le.itemsize * n, shuffled] for name, le, shuffled in _blob_plan()]
    return json.dumps({"rows": n, "roots": list(roots), "columns": columns}, separators=(",", ":")).encode()


def _columns_from_blob(data: bytes, fmt: str = SNAPSHOT_FORMAT) -> dict:
    from strikebench.options.chain import COLUMNS

    if data[:4] != _SNAP_MAGIC.get(fmt):
        raise ValueError(f"not a {fmt} snapshot blob")
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + hlen])
    if fmt == "columns-lz4":
        size = sum(int(c[2]) for c in header["columns"])
        payload = _lz4().decompress(data[8 + hlen:], decompressed_size=size, asbytes=True)
    else:
        payload = zlib.decompress(data[8 + hlen:])
    n, pos, out = int(header["rows"]), 0, {}
    for name, dtype, nbytes, shuffled in header["columns"]:
        raw = np.frombuffer(payload, dtype=np.uint8, count=nbytes, offset=pos)
        pos += nbytes
        dt_ = np.dtype(dtype)
        if shuffled and n:
            raw = np.ascontiguousarray(raw.reshape(dt_.itemsize, n).T)
        arr = raw.view(dt_).reshape(n) if n else np.zeros(0, dtype=dt_)
        if name == "root":
            arr = np.asarray(header["roots"], dtype=COLUMNS["root"])[arr] if n else np.zeros(0, COLUMNS["root"])
        elif name == "expiry":
            arr = arr.astype("int64").astype("datetime64[D]")
        out[name] = np.asarray(arr).astype(COLUMNS[name])
    if pos != len(payload) or set(out) != set(COLUMNS):
        raise ValueError("snapshot blob columns do not match its header")
    return out


def _columns_from_parquet(data: bytes) -> dict:
    import pyarrow.parquet as pq

    from strikebench.options.chain import COLUMNS

    table = pq.read_table(io.BytesIO(data))
    return {name: np.asarray(table.column(name).to_numpy(zero_copy_only=False)).astype(dtype)
            for name, dtype in COLUMNS.items()}


def snapshot_from_bytes(data: bytes, underlying: str, taken_at: str, tz: str, underlying_price: str,
                        fmt: str = SNAPSHOT_FORMAT):
    """Rebuild a :class:`ChainSnapshot` from a stored blob of format ``fmt`` (``columns-lz4``, ``columns-zlib`` or
    ``parquet``)."""
    from strikebench.options.chain import ChainSnapshot

    columns = _columns_from_parquet(data) if fmt == "parquet" else _columns_from_blob(data, fmt)
    ts = pd.Timestamp(taken_at)
    try:
        ts = ts.tz_convert(tz)
    except Exception:  # an unknown zone name: keep the fixed offset (same isoformat)
        pass
    return ChainSnapshot.from_arrays(underlying, ts, float(underlying_price), **columns)


# ---------------------------------------------------------------------- schema
# One definition for every backend: strikebench.journal_schema (rendered here for SQLite without
# importing SQLAlchemy; through Alembic for PostgreSQL).
_SCHEMA_TABLES = {t.name for t in TABLES}
_sqlite_path = sqlite_path  # the name older callers import


def find_journal(run_dir: str | os.PathLike) -> str:
    """The journal URL/path of a run folder (``journal.sqlite``, or the URL in ``journal.url``).

    A journal file given directly is returned as is; a missing path, a FIFO, an unreadable
    folder or an unreadable ``journal.url`` is one line (:mod:`strikebench.userfiles`).
    """
    import stat as _stat

    from strikebench.userfiles import check_dir, label, os_problem, read_text

    if "://" in os.fspath(run_dir) and backend_of(run_dir) == POSTGRES:
        return split_run(run_dir)[0]
    p = Path(run_dir)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise JournalError(f"{run_dir}: no such run folder") from None
    except OSError as exc:
        raise JournalError(f"{label(run_dir)}: {os_problem(exc, want='run folder')}") from None
    if _stat.S_ISREG(st.st_mode):
        return str(p)
    check_dir(p, what="run folder or journal file", error=JournalError)
    if os.path.lexists(p / JOURNAL_FILE):
        return str(p / JOURNAL_FILE)
    if os.path.lexists(p / JOURNAL_URL_FILE):
        url = read_text(p / JOURNAL_URL_FILE, what="journal URL file", error=JournalError, max_bytes=4096).strip()
        if not url or "\n" in url:
            raise JournalError(f"{p / JOURNAL_URL_FILE}: expected one journal URL on one line")
        return _WRITTEN_URLS.get(url) or _expand_env(url, p / JOURNAL_URL_FILE)
    raise JournalError(f"{run_dir}: no journal in this folder (expected {JOURNAL_FILE}); "
                       f"was the run made with the journal plugin disabled?")


def split_run(locator: str | os.PathLike) -> tuple[str, str | None]:
    """``postgresql://.../db#RUN_ID`` -> (the URL, 'RUN_ID'); anything else -> (itself, None)."""
    text = os.fspath(locator)
    if "://" in text and "#" in text and backend_of(text) == POSTGRES:
        url, _, run_id = text.partition("#")
        return url, run_id or None
    return text, None


#: stored journal URL (no password) -> the URL this process wrote with, so the run's own report connects
_WRITTEN_URLS: dict[str, str] = {}


def _expand_env(url: str, where) -> str:
    """``${VAR}`` in a stored journal URL (the config's template: the secret never sits in the folder)."""
    def sub(m):
        name, _, default = m.group(1).partition(":-")
        if name in os.environ:
            return os.environ[name]
        if m.group(1).find(":-") >= 0:
            return default
        raise JournalError(f"{where}: the journal URL needs environment variable {name}, which is not set")

    return re.sub(r"\$\{([^}]+)\}", sub, url)


def stored_url(url: str, template: str | None = None) -> str:
    """What a run folder's ``journal.url`` holds: the config's ``${VAR}`` template when the URL came from
    the environment, else the URL without its password (libpq reads it from PGPASSWORD or ~/.pgpass)."""
    from strikebench.journal_db import strip_password

    if template and "${" in template:
        return template
    if backend_of(url) != POSTGRES:
        return url
    _WRITTEN_URLS[strip_password(url)] = url
    return strip_password(url)


#: Tables every reading command needs (schema version 1).
REQUIRED_TABLES = ("journal_meta", "runs", "chain_snapshots", "context_snapshots", "trade_decisions", "orders",
                   "order_events", "fills", "trades", "trade_legs", "equity")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite_file(path: Path) -> None:
    """A regular, readable file that starts like an SQLite database and is as long as its header says."""
    from strikebench.userfiles import check_file, label, os_problem

    st = check_file(path, what="journal file", error=JournalError)
    if st.st_size == 0:
        raise JournalError(f"{path}: empty file, not a journal")
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise JournalError(f"{label(path)}: {os_problem(exc, want='journal file')}") from None
    if not head.startswith(_SQLITE_MAGIC):
        raise JournalError(f"{path}: not a journal (not an SQLite database)")
    if len(head) < 100:
        raise JournalError(f"{path}: truncated journal ({st.st_size} bytes, shorter than an SQLite header)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]  # "in-header database size" is valid only when these match
    wal = os.path.exists(f"{path}-wal")
    if valid and pages and not wal and st.st_size < pages * page_size:
        raise JournalError(f"{path}: truncated journal ({st.st_size:,} bytes; its header says "
                           f"{pages * page_size:,})")


def check_journal_target(url: str | os.PathLike, *, key: str = "journal.url") -> None:
    """Before a run starts: the journal it will write can be made (or is a whole strikebench journal).

    Creates nothing. A folder, a FIFO, an unwritable place or a file that is not a strikebench
    journal (another program's SQLite database, a damaged journal) is one line naming ``key``.
    """
    from strikebench.userfiles import check_file, label, prepare_output_dir

    if backend_of(url) == POSTGRES:
        db = PgConnection(os.fspath(url))  # reachable, logged in; creates nothing
        try:
            if "alembic_version" in table_names(db):
                _check_revision(mask_url(url), revision(db))
        finally:
            db.close()
        return
    path = _sqlite_path(url)
    if not os.path.lexists(path):
        prepare_output_dir(path.parent if str(path.parent) else ".", key=f"{key} folder", error=JournalError)
        return
    st = check_file(path, what="journal file", key=key, error=JournalError)
    if st.st_size:
        open_read_only(path).close()
    if not os.access(path, os.W_OK):
        raise JournalError(f"{label(path, key)}: permission denied (cannot write the journal)")


def open_read_only(url: str | os.PathLike) -> "ReadOnlyJournal":
    """Open a journal for reading only, after checking it is a whole, known strikebench journal.

    :raises JournalError: one line for a missing, foreign, truncated, damaged or newer journal.
    """
    return ReadOnlyJournal(url)


# --------------------------------------------------------------------- journal
#: columns added to schema 1 after it shipped: (table, column, type); a journal written before
#: gets them (empty) when it is next opened for writing
_ADDED_COLUMNS = (
    ("runs", "config_resolved", "TEXT"),
    ("runs", "config_overrides", "TEXT"),
    ("fills", "leg_quotes", "TEXT"),
    ("trades", "settlement_note", "TEXT"),
)


def _missing_columns(db) -> list[tuple[str, str, str]]:
    """The added columns this journal lacks (a read: opening a current journal takes no write lock)."""
    out = []
    for table, column, kind in _ADDED_COLUMNS:
        if column not in column_names(db, table):
            out.append((table, column, kind))
    return out


def _add_missing_columns(db) -> None:
    for table, column, kind in _missing_columns(db):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _schema_behind(label: str, rev: str | None) -> JournalError:
    return JournalError(f"{label}: journal schema is at revision {rev or 'none'}, this strikebench reads "
                        f"{HEAD_REVISION}; run `strikebench journal migrate {label}` first")


def _check_revision(label: str, rev: str | None) -> None:
    """A journal at a revision this version does not know was written by a newer strikebench."""
    if rev is not None and rev not in REVISIONS:
        raise JournalError(f"{label}: journal schema revision {rev} is newer than this strikebench understands "
                           f"({HEAD_REVISION}); upgrade strikebench")


class Journal:
    """One journal database: schema, one-transaction-per-event writes, and the reads reports use.

    ``Journal(url)`` with ``sqlite:///path``, ``sqlite:////abs/path`` or a file path.
    ``create=False`` refuses to make a new file (reading a run folder).
    """

    def __init__(self, url: str | os.PathLike, *, create: bool = True):
        self.url = os.fspath(url)
        self.backend = backend_of(self.url)
        self._per_session = False
        self._last_commit: float | None = None  # time.monotonic() of session_done's last commit
        self._wrote = False  # only a connection that wrote checkpoints on close (a reader must not wait on a writer)
        self._seq: dict[str, int] = {}
        self._db = None
        self._pending_orders: dict[tuple, list] = {}  # (run, order id) -> [fixed columns, latest state]
        self._pending_events: list[tuple] = []
        self._pending_decisions: list[tuple] = []  # (decision row, snapshot, context text)
        self._pending_decision_ids: set[tuple] = set()  # (run, decision id) of those
        #: (run, trade id) -> the id of the decision the trade was opened on, once found (_decision_of_trade)
        self._decision_found: dict[tuple, str] = {}
        self._snapshot_ids: dict[str, int] = {}  # checksum -> id of the snapshots and contexts written by
        self._context_ids: dict[str, int] = {}  # this connection (committed or in its open transaction)
        #: runs this connection started whose fills and trades it wrote itself (all of them known below)
        self._fresh_runs: set[str] = set()
        #: under commit_per_session, for fresh runs: the session's fills, trades, trade legs, equity and breaker
        #: rows as (statement, parameters) per table in the order they were recorded, written by commit()
        self._pending_rows: dict[str, list[tuple[str, tuple]]] = {}
        self._trades_known: set[tuple] = set()  # (run, trade id) of fresh runs' trades (written or pending)
        self._checkpointer: _Checkpointer | None = None  # a backtest's WAL checkpoints (commit_per_session)
        self._fills_of: dict[tuple, dict] = {}  # (run, trade id) -> {fill id: (opens, kind, price, quantity, fees)}
        #: (run, trade id) -> multiplier of fresh runs' trades whose row is refreshed from their fills when the
        #: session's rows are written, unless the trade's close (which sets the same columns) comes first
        self._refresh_due: dict[tuple, int] = {}
        if self.backend == POSTGRES:
            self.path = mask_url(self.url)  # what every message names: never the password
            self._open_postgres(create)
            return
        self.path = sqlite_path(self.url)
        if not create and not self.path.is_file():
            raise JournalError(f"{self.path}: no journal file")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = create and (not self.path.exists() or (self.path.is_file() and self.path.stat().st_size == 0))
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            self._db.row_factory = sqlite3.Row
            if new_file:  # before anything is written (an existing file keeps its page size)
                self._db.execute(f"PRAGMA page_size={self.PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            tables = table_names(self._db)
            if not create and not {"runs", "journal_meta"} <= tables:
                raise JournalError(f"{self.path}: not a strikebench journal (no runs table)")
            if "journal_meta" in tables:
                row = self._db.execute("SELECT value FROM journal_meta WHERE key = 'schema_version'").fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise JournalError(f"{self.path}: journal schema {row[0]} is newer than this strikebench "
                                       f"understands ({SCHEMA_VERSION}); upgrade strikebench")
            rev = revision(self._db) if "alembic_version" in tables else None
            if rev is not None:
                _check_revision(str(self.path), rev)
            if not _SCHEMA_TABLES <= tables or rev != HEAD_REVISION or _missing_columns(self._db):
                # a new file, or one from before a table or column was added; else no write lock is taken
                with self._tx():
                    for stmt in sqlite_ddl():
                        self._db.execute(stmt)
                    _add_missing_columns(self._db)
                    self._db.execute("INSERT INTO journal_meta(key, value) VALUES ('schema_version', ?)"
                                     " ON CONFLICT(key) DO NOTHING", (str(SCHEMA_VERSION),))
                    self._db.execute(ALEMBIC_VERSION_DDL)
                    # SQLite's revisions after 0001 only add tables (0002: the live tables), which the DDL above made
                    self._db.execute("DELETE FROM alembic_version")
                    self._db.execute("INSERT INTO alembic_version(version_num) VALUES (?)", (HEAD_REVISION,))
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(f"{self.path}: not a journal ({exc})") from None
        except BaseException:
            self.close()
            raise

    def _open_postgres(self, create: bool) -> None:
        """Connect; a database without the journal's tables gets them, one behind head is migrated
        (Alembic, under an advisory lock so two runs starting together migrate once)."""
        self._db = PgConnection(self.url)
        try:
            rev = revision(self._db)
            _check_revision(self.path, rev)
            if rev != HEAD_REVISION:
                if not create and "runs" not in table_names(self._db):
                    raise JournalError(f"{self.path}: not a strikebench journal (no runs table)")
                from strikebench.journal_admin import upgrade_postgres

                upgrade_postgres(self.url)
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------- plumbing
    #: seconds :meth:`session_done` lets pass between commits of finished sessions (a backtest)
    SESSION_COMMIT_INTERVAL = 0.25
    #: bytes per database page of a new SQLite journal: a decision's chain slice (a 5-40 KB blob) then takes one or
    #: two pages instead of a chain of 4 KB overflow pages, and a session's commit writes a quarter of the WAL frames
    #: (measured on the four-strategy quarter: the journal's SQLite time -15 to -20 %); a journal of a few rows is
    #: ~0.4 MB instead of ~0.1 MB. An existing journal keeps the page size it was made with.
    PAGE_SIZE = 16384
    _checkpointer = None  # (a class default: ReadOnlyJournal sets its own attributes)

    def commit_per_session(self) -> None:
        """Group writes into transactions of whole sessions (a backtest): :meth:`_tx` then opens a
        savepoint inside the open transaction, so one event still applies whole or not at all, and
        :meth:`session_done` (at a session's end), :meth:`commit` (on close, on an interrupted run) make
        them durable. A process killed mid-run leaves the journal as of a finished session: the last one
        :meth:`session_done` committed (at most :attr:`SESSION_COMMIT_INTERVAL` seconds of sessions before
        the one it was in).

        A SQLite journal's checkpoints (copying committed WAL frames into the database file: ~60 % of a
        commit's time, ~2 % of a four-strategy backtest) then run on a thread of their own after each
        :meth:`session_done` commit instead of inside the loop's next commit (:class:`_Checkpointer`)."""
        self._per_session = True
        if self.backend == SQLITE and self._db is not None and self._checkpointer is None:
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's, from the next commit on
            self._checkpointer = _Checkpointer(self)

    def session_done(self) -> None:
        """A session's events are all recorded: commit them, with the finished sessions not committed yet, when
        no session was committed before or the last commit is :attr:`SESSION_COMMIT_INTERVAL` seconds old.

        Committing every session costs the same database pages written again each time (tables' and indexes'
        last pages, one WAL frame each): ~28 frames a session of the README's main job, ~15 when four sessions
        share a commit. What a commit holds is the same statements in the same order either way (each table's
        rows in the order recorded), so the journal's rows do not depend on where commits fall; commits fall
        only here, between sessions (and at close/exit), so the committed journal is always whole sessions."""
        if not self._per_session:
            self.commit()
            return
        now = time.monotonic()
        if self._last_commit is None or now - self._last_commit >= self.SESSION_COMMIT_INTERVAL:
            self.commit()
            self._last_commit = time.monotonic()
            if self._checkpointer is not None:
                self._checkpointer.poke()

    def commit(self) -> None:
        """Commit the open session transaction, if any (a no-op when every event commits itself)."""
        if self._db is not None and self._pending_decisions:
            self._flush_decisions()  # before the orders: an order's row names its decision
        if self._db is not None and (self._pending_orders or self._pending_events):
            self._flush_orders()
        if self._db is not None and (self._pending_rows or self._refresh_due):
            self._flush_rows()
        if self._db is not None and self._db.in_transaction:
            self._db.execute("COMMIT")

    def _buffered(self, run_id: str) -> bool:
        """Whether this run's fills, trades, equity and breaker rows wait for the session's commit: a backtest
        (:meth:`commit_per_session`) whose run this connection started and whose fills and trades it alone wrote,
        so every read those writes need (does the trade exist, its fills) is answered from memory."""
        return self._per_session and run_id in self._fresh_runs

    def _queue(self, table: str, sql: str, params: tuple) -> None:
        rows = self._pending_rows.get(table)
        if rows is None:
            rows = self._pending_rows[table] = []
        rows.append((sql, params))

    def _flush_rows(self) -> None:
        """Write the rows kept in memory (see :meth:`_buffered`) in one savepoint: table by table, each table's
        statements in the order they were recorded (the tables have no triggers or keys between them, so each
        ends exactly as the same statements run one event at a time leave it), runs of one statement as one
        ``executemany``."""
        if self._refresh_due:
            self._queue_due_refreshes()
        if not self._pending_rows:
            return
        pending = self._pending_rows
        try:
            with self._tx() as db:
                for rows in pending.values():
                    i, n = 0, len(rows)
                    while i < n:
                        sql = rows[i][0]
                        j = i + 1
                        while j < n and rows[j][0] == sql:
                            j += 1
                        if j - i == 1:
                            params = rows[i][1]
                            db.execute(sql, params.row() if type(params) is _Later else params)
                        else:
                            db.executemany(sql, [p.row() if type(p) is _Later else p for _, p in rows[i:j]])
                        i = j
                self._pending_rows = {}  # with the write (see _flush_decisions)
        except Exception:
            self._pending_rows = {}
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One event's writes: everything inside applies together or not at all (its own transaction,
        or a savepoint of the session's transaction under :meth:`commit_per_session`)."""
        self._wrote = True
        if self._per_session:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("SAVEPOINT event")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO event")
                self._db.execute("RELEASE event")
                raise
            else:
                self._db.execute("RELEASE event")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is None:
            return
        try:
            if self._checkpointer is not None:  # its checkpoint ends first (the TRUNCATE below then finds none)
                self._checkpointer.stop()
                self._checkpointer = None
            self.commit()
            if self._wrote and self.backend == SQLITE:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.DatabaseError:
                    pass
        finally:
            self._db.close()
            self._db = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def execute(self, sql: str, params=()) -> list[sqlite3.Row]:
        """Run a read query (for ad-hoc inspection and tests)."""
        self._flush_decisions()
        self._flush_orders()
        self._flush_rows()
        return self._db.execute(sql, params).fetchall()

    def frame(self, sql: str, params=()) -> pd.DataFrame:
        """A read query as a DataFrame (every money column stays text)."""
        self._flush_decisions()
        self._flush_orders()
        self._flush_rows()
        cur = self._db.execute(sql, params)
        cols = [c[0] for c in cur.description]
        return pd.DataFrame([tuple(r) for r in cur.fetchall()], columns=cols, dtype=object)

    # ------------------------------------------------------------------ runs
    def start_run(self, run_id: str, *, name: str, mode: str, config_yaml: str | None = None,
                  config_hash: str | None = None, config_path: str | None = None, seed: int | None = None,
                  output_dir: str | None = None, initial_cash=None, strategies: list | None = None,
                  fill_model: dict | None = None, started_at: str | None = None,
                  config_resolved: str | None = None, config_overrides: list | None = None) -> None:
        """Write the run's row with ``completed = 0`` (set to 1 by :meth:`end_run`).

        ``config_yaml`` is the file as read; ``config_resolved`` the config the run used, after
        ``${VAR}`` substitution (environment values shown as their templates) and the ``--set``
        overrides listed in ``config_overrides``."""
        version, commit = code_version()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise JournalError(f"{self.path}: run '{run_id}' is already in this journal")
            db.execute(
                "INSERT INTO runs(run_id, name, mode, started_at, completed, config_yaml, config_hash, config_path,"
                " code_version, git_commit, seed, output_dir, initial_cash, strategies, fill_model, config_resolved,"
                " config_overrides) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, mode, started_at or _utc_now(), config_yaml, config_hash, config_path, version, commit,
                 None if seed is None else int(seed), output_dir, dollars_text(initial_cash),
                 None if strategies is None else to_json(strategies),
                 None if fill_model is None else to_json(fill_model), config_resolved,
                 None if config_overrides is None else to_json(list(config_overrides), sort_keys=False)))
        self._seq[run_id] = 0
        self._fresh_runs.add(run_id)

    def end_run(self, run_id: str, summary: dict | None = None, *, completed: bool = True) -> None:
        """Mark the run finished (``completed``) and store the engine's summary JSON."""
        summary = dict(summary or {})
        with self._tx() as db:
            row = db.execute("SELECT initial_cash FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"{self.path}: no run '{run_id}' to end")
            initial = row["initial_cash"]
            if initial is None and summary.get("initial_cash") is not None:
                initial = dollars_text(summary["initial_cash"])
            db.execute("UPDATE runs SET completed = ?, ended_at = ?, summary = ?, initial_cash = ? WHERE run_id = ?",
                       (1 if completed else 0, _utc_now(), to_json(summary), initial, run_id))

    def update_summary(self, run_id: str, extra: dict) -> None:
        """Merge ``extra`` figures (e.g. Backtrader's analyzers) into the run's stored summary."""
        with self._tx() as db:
            row = db.execute("SELECT summary FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"{self.path}: no run '{run_id}'")
            summary = json.loads(row["summary"]) if row["summary"] else {}
            summary.update(json.loads(to_json(extra)))
            db.execute("UPDATE runs SET summary = ? WHERE run_id = ?", (to_json(summary), run_id))

    def runs(self) -> list[dict]:
        return [dict(r) for r in self._db.execute("SELECT * FROM runs ORDER BY started_at, run_id")]

    def run(self, run_id: str) -> dict:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: no run '{run_id}'")
        return dict(row)

    def pick_run(self, run_dir: str | os.PathLike | None = None, run_id: str | None = None) -> dict:
        """The run a folder belongs to: ``run_id`` when given (or a URL's ``#RUN_ID``), else by output
        folder, then by name == run id, then the only one."""
        runs = self.runs()
        if not runs:
            raise JournalError(f"{self.path}: the journal holds no run")
        if run_dir is not None and run_id is None:
            run_dir, run_id = split_run(run_dir)
        if run_id is not None:
            for r in runs:
                if r["run_id"] == run_id:
                    return r
            raise JournalError(f"{self.path}: no run '{run_id}' (it holds {', '.join(r['run_id'] for r in runs)})")
        if run_dir is not None and "://" not in os.fspath(run_dir):
            p = Path(run_dir)
            folder = p.parent if p.is_file() else p
            target = folder.resolve()
            for r in runs:
                if r["output_dir"] and Path(r["output_dir"]).resolve() == target:
                    return r
            for r in runs:
                if r["run_id"] == folder.name:
                    return r
        if len(runs) == 1:
            return runs[0]
        raise JournalError(f"{self.path}: holds {len(runs)} runs ({', '.join(r['run_id'] for r in runs)}); "
                           f"cannot tell which belongs to {mask_url(os.fspath(run_dir or self.path))}: "
                           f"name one with --run RUN_ID")

    # ------------------------------------------------------------- snapshots
    def store_snapshot(self, snapshot, *, run_id: str | None = None, db=None) -> int:
        """Store a chain snapshot once per checksum; returns its ``snapshot_id``."""
        own = db is None
        checksum = snapshot.checksum
        cm = self._tx() if own else _nullcontext(db)
        with cm as db:
            row = db.execute("SELECT snapshot_id FROM chain_snapshots WHERE checksum = ?", (checksum,)).fetchone()
            if row is not None:
                return int(row[0])
            return self._insert_snapshot(snapshot, checksum, run_id, db)

    @staticmethod
    def _insert_snapshot(snapshot, checksum: str, run_id: str | None, db) -> int:
        """Write a snapshot known not to be stored yet; returns its ``snapshot_id``."""
        ts = snapshot.timestamp
        tz = str(getattr(ts.tzinfo, "key", None) or getattr(ts.tzinfo, "zone", None) or ts.tzinfo)
        return insert_id(
            db, "INSERT INTO chain_snapshots(checksum, underlying, taken_at, tz, underlying_price, n_rows, format,"
            " data, first_run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (checksum, snapshot.underlying, ts.isoformat() if ts.tzinfo is None else iso_time(ts), tz,
             repr(float(snapshot.underlying_price)),
             len(snapshot), SNAPSHOT_FORMAT, snapshot_to_bytes(snapshot), run_id), "snapshot_id")

    #: checksums looked up by one query (SQLite allows 32,766 parameters, 999 before 3.32)
    _LOOKUP_CHUNK = 500

    def _ids_by_checksum(self, db, table: str, key: str, checksums) -> dict[str, int]:
        """{checksum: id} of the rows of ``table`` (chain_snapshots, context_snapshots) among ``checksums``, in one
        query per :attr:`_LOOKUP_CHUNK` checksums instead of one each."""
        checksums = list(dict.fromkeys(checksums))
        found: dict[str, int] = {}
        step = self._LOOKUP_CHUNK
        for i in range(0, len(checksums), step):
            part = checksums[i:i + step]
            sql = f"SELECT checksum, {key} FROM {table} WHERE checksum IN ({', '.join('?' * len(part))})"
            found.update((c, int(k)) for c, k in db.execute(sql, part).fetchall())
        return found

    def snapshot_info(self, snapshot_id: int) -> dict:
        row = self._db.execute("SELECT snapshot_id, checksum, underlying, taken_at, tz, underlying_price, n_rows,"
                               " format FROM chain_snapshots WHERE snapshot_id = ?", (int(snapshot_id),)).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: no chain snapshot {snapshot_id}")
        return dict(row)

    def load_snapshot(self, snapshot_id: int, *, verify: bool = True):
        """The stored :class:`ChainSnapshot`; with ``verify`` its checksum must equal the stored one."""
        row = self._db.execute("SELECT * FROM chain_snapshots WHERE snapshot_id = ?", (int(snapshot_id),)).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: no chain snapshot {snapshot_id}")
        if row["format"] not in SNAPSHOT_FORMATS:
            raise JournalError(f"chain snapshot {snapshot_id} is stored as '{row['format']}', which this "
                               f"version cannot read")
        try:
            snap = snapshot_from_bytes(bytes(row["data"]), row["underlying"], row["taken_at"], row["tz"],
                                       row["underlying_price"], row["format"])
        except Exception as exc:
            raise JournalError(f"chain snapshot {snapshot_id} cannot be read: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}") from None
        if verify and snap.checksum != row["checksum"]:
            raise JournalError(f"chain snapshot {snapshot_id}: checksum mismatch (stored {row['checksum'][:16]}..., "
                               f"recomputed {snap.checksum[:16]}...); the stored snapshot is not what was seen")
        return snap

    def store_context(self, context: dict, *, db=None) -> int:
        text = to_json(context or {})
        checksum = hashlib.sha256(text.encode()).hexdigest()
        cm = self._tx() if db is None else _nullcontext(db)
        with cm as db:
            return self._store_context_text(text, checksum, db)

    @staticmethod
    def _store_context_text(text: str, checksum: str, db) -> int:
        row = db.execute("SELECT context_id FROM context_snapshots WHERE checksum = ?", (checksum,)).fetchone()
        if row is not None:
            return int(row[0])
        return Journal._insert_context(text, checksum, db)

    @staticmethod
    def _insert_context(text: str, checksum: str, db) -> int:
        return insert_id(db, "INSERT INTO context_snapshots(checksum, context) VALUES (?, ?)", (checksum, text),
                         "context_id")

    def load_context(self, context_id: int) -> dict:
        row = self._db.execute("SELECT context FROM context_snapshots WHERE context_id = ?",
                               (int(context_id),)).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: no context snapshot {context_id}")
        return json.loads(row[0])

    # ------------------------------------------------------------- decisions
    _DECISION_INSERT = (
        "INSERT INTO trade_decisions(decision_id, run_id, seq, strategy, decided_at, action, reason,"
        " snapshot_id, snapshot_checksum, context_id, candidates, chosen, chosen_expiry, ruleset_version)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def record_decision(self, run_id: str, decision, snapshot=None) -> str:
        """A decision, its chain snapshot (once per checksum) and its context, in one transaction.

        Under :meth:`commit_per_session` (a backtest) the decision is kept in memory and written when the
        session commits (:meth:`commit`; also before any read through this journal), its snapshot blob
        encoded then: the same rows in the same order, in one savepoint for the session's decisions instead
        of one per decision, and snapshots and contexts this connection already wrote found without a
        query. A process killed mid-session loses the session's decisions either way."""
        seq = self._next_seq(run_id)
        decision_id = decision.decision_id or f"{decision.strategy}-{pd.Timestamp(decision.decided_at):%Y%m%dT%H%M}-{seq}"
        candidates = list(decision.candidates or ())
        chosen = decision.chosen
        chosen_expiry = None
        if chosen is not None and 0 <= chosen < len(candidates):
            details = getattr(candidates[chosen], "details", None) or {}
            chosen_expiry = details.get("expiry")
            chosen_expiry = None if chosen_expiry is None else str(chosen_expiry)
        checksum = decision.snapshot_checksum or (snapshot.checksum if snapshot is not None else None)
        if snapshot is not None and checksum != snapshot.checksum:
            raise JournalError(f"decision {decision_id}: its snapshot checksum {checksum} is not the "
                               f"checksum of the snapshot handed with it ({snapshot.checksum})")
        text = to_json(decision.context or {})
        # the row with its decided_at text, snapshot_id and context_id filled in when written (the time as given
        # here: a datetime, immutable; its text and the context's checksum made for a commit's decisions at once)
        row = [decision_id, run_id, seq, decision.strategy, decision.decided_at, decision.action,
               decision.reason or "", None, checksum, None, candidates_json(candidates),
               None if chosen is None else int(chosen), chosen_expiry, decision.ruleset_version or ""]
        pending = (row, snapshot, text)
        if self._per_session:
            self._pending_decisions.append(pending)
            self._pending_decision_ids.add((run_id, decision_id))
            return decision_id
        with self._tx() as db:
            self._write_decisions(db, [pending])
        return decision_id

    def _write_decisions(self, db, pending: list) -> tuple[dict, dict]:
        """Insert decisions with their snapshots and contexts (each once per checksum), in order; returns the
        (snapshot, context) ids it wrote or found by checksum."""
        known_snaps, known_ctx = self._snapshot_ids, self._context_ids
        sha256 = hashlib.sha256
        ctx_sums = [sha256(p[2].encode()).hexdigest() for p in pending]
        # the snapshots and contexts this connection has not written, looked up at once (another run's, in a
        # shared journal); found ones are used as they are, the others written in the decisions' order as before
        snap_ids = self._ids_by_checksum(db, "chain_snapshots", "snapshot_id",
                                         [p[0][8] for p in pending if p[1] is not None and p[0][8] not in known_snaps])
        ctx_ids = self._ids_by_checksum(db, "context_snapshots", "context_id",
                                        [c for c in ctx_sums if c not in known_ctx])
        # snap_ids, ctx_ids: new to this connection this call, kept only once the caller's transaction/savepoint holds
        rows = []
        for (row, snapshot, text), ctx_sum in zip(pending, ctx_sums):
            if snapshot is not None:
                checksum = row[8]
                sid = known_snaps.get(checksum) or snap_ids.get(checksum)
                if sid is None:
                    sid = snap_ids[checksum] = self._insert_snapshot(snapshot, checksum, row[1], db)
                row[7] = sid
            cid = known_ctx.get(ctx_sum) or ctx_ids.get(ctx_sum)
            if cid is None:
                cid = ctx_ids[ctx_sum] = self._insert_context(text, ctx_sum, db)
            row[9] = cid
            rows.append((*row[:4], iso_time(row[4]), *row[5:]))  # (row stays as recorded: a retry at exit)
        db.executemany(self._DECISION_INSERT, rows)
        return snap_ids, ctx_ids

    def _flush_decisions(self) -> None:
        """Write the decisions kept in memory (see :meth:`record_decision`), in one savepoint."""
        if not self._pending_decisions:
            return
        pending = self._pending_decisions
        try:
            with self._tx() as db:
                snap_ids, ctx_ids = self._write_decisions(db, pending)
                # dropped with the write: a SIGTERM or Ctrl-C before this rolls the savepoint back and leaves
                # them for the commit at exit
                self._pending_decisions, self._pending_decision_ids = [], set()
        except Exception:  # rows that cannot be written are dropped, as an event's write that fails
            self._pending_decisions, self._pending_decision_ids = [], set()
            self._decision_found.clear()  # some were found among those
            raise
        # known from now on without a query (a backtest's connection is the journal's only writer of its run;
        # a session's transaction that never commits dies with the process, and these with it)
        self._snapshot_ids.update(snap_ids)
        self._context_ids.update(ctx_ids)

    def _next_seq(self, run_id: str) -> int:
        if run_id not in self._seq:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM trade_decisions WHERE run_id = ?",
                                   (run_id,)).fetchone()
            self._seq[run_id] = int(row[0])
        self._seq[run_id] += 1
        return self._seq[run_id]

    def decisions(self, run_id: str, day: str | dt.date | None = None) -> list[dict]:
        """Decisions of a run (of one session day, by the local date of ``decided_at``), in order."""
        self._flush_decisions()
        sql = "SELECT * FROM trade_decisions WHERE run_id = ?"
        params: list = [run_id]
        if day is not None:
            sql += " AND substr(decided_at, 1, 10) = ?"
            params.append(str(day))
        rows = [dict(r) for r in self._db.execute(sql + " ORDER BY decided_at, seq", params)]
        for r in rows:
            r["candidates"] = json.loads(r["candidates"])
        return rows

    def decision(self, decision_id: str, run_id: str | None = None) -> dict:
        self._flush_decisions()
        sql, params = "SELECT * FROM trade_decisions WHERE decision_id = ?", [decision_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        rows = self._db.execute(sql, params).fetchall()
        if not rows:
            raise JournalError(f"{self.path}: no decision '{decision_id}'" + (f" in run '{run_id}'" if run_id else ""))
        if len(rows) > 1:
            raise JournalError(f"{self.path}: decision '{decision_id}' exists in several runs; name the run")
        r = dict(rows[0])
        r["candidates"] = json.loads(r["candidates"])
        return r

    # ---------------------------------------------------------------- orders
    _ORDER_UPSERT = (
        "INSERT INTO orders(order_id, run_id, strategy, trade_id, decision_id, opens, order_type, tif, quantity,"
        " limit_price, legs, reason, created_at, status, status_reason, filled_quantity, avg_fill_price,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(run_id, order_id) DO UPDATE SET status = excluded.status,"
        " status_reason = excluded.status_reason, filled_quantity = excluded.filled_quantity,"
        " avg_fill_price = excluded.avg_fill_price, updated_at = excluded.updated_at")
    _EVENT_INSERT = ("INSERT INTO order_events(run_id, order_id, at, previous, status, reason)"
                     " VALUES (?, ?, ?, ?, ?, ?)")

    def record_order_event(self, run_id: str, order, event) -> None:
        """Upsert the order's current state and append the transition, in one transaction.

        Under :meth:`commit_per_session` (a backtest) the order's row and its transitions are kept in
        memory and written when the session commits (:meth:`commit`; also before any read through this
        journal): the same rows, in the same order, as writing each event at once (an order's row is
        its first event's insert with its last event's state, which is what the upserts leave), for
        one statement per order instead of two per transition. Nothing is lost that the session's
        transaction would have kept: a process killed mid-session loses the whole session either way."""
        at = getattr(event, "at", None) or order.created_at
        # this event's values (enum members, texts, numbers, a datetime: immutable), formatted when written: in a
        # backtest at the session's commit, all of a commit's events in one go, and only an order's last state
        state = (order.status, order.status_reason, order.filled_quantity, order.avg_fill_price, at)
        ev = None if event is None else (run_id, order.client_id, at, event.previous, event.status, event.reason)
        if self._per_session:
            key = (run_id, order.client_id)
            row = self._pending_orders.get(key)
            if row is None:
                self._pending_orders[key] = row = [self._order_fixed(run_id, order), state]
            else:
                row[1] = state
            if ev is not None:
                self._pending_events.append(ev)
            return
        with self._tx() as db:
            db.execute(self._ORDER_UPSERT, self._order_fixed(run_id, order, db) + _order_state(*state))
            if ev is not None:
                db.execute(self._EVENT_INSERT, _event_row(*ev))

    def _order_fixed(self, run_id: str, order, db=None) -> tuple:
        """The columns of an order's row its later events never change (its first event's values)."""
        legs = [{"occ_symbol": _contract_text(leg.contract)[0], "ratio": int(leg.ratio)} for leg in order.legs]
        decision_id = self._decision_of_trade(db or self._db, run_id, order.trade_id) if order.opens else None
        return (order.client_id, run_id, order.strategy or "", order.trade_id, decision_id, int(bool(order.opens)),
                _enum(order.order_type), _enum(order.tif), int(order.quantity), points_text(order.limit_price),
                _json_list(legs), order.reason or "", iso_time(order.created_at))

    def _flush_orders(self) -> None:
        """Write the order rows and transitions kept in memory (see :meth:`record_order_event`)."""
        if not self._pending_orders and not self._pending_events:
            return
        orders, events = self._pending_orders, self._pending_events
        try:
            with self._tx() as db:  # each table's statements in order, one executemany each
                if orders:
                    db.executemany(self._ORDER_UPSERT, [fixed + _order_state(*state) for fixed, state in orders.values()])
                if events:
                    db.executemany(self._EVENT_INSERT, [_event_row(*ev) for ev in events])
                self._pending_orders, self._pending_events = {}, []  # with the write (see _flush_decisions)
        except Exception:
            self._pending_orders, self._pending_events = {}, []
            raise

    def _decision_of_trade(self, db, run_id: str, trade_id: str | None) -> str | None:
        """Trade ids made from a decision read ``T-<decision_id>-<digest>``; find that decision (written, or
        kept in memory until the session commits)."""
        if not trade_id or not trade_id.startswith("T-"):
            return None
        found = self._decision_found.get((run_id, trade_id))
        if found is not None:
            return found
        basis = trade_id[2:].rsplit("-", 1)[0]
        if (run_id, basis) in self._pending_decision_ids:
            found = basis
        else:
            row = db.execute("SELECT decision_id FROM trade_decisions WHERE run_id = ? AND decision_id = ?",
                             (run_id, basis)).fetchone()
            found = row[0] if row else None
        if found is not None:  # a decision written (or kept to write) stays: a trade's order, fill and close ask
            if len(self._decision_found) >= 65536:
                self._decision_found.clear()
            self._decision_found[(run_id, trade_id)] = found
        return found

    # ----------------------------------------------------------------- fills
    _FILL_INSERT = (
        "INSERT INTO fills(fill_id, run_id, order_id, trade_id, kind, opens, filled_at, price, quantity,"
        " multiplier, fees, cash, leg_prices, leg_quotes) VALUES (?, ?, ?, ?, 'fill', ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    _TRADE_INSERT = (
        "INSERT INTO trades(trade_id, run_id, strategy, decision_id, opened_at, expiry, contracts,"
        " multiplier, entry_price, entry_credit, fees, max_loss) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    _TRADE_INSERT_FROM_RECORD = (
        "INSERT INTO trades(trade_id, run_id, strategy, opened_at, expiry, contracts, multiplier,"
        " entry_price, entry_credit, fees) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    _LEG_INSERT = (
        "INSERT INTO trade_legs(run_id, trade_id, leg, occ_symbol, root, expiry, strike, option_right,"
        " ratio, entry_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    _TRADE_REFRESH = ("UPDATE trades SET contracts = ?, entry_price = ?, entry_credit = ?, fees = ?"
                      " WHERE run_id = ? AND trade_id = ?")
    _TRADE_MAX_LOSS = "UPDATE trades SET max_loss = ? WHERE run_id = ? AND trade_id = ?"
    _TRADE_CLOSE = (
        "UPDATE trades SET strategy = ?, decision_id = COALESCE(?, decision_id), closed_at = ?, contracts = ?,"
        " entry_price = ?, entry_credit = ?, exit_price = ?, exit_debit = ?, fees = ?, realized_pnl = ?,"
        " max_loss = ?, exit_reason = ?, settlement_note = ? WHERE run_id = ? AND trade_id = ?")
    _LEG_EXIT = "UPDATE trade_legs SET exit_price = ? WHERE run_id = ? AND trade_id = ? AND leg = ?"
    _SETTLEMENT_UPSERT = (
        "INSERT INTO fills(fill_id, run_id, order_id, trade_id, kind, opens, filled_at, price, quantity,"
        " multiplier, fees, cash, leg_prices) VALUES (?, ?, NULL, ?, 'settlement', 0, ?, ?, ?, ?, '0.00', ?, ?)"
        " ON CONFLICT(run_id, fill_id) DO UPDATE SET order_id = NULL, trade_id = excluded.trade_id,"
        " kind = excluded.kind, opens = 0, filled_at = excluded.filled_at, price = excluded.price,"
        " quantity = excluded.quantity, multiplier = excluded.multiplier, fees = excluded.fees,"
        " cash = excluded.cash, leg_prices = excluded.leg_prices, leg_quotes = NULL")
    _EQUITY_UPSERT = ("INSERT INTO equity(run_id, day, equity) VALUES (?, ?, ?)"
                      " ON CONFLICT(run_id, day) DO UPDATE SET equity = excluded.equity")
    _TRIP_INSERT = ("INSERT INTO breaker_trips (run_id, rule, scope, tripped_at, reason, figures, resets) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)")

    def _writer(self, db):
        """``put(table, sql, params)``: executed on ``db`` now, or (``db`` None: a buffered run) kept for the
        session's commit."""
        if db is None:
            return self._queue
        return lambda table, sql, params: db.execute(sql, params)

    def _trade_exists(self, db, run_id: str, trade_id: str) -> bool:
        if db is None:
            return (run_id, trade_id) in self._trades_known
        return db.execute("SELECT 1 FROM trades WHERE run_id = ? AND trade_id = ?",
                          (run_id, trade_id)).fetchone() is not None

    def _trade_fills(self, db, run_id: str, trade_id: str) -> list[tuple]:
        """Every fill row of a trade as (opens, kind, price, quantity, fees), in no particular order."""
        if db is None:
            return list(self._fills_of.get((run_id, trade_id), {}).values())
        return [(r["opens"], r["kind"], r["price"], r["quantity"], r["fees"]) for r in
                db.execute("SELECT opens, kind, price, quantity, fees FROM fills WHERE run_id = ? AND trade_id = ?",
                           (run_id, trade_id)).fetchall()]

    def _note_fill(self, db, run_id: str, trade_id: str | None, fill_id: str, row: tuple) -> None:
        """A buffered run's fill of a trade, for the reads its later rows need (a fill id seen again is
        replaced, as the settlement row's upsert replaces it)."""
        if db is None and trade_id is not None:
            fills = self._fills_of.get((run_id, trade_id))
            if fills is None:
                fills = self._fills_of[(run_id, trade_id)] = {}
            fills[fill_id] = row

    def record_fill(self, run_id: str, order, fill) -> None:
        """A fill, and the trade it opens (or adds to), in one transaction.

        The row keeps the legs' quotes the fill was priced on (``leg_quotes``), so every entry and
        exit price is checkable from the journal alone; an opening fill writes the trade's
        ``max_loss`` at once. In a backtest (:meth:`_buffered`) the rows are written at the session's
        commit, the same statements in the same order."""
        if self._buffered(run_id):
            self._record_fill(None, run_id, order, fill)
            return
        self._fresh_runs.discard(run_id)  # its fills and trades are no longer all known here
        with self._tx() as db:
            self._record_fill(db, run_id, order, fill)

    def _record_fill(self, db, run_id: str, order, fill) -> None:
        put = self._writer(db)
        mult = int(order.multiplier)
        price_c = int(round(float(fill.net_price) * 100))
        fee_c = int(round(float(fill.fees) * 100))
        cash_c = -price_c * mult * int(fill.quantity) - fee_c
        opens = int(bool(order.opens))
        trade_id = order.trade_id
        price, fees, qty = cents_text(price_c), cents_text(fee_c), int(fill.quantity)
        # the fill's row (its time, cash, leg prices and quotes as text: a frozen Fill's values) made when written: in a
        # backtest at the session's commit, with the commit's other fills
        values = (fill.fill_id, run_id, order.client_id, trade_id, opens, fill.filled_at, price, qty, mult, fees,
                  cash_c, fill.leg_prices, getattr(fill, "leg_quotes", ()))
        put("fills", self._FILL_INSERT, _Later(_fill_row, values) if db is None else _fill_row(*values))
        self._note_fill(db, run_id, trade_id, fill.fill_id, (opens, "fill", price, qty, fees))
        if trade_id is None:
            return
        exists = self._trade_exists(db, run_id, trade_id)
        if order.opens and not exists:
            expiry = min(leg.contract.expiry for leg in order.legs)
            put("trades", self._TRADE_INSERT,
                (trade_id, run_id, order.strategy or "", self._decision_of_trade(db or self._db, run_id, trade_id),
                 iso_time(fill.filled_at), str(expiry), qty, mult, price, cents_text(-price_c), fees,
                 _max_loss_text(order.legs, Decimal(price_c) / 100, mult, qty)))
            for i, (leg, p) in enumerate(zip(order.legs, fill.leg_prices)):
                put("trade_legs", self._LEG_INSERT,
                    (run_id, trade_id, i, *_contract_text(leg.contract), int(leg.ratio), points_text(p)))
            if db is None:
                self._trades_known.add((run_id, trade_id))
        elif exists:
            if db is None and not order.opens:
                # a closing fill changes the trade's fees: its row is refreshed when the session's rows are written
                # (from the same fills: any later fill of the trade refreshes it or is due again), or not at all
                # when the trade's close, which sets every column the refresh sets, comes first (the usual exit)
                self._refresh_due[(run_id, trade_id)] = mult
            else:
                self._refresh_due.pop((run_id, trade_id), None)  # this refresh reads every fill: it stands for that one
                self._refresh_trade_from_fills(db, run_id, trade_id, order.legs if order.opens else None, mult)

    def _queue_due_refreshes(self) -> None:
        """Queue the refreshes still due (see :meth:`_record_fill`): each is the last statement setting those
        columns of its trade's row, so its place among the trades' statements does not change the table."""
        due, self._refresh_due = self._refresh_due, {}
        for (run_id, trade_id), mult in due.items():
            self._refresh_trade_from_fills(None, run_id, trade_id, None, mult)

    def _refresh_trade_from_fills(self, db, run_id: str, trade_id: str, legs=None, mult: int = 100) -> None:
        """Contracts, average entry, fees (and max loss) of a trade from its fills (after a further fill)."""
        rows = self._trade_fills(db, run_id, trade_id)
        qty = sum(r[3] for r in rows if r[0])
        notional = sum(text_cents(r[2]) * r[3] for r in rows if r[0])
        fees = sum(text_cents(r[4]) for r in rows)
        entry = Decimal(notional) / qty / 100 if qty else Decimal(0)
        put = self._writer(db)
        put("trades", self._TRADE_REFRESH,
            (qty, points_text(entry), points_text(-entry), cents_text(fees), run_id, trade_id))
        if legs is not None and qty:
            put("trades", self._TRADE_MAX_LOSS, (_max_loss_text(legs, entry, mult, qty), run_id, trade_id))

    # ---------------------------------------------------------------- trades
    def record_trade_closed(self, run_id: str, trade) -> None:
        """The closed trade as the portfolio booked it; a settlement adds its cash as a ``settlement`` fill row
        (in a backtest written at the session's commit, see :meth:`_buffered`)."""
        if self._buffered(run_id):
            self._record_trade_closed(None, run_id, trade)
            return
        self._fresh_runs.discard(run_id)
        with self._tx() as db:
            self._record_trade_closed(db, run_id, trade)

    def _record_trade_closed(self, db, run_id: str, trade) -> None:
        put = self._writer(db)
        legs = trade.legs
        mult = int(legs[0].contract.multiplier)
        closed_at = iso_time(trade.closed_at)
        if not self._trade_exists(db, run_id, trade.trade_id):
            # the opening fill was not journaled (journal opened mid-run): write what the record says
            put("trades", self._TRADE_INSERT_FROM_RECORD,
                (trade.trade_id, run_id, trade.strategy or "", iso_time(trade.opened_at), str(trade.expiry),
                 int(trade.contracts), mult, points_text(trade.entry_price), points_text(-trade.entry_price),
                 dollars_text(trade.fees)))
            for i, (leg, p) in enumerate(zip(legs, trade.leg_entry_prices)):
                put("trade_legs", self._LEG_INSERT,
                    (run_id, trade.trade_id, i, *_contract_text(leg.contract), int(leg.ratio), points_text(p)))
            if db is None:
                self._trades_known.add((run_id, trade.trade_id))
        if trade.exit_reason == "settlement" or getattr(trade, "settled_contracts", None):
            # held to expiry, or partly closed (its no-bid long legs settled after the exit fill)
            self._record_settlement(db, run_id, trade, mult, closed_at)
        decision_id = trade.decision_id or self._decision_of_trade(db or self._db, run_id, trade.trade_id)
        self._refresh_due.pop((run_id, trade.trade_id), None)  # the close sets every column a refresh sets
        put("trades", self._TRADE_CLOSE,
            (trade.strategy or "", decision_id, closed_at, int(trade.contracts), points_text(trade.entry_price),
             points_text(trade.entry_credit), points_text(trade.exit_price), points_text(trade.exit_debit),
             dollars_text(trade.fees), dollars_text(trade.realized_pnl), dollars_text(trade.max_loss),
             trade.exit_reason or "", getattr(trade, "settlement_note", "") or None, run_id, trade.trade_id))
        for i, p in enumerate(trade.leg_exit_prices or ()):
            put("trade_legs", self._LEG_EXIT, (points_text(p), run_id, trade.trade_id, i))

    def _record_settlement(self, db, run_id: str, trade, mult: int, at: str) -> None:
        """Cash settlement as a fill row: the combos still open, at the per-combo payoff (signed like a closing fill).

        For a partly closed trade the row is the legs left in the account (no bid at the exit): its
        quantity the combos they belonged to, its price their payoff per combo, its ``leg_prices`` the
        intrinsic value of those legs (in the trade's leg order, the legs closed by the exit fill left out)."""
        # the trade's closing fills (not a settlement row)
        rows = [(r[2], r[3]) for r in self._trade_fills(db, run_id, trade.trade_id) if not r[0] and r[1] == "fill"]
        closed_by_fills = sum(q for _, q in rows)
        partly = getattr(trade, "partly_closed_at", None) is not None
        settled = getattr(trade, "settled_contracts", None)
        qty = int(settled) if partly and settled else int(trade.contracts) - closed_by_fills
        if qty <= 0:
            return
        if getattr(trade, "settlement_cash", None) is not None:
            # the portfolio's exact cash; the price per combo at the precision that cash used (an XSP print
            # has 3 decimals: 392.996 against a 393 put is 0.004, $0.40 a contract), so that
            # cash = -price x multiplier x quantity holds on this row too
            cash_c = int(round(trade.settlement_cash * 100))
            price = Decimal(-cash_c) / (mult * qty * 100)
        else:
            total_c = int(round(float(trade.exit_price) * int(trade.contracts) * 100))
            settle_c = total_c - sum(text_cents(p) * q for p, q in rows)
            price = Decimal(settle_c) / qty / 100
            cash_c = -settle_c * mult
        intrinsic = [points_text(p) for p in (trade.leg_exit_prices or ())]
        if partly:
            intrinsic = [points_text(p) for p in getattr(trade, "settled_leg_values", ()) or ()] or intrinsic
        fill_id, price_text = f"{trade.trade_id}-SETTLE", points_text(price)
        self._writer(db)("fills", self._SETTLEMENT_UPSERT,
                         (fill_id, run_id, trade.trade_id, at, price_text, qty, mult, cents_text(cash_c),
                          _json_list(intrinsic)))
        self._note_fill(db, run_id, trade.trade_id, fill_id, (0, "settlement", price_text, qty, "0.00"))

    # ---------------------------------------------------------------- equity
    def record_equity(self, run_id: str, day, equity) -> None:
        params = (run_id, str(day), dollars_text(equity))
        if self._buffered(run_id):
            self._queue("equity", self._EQUITY_UPSERT, params)
            return
        with self._tx() as db:
            db.execute(self._EQUITY_UPSERT, params)

    # ----------------------------------------------------------------- reads
    def record_breaker_trip(self, run_id: str, trip) -> None:
        """A circuit breaker tripped (:class:`strikebench.api.BreakerTrip`): its rule, scope, bar and figures."""
        params = (run_id, trip.rule, trip.scope, iso_time(trip.tripped_at), trip.reason, to_json(trip.figures),
                  trip.resets)
        if self._buffered(run_id):
            self._queue("breaker_trips", self._TRIP_INSERT, params)
            return
        with self._tx() as db:
            db.execute(self._TRIP_INSERT, params)

    def breaker_trips(self, run_id: str) -> pd.DataFrame:
        """The run's circuit-breaker trips in time order (none in a journal written before the table existed)."""
        if "breaker_trips" not in table_names(self._db):
            return pd.DataFrame(columns=["rule", "scope", "tripped_at", "reason", "figures", "resets"], dtype=object)
        return self.frame("SELECT rule, scope, tripped_at, reason, figures, resets FROM breaker_trips "
                          "WHERE run_id = ? ORDER BY tripped_at, trip_id", (run_id,))

    def trades(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM trades WHERE run_id = ? ORDER BY opened_at, trade_id", (run_id,))

    def trade_legs(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM trade_legs WHERE run_id = ? ORDER BY trade_id, leg", (run_id,))

    def fills(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM fills WHERE run_id = ? ORDER BY filled_at, fill_id", (run_id,))

    def orders(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM orders WHERE run_id = ? ORDER BY created_at, order_id", (run_id,))

    def order_events(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM order_events WHERE run_id = ? ORDER BY event_id", (run_id,))

    def equity(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT day, equity FROM equity WHERE run_id = ? ORDER BY day", (run_id,))

    def decision_frame(self, run_id: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM trade_decisions WHERE run_id = ? ORDER BY decided_at, seq", (run_id,))


class _Checkpointer:
    """A backtest journal's WAL checkpoints on a thread of their own, with a connection of their own.

    The loop's connection has ``wal_autocheckpoint`` off; after each session commit :meth:`poke` wakes this
    thread, which runs ``PRAGMA wal_checkpoint(PASSIVE)``: it copies the committed frames into the database file
    while the loop goes on (SQLite runs it without Python's lock; WAL lets a checkpoint and the writer work at
    once), and the writer restarts the WAL from its start once all of it is copied, so the WAL stays about a
    commit long. What is durable does not change: a commit is in the WAL before a checkpoint copies it, and a
    process killed during a checkpoint leaves both files consistent (SQLite's WAL recovery). A checkpoint that
    fails (a reader holding old frames, the file gone) is retried at the next poke; :meth:`Journal.close` stops
    the thread, then checkpoints and truncates the WAL itself. The thread also ends when its journal is
    garbage-collected unclosed."""

    IDLE_CHECK = 5.0  # seconds between looks at whether the journal still exists

    def __init__(self, journal: "Journal"):
        self._path = str(journal.path)
        self._owner = weakref.ref(journal)
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()  # a poke and the thread's "nothing asked since" see each other
        self._stopping = False
        self.checkpoints = 0  # completed (for tests)
        self._thread = threading.Thread(target=self._run, name="strikebench-journal-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Checkpoint what is committed now (once the running checkpoint, if any, ends)."""
        with self._lock:
            self._idle.clear()
            self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no checkpoint is asked for or running (tests)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        db = None
        try:
            from urllib.parse import quote

            # mode=rw: never makes a file (one removed under a forgotten journal stays removed)
            db = sqlite3.connect(f"file:{quote(self._path)}?mode=rw", uri=True, isolation_level=None)
            while True:
                if not self._wake.wait(self.IDLE_CHECK):
                    if self._owner() is None:
                        return
                    continue
                with self._lock:
                    self._wake.clear()
                if self._stopping:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:
                    pass  # retried at the next poke; close() checkpoints whatever is left
                with self._lock:
                    if not self._wake.is_set():
                        self._idle.set()
        except sqlite3.Error:
            return
        finally:
            self._idle.set()
            if db is not None:
                db.close()


class _nullcontext:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


class _Later:
    """A queued row's parameters made when the row is written (:meth:`Journal._flush_rows`): ``fn(*values)``, the
    values immutable (texts, numbers, datetimes, tuples of floats)."""

    __slots__ = ("fn", "values")

    def __init__(self, fn, values: tuple):
        self.fn, self.values = fn, values

    def row(self) -> tuple:
        return self.fn(*self.values)


def _fill_row(fill_id, run_id, order_id, trade_id, opens, filled_at, price, qty, mult, fees, cash_c, leg_prices,
              leg_quotes) -> tuple:
    """A ``fills`` row (``_FILL_INSERT``'s parameters) of an order's fill."""
    return (fill_id, run_id, order_id, trade_id, opens, iso_time(filled_at), price, qty, mult, fees, cents_text(cash_c),
            _json_list([points_text(p) for p in leg_prices]), _quotes_json(leg_quotes))


def _order_state(status, reason, filled, avg_price, at) -> tuple:
    """The state columns of an order's row (status .. updated_at) from its values at an event."""
    return _enum(status), reason or "", int(filled), points_text(avg_price), iso_time(at)


def _event_row(run_id, order_id, at, previous, status, reason) -> tuple:
    """An ``order_events`` row from a transition's values."""
    return run_id, order_id, iso_time(at), _enum(previous), _enum(status), reason or ""


def _enum(value) -> str:
    """``str(value.value)`` of an Enum member (read as ``_value_``, which the ``value`` property returns, without
    the property's Python call), else ``str(getattr(value, "value", value))``."""
    if isinstance(value, Enum):
        return str(value._value_)
    return str(getattr(value, "value", value))


#: id(contract) -> (contract, its trade_legs columns) of the contracts _contract_text saw last (the entry keeps the
#: contract alive, so its id names no other object while it is here). Cleared when full.
_CONTRACT_TEXT: dict[int, tuple] = {}


def _contract_text(c) -> tuple:
    """(occ_symbol stripped, root, expiry, strike, right) of an option contract as the journal stores them: an
    order's legs are the same contract objects from its first event to its fills (and a trade's close), so each is
    formatted once."""
    hit = _CONTRACT_TEXT.get(id(c))
    if hit is not None and hit[0] is c:
        return hit[1]
    text = (c.occ_symbol.strip(), c.root, str(c.expiry), points_text(c.strike), _enum(c.right))
    if len(_CONTRACT_TEXT) >= 4096:
        _CONTRACT_TEXT.clear()
    _CONTRACT_TEXT[id(c)] = (c, text)
    return text


def _quotes_json(quotes) -> str | None:
    """Leg quotes as ``[["bid", "ask"], ...]`` (exact text; null for a NaN side); None when unknown."""
    if not quotes:
        return None
    return _json_list([[points_text(x) for x in q] for q in quotes])


_dumps_compact = _ENCODERS[False]
_orjson_compact = _ORJSON[False]


def _json_list(items: list) -> str:
    """``to_json(items, sort_keys=False)`` of a list whose items are already plain JSON (texts, None, ints,
    lists and dicts of those: what the journal's fixed-shape columns hold), without ``_plain``'s walk."""
    text = _orjson_compact(items)
    return text if text is not None else _dumps_compact(items)


def _max_loss_text(legs, entry: Decimal, mult: int, contracts: int) -> str | None:
    """Worst-case loss of ``contracts`` combos entered at ``entry`` (dollars, before fees); None if unbounded."""
    from strikebench.options.orders import max_loss_per_combo

    loss = max_loss_per_combo(legs, float(entry))
    if not math.isfinite(loss):
        return None
    key = (loss, mult, contracts)  # the text is a function of these (a run's losses repeat: widths less credits)
    text = _MAX_LOSS_TEXT.get(key)
    if text is None:
        if len(_MAX_LOSS_TEXT) >= _TEXT_MEMO:
            _MAX_LOSS_TEXT.clear()
        text = _MAX_LOSS_TEXT[key] = dollars_text(Decimal(repr(round(loss, 6))) * mult * contracts)
    return text


_MAX_LOSS_TEXT: dict[tuple, str] = {}


class ReadOnlyJournal(Journal):
    """A journal opened for reading only (``report``, ``decisions``, ``replay-decision``, ``status``).

    SQLite opens it with ``mode=ro`` (and ``immutable=1`` when no writer's ``-wal`` file is
    there, so not even SQLite's shared-memory files appear); nothing is created or migrated.
    Before any read it checks the SQLite header and length, ``PRAGMA quick_check``, every
    table of :data:`REQUIRED_TABLES` and the schema version; any write raises.
    """

    def __init__(self, url: str | os.PathLike):  # noqa: D107 - no Journal.__init__: it creates tables
        from urllib.parse import quote

        self.url = os.fspath(url)
        self.backend = backend_of(self.url)
        self._seq = {}
        self._db = None
        self._pending_orders, self._pending_events = {}, []
        self._pending_decisions, self._pending_decision_ids = [], set()
        self._decision_found = {}
        self._snapshot_ids, self._context_ids = {}, {}
        self._fresh_runs, self._pending_rows, self._trades_known, self._fills_of = set(), {}, set(), {}
        self._refresh_due = {}
        self._per_session = False
        if self.backend == POSTGRES:
            self.path = mask_url(self.url)
            self._open_postgres_read_only()
            return
        self.path = sqlite_path(self.url)
        _check_sqlite_file(self.path)
        live_writer = os.path.exists(f"{self.path}-wal")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro" + ("" if live_writer else "&immutable=1")
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
            self._db.row_factory = sqlite3.Row
            self._db.text_factory = lambda b: b.decode("utf-8", "replace")  # a damaged page may hold any bytes
            check = [r[0] for r in self._db.execute("PRAGMA quick_check(1)")]
            if check != ["ok"]:
                raise JournalError(f"{self.path}: damaged journal (SQLite integrity check: {check[0]})")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if missing == list(REQUIRED_TABLES):
                raise JournalError(f"{self.path}: not a strikebench journal (an SQLite database without its tables)")
            if missing:
                raise JournalError(f"{self.path}: damaged journal: table(s) {', '.join(missing)} missing; "
                                   f"refusing to read it")
            row = self._db.execute("SELECT value FROM journal_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                raise JournalError(f"{self.path}: damaged journal: no schema version in journal_meta")
            try:
                version = int(row[0])
            except (TypeError, ValueError):
                raise JournalError(f"{self.path}: damaged journal: schema version {row[0]!r} is not a number") from None
            if version > SCHEMA_VERSION:
                raise JournalError(f"{self.path}: journal schema {version} is newer than this strikebench "
                                   f"understands ({SCHEMA_VERSION}); upgrade strikebench")
            if version < 1:
                raise JournalError(f"{self.path}: damaged journal: schema version {version} is unknown")
            if "alembic_version" in tables:
                _check_revision(str(self.path), revision(self._db))
            self._db.text_factory = str
        except UnicodeDecodeError:
            self.close()
            raise JournalError(f"{self.path}: damaged journal (SQLite's integrity check reports garbled pages)") from None
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(f"{self.path}: damaged journal ({' '.join(str(exc).split())})") from None
        except JournalError:
            self.close()
            raise

    def _open_postgres_read_only(self) -> None:
        """A session whose every transaction is READ ONLY; the schema must be at this version's head
        (a reading command never migrates: it says which command does)."""
        self._db = PgConnection(self.url, read_only=True)
        try:
            tables = table_names(self._db)
            if "runs" not in tables and "alembic_version" not in tables:
                raise JournalError(f"{self.path}: not a strikebench journal (no runs table)")
            rev = revision(self._db)
            _check_revision(self.path, rev)
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if rev != HEAD_REVISION or missing:
                raise _schema_behind(self.path, rev)
            # every read of this journal sees one snapshot: a report taken while a run writes is of one moment
            self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        raise JournalError(f"{self.path}: opened read-only; a reading command never writes")
        yield self._db  # pragma: no cover

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
