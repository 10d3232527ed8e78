"""``strikebench new-plugin``: the package it writes installs, registers, and passes its own tests.

The generated package (``my_strat_<pid>``) is pip-installed as a user would (``--no-deps --no-build-isolation``
so it works offline), but with ``pip install --target`` into a scratch folder, so it never touches the shared
environment: only the subprocesses given that folder on ``PYTHONPATH`` see it. The suite runs on several workers at
once; a package installed into the shared virtual environment mid-run is seen by another worker's entry-point scan
but cannot be imported there (its path hook is read at interpreter start), which broke unrelated tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from strikebench.cli import main
from strikebench.plugin_manager import LOAD_ENV
from strikebench.scaffold import ScaffoldError, plugin_names, write_plugin

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# One name per test process: test runs that share a virtual environment must not install,
# list or uninstall each other's scaffolded plugin.
NAME = f"my_strat_{os.getpid()}"
NAMES = plugin_names(NAME)


def run(args: list[str], *, cwd: Path | None = None, load: str | None = None, pythonpath: Path | None = None,
        timeout: int = 180) -> subprocess.CompletedProcess:
    """A subprocess of this interpreter with a wide, colourless terminal and the given plugin selection."""
    env = {k: v for k, v in os.environ.items() if k not in (LOAD_ENV, "PYTHONPATH")}
    env.update({"COLUMNS": "500", "NO_COLOR": "1", "TERM": "dumb"})
    if load is not None:
        env[LOAD_ENV] = load
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def strikebench(*args: str, **kw) -> subprocess.CompletedProcess:
    return run(["-m", "strikebench.cli", *args], **kw)


def pip(*args: str) -> subprocess.CompletedProcess:
    result = run(["-m", "pip", "--disable-pip-version-check", "--no-input", *args])
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def table_rows(stdout: str) -> list[list[str]]:
    """Body rows of the rich tables printed (500 columns wide: one line per row)."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in ANSI.sub("", stdout).splitlines() if line.startswith("│")]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    stderr = ANSI.sub("", result.stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr[len("error: "):-1]


@pytest.fixture(scope="module")
def my_strat(tmp_path_factory):
    """``strikebench new-plugin strategy my_strat_<pid> --dir tmp``, pip-installed into a folder of its own."""
    base = tmp_path_factory.mktemp("scaffold")
    created = strikebench("new-plugin", "strategy", NAME, "--dir", "tmp", cwd=base)
    assert created.returncode == 0, created.stderr
    package, site = base / "tmp", base / "site"
    pip("install", "--no-deps", "--no-build-isolation", "--quiet", "--target", str(site), str(package))
    return package, created, site


# ----------------------------------------------------------------- the package
def test_new_plugin_writes_a_complete_package(my_strat):
    package, created, _ = my_strat
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*")
                   if p.is_file() and not any(x in p.as_posix() for x in ("egg-info", "__pycache__", "build/")))
    assert files == ["README.md", f"{NAME}.yaml", "pyproject.toml", f"src/{NAMES.package}/__init__.py",
                     f"src/{NAMES.package}/strategy.py", f"tests/test_{NAME}.py"]
    pyproject = (package / "pyproject.toml").read_text()
    assert f'name = "{NAMES.distribution}"' in pyproject
    assert f'[project.entry-points.strikebench]\n{NAME} = "{NAMES.package}"' in pyproject
    out = created.stdout
    assert (f"created strategy plugin '{NAME}' (distribution {NAMES.distribution}, package {NAMES.package}) "
            f"in tmp/") in out
    assert 'pip install -e ".[test]"' in out and f"strikebench backtest {NAME}.yaml" in out


def test_installed_package_is_listed_by_strikebench_plugins(my_strat):
    result = strikebench("plugins", "--kind", "strategy", pythonpath=my_strat[2])
    assert result.returncode == 0, result.stderr
    assert [NAME, NAMES.distribution, "0.1.0",
            f"{NAME}: put credit spread near a target DTE and delta, take profit and stop."] in table_rows(result.stdout)


def test_its_parameters_and_yaml_validate(my_strat):
    package, _, site = my_strat
    params = strikebench("plugins", "--params", NAME, pythonpath=site)
    assert params.returncode == 0, params.stderr
    rows = {row[0]: row[1:4] for row in table_rows(params.stdout)}
    assert rows["short_delta"] == ["float", "0.2", "> 0, < 0.5"]
    assert rows["entry_time"] == ["time", "10:00", ""]
    valid = strikebench("validate", f"{NAME}.yaml", cwd=package, pythonpath=site)
    assert valid.returncode == 0, valid.stderr
    assert ["strategies[0]", NAME, f"{NAMES.distribution} 0.1.0"] in table_rows(valid.stdout)


def test_its_own_tests_pass(my_strat):
    package, _, site = my_strat
    result = run(["-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist"], cwd=package, pythonpath=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^5 passed", result.stdout, re.M), result.stdout


# --------------------------------------------------------------- names, folders
def test_names_derive_from_the_plugin_name():
    names = plugin_names("iron_condor")
    assert (names.distribution, names.package, names.cls) == ("sb-iron-condor", "sb_iron_condor", "IronCondor")
    assert plugin_names("sb_probe").distribution == "sb-probe"
    assert plugin_names("my_strat_123").cls == "MyStrat123"


@pytest.mark.parametrize("bad", ["My-Strat", "2fast", "with space", "trailing_", "double__under", "class"])
def test_a_name_that_cannot_be_a_package_is_refused(bad):
    with pytest.raises(ScaffoldError, match=re.escape(repr(bad))):
        plugin_names(bad)


def test_never_writes_into_a_folder_that_has_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new-plugin", "strategy", "my_strat", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path}: already exists and is not an empty folder; choose another --dir")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_name_already_registered_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(LOAD_ENV, "")  # built-ins only: editable installs made by this run do not import in-process
    assert main(["new-plugin", "strategy", "credit_vertical", "--dir", str(tmp_path / "x")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: a strategy named 'credit_vertical' is already registered by strikebench ")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------- a broken plugin
def test_a_plugin_raising_in_its_register_hook_names_itself_and_can_be_left_out(tmp_path):
    package, _ = write_plugin("strategy", "broken_strat", tmp_path / "src")  # installed only under tmp_path
    init = package / "src" / "sb_broken_strat" / "__init__.py"
    init.write_text(init.read_text().replace(
        "    register(BrokenStrat)", "    raise RuntimeError('cannot reach the vendor API')"))
    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-build-isolation", "--quiet", "--target", str(site), str(package))

    broken = strikebench("plugins", pythonpath=site)
    assert broken.returncode == 3
    assert one_line_error(broken) == (
        "plugin 'broken_strat' (distribution sb-broken-strat 0.1.0) raised in register_strategies: "
        "RuntimeError: cannot reach the vendor API; start without it by setting STRIKEBENCH_LOAD_PLUGINS to the "
        "plugins you want (empty for none)")

    for load in ("", "sb-iron-condor", "iron_condor,credit_vertical"):
        without = strikebench("plugins", "--kind", "strategy", pythonpath=site, load=load)
        assert without.returncode == 0, without.stderr
        names = [row[0] for row in table_rows(without.stdout)]
        assert "credit_vertical" in names and "broken_strat" not in names
