"""Guardrails that hold whatever the broker: each refuses an order with a reason the journal keeps.

Checked by the runtime's order router after the risk managers and before anything is
sent (see docs/live.md):

* ``session`` -- no order outside the regular session (by the live clock and by the bar);
* ``kill_switch`` -- no new risk once the day's loss reaches ``daily_loss_cap``, or the
  kill file exists (``strikebench kill RUN_DIR`` / ``flatten`` write it), or it was tripped;
* ``reconciliation`` -- no new risk while the journal and the broker disagree (fail closed);
* ``no_new_risk_window`` -- no opening order in the last N minutes of the session;
* ``stale_quote`` -- no order on quotes older than ``max_quote_age_seconds`` by the live clock;
* ``order_rate`` -- at most ``max_orders_per_minute`` orders sent per minute of the live clock;
* ``dry_run`` -- log the order, send nothing.

Closing orders pass the kill switch, the reconciliation stop and the no-new-risk window:
no guard can trap a position.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from strikebench.api import Veto

__all__ = ["GuardConfig", "Guards"]


@dataclass
class GuardConfig:
    daily_loss_cap: float | None = None  # dollars; None = no loss-based kill switch
    no_new_risk_minutes: int = 0
    max_quote_age_seconds: float = 120.0
    max_orders_per_minute: int = 20
    dry_run: bool = False
    kill_file: str | None = None


class Guards:
    def __init__(self, config: GuardConfig):
        self.config = config
        self.kill_reason: str | None = None
        self.fail_closed_reason: str | None = None
        self._sent: deque[pd.Timestamp] = deque()

    # ------------------------------------------------------------ switches
    def killed(self) -> str | None:
        if self.kill_reason is None and self.config.kill_file and Path(self.config.kill_file).exists():
            text = Path(self.config.kill_file).read_text(encoding="utf-8").strip()
            self.kill_reason = f"kill file {self.config.kill_file}" + (f": {text}" if text else "")
        return self.kill_reason

    def check_loss(self, today_pnl: float) -> str | None:
        cap = self.config.daily_loss_cap
        if cap is not None and self.kill_reason is None and today_pnl <= -cap:
            self.kill_reason = f"daily loss {today_pnl:,.2f} reached the cap {cap:,.2f}"
            return self.kill_reason
        return None

    def sent(self, at: pd.Timestamp) -> None:
        self._sent.append(pd.Timestamp(at))

    # --------------------------------------------------------------- check
    def check(self, order, *, now: pd.Timestamp, quote_time: pd.Timestamp, session_open: pd.Timestamp,
              session_close: pd.Timestamp, bar_time: pd.Timestamp) -> Veto | None:
        c = self.config
        if not (session_open <= now <= session_close) or not (session_open <= bar_time < session_close):
            return Veto(f"outside the regular session ({session_open:%H:%M}-{session_close:%H:%M}; "
                        f"clock {now:%Y-%m-%d %H:%M:%S})", rule="guard:session")
        if order.opens:
            killed = self.killed()
            if killed:
                return Veto(f"kill switch: {killed}", rule="guard:kill_switch")
            if self.fail_closed_reason:
                return Veto(f"no new risk until the journal and the broker agree: {self.fail_closed_reason}",
                            rule="guard:reconciliation")
            if c.no_new_risk_minutes and bar_time >= session_close - pd.Timedelta(minutes=c.no_new_risk_minutes):
                return Veto(f"no new risk in the last {c.no_new_risk_minutes} minutes of the session",
                            rule="guard:no_new_risk_window")
        age = (now - quote_time).total_seconds()
        if age > c.max_quote_age_seconds:
            return Veto(f"stale quotes: {age:.0f} s old, limit {c.max_quote_age_seconds:.0f} s", rule="guard:stale_quote")
        while self._sent and (now - self._sent[0]).total_seconds() >= 60:
            self._sent.popleft()
        if len(self._sent) >= c.max_orders_per_minute:
            return Veto(f"order rate: {len(self._sent)} orders in the last minute, limit {c.max_orders_per_minute}",
                        rule="guard:order_rate")
        if c.dry_run:
            return Veto("dry run: logged, not sent", rule="dry_run")
        return None
