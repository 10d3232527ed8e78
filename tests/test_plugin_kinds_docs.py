"""The plugin-author pages stay true: docs/plugin-kinds.md runs, docs/strategy-api.md is complete.

* Each ``## `` section of docs/plugin-kinds.md runs its ``python`` blocks in order in one fresh
  module (the plugin, then its test, whose ``assert``s are the checks); the module's hook must
  register the component; each ``yaml`` block must validate with it registered.
* docs/strategy-api.md documents every public member of ``StrategyContext`` and ``Strategy``.
* The links of docs/writing-a-strategy.md, docs/plugin-kinds.md and docs/strategy-api.md point
  at files and headings that exist.
* Every code block of the tutorial (docs/writing-a-strategy.md) is in examples/iron-condor-plugin.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from strikebench.api import Strategy
from strikebench.config import load_config
from strikebench.engine.context import StrategyContext
from strikebench.testing import plugin_registry

DOCS = Path(__file__).resolve().parents[1] / "docs"
PLUGIN_KINDS = DOCS / "plugin-kinds.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)

#: section title -> (kind, registered name) of the plugin it builds
SECTIONS = {
    "Fill model": ("fill_model", "mid_plus_ticks"),
    "Risk manager": ("risk_manager", "entry_window"),
    "Data feed": ("feed", "csv_bars"),
    "Broker": ("broker", "paper_account"),
}


def code_blocks(path: Path) -> dict[str, list[tuple[str, int, str]]]:
    """``{section title: [(language, first line number, code), ...]}`` for every ``## `` section."""
    text = path.read_text()
    starts = [(m.start(), m.group(1).strip()) for m in re.finditer(r"^## (.+)$", text, re.M)]
    out: dict[str, list[tuple[str, int, str]]] = {}
    for k, (start, title) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        out[title] = [(m.group(1), text.count("\n", 0, m.start(2)) + 1, m.group(2))
                      for m in FENCE.finditer(text, start, end)]
    return out


def test_every_plugin_kind_has_a_section():
    assert list(code_blocks(PLUGIN_KINDS)) == list(SECTIONS)


@pytest.mark.parametrize("title", SECTIONS)
def test_section_runs_registers_its_plugin_and_validates_its_yaml(title, tmp_path, monkeypatch):
    blocks = code_blocks(PLUGIN_KINDS)[title]
    python = [(line, code) for lang, line, code in blocks if lang == "python"]
    yamls = [code for lang, _, code in blocks if lang == "yaml"]
    assert len(python) >= 2 and yamls, f"{title}: a plugin, its test and a YAML example"

    module = types.ModuleType("plugin_kinds_" + title.lower().replace(" ", "_"))
    module.__file__ = str(PLUGIN_KINDS)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv("MY_BROKER_TOKEN", "unset-by-teardown")  # the examples may set it
    for line, code in python:
        # pad with blank lines so a traceback points at the line of the page
        exec(compile("\n" * (line - 1) + code, str(PLUGIN_KINDS), "exec"), module.__dict__)

    registry = plugin_registry(module)
    kind, name = SECTIONS[title]
    entry = registry.get(kind, name)
    assert entry is not None and entry.cls.__module__ == module.__name__
    assert entry.summary, f"{name}: the class docstring's first line is its summary"
    for i, text in enumerate(yamls):
        config = tmp_path / f"example{i}.yaml"
        config.write_text(text)
        resolved = load_config(config, registry=registry)
        assert any(rp.entry is entry for rp in (resolved.data, resolved.broker, resolved.fill_model,
                                                 resolved.commission, *resolved.risk, *resolved.strategies))


# ------------------------------------------------------------- strategy-api.md
def _public(cls) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_")}


@pytest.mark.parametrize("cls, heading", [(StrategyContext, "## StrategyContext"), (Strategy, "## Strategy")])
def test_strategy_api_documents_every_public_member(cls, heading):
    text = (DOCS / "strategy-api.md").read_text()
    start = text.index(heading + "\n")
    section = text[start:text.find("\n## ", start + 1)]
    documented = set(re.findall(r"^\| `(?:ctx\.|strategy\.)?([a-z_]+)", section, re.M))
    members = _public(cls) - {"kind", "name", "Params", "underlying", "strategy_id", "strategy", "last_vetoes"}
    assert members <= documented, f"undocumented in {heading}: {sorted(members - documented)}"


# ---------------------------------------------------------------------- links
def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", ["writing-a-strategy.md", "plugin-kinds.md", "strategy-api.md"])
def test_links_point_at_files_and_headings_that_exist(page):
    text = (DOCS / page).read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        path = (DOCS / page).parent / target if target else DOCS / page
        assert path.exists(), f"{page}: {link} -> no file {path}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page}: {link} -> no heading #{anchor}"


# ------------------------------------------------------- writing-a-strategy.md
def test_tutorial_code_is_the_example_package_code():
    """Every python/yaml/toml block of the tutorial appears verbatim in examples/iron-condor-plugin."""
    example = DOCS.parent / "examples" / "iron-condor-plugin"
    sources: dict[str, list[str]] = {".py": [], ".yaml": [], ".toml": []}
    for path in example.rglob("*"):
        if path.is_file() and path.suffix in sources and "egg-info" not in str(path):
            sources[path.suffix].append(path.read_text())
    text = (DOCS / "writing-a-strategy.md").read_text()
    blocks = [(lang, code) for lang, code in FENCE.findall(text) if lang in ("python", "yaml", "toml")]
    assert len(blocks) >= 8
    suffix = {"python": ".py", "yaml": ".yaml", "toml": ".toml"}
    for lang, code in blocks:
        assert any(code.strip() in source for source in sources[suffix[lang]]), (
            f"this {lang} block of docs/writing-a-strategy.md is not in the example package:\n{code[:300]}")
