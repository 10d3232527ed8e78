"""The backtest OptionsBroker: a ``bt.BrokerBase`` that knows multi-leg option orders.

Backtrader owns the clock; this broker owns orders, fills, the portfolio and
marks. The engine calls :meth:`OptionsBroker.on_bar` once per bar with the bar's
index into the session's minute grid; working orders are offered to the fill
model against the legs' quotes of that minute, and the account is marked at mid.

Marking is an array lookup: when the set of open trades changes (or a session
starts) the broker asks the chain source for the legs' quotes for the whole
session, once per contract (:class:`QuoteBook`; every open leg in one call at a
session start), and precomputes the open positions' value for every minute.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
from typing import Callable, Sequence

import backtrader as bt
import numpy as np

from strikebench.options.chain import LegQuotes, usable_quotes
from strikebench.options.contracts import OptionContract, last_trade_time
from strikebench.options.fills import (
    allocate_legs,
    combo_pricing,
    left_legs,
    reduced_combo,
    settle_fill_prices,
    tradeable,
)
from strikebench.options.orders import Fill, Order, OrderStatus, OrderType, TradeRecord
from strikebench.options.ticks import tick_rule_for
from strikebench.portfolio import Portfolio

__all__ = ["OptionsBroker", "QuoteBook", "OrderTransition", "NEVER", "closing_curve", "closing_order_legs"]

NEVER = 1 << 40  # a bar no session reaches


class QuoteBook:
    """Per-session cache of leg quotes from the chain source, kept per contract.

    The chain source is asked for a session's quotes once per contract, never again for a contract it
    already quoted that session: :meth:`prefetch` asks for many contracts in one call (the broker does it at
    a session start for every open leg: one call instead of one per trade), and a leg set of which some legs
    are known (an exit order of a held trade, an order reusing a leg) asks for its new legs only. A leg set's
    :class:`LegQuotes` is assembled from its legs' columns, each exactly what the source returns for that
    contract (a source quotes each contract independently of the others it is asked for: the synthetic,
    file and model markets do; tests/test_quote_book.py checks the synthetic and model markets). Contracts
    are asked together only with contracts of the same underlying (a file source lays a call's minutes on
    its first contract's underlying), and a leg set that mixes underlyings is asked as a whole, as it
    always was.

    A live source (one with ``bar_closed``: its :class:`LegQuotes` fill in as bars close) is asked per leg
    set and its objects are handed out as they are, so they keep filling in; so is a source that returns
    its own kind of :class:`LegQuotes`.
    """

    def __init__(self, source):
        self.source = source
        self.day: dt.date | None = None
        self._cache: dict[tuple[OptionContract, ...], LegQuotes] = {}
        #: contract -> (the LegQuotes that quoted it this session, its column there)
        self._cols: dict[OptionContract, tuple[LegQuotes, int]] = {}
        self._per_contract = not callable(getattr(source, "bar_closed", None))

    def start_session(self, day: dt.date) -> None:
        self.day = day
        self._cache.clear()
        self._cols.clear()

    def prefetch(self, contracts: Sequence[OptionContract]) -> None:
        """Quote ``contracts`` for the session now, one call per underlying for those not quoted yet (what
        :meth:`legs` then asks of them costs no call)."""
        if self._per_contract and self.day is not None:
            cols = self._cols
            missing = [c for c in dict.fromkeys(contracts) if c not in cols]
            if missing:
                self._fetch(missing)

    def _fetch(self, contracts: list) -> None:
        """Ask the source for ``contracts`` (distinct, none quoted yet), one call per underlying."""
        groups: dict[str, list] = {}
        for c in contracts:
            groups.setdefault(c.underlying, []).append(c)
        for group in groups.values():
            q = self.source.leg_quotes(list(group), self.day)
            if type(q) is not LegQuotes:  # a source's own kind of quotes: not split into columns
                self._per_contract = False
                return
            self._cache.setdefault(tuple(group), q)
            for j, c in enumerate(group):
                self._cols[c] = (q, j)

    def legs(self, contracts: Sequence[OptionContract]) -> LegQuotes:
        key = tuple(contracts)
        q = self._cache.get(key)
        if q is None:
            if self._per_contract and key:
                q = self._assemble(key)
            if q is None:
                q = self.source.leg_quotes(list(key), self.day)
            self._cache[key] = q
        return q

    def _assemble(self, key: tuple) -> LegQuotes | None:
        """The quotes of ``key`` from its legs' columns (quoting the legs not quoted yet); None when the leg
        set mixes underlyings (asked as a whole)."""
        und = key[0].underlying
        for c in key:
            if c.underlying != und:
                return None
        cols = self._cols
        missing = [c for c in dict.fromkeys(key) if c not in cols]
        if missing:
            self._fetch(missing)
            if not self._per_contract:
                return None
        got = [cols[c] for c in key]
        q0 = got[0][0]
        if len(key) == q0.bid.shape[1] and all(q is q0 and j == k for k, (q, j) in enumerate(got)):
            return q0  # the one call that quoted exactly these legs, in this order
        n = q0.bid.shape[0]
        bid = np.empty((n, len(key)))
        ask = np.empty((n, len(key)))
        for k, (q, j) in enumerate(got):
            bid[:, k] = q.bid[:, j]
            ask[:, k] = q.ask[:, j]
        return LegQuotes(contracts=key, times=q0.times, bid=bid, ask=ask)

    def bid_ask(self, contracts: Sequence[OptionContract], i: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.legs(contracts)
        i = min(i, len(q.times) - 1)
        return q.bid[i], q.ask[i]


class OrderTransition:
    """One status change of an order (what ``on_order_event`` receives)."""

    __slots__ = ("client_id", "previous", "status", "at", "reason")

    def __init__(self, client_id: str, previous: OrderStatus, status: OrderStatus, at: dt.datetime, reason: str):
        self.client_id, self.previous, self.status, self.at, self.reason = client_id, previous, status, at, reason

    def __repr__(self) -> str:
        return f"OrderTransition({self.client_id}: {self.previous.value} -> {self.status.value} at {self.at}, {self.reason!r})"


class OptionsBroker(bt.BrokerBase):
    """Multi-leg option orders against chain quotes; cash settlement; marks at mid."""

    def __init__(self, portfolio: Portfolio, fill_model, commission, quotes: QuoteBook,
                 on_transition: Callable[[Order, OrderTransition], None] | None = None,
                 on_fill: Callable[[Order, Fill, TradeRecord], None] | None = None):
        super().__init__()
        self.portfolio = portfolio
        self.fill_model = fill_model
        self.commission = commission
        self.quotes = quotes
        self.orders: dict[str, Order] = {}
        self._working: list[Order] = []
        self._on_transition = on_transition or (lambda order, tr: None)
        self._on_fill = on_fill or (lambda order, fill, trade: None)
        self._fill_ids = itertools.count(1)
        self._position_value = np.zeros(1)
        self._value = portfolio.cash
        self._bar = 0
        self._now: dt.datetime | None = None
        self._close_curves: dict[tuple, np.ndarray] = {}  # a trade's legs -> its closing curve this session
        #: the closing legs (a trade's legs reversed) -> the same curve: the fill price of a market order on those
        #: legs on the minutes its combo trades whole (see :meth:`fill_price`)
        self._order_curves: dict[tuple, np.ndarray] = {}
        #: (trade, low, high) -> (per-minute "close price outside", the bar before which it is exact)
        self._outside: dict[tuple, tuple] = {}
        self._next_outside: dict[tuple, tuple] = {}  # (trade, low, high) -> (its outside minutes, minutes, exact)
        #: id of a closing curve priced up to a minute where legs may be left out -> (that minute, closing legs,
        #: the curve's first minute priced, its quotes, the curve): the rest is priced when a bar from that minute
        #: is asked
        self._curve_rest: dict[int, tuple] = {}
        self._marks: dict[tuple, np.ndarray] = {}
        self._values: dict[tuple, np.ndarray] = {}  # (legs, combos held per leg) -> value curve this session
        self._trade_values: dict[str, tuple] = {}  # trade id -> (combos held per leg, its value curve) this session
        #: the curves last summed, in order, and their running totals (see _running_totals; None: sum them all again)
        self._summed: tuple[list, list | None] = ([], None)
        self._last_mark: dict[OptionContract, float] = {}  # last usable mid of every open leg, across sessions
        #: the fill model keeps FillModel.fill_price: its answer is already by the one rule, and a function of
        #: the order and this bar's quotes (asked once per order and bar, see :meth:`fill_price`)
        self._rule_inside = _keeps_fill_price(fill_model)
        self._priced: tuple | None = None  # (_pricing_key, session day, bar, answer) of the last fill_price asked
        self._last_trade: dict[OptionContract, dt.datetime] = {}  # a contract's last trade time (plain datetime)

    # ----------------------------------------------------------- bt interface
    def getcash(self):
        return self.portfolio.cash

    def getvalue(self, datas=None):
        return self._value

    @property
    def startingcash(self) -> float:  # read by Backtrader's writers and analyzers
        return self.portfolio.initial_cash

    def get_notification(self):
        return None

    def next(self):
        pass

    def getposition(self, data):  # Backtrader asks for positions of its feeds: options are not feeds
        return bt.Position()

    # ---------------------------------------------------------------- session
    def start_session(self, day: dt.date) -> None:
        self._keep_last_marks()
        self.quotes.start_session(day)
        # every open leg quoted for the session in one call (per underlying), not one call per trade
        self.quotes.prefetch([leg.contract for t in self.portfolio.open_trades() for leg in t.legs])
        self.quotes_filled_in()

    def quotes_filled_in(self) -> None:
        """Drop the session curves computed from the session's quotes (closing curves, marks, position values) and
        mark the open positions again from the quotes as they are now: at a session start, and after every bar
        that closes on a live market (its quotes fill in as bars close: a curve computed earlier holds the last
        mark carried forward, so the account value would stay where it was at the last fill)."""
        self.forget_exit_curves()
        self._marks.clear()
        self._values.clear()
        self._trade_values.clear()
        self._summed = ([], None)
        self._remark()

    def _keep_last_marks(self) -> None:
        """Before a new session: remember the last mark of every open leg (a leg that is not quoted
        usably for a whole session keeps it, instead of being valued at zero)."""
        if self.quotes.day is None:
            return
        for trade in self.portfolio.open_trades():
            contracts = [leg.contract for leg in trade.legs]
            marks = self._leg_marks(contracts)
            for j, c in enumerate(contracts):
                if np.isfinite(marks[-1, j]):
                    self._last_mark[c] = float(marks[-1, j])
        open_contracts = {leg.contract for t in self.portfolio.open_trades() for leg in t.legs}
        for c in [c for c in self._last_mark if c not in open_contracts]:
            del self._last_mark[c]

    def on_bar(self, i: int, now: dt.datetime) -> None:
        """Bar ``i`` of the session (its label ``now``): try working orders, then mark."""
        self._bar, self._now = i, now
        if self._working:
            for order in list(self._working):
                self._try_fill(order)
        self._revalue()

    def end_session(self, now: dt.datetime) -> None:
        """Expire working DAY orders at the session's end, and GTC orders whose legs stopped trading."""
        for order in list(self._working):
            if order.tif.value == "day":
                self._transition(order, OrderStatus.EXPIRED, "day order not filled by the close", now)
            elif any(now >= last_trade_time(leg.contract) for leg in order.legs):
                self._transition(order, OrderStatus.EXPIRED, "a leg's contract stopped trading", now)

    def settle(self, contracts: Sequence[OptionContract], values: dict[OptionContract, float],
               at: dt.datetime) -> list[TradeRecord]:
        closed = self.portfolio.settle(contracts, values, at)
        if closed:
            self._remark()
            self._revalue()
        return closed

    # ----------------------------------------------------------------- orders
    def submit(self, order: Order, now: dt.datetime) -> Order:
        """Accept a new order (risk checks already passed) and try to fill it at once."""
        if order.client_id in self.orders:
            raise ValueError(f"order id {order.client_id} was already submitted")
        self._now = now
        self.orders[order.client_id] = order
        self._transition(order, OrderStatus.SUBMITTED, "", now)
        last = self._last_trade
        for leg in order.legs:
            end = last.get(leg.contract)
            if end is None:  # a plain datetime (comparing one with a pandas Timestamp costs several microseconds)
                end = last[leg.contract] = last_trade_time(leg.contract).to_pydatetime()
            if now >= end:
                self._transition(order, OrderStatus.REJECTED,
                                 f"{leg.contract.occ_symbol.strip()} no longer trades (last trade "
                                 f"{last_trade_time(leg.contract):%Y-%m-%d %H:%M})", now)
                return order
        self._transition(order, OrderStatus.ACCEPTED, "", now)
        self._working.append(order)
        self._try_fill(order)
        return order

    def cancel(self, client_id: str, now: dt.datetime, reason: str = "cancelled by strategy") -> bool:
        order = self.orders.get(client_id)
        if order is None or not order.is_working:
            return False
        self._transition(order, OrderStatus.CANCELLED, reason, now)
        return True

    def working_orders(self) -> list[Order]:
        return list(self._working)

    def close_price(self, trade: TradeRecord) -> float | None:
        """Net price the fill model would close ``trade`` at this bar (None if unquotable).

        Computed for the whole session at once (vectorized over minutes) the first
        time it is asked, so checking exits every bar is an array lookup.
        """
        curve = self._close_curves.get(trade.legs)
        if curve is None:
            curve = self._close_curve(trade)
        i = min(self._bar, len(curve) - 1)
        if self._curve_rest and i >= self._exact_before(curve):
            self._finish_curve(curve)
        price = curve[i]
        return None if price != price else float(price)

    def close_price_outside(self, trade: TradeRecord, low: float, high: float) -> bool:
        """True when this bar's closing price (:meth:`close_price`) is <= ``low`` or >= ``high``.

        The comparison is made for every minute of the session at once, the first time a (trade, low,
        high) is asked in the session; each bar is then one array read (an exit rule checked every bar
        costs the same as reading a flag). An unquotable minute is never outside.
        """
        key = (trade.trade_id, low, high)
        got = self._outside.get(key)
        i = self._bar
        if got is None or i >= got[1]:
            got = self._outside_curve(key, trade, low, high, i)
        hit = got[0]
        return bool(hit[min(i, len(hit) - 1)])

    def _outside_curve(self, key: tuple, trade: TradeRecord, low: float, high: float, bar: int) -> tuple:
        """(the session's per-minute comparison of ``trade``'s closing curve with ``low`` and ``high``, the bar before
        which it is exact: ``NEVER`` when every bar's is), exact at ``bar`` (the curve's minutes where legs may be left
        out are priced when a bar from the first of them is asked: :meth:`_close_curve`)."""
        curve = self._close_curves.get(trade.legs)
        if curve is None:
            curve = self._close_curve(trade)
        exact = NEVER
        if self._curve_rest:
            exact = self._exact_before(curve)
            if min(bar, len(curve) - 1) >= exact:
                self._finish_curve(curve)
                exact = NEVER
        with np.errstate(invalid="ignore"):
            hit = (curve <= low) | (curve >= high)
        got = self._outside[key] = (hit, exact)
        self._next_outside.pop(key, None)
        return got

    def next_bar_outside(self, trade: TradeRecord, low: float, high: float) -> int:
        """The first bar of the session after this one at which :meth:`close_price_outside` is True
        (bars past the quotes read the last minute, as :meth:`close_price_outside` does); ``NEVER``
        when there is none.

        Found once per (trade, low, high) and session: the minutes that are outside, in order (the session's
        comparison read once), so each ask is a bisection of that list. A minute found before the first one
        where legs may be left out is the answer without pricing those (:meth:`_close_curve`)."""
        key = (trade.trade_id, low, high)
        got = self._next_outside.get(key)
        if got is None:
            o = self._outside.get(key)
            if o is None:
                o = self._outside_curve(key, trade, low, high, self._bar)
            hit, exact = o
            got = self._next_outside[key] = (_FLATNONZERO(hit).tolist(), len(hit), exact)
        outs, n, exact = got
        nxt = self._bar + 1
        if nxt < n:
            k = bisect.bisect_left(outs, nxt)
            if k < len(outs) and outs[k] < exact:
                return outs[k]
            if exact == NEVER:
                return NEVER
        elif exact == NEVER:
            if outs and outs[-1] == n - 1:  # only past the quotes: the last minute repeats
                return nxt
            return NEVER
        # the answer reads minutes not priced yet: price them, then ask again (exact on every bar)
        self._outside_curve(key, trade, low, high, NEVER)
        return self.next_bar_outside(trade, low, high)

    def _exact_before(self, curve: np.ndarray) -> int:
        """The first minute of ``curve`` not priced yet (``NEVER``: none)."""
        rest = self._curve_rest.get(id(curve))
        return NEVER if rest is None or rest[4] is not curve else rest[0]

    def _finish_curve(self, curve: np.ndarray) -> None:
        """Price the minutes of ``curve`` from the first one where legs may be left out (:func:`_leave_legs_out`)."""
        rest = self._curve_rest.pop(id(curve), None)
        if rest is not None and rest[4] is curve:
            at, closing, start, q, _ = rest
            _leave_legs_out(curve[start:], at - start, self.fill_model, closing, q.bid[start:], q.ask[start:],
                            as_of=self.quotes.day)

    def forget_exit_curves(self) -> None:
        """Drop the session's closing curves and what was compared on them (a new session; a live market
        whose quotes just filled in with a closed bar)."""
        self._close_curves.clear()
        self._order_curves.clear()
        self._outside.clear()
        self._next_outside.clear()
        self._curve_rest.clear()

    def has_working_exit(self, trade_id: str) -> bool:
        """True while a closing order of ``trade_id`` is working."""
        for o in self._working:
            if not o.opens and o.trade_id == trade_id:
                return True
        return False

    def _close_curve(self, trade: TradeRecord) -> np.ndarray:
        """The session's closing curve of ``trade`` (:func:`closing_curve`), kept for the session by its legs:
        a trade on the same legs as another (a strategy re-entering the same spread) shares it.

        Priced from this bar on: a session's bars are asked in order and the curve is dropped with the
        session, so the minutes before the first ask are never read (NaN: never outside). Each minute's
        price depends on that minute's quotes alone, so the minutes priced are the whole curve's.

        The minutes from the first one at which a leg may be left out (a sold leg not bid above zero) hold the
        price of the order with every leg (NaN where a leg is left out) until a bar from that minute is read
        through :meth:`close_price`, :meth:`close_price_outside` or :meth:`next_bar_outside` (an exit found
        before it needs none of them); those minutes are then priced (:meth:`_finish_curve`). A market order's
        price read off the curve (:meth:`_curve_price`) is asked only where the order's combo trades whole,
        where the minute is the same either way."""
        q = self.quotes.legs([leg.contract for leg in trade.legs])
        closing = tuple(leg.reversed() for leg in trade.legs)
        start = min(self._bar, len(q.bid) - 1)
        if start <= 0:
            start = 0
            curve, rest = _closing_curve_part(self.fill_model, closing, q.bid, q.ask, as_of=self.quotes.day)
        else:
            curve = np.full(len(q.bid), np.nan)
            curve[start:], rest = _closing_curve_part(self.fill_model, closing, q.bid[start:], q.ask[start:],
                                                      as_of=self.quotes.day)
        if start + rest < len(curve):
            # keyed by id, the curve itself kept in the entry: an id is only this curve's while it lives
            self._curve_rest[id(curve)] = (start + rest, closing, start, q, curve)
        self._close_curves[trade.legs] = curve
        self._order_curves[closing] = curve
        return curve

    def mark(self, trade: TradeRecord) -> float:
        """Mid value of one combo of ``trade`` at this bar (signed, index points); a leg without a
        usable quote now is valued at its last usable mid (see :meth:`_leg_marks`)."""
        marks = self._leg_marks([leg.contract for leg in trade.legs])
        i = min(self._bar, len(marks) - 1)
        return float(np.dot([leg.ratio for leg in trade.legs], marks[i]))

    def held_value(self, trade: TradeRecord, held: Sequence[int]) -> float:
        """Mid value at this bar of the legs of ``trade`` still held (``held`` combos per leg, as
        :meth:`Portfolio.legs_open` gives), in index points (x the multiplier for dollars)."""
        marks = self._leg_marks([leg.contract for leg in trade.legs])
        i = min(self._bar, len(marks) - 1)
        return float(np.dot([leg.ratio * n for leg, n in zip(trade.legs, held)], marks[i]))

    def _leg_marks(self, contracts: Sequence[OptionContract]) -> np.ndarray:
        """Each leg's mark for every minute of the session: its mid where the quote is usable
        (finite, uncrossed, positive ask; a zero bid is usable), else its last usable mid, carried
        across sessions; a leg never quoted usably yet is marked at its first usable mid."""
        key = tuple(contracts)
        marks = self._marks.get(key)
        if marks is None:
            q = self.quotes.legs(contracts)
            usable = usable_quotes(q.bid, q.ask)
            if usable.all():  # every minute of every leg: its mids, nothing to carry (read only, as every mark)
                marks = q.mid
            else:
                with np.errstate(invalid="ignore"):
                    mid = np.where(usable, q.mid, np.nan)
                last = np.array([self._last_mark.get(c, np.nan) for c in contracts])
                marks = _carry_forward(mid, last)
            self._marks[key] = marks
        return marks

    # -------------------------------------------------------------- internals
    def _transition(self, order: Order, status: OrderStatus, reason: str, now: dt.datetime) -> None:
        previous = order.status
        order.status = status
        order.status_reason = reason
        if status.is_final and order in self._working:
            self._working.remove(order)
        self._on_transition(order, OrderTransition(order.client_id, previous, status, now, reason))

    def fill_price(self, order: Order, bid: np.ndarray | None = None, ask: np.ndarray | None = None) -> float | None:
        """``fill_model.fill_price(order, bid, ask)`` on this bar's quotes of the order's legs (``bid``/``ask``:
        those quotes when the caller has them).

        A fill model that keeps :meth:`FillModel.fill_price <strikebench.api.FillModel.fill_price>` answers by
        the one rule from its ``model_price`` of the quotes, and reads of the order only what :func:`_pricing_key`
        holds: the answer is kept for that key and bar, so the risk check's estimate of a market order and its
        fill attempt on the same bar ask the model once, and so does an entry's would-be order (``would_veto``'s
        probe) and the order then sent on the same bar."""
        keep = self._rule_inside
        if keep:
            key = _pricing_key(order)
            got = self._priced
            if got is not None and got[2] == self._bar and got[1] == self.quotes.day and got[0] == key:
                return got[3]
        if bid is None:
            bid, ask = self.quotes.bid_ask([leg.contract for leg in order.legs], self._bar)
        price = self._curve_price(order, bid, ask) if keep and order.order_type is OrderType.MARKET else None
        if price is None:
            price = self.fill_model.fill_price(order, bid, ask)
        if keep:
            self._priced = (key, self.quotes.day, self._bar, price)
        return price

    def _curve_price(self, order: Order, bid: np.ndarray, ask: np.ndarray) -> float | None:
        """The fill price of a market order on the legs of a closing curve priced this session (an exit the rule
        found on that curve), read off the curve; None when that is not the price (then ask the model).

        The curve's minute is the market order's fill price when the order's combo trades whole on it (a
        minute where some long legs cannot be sold holds the price of the order without them): the same rule
        on the same quotes (tests/test_exit_curves.py: a combo curve is ``fill_price`` minute by minute, to
        the bit), on the same grid (the tick rule of the order's day is the session's), with a model that
        prices vectorised (``model_price``) and keeps ``fill_price``."""
        curve = self._order_curves.get(order.legs)
        if curve is None or not _has_model_price(self.fill_model):
            return None
        root = order.legs[0].contract.root
        if tick_rule_for(root, order.created_at) is not tick_rule_for(root, self.quotes.day):
            return None
        p = curve[min(self._bar, len(curve) - 1)]
        if p != p or not tradeable(combo_pricing(order.legs, as_of=order.created_at).ratios, bid, ask):
            return None
        return float(p)

    def _try_fill(self, order: Order) -> None:
        contracts = [leg.contract for leg in order.legs]
        bid, ask = self.quotes.bid_ask(contracts, self._bar)
        price = self.fill_price(order, bid, ask)
        if price is None:
            return
        if not self._rule_inside:
            # whatever a fill model answers, the one rule holds (FillModel.fill_price answers by it already:
            # the rule is idempotent there, tests/test_order_path.py)
            price = settle_fill_prices(combo_pricing(order.legs, as_of=order.created_at), float(price), bid, ask,
                                       limit=order.limit_price if order.order_type == OrderType.LIMIT else None)
            if price != price:
                return
        qty = order.remaining
        fees = self.commission.fees(order, qty)
        if order.opens and order.filled_quantity == 0:
            refusal = self.portfolio.check_buying_power(order, price, fees)
            if refusal:
                self._transition(order, OrderStatus.REJECTED, refusal, self._now)
                return
        leg_prices = allocate_legs(order.legs, bid, ask, price, as_of=self._now)
        bids, asks = bid.tolist(), ask.tolist()  # Python floats (float() of each item: the same values)
        fill = Fill(fill_id=f"{order.client_id}-F{next(self._fill_ids)}", client_id=order.client_id,
                    filled_at=self._now, quantity=qty, net_price=price, leg_prices=leg_prices, fees=fees,
                    leg_quotes=tuple(zip(bids, asks)))
        for c, x, y in zip(contracts, bids, asks):  # the leg's mark when opened, should it never be quoted again
            if c not in self._last_mark and _usable(x, y):
                self._last_mark[c] = (x + y) * 0.5
        order.fills.append(fill)
        order.filled_quantity += qty
        order.avg_fill_price = price
        trade = self.portfolio.apply_fill(order, fill)
        self._transition(order, OrderStatus.FILLED, "", self._now)
        self._remark()
        self._revalue()
        self._on_fill(order, fill, trade)

    def _revalue(self) -> None:
        """Account value at this bar: cash plus the open positions' precomputed mid value."""
        self._value = self.portfolio.cash + float(self._position_value[min(self._bar, len(self._position_value) - 1)])

    def _remark(self) -> None:
        """Precompute the open positions' mid value for every minute of the session.

        Each trade's value curve is kept for the session by (legs, combos held per leg): a fill or a
        settlement recomputes only the trades it changed, then adds every trade's curve in the portfolio's
        order, as before, the running totals of the curves before the first one that changed kept from the last
        time (:func:`_running_totals`: a fill opening a trade adds its curve to the last sum, a closing fill adds
        again only from the trade it closed on): the same additions in the same order."""
        holdings = self.portfolio.open_holdings()
        if not holdings or self.quotes.day is None:
            self._position_value = np.zeros(1)
            self._summed = ([], None)
            return
        values_of = self._values
        per_trade = self._trade_values
        curves = []
        for trade, held in holdings:
            got = per_trade.get(trade.trade_id)
            if got is None or got[0] != held:
                key = (trade.legs, held)
                values = values_of.get(key)
                if values is None:
                    contracts = [leg.contract for leg in trade.legs]
                    mult = trade.legs[0].contract.multiplier
                    # (ratio x combos x multiplier: small integers, exact as floats in either order)
                    weights = np.array([float(leg.ratio * n * mult) for leg, n in zip(trade.legs, held)])
                    values = self._leg_marks(contracts) @ weights
                    values_of[key] = values
                per_trade[trade.trade_id] = got = (held, values)
            curves.append(got[1])
        last, partials = self._summed
        totals = _running_totals(last, partials, curves)
        self._summed = (curves, totals)
        total = totals[-1]
        self._position_value = total if _all_finite(total) else np.nan_to_num(total, nan=0.0)


def _running_totals(last: list, partials: list | None, curves: list) -> list:
    """The running totals of ``curves`` added in order (``curves[0]``, then ``+ curves[1]``, ...), reusing the totals
    ``partials`` of the curves ``last`` summed before up to the first curve that is not the same object: a fill
    opening a trade appends a curve (one addition), a closing fill drops one (the additions from it on); the same
    additions in the same order as summing every curve again."""
    k = 0
    if partials:
        n = min(len(last), len(curves))
        while k < n and last[k] is curves[k]:
            k += 1
    totals = partials[:k] if k else []
    total = totals[-1] if totals else None
    for values in curves[k:]:
        total = values if total is None else total + values
        totals.append(total)
    return totals


def _all_finite(x: np.ndarray) -> bool:
    """``np.isfinite(x).all()`` of a float array: its sum is finite only when every item is (a NaN makes it NaN, an
    infinity one way inf, both ways NaN), so one reduction answers the usual case; a sum that is not (or overflows:
    numpy then warns, as the adds of such curves already did) asks the elements."""
    total = float(_ADD_REDUCE(x))
    return total - total == 0.0 or bool(np.isfinite(x).all())


_ADD_REDUCE = np.add.reduce
_FLATNONZERO = np.flatnonzero


def _usable(bid: float, ask: float) -> bool:
    """``usable_quotes`` of one leg's quote in Python floats."""
    return math.isfinite(bid) and math.isfinite(ask) and bid >= 0.0 and ask > 0.0 and bid <= ask


def _combo_curve(fill_model, legs, bid, ask, *, as_of) -> np.ndarray:
    """Fill price of one combo of ``legs`` (a market order) per minute, by the one rule; NaN where none."""
    ratios = np.array([leg.ratio for leg in legs], dtype=np.float64)
    if _has_model_price(fill_model):  # the same rule as fill_price, for every minute at once
        with np.errstate(invalid="ignore"):
            raw = fill_model.model_price(ratios, bid, ask)
        # a minute whose legs cannot trade is priced 0.0, then NaN, by settle_fill_prices (step 1 of the rule)
        return settle_fill_prices(combo_pricing(legs, as_of=as_of), raw, bid, ask)
    # a fill model without a vectorizable price: ask it minute by minute
    probe = Order(client_id="_probe", legs=tuple(legs), quantity=1, order_type=OrderType.MARKET, opens=False)
    return np.array([np.nan if (p := fill_model.fill_price(probe, bid[i], ask[i])) is None else p
                     for i in range(len(bid))], dtype=np.float64)


def closing_curve(fill_model, closing_legs, bid, ask, *, as_of) -> np.ndarray:
    """What closing one combo costs per minute (signed net price, NaN where it cannot close).

    ``closing_legs`` are the trade's legs reversed, ``bid``/``ask`` their quotes (minutes x legs). On a
    minute where some long legs have no bid (:func:`~strikebench.options.fills.left_legs`) the close is
    the order :func:`closing_order_legs` builds, without them: its fill price (the one rule on the
    legs it trades, on that order's grid) times its ratio factor; a leg left out counts at its bid,
    zero. So an exit rule compares exactly the price the exit order then fills at.
    """
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    curve, rest = _closing_curve_part(fill_model, closing_legs, bid, ask, as_of=as_of)
    if rest < len(curve):
        _leave_legs_out(curve, rest, fill_model, closing_legs, bid, ask, as_of=as_of)
    return curve


def _closing_curve_part(fill_model, closing_legs, bid, ask, *, as_of) -> tuple[np.ndarray, int]:
    """(a new curve, ``rest``): :func:`closing_curve` on the minutes before ``rest``, the first minute at which a
    leg may be left out (a sold leg not bid above zero; the number of minutes when none), and from it on the
    price of the order with every leg, NaN on each minute that leaves a leg out (its sold leg cannot trade).
    :func:`_leave_legs_out` from ``rest`` makes it the whole :func:`closing_curve`.

    A combo whose ratios share a factor is priced whole at once (``rest`` = the minutes): where some minute leaves
    legs out, its other minutes are priced as its reduced combo times the factor, as every order's are."""
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    n = bid.shape[0]
    ratios = np.array([leg.ratio for leg in closing_legs], dtype=np.float64)
    rest = _first_leavable(ratios, bid)
    if rest < n and math.gcd(*(abs(int(leg.ratio)) for leg in closing_legs)) != 1:
        left = left_legs(ratios, bid, ask)
        if left.any():
            curve = np.full(n, np.nan)
            _price_patterns(curve, left, fill_model, closing_legs, bid, ask, as_of=as_of, skip_whole=False)
            return curve, n
        rest = n
    return _combo_curve(fill_model, closing_legs, bid, ask, as_of=as_of), rest


def _leave_legs_out(curve: np.ndarray, rest: int, fill_model, closing_legs, bid, ask, *, as_of) -> None:
    """:func:`_closing_curve_part`'s ``curve`` made the whole :func:`closing_curve`, in place: on each minute from
    ``rest`` on where some long legs have no bid, the price of the order without them."""
    ratios = np.array([leg.ratio for leg in closing_legs], dtype=np.float64)
    b, a = bid[rest:], ask[rest:]
    left = left_legs(ratios, b, a)
    if left.any():
        _price_patterns(curve[rest:], left, fill_model, closing_legs, b, a, as_of=as_of, skip_whole=True)


def _price_patterns(out: np.ndarray, left: np.ndarray, fill_model, closing_legs, bid, ask, *, as_of,
                    skip_whole: bool) -> None:
    """Each minute of ``out`` (in place) priced as the order without its legs ``left`` out (its reduced combo's
    price times the factor). ``skip_whole``: the minutes that leave no leg out already hold the combo's price
    (its ratios share no factor: the reduced combo is the combo, and its price on the grid is its own)."""
    # the minutes of each pattern of legs left out, found by the pattern's bits as one integer (np.unique over
    # rows of booleans sorts them as a structured array: ~10x slower); each pattern's minutes are priced
    # alone, so the order the patterns come in does not matter
    if left.shape[1] > 62:  # pragma: no cover - no combo has that many legs
        codes = np.unique(left, axis=0, return_inverse=True)[1].ravel()
        skip_whole = False  # (its minutes priced again: the same floats)
    else:
        codes = left @ (1 << np.arange(left.shape[1], dtype=np.int64))
    for code in np.unique(codes).tolist():
        if skip_whole and code == 0:
            continue
        rows = codes == code
        keep = ~left[int(np.argmax(rows))]
        legs, g = reduced_combo(closing_legs, keep)
        price = _combo_curve(fill_model, legs, bid[rows][:, keep], ask[rows][:, keep], as_of=as_of)
        out[rows] = np.round(price * g, 2) + 0.0


def _first_leavable(ratios: np.ndarray, bid: np.ndarray) -> int:
    """The first row of ``bid`` (minutes x legs) on which :func:`~strikebench.options.fills.left_legs` may leave a
    leg out, whatever the asks: a sold leg (negative ratio) not bid above zero (NaN included); the number of
    rows when none (see :func:`_may_leave_legs`)."""
    n = bid.shape[0]
    sold = [j for j, r in enumerate(ratios.tolist()) if r < 0]
    if not sold:
        return n
    ok = bid[:, sold[0]] > 0.0 if len(sold) == 1 else (bid[:, sold] > 0.0).all(axis=1)
    k = int(ok.argmin())  # the first False (a bool array's least)
    return n if ok[k] else k

def closing_order_legs(closing_legs, bid, ask) -> tuple[tuple, int, np.ndarray]:
    """The legs of the order that closes the position ``closing_legs`` (each leg's ratio = contracts to
    buy, negative = sell) on one minute's quotes: without the long legs that have no bid when the rest
    can trade (:func:`~strikebench.options.fills.left_legs`), ratios reduced by their common factor.
    Returns (legs, quantity, mask of the legs kept)."""
    bid = np.asarray(bid, dtype=np.float64)
    # one minute (an exit order): the ratios as Python numbers (left_legs and _may_leave_legs take them so)
    ratios = ([leg.ratio for leg in closing_legs] if bid.ndim == 1
              else np.array([leg.ratio for leg in closing_legs], dtype=np.float64))
    if not _may_leave_legs(ratios, bid):  # every leg kept (the usual close)
        keep = np.ones(len(closing_legs), dtype=bool)
    else:
        keep = ~left_legs(ratios, bid, np.asarray(ask, dtype=np.float64))
    legs, g = reduced_combo(closing_legs, keep)
    return legs, g, keep


def _pricing_key(order: Order) -> tuple:
    """What :meth:`FillModel.fill_price <strikebench.api.FillModel.fill_price>` reads of an order (besides the
    quotes of its legs): two orders with the same key are priced alike on the same bar."""
    return (order.legs, order.order_type, order.limit_price, order.created_at)


def _may_leave_legs(ratios: np.ndarray, bid: np.ndarray) -> bool:
    """False when :func:`~strikebench.options.fills.left_legs` leaves no leg out on any row of ``bid`` (legs on
    the last axis), whatever the asks: a leg is left out only where it is sold (negative ratio) and its bid is
    not positive, so every sold leg bid above zero on every row leaves nothing out (a NaN bid is not above zero:
    True, ask :func:`left_legs`)."""
    if bid.ndim == 1:  # one minute (an exit order): Python floats
        r = ratios.tolist() if type(ratios) is np.ndarray else ratios
        return any(x < 0 and not b > 0.0 for x, b in zip(r, bid.tolist()))
    sold = np.asarray(ratios) < 0
    if not sold.any():
        return False
    return not bool((bid[..., sold] > 0.0).all())


def _keeps_fill_price(fill_model) -> bool:
    """True when the fill model answers with :meth:`FillModel.fill_price` (does not override it)."""
    from strikebench.api import FillModel

    return getattr(type(fill_model), "fill_price", None) is FillModel.fill_price


def _has_model_price(fill_model) -> bool:
    """True when the fill model prices vectorised (overrides ``model_price``); kept per class."""
    kind = type(fill_model)
    got = _MODEL_PRICE.get(kind)
    if got is None:
        from strikebench.api import FillModel

        method = getattr(kind, "model_price", None)
        got = _MODEL_PRICE[kind] = method is not None and method is not FillModel.model_price
    return got


_MODEL_PRICE: dict[type, bool] = {}


def _carry_forward(mid: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    """Mids with an unusable minute (NaN) marked at the leg's last usable mid, not at zero.

    ``last`` is each leg's last mark before this session (NaN if none): a leg unquoted since
    the open keeps it. A leg with no mark at all yet is marked at its first usable mid.
    """
    if not np.isnan(mid).any():
        return mid
    import pandas as pd

    if last is not None:
        mid = np.vstack([np.asarray(last, dtype=np.float64)[None, :], mid])
        return pd.DataFrame(mid).ffill().bfill().to_numpy()[1:]
    return pd.DataFrame(mid).ffill().bfill().to_numpy()
