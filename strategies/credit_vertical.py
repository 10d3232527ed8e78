"""credit_vertical: SPX 3/5/7 DTE credit verticals (seed 002)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from strikebench.api import Candidate, PluginParams, Strategy
from strikebench.options.chain import ChainSnapshot
from strikebench.strategies.spreads import (PRICE_EPS, credit_exit, decide_and_enter, relevant_slice, skip_if_blocked,
                                             vertical_entry)

RULESET_VERSION = "credit_vertical/1"


class CreditVerticalParams(PluginParams):
    underlying: Literal["SPX", "XSP"] = Field("SPX", description="index whose chain is traded")
    root: str = Field("SPXW", description="option root (SPXW dailies, XSP)")
    dte_targets: list[Annotated[int, Field(ge=0, le=60)]] = Field(default_factory=lambda: [3, 5, 7], min_length=1,
                                   description="calendar-day DTE targets, one candidate expiry each")
    dte_tolerance: int = Field(1, ge=0, le=7, description="an expiry qualifies within this many days of a target")
    entry_times: list[dt.time] = Field(default_factory=lambda: [dt.time(10), dt.time(11), dt.time(12)], min_length=1,
                                       description="decision times, America/New_York")
    short_deltas: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.10, 0.20], min_length=1, description="|delta| targets of the short leg, each in (0, 1)")
    side: Literal["put", "call", "both"] = Field("put", description="which verticals to sell")
    width: float | None = Field(25.0, gt=0, description="long leg this many points farther OTM (multiple of strike_grid)")
    long_delta_distance: float | None = Field(None, gt=0, lt=1,
                                              description="or: long leg this much |delta| farther OTM (instead of width)")
    strike_grid: float = Field(5.0, gt=0, description="strike spacing the width must be a multiple of")
    min_credit: float = Field(0.30, ge=0, description="minimum net credit per spread, index points")
    max_bid_ask_width: float = Field(1.00, gt=0, description="maximum combo bid/ask width, index points")
    take_profit_pct: float = Field(0.50, gt=0, lt=1, description="close when the spread costs <= (1 - this) x credit")
    stop_multiple: float = Field(2.0, gt=1, description="close when closing costs >= this x credit (loss = (m-1) x credit)")
    exit_trigger: Literal["executable", "mid"] = Field(
        "executable", description="price the take-profit and stop compare: the fill model's closing price, or the mid")
    exit_time: dt.time | None = Field(None, description="optional session exit time on expiry day, America/New_York")
    contracts: int = Field(1, ge=1, le=1000, description="spreads per trade")

    @model_validator(mode="after")
    def _one_long_leg_rule(self):
        if (self.width is None) == (self.long_delta_distance is None):
            raise ValueError("set exactly one of width and long_delta_distance")
        if self.width is not None:
            ratio = self.width / self.strike_grid
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"width {self.width:g} is not a multiple of the {self.strike_grid:g}-point strike grid")
        return self


def _score(credit: float, max_loss: float, short_delta: float) -> float:
    """Credit per point of risk, discounted by how close the short strike is to the money.

    score = credit / max_loss x (1 - |delta_short|). A 0.10-delta spread taking
    1.00 on 24.00 of risk scores 0.0375; a 0.20-delta one needs to take more than
    1.125 to beat it.
    """
    return credit / max_loss * (1.0 - abs(short_delta))


class CreditVertical(Strategy):
    """SPX credit verticals at 3/5/7 DTE: short leg by delta, long leg by width, 50% take profit, 2x stop."""

    name = "credit_vertical"
    Params = CreditVerticalParams
    ruleset_version = RULESET_VERSION

    # ------------------------------------------------------------ decisions
    def evaluate(self, snapshot: ChainSnapshot, context: dict) -> tuple[str, str, list[Candidate], int | None]:
        """Pure selection on one snapshot: (action, reason, candidates, chosen index).

        Depends only on the snapshot and ``context`` (``k``: the fill model's slippage
        fraction used to estimate the credit), so a stored decision replays exactly.
        """
        p = self.params
        k = float(context.get("k", 0.30))
        rights = {"put": ["P"], "call": ["C"], "both": ["P", "C"]}[p.side]
        candidates: list[Candidate] = []
        notes: list[str] = []
        bid, ask, strike, delta = snapshot.bid, snapshot.ask, snapshot.strike, snapshot.delta
        for target in p.dte_targets:
            expiry = snapshot.nearest_expiry(target, p.dte_tolerance, root=p.root)
            if expiry is None:
                notes.append(f"no expiry within {p.dte_tolerance}d of {target} DTE")
                continue
            dte = (expiry - snapshot.timestamp.date()).days
            expiry_text = str(expiry)
            for right in rights:
                # every delta target of the side in one pass over its rows
                shorts = snapshot.closest_deltas(expiry, right, p.short_deltas, root=p.root)
                for target_delta, short in zip(p.short_deltas, shorts):
                    if short is None:
                        notes.append(f"{target} DTE {right}: no quotable strikes")
                        continue
                    if p.width is not None:
                        long = snapshot.offset_row(short, p.width)
                    else:
                        long = snapshot.delta_offset_row(short, p.long_delta_distance)
                    if long is None:
                        notes.append(f"{target} DTE {right} {target_delta:.2f}: no long leg")
                        continue
                    sb, sa = float(bid[short]), float(ask[short])
                    lb, la = float(bid[long]), float(ask[long])
                    mid_credit = (sb + sa) / 2 - (lb + la) / 2
                    ba_width = (sa - sb) + (la - lb)
                    est_credit = mid_credit - k * ba_width
                    short_strike, long_strike = float(strike[short]), float(strike[long])
                    short_delta = float(delta[short])
                    spread_width = abs(short_strike - long_strike)
                    max_loss = spread_width - est_credit
                    details = {
                        "target_dte": target, "dte": dte, "expiry": expiry_text, "right": right,
                        "target_delta": target_delta, "short_strike": short_strike,
                        "long_strike": long_strike, "short_delta": round(short_delta, 4),
                        "long_delta": round(float(delta[long]), 4), "mid_credit": round(mid_credit, 4),
                        "est_credit": round(est_credit, 4), "bid_ask_width": round(ba_width, 4),
                        "short_row": int(short), "long_row": int(long),
                    }
                    reject = None
                    if est_credit < p.min_credit - PRICE_EPS:  # equal to the cent passes
                        reject = f"credit {est_credit:.4f} < min {p.min_credit:.2f}"
                    elif ba_width > p.max_bid_ask_width:
                        reject = f"bid/ask width {ba_width:.2f} > max {p.max_bid_ask_width:.2f}"
                    elif max_loss <= 0:
                        reject = "credit exceeds the width"
                    if reject:
                        details["rejected"] = reject
                        score = None
                    else:
                        score = round(_score(est_credit, max_loss, short_delta), 6)
                    candidates.append(Candidate(
                        description=f"{dte}DTE {right} {short_strike:g}/{long_strike:g}",
                        legs=(snapshot.occ_symbol(short), snapshot.occ_symbol(long)),
                        score=score, credit=round(est_credit, 4), details=details))
        scored = [(c.score, -i) for i, c in enumerate(candidates) if c.score is not None]
        if not scored:
            reason = "; ".join(notes + [c.details["rejected"] for c in candidates if "rejected" in c.details][:3])
            return "SKIP", reason or "no candidates", candidates, None
        best = -max(scored)[1]
        return "TRADE", f"best score {candidates[best].score:.4f}: {candidates[best].description}", candidates, best

    def relevant_rows(self, snapshot: ChainSnapshot) -> np.ndarray:
        """Rows :meth:`evaluate` can look at: the root, the sides traded and every expiry within
        tolerance of a target. Evaluating these rows alone gives the same result as the whole
        chain, so they are what a decision stores (a fraction of the chain). Read-only: the same array for
        every snapshot of one listing (it depends on the contracts and the date alone)."""
        p = self.params
        memo = snapshot.listing_memo("credit_vertical.relevant_rows")
        key = (tuple(p.dte_targets), p.dte_tolerance, p.root, p.side)
        got = memo.get(key)
        if got is None:
            got = memo[key] = self._relevant_rows(snapshot)
            got.flags.writeable = False
        return got

    def _relevant_rows(self, snapshot: ChainSnapshot) -> np.ndarray:
        p = self.params
        dtes = snapshot.dte
        window = np.zeros(len(snapshot), dtype=bool)
        for target in p.dte_targets:
            window |= np.abs(dtes - target) <= p.dte_tolerance
        mask = window & (dtes >= 0) & (snapshot.root == p.root)
        if p.side != "both":
            mask &= snapshot.is_call == (p.side == "call")
        return np.flatnonzero(mask)

    def on_decision_time(self, ctx) -> None:
        p = self.params
        if skip_if_blocked(ctx, lambda: {"k": ctx.slippage, "underlying_price": ctx.underlying_price()},
                           ruleset_version=self.ruleset_version):
            return  # a risk rule blocks every entry now: no chain built
        snapshot = ctx.chain(dte=(max(0, min(p.dte_targets) - p.dte_tolerance), max(p.dte_targets) + p.dte_tolerance),
                             roots=[p.root], right=None if p.side == "both" else "C" if p.side == "call" else "P")
        snapshot = relevant_slice(snapshot, self.relevant_rows,
                                  ("credit_vertical", tuple(p.dte_targets), p.dte_tolerance, p.root, p.side))
        context = {"k": ctx.slippage,
                   "underlying_price": snapshot.underlying_price, "dropped_quotes": snapshot.dropped["total"]}
        decide_and_enter(ctx, snapshot, context, self.evaluate(snapshot, context),
                         entry=vertical_entry(snapshot, self.params.root, self.params.contracts),
                         ruleset_version=self.ruleset_version)

    # -------------------------------------------------------------- exits
    def manage(self, ctx, trade) -> None:
        p = self.params
        if credit_exit(ctx, trade, take_profit_pct=p.take_profit_pct, stop_multiple=p.stop_multiple,
                       trigger=p.exit_trigger, idle=p.exit_time is None):  # idle: the only exit rule then
            return
        if p.exit_time is not None and ctx.today == trade.expiry and ctx.now.time() >= p.exit_time:
            ctx.close_trade(trade, "session_exit")
