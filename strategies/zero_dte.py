"""zero_dte: 0DTE SPX/XSP intraday credit spreads, side chosen by the opening range and VWAP (seed 000).

Every ``every_minutes`` from ``first_decision`` to ``last_decision`` (New York) the strategy
logs a *suggestion matrix*: put and call credit spreads expiring today, for each short
delta and width, each scored or rejected with the reason. The side rule (``side_rule:
opening_range_vwap``, the default) reads the features of the run's context providers:

* price above VWAP **and** above the opening-range high: the market is trending up, sell a
  **put** spread;
* price below VWAP **and** below the opening-range low: sell a **call** spread;
* anything else (inside the opening range, or VWAP disagreeing with the breakout): **skip**;
* the range or VWAP not known yet (no ``opening_range`` / ``vwap`` provider, or before the
  range is complete): skip;
* with ``max_vix`` set, skip while VIX is above it.

The best-scoring candidate of the allowed side is traded unless a risk manager vetoes it
(per-trade max loss, daily loss cap, portfolio worst case, no new risk in the last hour:
the decision then becomes a SKIP whose reason names the rule). An open spread is closed at
the take profit or the stop, as in ``credit_vertical``, else held to the PM settlement.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from strikebench.api import Candidate, PluginParams, Strategy
from strikebench.options.chain import ChainSnapshot
from strikebench.strategies.spreads import (PRICE_EPS, credit_exit, decide_and_enter, relevant_slice, skip_if_blocked,
                                             vertical_entry)

RULESET_VERSION = "zero_dte/1"

#: the features the side rule reads (nan / missing = not known yet)
SIDE_FEATURES = ("or_high", "or_low", "or_width", "vwap", "atr", "mom_5", "mom_15", "vix", "vix9d")


class ZeroDteParams(PluginParams):
    underlying: Literal["SPX", "XSP"] = Field("XSP", description="index whose chain is traded")
    root: str = Field("XSP", description="option root: XSP, or SPXW (PM-settled SPX dailies)")
    first_decision: dt.time = Field(dt.time(10, 0), description="first decision time, America/New_York")
    last_decision: dt.time = Field(dt.time(15, 0), description="last decision time, America/New_York")
    every_minutes: int = Field(15, ge=1, le=120, description="minutes between decisions")
    short_deltas: list[Annotated[float, Field(gt=0, lt=0.5)]] = Field(
        default_factory=lambda: [0.10, 0.15, 0.20], min_length=1, description="|delta| targets of the short leg")
    widths: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0, 2.0], min_length=1,
        description="long leg this many points farther OTM (each a multiple of strike_grid)")
    strike_grid: float = Field(1.0, gt=0, description="strike spacing (XSP 1, SPXW 5)")
    side_rule: Literal["opening_range_vwap", "put", "call", "both"] = Field(
        "opening_range_vwap", description="how the side is chosen: the feature rule, or always put/call/either")
    max_vix: float | None = Field(None, gt=0, description="skip while VIX (the `vix` feature) is above this")
    min_credit: float = Field(0.10, ge=0, description="minimum estimated net credit per spread, index points")
    max_bid_ask_width: float = Field(0.50, gt=0, description="maximum combo bid/ask width, index points")
    take_profit_pct: float = Field(0.50, gt=0, lt=1, description="close when the spread costs <= (1 - this) x credit")
    stop_multiple: float = Field(2.0, gt=1, description="close when closing costs >= this x credit")
    exit_trigger: Literal["executable", "mid"] = Field(
        "executable", description="price the take profit and stop compare: the fill model's closing price, or the mid")
    contracts: int = Field(1, ge=1, le=100, description="spreads per trade")

    @model_validator(mode="after")
    def _consistent(self):
        if self.last_decision < self.first_decision:
            raise ValueError(f"last_decision {self.last_decision} is before first_decision {self.first_decision}")
        for w in self.widths:
            ratio = w / self.strike_grid
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"width {w:g} is not a multiple of the {self.strike_grid:g}-point strike grid")
        return self


def _score(credit: float, max_loss: float, short_delta: float) -> float:
    """credit / max_loss x (1 - |delta_short|): credit per point of risk, discounted near the money."""
    return credit / max_loss * (1.0 - abs(short_delta))


def _known(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def side_by_features(price: float, features: dict) -> tuple[list[str], str]:
    """The opening-range/VWAP rule: (["P"] | ["C"] | [], why)."""
    hi, lo, vwap = features.get("or_high"), features.get("or_low"), features.get("vwap")
    if not (_known(hi) and _known(lo)):
        return [], "opening range not known yet"
    if not _known(vwap):
        return [], "VWAP not known yet"
    if price > hi and price > vwap:
        return ["P"], f"price {price:g} above OR high {hi:g} and VWAP {vwap:.2f}: sell puts"
    if price < lo and price < vwap:
        return ["C"], f"price {price:g} below OR low {lo:g} and VWAP {vwap:.2f}: sell calls"
    if lo <= price <= hi:
        return [], f"price {price:g} inside the opening range {lo:g}-{hi:g}"
    return [], f"price {price:g} outside the opening range {lo:g}-{hi:g} but VWAP {vwap:.2f} disagrees"


class ZeroDte(Strategy):
    """0DTE SPX/XSP credit spreads every 15 minutes, side by opening range and VWAP, held to settlement or exit."""

    name = "zero_dte"
    Params = ZeroDteParams
    ruleset_version = RULESET_VERSION

    def decision_times(self) -> list[dt.time]:
        p = self.params
        start = p.first_decision.hour * 60 + p.first_decision.minute
        end = p.last_decision.hour * 60 + p.last_decision.minute
        return [dt.time(m // 60, m % 60) for m in range(start, end + 1, p.every_minutes)]

    # ------------------------------------------------------------ decisions
    def evaluate(self, snapshot: ChainSnapshot, context: dict) -> tuple[str, str, list[Candidate], int | None]:
        """Pure selection on one snapshot: (action, reason, candidates, chosen index).

        ``context``: ``k`` (the fill model's slippage fraction, for the credit estimate),
        ``price`` (the underlying the features describe) and the feature values (None = unknown).
        """
        p = self.params
        k = float(context.get("k", 0.30))
        today = snapshot.timestamp.date()
        price = context.get("price", snapshot.underlying_price)
        price = float(price) if _known(price) else float(snapshot.underlying_price)
        if p.side_rule == "opening_range_vwap":
            allowed, why = side_by_features(price, context)
        else:
            allowed, why = {"put": ["P"], "call": ["C"], "both": ["P", "C"]}[p.side_rule], f"side rule {p.side_rule}"
        vix = context.get("vix")
        if p.max_vix is not None and _known(vix) and vix > p.max_vix:
            allowed, why = [], f"VIX {vix:g} above max {p.max_vix:g}"
        candidates: list[Candidate] = []
        listed: set[tuple[int, int]] = set()  # two delta targets can land on one strike: list it once
        bid, ask, strike, delta = snapshot.bid, snapshot.ask, snapshot.strike, snapshot.delta
        expiry = str(today)
        # each (short, long) row pair's description and OCC legs: the listing's (rows, strikes, rights), made at the
        # first decision of a session that lists the pair
        pairs = snapshot.listing_memo("zero_dte.pairs")
        for right in ("P", "C"):
            side_ok = right in allowed
            side_reject = None if side_ok else f"side: no {'puts' if right == 'P' else 'calls'} ({why})"
            # every delta target of the side in one pass, and the quotes of all the legs read at once (as Python
            # floats: what float() of each element gives)
            found = [(target, short) for target, short in
                     zip(p.short_deltas, snapshot.closest_deltas(today, right, p.short_deltas, root=p.root))
                     if short is not None]
            if not found:
                continue
            shorts = [short for _, short in found]
            longs = [[snapshot.offset_row(short, width) for width in p.widths] for short in shorts]
            legs = shorts + [long for row in longs for long in row if long is not None]
            at = np.array(legs, dtype=np.intp)  # (one index array for the four reads)
            quote = dict(zip(legs, zip(bid[at].tolist(), ask[at].tolist(), strike[at].tolist())))
            for (target_delta, short), short_delta, short_longs in zip(found, delta[at[:len(shorts)]].tolist(), longs):
                sb, sa, short_strike = quote[short]
                short_delta_4 = round(short_delta, 4)
                for width, long in zip(p.widths, short_longs):
                    pair = (short, long)
                    if long is None or pair in listed:
                        continue
                    listed.add(pair)
                    lb, la, long_strike = quote[long]
                    mid_credit = (sb + sa) / 2 - (lb + la) / 2
                    ba_width = (sa - sb) + (la - lb)
                    est_credit = mid_credit - k * ba_width
                    max_loss = width - est_credit
                    credit = round(est_credit, 4)
                    details = {
                        "expiry": expiry, "right": right, "target_delta": target_delta, "width": width,
                        "short_strike": short_strike, "long_strike": long_strike,
                        "short_delta": short_delta_4,
                        "mid_credit": round(mid_credit, 4), "est_credit": credit,
                        "bid_ask_width": round(ba_width, 4), "max_loss_points": round(max_loss, 4),
                        "short_row": short, "long_row": long,
                    }
                    if not side_ok:
                        reject = side_reject
                    elif est_credit < p.min_credit - PRICE_EPS:  # equal to the cent passes
                        reject = f"credit {est_credit:.4f} < min {p.min_credit:.2f}"
                    elif ba_width > p.max_bid_ask_width:
                        reject = f"bid/ask width {ba_width:.2f} > max {p.max_bid_ask_width:.2f}"
                    elif max_loss <= 0:
                        reject = "credit exceeds the width"
                    else:
                        reject = None
                    if reject:
                        details["rejected"] = reject
                        score = None
                    else:
                        score = round(_score(est_credit, max_loss, short_delta), 6)
                    named = pairs.get(pair)
                    if named is None:
                        named = pairs[pair] = (f"0DTE {right} {short_strike:g}/{long_strike:g}",
                                               (snapshot.occ_symbol(short), snapshot.occ_symbol(long)))
                    candidates.append(Candidate(description=named[0], legs=named[1], score=score, credit=credit,
                                                details=details))
        # (no candidate: none of today's expiry may be listed; rows of the root's other expiries are not read)
        if not candidates and not len(snapshot.rows(today, root=p.root)):
            return "SKIP", f"no {p.root} expiry today ({today})", [], None
        if not allowed:
            return "SKIP", why, candidates, None
        scored = [(c.score, -i) for i, c in enumerate(candidates) if c.score is not None]
        if not scored:
            rejects = [c.details["rejected"] for c in candidates
                       if c.details["right"] in allowed and "rejected" in c.details]
            return "SKIP", "; ".join([why] + rejects[:3]) if rejects else f"{why}; no quotable strikes", candidates, None
        best = -max(scored)[1]
        return "TRADE", f"{why}; best score {candidates[best].score:.4f}: {candidates[best].description}", \
            candidates, best

    def relevant_rows(self, snapshot: ChainSnapshot) -> np.ndarray:
        """Today's expiry of the root, both sides: all :meth:`evaluate` reads (what a decision stores). Read-only:
        the same array for every snapshot of one listing (it depends on the contracts alone)."""
        root = self.params.root
        memo = snapshot.listing_memo("zero_dte.relevant_rows")
        got = memo.get(root)
        if got is None:
            # (the rows of today's expiry of the root, in row order: the mask (dte == 0) & (root == root)'s rows)
            got = memo[root] = np.sort(snapshot.rows(snapshot.timestamp.date(), root=root, valid_only=False))
            got.flags.writeable = False
        return got

    def decision_context(self, ctx, snapshot: ChainSnapshot) -> dict:
        """What :meth:`evaluate` reads besides the snapshot: slippage fraction, price and features."""
        k = ctx.slippage
        context = {"k": k, "price": float(snapshot.underlying_price), "dropped_quotes": snapshot.dropped["total"]}
        for name, value in ctx.features.items():
            context[name] = value if _known(value) else None
        return context

    def on_decision_time(self, ctx) -> None:
        if skip_if_blocked(ctx, lambda: {"k": ctx.slippage, "price": ctx.underlying_price()},
                           ruleset_version=self.ruleset_version):
            return  # a risk rule blocks every entry now: no chain built
        # (the chain asked is today's expiry of the root: every row is relevant, the snapshot itself is stored)
        snapshot = relevant_slice(ctx.chain(dte=(0, 0), roots=[self.params.root]), self.relevant_rows,
                                  ("zero_dte", self.params.root))
        context = self.decision_context(ctx, snapshot)
        decide_and_enter(ctx, snapshot, context, self.evaluate(snapshot, context),
                         entry=vertical_entry(snapshot, self.params.root, self.params.contracts),
                         ruleset_version=self.ruleset_version)

    # -------------------------------------------------------------- exits
    def manage(self, ctx, trade) -> None:
        p = self.params
        credit_exit(ctx, trade, take_profit_pct=p.take_profit_pct, stop_multiple=p.stop_multiple, trigger=p.exit_trigger,
                    idle=True)  # the only exit rule: manage is skipped until a level can be reached
