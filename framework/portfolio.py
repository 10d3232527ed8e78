"""Cash, strategy trades and positions, kept to the cent.

Cash is held in integer cents. A fill moves cash by ``-net_price x multiplier x
quantity`` (net prices are on the tick grid, so this is exact) minus fees; cash
settlement moves it by the combo's payoff. A trade's realized P&L is the sum of
its own cash flows, so ``sum(realized P&L) == final cash - initial cash`` holds
exactly once every trade is closed.

Positions per contract are derived from the open trades (one source of truth).

A trade is normally closed whole (one closing combo, or cash settlement). When its exit cannot sell a
long leg because that leg's bid is zero, the exit order covers the other legs only and the trade is
*partly closed* (:attr:`TradeRecord.partly_closed_at`): the strategy's exit is done (the trade leaves
:meth:`Portfolio.open_trades` ``(exited=False)``, what strategies and risk managers see), its cash so
far counts for the day, and the legs left in the account settle at expiry, when the trade closes with
one P&L (every fill plus that settlement; no fee is charged on a leg that expires).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable


from strikebench.options.contracts import OptionContract
from strikebench.options.orders import (
    Fill,
    Leg,
    Order,
    OrderError,
    TradeRecord,
    expiry_payoff,
    liability_per_combo,
    max_loss_per_combo,
)

__all__ = ["Portfolio", "PortfolioView", "to_cents"]


def to_cents(dollars: float) -> int:
    return int(round(dollars * 100.0))


def _price_cents(points: float) -> int:
    """Index points on the tick grid -> integer cents of a point (1.15 -> 115)."""
    return int(round(points * 100.0))


@dataclass
class _TradeBook:
    record: TradeRecord
    open_contracts: int
    cash_flow_cents: int = 0  # everything this trade moved: premiums, fees, settlement
    fee_cents: int = 0
    entry_notional_cents: int = 0  # sum of price_cents * qty, for the average entry
    exit_notional_units: int = 0  # sum of price * qty in 1/10,000 of a point (settlement prints finer than a cent)
    closed_contracts: int = 0
    leg_open: list[int] | None = None  # combos still held per leg (None: every leg holds open_contracts)
    leg_exit: list[float | None] | None = None  # per leg of the trade: its closing print (partly closed trades)
    booked_cents: int = 0  # cash flow already counted in realized_by_day (at a partial close)
    liability_per_combo: float | None = None  # of the trade's legs (its combo), once asked

    def combo_liability(self) -> float:
        """:func:`liability_per_combo` of the trade's combo, computed once (its legs never change)."""
        got = self.liability_per_combo
        if got is None:
            got = self.liability_per_combo = liability_per_combo(self.record.legs)
        return got

    def legs_open(self) -> list[int]:
        return list(self.leg_open) if self.leg_open is not None else [self.open_contracts] * len(self.record.legs)


class Portfolio:
    """The account of one run: cash, open and closed trades, the day's figures."""

    def __init__(self, initial_cash: float):
        self.initial_cash_cents = to_cents(initial_cash)
        self.cash_cents = self.initial_cash_cents
        self._books: dict[str, _TradeBook] = {}
        self._open: dict[str, _TradeBook] = {}
        self.realized_by_day_cents: dict[dt.date, int] = defaultdict(int)
        self.opened_by_day: dict[dt.date, int] = defaultdict(int)
        self.exit_reasons_by_day: dict[dt.date, list[str]] = defaultdict(list)
        self.fees_cents = 0
        self._liability: float | None = None  # liability() until the open trades change (apply_fill, settle)

    # ---------------------------------------------------------------- queries
    @property
    def cash(self) -> float:
        return self.cash_cents / 100.0

    @property
    def initial_cash(self) -> float:
        return self.initial_cash_cents / 100.0

    def open_trades(self, strategy: str | None = None, *, exited: bool = True) -> list[TradeRecord]:
        """Trades holding positions (of ``strategy`` when given). ``exited=False`` leaves out the partly
        closed ones (exit done, no-bid longs waiting for expiry): what a strategy manages and what
        entry limits count."""
        return [b.record for b in self._open.values() if (strategy is None or b.record.strategy == strategy)
                and (exited or b.record.partly_closed_at is None)]

    def closed_trades(self) -> list[TradeRecord]:
        return [b.record for b in self._books.values() if not b.record.is_open]

    def closed_count(self) -> int:
        """``len(closed_trades())`` without the list: a trade's book leaves ``_open`` when it closes, only then."""
        return len(self._books) - len(self._open)

    def all_trades(self) -> list[TradeRecord]:
        return [b.record for b in self._books.values()]

    def trade(self, trade_id: str) -> TradeRecord | None:
        book = self._books.get(trade_id)
        return book.record if book else None

    def open_contracts(self, trade_id: str) -> int:
        book = self._open.get(trade_id)
        return book.open_contracts if book else 0

    def legs_open(self, trade_id: str) -> list[int]:
        """Combos still held per leg of ``trade_id`` (all equal unless the trade was partly closed)."""
        book = self._open.get(trade_id)
        return book.legs_open() if book else []

    def open_holdings(self) -> list[tuple[TradeRecord, tuple[int, ...]]]:
        """(trade, combos still held per leg as a tuple) of every open trade, in :meth:`open_trades` order:
        ``open_trades()`` with each trade's ``legs_open`` in one pass (what the broker's marks read at a fill)."""
        out = []
        for b in self._open.values():
            held = b.leg_open
            out.append((b.record, tuple(held) if held is not None else (b.open_contracts,) * len(b.record.legs)))
        return out

    def premium_flow(self, trade_id: str) -> float:
        """Dollars the fills of ``trade_id`` moved so far, fees left out (the entry's credit or debit, and
        an exit's premium when the trade is partly closed): an open trade's unrealized P&L is this plus
        the marked value of the legs it still holds."""
        book = self._books.get(trade_id)
        return (book.cash_flow_cents + book.fee_cents) / 100.0 if book else 0.0

    def positions(self) -> dict[OptionContract, int]:
        """Signed contracts held per option contract, summed over open trades."""
        out: dict[OptionContract, int] = defaultdict(int)
        for book in self._open.values():
            for leg, n in zip(book.record.legs, book.legs_open()):
                out[leg.contract] += leg.ratio * n
        return {c: q for c, q in out.items() if q}

    def liability(self) -> float:
        """Worst-case settlement payout of all open trades, dollars (what buying power holds). Kept until a fill
        or a settlement changes the open trades (every entry's buying-power check asks it)."""
        got = self._liability
        if got is not None:
            return got
        total = 0.0
        for book in self._open.values():
            legs = book.record.legs
            if book.leg_open is None:
                total += book.combo_liability() * legs[0].contract.multiplier * book.open_contracts
            else:
                held = [Leg(leg.contract, leg.ratio * n) for leg, n in zip(legs, book.leg_open) if n]
                if held:
                    total += liability_per_combo(held) * legs[0].contract.multiplier
        self._liability = total
        return total

    def buying_power(self) -> float:
        """Cash not held against the worst case of open defined-risk trades."""
        return self.cash - self.liability()

    def worst_case_loss(self) -> float:
        """Sum of open trades' remaining worst-case losses (dollars, from entry)."""
        return sum(b.record.max_loss * b.open_contracts / max(b.record.contracts, 1) for b in self._open.values()
                   if b.record.partly_closed_at is None)  # what a partly closed trade still holds is long only

    def realized_today(self, day: dt.date) -> float:
        return self.realized_by_day_cents.get(day, 0) / 100.0

    def realized_total(self) -> float:
        return sum(b.cash_flow_cents for b in self._books.values() if not b.record.is_open) / 100.0

    # ---------------------------------------------------------------- changes
    def check_buying_power(self, order: Order, net_price: float, fees: float) -> str | None:
        """Reason the order exceeds buying power, or None. Closing orders always pass."""
        if not order.opens:
            return None
        mult = order.multiplier
        loss = max_loss_per_combo(order.legs, net_price)
        if not math.isfinite(loss):
            return "undefined risk: the combo's worst-case loss is unbounded"
        need = loss * mult * order.quantity + fees
        have = self.buying_power()
        if need > have + 1e-9:
            return f"buying power {have:,.2f} is less than the order's max loss {need:,.2f}"
        return None

    def apply_fill(self, order: Order, fill: Fill) -> TradeRecord:
        """Book a fill: cash, fees, and the strategy trade it opens or closes."""
        if order.trade_id is None:
            raise OrderError("an order must name the trade it opens or closes")
        self._liability = None
        mult = order.multiplier
        price_c = _price_cents(fill.net_price)
        fee_c = to_cents(fill.fees)
        flow = -price_c * mult * fill.quantity - fee_c
        self.cash_cents += flow
        self.fees_cents += fee_c
        day = fill.filled_at.date()
        if order.opens:
            book = self._books.get(order.trade_id)
            if book is None:
                if len({leg.contract.expiry for leg in order.legs}) != 1:
                    raise OrderError("a trade's legs must share one expiry (calendars are not supported yet)")
                record = TradeRecord(
                    trade_id=order.trade_id, strategy=order.strategy, legs=order.legs, contracts=0,
                    opened_at=fill.filled_at, entry_price=fill.net_price, leg_entry_prices=fill.leg_prices,
                    decision_id=None,
                )
                book = _TradeBook(record, 0)
                self._books[order.trade_id] = book
                self._open[order.trade_id] = book
                self.opened_by_day[day] += 1
            book.open_contracts += fill.quantity
            book.record.contracts += fill.quantity
            book.entry_notional_cents += price_c * fill.quantity
            book.record.entry_price = book.entry_notional_cents / book.record.contracts / 100.0
            book.record.max_loss = max_loss_per_combo(book.record.legs, book.record.entry_price) * mult * book.record.contracts
        else:
            book = self._open.get(order.trade_id)
            if book is None:
                raise OrderError(f"closing order {order.client_id} names trade {order.trade_id}, which is not open")
            legs = book.record.legs
            whole = book.leg_open is None and len(order.legs) == len(legs) and all(
                o.contract == t.contract and o.ratio == -t.ratio for o, t in zip(order.legs, legs))
            if whole:  # the trade's combo, legs reversed
                if fill.quantity > book.open_contracts:
                    raise OrderError(f"closing {fill.quantity} combos of trade {order.trade_id}, but only "
                                     f"{book.open_contracts} are open")
                book.open_contracts -= fill.quantity
                book.closed_contracts += fill.quantity
                book.exit_notional_units += price_c * 100 * fill.quantity
                book.record.exit_price = book.exit_notional_units / book.closed_contracts / 10_000.0
                book.record.leg_exit_prices = fill.leg_prices
            else:
                self._close_legs(book, order, fill, price_c)
        book.cash_flow_cents += flow
        book.fee_cents += fee_c
        book.record.fees = book.fee_cents / 100.0
        if not order.opens and book.open_contracts == 0:
            self._close(book, fill.filled_at, order.reason or "exit")
        elif not order.opens and book.leg_open is not None and book.record.partly_closed_at is None:
            closed = {leg.contract for leg in order.legs}
            if all(n == 0 for leg, n in zip(legs, book.leg_open) if leg.contract in closed):
                # the exit order is done; the legs it left out (no bid) stay to expiry
                rec = book.record
                rec.partly_closed_at = fill.filled_at
                rec.exit_reason = order.reason or "exit"
                self.realized_by_day_cents[day] += book.cash_flow_cents
                book.booked_cents = book.cash_flow_cents
                self.exit_reasons_by_day[day].append(rec.exit_reason)
        return book.record

    def _close_legs(self, book: _TradeBook, order: Order, fill: Fill, price_c: int) -> None:
        """A closing fill of some of the trade's legs (or of unequal amounts): per leg."""
        legs = book.record.legs
        held = book.legs_open()
        index = {leg.contract: j for j, leg in enumerate(legs)}
        if book.leg_exit is None:
            book.leg_exit = [None] * len(legs)
        for leg, p in zip(order.legs, fill.leg_prices):
            j = index.get(leg.contract)
            if j is None or (leg.ratio > 0) == (legs[j].ratio > 0):
                raise OrderError(f"closing order {order.client_id} trades {leg.contract.occ_symbol.strip()} "
                                 f"x{leg.ratio}, which does not reduce trade {order.trade_id}")
            n, rest = divmod(abs(leg.ratio) * fill.quantity, abs(legs[j].ratio))
            if rest or n > held[j]:
                raise OrderError(f"closing {abs(leg.ratio) * fill.quantity} of "
                                 f"{leg.contract.occ_symbol.strip()} in trade {order.trade_id}, but "
                                 f"{abs(legs[j].ratio) * held[j]} are held")
            held[j] -= n
            book.leg_exit[j] = float(p)
        book.leg_open = held
        book.open_contracts = max(held)
        book.exit_notional_units += price_c * 100 * fill.quantity
        book.record.exit_price = book.exit_notional_units / book.record.contracts / 10_000.0
        book.record.leg_exit_prices = tuple(x if x is not None else float("nan") for x in book.leg_exit)

    def settle(self, contracts_expiring: Iterable[OptionContract], values: dict[OptionContract, float],
               at: dt.datetime) -> list[TradeRecord]:
        """Cash-settle every open trade whose legs expire now; returns the trades closed."""
        self._liability = None
        expiring = set(contracts_expiring)
        closed = []
        for book in list(self._open.values()):
            legs = book.record.legs
            if not any(leg.contract in expiring for leg, n in zip(legs, book.legs_open()) if n):
                continue
            if book.leg_open is not None:
                self._settle_legs(book, values, at)
                closed.append(book.record)
                continue
            settle_values = [values[leg.contract] for leg in legs]
            intrinsic = [float(expiry_payoff((Leg(leg.contract, 1),), v)) for leg, v in zip(legs, settle_values)]
            intrinsic = [round(x, 4) for x in intrinsic]  # XSP prints have 3 decimals: keep them
            payoff = sum(leg.ratio * x for leg, x in zip(legs, intrinsic))
            payoff_units = int(round(payoff * 10_000))
            mult = legs[0].contract.multiplier
            # dollars exact to the cent even when the print has more decimals (XSP = SPX / 10)
            flow = int(round(payoff * mult * book.open_contracts * 100.0))
            self.cash_cents += flow
            book.cash_flow_cents += flow
            book.record.settlement_cash = flow / 100.0
            book.exit_notional_units += -payoff_units * book.open_contracts
            book.closed_contracts += book.open_contracts
            book.record.settled_contracts = book.open_contracts
            book.open_contracts = 0
            book.record.exit_price = book.exit_notional_units / book.closed_contracts / 10_000.0
            book.record.leg_exit_prices = tuple(intrinsic)
            self._close(book, at, "settlement")
            closed.append(book.record)
        return closed

    def _settle_legs(self, book: _TradeBook, values: dict[OptionContract, float], at: dt.datetime) -> None:
        """Cash-settle what a partly closed trade still holds (per leg), and close it."""
        legs, held = book.record.legs, book.legs_open()
        payoff = 0.0  # index points for the whole position
        exit_prices = list(book.leg_exit or [None] * len(legs))
        for j, (leg, n) in enumerate(zip(legs, held)):
            if not n:
                continue
            x = round(float(expiry_payoff((Leg(leg.contract, 1),), values[leg.contract])), 4)
            payoff += leg.ratio * n * x
            exit_prices[j] = x
        mult = legs[0].contract.multiplier
        flow = int(round(payoff * mult * 100.0))
        self.cash_cents += flow
        book.cash_flow_cents += flow
        rec = book.record
        rec.settlement_cash = flow / 100.0
        rec.settled_contracts = max(held)
        rec.settled_leg_values = tuple(x for x, n in zip(exit_prices, held) if n)
        book.exit_notional_units += -int(round(payoff * 10_000))
        book.closed_contracts = rec.contracts
        book.leg_open = [0] * len(legs)
        book.open_contracts = 0
        rec.exit_price = book.exit_notional_units / rec.contracts / 10_000.0
        rec.leg_exit_prices = tuple(float("nan") if x is None else x for x in exit_prices)
        self._close(book, at, rec.exit_reason if rec.partly_closed_at is not None else "settlement")

    def _close(self, book: _TradeBook, at: dt.datetime, reason: str) -> None:
        book.record.closed_at = at
        book.record.exit_reason = reason
        book.record.realized_pnl = book.cash_flow_cents / 100.0
        self._open.pop(book.record.trade_id, None)
        day = at.date()
        self.realized_by_day_cents[day] += book.cash_flow_cents - book.booked_cents
        if book.record.partly_closed_at is None:  # a partly closed trade said its reason at the exit
            self.exit_reasons_by_day[day].append(reason)

    def view(self, today: dt.date) -> "PortfolioView":
        return PortfolioView(self, today)


class PortfolioView:
    """Read-only view handed to strategies and risk checks."""

    def __init__(self, portfolio: Portfolio, today: dt.date):
        self._p = portfolio
        self.today = today

    @property
    def cash(self) -> float:
        return self._p.cash

    @property
    def buying_power(self) -> float:
        return self._p.buying_power()

    def open_trades(self, strategy: str | None = None) -> list[TradeRecord]:
        """Open trades whose exit is not done (a partly closed trade, its no-bid longs left to expire, is not)."""
        return self._p.open_trades(strategy, exited=False)

    @property
    def initial_cash(self) -> float:
        return self._p.initial_cash

    def closed_trades(self, strategy: str | None = None) -> list[TradeRecord]:
        """Closed trades (of ``strategy`` when given), in the order they were opened."""
        return [t for t in self._p.closed_trades() if strategy is None or t.strategy == strategy]

    @property
    def open_trade_count(self) -> int:
        return len(self._p.open_trades(exited=False))

    @property
    def trades_opened_today(self) -> int:
        return self._p.opened_by_day.get(self.today, 0)

    @property
    def realized_today(self) -> float:
        return self._p.realized_today(self.today)

    @property
    def exit_reasons_today(self) -> list[str]:
        return list(self._p.exit_reasons_by_day.get(self.today, []))

    @property
    def worst_case_loss(self) -> float:
        return self._p.worst_case_loss()

    def positions(self) -> dict[OptionContract, int]:
        return self._p.positions()
