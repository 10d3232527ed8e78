"""xsp_probe: small XSP credit spreads as a market-mood sensor (seed 004).

A few small XSP credit verticals a week (Monday/Tuesday entries, 7-20 DTE, 3-7 points wide).
Their wins and losses over the last few closed probes aggregate into a sentiment --
``bullish``, ``neutral``, ``bearish`` or ``volatile`` (seed 004's four moods), or ``no_evidence``
while too few probes have closed -- published with
``ctx.publish(signal_name, sentiment)`` for the other strategies of the run
(``bwb_vix_hedge`` can gate its entries on it).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from strikebench.api import Candidate, PluginParams, Strategy
from strikebench.options.chain import ChainSnapshot
from strikebench.strategies.spreads import (PRICE_EPS, credit_exit, decide_and_enter, relevant_slice, skip_if_blocked,
                                             vertical_entry)

RULESET_VERSION = "xsp_probe/1"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
SENTIMENTS = ("bullish", "neutral", "bearish", "volatile", "no_evidence")
NO_EVIDENCE = "no_evidence"
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri"]
Sentiment = Literal["bullish", "neutral", "bearish", "volatile"]


def probe_sentiment(outcomes: Sequence[tuple[str, float]], *, lookback: int = 8, min_outcomes: int = 3,
                    loss_rate: float = 0.5, bullish_win_rate: float = 0.75) -> str:
    """The market mood read from the last ``lookback`` closed probes, oldest first.

    ``outcomes`` are ``(right, pnl)``: ``"P"`` for a put credit spread, ``"C"`` for a call one,
    and its realized P&L (a win is ``pnl > 0``). Rules, first match wins:

    1. fewer than ``min_outcomes`` probes: ``no_evidence`` -- never ``neutral``: a gate that
       allows a neutral market must not read "nothing known yet" as one;
    2. puts *and* calls each lose at least ``loss_rate`` of the time: ``volatile``
       (the market ran through both sides);
    3. puts lose at least ``loss_rate`` of the time: ``bearish`` (the downside is being tested);
    4. calls lose at least ``loss_rate`` of the time: ``bullish`` (a rally runs over the calls);
    5. puts win at least ``bullish_win_rate`` of the time: ``bullish``;
    6. otherwise ``neutral``.

    >>> probe_sentiment([("P", 50), ("P", 40), ("P", -120), ("P", 45)])
    'bullish'
    >>> probe_sentiment([("P", 50), ("P", -140), ("P", -120), ("P", 45)])
    'bearish'
    """
    recent = list(outcomes)[-lookback:]
    if len(recent) < min_outcomes:
        return NO_EVIDENCE

    def rate_of_losses(right: str) -> float | None:
        side = [pnl for r, pnl in recent if r == right]
        return sum(pnl <= 0 for pnl in side) / len(side) if side else None

    puts, calls = rate_of_losses("P"), rate_of_losses("C")
    put_bad = puts is not None and puts >= loss_rate
    call_bad = calls is not None and calls >= loss_rate
    if put_bad and call_bad:
        return "volatile"
    if put_bad:
        return "bearish"
    if call_bad:
        return "bullish"
    if puts is not None and 1.0 - puts >= bullish_win_rate:
        return "bullish"
    return "neutral"


class XspProbeParams(PluginParams):
    root: str = Field("XSP", description="option root of the probes (XSP dailies, PM-settled)")
    dte_min: int = Field(7, ge=1, le=45, description="shortest DTE (calendar days) a probe may have")
    dte_max: int = Field(20, ge=1, le=45, description="longest DTE (calendar days) a probe may have")
    target_dte: int = Field(10, ge=1, le=45, description="preferred DTE: the listed expiry nearest it in [dte_min, dte_max]")
    entry_weekdays: list[Weekday] = Field(default_factory=lambda: ["Mon", "Tue"], min_length=1,
                                          description="days probes are opened (Mon..Fri)")
    entry_times: list[dt.time] = Field(default_factory=lambda: [dt.time(10), dt.time(13)], min_length=1,
                                       description="decision times on entry days, America/New_York")
    side: Literal["put", "call", "both"] = Field(
        "both", description="put or call credit spreads, or both (alternating put, call, put... entry by entry)")
    short_delta: float = Field(0.20, gt=0, lt=0.5, description="|delta| target of the short leg")
    width: float = Field(5.0, ge=3, le=7, description="XSP points between the strikes (3 to 7, whole points)")
    min_credit: float = Field(0.20, ge=0, description="minimum estimated credit per spread, XSP points ($100 each)")
    max_per_week: int = Field(4, ge=1, le=20, description="most probes opened in one week")
    max_open: int = Field(8, ge=1, le=50, description="most probes open at once")
    take_profit_pct: float = Field(0.50, gt=0, lt=1, description="close when the spread costs <= (1 - this) x credit")
    stop_multiple: float = Field(2.0, gt=1, description="close when closing costs >= this x credit")
    contracts: int = Field(1, ge=1, le=100, description="spreads per probe")
    lookback: int = Field(8, ge=1, le=100, description="sentiment reads the last this-many closed probes")
    min_outcomes: int = Field(3, ge=1, le=100,
                              description="fewer closed probes than this: sentiment is no_evidence (never neutral)")
    loss_rate: float = Field(0.5, gt=0, le=1, description="a side losing at least this often is under pressure")
    bullish_win_rate: float = Field(0.75, gt=0, le=1, description="puts winning at least this often: bullish")
    signal_name: str = Field("probe_sentiment", min_length=1, description="name the sentiment is published under")

    @field_validator("width")
    @classmethod
    def _whole_points(cls, v: float) -> float:
        if abs(v - round(v)) > 1e-9:
            raise ValueError(f"width {v:g} is not a whole number of XSP points")
        return v

    @model_validator(mode="after")
    def _dte_window(self):
        if not self.dte_min <= self.target_dte <= self.dte_max:
            raise ValueError(f"need dte_min <= target_dte <= dte_max, got {self.dte_min}, {self.target_dte}, {self.dte_max}")
        if self.min_outcomes > self.lookback:
            raise ValueError(f"min_outcomes {self.min_outcomes} exceeds lookback {self.lookback}")
        return self


class XspProbe(Strategy):
    """XSP probe credit spreads (Mon/Tue, 7-20 DTE, 3-7 wide) whose wins and losses publish a market sentiment."""

    name = "xsp_probe"
    Params = XspProbeParams
    underlying = "XSP"
    ruleset_version = RULESET_VERSION

    def __init__(self, params=None):
        super().__init__(params)
        self.outcomes: list[tuple[str, float]] = []  # (right, realized pnl) of closed probes, in closing order
        self.sentiment = NO_EVIDENCE
        self._tracked: dict = {}  # trade_id -> TradeRecord of probes not yet counted
        self._week_entries: dict[tuple[int, int], int] = {}
        self._entries = 0

    # ---------------------------------------------------------- decisions
    def evaluate(self, snapshot: ChainSnapshot, context: dict) -> tuple[str, str, list[Candidate], int | None]:
        """Pure selection on one XSP snapshot: (action, reason, candidates, chosen index).

        ``context``: ``k`` (the fill model's slippage fraction), ``open_probes``, ``week_entries``
        (probes opened this week) and ``side`` (``"P"`` or ``"C"``: the side this entry sells).
        """
        p = self.params
        k = float(context.get("k", 0.30))
        day = snapshot.timestamp.date()
        if day.weekday() >= 5 or WEEKDAYS[day.weekday()] not in p.entry_weekdays:
            return "SKIP", f"not an entry day ({day:%a})", [], None
        if int(context.get("open_probes", 0)) >= p.max_open:
            return "SKIP", f"{context['open_probes']} probes open (max {p.max_open})", [], None
        if int(context.get("week_entries", 0)) >= p.max_per_week:
            return "SKIP", f"{context['week_entries']} probes this week (max {p.max_per_week})", [], None
        expiry = snapshot.nearest_expiry(p.target_dte, max(p.target_dte - p.dte_min, p.dte_max - p.target_dte),
                                         root=p.root)
        if expiry is None or not p.dte_min <= (expiry - day).days <= p.dte_max:
            return "SKIP", f"no {p.root} expiry {p.dte_min}-{p.dte_max} DTE", [], None
        dte = (expiry - day).days
        rights = {"put": ["P"], "call": ["C"], "both": ["P", "C"]}[p.side]
        want = context.get("side", rights[0])
        candidates: list[Candidate] = []
        chosen = None
        notes = []
        for right in rights:
            short, long = self._spread_rows(snapshot, expiry, right)
            if short is None or long is None:
                notes.append(f"{right}: no {p.width:g}-wide spread within 0.05 of {p.short_delta:.2f} delta")
                continue
            sb, sa, lb, la = (float(x) for x in (snapshot.bid[short], snapshot.ask[short],
                                                 snapshot.bid[long], snapshot.ask[long]))
            mid_credit = (sb + sa) / 2 - (lb + la) / 2
            ba_width = (sa - sb) + (la - lb)
            est_credit = mid_credit - k * ba_width
            details = {"right": right, "expiry": str(expiry), "dte": dte,
                       "short_strike": float(snapshot.strike[short]), "long_strike": float(snapshot.strike[long]),
                       "short_delta": round(float(snapshot.delta[short]), 4), "mid_credit": round(mid_credit, 4),
                       "est_credit": round(est_credit, 4), "width": p.width,
                       "short_row": int(short), "long_row": int(long)}
            if est_credit < p.min_credit - PRICE_EPS:  # equal to the cent passes, whatever the float noise
                details["rejected"] = f"credit {est_credit:.4f} < min {p.min_credit:.2f}"
            candidates.append(Candidate(
                description=f"{dte}DTE {right} {details['short_strike']:g}/{details['long_strike']:g}",
                legs=(snapshot.occ_symbol(short), snapshot.occ_symbol(long)),
                score=None if "rejected" in details else round(est_credit / p.width, 6),
                credit=round(est_credit, 4), details=details))
            if right == want and "rejected" not in details:
                chosen = len(candidates) - 1
        if chosen is None:
            why = [c.details["rejected"] for c in candidates if c.details["right"] == want and "rejected" in c.details]
            return "SKIP", "; ".join(why + notes) or f"no {want} probe", candidates, None
        return "TRADE", f"probe {candidates[chosen].description}", candidates, chosen

    def _spread_rows(self, snapshot: ChainSnapshot, expiry, right: str) -> tuple[int | None, int | None]:
        """The short row nearest ``short_delta`` (within 0.05) whose long leg ``width`` farther OTM is listed."""
        p = self.params
        rows = snapshot.rows(expiry, right, root=p.root)
        rows = rows[np.isfinite(snapshot.delta[rows])]
        miss = np.abs(np.abs(snapshot.delta[rows]) - p.short_delta)
        for j in np.lexsort((np.abs(snapshot.delta[rows]), miss)):
            if miss[j] > 0.05:
                break
            long = snapshot.offset_row(int(rows[j]), p.width)
            if long is not None:
                return int(rows[j]), long
        return None, None

    def on_decision_time(self, ctx) -> None:
        p = self.params
        if WEEKDAYS[ctx.today.weekday()] not in p.entry_weekdays:
            return
        if skip_if_blocked(ctx, lambda: {"k": ctx.slippage, "underlying_price": ctx.underlying_price()},
                           ruleset_version=self.ruleset_version):
            return  # a risk rule blocks every entry now: no chain built
        full = ctx.chain(dte=(p.dte_min, p.dte_max), roots=[p.root])
        week = ctx.today.isocalendar()[:2]
        rights = {"put": ["P"], "call": ["C"], "both": ["P", "C"]}[p.side]
        context = {"k": ctx.slippage,
                   "open_probes": len(ctx.open_trades()), "week_entries": self._week_entries.get(week, 0),
                   "side": rights[self._entries % len(rights)], "sentiment": self.sentiment}
        # what a decision stores: the root's expiries inside the DTE window (evaluates like the whole chain)
        snapshot = relevant_slice(
            full, lambda s: np.flatnonzero((s.root == p.root) & (s.dte >= p.dte_min) & (s.dte <= p.dte_max)),
            ("xsp_probe", p.root, p.dte_min, p.dte_max))
        decision, order = decide_and_enter(ctx, snapshot, context, self.evaluate(snapshot, context),
                                           entry=vertical_entry(snapshot, p.root, p.contracts),
                                           ruleset_version=self.ruleset_version, reason="probe")
        if decision.action == "TRADE":
            if order is not None:
                self._entries += 1
                self._week_entries[week] = self._week_entries.get(week, 0) + 1
            self._track(ctx)

    # -------------------------------------------------------------- exits
    def manage(self, ctx, trade) -> None:
        self._tracked.setdefault(trade.trade_id, trade)
        credit_exit(ctx, trade, take_profit_pct=self.params.take_profit_pct, stop_multiple=self.params.stop_multiple,
                    idle=True)  # the only exit rule (tracking above is done once a trade)

    # ---------------------------------------------------------- sentiment
    def _track(self, ctx) -> None:
        """Remember open probes; count the ones that closed (exit or settlement) since last time."""
        for trade in ctx.open_trades():
            self._tracked.setdefault(trade.trade_id, trade)
        done = sorted((t for t in self._tracked.values() if not t.is_open), key=lambda t: (t.closed_at, t.trade_id))
        for trade in done:
            del self._tracked[trade.trade_id]
            right = "C" if trade.legs[0].contract.is_call else "P"
            self.outcomes.append((right, float(trade.realized_pnl)))

    def _publish(self, ctx) -> None:
        p = self.params
        self.sentiment = probe_sentiment(self.outcomes, lookback=p.lookback, min_outcomes=p.min_outcomes,
                                         loss_rate=p.loss_rate, bullish_win_rate=p.bullish_win_rate)
        ctx.publish(p.signal_name, self.sentiment)

    def on_session_start(self, ctx) -> None:
        self._track(ctx)
        self._publish(ctx)

    def on_session_end(self, ctx) -> None:
        self._track(ctx)
        self._publish(ctx)
