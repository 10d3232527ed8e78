"""Multi-leg orders, fills and strategy trades: the order model every broker speaks.

Sign convention (one rule, everywhere inside strikebench):

* a :class:`Leg` has a signed ``ratio``: positive = long (buy), negative = short (sell);
* an order always *buys the combo* as its legs describe, ``quantity`` times;
* a **net price** is ``sum(ratio * leg price)`` per combo: positive = a debit paid,
  negative = a credit received. A put credit spread sold for 1.20 is legs
  (-1 short put, +1 long put) at net price -1.20. Closing it for 0.60 is legs
  (+1, -1) at +0.60.

That is Interactive Brokers' BAG convention; the Tradier plugin translates to
``type=credit|debit`` with a positive price. Traders' quotes (``entry_credit``
1.20) are derived, never stored in a second convention.

Order life-cycle (:class:`OrderStatus`)::

    NEW -> SUBMITTED -> ACCEPTED -> (PARTIALLY_FILLED ->) FILLED
                     \\-> REJECTED         \\-> CANCELLED | EXPIRED
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np

from strikebench.options.contracts import OptionContract

__all__ = [
    "Leg",
    "OrderType",
    "TimeInForce",
    "OrderStatus",
    "Order",
    "Fill",
    "TradeRecord",
    "combo_natural",
    "combo_mid",
    "combo_width",
    "expiry_payoff",
    "max_loss_per_combo",
    "liability_per_combo",
    "OrderError",
]


class OrderError(ValueError):
    """An order that cannot exist (bad legs, quantity, limit)."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a combo: a contract and a signed ratio (+ long, - short)."""

    contract: OptionContract
    ratio: int

    def __post_init__(self):
        if not isinstance(self.ratio, (int, np.integer)) or self.ratio == 0:
            raise OrderError(f"leg ratio must be a non-zero integer, got {self.ratio!r}")

    @property
    def side(self) -> str:
        return "buy" if self.ratio > 0 else "sell"

    def reversed(self) -> "Leg":
        return Leg(self.contract, -self.ratio)


class OrderType(str, Enum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(str, Enum):
    DAY = "day"
    GTC = "gtc"


class OrderStatus(str, Enum):
    NEW = "new"  # created, not yet sent
    SUBMITTED = "submitted"  # sent, not acknowledged
    ACCEPTED = "accepted"  # working at the broker
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


@dataclass
class Order:
    """A multi-leg (1-4 legs) order; the broker owns its state after submission.

    ``client_id`` is given by the framework before sending (Tradier ``tag``, IB
    ``orderRef``) and is what a restarted process looks the order up by.
    """

    client_id: str
    legs: tuple[Leg, ...]
    quantity: int
    order_type: OrderType = OrderType.LIMIT
    limit_price: float | None = None  # signed net price per combo (see module doc)
    tif: TimeInForce = TimeInForce.DAY
    strategy: str = ""
    trade_id: str | None = None  # the strategy trade this order opens or closes
    opens: bool = True  # opens risk (entry) vs reduces it (exit)
    reason: str = ""
    created_at: dt.datetime | None = None
    status: OrderStatus = OrderStatus.NEW
    filled_quantity: int = 0
    avg_fill_price: float | None = None
    status_reason: str = ""
    broker_id: str | None = None
    fills: list["Fill"] = field(default_factory=list)

    def __post_init__(self):
        legs = self.legs = tuple(self.legs)
        if not 1 <= len(legs) <= 4:
            raise OrderError(f"an order has 1 to 4 legs, got {len(legs)}")
        contracts = [leg.contract for leg in legs]
        if len(set(contracts)) != len(legs):
            raise OrderError("an order lists the same contract twice")
        und = contracts[0].underlying
        for c in contracts:
            if c.underlying != und:
                raise OrderError("all legs of an order must share one underlying")
        if not isinstance(self.quantity, (int, np.integer)) or self.quantity <= 0:
            raise OrderError(f"order quantity must be a positive integer, got {self.quantity!r}")
        if self.order_type == OrderType.LIMIT and (self.limit_price is None or not math.isfinite(self.limit_price)):
            raise OrderError("a limit order needs a finite limit_price")
        if self.order_type == OrderType.MARKET and self.limit_price is not None:
            raise OrderError("a market order has no limit_price")
        sizes = [abs(int(leg.ratio)) for leg in legs]
        if max(sizes) != 1 and math.gcd(*sizes) != 1:  # (ratios of 1 share no factor)
            g = math.gcd(*sizes)
            raise OrderError(f"leg ratios {':'.join(str(int(leg.ratio)) for leg in legs)} share the factor {g}:"
                             f" send {g} x the quantity of the reduced combo")
        if self.limit_price is not None:
            # on the tick grid, rounded the way that never fills through the limit (see strikebench.options.fills)
            from strikebench.options.fills import limit_on_grid  # (fills imports this module)

            self.limit_price = limit_on_grid(self.limit_price, self.root, complex_order=self.is_complex,
                                             as_of=self.created_at)

    @property
    def root(self) -> str:
        return self.legs[0].contract.root

    @property
    def underlying(self) -> str:
        return self.legs[0].contract.underlying

    @property
    def multiplier(self) -> int:
        return self.legs[0].contract.multiplier

    @property
    def ratios(self) -> np.ndarray:
        return np.array([leg.ratio for leg in self.legs], dtype=np.float64)

    @property
    def is_complex(self) -> bool:
        return len(self.legs) > 1

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled_quantity

    @property
    def is_working(self) -> bool:
        return self.status in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)

    def snapshot(self) -> "Order":
        """A copy safe to hand to hooks (later transitions do not change it). A field-for-field copy: the
        order was validated (and its limit put on the grid) when it was made; a hook gets one per event."""
        cls = type(self)
        if cls is Order:  # copy.copy's own way for a plain dataclass (its __reduce_ex__ round trip), directly
            got = cls.__new__(cls)
            got.__dict__.update(self.__dict__)
        else:
            got = copy.copy(self)
        got.fills = list(self.fills)
        return got


@dataclass(frozen=True)
class Fill:
    """An execution of ``quantity`` combos of one order at a signed net price."""

    fill_id: str
    client_id: str
    filled_at: dt.datetime
    quantity: int
    net_price: float
    leg_prices: tuple[float, ...]
    fees: float
    #: each leg's (bid, ask) the fill was priced on, in the order of the legs (empty when unknown)
    leg_quotes: tuple[tuple[float, float], ...] = ()


@dataclass
class TradeRecord:
    """A strategy trade: the legs opened together and how they ended."""

    trade_id: str
    strategy: str
    legs: tuple[Leg, ...]  # as opened (ratios per combo)
    contracts: int  # number of combos
    opened_at: dt.datetime
    entry_price: float  # signed net price per combo (negative = credit)
    leg_entry_prices: tuple[float, ...]
    fees: float = 0.0
    closed_at: dt.datetime | None = None
    exit_price: float | None = None  # signed net price of the *closing* combo (legs reversed)
    leg_exit_prices: tuple[float, ...] | None = None
    exit_reason: str = ""
    realized_pnl: float | None = None  # dollars, after all fees
    decision_id: str | None = None
    max_loss: float = 0.0  # dollars at risk when opened (defined-risk), before fees
    settlement_cash: float | None = None  # dollars cash settlement paid in (exact to the cent), if settled
    settlement_note: str = ""  # set when the settlement value was not a real print (e.g. approximated from bars)
    #: combos whose remaining legs were cash-settled (all open combos for a trade held to expiry; for a
    #: partly closed trade, the combos whose no-bid long legs stayed in the account); None if not settled
    settled_contracts: int | None = None
    #: when the trade's exit order filled while some long legs with no bid stayed in the account until
    #: expiry (the trade closes at their settlement); None for a trade closed whole
    partly_closed_at: dt.datetime | None = None
    #: the intrinsic values the legs left in a partly closed trade settled at (in the trade's leg order)
    settled_leg_values: tuple[float, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def is_exited(self) -> bool:
        """True once the strategy's exit is done: closed, or partly closed (only no-bid longs left to expire)."""
        return self.closed_at is not None or self.partly_closed_at is not None

    @property
    def entry_credit(self) -> float:
        """Credit per combo as a trader quotes it (negative for a debit trade)."""
        return -self.entry_price

    @property
    def exit_debit(self) -> float | None:
        return self.exit_price

    @property
    def expiry(self) -> dt.date:
        return min(leg.contract.expiry for leg in self.legs)


# ------------------------------------------------------------------ combo math
def _one_combo(ratios, bid, ask) -> tuple | None:
    """(ratios, bid, ask) as lists of Python floats when they are one combo's legs (three 1-D float64 arrays of
    one length below 8), else None. Below 8 items numpy sums left to right from 0.0, so the per-leg terms
    summed that way in Python floats (:func:`_lsum`) are the same float as numpy's, without its per-call
    cost (the combo functions below price one order a dozen times per fill)."""
    if (type(bid) is np.ndarray and type(ask) is np.ndarray and type(ratios) is np.ndarray
            and bid.ndim == 1 and ask.ndim == 1 and ratios.ndim == 1
            and bid.dtype == ask.dtype == ratios.dtype == np.float64 and len(bid) == len(ask) == len(ratios) < 8):
        return ratios.tolist(), bid.tolist(), ask.tolist()
    return None


def _lsum(values) -> float:
    """numpy's sum of a 1-D float64 array of fewer than 8 items: 0.0 plus each item, left to right."""
    total = 0.0
    for v in values:
        total += v
    return total


def sum_legs(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=-1)`` (legs on the last axis), the same floats: below 8 legs numpy sums each row left to
    right from 0.0, so the leg columns added in that order over the leading axes give each row's sum (numpy's
    reduction of a short last axis goes row by row: ~15 us for 390 rows of 2 legs, the columns ~2 us).
    A 1-D array, 8 or more legs, or another dtype: numpy's sum."""
    if x.ndim < 2 or not 0 < x.shape[-1] < 8 or x.dtype != np.float64:
        return x.sum(axis=-1)
    total = x[..., 0] + 0.0
    for j in range(1, x.shape[-1]):
        total += x[..., j]
    return total


def combo_natural(ratios: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Net price to buy the combo now at the natural (ask for longs, bid for shorts).

    ``bid``/``ask`` have legs on the last axis (shape (..., n_legs)).
    """
    one = _one_combo(ratios, bid, ask)
    if one is not None:
        return np.float64(_lsum([r * a if r > 0 else r * b for r, b, a in zip(*one)]))
    return sum_legs(np.where(ratios > 0, ratios * ask, ratios * bid))


def combo_mid(ratios: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    one = _one_combo(ratios, bid, ask)
    if one is not None:
        return np.float64(_lsum([r * (b + a) * 0.5 for r, b, a in zip(*one)]))
    return sum_legs(ratios * (bid + ask) * 0.5)


def combo_width(ratios: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Width of the combo's market: sum of |ratio| x (ask - bid)."""
    one = _one_combo(ratios, bid, ask)
    if one is not None:
        return np.float64(_lsum([abs(r) * (a - b) for r, b, a in zip(*one)]))
    return sum_legs(np.abs(ratios) * (ask - bid))


def expiry_payoff(legs: Sequence[Leg], settle: np.ndarray | float) -> np.ndarray:
    """Value per combo at expiry (index points) for settlement value(s) ``settle``."""
    s = np.asarray(settle, dtype=np.float64)[..., None]
    strikes = np.array([leg.contract.strike for leg in legs])
    calls = np.array([leg.contract.is_call for leg in legs])
    ratios = np.array([leg.ratio for leg in legs], dtype=np.float64)
    intrinsic = np.where(calls, np.maximum(s - strikes, 0.0), np.maximum(strikes - s, 0.0))
    return (ratios * intrinsic).sum(axis=-1)


_EXTREMES: dict[tuple, tuple[float, float]] = {}


def _payoff_extremes(legs: Sequence[Leg]) -> tuple[float, float]:
    """(min payoff, slope beyond the highest strike) of the combo at expiry (memoized per leg set: every
    order's risk estimate, buying-power check and the account's margin ask it again)."""
    key = tuple(legs)
    got = _EXTREMES.get(key)
    if got is None:
        got = _payoff_extremes_of(key)
        if len(_EXTREMES) >= 4096:
            _EXTREMES.clear()
        _EXTREMES[key] = got
    return got


def payoffs_at(legs: Sequence[Leg], points: Sequence[float]) -> list[float]:
    """:func:`expiry_payoff` of ``legs`` at each of ``points``, as a list of floats. Fewer than 8 legs in
    Python floats: the same operations on the same floats (each leg's ``ratio x max(s - k, 0)`` or
    ``max(k - s, 0)``, summed from 0.0 left to right as numpy sums fewer than 8 items), so the same values,
    without numpy's per-call cost (a new leg set's payoff range and worst case are asked when its first order
    is priced); 8 legs or more through :func:`expiry_payoff` itself (numpy sums those pairwise)."""
    if len(legs) >= 8:
        return expiry_payoff(legs, np.array(points, dtype=np.float64)).tolist()
    terms = [(float(leg.ratio), float(leg.contract.strike), leg.contract.is_call) for leg in legs]
    out = []
    for s in points:
        s = float(s)
        total = 0.0
        for r, k, call in terms:
            total += r * (max(s - k, 0.0) if call else max(k - s, 0.0))
        out.append(total)
    return out


def _payoff_extremes_of(legs: tuple) -> tuple[float, float]:
    if len({leg.contract.expiry for leg in legs}) != 1:
        raise OrderError("worst-case loss is defined here only for legs of one expiry")
    strikes = sorted({leg.contract.strike for leg in legs})
    points = [0.0, *strikes, strikes[-1] * 2 + 1.0]
    payoff = payoffs_at(legs, points)
    slope_up = sum(leg.ratio for leg in legs if leg.contract.is_call)
    return float(min(payoff)), float(slope_up)


def liability_per_combo(legs: Sequence[Leg]) -> float:
    """The most the combo can pay out at expiry (index points, >= 0); inf if unbounded."""
    low, slope_up = _payoff_extremes(legs)
    if slope_up < 0:
        return float("inf")
    return max(0.0, -low)


def max_loss_per_combo(legs: Sequence[Leg], net_price: float) -> float:
    """Worst-case loss per combo at expiry, in index points, given the net price paid.

    ``net_price`` follows the signed convention (negative = credit). A 25-point put
    credit spread sold for 1.20 loses at most 23.80; inf when risk is unbounded.
    """
    low, slope_up = _payoff_extremes(legs)
    if slope_up < 0:
        return float("inf")
    return max(0.0, net_price - low)
