"""docs/hooks.md documents every hook of strikebench.hookspecs, and its examples run.

Fails when a hook, or one of its arguments, is missing from the reference page or from the
hookspec's docstring, when the page documents a hook that does not exist, or when an example
does not register and run.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from strikebench import hookspecs
from strikebench.api import BreakerTrip, Decision, OrderRequest, RunInfo, Veto
from strikebench.plugin_manager import BUILTIN_PLUGINS, get_plugin_manager

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
HOOKS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, f"{hookspecs.PROJECT}_spec")}
HEADING = re.compile(r"^(#{2,3}) (.+)$", re.M)
HOOK_HEADING = re.compile(r"^(\w+)\((.*)\)$")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _sections(text: str) -> dict[str, str]:
    """Heading title -> text up to the next heading."""
    marks = list(HEADING.finditer(text))
    return {m.group(2).strip(): text[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            for i, m in enumerate(marks)}


DOC_TEXT = DOC.read_text(encoding="utf-8")
SECTIONS = _sections(DOC_TEXT)
HOOK_SECTIONS = {m.group(1): (title, body) for title, body in SECTIONS.items() if (m := HOOK_HEADING.match(title))}
EXAMPLES = [(title, code) for title, body in SECTIONS.items() for code in PYTHON_BLOCK.findall(body)]


def _args(hook) -> list[str]:
    return list(inspect.signature(hook).parameters)


# ------------------------------------------------------------ documentation
def test_hooks_exist():
    assert "register_strategies" in HOOKS and "check_order" in HOOKS


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_reference_section(name):
    assert name in HOOK_SECTIONS, f"docs/hooks.md has no '### {name}(...)' heading"
    title, body = HOOK_SECTIONS[name]
    assert title == f"{name}({', '.join(_args(HOOKS[name]))})", "the heading must be the hook's signature"
    for arg in _args(HOOKS[name]):
        assert f"* `{arg}` —" in body, f"argument '{arg}' of {name} is not documented in docs/hooks.md"
    assert "**Returns**" in body and "**Called**" in body
    assert len(PYTHON_BLOCK.findall(body)) == 1, f"{name} needs exactly one ```python example"


def test_page_documents_no_unknown_hook():
    assert sorted(set(HOOK_SECTIONS) - set(HOOKS)) == []


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hookspec_docstring_is_complete(name):
    doc = inspect.getdoc(HOOKS[name]) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{name} has no summary line"
    for arg in _args(HOOKS[name]):
        assert re.search(rf"^:param {arg}:", doc, re.M), f"{name}'s docstring lacks ':param {arg}:'"
    assert re.search(r"^:return:", doc, re.M), f"{name}'s docstring lacks a ':return:' line"
    assert re.search(r"\bcalled\b", doc, re.I), f"{name}'s docstring does not say when it is called"


# ----------------------------------------------------------------- examples
@pytest.fixture
def samples(tmp_path):
    """One real value per hook argument: a put credit spread on SPX, 4 days to expiry."""
    from strikebench.engine.broker import OrderTransition
    from strikebench.options.orders import Fill, Leg, Order, OrderStatus, TradeRecord
    from strikebench.portfolio import Portfolio
    from strikebench.testing import make_chain

    day = dt.date(2024, 1, 8)
    expiry = dt.date(2024, 1, 12)
    at = pd.Timestamp("2024-01-08 15:45", tz="America/New_York").to_pydatetime()
    chain = make_chain(spot=4800.0, expiries=[expiry], iv=0.15, at="2024-01-08 10:00")
    short = chain.closest_delta(expiry, "P", 0.15)
    long = chain.offset_row(short, 25)
    legs = (Leg(chain.contract(short), -1), Leg(chain.contract(long), +1))
    order = Order(client_id="T-1", legs=legs, quantity=2, limit_price=-1.20, strategy="credit_vertical")
    return {
        "run": RunInfo(run_id="r-1", name="spx_put_spreads", mode="backtest", output_dir=str(tmp_path), seed=42),
        "day": day,
        "decision": Decision(strategy="credit_vertical", decided_at=at, action="SKIP", reason="credit below 0.30",
                             snapshot_checksum=chain.checksum),
        "snapshot": chain,
        "order": order,
        "event": OrderTransition("T-1", OrderStatus.SUBMITTED, OrderStatus.FILLED, at, "filled at -1.20"),
        "fill": Fill(fill_id="F-1", client_id="T-1", filled_at=at, quantity=2, net_price=-1.20,
                     leg_prices=(2.10, 0.90), fees=5.12),
        "trade": TradeRecord(trade_id="T-1", strategy="credit_vertical", legs=legs, contracts=2, opened_at=at,
                             entry_price=-1.20, leg_entry_prices=(2.10, 0.90), fees=10.24, closed_at=at,
                             exit_price=7.20, leg_exit_prices=(8.00, 0.80), exit_reason="stop",
                             realized_pnl=-1210.24),
        "equity": 98_789.76,
        "trip": BreakerTrip("vix_jump", "account", at, "VIX 31.20 >= level 30", {"vix": 31.2, "level": 30.0},
                            "next session"),
        "summary": {"completed": True, "equity": 98_789.76, "trades": 1},
        "request": OrderRequest(order=order, at=at, strategy="credit_vertical", opens=True, quantity=2,
                                est_price=-1.20, worst_case_loss=4760.0),
        "portfolio": Portfolio(100_000.0).view(day),
    }


def _load_example(monkeypatch, title: str, code: str, index: int):
    """Exec one example as a plugin module and build a plugin manager with it beside the built-ins."""
    name = f"hooks_md_example_{index}"
    module = types.ModuleType(name)
    module.__file__ = f"<docs/hooks.md: {title}>"
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    pm = get_plugin_manager(builtins=(*BUILTIN_PLUGINS, name), load_entry_points=False)
    return name, module, pm


@pytest.mark.parametrize("index, title, code", [(i, t, c) for i, (t, c) in enumerate(EXAMPLES)],
                         ids=[t.split("(")[0] for t, _ in EXAMPLES])
def test_example_registers_and_runs(monkeypatch, samples, index, title, code):
    name, module, pm = _load_example(monkeypatch, title, code, index)
    implemented = [caller.name for caller in pm.get_hookcallers(module)]
    assert implemented, f"the example under '{title}' implements no hook"
    for hook_name in implemented:
        if hook_name.startswith("register_"):
            registered = [e for e in pm.registry.entries() if e.plugin == name]
            assert registered, f"{hook_name} example registered nothing"
            continue
        builtins = [pm.get_plugin(b) for b in BUILTIN_PLUGINS]
        caller = pm.subset_hook_caller(hook_name, remove_plugins=builtins)
        results = caller(**{arg: samples[arg] for arg in _args(HOOKS[hook_name])})
        assert all(r is None or isinstance(r, Veto) for r in results)


def test_every_hook_has_an_example_that_implements_it(monkeypatch):
    implemented = set()
    for index, (title, code) in enumerate(EXAMPLES):
        _, module, pm = _load_example(monkeypatch, title, code, index)
        implemented |= {caller.name for caller in pm.get_hookcallers(module)}
    assert sorted(set(HOOKS) - implemented) == []


def test_check_order_example_vetoes_a_late_entry_but_not_an_exit(monkeypatch, samples):
    (index, (title, code)), = [(i, e) for i, e in enumerate(EXAMPLES) if e[0].startswith("check_order(")]
    _, module, _ = _load_example(monkeypatch, title, code, index)
    late_entry = samples["request"]  # opening, 15:45 New York
    assert module.check_order(samples["run"], late_entry, samples["portfolio"]) == Veto(
        "no new risk after 15:30", rule="house_rules")
    exit_request = OrderRequest(**{**late_entry.__dict__, "opens": False})
    assert module.check_order(samples["run"], exit_request, samples["portfolio"]) is None


def test_strategy_example_trades_a_week_on_the_feed_example(monkeypatch):
    """The register_strategies example run on the register_feeds example's flat market."""
    from strikebench.testing import run_strategy

    loaded = {title.split("(")[0]: _load_example(monkeypatch, title, code, i)
              for i, (title, code) in enumerate(EXAMPLES)
              if title.startswith(("register_strategies(", "register_feeds("))}
    strategy = loaded["register_strategies"][2].registry.get("strategy", "put_spread_at_delta")
    feed = loaded["register_feeds"][2].registry.get("feed", "flat_market")
    engine = run_strategy(strategy.cls, feed.build().open())
    actions = [d.action for d in engine.decisions]
    assert "TRADE" in actions, [d.reason for d in engine.decisions]
    assert engine.portfolio.all_trades(), "a TRADE decision opened no trade"
