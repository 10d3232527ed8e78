"""Implied volatility and greeks for chain files that lack them, and the rate / dividend inputs.

Real option data often carries bid and ask only. When a chain file has no ``iv`` column, or a row's
``iv`` is empty, the ``files`` and ``databento`` feeds compute IV and greeks for those rows, one
vectorized call per session, with the project's pricing (:func:`strikebench.pricing.implied_vol`
then :func:`strikebench.pricing.bsm`):

* price: the quote midpoint ``(bid + ask) / 2``, only where ``0 < bid <= ask`` (a zero bid, a
  crossed or one-sided quote gets no IV: NaN, as does a mid below intrinsic);
* spot: the row's ``underlying_price``; time: ACT/365 from the quote (the bar's close, i.e. the
  row's timestamp + 1 minute) to the contract's settlement (09:30 for AM roots SPX/VIX, the
  session close for PM roots such as SPXW/XSP, 13:00 on early closes), the convention of the
  synthetic market;
* rate and dividend yield: :class:`DailyValue` (a constant, or a file of daily values);
* model: Black-Scholes-Merton on the index (European, continuous dividend yield). VIX options
  are priced off the VX future, which the chain files do not carry: their IV and greeks are left
  empty (NaN) rather than computed off spot VIX.

Units are :func:`strikebench.pricing.bsm`'s: delta per point, gamma per point, theta per
calendar day, vega per vol point.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from strikebench.errors import DataError

__all__ = ["DailyValue", "fill_greeks", "settle_ns"]

_NS_MIN = 60_000_000_000
NS_PER_YEAR = 365 * 24 * 3600 * 1e9


class DailyValue:
    """A rate or yield (decimal, continuously compounded): a constant, or daily values from a file.

    The file is CSV or Parquet with columns ``date`` and ``value`` (decimal: 0.045 for 4.5 %), one
    row per day, sorted; a session uses the value of the latest date at or before it (values
    carry forward over weekends and gaps). A session before the first date is an error.
    """

    def __init__(self, spec, *, key: str):
        self.key = key
        self.constant: float | None = None
        self.path: Path | None = None
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            self.constant = float(spec)
            return
        self.path = Path(os.fspath(spec))
        self.dates, self.values = self._read(self.path)

    def _read(self, p: Path) -> tuple[np.ndarray, np.ndarray]:
        from strikebench.userfiles import check_file

        check_file(os.fspath(p), what=f"{self.key} file", key=self.key, error=DataError)
        try:
            if p.suffix.lower() == ".parquet":
                df = pd.read_parquet(p)
            else:
                df = pd.read_csv(p, dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001 - any reader failure is one line naming the file
            raise DataError(f"{p}: cannot read {self.key} file ({' '.join(str(exc).split())[:200]})") from None
        missing = [c for c in ("date", "value") if c not in df.columns]
        if missing:
            raise DataError(f"{p}: missing column {', '.join(missing)} (the file has {', '.join(map(str, df.columns))})")
        if df.empty:
            raise DataError(f"{p}: no rows")
        line = (lambda i: f"line {i + 2}") if p.suffix.lower() != ".parquet" else (lambda i: f"row {i}")
        dates = pd.to_datetime(df["date"], errors="coerce", format="mixed")
        if dates.isna().any():
            i = int(np.flatnonzero(dates.isna().to_numpy())[0])
            raise DataError(f"{p}: {line(i)}: field 'date' is {df['date'].iloc[i]!r}, not a date")
        values = pd.to_numeric(df["value"], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values) | (np.abs(values) > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{p}: {line(i)}: field 'value' is {df['value'].iloc[i]!r}, not a decimal rate "
                            f"(0.045 for 4.5 %)")
        d = dates.dt.normalize().to_numpy().astype("datetime64[D]")
        if d.size > 1 and np.any(np.diff(d.astype(np.int64)) <= 0):
            i = int(np.flatnonzero(np.diff(d.astype(np.int64)) <= 0)[0]) + 1
            raise DataError(f"{p}: {line(i)}: dates are not increasing ({d[i]} after {d[i - 1]})")
        return d, values

    def on(self, day: dt.date) -> float:
        if self.constant is not None:
            return self.constant
        k = int(np.searchsorted(self.dates, np.datetime64(day, "D"), side="right")) - 1
        if k < 0:
            raise DataError(f"{self.path}: no {self.key} on or before {day} (the file starts {self.dates[0]})")
        return float(self.values[k])

    def __repr__(self) -> str:
        return f"DailyValue({self.constant if self.path is None else str(self.path)!r})"


def settle_ns(roots: np.ndarray, expiries: np.ndarray) -> np.ndarray:
    """UTC ns of the settlement print of each (root, expiry) row (AM roots: the open; PM: the close)."""
    from strikebench.options.contracts import OptionContract, settlement_time

    out = np.empty(len(roots), dtype=np.int64)
    if not len(roots):
        return out
    pair = pd.MultiIndex.from_arrays([roots, expiries])
    codes, uniq = pd.factorize(pair)
    values = np.empty(len(uniq), dtype=np.int64)
    for k, (root, exp) in enumerate(uniq):
        c = OptionContract.make(str(root), pd.Timestamp(exp).date(), 1.0, "C")
        values[k] = settlement_time(c).value
    return values[codes]


def fill_greeks(cols: dict, times_ns: np.ndarray, spot: np.ndarray, rate: float, div_yield: float,
                rows: np.ndarray | None = None) -> int:
    """Fill ``iv, delta, gamma, theta, vega`` of ``cols`` (arrays per row) where ``iv`` is NaN, among
    ``rows`` (indices; None: every row).

    ``times_ns``: each row's timestamp (bar start, UTC ns); ``spot``: each row's underlying price.
    Returns the number of rows that were missing an IV (computed or left NaN). In place."""
    from strikebench.pricing import bsm, implied_vol

    if rows is None:
        need = ~np.isfinite(cols["iv"]) & (cols["root"] != "VIX")
        idx = np.flatnonzero(need)
    else:
        idx = rows[~np.isfinite(cols["iv"][rows]) & (cols["root"][rows] != "VIX")]
    if not idx.size:
        return 0
    bid, ask = cols["bid"][idx], cols["ask"][idx]
    quoted = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
    mid = np.where(quoted, 0.5 * (bid + ask), np.nan)
    t_q = times_ns[idx] + _NS_MIN
    years = np.maximum(settle_ns(cols["root"][idx], cols["expiry"][idx]) - t_q, 0) / NS_PER_YEAR
    is_call, S, K = cols["is_call"][idx], spot[idx], cols["strike"][idx]
    iv = implied_vol(mid, is_call, S, K, years, rate, div_yield)
    g = bsm(is_call, S, K, years, rate, div_yield, np.where(np.isfinite(iv), iv, 0.0))
    ok = np.isfinite(iv)
    for name, v in (("iv", iv), ("delta", g.delta), ("gamma", g.gamma), ("theta", g.theta), ("vega", g.vega)):
        col = cols[name]
        if not col.flags.writeable:  # a zero-copy view of the file's column
            cols[name] = col = col.copy()
        col[idx] = np.where(ok, v, np.nan)
    return int(idx.size)
