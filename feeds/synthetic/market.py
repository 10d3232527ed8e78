"""``SyntheticMarket``: the embedded default data source (a :class:`MarketData`).

    market = SyntheticMarket(seed=42, start="2023-01-03", end="2023-12-29", scenario="default")
    market.bars("SPX")                        # minute bars, tz-aware America/New_York, bar-start labels
    market.snapshot("SPX", at)                # every SPXW daily out to 45 DTE + SPX AM monthlies
    market.leg_quotes(contracts, day)         # bid/ask of a few legs for every minute of a session
    market.settlement_value(contract)         # AM: opening print; PM: close; VIX: the SOQ

The path of the requested sessions (SPX, VIX, VIX9D and the variance state) is drawn at
construction from a calendar-wide daily layer and each session's own random stream (see
:mod:`.underlying`), so a session's bars and chains are the same whatever ``start``/``end``
is asked for; chains are generated on demand from that state, with per-session static
parts cached. Same seed and scenario: bit-identical bars and chains for a day on any
machine and in any range.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from typing import Sequence

import numpy as np
import pandas as pd

from strikebench.calendar import NY, MarketCalendar, default_calendar
from strikebench.options.chain import ChainSnapshot, LegQuotes, quote_flags

from .chains import (
    UNDERLYINGS,
    DayChain,
    DayListing,
    SeriesSet,
    SessionLegs,
    build_day_chain,
    day_listing,
    leg_block,
    minute_multipliers,
    quote_block,
    series_smile,
    series_state,
    series_for_contracts,
    variance_table,
)
from .scenario import ARCHETYPES, Scenario, load_scenario
from .underlying import NS_DAY, NS_MIN, simulate

__all__ = ["SyntheticMarket", "SYMBOLS"]

#: Bar symbols: the index, its mini, the vol indices and the front two VIX futures (rolling at expiry).
SYMBOLS = ("SPX", "XSP", "VIX", "VIX9D", "VX1", "VX2")

_DAY_CACHE = 12


class SyntheticMarket:
    """A deterministic synthetic SPX/XSP/VIX market with option chains (see module docstring)."""

    def __init__(self, seed: int = 42, start="2023-01-03", end="2023-12-29",
                 scenario: str | Scenario = "default", calendar: MarketCalendar | None = None):
        self.seed = int(seed)
        self.scenario = load_scenario(scenario)
        self.calendar = calendar or default_calendar()
        self.path = simulate(self.scenario, self.seed, start, end, self.calendar)
        tl = self.path.timeline
        self.start = pd.Timestamp(tl.dates[0]).date()
        self.end = pd.Timestamp(tl.dates[tl.n_sim - 1]).date()
        self._bars: dict[str, pd.DataFrame] = {}
        self._chains: OrderedDict[tuple[str, int], DayChain] = OrderedDict()
        self._listings: OrderedDict[tuple[str, int], DayListing] = OrderedDict()
        self._listed: dict[tuple[str, int], list[dt.date]] = {}
        self._layouts: OrderedDict[tuple, dict] = OrderedDict()
        self._mults: OrderedDict[int, tuple] = OrderedDict()
        self._vix_exp_days = self._vix_expiry_days()
        self._legs_sessions: OrderedDict[int, SessionLegs] = OrderedDict()
        self._legs_by_day: dict = {}
        self._leg_series_of: dict = {}
        self._leg_series_by_root: dict = {}
        self._layouts_asked: dict = {}
        #: per underlying, the strike hulls of the latest session listed (chains.listed_strike_sets)
        self._strike_hulls: dict = {}

    def __repr__(self) -> str:
        return (f"SyntheticMarket(seed={self.seed}, start='{self.start}', end='{self.end}', "
                f"scenario='{self.scenario.name}')")

    # ================================================================ bars
    def sessions(self) -> pd.DatetimeIndex:
        """The simulated sessions (naive dates)."""
        return self.path.timeline.sessions

    def minutes(self) -> pd.DatetimeIndex:
        """Every simulated bar label, tz-aware America/New_York."""
        return pd.DatetimeIndex(pd.to_datetime(self.path.timeline.minute_ns, utc=True)).tz_convert(NY)

    def bars(self, symbol: str) -> pd.DataFrame:
        """Minute bars of ``symbol`` (one of :data:`SYMBOLS`): open, high, low, close, volume (float64),
        indexed by tz-aware America/New_York bar-start labels."""
        symbol = symbol.upper()
        if symbol not in SYMBOLS:
            raise KeyError(f"unknown symbol '{symbol}' (the synthetic market has {', '.join(SYMBOLS)})")
        if symbol not in self._bars:
            self._bars[symbol] = self._make_bars(symbol)
        return self._bars[symbol]

    def _make_bars(self, symbol: str) -> pd.DataFrame:
        p = self.path
        tl = p.timeline
        if symbol in ("SPX", "XSP"):
            f = 0.1 if symbol == "XSP" else 1.0
            cols = (p.spx_open * f, p.spx_high * f, p.spx_low * f, p.spx_close * f, p.spx_volume)
        else:
            if symbol in ("VIX", "VIX9D"):
                steps = p.vix_step if symbol == "VIX" else p.vix9d_step
                close = steps[tl.minute_step]
                open_ = steps[tl.minute_step - 1]
            else:
                nth = 0 if symbol == "VX1" else 1
                m = np.arange(len(tl.minute_ns))
                close = self._front_future(m, nth, at_close=True)
                open_ = np.empty_like(close)
                open_[1:] = close[:-1]
                first = tl.day_first_minute
                open_[first] = self._front_future(first, nth, at_close=False)
            close = np.round(close, 2)
            open_ = np.round(open_, 2)
            # bar ranges from each session's own stream: the same whatever range is asked
            ords = tl.dates[: tl.n_sim].astype(np.int64)
            wig = np.concatenate([
                np.random.Generator(np.random.PCG64(np.random.SeedSequence(
                    entropy=self.seed, spawn_key=(23, SYMBOLS.index(symbol), int(o))))).standard_normal((2, int(n)))
                for o, n in zip(ords, tl.n_minutes[: tl.n_sim])], axis=1)
            wig = np.abs(wig) * 0.0008 * close
            high = np.round(np.maximum(open_, close) + wig[0], 2)
            low = np.round(np.minimum(open_, close) - wig[1], 2)
            cols = (open_, high, low, close, np.zeros(len(close)))
        df = pd.DataFrame(dict(zip(("open", "high", "low", "close", "volume"), (np.asarray(c, np.float64) for c in cols))),
                          index=self.minutes())
        df.index.name = "timestamp"
        return df

    def daily(self) -> pd.DataFrame:
        """One row per session: SPX open/close, VIX/VIX9D/VX1 close, archetype, event labels."""
        p = self.path
        tl = p.timeline
        D = tl.n_sim
        last = tl.day_first_minute + tl.n_minutes[:D] - 1
        kinds = [[] for _ in range(D)]
        for e in p.events:
            if e.step >= 0:
                kinds[int(p.step_day[e.step])].append(e.label)
        vx1 = self._front_future(last, 0, at_close=True)
        return pd.DataFrame({
            "spx_open": p.day_open, "spx_close": p.day_close,
            "vix": np.round(p.vix_step[tl.minute_step[last]], 2),
            "vix9d": np.round(p.vix9d_step[tl.minute_step[last]], 2),
            "vx1": np.round(vx1, 2),
            "archetype": [ARCHETYPES[a] for a in p.archetype],
            "events": [",".join(k) for k in kinds],
        }, index=self.sessions())

    def checksum(self) -> str:
        """SHA-256 of every bar of every symbol: two markets with equal checksums are identical."""
        h = hashlib.sha256(repr((self.seed, str(self.start), str(self.end))).encode())
        for s in SYMBOLS:
            h.update(np.ascontiguousarray(self.bars(s).to_numpy()).tobytes())
        return h.hexdigest()

    # ========================================================= VIX futures
    def _vix_expiry_days(self) -> np.ndarray:
        tl = self.path.timeline
        first = pd.Timestamp(tl.dates[0])
        last = pd.Timestamp(tl.dates[-1])
        y, m = first.year, first.month
        out = []
        while (y, m) <= (last.year, last.month):
            e = np.datetime64(self.calendar.vix_expiry(y, m), "D")
            j = int(np.searchsorted(tl.dates, e))
            if e >= tl.dates[0] and j < len(tl.dates) and tl.dates[j] == e:
                out.append(j)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return np.asarray(sorted(set(out)), dtype=np.int64)

    def vix_future_at(self, m, exp_day):
        """Price of the VIX future settling at the open of session ``exp_day``, at minute(s) ``m``
        (NaN once settled); broadcasts."""
        p = self.path
        tl = p.timeline
        m = np.asarray(m)
        exp_day = np.asarray(exp_day)
        t_q = tl.minute_ns[m] + NS_MIN
        step = tl.minute_step[m]
        c_now = tl.c_end[m]
        return self._future(step, t_q, c_now, exp_day)

    def _future(self, step, t_q, c_now, exp_day):
        p = self.path
        tl = p.timeline
        open_e = tl.open_ns[exp_day]
        dC0 = tl.c_open[exp_day] - c_now
        dC1 = tl.clock_after(exp_day, 0.0, 30) - c_now
        ev = p.event_variance(open_e, open_e + 30 * NS_DAY)
        days = (open_e - t_q) / NS_DAY
        price = p.model.vix_future(p.yf[step], p.ys[step], p.eps[step], np.maximum(dC0, 0.0), dC1, ev, days)
        return np.where(t_q < open_e, price, np.nan)

    def _front_future(self, m, nth: int, at_close: bool):
        """The nth-nearest unexpired future at minute(s) m (bar close, or the day's open)."""
        p = self.path
        tl = p.timeline
        m = np.asarray(m)
        if at_close:
            t_q = tl.minute_ns[m] + NS_MIN
            step = tl.minute_step[m]
            c_now = tl.c_end[m]
        else:
            d = tl.minute_day[m]
            t_q = tl.open_ns[d]
            step = tl.gap_step[d]
            c_now = tl.c_open[d]
        exp_open = tl.open_ns[self._vix_exp_days]
        i = np.searchsorted(exp_open, t_q, side="right") + nth
        i = np.minimum(i, len(self._vix_exp_days) - 1)
        return self._future(step, t_q, c_now, self._vix_exp_days[i])

    def vix_futures(self, at) -> pd.Series:
        """The VIX futures curve at minute ``at``: price by expiry date (unexpired, listed ones)."""
        m = self.minute_index(at)
        tl = self.path.timeline
        t_q = tl.minute_ns[m] + NS_MIN
        days = self._vix_exp_days[tl.open_ns[self._vix_exp_days] > t_q][:8]
        prices = self.vix_future_at(np.full(len(days), m), days)
        return pd.Series(np.round(prices, 2), index=pd.Index([pd.Timestamp(tl.dates[j]).date() for j in days], name="expiry"),
                         name="VX")

    # ============================================================== chains
    def minute_index(self, at) -> int:
        """Index of the bar labelled ``at`` (floored to the minute); ValueError outside sessions."""
        ts = pd.Timestamp(at)
        if ts.tzinfo is None:
            ts = ts.tz_localize(NY)
        ns = ts.value - ts.value % NS_MIN
        tl = self.path.timeline
        i = int(np.searchsorted(tl.minute_ns, ns))
        if i >= len(tl.minute_ns) or tl.minute_ns[i] != ns:
            raise ValueError(f"{ts.tz_convert(NY)} is not a bar of the synthetic market "
                             f"(sessions {self.start}..{self.end}, regular hours)")
        return i

    def _minute_indices(self, ats) -> np.ndarray:
        """:meth:`minute_index` of each of ``ats`` (int64): tz-aware Timestamps (an engine's clock) looked up at
        once, anything else one by one."""
        if all(type(a) is pd.Timestamp and a.tzinfo is not None for a in ats):
            ns = np.array([a.value for a in ats], dtype=np.int64)
            ns -= ns % NS_MIN
            minute_ns = self.path.timeline.minute_ns
            i = np.searchsorted(minute_ns, ns)
            ok = i < len(minute_ns)
            if ok.all() and (minute_ns[i] == ns).all():
                return i.astype(np.int64, copy=False)
        return np.array([self.minute_index(a) for a in ats], dtype=np.int64)  # (raises for a minute not a bar)

    def day_chain(self, underlying: str, day: int, expiries=None, *, roots=None, is_call: bool | None = None) -> DayChain:
        """Every contract listed on session ``day`` (cached), or only those of ``expiries`` (datetime64[D]
        values), ``roots`` and calls or puts (``is_call``) when given (built from the session's cached listing,
        the same rows and values as in the whole chain)."""
        if expiries is not None or roots is not None or is_call is not None:
            return build_day_chain(self, underlying, int(day), expiries, listing=self.day_listing(underlying, day),
                                   roots=roots, is_call=is_call)
        key = (underlying, int(day))
        dc = self._chains.get(key)
        if dc is None:
            dc = build_day_chain(self, underlying, int(day), listing=self.day_listing(underlying, day))
            self._chains[key] = dc
            if len(self._chains) > _DAY_CACHE:
                self._chains.popitem(last=False)
        else:
            self._chains.move_to_end(key)
        return dc

    def day_listing(self, underlying: str, day: int) -> DayListing:
        """Session ``day``'s series and strikes of ``underlying`` before any contract row (cached)."""
        key = (underlying, int(day))
        got = self._listings.get(key)
        if got is None:
            got = day_listing(self, underlying, int(day))
            self._listings[key] = got
            if len(self._listings) > _DAY_CACHE:
                self._listings.popitem(last=False)
        else:
            self._listings.move_to_end(key)
        return got

    def _day_mults(self, d: int):
        got = self._mults.get(d)
        if got is None:
            got = minute_multipliers(self, d)
            self._mults[d] = got
            if len(self._mults) > _DAY_CACHE:
                self._mults.popitem(last=False)
        return got

    def listed_expiries(self, underlying: str, day) -> list[dt.date]:
        """Expiries of ``underlying`` listed on session ``day`` (any root), ascending: what a
        strategy picks from before asking :meth:`snapshot` for only those (cached per session)."""
        und = underlying.upper()
        d = self.path.timeline.day_index(day)
        key = (und, int(d))
        got = self._listed.get(key)
        if got is None:
            lst = self.day_listing(und, d)
            listed = lst.n > 0  # series with a contract
            got = [e.item() for e in np.unique(lst.series.expiry[listed].astype("datetime64[D]"))]  # dates
            self._listed[key] = got
        return got

    def snapshot(self, underlying: str, at, expiries: Sequence[dt.date] | None = None, *,
                 roots: Sequence[str] | None = None, is_call: bool | None = None) -> ChainSnapshot:
        """Every listed quote of ``underlying`` ('SPX', 'XSP', 'VIX') at the close of the bar labelled ``at``
        (only ``expiries``, ``roots`` and calls or puts when given: those rows, exactly as in the full chain)."""
        und = underlying.upper()
        if und not in UNDERLYINGS:
            raise ValueError(f"unknown underlying '{underlying}' (the synthetic market lists {', '.join(UNDERLYINGS)})")
        m = self.minute_index(at)
        tl = self.path.timeline
        d = int(tl.minute_day[m])
        pos = int(tl.minute_pos[m])
        lay = self._layout(und, d, expiries, roots, is_call)
        s = lay["series"]
        mult, expiring, vcum = self._day_mults(d)
        table, row = self._chain_table(und, d, np.array([m]), s.c_settle)
        st = series_smile(self, und, series_state(self, und, m, int(row[0]), table, s.settle_ns, s.c_settle, s.exp_day))
        st = {k: v[lay["sidx"]] for k, v in st.items()}
        q = quote_block(self, und, m, st, lay["strike"], lay["is_call"], mult[pos], expiring[pos], greeks=True)
        volume = np.floor(lay["day_volume"] * vcum[pos]).astype(np.int64)
        if und == "VIX":
            px = float(np.round(self.path.vix_step[tl.minute_step[m]], 2))
        else:
            px = float(self.path.spx_close[m] * (0.1 if und == "XSP" else 1.0))
        return ChainSnapshot.from_sorted(
            und, _bar_stamp(at, int(tl.minute_ns[m])), px, lay["key"], static=lay["static"], root=lay["root"],
            expiry=lay["expiry"],
            strike=lay["strike"], is_call=lay["is_call"], bid=q["bid"], ask=q["ask"], last=q["last"], volume=volume,
            open_interest=lay["open_interest"], iv=q["iv"], delta=q["delta"], gamma=q["gamma"], theta=q["theta"],
            vega=q["vega"],
        )

    def snapshots(self, underlying: str, ats: Sequence, expiries: Sequence[dt.date] | None = None, *,
                  roots: Sequence[str] | None = None, is_call: bool | None = None) -> list[ChainSnapshot]:
        """:meth:`snapshot` at each of ``ats`` (minutes of one session), priced in one vectorized call over
        (minutes x contracts): the same snapshots, bit for bit, for a fraction of the per-call cost when a
        strategy decides many times a session (21 XSP 0DTE chains: ~7x less). VIX is not batched: its entries
        after the first are None (ask :meth:`snapshot` at that minute)."""
        und = underlying.upper()
        if und not in UNDERLYINGS:
            raise ValueError(f"unknown underlying '{underlying}' (the synthetic market lists {', '.join(UNDERLYINGS)})")
        if und == "VIX":  # the VIX futures term broadcast over minutes differs in the last bit: not batched
            return ([self.snapshot(und, ats[0], expiries, roots=roots, is_call=is_call)] + [None] * (len(ats) - 1)
                    if len(ats) else [])
        ms = self._minute_indices(ats)
        if ms.size == 0:
            return []
        tl = self.path.timeline
        days = tl.minute_day[ms]
        d = int(days[0])
        if (days != d).any():
            raise ValueError("snapshots() takes minutes of one session")
        lay = self._layout(und, d, expiries, roots, is_call)
        s = lay["series"]
        mult, expiring, vcum = self._day_mults(d)
        m = ms[:, None]
        pos = tl.minute_pos[ms]
        table, rows = self._chain_table(und, d, ms, s.c_settle)
        rows = rows[:, None]
        st = series_smile(self, und, series_state(self, und, m, rows, table, s.settle_ns[None, :], s.c_settle[None, :],
                                                  s.exp_day[None, :]))
        shape = (ms.size, len(s.settle_ns))
        st = {k: (v if v.shape == shape else np.broadcast_to(v, shape))[:, lay["sidx"]] for k, v in st.items()}
        q = quote_block(self, und, m, st, lay["strike"][None, :], lay["is_call"][None, :], mult[pos][:, None],
                        expiring[pos][:, None], greeks=True)
        # every minute's flags, volume, index level and time at once (elementwise: the same values)
        flags = quote_flags(q["bid"], q["ask"])
        volume = np.floor(lay["day_volume"][None, :] * vcum[pos][:, None]).astype(np.int64)
        for block in (*q.values(), flags, volume):  # read-only blocks: each snapshot's rows are read-only views
            block.flags.writeable = False
        pxs = (self.path.spx_close[ms] * (0.1 if und == "XSP" else 1.0)).tolist()
        ns = tl.minute_ns[ms].tolist()
        stamps = [_bar_stamp(a, t, make=False) for a, t in zip(ats, ns)]  # an engine's clock: its own Timestamps
        if any(t is None for t in stamps):
            stamps = pd.DatetimeIndex(pd.to_datetime(tl.minute_ns[ms], utc=True)).tz_convert(NY)
        return ChainSnapshot.from_block(
            und, stamps, pxs, lay["key"], flags, static=lay["static"], root=lay["root"], expiry=lay["expiry"],
            strike=lay["strike"], is_call=lay["is_call"], bid=q["bid"], ask=q["ask"], last=q["last"], volume=volume,
            open_interest=lay["open_interest"], iv=q["iv"], delta=q["delta"], gamma=q["gamma"], theta=q["theta"],
            vega=q["vega"])

    def _chain_table(self, und: str, d: int, ms: np.ndarray, c_settle: np.ndarray):
        """(variance table, row of each of minutes ``ms`` in it) for a snapshot of series settling at ``c_settle``
        on session ``d``: the session's leg-quote table (:class:`~.chains.SessionLegs`, every minute) when it is
        built out to the grid points these lookups read (its columns are the same values as any table's of those
        states), else a table of these minutes only. VIX reads none."""
        if und == "VIX":
            return None, np.zeros(len(ms), dtype=np.int64)
        ses = self._legs_sessions.get(d)
        if ses is not None and ses.table is not None and len(c_settle) and len(ms):
            tl = self.path.timeline
            need = self.path.model.lookup_points(np.max(c_settle) - np.min(tl.c_end[ms]))
            if ses.table[0].shape[1] >= need:
                return ses.table, tl.minute_pos[ms]
        return variance_table(self, ms, c_settle), np.arange(len(ms))

    def _layout(self, und: str, d: int, expiries, roots=None, is_call=None) -> dict:
        """The contracts a snapshot of session ``d`` lists (all, or those of ``expiries``, ``roots``, calls or
        puts), in the snapshot's row order with their keys: the same all session, so selected, keyed and
        sorted once (a snapshot then only prices)."""
        try:  # the request as asked, before any normalizing (a decision asks the same way all session)
            fast = (und, d, None if expiries is None else tuple(expiries),
                    roots if roots is None or isinstance(roots, str) else tuple(roots), is_call)
            lay = self._layouts_asked.get(fast)
        except TypeError:  # unhashable parts: normalize below
            fast = lay = None
        if lay is not None:
            return lay
        lay = self._layout_normalized(und, d, expiries, roots, is_call)
        if fast is not None:
            if len(self._layouts_asked) > 4 * _DAY_CACHE:
                self._layouts_asked.clear()
            self._layouts_asked[fast] = lay
        return lay

    def _layout_normalized(self, und: str, d: int, expiries, roots=None, is_call=None) -> dict:
        want = None
        if expiries is not None:
            want = np.unique(np.array([e if type(e) is dt.date else pd.Timestamp(e).date() for e in expiries],
                                      dtype="datetime64[D]"))
        roots = None if roots is None else tuple(sorted({roots} if isinstance(roots, str) else set(roots)))
        is_call = None if is_call is None else bool(is_call)
        key = (und, d, None if want is None else want.tobytes(), roots, is_call)
        lay = self._layouts.get(key)
        if lay is not None:
            self._layouts.move_to_end(key)
            return lay
        # only the requested rows are built (expiries, roots, right), in contract-key order
        dc = self.day_chain(und, d, want, roots=roots, is_call=is_call)
        rows, keys = ChainSnapshot.layout(dc.root, dc.expiry, dc.is_call, dc.strike)
        # only the series with rows: a snapshot prices each series' state once, then spreads it over its rows
        used, sidx = np.unique(dc.sidx[rows], return_inverse=True)
        s = dc.series
        series = SeriesSet(s.root[used], s.expiry[used], s.exp_day[used], s.settle_ns[used], s.c_settle[used],
                           s.is_am[used])
        lay = {"series": series, "key": keys, "sidx": sidx.reshape(-1), "strike": dc.strike[rows],
               "is_call": dc.is_call[rows], "root": dc.root[rows], "expiry": dc.expiry[rows],
               "open_interest": dc.open_interest[rows], "day_volume": dc.day_volume[rows],
               "static": {}}  # what the snapshots of this listing share (ChainSnapshot.from_sorted)
        self._layouts[key] = lay
        if len(self._layouts) > 4 * _DAY_CACHE:
            self._layouts.popitem(last=False)
            self._layouts_asked.clear()  # it may name the layout dropped
        return lay

    def model_values(self, underlying: str, at) -> pd.DataFrame:
        """The model behind a snapshot, unrounded: one row per listed contract with root,
        expiry, strike, is_call, years to settlement, forward, ATM total variance, iv and mid.
        For research and arbitrage checks; the snapshot's quotes are these mids +- half-spread."""
        und = underlying.upper()
        m = self.minute_index(at)
        tl = self.path.timeline
        d = int(tl.minute_day[m])
        pos = int(tl.minute_pos[m])
        dc = self.day_chain(und, d)
        s = dc.series
        mult, expiring, _ = self._day_mults(d)
        st = series_state(self, und, m, 0, variance_table(self, m), s.settle_ns, s.c_settle, s.exp_day)
        st = {k: v[dc.sidx] for k, v in st.items()}
        q = quote_block(self, und, m, st, dc.strike, dc.is_call, mult[pos], expiring[pos], greeks=False)
        return pd.DataFrame({
            "root": dc.root, "expiry": dc.expiry, "strike": dc.strike, "is_call": dc.is_call,
            "settle_ns": s.settle_ns[dc.sidx], "years": st["years"], "forward": st["fwd"],
            "atm_total_variance": st["theta"], "iv": q["iv"], "mid": q["mid"],
        })

    def leg_quotes(self, contracts: Sequence, day) -> LegQuotes:
        """Bid/ask of ``contracts`` at every minute of session ``day``: one vectorized pricing
        call per series over (minutes x its legs), from what every leg set quoted that session shares
        (:class:`~.chains.SessionLegs`, built once a session). NaN where a leg is not quoted (expired, or
        an AM series on its settlement day)."""
        contracts = tuple(contracts)
        ses = self._session_legs(day)
        n, L = ses.n, len(contracts)
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(contracts):
            series = self._leg_series_of.get(c)
            if series is None:
                series = self._leg_series(c)
            groups.setdefault(series, []).append(i)
        priced = []  # (columns, bid, ask) of each quoted series' legs
        for key, cols in groups.items():
            st = ses.series(*key)
            if st is not None:
                strike = np.array([[contracts[i].strike for i in cols]], dtype=np.float64)
                sgn = np.array([[1.0 if contracts[i].is_call else -1.0 for i in cols]])  # (pricing._sign)
                priced.append((cols, *leg_block(self, key[0], st, strike, sgn)))
        if len(priced) == 1 and len(priced[0][0]) == L:  # one series: its block, in the legs' order
            _, bid, ask = priced[0]
        else:
            bid = np.full((n, L), np.nan)
            ask = np.full((n, L), np.nan)
            for cols, b, a in priced:
                bid[:, cols] = b
                ask[:, cols] = a
        return LegQuotes(contracts=contracts, times=ses.times.copy(), bid=bid, ask=ask)

    def _session_legs(self, day) -> SessionLegs:
        """The session's :class:`~.chains.SessionLegs` (cached, by the ``day`` as given and by index)."""
        got = self._legs_by_day.get(day)
        if got is not None:
            return got
        d = int(self.path.timeline.day_index(day))
        got = self._legs_sessions.get(d)
        if got is None:
            got = SessionLegs(self, d)
            self._legs_sessions[d] = got
            if len(self._legs_sessions) > _DAY_CACHE:
                old = self._legs_sessions.popitem(last=False)[1]
                self._legs_by_day = {k: v for k, v in self._legs_by_day.items() if v is not old}
        try:
            self._legs_by_day[day] = got
        except TypeError:  # an unhashable day
            pass
        return got

    def _leg_series(self, contract) -> tuple:
        """(underlying, expiry session, AM) of a contract quoted by :meth:`leg_quotes` (cached per contract,
        and per root and expiry, which decide it: a new strike of a known series costs no lookup)."""
        key = (contract.root, contract.expiry)
        series = self._leg_series_by_root.get(key)
        if series is None:
            und = _underlying_of(contract)
            s = series_for_contracts(self.path, [contract])  # ValueError for an expiry that is not a session
            series = (und, int(s.exp_day[0]), bool(s.is_am[0]))
            self._leg_series_by_root[key] = series
        if len(self._leg_series_of) > 20_000:
            self._leg_series_of.clear()
        self._leg_series_of[contract] = series
        return series

    def settlement_value(self, contract) -> float:
        """The print that settles ``contract``: PM -> the expiry session's close; SPX AM -> its
        opening print; VIX -> the Special Opening Quotation (VIX at that open, which is also the
        expiring future's final value)."""
        p = self.path
        tl = p.timeline
        try:
            d = tl.day_index(contract.expiry)
        except KeyError:
            raise ValueError(f"{contract}: expiry {contract.expiry} is outside the simulated sessions "
                             f"{self.start}..{self.end}") from None
        und = _underlying_of(contract)
        if und == "VIX":
            return float(np.round(p.vix_step[tl.gap_step[d]], 2))
        am = str(contract.settlement_style) == "AM"
        value = p.day_open[d] if am else p.day_close[d]
        return float(value * 0.1) if und == "XSP" else float(value)

    # ============================================================ summaries
    def events(self) -> pd.DataFrame:
        """Events that moved the simulated path: time realized, kind, label, move (%), fast-factor kick."""
        tl = self.path.timeline
        rows = [e for e in self.path.events if e.step >= 0]
        return pd.DataFrame({
            "realized": pd.to_datetime([e.realized_ns for e in rows], utc=True).tz_convert(NY),
            "kind": [e.kind for e in rows],
            "label": [e.label for e in rows],
            "move_pct": [100 * np.expm1(e.move) for e in rows],
            "vol_kick": [e.vol_kick for e in rows],
            "session": [pd.Timestamp(tl.dates[int(self.path.step_day[e.step])]).date() for e in rows],
        })


def _bar_stamp(at, ns: int, make: bool = True) -> pd.Timestamp | None:
    """The snapshot's time: the bar label ``ns`` in New York; ``at`` itself when it is that Timestamp already (an
    engine's clock: making one is ~30 us). Otherwise a new one, or None with ``make=False``."""
    if type(at) is pd.Timestamp and at.tzinfo is NY and at.value == ns and at.unit == "ns":
        return at
    return pd.Timestamp(ns, tz="UTC").tz_convert(NY) if make else None


def _underlying_of(contract) -> str:
    und = contract.underlying
    if und not in UNDERLYINGS:
        raise ValueError(f"{contract}: the synthetic market quotes SPX, SPXW, XSP and VIX options only")
    return und
