"""What a vertical-spread candidate would have done: entry, take profit or stop, or settlement.

The rules are the engine's, step for step (``strikebench.engine``, ``strategies/spreads.py``):

* the entry is a DAY limit order at the candidate's limit, sent at the decision's bar; it fills at the
  first bar from there at which the fill model's price (one rule: ``strikebench.options.fills``) is
  within the limit, or never;
* an entry filled at the decision's bar is first checked for exit at the next bar; one filled later
  (by the broker at the start of a bar) is checked at that same bar;
* at each bar, the closing price (the fill model's price of the reversed combo) at or under
  ``(1 - take_profit_pct) x credit`` closes it (take_profit), at or over ``stop_multiple x credit``
  closes it (stop_loss), a market order filled at that price;
* not closed by its expiry, it is cash-settled on the market's settlement value;
* the money goes through :class:`strikebench.portfolio.Portfolio` (integer cents, the commission
  schedule's fees), so a simulated P&L is the one the engine books.

Quotes are asked once per session for every contract any live candidate holds, and every candidate's
entry and exit bars are found with array comparisons over the session's minutes. A buying-power
refusal and other strategies' orders are not simulated: a counterfactual is one trade on its own.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from strikebench.options.contracts import SettlementStyle
from strikebench.options.fills import combo_pricing, settle_fill_prices, tradeable
from strikebench.options.orders import Fill, Leg, Order, OrderType
from strikebench.portfolio import Portfolio

__all__ = ["Spec", "Outcome", "simulate"]

_EPS = 1e-9  # strategies.spreads.PRICE_EPS


@dataclass
class Spec:
    """One candidate to simulate: opening legs (short -1, long +1), combos, signed limit, exit rule."""

    decided_at: pd.Timestamp  # the decision's bar label, tz-aware
    legs: tuple[Leg, ...]
    quantity: int
    limit: float  # signed net per combo (negative = credit)
    take_profit_pct: float
    stop_multiple: float


@dataclass
class Outcome:
    filled: bool = False
    resolved: bool = False  # False: the market ends before the trade did
    opened_at: pd.Timestamp | None = None
    entry_price: float | None = None  # signed
    closed_at: pd.Timestamp | None = None
    exit_reason: str = ""
    exit_price: float | None = None
    pnl_cents: int | None = None
    fees_cents: int = 0


@dataclass
class _State:
    spec: Spec
    out: Outcome
    contracts: tuple
    expiry: dt.date
    phase: str = "pending"  # pending -> open (-> residual: exited, no-bid longs left to expire) -> done
    portfolio: Portfolio = field(default_factory=lambda: Portfolio(0.0))
    order: Order | None = None
    start: int = 0  # first bar to check for exit in the current session


def _curve(fill_model, legs, bid, ask, *, limit, as_of, order) -> np.ndarray:
    """Fill price per minute of ``legs`` (NaN where it does not fill), by the broker's rule."""
    from strikebench.engine.broker import _has_model_price

    ratios = np.array([leg.ratio for leg in legs], dtype=np.float64)
    at_limit = bool(getattr(fill_model, "fills_at_limit", False)) and limit is not None
    if _has_model_price(fill_model):
        usable = tradeable(ratios, bid, ask)
        with np.errstate(invalid="ignore"):
            raw = np.where(usable, fill_model.model_price(ratios, bid, ask), 0.0)
        price = settle_fill_prices(combo_pricing(legs, as_of=as_of), raw, bid, ask, limit=limit, at_limit=at_limit)
        return np.where(usable, price, np.nan)
    return np.array([np.nan if (p := fill_model.fill_price(order, bid[i], ask[i])) is None else p
                     for i in range(len(bid))])


def _fill(state: _State, order: Order, price: float, at: pd.Timestamp, commission) -> None:
    fees = commission.fees(order, order.quantity)
    fill = Fill(fill_id=f"{order.client_id}-F", client_id=order.client_id, filled_at=at.to_pydatetime(),
                quantity=order.quantity, net_price=float(price), leg_prices=tuple(0.0 for _ in order.legs), fees=fees)
    state.portfolio.apply_fill(order, fill)


def simulate(market, specs: list[Spec], fill_model, commission, *, sessions: list[dt.date] | None = None,
             progress=None) -> list[Outcome]:
    """The outcome of each of ``specs`` on ``market`` (see the module doc), in order."""
    if sessions is None:
        sessions = [pd.Timestamp(d).date() for d in market.sessions()]
    states = []
    by_day: dict[dt.date, list[_State]] = defaultdict(list)
    for spec in specs:
        contracts = tuple(leg.contract for leg in spec.legs)
        st = _State(spec, Outcome(), contracts, min(c.expiry for c in contracts))
        states.append(st)
        by_day[pd.Timestamp(spec.decided_at).date()].append(st)
    if not states:
        return []
    first = min(by_day)
    last_decision = max(by_day)
    live: list[_State] = []
    for day in sessions:
        if day < first:
            continue
        starting = by_day.get(day, [])
        live = [s for s in live if s.phase != "done"] + starting
        if not live:
            if day > last_decision:
                break
            continue
        # an AM-settled trade settles at the open of its expiry session, before any bar
        for s in live:
            if s.phase in ("open", "residual") and s.expiry == day and all(
                    c.settlement_style == SettlementStyle.AM for c in s.contracts):
                _settle(market, s, pd.Timestamp(day).tz_localize("America/New_York") + pd.Timedelta(hours=9, minutes=30))
        live = [s for s in live if s.phase != "done"]
        if not live:
            continue
        union = sorted({c for s in live for c in s.contracts})
        col = {c: j for j, c in enumerate(union)}
        q = market.leg_quotes(union, day)
        times = pd.to_datetime(np.asarray(q.times, dtype="int64"), utc=True).tz_convert("America/New_York")
        for s in live:
            idx = [col[c] for c in s.contracts]
            bid, ask = q.bid[:, idx], q.ask[:, idx]
            if s.phase == "pending":
                _enter(s, bid, ask, q, times, fill_model, commission)
            if s.phase == "open":
                _manage(s, bid, ask, times, day, fill_model, commission)
            if s.phase in ("open", "residual") and day >= s.expiry:
                close = times[-1] + pd.Timedelta(minutes=1)
                _settle(market, s, close)
            s.start = 0
        if progress is not None:
            progress(day)
    for s in states:  # trades still open when the market ends are not resolved
        if s.phase == "done":
            s.out.resolved = True
        elif s.phase == "pending":  # its decision day is not in the market
            s.out.resolved = False
    return [s.out for s in states]


def _enter(s: _State, bid, ask, q, times, fill_model, commission) -> None:
    spec = s.spec
    at = pd.Timestamp(spec.decided_at)
    order = Order(client_id="_cf", legs=spec.legs, quantity=spec.quantity, order_type=OrderType.LIMIT,
                  limit_price=spec.limit, trade_id="_cf", opens=True, created_at=at.to_pydatetime(), reason="entry")
    i0 = q.index_at(at.value)
    curve = _curve(fill_model, spec.legs, bid, ask, limit=order.limit_price, as_of=order.created_at, order=order)
    ok = np.flatnonzero(np.isfinite(curve[i0:]))
    if not ok.size:  # the DAY order expires unfilled
        s.phase = "done"
        s.out.resolved = True
        return
    j = i0 + int(ok[0])
    _fill(s, order, float(curve[j]), times[j], commission)
    s.out.filled, s.out.opened_at, s.out.entry_price = True, times[j], float(curve[j])
    s.phase = "open"
    s.start = j + 1 if j == i0 else j  # filled at the decision: manage ran before it this bar


def _manage(s: _State, bid, ask, times, day, fill_model, commission) -> None:
    spec = s.spec
    credit = -s.out.entry_price
    low = (1.0 - spec.take_profit_pct) * credit + _EPS
    high = spec.stop_multiple * credit - _EPS
    from strikebench.engine.broker import closing_curve, closing_order_legs

    closing = tuple(leg.reversed() for leg in spec.legs)
    curve = closing_curve(fill_model, closing, bid, ask, as_of=day)  # the broker's exit price, legs left out and all
    with np.errstate(invalid="ignore"):
        hit = (curve <= low) | (curve >= high)
    hit[: s.start] = False
    if not hit.any():
        return
    k = int(np.argmax(hit))
    cost = float(curve[k])
    reason = "take_profit" if cost <= low else "stop_loss"
    # the order the engine's close_trade sends: long legs with no bid left out (they settle at expiry)
    position = tuple(Leg(leg.contract, leg.ratio * spec.quantity) for leg in closing)
    legs, qty, keep = closing_order_legs(position, bid[k], ask[k])
    order = Order(client_id="_cfx", legs=legs, quantity=qty, order_type=OrderType.MARKET,
                  trade_id="_cf", opens=False, created_at=times[k].to_pydatetime(), reason=reason)
    _fill(s, order, cost * spec.quantity / qty, times[k], commission)
    if keep.all():
        _finish(s, times[k], reason, cost)
    else:
        s.phase = "residual"  # exit done; the legs left out settle at expiry (then the trade closes)


def _settle(market, s: _State, at: pd.Timestamp) -> None:
    values = {c: float(market.settlement_value(c)) for c in s.contracts}
    s.portfolio.settle(s.contracts, values, at.to_pydatetime())
    rec = s.portfolio.all_trades()[0]
    _finish(s, at, rec.exit_reason or "settlement", rec.exit_price)


def _finish(s: _State, at, reason: str, exit_price) -> None:
    rec = s.portfolio.all_trades()[0]
    s.out.closed_at, s.out.exit_reason, s.out.exit_price = pd.Timestamp(at), reason, exit_price
    s.out.pnl_cents = int(round(rec.realized_pnl * 100))
    s.out.fees_cents = int(round(rec.fees * 100))
    s.out.resolved = True
    s.phase = "done"
