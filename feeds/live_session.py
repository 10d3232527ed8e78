"""The session in progress behind the market interface: what every live data source (tradier, ibkr) shares.

A live market knows one session (its day). Its minute grid is allocated from the exchange calendar when it opens;
bars are filled as they close (:meth:`LiveSessionMarket.bar_closed`, called by the live runtime), minutes not yet
happened are NaN. Leg quotes of tracked contracts (:class:`LiveLegQuotes`) fill in the same way: at each bar's
close the latest quote is written from that minute on (later minutes carry it until their own bar closes).

A source implements three reads: ``_fetch_bars(symbol, lo, hi)`` (the minute bars from ``lo`` to ``hi``
inclusive, as ``(time, open, high, low, close, volume)`` rows), ``_fetch_quotes(contracts)`` (``{contract:
(bid, ask)}``) and ``_day_prints(symbol, day)`` (the day's ``(open, close)``, either ``None`` when unknown).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from strikebench.calendar import NY, MarketCalendar
from strikebench.errors import StrikebenchError
from strikebench.options.chain import LegQuotes

__all__ = ["LiveLegQuotes", "LiveSessionMarket", "BAR_COLUMNS"]

BAR_COLUMNS = ("open", "high", "low", "close", "volume")


class LiveLegQuotes(LegQuotes):
    """LegQuotes whose arrays fill in as the session goes (``mid`` is computed on each read, never cached)."""

    @property
    def mid(self) -> np.ndarray:  # type: ignore[override]
        return (self.bid + self.ask) * 0.5


class LiveSessionMarket:
    """One session of a live source's bars and leg quotes on the exchange calendar's minute grid."""

    source = "live"  # named in errors and notes
    #: a minute the source did not report (inside the filled span) carries the previous close (True: Tradier's
    #: timesales omit minutes without a print) or stays NaN (False: IB sends every minute of an index; one it did
    #: not send is not invented)
    carry_missing = True

    def _init_session(self, day: dt.date, symbols: Iterable[str], now) -> None:
        self._now = now or (lambda: pd.Timestamp.now(tz=NY))
        self.day = day
        o = pd.Timestamp(self.calendar.session_open(day)).tz_convert(NY)
        c = pd.Timestamp(self.calendar.session_close(day)).tz_convert(NY)
        self.grid = pd.date_range(o, c - pd.Timedelta(minutes=1), freq="min")
        self._bars: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
        self._filled: dict[str, int] = {}  # symbol -> bars filled up to (exclusive index)
        self._legs: list[tuple[tuple, LiveLegQuotes]] = []
        self.notes: list[str] = []
        for s in symbols:
            self.bars(s)

    @staticmethod
    def session_day(calendar: MarketCalendar, today: dt.date) -> dt.date:
        """``today`` when it is a session, else the next session."""
        return today if calendar.is_session(today) else pd.Timestamp(calendar.next_session(today)).date()

    # ------------------------------------------------------------- the source
    def _fetch_bars(self, symbol: str, lo: pd.Timestamp, hi: pd.Timestamp) -> Iterable[tuple]:
        raise NotImplementedError

    def _fetch_quotes(self, contracts: Sequence) -> dict:
        raise NotImplementedError

    def _day_prints(self, symbol: str, day: dt.date) -> tuple[float | None, float | None]:
        raise NotImplementedError

    # ----------------------------------------------------------------- grid
    def sessions(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex([pd.Timestamp(self.day)])

    def minutes(self) -> pd.DatetimeIndex:
        return self.grid

    def bars(self, symbol: str) -> pd.DataFrame:
        if symbol not in self._bars:
            arr = np.full((len(self.grid), len(BAR_COLUMNS)), np.nan)
            df = pd.DataFrame(arr, index=self.grid, columns=list(BAR_COLUMNS), copy=False)
            view = df["close"].to_numpy()
            if not np.shares_memory(view, arr):  # pragma: no cover - pandas would have copied
                raise StrikebenchError(f"the {self.source} market needs pandas to keep a frame's array (it copied)")
            self._bars[symbol] = (df, arr)
            self._filled[symbol] = 0
            self._fill_bars(symbol, self._now())
        return self._bars[symbol][0]

    def _fill_bars(self, symbol: str, now) -> None:
        """The minutes that closed by ``now`` and are not filled yet."""
        now = pd.Timestamp(now).tz_convert(NY)
        last = int(self.grid.searchsorted(now - pd.Timedelta(minutes=1), side="right"))  # bars whose close <= now
        start = self._filled[symbol]
        if last <= start:
            return
        arr = self._bars[symbol][1]
        got = 0
        for row in self._fetch_bars(symbol, self.grid[start], self.grid[last - 1]):
            t, vals = pd.Timestamp(row[0]), list(row[1:6])
            t = t.tz_localize(NY) if t.tzinfo is None else t.tz_convert(NY)
            i = int(self.grid.searchsorted(t))
            if i >= len(self.grid) or self.grid[i] != t or i >= last or vals[3] is None:
                continue
            arr[i] = [v if v is not None else np.nan for v in vals]
            got = max(got, i + 1)
        # a minute the source did not report carries the previous close (no trade printed): never a gap in the clock
        for i in range(start, last) if self.carry_missing else ():
            if not np.isfinite(arr[i, 3]) and i > 0 and np.isfinite(arr[i - 1, 3]):
                arr[i] = [arr[i - 1, 3]] * 4 + [0.0]
        self._filled[symbol] = last if got or last - start < 5 else start

    # -------------------------------------------------------------- advance
    def bar_closed(self, t) -> None:
        """The live runtime's bar ``t - 1 min`` has closed: read its bars and its legs' quotes."""
        t = pd.Timestamp(t).tz_convert(NY)
        for s in list(self._bars):
            self._fill_bars(s, t)
        i = int(self.grid.searchsorted(t - pd.Timedelta(minutes=1), side="right")) - 1
        if i < 0 or not self._legs:
            return
        contracts = list(dict.fromkeys(c for key, _ in self._legs for c in key))
        quotes = self._fetch_quotes(contracts)
        for key, lq in self._legs:
            for k, c in enumerate(key):
                q = quotes.get(c)
                if q is None:
                    continue
                b, a = q
                lq.bid[i:, k] = np.nan if b is None else b
                lq.ask[i:, k] = np.nan if a is None else a

    def bar_spot(self, underlying: str, at) -> float | None:
        """The last close at or before ``at`` of ``underlying``'s bars, None when there is none yet."""
        if underlying in self._bars:
            arr = self._bars[underlying][1][:, 3]
            i = int(self.grid.searchsorted(at, side="right")) - 1
            while i >= 0 and not np.isfinite(arr[i]):
                i -= 1
            if i >= 0:
                return float(arr[i])
        return None

    # ------------------------------------------------------------ leg quotes
    def snapshot(self, underlying: str, at, expiries: Sequence[dt.date] | None = None):
        """The chain at ``at`` (every listed expiry within ``params.max_dte`` unless ``expiries`` names them),
        fetched by :meth:`_fetch_snapshot`; the latest one is kept (a live session asks for now)."""
        at = pd.Timestamp(at).tz_convert(NY)
        if expiries is None:
            expiries = [e for e in self.listed_expiries(underlying, at.date())
                        if (e - at.date()).days <= self.params.max_dte]
        key = (underlying, at, tuple(expiries))
        snap = self._snaps.get(key)
        if snap is None:
            snap = self._fetch_snapshot(underlying, at, list(expiries))
            self._snaps = {key: snap}
        return snap

    def _fetch_snapshot(self, underlying: str, at: pd.Timestamp, expiries: list[dt.date]):
        raise NotImplementedError

    def leg_quotes(self, contracts: Sequence, day) -> LegQuotes:
        key = tuple(contracts)
        for k, lq in self._legs:
            if k == key:
                return lq
        n = len(self.grid)
        lq = LiveLegQuotes(contracts=key, times=self.grid.asi8.copy(), bid=np.full((n, len(key)), np.nan),
                           ask=np.full((n, len(key)), np.nan))
        self._legs.append((key, lq))
        self.bar_closed(self._now())  # what they are now
        return lq

    # ------------------------------------------------------------ settlement
    def settlement_value(self, contract) -> float:
        """PM-settled roots: the session's last minute close (or the day's close); AM-settled roots: the day's
        open (the source does not publish the special opening quotation: noted in :attr:`notes`)."""
        from strikebench.options.contracts import settlement_time

        und = getattr(contract, "underlying", "SPX")
        settle = pd.Timestamp(settlement_time(contract)).tz_convert(NY)
        day = settle.date()
        pm = settle.hour >= 15
        if pm and day == self.day and und in self._bars:
            arr = self._bars[und][1][:, 3]
            if np.isfinite(arr[-1]):
                return float(arr[-1])
        op, cl = self._day_prints(und, day)
        v = cl if pm else op
        if v is None:
            raise StrikebenchError(f"{self.source} has no {'close' if pm else 'open'} of {und} on {day} yet: "
                                   f"{contract} cannot be settled")
        if not pm:
            self.notes.append(f"{contract}: settled at {und}'s open {v:.2f} on {day} ({self.source} does not publish "
                              f"the special opening quotation)")
        return float(v)
