"""Interactive Brokers <-> strikebench: contracts, the BAG combo, its sign convention, statuses and fills.

Pure functions (no socket, no ib_async object needed), so every mapping is unit-tested on its own
(tests/test_ibkr_contracts.py) and the broker (:mod:`strikebench.brokers.ibkr`) only moves data.

**Sign convention.** strikebench's order always *buys the combo* its signed legs describe, at a net
price ``sum(ratio x leg price)`` (+ debit, - credit). IB's BAG is the same rule: the combo price is
``sum(sign x ratio x leg price)`` with ``sign = +1`` for a BUY leg. So the plugin sends every order as
``action=BUY`` of a BAG whose legs are ``BUY |ratio|`` for a long leg and ``SELL |ratio|`` for a short
one, with ``lmtPrice`` = strikebench's net price unchanged: a put credit spread sold for 1.20 is a BUY
of (SELL 1 short put, BUY 1 long put) at **-1.20**. A BAG execution or order seen with ``action=SELL``
(placed by hand in TWS, say) is read back with its price negated.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from strikebench.options.contracts import ROOTS, OptionContract
from strikebench.options.orders import Order, OrderError, OrderType, TimeInForce

__all__ = ["option_fields", "index_fields", "vix_future_fields", "occ_from_ib", "combo_legs", "order_fields",
           "net_from_ib", "map_status", "ExecRecord", "AssembledFill", "assemble_fills", "IB_FINAL", "LIVE_PORTS",
           "TIF", "MARKET_DATA_TYPES", "missing_greek"]

#: TWS / IB Gateway live-trading ports (paper: 7497 TWS, 4002 Gateway)
LIVE_PORTS = (7496, 4001)
#: reqMarketDataType codes
MARKET_DATA_TYPES = {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}
TIF = {TimeInForce.DAY: "DAY", TimeInForce.GTC: "GTC"}

#: IB exchange and trading class per strikebench root (the trading class disambiguates SPX from SPXW)
_EXCHANGE = {"SPX": "CBOE", "SPXW": "CBOE", "XSP": "CBOE", "VIX": "CBOE"}
_INDEX_EXCHANGE = {"SPX": "CBOE", "XSP": "CBOE", "VIX": "CBOE"}


def option_fields(c: OptionContract) -> dict:
    """The fields of an IB ``Contract`` that qualify ``c`` to exactly one listing (conId comes from IB)."""
    spec = ROOTS[c.root]
    return dict(secType="OPT", symbol=spec.underlying, lastTradeDateOrContractMonth=c.expiry.strftime("%Y%m%d"),
                strike=float(c.strike), right=str(c.right), multiplier=str(spec.multiplier),
                exchange=_EXCHANGE.get(c.root, "SMART"), currency="USD", tradingClass=c.root)


def index_fields(symbol: str) -> dict:
    """The index itself (SPX, XSP, VIX): secType IND on CBOE."""
    return dict(secType="IND", symbol=symbol, exchange=_INDEX_EXCHANGE.get(symbol, "CBOE"), currency="USD")


def vix_future_fields(expiry: dt.date) -> dict:
    """The VX future of ``expiry``'s month (CFE, multiplier 1000); IB qualifies the month to its contract."""
    return dict(secType="FUT", symbol="VIX", lastTradeDateOrContractMonth=expiry.strftime("%Y%m%d"),
                exchange="CFE", currency="USD", multiplier="1000", tradingClass="VX")


def occ_from_ib(sec_type: str, symbol: str, last_trade: str, strike: float, right: str,
                trading_class: str) -> OptionContract | None:
    """An IB option contract -> strikebench's OptionContract; None for anything else (stock, BAG, future)."""
    if sec_type != "OPT":
        return None
    root = trading_class or symbol
    if root not in ROOTS:
        return None
    try:
        expiry = dt.datetime.strptime(str(last_trade)[:8], "%Y%m%d").date()
        return OptionContract.make(root, expiry, float(strike), right)
    except (ValueError, TypeError):
        return None


def combo_legs(order: Order) -> list[tuple[OptionContract, str, int]]:
    """(contract, leg action, IB ratio) per leg: BUY |r| for a long leg, SELL |r| for a short one (an Order
    already holds the smallest whole ratios, as IB wants)."""
    return [(leg.contract, "BUY" if leg.ratio > 0 else "SELL", abs(int(leg.ratio))) for leg in order.legs]


def order_fields(order: Order, *, account: str = "") -> dict:
    """The fields of the IB ``Order`` on the BAG (or the single option): always a BUY in strikebench's sign.

    A single-leg order keeps IB's single-contract form: BUY/SELL |ratio| x quantity at the absolute price."""
    if order.order_type == OrderType.LIMIT:
        if order.limit_price is None or not math.isfinite(order.limit_price):
            raise OrderError(f"{order.client_id}: a limit order needs a finite limit price")
    single = len(order.legs) == 1
    fields = dict(action="BUY", totalQuantity=float(order.quantity), orderType="MKT" if order.order_type ==
                  OrderType.MARKET else "LMT", tif=TIF[order.tif], orderRef=order.client_id, transmit=True,
                  account=account)
    if single:
        r = int(order.legs[0].ratio)
        fields["action"] = "BUY" if r > 0 else "SELL"
        fields["totalQuantity"] = float(abs(r) * order.quantity)
    if order.order_type == OrderType.LIMIT:
        price = float(order.limit_price)
        if single:  # net = r x p per combo -> |p| per contract
            price = abs(price / int(order.legs[0].ratio))
        if abs(price * 100 - round(price * 100)) > 1e-6:
            raise OrderError(f"{order.client_id}: limit {order.limit_price!r} is not a whole cent (IB would refuse "
                             f"it with error 110; strategies round to the tick first)")
        fields["lmtPrice"] = round(price, 2)
    return fields


def net_from_ib(action: str, price: float) -> float:
    """An IB combo price (order or BAG execution, its ``action``/``side``) in strikebench's sign."""
    return float(price) if action.upper() in ("BUY", "BOT") else -float(price)


#: IB order statuses -> strikebench's (BROKER_STATUSES); PendingCancel keeps the order working
_STATUS = {"PendingSubmit": "submitted", "ApiPending": "submitted", "PreSubmitted": "accepted",
           "Submitted": "accepted", "PendingCancel": "accepted", "Filled": "filled", "Cancelled": "cancelled",
           "ApiCancelled": "cancelled", "Inactive": "rejected", "ValidationError": "accepted"}
IB_FINAL = ("Filled", "Cancelled", "ApiCancelled", "Inactive")


def map_status(ib_status: str, *, filled: int = 0, quantity: int = 0, error_code: int | None = None) -> str:
    """IB status (+ the last error code for the order) -> strikebench status.

    201 (order rejected) -> rejected whatever IB's status says; a cancel after a partial fill stays
    ``cancelled`` (the fills are kept by the runtime); ``Filled`` below the quantity is partially_filled."""
    if error_code == 201:
        return "rejected"
    s = _STATUS.get(ib_status)
    if s is None:
        raise ValueError(f"unknown IB order status {ib_status!r}")
    if s == "filled" and quantity and filled < quantity:
        return "partially_filled"
    if s == "accepted" and filled > 0:
        return "partially_filled"
    return s


@dataclass(frozen=True)
class ExecRecord:
    """One IB execution of an order: the BAG's own (``con_id`` = 0 / sec_type BAG) or one leg's."""

    exec_id: str
    sec_type: str
    con_id: int
    side: str  # BOT | SLD
    shares: int
    price: float
    at: dt.datetime
    commission: float | None = None  # from the commission report; None until it arrives


@dataclass(frozen=True)
class AssembledFill:
    fill_id: str  # the BAG execution's execId (the single leg's, for a one-leg order)
    at: dt.datetime
    quantity: int
    net_price: float
    leg_prices: tuple[float, ...]
    fees: float
    exec_ids: tuple[str, ...]


def _vwap(execs, start: int, stop: int) -> tuple[float, list[int]]:
    """Price of shares [start, stop) of a leg's executions taken in arrival order; indexes of execs that begin in it."""
    pos, notional, owned = 0, 0.0, []
    for k, e in enumerate(execs):
        lo, hi = pos, pos + e.shares
        take = max(0, min(hi, stop) - max(lo, start))
        if take:
            notional += take * e.price
        if start <= lo < stop:
            owned.append(k)
        pos = hi
    return notional / (stop - start), owned


def assemble_fills(legs: list[tuple[int, int]], execs: list[ExecRecord]) -> list[AssembledFill]:
    """strikebench fills of one order from its IB executions (in arrival order), complete ones only.

    ``legs``: (conId, signed strikebench ratio) per leg, in the order's leg order. A combo fills as one BAG
    execution plus one or more executions per leg (IB may split a leg); fill k is complete when every leg's
    executions cover ``cum_k x |ratio|`` shares and every execution that begins inside it has its commission
    report. Its net price is the BAG execution's (IB's combo price, in strikebench's sign), its leg prices the
    legs' volume-weighted prices over that slice, its fees the commissions of the BAG execution and of the leg
    executions that begin in it. Duplicated executions (the same execId twice) count once."""
    seen, uniq = set(), []
    for e in execs:
        if e.exec_id not in seen:
            seen.add(e.exec_id)
            uniq.append(e)
    if len(legs) == 1:  # a single option: every execution is a fill of its own
        con, r = legs[0]
        out = []
        for e in uniq:
            if e.con_id != con:
                continue
            if e.commission is None:  # wait for its commission report (fills are booked once, with their fees)
                break
            q = e.shares // abs(r)
            out.append(AssembledFill(e.exec_id, e.at, q, round(r * e.price, 6), (round(e.price, 6),),
                                     round(e.commission, 6), (e.exec_id,)))
        return out
    bags = [e for e in uniq if e.sec_type == "BAG"]
    per_leg = {con: [e for e in uniq if e.sec_type != "BAG" and e.con_id == con] for con, _ in legs}
    have = {con: sum(e.shares for e in per_leg[con]) for con, _ in legs}
    out, cum = [], 0
    for b in bags:
        prev, cum = cum, cum + b.shares
        if any(have[con] < cum * abs(r) for con, r in legs) or b.commission is None:
            break
        prices, fees, ids = [], b.commission, [b.exec_id]
        complete = True
        for con, r in legs:
            p, owned = _vwap(per_leg[con], prev * abs(r), cum * abs(r))
            for k in owned:
                c = per_leg[con][k].commission
                if c is None:
                    complete = False
                    break
                fees += c
                ids.append(per_leg[con][k].exec_id)
            prices.append(round(p, 6))
        if not complete:
            break
        out.append(AssembledFill(b.exec_id, b.at, b.shares, round(net_from_ib(b.side, b.price), 6), tuple(prices),
                                 round(fees, 6), tuple(ids)))
    return out


#: IB's "not computed" value per tickOptionComputation field (a delta of -1 is a real deep put's delta)
_SENTINEL = {"impliedVol": -1.0, "optPrice": -1.0, "pvDividend": -1.0, "undPrice": -1.0,
             "delta": -2.0, "gamma": -2.0, "vega": -2.0, "theta": -2.0}


def missing_greek(name: str, x) -> bool:
    """True when IB sent no value for ``name``: None, NaN, its sentinel (-1 or -2) or the 'unset double'."""
    if x is None:
        return True
    try:
        v = float(x)
    except (TypeError, ValueError):
        return True
    return not math.isfinite(v) or v == _SENTINEL.get(name) or abs(v) > 1e300
