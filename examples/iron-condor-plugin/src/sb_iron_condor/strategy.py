"""iron_condor: sell a 30-DTE SPX iron condor at ~16 delta, take half the credit, stop at 2x.

The decision is a pure function of one chain snapshot (:func:`choose_condor`, wrapped by
:meth:`IronCondor.evaluate`), so it can be tested on a hand-built chain and a journaled
decision replays exactly (``strikebench replay-decision``). The rest wires it to the
context: read the chain, record the decision, send the order, manage open condors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from strikebench.api import Candidate, PluginParams, Strategy
from strikebench.options.chain import ChainSnapshot
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg

RULESET_VERSION = "iron_condor/1"
RATIOS = (+1, -1, -1, +1)  # long put wing, short put, short call, long call wing


class IronCondorParams(PluginParams):
    underlying: Literal["SPX", "XSP"] = Field("SPX", description="index whose chain is traded")
    root: str = Field("SPXW", description="option root (SPXW: PM-settled SPX weeklies and dailies)")
    entry_time: dt.time = Field(dt.time(10, 0), description="daily decision time, America/New_York")
    target_dte: int = Field(30, ge=1, le=120, description="calendar days to expiry wanted")
    dte_tolerance: int = Field(5, ge=0, le=30, description="an expiry qualifies within this many days of target_dte")
    short_delta: float = Field(0.16, gt=0, lt=0.5, description="|delta| of both short strikes")
    wing_width: float = Field(50.0, gt=0, description="long strikes this many points beyond the shorts")
    min_credit: float = Field(1.00, ge=0, description="skip when the condor's mid credit is below this, index points")
    take_profit_pct: float = Field(0.50, gt=0, lt=1, description="close when closing costs <= (1 - this) x credit")
    stop_multiple: float = Field(2.0, gt=1, description="close when closing costs >= this x credit")
    exit_dte: int | None = Field(None, ge=0, description="close when this many calendar days or fewer remain (None: hold)")
    max_open: int = Field(1, ge=1, description="condors open at once")
    contracts: int = Field(1, ge=1, le=100, description="condors per entry")

    @model_validator(mode="after")
    def _exit_before_entry(self):
        if self.exit_dte is not None and self.exit_dte >= self.target_dte - self.dte_tolerance:
            raise ValueError(f"exit_dte {self.exit_dte} must be below the shortest entry DTE "
                             f"{self.target_dte - self.dte_tolerance}")
        return self


@dataclass(frozen=True)
class Condor:
    """The four rows of a chosen condor and its mid credit (index points)."""

    expiry: dt.date
    long_put: int
    short_put: int
    short_call: int
    long_call: int
    credit: float

    @property
    def rows(self) -> tuple[int, int, int, int]:
        return self.long_put, self.short_put, self.short_call, self.long_call

    def legs(self, snapshot: ChainSnapshot) -> tuple[Leg, ...]:
        """Buy the put wing, sell the put, sell the call, buy the call wing."""
        return tuple(Leg(snapshot.contract(row), ratio) for row, ratio in zip(self.rows, RATIOS))

    def describe(self, snapshot: ChainSnapshot) -> str:
        k = [f"{snapshot.strike[r]:g}" for r in (self.long_put, self.short_put, self.short_call, self.long_call)]
        dte = (self.expiry - snapshot.timestamp.date()).days
        return f"{dte}DTE {k[0]}/{k[1]}P {k[2]}/{k[3]}C for {self.credit:.2f}"


def choose_condor(snapshot: ChainSnapshot, p: IronCondorParams) -> Condor | str:
    """The condor to sell on this snapshot, or the reason to skip (a string)."""
    expiry = snapshot.nearest_expiry(p.target_dte, p.dte_tolerance, root=p.root)
    if expiry is None:
        return f"no {p.root} expiry within {p.dte_tolerance}d of {p.target_dte} DTE"
    short_put = snapshot.closest_delta(expiry, "P", p.short_delta, root=p.root)
    short_call = snapshot.closest_delta(expiry, "C", p.short_delta, root=p.root)
    if short_put is None or short_call is None:
        return f"no quotable {expiry} strikes"
    long_put = snapshot.offset_row(short_put, p.wing_width)
    long_call = snapshot.offset_row(short_call, p.wing_width)
    if long_put is None or long_call is None:
        return f"no quotable wing {p.wing_width:g} points beyond the shorts"
    mid = snapshot.mid
    credit = float(mid[short_put] + mid[short_call] - mid[long_put] - mid[long_call])
    if credit < p.min_credit:
        return f"credit {credit:.2f} < min {p.min_credit:.2f}"
    return Condor(expiry, long_put, short_put, short_call, long_call, round(credit, 4))


class IronCondor(Strategy):
    """Iron condor ~30 DTE: shorts at ~0.16 delta, fixed-width wings, 50% take profit, 2x stop."""

    name = "iron_condor"
    Params = IronCondorParams
    ruleset_version = RULESET_VERSION

    def decision_times(self) -> list[dt.time]:
        return [self.params.entry_time]

    def evaluate(self, snapshot: ChainSnapshot, context: dict) -> tuple[str, str, list[Candidate], int | None]:
        """The decision on one snapshot: (action, reason, candidates, chosen index).

        Pure (no ``ctx``), so ``strikebench replay-decision`` can re-run it from the journal.
        """
        choice = choose_condor(snapshot, self.params)
        if isinstance(choice, str):
            return "SKIP", choice, [], None
        legs = choice.legs(snapshot)
        candidate = Candidate(
            description=choice.describe(snapshot), legs=tuple(leg.contract.occ_symbol for leg in legs),
            credit=choice.credit,
            details={"expiry": str(choice.expiry), "dte": (choice.expiry - snapshot.timestamp.date()).days,
                     "strikes": [float(snapshot.strike[r]) for r in choice.rows],
                     "deltas": [round(float(snapshot.delta[r]), 4) for r in choice.rows]})
        return "TRADE", candidate.description, [candidate], 0

    def on_decision_time(self, ctx) -> None:
        p = self.params
        held = len(ctx.open_trades())
        if held >= p.max_open:
            ctx.decide("SKIP", f"{held} condor(s) open, max {p.max_open}")
            return
        snapshot = ctx.chain()
        action, reason, candidates, chosen = self.evaluate(snapshot, {})
        decision = ctx.decide(action, reason, candidates=candidates, chosen=chosen, snapshot=snapshot,
                              ruleset_version=self.ruleset_version)
        if action == "TRADE":
            legs = [Leg(OptionContract.from_occ(symbol), ratio) for symbol, ratio in zip(candidates[0].legs, RATIOS)]
            ctx.open_trade(legs, p.contracts, reason="entry", decision=decision)

    def manage(self, ctx, trade) -> None:
        if ctx.has_pending_exit(trade):
            return
        p = self.params
        cost = ctx.close_price(trade)  # what buying the condor back costs now, index points
        if cost is not None:
            if cost <= (1.0 - p.take_profit_pct) * trade.entry_credit:
                ctx.close_trade(trade, "take_profit")
                return
            if cost >= p.stop_multiple * trade.entry_credit:
                ctx.close_trade(trade, "stop_loss")
                return
        if p.exit_dte is not None and (trade.expiry - ctx.today).days <= p.exit_dte:
            ctx.close_trade(trade, "time_exit")
