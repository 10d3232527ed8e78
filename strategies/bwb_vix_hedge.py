"""bwb_vix_hedge: SPX 30 DTE put broken-wing butterflies with a VIX call-spread hedge (seed 004).

Two kinds of trades, each with one expiry:

* **the core** -- a 1/-2/1 SPXW put broken-wing butterfly about 30 DTE: two puts sold at the
  listed strike nearest ``short_offset`` (350) points below spot among those whose |delta| is in
  ``[short_delta_min, short_delta_max]`` (0.10-0.25), one bought ``upper_wing`` (50) points above
  and one ``lower_wing`` (100) points below (the "broken" wing). Nothing is lost if SPX stays above
  the upper strike, the most is won at the short strike, and the worst case below the lower
  strike is ``lower_wing - upper_wing - credit``. A candidate is refused when its maximum risk
  exceeds ``max_risk`` ($4,200) or its expiry P&L at a ``-drawdown_move`` (-5 %) or
  ``-crash_move`` (-7 %) SPX move is worse than the seed allows; the next-nearest passing strike
  is taken instead.
* **the hedge** -- VIX call spreads (VIX options price off the VIX future of their expiry, read
  from the chain by put-call parity), strikes ``hedge_strike_offset`` above the future and
  ``hedge_width`` apart. *Coverage* is the hedges' combined maximum payoff over the open BWBs'
  combined worst-case loss; whenever BWBs are open and coverage is below ``hedge_ratio`` (0.25),
  the shortfall is bought at the daily hedge time (``hedge_coverage: always``, seed 004's "always
  maintain hedge coverage"); ``hedge_coverage: budget`` buys only while VIX is at most
  ``vix_entry_max`` and within ``hedge_budget_pct`` of the exposure.

Risk limits scale on a reverse-Fibonacci ladder (:class:`RiskLadder`): its current limit L is the
loss a period (by default a day) may take before new BWBs stop for the rest of it, and (with
``ladder_sizing``) scales the contracts per entry: ``max(1, round(contracts x L / L_start))``.
It steps up after ``ladder_up_after`` (10) profitable days in a row and down after a day's loss
over ``ladder_down_loss_pct`` (15 %) of L (seed 004's SPX30DTERevFibNotch).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from strikebench.api import Candidate, PluginParams, Strategy
from strikebench.options.chain import ChainSnapshot
from strikebench.options.orders import Leg, expiry_payoff
from strikebench.options.ticks import round_to_tick
from strikebench.strategies.spreads import PRICE_EPS, credit_limit, decide_and_enter, skip_if_blocked

RULESET_VERSION = "bwb_vix_hedge/1"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri"]
Sentiment = Literal["bullish", "neutral", "bearish", "volatile"]
DEFAULT_LADDER = (5000.0, 3200.0, 2000.0, 1200.0, 800.0, 400.0)


# ------------------------------------------------------------------ risk ladder
class RiskLadder:
    """A reverse-Fibonacci ladder of dollar risk limits, stepped once per period.

    ``limits`` run from the largest (index 0) down; the ladder starts at ``start``. After
    ``up_after`` profitable periods (P&L > 0) in a row it steps up one notch (stopping at the
    first) and the count restarts. A losing period (P&L < 0) ends the run of profitable ones and
    steps down one notch (stopping at the last) when its loss is over ``down_loss_pct`` of the
    current limit -- or, with ``down_loss_pct`` None, on any loss. A flat period (P&L == 0,
    e.g. nothing held) changes nothing.

    Seed 004 (the default of ``bwb_vix_hedge``): days, up after 10 profitable days, down after a
    day's loss over 15 %:

    >>> ladder = RiskLadder(up_after=10, down_loss_pct=0.15)   # 5000 ... 400; starts at 2000
    >>> ladder.record(-300.0), ladder.record(-180.01)          # 15 % of 2000 is not over; 180.01 > 15 % of 1200
    (2000.0, 800.0)

    The weekly variant: any losing week steps down, two profitable weeks step up:

    >>> ladder = RiskLadder()
    >>> ladder.record(-150.0)
    1200.0
    >>> ladder.record(80.0), ladder.record(95.0)
    (1200.0, 2000.0)
    """

    def __init__(self, limits: Sequence[float] = DEFAULT_LADDER, start: int = 2, up_after: int = 2,
                 down_loss_pct: float | None = None):
        limits = tuple(float(x) for x in limits)
        if not limits or any(b >= a for a, b in zip(limits, limits[1:])) or limits[-1] <= 0:
            raise ValueError(f"ladder limits must be positive and strictly decreasing, got {list(limits)}")
        if not 0 <= start < len(limits):
            raise ValueError(f"start notch {start} is outside the ladder (0..{len(limits) - 1})")
        if up_after < 1:
            raise ValueError(f"up_after must be at least 1, got {up_after}")
        if down_loss_pct is not None and not 0 <= down_loss_pct < 1:
            raise ValueError(f"down_loss_pct must be in [0, 1), got {down_loss_pct}")
        self.limits, self.notch, self.up_after, self.down_loss_pct = limits, start, up_after, down_loss_pct
        self.profitable_run = 0

    @property
    def limit(self) -> float:
        """The current limit, dollars."""
        return self.limits[self.notch]

    def record(self, period_pnl: float) -> float:
        """Step on one closed period's P&L (dollars); returns the new limit."""
        if period_pnl < 0:
            self.profitable_run = 0
            if self.down_loss_pct is None or -period_pnl > self.down_loss_pct * self.limit:
                self.notch = min(self.notch + 1, len(self.limits) - 1)
        elif period_pnl > 0:
            self.profitable_run += 1
            if self.profitable_run >= self.up_after:
                self.notch = max(self.notch - 1, 0)
                self.profitable_run = 0
        return self.limit


def ladder_contracts(base: int, limit: float, start_limit: float) -> int:
    """Contracts per entry on the ladder: ``max(1, round(base x limit / start_limit))`` (halves round up).

    With base 1 and the default ladder starting at 2000: 5000 -> 3, 3200 -> 2, 2000 ... 400 -> 1.
    """
    return max(1, math.floor(base * limit / start_limit + 0.5))


# ------------------------------------------------------------------ hedge sizing
def hedge_size(exposure: float, *, hedge_ratio: float, width: float, cost_per_spread: float,
               budget_pct: float, held_spreads: int = 0, held_cost: float = 0.0,
               multiplier: int = 100, max_spreads: int = 1000, binding_budget: bool = True) -> dict:
    """How many VIX call spreads to buy now (dollars in, counts out).

    * coverage = held_spreads x width x multiplier / exposure: the held hedges' combined maximum
      payoff as a share of the BWBs' worst-case loss; the target coverage is ``hedge_ratio``;
    * target = ceil(hedge_ratio x exposure / (width x multiplier)): the spreads that reach it;
    * budget = budget_pct x exposure - held_cost: what may still be spent;
    * buy = min(target - held_spreads, max_spreads), and with ``binding_budget`` also at most
      floor(budget / cost_per_spread); never below 0.

    Four BWBs risking 4,800 each (exposure 19,200), ratio 0.25, 10-point spreads costing 0.70:
    target = ceil(4,800 / 1,000) = 5, budget = 384, affordable = floor(384 / 70) = 5, buy 5.
    """
    target = math.ceil(hedge_ratio * exposure / (width * multiplier) - 1e-9) if exposure > 0 else 0
    budget = budget_pct * exposure - held_cost
    affordable = math.floor(budget / cost_per_spread + 1e-9) if cost_per_spread > 0 and budget > 0 else 0
    want = min(target - held_spreads, max_spreads)
    buy = max(0, min(want, affordable) if binding_budget else want)
    coverage = held_spreads * width * multiplier / exposure if exposure > 0 else None
    after = (held_spreads + buy) * width * multiplier / exposure if exposure > 0 else None
    return {"target": target, "budget": round(budget, 2), "affordable": affordable, "buy": buy,
            "coverage": None if coverage is None else round(coverage, 4),
            "coverage_after": None if after is None else round(after, 4),
            "over_budget": bool(buy * cost_per_spread > budget + 1e-9)}


def implied_forward(snapshot: ChainSnapshot, expiry, *, root: str | None = None) -> float | None:
    """The forward of ``expiry`` by put-call parity at the strike where call and put mids are
    closest (F = K + C - P, the discounting of a few weeks ignored): for VIX options, the VIX
    future of that expiry."""
    calls = snapshot.rows(expiry, "C", root=root)
    best = None
    for c in calls:
        p = snapshot.find(str(snapshot.root[c]), snapshot.expiry[c], False, float(snapshot.strike[c]))
        if p is None:
            continue
        diff = float(snapshot.mid[c]) - float(snapshot.mid[p])
        if np.isfinite(diff) and (best is None or abs(diff) < abs(best[1])):
            best = (float(snapshot.strike[c]), diff)
    return None if best is None else round(best[0] + best[1], 4)


def _floor(max_loss: float) -> str:
    return "breakeven" if max_loss == 0 else f"{-max_loss:,.2f}"


# ------------------------------------------------------------------ params
class BwbVixHedgeParams(PluginParams):
    # the BWB core (defaults: seed 004, see docs/strategies.md)
    root: str = Field("SPXW", description="option root of the BWB (SPXW, PM-settled)")
    target_dte: int = Field(30, ge=7, le=60, description="calendar-day DTE of the BWB's expiry (seed 004: 30)")
    dte_tolerance: int = Field(4, ge=0, le=14, description="an expiry qualifies within this many days of target_dte")
    entry_weekdays: list[Weekday] = Field(default_factory=lambda: ["Wed"], min_length=1,
                                          description="days a new BWB may be opened (seed 004: Wednesday)")
    entry_time: dt.time = Field(dt.time(10), description="BWB decision time, America/New_York")
    short_strike_rule: Literal["offset", "delta", "credit"] = Field(
        "offset", description="how the short strike is ranked: offset = nearest short_offset points below spot "
                              "(seed 004), credit = credit nearest target_credit, both within the delta band; "
                              "delta = nearest short_delta (the earlier variant)")
    short_offset: float = Field(350.0, gt=0, le=2000,
                                description="offset rule: the short strike this many points below spot (seed 004: 350)")
    short_delta_min: float = Field(0.10, gt=0, lt=0.5, description="offset/credit rules: smallest |delta| of the short put "
                                                                  "(seed 004: 0.10)")
    short_delta_max: float = Field(0.25, gt=0, lt=0.5, description="offset/credit rules: largest |delta| of the short put "
                                                                  "(seed 004: 0.25)")
    short_delta: float = Field(0.30, gt=0, lt=0.5, description="delta rule: |delta| target of the two short puts")
    delta_tolerance: float = Field(0.05, gt=0, lt=0.5,
                                   description="delta rule: the short strike's |delta| may miss the target by this much")
    upper_wing: float = Field(50.0, gt=0, description="points from the short strike up to the long put nearer the money "
                                                      "(seed 004: 50)")
    lower_wing: float = Field(100.0, gt=0, description="points from the short strike down to the far long put, the "
                                                       "broken wing (seed 004: 100)")
    target_credit: float = Field(800.0, ge=0, description="dollars per BWB the entry aims at (seed 004: 800); ranks "
                                                          "candidates under short_strike_rule: credit, reported always")
    max_risk: float | None = Field(4200.0, gt=0, description="refuse a candidate whose maximum loss per BWB exceeds "
                                                             "this, dollars (seed 004: 4,200); null: no cap")
    drawdown_move: float = Field(0.05, gt=0, lt=1, description="the SPX drop the drawdown check prices (seed 004: 5 %)")
    drawdown_max_loss: float | None = Field(
        5000.0, ge=0, description="refuse a candidate losing more than this at expiry after a drawdown_move drop, "
                                  "dollars per BWB (seed 004: never exceed -5k at -5 %); null: no check")
    crash_move: float = Field(0.07, gt=0, lt=1, description="the SPX drop the crash check prices (seed 004: 7 %)")
    crash_max_loss: float | None = Field(
        0.0, ge=0, description="refuse a candidate losing more than this at expiry after a crash_move drop, dollars "
                               "per BWB (seed 004: breakeven or profit at -7 %); null: no check")
    min_credit: float = Field(0.50, ge=0, description="minimum estimated credit per BWB, index points (0 = any credit)")
    max_positions: int = Field(4, ge=1, le=20, description="most BWBs open at once (seed 004: 4)")
    contracts: int = Field(1, ge=1, le=100, description="BWBs per entry at the ladder's starting notch")
    profit_target_pct: float = Field(0.65, gt=0, le=1, description="take profit at this share of the basis (seed 004: 65 %)")
    profit_target_basis: Literal["credit", "max_profit"] = Field(
        "credit", description="the profit target's basis: the credit taken in, or the BWB's maximum profit "
                              "(upper_wing + credit)")
    stop_loss_pct: float | None = Field(
        0.5, gt=0, le=1, description="close a BWB whose loss reaches this share of its max loss (null: no stop)")
    exit_dte: int | None = Field(7, ge=0, le=30, description="close a BWB at this many DTE or fewer (null: to expiry)")
    require_probe_sentiment: list[Sentiment] | None = Field(
        default_factory=lambda: ["bullish"],
        description="enter only while the probe signal is one of these (seed 004: bullish only; [bullish, neutral] "
                    "is the looser variant; no_evidence is never allowed); null: no gate")
    probe_signal: str = Field("probe_sentiment", min_length=1, description="the signal name the probe publishes")
    # the risk ladder
    risk_ladder: list[float] = Field(default_factory=lambda: list(DEFAULT_LADDER), min_length=1,
                                     description="reverse-Fibonacci dollar limits, largest first (seed 004)")
    ladder_start: int = Field(2, ge=0, description="notch the ladder starts at (0 = largest; default 2000, seed 004)")
    ladder_period: Literal["day", "week", "month"] = Field(
        "day", description="the period the ladder steps on (seed 004: days; week is the earlier variant)")
    ladder_up_after: int = Field(10, ge=1, le=260, description="profitable periods in a row that step the ladder up "
                                                               "(seed 004: 10 days)")
    ladder_down_loss_pct: float | None = Field(
        0.15, ge=0, lt=1, description="a period's loss over this share of the current limit steps the ladder down "
                                      "(seed 004: 15 % day loss); null: any loss")
    ladder_pnl: Literal["mark", "realized"] = Field(
        "mark", description="a period's P&L: mark = change of the strategy's marked value (realized + open trades "
                            "at mid, after fees); realized = P&L of the trades closed in it")
    ladder_sizing: bool = Field(True, description="scale contracts by limit / starting limit (rounded, at least 1)")
    # the VIX hedge
    hedge: bool = Field(True, description="buy VIX call spreads against the BWBs' exposure")
    hedge_time: dt.time = Field(dt.time(10, 30), description="daily hedge decision time, America/New_York")
    hedge_coverage: Literal["always", "budget"] = Field(
        "always", description="always = buy any shortfall below hedge_ratio coverage while BWBs are open (seed 004: "
                              "always maintain hedge coverage); budget = only while VIX <= vix_entry_max and "
                              "within hedge_budget_pct")
    hedge_ratio: float = Field(0.25, gt=0, le=2,
                               description="target coverage: hedges' combined max payoff as a share of the BWBs' "
                                           "worst-case loss (seed 004: 0.15-0.35)")
    vix_entry_max: float = Field(22.0, gt=0, description="budget coverage: buy hedges only while spot VIX is at most this "
                                                         "(seed 004: 18-25)")
    hedge_strike_offset: float = Field(5.0, ge=0, le=30, description="long call this many VIX points above the future "
                                                                     "(seed 004: 5-15)")
    hedge_width: float = Field(10.0, gt=0, le=50, description="VIX points between the long and the short call")
    hedge_target_dte: int = Field(50, ge=7, le=180, description="preferred DTE of the hedge's VIX expiry")
    hedge_dte_tolerance: int = Field(20, ge=0, le=90, description="a VIX expiry qualifies within this many days")
    hedge_budget_pct: float = Field(0.02, gt=0, le=0.5,
                                    description="hedge cost budget as a share of the exposure (seed 004: 2 %); binding "
                                                "under hedge_coverage: budget, reported under always")
    hedge_take_profit_multiple: float | None = Field(
        3.0, gt=1, description="sell a hedge worth this x its cost (null: hold to settlement)")

    @field_validator("entry_weekdays")
    @classmethod
    def _distinct_days(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("entry_weekdays lists a day twice")
        return v

    @model_validator(mode="after")
    def _shape(self):
        if self.lower_wing <= self.upper_wing:
            raise ValueError(f"lower_wing {self.lower_wing:g} must be wider than upper_wing {self.upper_wing:g} "
                             "(a broken-wing butterfly; equal wings cannot be entered for a credit)")
        if self.short_delta_min >= self.short_delta_max:
            raise ValueError(f"short_delta_min {self.short_delta_min:g} must be below short_delta_max "
                             f"{self.short_delta_max:g}")
        RiskLadder(self.risk_ladder, self.ladder_start, self.ladder_up_after, self.ladder_down_loss_pct)
        if self.entry_time == self.hedge_time:
            raise ValueError("entry_time and hedge_time must differ")
        return self


# ------------------------------------------------------------------ strategy
class BwbVixHedge(Strategy):
    """SPX 30 DTE 1/-2/1 put broken-wing butterflies for a credit, with a VIX call-spread hedge and a risk ladder."""

    name = "bwb_vix_hedge"
    Params = BwbVixHedgeParams
    underlying = "SPX"
    ruleset_version = RULESET_VERSION

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.ladder = RiskLadder(p.risk_ladder, p.ladder_start, p.ladder_up_after, p.ladder_down_loss_pct)
        self.ladder_history: list[tuple[str, float, float]] = []  # (period, pnl, limit after)
        self.period: tuple | None = None
        self.period_pnl = 0.0  # realized P&L of the trades closed in the period
        self.realized_total = 0.0  # realized P&L of every trade closed so far
        self.value_at_close = 0.0  # marked value (realized + open at mid, after fees) at the last session end
        self.period_start_value = 0.0
        self._tracked: dict = {}

    def decision_times(self) -> list[dt.time]:
        return [self.params.entry_time] + ([self.params.hedge_time] if self.params.hedge else [])

    # ---------------------------------------------------------- pure decisions
    def evaluate(self, snapshot: ChainSnapshot, context: dict) -> tuple[str, str, list[Candidate], int | None]:
        """Pure selection on one snapshot: (action, reason, candidates, chosen index).

        An SPX snapshot decides a BWB entry, a VIX snapshot the hedge. ``context`` carries what
        the chain cannot: ``k`` (the fill model's slippage fraction); for the BWB
        ``open_positions``, ``sentiment`` (the probe signal or None), ``ladder_limit`` and
        ``period_pnl``; for the hedge ``exposure`` (dollars), ``held_spreads`` and ``held_cost``.
        """
        if snapshot.underlying == "VIX":
            return self.evaluate_hedge(snapshot, context)
        return self.evaluate_bwb(snapshot, context)

    def evaluate_bwb(self, snapshot: ChainSnapshot, context: dict):
        p = self.params
        k = float(context.get("k", 0.30))
        if p.require_probe_sentiment is not None:
            mood = context.get("sentiment")
            if mood not in p.require_probe_sentiment:
                hint = "" if mood else " (is an xsp_probe in this run? require_probe_sentiment: null trades ungated)"
                return "SKIP", (f"probe sentiment {mood or 'not published'} not in "
                                f"[{', '.join(p.require_probe_sentiment)}]{hint}"), [], None
        open_positions = int(context.get("open_positions", 0))
        if open_positions >= p.max_positions:
            return "SKIP", f"{open_positions} BWBs open (max {p.max_positions})", [], None
        limit, period_pnl = float(context.get("ladder_limit", self.ladder.limit)), float(context.get("period_pnl", 0.0))
        if period_pnl <= -limit:
            return "SKIP", f"{p.ladder_period} P&L {period_pnl:.2f} used up the ladder limit {limit:.0f}", [], None
        expiry = snapshot.nearest_expiry(p.target_dte, p.dte_tolerance, root=p.root)
        if expiry is None:
            return "SKIP", f"no {p.root} expiry within {p.dte_tolerance}d of {p.target_dte} DTE", [], None
        rows = snapshot.rows(expiry, "P", root=p.root)
        rows = rows[np.isfinite(snapshot.delta[rows])]
        absd = np.abs(snapshot.delta[rows])
        spot = float(snapshot.underlying_price)
        if p.short_strike_rule == "delta":
            keep = np.abs(absd - p.short_delta) <= p.delta_tolerance + 1e-12
            band = f"within {p.delta_tolerance:.2f} of {p.short_delta:.2f} delta"
        else:
            keep = (absd >= p.short_delta_min - 1e-12) & (absd <= p.short_delta_max + 1e-12)
            band = f"|delta| {p.short_delta_min:.2f}-{p.short_delta_max:.2f}"
        built = []
        for r in rows[keep]:
            up = snapshot.offset_row(int(r), -p.upper_wing)
            lo = snapshot.offset_row(int(r), p.lower_wing)
            if up is not None and lo is not None:
                built.append(self._bwb_candidate(snapshot, expiry, (up, int(r), lo), k, spot))
        if not built:
            return "SKIP", (f"no short put with {band} and both wings (+{p.upper_wing:g}/-{p.lower_wing:g}) "
                            f"listed"), [], None
        if p.short_strike_rule == "offset":
            key = lambda c: (abs(c.details["offset_miss"]), c.details["short_strike"])  # ties: farther OTM
        elif p.short_strike_rule == "credit":
            key = lambda c: (abs(c.details["credit_vs_target"]), c.details["short_strike"])
        else:
            key = lambda c: (abs(abs(c.details["short_delta"]) - p.short_delta), abs(c.details["short_delta"]))
        candidates = sorted(built, key=key)
        for rank, c in enumerate(candidates):
            c.details["rank"] = rank
        chosen = next((i for i, c in enumerate(candidates) if "rejected" not in c.details), None)
        if chosen is None:
            first = candidates[0]
            return "SKIP", (f"all {len(candidates)} candidates refused; nearest {first.description}: "
                            f"{first.details['rejected']}"), candidates, None
        c = candidates[chosen]
        d = c.details
        d["contracts"] = ladder_contracts(p.contracts, limit, p.risk_ladder[p.ladder_start]) \
            if p.ladder_sizing else p.contracts
        passed = f" ({chosen} nearer refused: {candidates[0].details['rejected']})" if chosen else ""
        return "TRADE", (f"{d['contracts']} x {c.description} for {d['limit_credit']:.2f} credit, max risk "
                         f"{d['max_loss']:,.2f}{passed}"), candidates, chosen

    def _bwb_candidate(self, snapshot: ChainSnapshot, expiry, legs_rows: tuple[int, int, int], k: float,
                       spot: float) -> Candidate:
        """One 1/-2/1 candidate with its estimated credit, risk, stress P&L and (if any) why it is refused."""
        p = self.params
        upper, short, lower = legs_rows
        ratios = np.array([1.0, -2.0, 1.0])
        bid = np.array([float(snapshot.bid[r]) for r in legs_rows])
        ask = np.array([float(snapshot.ask[r]) for r in legs_rows])
        mid_net = float(ratios @ ((bid + ask) / 2))
        ba_width = float(np.abs(ratios) @ (ask - bid))
        credit = -(mid_net + k * ba_width)
        ks = float(snapshot.strike[short])
        dte = (expiry - snapshot.timestamp.date()).days
        greeks = {g: round(float(ratios @ np.array([float(getattr(snapshot, g)[r]) for r in legs_rows])) * 100, 2)
                  for g in ("delta", "theta", "vega")}
        legs = tuple(Leg(snapshot.contract(r), int(q)) for r, q in zip(legs_rows, ratios))

        # risk is priced at the order's limit (the estimate rounded to less credit on the complex tick): a
        # fill is at the limit or better, so a BWB that passes the checks passes them as filled
        limit_credit = -credit_limit(credit, "SPX") if credit > 0 else credit

        def pnl_at(level: float) -> float:
            return round((limit_credit + float(expiry_payoff(legs, level))) * 100, 2)

        max_loss = round((p.lower_wing - p.upper_wing - limit_credit) * 100, 2)
        down, crash = pnl_at(spot * (1 - p.drawdown_move)), pnl_at(spot * (1 - p.crash_move))
        details = {
            "expiry": str(expiry), "dte": dte, "upper_strike": float(snapshot.strike[upper]), "short_strike": ks,
            "lower_strike": float(snapshot.strike[lower]), "short_delta": round(float(snapshot.delta[short]), 4),
            "spot": spot, "offset_miss": round(ks - (spot - p.short_offset), 4),
            "mid_net": round(mid_net, 4), "bid_ask_width": round(ba_width, 4), "est_credit": round(credit, 4),
            "limit_credit": round(limit_credit, 2), "credit_dollars": round(limit_credit * 100, 2),
            "credit_vs_target": round(limit_credit * 100 - p.target_credit, 2),
            "max_profit": round((p.upper_wing + limit_credit) * 100, 2), "max_loss": max_loss,
            f"pnl_at_expiry_minus{p.drawdown_move * 100:g}pct": down, f"pnl_at_expiry_minus{p.crash_move * 100:g}pct": crash,
            **{f"net_{g}": v for g, v in greeks.items()},
            "rows": [int(r) for r in legs_rows],
        }
        if credit <= 0:
            reject = f"not a credit (debit {-credit:.2f})"
        elif credit < p.min_credit:
            reject = f"credit {credit:.2f} < min {p.min_credit:.2f}"
        elif p.max_risk is not None and max_loss > p.max_risk + 1e-9:
            reject = f"max risk {max_loss:,.2f} > cap {p.max_risk:,.2f}"
        elif p.drawdown_max_loss is not None and down < -p.drawdown_max_loss - 1e-9:
            reject = f"P&L {down:,.2f} at -{p.drawdown_move:.0%} worse than {_floor(p.drawdown_max_loss)}"
        elif p.crash_max_loss is not None and crash < -p.crash_max_loss - 1e-9:
            reject = f"P&L {crash:,.2f} at -{p.crash_move:.0%} worse than {_floor(p.crash_max_loss)}"
        else:
            reject = None
        if reject:
            details["rejected"] = reject
        description = f"{dte}DTE put BWB {details['upper_strike']:g}/{ks:g}x2/{details['lower_strike']:g}"
        return Candidate(description=description, legs=tuple(leg.contract.occ_symbol for leg in legs),
                         score=None if reject else round(credit, 4), credit=round(credit, 4), details=details)

    def evaluate_hedge(self, snapshot: ChainSnapshot, context: dict):
        p = self.params
        k = float(context.get("k", 0.30))
        exposure = float(context.get("exposure", 0.0))
        if exposure <= 0:
            return "SKIP", "no BWB exposure to hedge", [], None
        vix = float(snapshot.underlying_price)
        budget_mode = p.hedge_coverage == "budget"
        if budget_mode and vix > p.vix_entry_max:
            return "SKIP", f"VIX {vix:.2f} above the entry maximum {p.vix_entry_max:g}", [], None
        expiry = snapshot.nearest_expiry(p.hedge_target_dte, p.hedge_dte_tolerance, root="VIX")
        if expiry is None:
            return "SKIP", f"no VIX expiry within {p.hedge_dte_tolerance}d of {p.hedge_target_dte} DTE", [], None
        future = implied_forward(snapshot, expiry, root="VIX")
        if future is None:
            return "SKIP", f"no call/put pair to read the {expiry} VIX future from", [], None
        calls = snapshot.rows(expiry, "C", root="VIX")
        strikes = snapshot.strike[calls]
        above = np.flatnonzero(strikes >= future + p.hedge_strike_offset - 1e-9)
        if above.size == 0:
            return "SKIP", f"no VIX call at or above {future + p.hedge_strike_offset:.2f}", [], None
        long = int(calls[above[0]])
        short = snapshot.find("VIX", expiry, True, float(snapshot.strike[long]) + p.hedge_width)
        if short is None:
            return "SKIP", f"no VIX {float(snapshot.strike[long]) + p.hedge_width:g} call to sell", [], None
        mid_debit = float(snapshot.mid[long] - snapshot.mid[short])
        ba_width = float((snapshot.ask[long] - snapshot.bid[long]) + (snapshot.ask[short] - snapshot.bid[short]))
        est_debit = mid_debit + k * ba_width
        dte = (expiry - snapshot.timestamp.date()).days
        size = hedge_size(exposure, hedge_ratio=p.hedge_ratio, width=p.hedge_width, cost_per_spread=est_debit * 100,
                          budget_pct=p.hedge_budget_pct, held_spreads=int(context.get("held_spreads", 0)),
                          held_cost=float(context.get("held_cost", 0.0)), binding_budget=budget_mode)
        details = {"expiry": str(expiry), "dte": dte, "vix": vix, "vix_future": future,
                   "long_strike": float(snapshot.strike[long]), "short_strike": float(snapshot.strike[short]),
                   "mid_debit": round(mid_debit, 4), "est_debit": round(est_debit, 4), "exposure": round(exposure, 2),
                   **size, "long_row": long, "short_row": int(short)}
        description = f"{dte}DTE VIX call spread {details['long_strike']:g}/{details['short_strike']:g}"
        candidate = Candidate(description=description, legs=(snapshot.occ_symbol(long),
                                                              snapshot.occ_symbol(short)),
                              score=None, credit=round(-est_debit, 4), details=details)
        if est_debit <= 0:
            return "SKIP", f"{description}: no usable debit ({est_debit:.2f})", [candidate], None
        cover = (f"coverage {size['coverage']:.0%} of {p.hedge_ratio:.0%} target"
                 if size["coverage"] is not None else "")
        if size["buy"] <= 0:
            why = ("hedged" if size["target"] <= int(context.get("held_spreads", 0))
                   else f"budget {size['budget']:.2f} buys no {est_debit * 100:.0f}-dollar spread")
            return "SKIP", f"{description}: {why} (target {size['target']}; {cover})", [candidate], None
        over = f"; over the {p.hedge_budget_pct:.0%} budget {size['budget']:.2f}" if size["over_budget"] else ""
        return "TRADE", (f"{size['buy']} x {description} for {est_debit:.2f}: {cover} -> "
                         f"{size['coverage_after']:.0%}{over}"), [candidate], 0

    # -------------------------------------------------------------- the run
    @staticmethod
    def _is_hedge(trade) -> bool:
        return trade.legs[0].contract.underlying == "VIX"

    def on_decision_time(self, ctx) -> None:
        if ctx.now.time() == self.params.entry_time:
            if WEEKDAYS[ctx.today.weekday()] in self.params.entry_weekdays:
                self._decide_bwb(ctx)
        elif self.params.hedge:
            self._decide_hedge(ctx)

    def _decide_bwb(self, ctx) -> None:
        p = self.params
        if skip_if_blocked(ctx, lambda: {"k": ctx.slippage, "underlying_price": ctx.underlying_price()},
                           ruleset_version=self.ruleset_version):
            return  # a risk rule blocks every entry now: no chain built
        full = ctx.chain(dte=(p.target_dte - p.dte_tolerance, p.target_dte + p.dte_tolerance), roots=[p.root], right="P")
        # what a decision stores: the root's puts around the target expiry (evaluates like the whole chain)
        window = np.abs(full.dte - p.target_dte) <= p.dte_tolerance
        snapshot = full.subset(np.flatnonzero(window & (full.root == p.root) & ~full.is_call))
        context = {"k": ctx.slippage, "open_positions": sum(not self._is_hedge(t) for t in ctx.open_trades()),
                   "sentiment": ctx.signal(p.probe_signal) if p.require_probe_sentiment is not None else None,
                   "ladder_limit": self.ladder.limit, "ladder_profitable_run": self.ladder.profitable_run,
                   "period_pnl": round(self.current_period_pnl(ctx), 2)}
        decision, _ = decide_and_enter(ctx, snapshot, context, self.evaluate(snapshot, context),
                                       entry=lambda d: self._bwb_entry(snapshot, d),
                                       ruleset_version=self.ruleset_version, reason="bwb entry")
        if decision.action == "TRADE":
            self._track(ctx)

    @staticmethod
    def _bwb_entry(snapshot, d):
        legs = tuple(Leg(snapshot.contract(r), q) for r, q in zip(d["rows"], (1, -2, 1)))
        return legs, int(d["contracts"]), credit_limit(d["est_credit"], "SPX")

    def _decide_hedge(self, ctx) -> None:
        p = self.params
        open_trades = ctx.open_trades()
        bwbs = [t for t in open_trades if not self._is_hedge(t)]
        hedges = [t for t in open_trades if self._is_hedge(t)]
        exposure = sum(t.max_loss for t in bwbs)
        if exposure <= 0 and not hedges:
            return  # nothing to hedge and nothing held: no decision to record
        full = ctx.chain("VIX", dte=(p.hedge_target_dte - p.hedge_dte_tolerance,
                                     p.hedge_target_dte + p.hedge_dte_tolerance))
        window = np.abs(full.dte - p.hedge_target_dte) <= p.hedge_dte_tolerance
        snapshot = full.subset(np.flatnonzero(window & (full.root == "VIX")))
        context = {"k": ctx.slippage, "exposure": round(exposure, 2), "bwbs_open": len(bwbs),
                   "held_spreads": sum(t.contracts for t in hedges),
                   "held_cost": round(sum(t.entry_price * 100 * t.contracts for t in hedges), 2)}
        decision, _ = decide_and_enter(ctx, snapshot, context, self.evaluate(snapshot, context),
                                       entry=lambda d: self._hedge_entry(snapshot, d),
                                       ruleset_version=self.ruleset_version, reason="vix hedge")
        if decision.action == "TRADE":
            self._track(ctx)

    @staticmethod
    def _hedge_entry(snapshot, d):
        legs = (Leg(snapshot.contract(d["long_row"]), +1), Leg(snapshot.contract(d["short_row"]), -1))
        return legs, int(d["buy"]), float(round_to_tick(d["est_debit"], "VIX", direction="up", complex_order=True))

    # -------------------------------------------------------------- exits
    def manage(self, ctx, trade) -> None:
        self._tracked.setdefault(trade.trade_id, trade)
        if ctx.has_pending_exit(trade):
            return
        p = self.params
        cost = ctx.close_price(trade)  # signed: positive = a debit to pay to close
        if self._is_hedge(trade):
            # the hedge is worth -cost (we sell it); its entry debit is entry_price
            if (p.hedge_take_profit_multiple is not None and cost is not None
                    and -cost >= p.hedge_take_profit_multiple * trade.entry_price - PRICE_EPS):
                ctx.close_trade(trade, "hedge_take_profit")
            return
        if cost is not None:
            pnl = (trade.entry_credit - cost) * 100 * trade.contracts  # before exit fees
            basis = trade.entry_credit if p.profit_target_basis == "credit" else p.upper_wing + trade.entry_credit
            if basis > 0 and trade.entry_credit - cost >= p.profit_target_pct * basis - PRICE_EPS:
                ctx.close_trade(trade, "take_profit")
                return
            if p.stop_loss_pct is not None and pnl <= -p.stop_loss_pct * trade.max_loss + 100 * PRICE_EPS:
                ctx.close_trade(trade, "stop_loss")
                return
        if p.exit_dte is not None and (trade.expiry - ctx.today).days <= p.exit_dte:
            ctx.close_trade(trade, "time_exit")

    # ----------------------------------------------------- ladder bookkeeping
    def _track(self, ctx) -> None:
        """Remember open trades; add the realized P&L of those closed since (exits and settlements)."""
        for trade in ctx.open_trades():
            self._tracked.setdefault(trade.trade_id, trade)
        for trade in [t for t in self._tracked.values() if not t.is_open]:
            del self._tracked[trade.trade_id]
            self.period_pnl += float(trade.realized_pnl)
            self.realized_total += float(trade.realized_pnl)

    def marked_value(self, ctx) -> float:
        """The strategy's P&L so far, dollars: realized of closed trades + open trades at mid, less their fees.

        An open trade counts (mark - entry price) x multiplier x contracts - fees paid, so its value
        the day it closes moves by exactly what closing it realized against the last mark.
        """
        self._track(ctx)
        value = self.realized_total
        for t in ctx.open_trades():
            value += (ctx.mark(t) - t.entry_price) * t.legs[0].contract.multiplier * t.contracts - t.fees
        return value

    def current_period_pnl(self, ctx) -> float:
        """The running period's P&L as the ladder will count it (``ladder_pnl``)."""
        if self.params.ladder_pnl == "realized":
            self._track(ctx)
            return self.period_pnl
        return self.marked_value(ctx) - self.period_start_value

    def _period_of(self, day: dt.date) -> tuple:
        if self.params.ladder_period == "day":
            return (day.year, day.month, day.day)
        return day.isocalendar()[:2] if self.params.ladder_period == "week" else (day.year, day.month)

    def on_session_start(self, ctx) -> None:
        self._track(ctx)  # AM settlements (VIX hedges) count in the period that is ending (realized P&L)
        period = self._period_of(ctx.today)
        if self.period is not None and period != self.period:
            pnl = self.period_pnl if self.params.ladder_pnl == "realized" else \
                self.value_at_close - self.period_start_value
            limit = self.ladder.record(round(pnl, 2))
            self.ladder_history.append(("-".join(map(str, self.period)), round(pnl, 2), limit))
            self.period_pnl = 0.0
            self.period_start_value = self.value_at_close
        self.period = period

    def on_session_end(self, ctx) -> None:
        self.value_at_close = self.marked_value(ctx)
