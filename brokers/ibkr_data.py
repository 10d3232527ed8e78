"""Option chains from Interactive Brokers: reqSecDefOptParams + quote snapshots with IB's model greeks.

IB sends "not computed" sentinels for a greek it has none for (-1 for the implied vol, option price, dividend
and underlying price; -2 for delta, gamma, vega, theta; or the unset double 1.79e308). ib_async 2.1 turns most
of them into None but passes vega's and theta's -2 through as if they were values. Every such field is treated
as missing (:func:`strikebench.brokers.ibkr_contracts.missing_greek`); the row's implied vol is then solved from
its mid with strikebench.pricing and its greeks recomputed from it (Black-Scholes, European), and the row is
flagged in :attr:`IBChain.recomputed` so a strategy or a report can tell IB's numbers from ours.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from strikebench.brokers.ibkr_contracts import MARKET_DATA_TYPES, index_fields, missing_greek
from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.options.chain import ChainSnapshot
from strikebench.options.contracts import OptionContract, settlement_time

__all__ = ["IBChain", "fetch_chain", "MARKET_DATA_NAMES", "TRADING_CLASSES"]

#: the trading classes strikebench trades per underlying (SPX monthlies are AM-settled "SPX", the rest "SPXW")
TRADING_CLASSES = {"SPX": ("SPX", "SPXW"), "XSP": ("XSP",), "VIX": ("VIX",)}
MARKET_DATA_NAMES = {v: k for k, v in MARKET_DATA_TYPES.items()}
_GREEKS = ("impliedVol", "delta", "gamma", "theta", "vega")


@dataclass(frozen=True)
class IBChain:
    snapshot: ChainSnapshot
    recomputed: np.ndarray  # bool per snapshot row: its iv/greeks were missing at IB and computed here
    market_data_type: str  # live | frozen | delayed | delayed_frozen, as IB marked the quotes
    contracts: tuple  # the qualified ib_async Contracts, in snapshot row order


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) and v > -1 and abs(v) < 1e300 else math.nan


def fetch_chain(ib, underlying: str, *, at=None, expiries: int | list = 2, width: float = 0.05,
                rate: float = 0.045, timeout: float = 10.0, qualified: dict | None = None) -> IBChain:
    """The chain of ``underlying`` from IB now: the nearest ``expiries`` (a count, or the dates), strikes within
    ``width`` (a fraction) of the index level, bid/ask/last and model greeks per contract. ``qualified`` (a dict
    OptionContract -> ib_async Contract, filled here) keeps qualifications across calls: TWS paces API messages
    (about 50 a second), so a chain's contracts are qualified once a session, not at every snapshot."""
    from ib_async import Contract

    at = pd.Timestamp.now(tz=NY) if at is None else pd.Timestamp(at).tz_convert(NY)
    index = Contract(**index_fields(underlying))
    if not ib.qualifyContracts(index) or not index.conId:
        raise StrikebenchError(f"IB does not know the index {underlying}")
    (it,) = ib.reqTickers(index)
    spot = next((v for v in (_num(it.last), _num(it.close), _num(it.midpoint())) if math.isfinite(v)), math.nan)
    if not math.isfinite(spot):
        raise StrikebenchError(f"IB sent no price for the index {underlying} (market data permissions?)")
    classes = TRADING_CLASSES.get(underlying, (underlying,))
    chains = [c for c in ib.reqSecDefOptParams(underlying, "", "IND", index.conId) if c.tradingClass in classes]
    if not chains:
        raise StrikebenchError(f"IB lists no {'/'.join(classes)} options on {underlying}")
    listed = sorted({(dt.datetime.strptime(e, "%Y%m%d").date(), ch.tradingClass) for ch in chains
                     for e in ch.expirations})
    listed = [(d, c) for d, c in listed if d >= at.date()]
    if isinstance(expiries, int):
        days = sorted({d for d, _ in listed})[:expiries]
    else:
        days = sorted(expiries)
    strikes = sorted({s for ch in chains for s in ch.strikes if abs(s - spot) <= width * spot})
    wanted = []
    for d, cls in listed:
        if d not in days:
            continue
        for k in strikes:
            for right in ("C", "P"):
                wanted.append(OptionContract.make(cls, d, k, right))
    from strikebench.brokers.ibkr_contracts import option_fields

    qualified = {} if qualified is None else qualified
    todo = [(c, Contract(**option_fields(c))) for c in wanted if c not in qualified]
    if todo:
        ib.qualifyContracts(*[ibc for _, ibc in todo])
        qualified.update(todo)  # unknown ones too (conId 0): not asked again
    keep = [(c, qualified[c]) for c in wanted if qualified[c].conId]
    tickers = ib.reqTickers(*[ibc for _, ibc in keep]) if keep else []
    n = len(keep)
    cols = {k: np.full(n, np.nan) for k in ("bid", "ask", "last", "iv", "delta", "gamma", "theta", "vega")}
    recomputed = np.zeros(n, dtype=bool)
    mdt = MARKET_DATA_NAMES.get(int(getattr(it, "marketDataType", 1) or 1), "live")
    for i, ((c, _), t) in enumerate(zip(keep, tickers)):
        cols["bid"][i], cols["ask"][i], cols["last"][i] = _num(t.bid), _num(t.ask), _num(t.last)
        g = t.modelGreeks
        vals = {name: (None if g is None else getattr(g, name)) for name in _GREEKS}
        if any(missing_greek(name, v) for name, v in vals.items()):
            recomputed[i] = True
        else:
            cols["iv"][i], cols["delta"][i], cols["gamma"][i] = vals["impliedVol"], vals["delta"], vals["gamma"]
            cols["theta"][i], cols["vega"][i] = vals["theta"], vals["vega"]
    if recomputed.any():
        _recompute(cols, [c for c, _ in keep], recomputed, spot, at, rate)
    snap = ChainSnapshot.from_arrays(underlying, at, spot, root=np.array([c.root for c, _ in keep], dtype=object),
                                     expiry=np.array([c.expiry for c, _ in keep], dtype="datetime64[D]"),
                                     strike=np.array([c.strike for c, _ in keep], dtype=float),
                                     is_call=np.array([str(c.right) == "C" for c, _ in keep]), **cols)
    # from_arrays sorts rows by contract key: carry the flags and contracts along the same order
    order, _ = ChainSnapshot.layout(np.array([c.root for c, _ in keep], dtype=object),
                                    np.array([c.expiry for c, _ in keep], dtype="datetime64[D]"),
                                    np.array([str(c.right) == "C" for c, _ in keep]),
                                    np.array([c.strike for c, _ in keep], dtype=float))
    return IBChain(snap, recomputed[order], mdt, tuple(keep[j][1] for j in order))


def _recompute(cols, contracts, rows, spot, at, rate) -> None:
    from strikebench.pricing import bsm, implied_vol

    idx = np.flatnonzero(rows)
    years = np.array([max((settlement_time(contracts[i]) - at).total_seconds(), 60.0) / (365.0 * 86400)
                      for i in idx])
    is_call = np.array([str(contracts[i].right) == "C" for i in idx])
    strike = np.array([contracts[i].strike for i in idx], dtype=float)
    mid = (cols["bid"][idx] + cols["ask"][idx]) / 2
    iv = implied_vol(mid, is_call, spot, strike, years, rate, 0.0)
    g = bsm(is_call, spot, strike, years, rate, 0.0, iv)
    cols["iv"][idx] = iv
    for name in ("delta", "gamma", "theta", "vega"):
        cols[name][idx] = getattr(g, name)
