"""Built-in risk managers: guardrails consulted before every order.

Each is a plugin with a typed ``Params`` model. Entry rules see only orders that
open risk (:meth:`RiskManager.applies_to`); closing orders always pass, so no
rule can trap a position. A veto's reason is journaled with the order.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
from importlib import resources
from pathlib import Path

from pydantic import Field, field_validator

from strikebench.api import PluginParams, RiskManager, Veto
from strikebench.calendar import NY, MarketCalendar
from strikebench.errors import ConfigError
from strikebench.hookspecs import hookimpl

__all__ = [
    "MaxOpenTrades", "MaxNewTradesPerDay", "NoEntryAfterStop", "PerTradeMaxLoss", "DailyLossCap",
    "PortfolioWorstCase", "NoNewRiskWindow", "EventBlackout", "BuyingPowerReserve", "load_blackouts",
]


class _LimitParams(PluginParams):
    limit: int = Field(1, ge=0, description="maximum allowed")


class MaxOpenTrades(RiskManager):
    """No new trade while `limit` trades are open (all strategies, or per strategy)."""

    name = "max_open_trades"

    class Params(_LimitParams):
        per_strategy: bool = Field(False, description="count only the ordering strategy's trades")

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        trades = portfolio.open_trades(strategy if self.params.per_strategy else None)
        if len(trades) >= self.params.limit:
            return Veto(f"{len(trades)} open trade(s), limit {self.params.limit}")
        return None

    def blocks_entries_until(self, strategy, at, portfolio):
        return self.UNTIL_CHANGED  # the account's open trades


class MaxNewTradesPerDay(RiskManager):
    """No more than `limit` new trades per session."""

    name = "max_new_trades_per_day"
    Params = _LimitParams

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        if portfolio.trades_opened_today >= self.params.limit:
            return Veto(f"{portfolio.trades_opened_today} trade(s) opened today, limit {self.params.limit}")
        return None

    def blocks_entries_until(self, strategy, at, portfolio):
        return self.UNTIL_CHANGED  # the session's fills


class NoEntryAfterStopParams(PluginParams):
    exit_reasons: list[str] = Field(default_factory=lambda: ["stop_loss"],
                                    description="exit reasons that count as a stop")


class NoEntryAfterStop(RiskManager):
    """No new entry for the rest of a session in which a trade was stopped out."""

    name = "no_entry_after_stop"
    Params = NoEntryAfterStopParams

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        stops = [r for r in portfolio.exit_reasons_today if r in self.params.exit_reasons]
        if stops:
            return Veto(f"a trade was closed by {stops[0]} today")
        return None

    def blocks_entries_until(self, strategy, at, portfolio):
        return self.UNTIL_CHANGED  # the session's exits


class _DollarParams(PluginParams):
    max_loss: float = Field(..., gt=0, description="dollars")


class PerTradeMaxLoss(RiskManager):
    """No order whose worst-case loss exceeds `max_loss` dollars."""

    name = "per_trade_max_loss"
    Params = _DollarParams

    def check(self, request, portfolio):
        if request.worst_case_loss > self.params.max_loss + 1e-9:
            return Veto(f"worst-case loss {request.worst_case_loss:,.2f} > max {self.params.max_loss:,.2f}")
        return None


class DailyLossCapParams(PluginParams):
    cap: float = Field(..., gt=0, description="realized loss for the day, dollars, that trips the kill switch")


class DailyLossCap(RiskManager):
    """Kill switch: once the day's realized loss reaches `cap`, no new risk that day (exits still allowed)."""

    name = "daily_loss_cap"
    Params = DailyLossCapParams

    def __init__(self, params=None):
        super().__init__(params)
        self.tripped_on: dt.date | None = None
        self._tripped_now = False  # the last answer tripped the switch (the next one names the switch instead)

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        self._tripped_now = False
        if self.tripped_on == portfolio.today:
            return Veto(f"kill switch tripped today (daily loss cap {self.params.cap:,.2f})")
        if -portfolio.realized_today >= self.params.cap - 1e-9:
            self.tripped_on = portfolio.today
            self._tripped_now = True
            return Veto(f"day's realized loss {-portfolio.realized_today:,.2f} reached the cap {self.params.cap:,.2f}")
        return None

    def blocks_entries_until(self, strategy, at, portfolio):
        # the day's realized P&L; an answer that just tripped the switch is followed by the switch's own reason
        return None if self._tripped_now else self.UNTIL_CHANGED


class PortfolioWorstCaseParams(PluginParams):
    cap: float = Field(..., gt=0, description="dollars: the most all open positions together may lose")


class PortfolioWorstCase(RiskManager):
    """No order that makes the worst-case loss of all open positions exceed `cap`."""

    name = "portfolio_worst_case"
    Params = PortfolioWorstCaseParams

    def check(self, request, portfolio):
        total = portfolio.worst_case_loss + request.worst_case_loss
        if total > self.params.cap + 1e-9:
            return Veto(f"portfolio worst case would be {total:,.2f} > cap {self.params.cap:,.2f}")
        return None


class NoNewRiskWindowParams(PluginParams):
    minutes_before_close: int = Field(60, ge=0, le=390, description="no new risk this many minutes before the close")
    minutes_after_open: int = Field(0, ge=0, le=390, description="no new risk this many minutes after the open")


class NoNewRiskWindow(RiskManager):
    """No new risk near the open or in the last minutes of the session (early closes respected)."""

    name = "no_new_risk_window"
    Params = NoNewRiskWindowParams

    def __init__(self, params=None):
        super().__init__(params)
        self._calendar = MarketCalendar()
        self._windows: dict[dt.date, tuple] = {}

    def _window(self, day: dt.date) -> tuple:
        """(close, first minute of no new risk, first minute of new risk) of a session, once a session, as
        plain datetimes (comparing a datetime with a pandas Timestamp cost tens of microseconds a check)."""
        w = self._windows.get(day)
        if w is None:
            close = self._calendar.session_close(day)
            opening = self._calendar.session_open(day)
            w = (close, (close - dt.timedelta(minutes=self.params.minutes_before_close)).to_pydatetime(),
                 (opening + dt.timedelta(minutes=self.params.minutes_after_open)).to_pydatetime())
            self._windows[day] = w
        return w

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        at = at if at.tzinfo else at.replace(tzinfo=NY)
        close, no_new_risk, new_risk = self._window(at.date())
        if at >= no_new_risk:
            return Veto(f"{at:%H:%M} is within {self.params.minutes_before_close} min of the {close:%H:%M} close")
        if at < new_risk:
            return Veto(f"{at:%H:%M} is within {self.params.minutes_after_open} min of the open")
        return None

    def blocks_entries_until(self, strategy, at, portfolio):
        """Outside the windows: until the closing window starts (a veto names its minute: no promise)."""
        at = at if at.tzinfo else at.replace(tzinfo=NY)
        close, no_new_risk, new_risk = self._window(at.date())
        return no_new_risk if new_risk <= at < no_new_risk else None


def load_blackouts(path: str | Path) -> list[tuple[dt.datetime, dt.datetime, str]]:
    """Read a blackout CSV (date,start,end,label; times America/New_York); one-line errors naming the row."""
    from strikebench.userfiles import MAX_CSV_BYTES, read_text

    text = read_text(path, what="blackout calendar (CSV)", max_bytes=MAX_CSV_BYTES)
    out = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames
        rows = list(reader)
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: not a readable CSV ({exc})") from None
    missing = {"date", "start", "end", "label"} - set(fields or [])
    if missing:
        raise ConfigError(f"{path}:1: blackout calendar lacks column(s) {', '.join(sorted(missing))}")
    for n, row in enumerate(rows, start=2):
        try:
            day = dt.date.fromisoformat(row["date"].strip())
            start = dt.time.fromisoformat(row["start"].strip())
            end = dt.time.fromisoformat(row["end"].strip())
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}:{n}: bad blackout row {dict(row)}: {exc}") from None
        if end <= start:
            raise ConfigError(f"{path}:{n}: blackout end {end} is not after start {start}")
        out.append((dt.datetime.combine(day, start, NY), dt.datetime.combine(day, end, NY),
                    (row.get("label") or "").strip()))
    return out


def _sample_calendar() -> str:
    return str(resources.files("strikebench.configs").joinpath("event_blackout.csv"))


class EventBlackoutParams(PluginParams):
    calendar: str = Field(default_factory=_sample_calendar,
                          description="CSV of blackout windows: date,start,end,label (America/New_York)")

    @field_validator("calendar")
    @classmethod
    def _readable(cls, v: str) -> str:
        try:
            load_blackouts(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v


class EventBlackout(RiskManager):
    """No new risk inside scheduled event windows (FOMC, CPI...) read from a CSV calendar."""

    name = "event_blackout"
    Params = EventBlackoutParams

    def __init__(self, params=None):
        super().__init__(params)
        self.windows = load_blackouts(self.params.calendar)
        self._starts: tuple = (None, [])  # (the windows list, its starts sorted)

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        at = at if at.tzinfo else at.replace(tzinfo=NY)
        for start, end, label in self.windows:
            if start <= at < end:
                return Veto(f"event blackout {label} {start:%Y-%m-%d %H:%M}-{end:%H:%M}")
        return None

    def blocks_entries_until(self, strategy, at, portfolio):
        """Until the next window starts, or the end of the window ``at`` is in (the first listed, as
        :meth:`blocks_entries` names it), whichever comes first."""
        at = at if at.tzinfo else at.replace(tzinfo=NY)
        of, starts = self._starts
        if of is not self.windows or len(starts) != len(self.windows):
            self._starts = (self.windows, starts := sorted(start for start, _, _ in self.windows))
        k = bisect.bisect_right(starts, at)
        until = starts[k] if k < len(starts) else self.UNTIL_CHANGED
        for start, end, label in self.windows:
            if start <= at < end:
                return min(until, end)
        return until


class BuyingPowerParams(PluginParams):
    reserve: float = Field(0.0, ge=0, description="dollars of buying power that must remain after the order")


class BuyingPowerReserve(RiskManager):
    """No order that would leave less than `reserve` dollars of buying power."""

    name = "buying_power"
    Params = BuyingPowerParams

    def check(self, request, portfolio):
        left = portfolio.buying_power - request.worst_case_loss
        if left < self.params.reserve - 1e-9:
            return Veto(f"buying power after the order {left:,.2f} < reserve {self.params.reserve:,.2f}")
        return None


@hookimpl
def register_risk_managers(register):
    for cls in (MaxOpenTrades, MaxNewTradesPerDay, NoEntryAfterStop, PerTradeMaxLoss, DailyLossCap,
                PortfolioWorstCase, NoNewRiskWindow, EventBlackout, BuyingPowerReserve):
        register(cls)
    from strikebench.plugins.breakers import BREAKERS  # circuit breakers: risk managers that watch sessions

    for cls in BREAKERS:
        register(cls)
