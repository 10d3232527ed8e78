"""The live panel (rich): clock, next decision, open trades with P&L and greeks, today's P&L, switches."""

from __future__ import annotations

import time

import numpy as np
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["LivePanel", "render"]


def _next_decision(rt) -> str:
    now = rt.engine.now if rt.engine.i >= 0 else rt.session_open
    times = sorted({t for _, s in rt.engine.strategies for t in s.decision_times()})
    for t in times:
        if (now.hour, now.minute) < (t.hour, t.minute):
            return t.strftime("%H:%M")
    return "none today"


def _greeks(rt, trade) -> tuple[float, float]:
    """Position delta and theta (per combo x contracts x multiplier) from the latest chain snapshot."""
    try:
        snap = rt.engine._chains.get(rt.engine.underlying)
        if snap is None:
            return float("nan"), float("nan")
        delta = theta = 0.0
        mult = trade.legs[0].contract.multiplier
        for leg, n in zip(trade.legs, rt.engine.portfolio.legs_open(trade.trade_id)):
            if not n:  # closed by a partial exit
                continue
            c = leg.contract
            mask = (snap.strike == c.strike) & (snap.is_call == c.is_call) & \
                (snap.expiry == np.datetime64(c.expiry, "D")) & (snap.root == c.root)
            j = np.flatnonzero(mask)
            if not len(j):
                return float("nan"), float("nan")
            delta += leg.ratio * n * mult * float(snap.delta[j[0]])
            theta += leg.ratio * n * mult * float(snap.theta[j[0]])
        return delta, theta
    except Exception:  # the panel never stops the runtime
        return float("nan"), float("nan")


def render(rt):
    clock = rt.clock.now()
    head = Table.grid(padding=(0, 2))
    head.add_row(Text(f"{rt.runinfo.run_id}", style="bold"), Text(f"clock {clock:%Y-%m-%d %H:%M:%S} ({rt.clock.kind}"
                                                                f"{'' if rt.clock.kind == 'wall' else f' x{rt.clock.speed:g}'})"),
                 Text(f"bar {rt.engine.now:%H:%M}" if rt.engine.i >= 0 else "before the open"),
                 Text(f"next decision {_next_decision(rt)}"))
    kill = rt.guards.kill_reason or rt.guards.killed()
    pnl = rt.today_pnl() if rt.state is not None else 0.0
    head.add_row(Text(f"today's P&L {pnl:+,.2f}", style="green" if pnl >= 0 else "red"),
                 Text(f"equity {rt.adapter.getvalue():,.2f}"),
                 Text(f"kill switch: {'TRIPPED - ' + kill if kill else 'armed'}", style="bold red" if kill else "green"),
                 Text(f"new risk: {'STOPPED - ' + rt.guards.fail_closed_reason if rt.guards.fail_closed_reason else 'allowed'}",
                      style="bold red" if rt.guards.fail_closed_reason else "green"))
    trades = Table(title="open trades", title_justify="left", header_style="bold", expand=True)
    for col in ("trade", "legs", "qty", "entry", "mark", "P&L", "delta", "theta"):
        trades.add_column(col)
    p = rt.engine.portfolio
    for t in p.open_trades():
        qty = p.open_contracts(t.trade_id)
        held = p.legs_open(t.trade_id)
        mult = t.legs[0].contract.multiplier
        try:  # the legs still held (a partly closed trade's no-bid wing waits for expiry), per combo
            mark = rt.adapter.held_value(t, held) / qty
        except Exception:
            mark = float("nan")
        # what the fills moved so far (entry; a partial exit's premium) + what is held now, fees left out
        pnl_t = p.premium_flow(t.trade_id) + mark * qty * mult
        d, th = _greeks(rt, t)
        trades.add_row(t.trade_id[-22:], " ".join(f"{l.ratio:+d} {l.contract.occ_compact}"
                                                  for l, n in zip(t.legs, held) if n), str(qty),
                       f"{t.entry_price:+.2f}", f"{mark:+.2f}", f"{pnl_t:+,.2f}", f"{d:+.1f}", f"{th:+.1f}")
    working = rt.adapter.working_orders()
    orders = Text(f"working orders: {len(working)}" + "".join(f"\n  {o.client_id} {o.status.value} "
                                                              f"{o.filled_quantity}/{o.quantity}" for o in working))
    notes = Text("\n".join(rt.reconciled[-6:]) or "reconciled: nothing to do", style="yellow" if rt.reconciled else "dim")
    return Panel(Group(head, trades, orders, notes), title="strikebench paper", border_style="cyan")


class LivePanel:
    """Refreshes at most ``fps`` times a second."""

    def __init__(self, console=None, fps: float = 4.0):
        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.min_dt = 1.0 / fps
        self._last = 0.0
        self._started = False

    def update(self, rt) -> None:
        now = time.monotonic()
        if now - self._last < self.min_dt:
            return
        self._last = now
        if not self._started:
            self.live.start()
            self._started = True
        self.live.update(render(rt), refresh=True)

    def stop(self, rt=None) -> None:
        if rt is not None:
            if not self._started:
                self.live.start()
                self._started = True
            self.live.update(render(rt), refresh=True)
        if self._started:
            self.live.stop()
