"""bwb_vix_hedge: SPX 30 DTE put broken-wing butterflies with a VIX call-spread hedge (seed 004).

Two kinds of trades, each with one expiry:

* **the core** -- a 1/-2/1 SPXW put broken-wing butterfly about 30 DTE: two puts sold at the
  strike nearest ``short_delta``, one bought ``upper_wing`` points above and one ``lower_wing``
  points below (the wider, "broken" wing). Entered only for a credit of at least
  ``min_credit``: nothing is lost if SPX stays above the upper strike, the most is won at the
  short strike, and the worst case below the lower strike is ``lower_wing - upper_wing - credit``.
* **the hedge** -- VIX call spreads (VIX options price off the VIX future of their expiry, read
  from the chain by put-call parity), bought while VIX is at most ``vix_entry_max``, strikes
  ``hedge_strike_offset`` above the future and ``hedge_width`` apart, as many as
  ``hedge_ratio`` x the BWBs' worst-case loss asks for, within a cost budget of
  ``hedge_budget_pct`` of that exposure.

Risk limits scale on a reverse-Fibonacci ladder (:class:`RiskLadder`): its current limit L is the
loss a period (week or month) may take before new BWBs stop for the rest of it, and (with
``ladder_sizing``) scales the contracts per entry: ``max(1, round(contracts x L / L_start))``.
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
from strikebench.strategies.spreads import credit_limit, decide_and_enter

RULESET_VERSION = "bwb_vix_hedge/1"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri"]
Sentiment = Literal["bullish", "neutral", "bearish", "volatile"]
DEFAULT_LADDER = (5000.0, 3200.0, 2000.0, 1200.0, 800.0, 400.0)


# ------------------------------------------------------------------ risk ladder
class RiskLadder:
    """A reverse-Fibonacci ladder of dollar risk limits, stepped once per period.

    ``limits`` run from the largest (index 0) down; the ladder starts at ``start``. After a
    losing period (P&L < 0) it steps down one notch (to a smaller limit, stopping at the last);
    after ``up_after`` profitable periods in a row it steps up one notch (stopping at the
    first) and the count restarts. A flat period (P&L == 0, e.g. nothing closed) changes nothing.

    >>> ladder = RiskLadder()            # 5000, 3200, 2000, 1200, 800, 400; starts at 2000
    >>> ladder.record(-150.0)            # a losing week
    1200.0
    >>> ladder.record(80.0), ladder.record(95.0)   # two profitable weeks: back up
    (1200.0, 2000.0)
    """

    def __init__(self, limits: Sequence[float] = DEFAULT_LADDER, start: int = 2, up_after: int = 2):
        limits = tuple(float(x) for x in limits)
        if not limits or any(b >= a for a, b in zip(limits, limits[1:])) or limits[-1] <= 0:
            raise ValueError(f"ladder limits must be positive and strictly decreasing, got {list(limits)}")
        if not 0 <= start < len(limits):
            raise ValueError(f"start notch {start} is outside the ladder (0..{len(limits) - 1})")
        if up_after < 1:
            raise ValueError(f"up_after must be at least 1, got {up_after}")
        self.limits, self.notch, self.up_after = limits, start, up_after
        self.profitable_run = 0

    @property
    def limit(self) -> float:
        """The current limit, dollars."""
        return self.limits[self.notch]

    def record(self, period_pnl: float) -> float:
        """Step on one closed period's P&L (dollars); returns the new limit."""
        if period_pnl < 0:
            self.notch = min(self.notch + 1, len(self.limits) - 1)
            self.profitable_run = 0
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
               multiplier: int = 100, max_spreads: int = 1000) -> dict:
    """How many VIX call spreads to buy now (dollars in, counts out).

    * target = ceil(hedge_ratio x exposure / (width x multiplier)): spreads whose combined
      maximum payoff is ``hedge_ratio`` of the exposure;
    * budget = budget_pct x exposure - held_cost: what may still be spent;
    * buy = min(target - held_spreads, floor(budget / cost_per_spread), max_spreads), at least 0.

    Four BWBs risking 4,800 each (exposure 19,200), ratio 0.25, 10-point spreads costing 0.70:
    target = ceil(4,800 / 1,000) = 5, budget = 384, affordable = floor(384 / 70) = 5, buy 5.
    """
    target = math.ceil(hedge_ratio * exposure / (width * multiplier) - 1e-9) if exposure > 0 else 0
    budget = budget_pct * exposure - held_cost
    affordable = math.floor(budget / cost_per_spread + 1e-9) if cost_per_spread > 0 and budget > 0 else 0
    buy = max(0, min(target - held_spreads, affordable, max_spreads))
    return {"target": target, "budget": round(budget, 2), "affordable": affordable, "buy": buy}


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


# ------------------------------------------------------------------ params
class BwbVixHedgeParams(PluginParams):
    # the BWB core
    root: str = Field("SPXW", description="option root of the BWB (SPXW, PM-settled)")
    target_dte: int = Field(30, ge=7, le=60, description="calendar-day DTE of the BWB's expiry")
    dte_tolerance: int = Field(4, ge=0, le=14, description="an expiry qualifies within this many days of target_dte")
    entry_weekdays: list[Weekday] = Field(default_factory=lambda: ["Wed"], min_length=1,
                                          description="days a new BWB may be opened (seed 004: Wednesday)")
    entry_time: dt.time = Field(dt.time(10), description="BWB decision time, America/New_York")
    short_delta: float = Field(0.30, gt=0, lt=0.5, description="|delta| target of the two short puts")
    delta_tolerance: float = Field(0.05, gt=0, lt=0.5,
                                   description="the short strike's |delta| may miss the target by this much "
                                               "(the nearest strike whose wings are both listed is used)")
    upper_wing: float = Field(50.0, gt=0, description="points from the short strike up to the long put nearer the money")
    lower_wing: float = Field(100.0, gt=0, description="points from the short strike down to the far long put (the broken wing)")
    min_credit: float = Field(0.50, ge=0, description="minimum estimated credit per BWB, index points (0 = any credit)")
    max_positions: int = Field(4, ge=1, le=20, description="most BWBs open at once")
    contracts: int = Field(1, ge=1, le=100, description="BWBs per entry at the ladder's starting notch")
    profit_target_pct: float = Field(0.65, gt=0, le=1, description="take profit at this share of the basis")
    profit_target_basis: Literal["credit", "max_profit"] = Field(
        "credit", description="the profit target's basis: the credit taken in, or the BWB's maximum profit "
                              "(upper_wing + credit)")
    stop_loss_pct: float | None = Field(
        0.5, gt=0, le=1, description="close a BWB whose loss reaches this share of its max loss (null: no stop)")
    exit_dte: int | None = Field(7, ge=0, le=30, description="close a BWB at this many DTE or fewer (null: to expiry)")
    require_probe_sentiment: list[Sentiment] | None = Field(
        None, description="enter only while the probe signal is one of these (e.g. [bullish, neutral]); null: no gate")
    probe_signal: str = Field("probe_sentiment", min_length=1, description="the signal name the probe publishes")
    # the risk ladder
    risk_ladder: list[float] = Field(default_factory=lambda: list(DEFAULT_LADDER), min_length=1,
                                     description="reverse-Fibonacci dollar limits, largest first")
    ladder_start: int = Field(2, ge=0, description="notch the ladder starts at (0 = largest; default 2000)")
    ladder_up_after: int = Field(2, ge=1, le=52, description="profitable periods in a row that step the ladder up")
    ladder_period: Literal["week", "month"] = Field("week", description="the period the ladder steps on")
    ladder_sizing: bool = Field(True, description="scale contracts by limit / starting limit (rounded, at least 1)")
    # the VIX hedge
    hedge: bool = Field(True, description="buy VIX call spreads against the BWBs' exposure")
    hedge_time: dt.time = Field(dt.time(10, 30), description="daily hedge decision time, America/New_York")
    hedge_ratio: float = Field(0.25, gt=0, le=2,
                               description="hedges' combined max payoff as a share of the BWBs' worst-case loss")
    vix_entry_max: float = Field(22.0, gt=0, description="buy hedges only while spot VIX is at most this")
    hedge_strike_offset: float = Field(5.0, ge=0, le=30, description="long call this many VIX points above the future")
    hedge_width: float = Field(10.0, gt=0, le=50, description="VIX points between the long and the short call")
    hedge_target_dte: int = Field(50, ge=7, le=180, description="preferred DTE of the hedge's VIX expiry")
    hedge_dte_tolerance: int = Field(20, ge=0, le=90, description="a VIX expiry qualifies within this many days")
    hedge_budget_pct: float = Field(0.02, gt=0, le=0.5,
                                    description="open hedges may cost at most this share of the exposure")
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
        RiskLadder(self.risk_ladder, self.ladder_start, self.ladder_up_after)  # raises on a bad ladder
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
        self.ladder = RiskLadder(p.risk_ladder, p.ladder_start, p.ladder_up_after)
        self.ladder_history: list[tuple[str, float, float]] = []  # (period, pnl, limit after)
        self.period: tuple | None = None
        self.period_pnl = 0.0
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
                return "SKIP", (f"probe sentiment {mood or 'not published'} not in "
                                f"[{', '.join(p.require_probe_sentiment)}]"), [], None
        open_positions = int(context.get("open_positions", 0))
        if open_positions >= p.max_positions:
            return "SKIP", f"{open_positions} BWBs open (max {p.max_positions})", [], None
        limit, period_pnl = float(context.get("ladder_limit", self.ladder.limit)), float(context.get("period_pnl", 0.0))
        if period_pnl <= -limit:
            return "SKIP", f"{p.ladder_period} P&L {period_pnl:.2f} used up the ladder limit {limit:.0f}", [], None
        expiry = snapshot.nearest_expiry(p.target_dte, p.dte_tolerance, root=p.root)
        if expiry is None:
            return "SKIP", f"no {p.root} expiry within {p.dte_tolerance}d of {p.target_dte} DTE", [], None
        dte = (expiry - snapshot.timestamp.date()).days
        rows = snapshot.rows(expiry, "P", root=p.root)
        rows = rows[np.isfinite(snapshot.delta[rows])]
        miss = np.abs(np.abs(snapshot.delta[rows]) - p.short_delta)
        order = np.lexsort((np.abs(snapshot.delta[rows]), miss))  # nearest the target; ties farther OTM
        short = upper = lower = None
        for j in order:
            if miss[j] > p.delta_tolerance:
                break
            r = int(rows[j])
            up = snapshot.offset_row(r, -p.upper_wing)
            lo = snapshot.offset_row(r, p.lower_wing)
            if up is not None and lo is not None:
                short, upper, lower = r, up, lo
                break
        if short is None:
            return "SKIP", (f"no short put within {p.delta_tolerance:.2f} of {p.short_delta:.2f} delta with both "
                            f"wings (+{p.upper_wing:g}/-{p.lower_wing:g}) listed"), [], None
        legs_rows = (upper, short, lower)
        ratios = np.array([1.0, -2.0, 1.0])
        bid = np.array([float(snapshot.bid[r]) for r in legs_rows])
        ask = np.array([float(snapshot.ask[r]) for r in legs_rows])
        mid_net = float(ratios @ ((bid + ask) / 2))
        ba_width = float(np.abs(ratios) @ (ask - bid))
        est_net = mid_net + k * ba_width
        credit = -est_net
        spot = float(snapshot.underlying_price)
        ks = float(snapshot.strike[short])
        greeks = {g: round(float(ratios @ np.array([float(getattr(snapshot, g)[r]) for r in legs_rows])) * 100, 2)
                  for g in ("delta", "theta", "vega")}
        legs = tuple(Leg(snapshot.contract(r), int(q)) for r, q in zip(legs_rows, ratios))

        def pnl_at(level: float) -> float:
            return round((credit + float(expiry_payoff(legs, level))) * 100, 2)

        details = {
            "expiry": str(expiry), "dte": dte, "upper_strike": float(snapshot.strike[upper]), "short_strike": ks,
            "lower_strike": float(snapshot.strike[lower]), "short_delta": round(float(snapshot.delta[short]), 4),
            "mid_net": round(mid_net, 4), "bid_ask_width": round(ba_width, 4), "est_credit": round(credit, 4),
            "max_profit": round((p.upper_wing + credit) * 100, 2),
            "max_loss": round((p.lower_wing - p.upper_wing - credit) * 100, 2),
            "pnl_at_expiry_minus5pct": pnl_at(spot * 0.95), "pnl_at_expiry_minus7pct": pnl_at(spot * 0.93),
            **{f"net_{g}": v for g, v in greeks.items()},
            "rows": [int(r) for r in legs_rows],
        }
        description = f"{dte}DTE put BWB {details['upper_strike']:g}/{ks:g}x2/{details['lower_strike']:g}"
        reject = None
        if credit <= 0:
            reject = f"not a credit (debit {-credit:.2f})"
        elif credit < p.min_credit:
            reject = f"credit {credit:.2f} < min {p.min_credit:.2f}"
        if reject:
            details["rejected"] = reject
        candidate = Candidate(description=description, legs=tuple(leg.contract.occ_symbol for leg in legs),
                              score=None if reject else round(credit, 4), credit=round(credit, 4), details=details)
        if reject:
            return "SKIP", reject, [candidate], None
        details["contracts"] = ladder_contracts(p.contracts, limit, p.risk_ladder[p.ladder_start]) \
            if p.ladder_sizing else p.contracts
        return "TRADE", f"{details['contracts']} x {description} for {credit:.2f} credit", [candidate], 0

    def evaluate_hedge(self, snapshot: ChainSnapshot, context: dict):
        p = self.params
        k = float(context.get("k", 0.30))
        exposure = float(context.get("exposure", 0.0))
        if exposure <= 0:
            return "SKIP", "no BWB exposure to hedge", [], None
        vix = float(snapshot.underlying_price)
        if vix > p.vix_entry_max:
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
                          held_cost=float(context.get("held_cost", 0.0)))
        details = {"expiry": str(expiry), "dte": dte, "vix": vix, "vix_future": future,
                   "long_strike": float(snapshot.strike[long]), "short_strike": float(snapshot.strike[short]),
                   "mid_debit": round(mid_debit, 4), "est_debit": round(est_debit, 4), "exposure": round(exposure, 2),
                   **size, "long_row": long, "short_row": int(short)}
        description = f"{dte}DTE VIX call spread {details['long_strike']:g}/{details['short_strike']:g}"
        candidate = Candidate(description=description, legs=(snapshot.contract(long).occ_symbol,
                                                              snapshot.contract(short).occ_symbol),
                              score=None, credit=round(-est_debit, 4), details=details)
        if est_debit <= 0:
            return "SKIP", f"{description}: no usable debit ({est_debit:.2f})", [candidate], None
        if size["buy"] <= 0:
            why = ("hedged" if size["target"] <= int(context.get("held_spreads", 0))
                   else f"budget {size['budget']:.2f} buys no {est_debit * 100:.0f}-dollar spread")
            return "SKIP", f"{description}: {why} (target {size['target']})", [candidate], None
        return "TRADE", f"{size['buy']} x {description} for {est_debit:.2f}", [candidate], 0

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
        full = ctx.chain()
        # what a decision stores: the root's puts around the target expiry (evaluates like the whole chain)
        window = np.abs(full.dte - p.target_dte) <= p.dte_tolerance
        snapshot = full.subset(np.flatnonzero(window & (full.root == p.root) & ~full.is_call))
        context = {"k": ctx.slippage, "open_positions": sum(not self._is_hedge(t) for t in ctx.open_trades()),
                   "sentiment": ctx.signal(p.probe_signal) if p.require_probe_sentiment is not None else None,
                   "ladder_limit": self.ladder.limit, "period_pnl": round(self.period_pnl, 2)}
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
        full = ctx.chain("VIX")
        window = np.abs(full.dte - p.hedge_target_dte) <= p.hedge_dte_tolerance
        snapshot = full.subset(np.flatnonzero(window & (full.root == "VIX")))
        context = {"k": ctx.slippage, "exposure": round(exposure, 2),
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
                    and -cost >= p.hedge_take_profit_multiple * trade.entry_price):
                ctx.close_trade(trade, "hedge_take_profit")
            return
        if cost is not None:
            pnl = (trade.entry_credit - cost) * 100 * trade.contracts  # before exit fees
            basis = trade.entry_credit if p.profit_target_basis == "credit" else p.upper_wing + trade.entry_credit
            if basis > 0 and trade.entry_credit - cost >= p.profit_target_pct * basis:
                ctx.close_trade(trade, "take_profit")
                return
            if p.stop_loss_pct is not None and pnl <= -p.stop_loss_pct * trade.max_loss:
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

    def _period_of(self, day: dt.date) -> tuple:
        return day.isocalendar()[:2] if self.params.ladder_period == "week" else (day.year, day.month)

    def on_session_start(self, ctx) -> None:
        self._track(ctx)  # AM settlements (VIX hedges) count in the period that is ending
        period = self._period_of(ctx.today)
        if self.period is not None and period != self.period:
            limit = self.ladder.record(self.period_pnl)
            self.ladder_history.append(("-".join(map(str, self.period)), round(self.period_pnl, 2), limit))
            self.period_pnl = 0.0
        self.period = period

    def on_session_end(self, ctx) -> None:
        self._track(ctx)
