"""Shared steps of credit-spread strategies: enter the chosen vertical, exit on profit or stop.

A strategy's pure ``evaluate(snapshot, context)`` returns ``(action, reason, candidates,
chosen)``; a vertical candidate's ``details`` carry ``short_row``, ``long_row`` and
``est_credit``. :func:`decide_and_enter` turns that into a journaled decision and, for a
TRADE the risk checks allow, a limit order at the estimated credit. :func:`credit_exit` is the
take-profit / stop rule on the closing price.
"""

from __future__ import annotations

from typing import Callable

from strikebench.api import Decision
from strikebench.engine.broker import NEVER
from strikebench.options.chain import ChainSnapshot
from strikebench.options.orders import Leg
from strikebench.options.ticks import round_to_tick

__all__ = ["decide_and_enter", "skip_if_blocked", "risk_reason", "credit_exit", "vertical_entry", "vertical_legs",
           "credit_limit", "relevant_slice"]


def risk_reason(vetoes) -> str:
    """A SKIP's reason naming the risk rules that blocked it: ``risk: rule: why; rule: why``."""
    return "risk: " + "; ".join(f"{v.rule}: {v.reason}" for v in vetoes)


def skip_if_blocked(ctx, context: dict | Callable[[], dict], *, ruleset_version: str) -> bool:
    """Record a SKIP and return True when a risk rule blocks every entry of the strategy now (open-trade or
    daily limit, time window, tripped breaker: ``ctx.entries_blocked()``), before any chain is built: a
    decision that cannot be acted on costs no chain, no evaluation and no stored slice. Its reason names the
    rules, as a TRADE the gate turned into a SKIP does. False (nothing recorded) when an entry could pass,
    or when the run records blocked decisions in full (``journal.blocked_decisions: full``).

    ``context`` is the SKIP's context, or a function of no arguments returning it (called only when the SKIP
    is recorded: what it reads is not computed for a decision that goes on)."""
    if ctx.records_blocked_in_full:
        return False
    vetoes = ctx.entries_blocked()
    if not vetoes:
        return False
    ctx.decide("SKIP", risk_reason(vetoes), context=context() if callable(context) else context,
               ruleset_version=ruleset_version)
    return True


def relevant_slice(snapshot: ChainSnapshot, rows_of: Callable[[ChainSnapshot], object], key) -> ChainSnapshot:
    """``snapshot.subset(rows_of(snapshot))``: what a decision stores. ``rows_of`` must depend on the contracts (and the
    date) alone, as a strategy's relevant rows do, and ``key`` name it (the parameters that select the rows). Whether
    that subset is the snapshot itself (every row: the chain asked is what is stored) then depends on the listing
    alone: found at the first decision of a listing (kept in its ``listing_memo``) instead of compared at each."""
    memo = snapshot.listing_memo("relevant_slice")
    whole = memo.get(key)
    if whole is None:
        sliced = snapshot.subset(rows_of(snapshot))
        memo[key] = sliced is snapshot
        return sliced
    return snapshot if whole else snapshot.subset(rows_of(snapshot))


def vertical_legs(snapshot: ChainSnapshot, details: dict) -> tuple[Leg, Leg]:
    """Short leg -1, long leg +1 from a candidate's rows."""
    return Leg(snapshot.contract(details["short_row"]), -1), Leg(snapshot.contract(details["long_row"]), +1)


def credit_limit(est_credit: float, root: str) -> float:
    """Signed net limit for a credit estimate, on the complex-order tick, rounded to less credit."""
    return float(round_to_tick(-est_credit, root, direction="up", complex_order=True))


def vertical_entry(snapshot: ChainSnapshot, root: str, contracts: int):
    """The entry of a vertical candidate: short -1 / long +1, ``contracts`` combos, limit at the estimated credit."""
    return lambda details: (vertical_legs(snapshot, details), contracts, credit_limit(details["est_credit"], root))


def decide_and_enter(ctx, snapshot: ChainSnapshot, context: dict, evaluation: tuple, *, entry,
                     ruleset_version: str, reason: str = "entry"):
    """Record the decision (a TRADE vetoed by a risk check becomes a SKIP naming the rule) and send the entry.

    ``entry(details) -> (legs, quantity, limit)`` builds the order of the chosen candidate
    (:func:`vertical_entry` for a vertical). Returns ``(decision, order)``; ``order`` is None unless
    an entry was sent.
    """
    action, why, candidates, chosen = evaluation
    legs = quantity = limit = None
    if action == "TRADE":
        legs, quantity, limit = entry(candidates[chosen].details)
        vetoes = ctx.would_veto(legs, quantity, limit=limit)
        if vetoes:
            action, why = "SKIP", risk_reason(vetoes)
    decision: Decision = ctx.decide(action, why, candidates=candidates, chosen=chosen, snapshot=snapshot,
                                    context=context, ruleset_version=ruleset_version)
    order = None
    if action == "TRADE":
        order = ctx.open_trade(legs, quantity, limit=limit, reason=reason, decision=decision)
    return decision, order


#: a billionth of a dollar: below any price difference (a cent), above float noise
PRICE_EPS = 1e-9


def credit_exit(ctx, trade, *, take_profit_pct: float, stop_multiple: float, trigger: str = "executable",
                idle: bool = False) -> bool:
    """Close ``trade`` when closing costs <= (1 - take_profit_pct) x credit or >= stop_multiple x credit.

    ``trigger`` is "executable" (the fill model's closing price) or "mid". Returns True when an
    exit was sent (or one is already working). ``idle=True`` when this is the only exit rule of the
    caller's ``manage``: on a bar where no level is reached it tells the engine the next bar where
    one is (``ctx.idle_until(..., own="trade")``: the rule reads only the trade's own orders and fills and the
    session's quotes), so ``manage`` is not called for it on the bars in between, whatever other strategies and
    the strategy's other trades do.
    """
    if ctx.has_pending_exit(trade):
        if idle:  # nothing to do until that order fills, expires or is cancelled (an event of this strategy)
            ctx.idle_until(trade, NEVER, own="trade")
        return True
    credit = trade.entry_credit
    # the levels are prices: a cost that equals one to the cent meets it, whatever float noise the product has
    # (3 x 0.10 is 0.30000000000000004 in binary, and a 0.30 stop must fire on the bar it is 0.30)
    low = (1.0 - take_profit_pct) * credit + PRICE_EPS
    high = stop_multiple * credit - PRICE_EPS
    if trigger == "executable" and not ctx.close_price_outside(trade, low, high):
        if idle:  # the rule reads this trade's orders and fills and the session's quotes only
            ctx.idle_until(trade, ctx.next_bar_outside(trade, low, high), own="trade")
        return False  # neither level reached this bar (compared for the whole session at once)
    cost = ctx.close_price(trade) if trigger == "executable" else -ctx.mark(trade)
    if cost is None or cost != cost:  # no usable quote this bar
        return False
    if cost <= low:
        ctx.close_trade(trade, "take_profit")
        return True
    if cost >= high:
        ctx.close_trade(trade, "stop_loss")
        return True
    return False
