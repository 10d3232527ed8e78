"""Every risk manager's veto, closing orders never blocked, and property tests of the limits."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strikebench.api import OrderRequest
from strikebench.calendar import NY
from strikebench.engine.context import RiskGate
from strikebench.errors import ConfigError
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderType
from strikebench.plugins import risk_managers as rm

EXP = dt.date(2024, 1, 12)
LEGS = (Leg(OptionContract("SPXW", EXP, 4700.0, "P"), -1), Leg(OptionContract("SPXW", EXP, 4675.0, "P"), 1))


class FakePortfolio:
    """A portfolio view whose figures the test sets by hand."""

    def __init__(self, today=dt.date(2024, 1, 8), **kw):
        self.today = today
        self.trades = kw.pop("trades", [])
        self.trades_opened_today = kw.pop("opened", 0)
        self.realized_today = kw.pop("realized", 0.0)
        self.exit_reasons_today = kw.pop("reasons", [])
        self.worst_case_loss = kw.pop("worst", 0.0)
        self.buying_power = kw.pop("bp", 100_000.0)

    def open_trades(self, strategy=None):
        return [t for t in self.trades if strategy is None or t == strategy]


def request(opens=True, loss=2_400.0, at=dt.datetime(2024, 1, 8, 10, 0, tzinfo=NY), strategy="cv"):
    order = Order(client_id="x", legs=LEGS if opens else tuple(l.reversed() for l in LEGS), quantity=1,
                  order_type=OrderType.MARKET, strategy=strategy, trade_id="t", opens=opens)
    return OrderRequest(order=order, at=at, strategy=strategy, opens=opens, quantity=1, est_price=-1.0,
                        worst_case_loss=loss if opens else 0.0)


CASES = [
    (rm.MaxOpenTrades(), FakePortfolio(trades=["cv"]), "1 open trade(s), limit 1"),
    (rm.MaxNewTradesPerDay(), FakePortfolio(opened=1), "1 trade(s) opened today, limit 1"),
    (rm.NoEntryAfterStop(), FakePortfolio(reasons=["take_profit", "stop_loss"]), "closed by stop_loss today"),
    (rm.PerTradeMaxLoss(rm.PerTradeMaxLoss.Params(max_loss=2000)), FakePortfolio(), "worst-case loss 2,400.00 > max 2,000.00"),
    (rm.DailyLossCap(rm.DailyLossCap.Params(cap=500)), FakePortfolio(realized=-500.0), "reached the cap 500.00"),
    (rm.PortfolioWorstCase(rm.PortfolioWorstCase.Params(cap=4000)), FakePortfolio(worst=2000.0), "would be 4,400.00 > cap 4,000.00"),
    (rm.BuyingPowerReserve(rm.BuyingPowerReserve.Params(reserve=1000)), FakePortfolio(bp=3000.0), "600.00 < reserve 1,000.00"),
]


@pytest.mark.parametrize("manager,portfolio,reason", CASES, ids=[c[0].name for c in CASES])
def test_each_manager_vetoes_an_entry_and_lets_the_exit_through(manager, portfolio, reason):
    gate = RiskGate([manager])
    vetoes = gate.check(request(), portfolio)
    assert len(vetoes) == 1 and reason in vetoes[0].reason and vetoes[0].rule == manager.name
    assert gate.check(request(opens=False), portfolio) == []


LEG_FREE = {"max_open_trades", "max_new_trades_per_day", "no_entry_after_stop", "daily_loss_cap"}


@pytest.mark.parametrize("manager,portfolio,reason", CASES, ids=[c[0].name for c in CASES])
def test_a_rule_that_blocks_every_entry_says_so_before_any_order_with_the_same_veto(manager, portfolio, reason):
    """entries_blocked (asked before a chain is built) gives exactly the veto check gives an order, for the
    rules that do not depend on the order; the rules that do (loss of this order, buying power) are not asked."""
    gate = RiskGate([type(manager)(manager.params)])
    blocked = gate.entries_blocked("cv", request().at, portfolio)
    if manager.name in LEG_FREE:
        assert blocked == RiskGate([type(manager)(manager.params)]).check(request(), portfolio)
        assert len(blocked) == 1 and reason in blocked[0].reason and blocked[0].rule == manager.name
    else:
        assert blocked == []
    fresh = RiskGate([type(manager)(manager.params)])  # (daily_loss_cap latches for the day once tripped)
    assert fresh.entries_blocked("cv", request().at, FakePortfolio()) == []  # nothing open, no loss: entries pass


def test_time_windows_block_entries_before_any_order_and_a_narrowed_rule_is_not_asked():
    gate = RiskGate([rm.NoNewRiskWindow(), rm.EventBlackout()])
    for at in (dt.datetime(2024, 1, 8, 15, 0, tzinfo=NY), dt.datetime(2023, 3, 22, 14, 0, tzinfo=NY)):
        assert gate.entries_blocked("cv", at, FakePortfolio(today=at.date())) == gate.check(request(at=at), FakePortfolio())
        assert gate.entries_blocked("cv", at, FakePortfolio(today=at.date()))
    assert gate.entries_blocked("cv", dt.datetime(2024, 1, 8, 14, 59, tzinfo=NY), FakePortfolio()) == []

    class OnlyOtherStrategies(rm.MaxOpenTrades):  # applies_to narrowed: it may not veto every entry of "cv"
        def applies_to(self, request):
            return request.opens and request.strategy != "cv"

    assert RiskGate([OnlyOtherStrategies()]).entries_blocked("cv", request().at, FakePortfolio(trades=["x"])) == []


def test_no_new_risk_window_uses_the_real_close_including_early_closes():
    gate = RiskGate([rm.NoNewRiskWindow()])
    assert gate.check(request(at=dt.datetime(2024, 1, 8, 14, 59, tzinfo=NY)), FakePortfolio()) == []
    (veto,) = gate.check(request(at=dt.datetime(2024, 1, 8, 15, 0, tzinfo=NY)), FakePortfolio())
    assert "within 60 min of the 16:00 close" in veto.reason
    # 2023-11-24 closes at 13:00
    (veto,) = gate.check(request(at=dt.datetime(2023, 11, 24, 12, 5, tzinfo=NY)), FakePortfolio())
    assert "13:00 close" in veto.reason


def test_daily_loss_cap_is_a_kill_switch_for_the_rest_of_the_day():
    cap = rm.DailyLossCap(rm.DailyLossCap.Params(cap=500))
    gate = RiskGate([cap])
    assert gate.check(request(), FakePortfolio(realized=-499.99)) == []
    assert gate.check(request(), FakePortfolio(realized=-500.0))
    # realized recovers (a later winner), the switch stays tripped that day, resets the next
    assert gate.check(request(), FakePortfolio(realized=+100.0))
    assert gate.check(request(), FakePortfolio(today=dt.date(2024, 1, 9), realized=0.0)) == []


def test_event_blackout_from_the_shipped_sample_and_bad_rows(tmp_path):
    gate = RiskGate([rm.EventBlackout()])
    at = dt.datetime(2023, 3, 22, 14, 0, tzinfo=NY)
    (veto,) = gate.check(request(at=at), FakePortfolio(today=at.date()))
    assert "FOMC" in veto.reason
    bad = tmp_path / "events.csv"
    bad.write_text("date,start,end,label\n2024-01-31,13:30,15:00,FOMC\n2024-02-30,08:00,09:00,CPI\n")
    with pytest.raises(ConfigError, match=r"events.csv:3: bad blackout row"):
        rm.load_blackouts(bad)


def test_blackout_csv_with_a_bad_row_fails_validate_with_the_yaml_path(tmp_path):
    bad = tmp_path / "events.csv"
    bad.write_text("date,start,end,label\n2024-01-31,15:00,13:30,FOMC\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\nstrategies: [{{name: credit_vertical}}]\nrisk:\n  - name: event_blackout\n"
                   f"    params: {{calendar: {bad}}}\n")
    out = subprocess.run([sys.executable, "-m", "strikebench.cli", "validate", str(cfg)], capture_output=True,
                         text=True, env={"COLUMNS": "400", "NO_COLOR": "1", "PATH": ""})
    assert out.returncode == 2
    assert "risk[0].params.calendar" in out.stderr and "events.csv:2: blackout end 13:30:00 is not after start" in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------- property test
order_events = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "stop", "newday"]),
        st.floats(min_value=50, max_value=5_000),  # worst-case loss of an entry
        st.floats(min_value=-800, max_value=400),  # P&L of a close
    ),
    min_size=1, max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(order_events, st.integers(1, 3), st.integers(1, 3), st.floats(200, 2_000), st.floats(2_000, 12_000))
def test_no_approved_sequence_breaks_a_configured_limit(events, max_open, max_new, cap, worst_cap):
    managers = [rm.MaxOpenTrades(rm.MaxOpenTrades.Params(limit=max_open)),
                rm.MaxNewTradesPerDay(rm.MaxNewTradesPerDay.Params(limit=max_new)),
                rm.NoEntryAfterStop(), rm.DailyLossCap(rm.DailyLossCap.Params(cap=cap)),
                rm.PortfolioWorstCase(rm.PortfolioWorstCase.Params(cap=worst_cap))]
    gate = RiskGate(managers)
    day = dt.date(2024, 1, 8)
    open_losses: list[float] = []
    p = FakePortfolio(today=day)
    stopped_today = False
    for kind, loss, pnl in events:
        if kind == "newday":
            day += dt.timedelta(days=1)
            p = FakePortfolio(today=day, trades=p.trades, worst=p.worst_case_loss)
            stopped_today = False
            continue
        if kind in ("close", "stop"):
            if not open_losses:
                continue
            assert gate.check(request(opens=False), p) == []  # exits are never blocked
            open_losses.pop()
            p.trades = p.trades[1:]
            p.worst_case_loss = sum(open_losses)
            p.realized_today += pnl
            if kind == "stop":
                p.exit_reasons_today = [*p.exit_reasons_today, "stop_loss"]
                stopped_today = True
            continue
        if gate.check(request(loss=loss), p):
            continue
        # approved: every limit must still hold after the order
        open_losses.append(loss)
        p.trades = [*p.trades, "cv"]
        p.trades_opened_today += 1
        p.worst_case_loss = sum(open_losses)
        assert len(p.trades) <= max_open
        assert p.trades_opened_today <= max_new
        assert not stopped_today
        assert -p.realized_today < cap
        assert p.worst_case_loss <= worst_cap + 1e-9
