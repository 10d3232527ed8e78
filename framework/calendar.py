"""Market calendar for the S&P 500 underlying session (NYSE hours).

This is a thin, typed wrapper around ``exchange_calendars``' ``"XNYS"``
calendar.  The holiday list, early closes (13:00 ET) and one-off closures
(e.g. 2001-09-11, Hurricane Sandy, national days of mourning) all come from
``exchange_calendars``; nothing here is hand-written.

Conventions
-----------
* **Days** (``sessions``, ``next_session`` ...) are naive, normalized
  ``pd.Timestamp`` values (midnight, no tz) -- the convention of
  ``exchange_calendars`` and of pandas date indexes.  Every method that takes
  a day accepts a ``datetime.date``, a ``str`` (``"2024-06-18"``), a naive
  ``pd.Timestamp``/``datetime`` (its date is used) or a tz-aware one (its
  *New York* date is used).
* **Moments** (``session_open``, ``session_close``, ``minutes``) are tz-aware
  in ``America/New_York``.
* **Minute bars are labelled by their START time**: the first bar of a
  regular session is labelled 09:30 and covers [09:30, 09:31); the last one is
  labelled 15:59 and covers [15:59, 16:00).  A full session therefore has 390
  bars and a 13:00 early close has 210.  The session close (16:00 / 13:00) is
  *not* a bar label; it is the end of the last bar.
* **Expiry helpers** return ``datetime.date`` (the OCC expiration date, see
  :mod:`strikebench.options.contracts`).

The exchange_calendars object is built once per process (cached at module
level, covering 2000-01-01 .. 2050-12-31) so ``MarketCalendar()`` itself is
free to construct.
"""

from __future__ import annotations

import datetime as _dt
import functools
import threading
import warnings
from typing import Any, Union
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

__all__ = [
    "NY",
    "NS_PER_YEAR",
    "CALENDAR_START",
    "CALENDAR_END",
    "DayLike",
    "CalendarError",
    "NotASessionError",
    "MarketCalendar",
    "default_calendar",
    "years_between",
    "third_friday",
    "monthly_expiry",
    "vix_expiry",
    "weekly_expiries",
]

#: The exchange time zone of every tz-aware moment produced by this module.
NY = ZoneInfo("America/New_York")

#: ACT/365 year length in nanoseconds (365 days of 24 h; no leap-day special case).
NS_PER_YEAR: int = 365 * 24 * 3600 * 10**9

#: Range covered by the cached exchange_calendars object.
CALENDAR_START = "2000-01-01"
CALENDAR_END = "2050-12-31"

_EXCHANGE = "XNYS"

DayLike = Union[_dt.date, _dt.datetime, str, pd.Timestamp, np.datetime64]


class CalendarError(ValueError):
    """A day/moment the calendar cannot answer for (out of range, unparsable ...)."""


class NotASessionError(CalendarError):
    """The requested day is not a trading session (weekend, holiday, closure)."""


# --------------------------------------------------------------------------
# exchange_calendars object cache (module level, built lazily once).
# --------------------------------------------------------------------------
_XCAL_LOCK = threading.Lock()
_XCALS: dict[str, Any] = {}
_MOMENTS: dict[tuple[str, _dt.date], tuple[pd.Timestamp, pd.Timestamp]] = {}  # (exchange, day) -> (open, close)


def _xcal(name: str = _EXCHANGE):
    cal = _XCALS.get(name)
    if cal is None:
        with _XCAL_LOCK:
            cal = _XCALS.get(name)
            if cal is None:
                import exchange_calendars as xc  # local import keeps `import strikebench` light

                with warnings.catch_warnings():
                    # exchange_calendars' construction trips pandas' own
                    # deprecation warnings (Series.values on tz-aware data).
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", FutureWarning)
                    cal = xc.get_calendar(name, start=CALENDAR_START, end=CALENDAR_END, side="left")
                _XCALS[name] = cal
    return cal


@functools.lru_cache(maxsize=None)
def _open_close(name: str = _EXCHANGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sessions as datetime64[ns], opens and closes as UTC int64 ns) of the whole calendar range."""
    cal = _xcal(name)
    return (np.asarray(cal.sessions.asi8).view("datetime64[ns]"), pd.DatetimeIndex(cal.opens).asi8,
            pd.DatetimeIndex(cal.closes).asi8)


# --------------------------------------------------------------------------
# Coercion helpers
# --------------------------------------------------------------------------
def _to_day(day: Any) -> pd.Timestamp:
    """Coerce a day-like value to a naive, normalized ``pd.Timestamp``."""
    if isinstance(day, pd.Timestamp):
        ts = day
    elif isinstance(day, (_dt.date, str, np.datetime64)):
        try:
            ts = pd.Timestamp(day)
        except (ValueError, TypeError) as exc:
            raise CalendarError(f"cannot read {day!r} as a day: {exc}") from None
    else:
        raise CalendarError(
            f"cannot read {day!r} ({type(day).__name__}) as a day; "
            "pass a datetime.date, str, pd.Timestamp or np.datetime64"
        )
    if ts is pd.NaT:
        raise CalendarError(f"cannot read {day!r} as a day (NaT)")
    if ts.tzinfo is not None:
        ts = ts.tz_convert(NY).tz_localize(None)
    return ts.normalize().as_unit("ns")


def _to_date(day: Any) -> _dt.date:
    return _to_day(day).date()


class MarketCalendar:
    """NYSE (``XNYS``) sessions for the SPX underlying, 09:30-16:00 America/New_York.

    Cheap to construct: all instances share one cached exchange_calendars
    object.  See the module docstring for the day/moment/bar conventions.
    """

    __slots__ = ("_name",)

    def __init__(self, exchange: str = _EXCHANGE) -> None:
        self._name = exchange

    def __repr__(self) -> str:
        return f"MarketCalendar({self._name!r})"

    # -- internals ----------------------------------------------------------
    @property
    def xcal(self):
        """The underlying ``exchange_calendars.ExchangeCalendar`` (shared, do not mutate)."""
        return _xcal(self._name)

    @property
    def first_session(self) -> pd.Timestamp:
        return self.xcal.first_session

    @property
    def last_session(self) -> pd.Timestamp:
        return self.xcal.last_session

    def _check_bounds(self, ts: pd.Timestamp, what: str = "day") -> None:
        xcal = self.xcal
        # Allow a little slack past the first/last session so that
        # next/previous around the edges still work when they can.
        if ts < xcal.first_session - pd.Timedelta(days=7) or ts > xcal.last_session + pd.Timedelta(days=7):
            raise CalendarError(
                f"{what} {ts.date()} is outside the calendar range "
                f"{xcal.first_session.date()} .. {xcal.last_session.date()}"
            )

    def _session(self, day: Any) -> pd.Timestamp:
        ts = _to_day(day)
        if not self.is_session(ts):
            raise NotASessionError(
                f"{ts.date()} ({ts.day_name()}) is not a {self._name} trading session "
                "(weekend, exchange holiday or closure)"
            )
        return ts

    # -- sessions -----------------------------------------------------------
    def sessions(self, start: DayLike, end: DayLike) -> pd.DatetimeIndex:
        """All sessions in ``[start, end]`` (inclusive) as naive, normalized dates."""
        s, e = _to_day(start), _to_day(end)
        if e < s:
            return pd.DatetimeIndex([], dtype="datetime64[ns]")
        all_sessions = self.xcal.sessions
        self._check_bounds(s, "start")
        self._check_bounds(e, "end")
        lo = all_sessions.searchsorted(s, side="left")
        hi = all_sessions.searchsorted(e, side="right")
        out = pd.DatetimeIndex(all_sessions[lo:hi].values, dtype="datetime64[ns]")
        return out

    def is_session(self, day: DayLike) -> bool:
        ts = _to_day(day)
        self._check_bounds(ts)
        sessions = self.xcal.sessions
        i = sessions.searchsorted(ts, side="left")
        return bool(i < len(sessions) and sessions[i] == ts)

    def next_session(self, day: DayLike) -> pd.Timestamp:
        """The first session strictly after ``day`` (``day`` need not be a session)."""
        ts = _to_day(day)
        self._check_bounds(ts)
        sessions = self.xcal.sessions
        i = sessions.searchsorted(ts, side="right")
        if i >= len(sessions):
            raise CalendarError(f"no session after {ts.date()} within the calendar range")
        return pd.Timestamp(sessions[i])

    def previous_session(self, day: DayLike) -> pd.Timestamp:
        """The last session strictly before ``day`` (``day`` need not be a session)."""
        ts = _to_day(day)
        self._check_bounds(ts)
        sessions = self.xcal.sessions
        i = sessions.searchsorted(ts, side="left") - 1
        if i < 0:
            raise CalendarError(f"no session before {ts.date()} within the calendar range")
        return pd.Timestamp(sessions[i])

    def session_on_or_before(self, day: DayLike) -> pd.Timestamp:
        """``day`` itself if it is a session, else the previous session."""
        ts = _to_day(day)
        return ts if self.is_session(ts) else self.previous_session(ts)

    def session_on_or_after(self, day: DayLike) -> pd.Timestamp:
        """``day`` itself if it is a session, else the next session."""
        ts = _to_day(day)
        return ts if self.is_session(ts) else self.next_session(ts)

    # -- moments ------------------------------------------------------------
    def _moments(self, day: DayLike) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(open, close) of session ``day``: an index into exchange_calendars' open and close columns,
        read once per process (risk checks ask on every order; its per-day lookup takes a millisecond)."""
        key = (self._name, day) if type(day) is _dt.date else None
        got = _MOMENTS.get(key) if key is not None else None
        if got is None:
            ts = self._session(day)
            sessions, opens, closes = _open_close(self._name)
            i = int(sessions.searchsorted(ts.asm8))
            got = (pd.Timestamp(int(opens[i]), tz="UTC").tz_convert(NY),
                   pd.Timestamp(int(closes[i]), tz="UTC").tz_convert(NY))
            if key is not None:
                _MOMENTS[key] = got
        return got

    def session_open(self, day: DayLike) -> pd.Timestamp:
        """Regular-session open (09:30 America/New_York) of session ``day``."""
        return self._moments(day)[0]

    def session_close(self, day: DayLike) -> pd.Timestamp:
        """Regular-session close (16:00, or 13:00 on an early close) of session ``day``."""
        return self._moments(day)[1]

    def is_early_close(self, day: DayLike) -> bool:
        """True when session ``day`` closes before 16:00 New York time."""
        close = self.session_close(day)
        return (close.hour, close.minute) < (16, 0)

    def minutes(self, day: DayLike) -> pd.DatetimeIndex:
        """One-minute bar labels of session ``day``, tz-aware America/New_York.

        Bars are labelled by their START time: 09:30, 09:31, ... 15:59 (390
        bars), or ... 12:59 on a 13:00 early close (210 bars).
        """
        ts = self._session(day)
        xcal = self.xcal
        # [open, close) at 1-minute steps, built from exchange_calendars'
        # open/close (same result as xcal.session_minutes with side="left").
        open_utc, close_utc = xcal.session_open(ts), xcal.session_close(ts)
        idx = pd.date_range(open_utc, close_utc, freq="min", inclusive="left", unit="ns")
        return pd.DatetimeIndex(idx.tz_convert(NY), freq=None)

    # -- time measurement ---------------------------------------------------
    @staticmethod
    def years_between(t0: Any, t1: Any) -> Any:
        """ACT/365 calendar time from ``t0`` to ``t1`` in years; see :func:`years_between`."""
        return years_between(t0, t1)

    # -- expiries -----------------------------------------------------------
    @staticmethod
    def third_friday(year: int, month: int) -> _dt.date:
        return third_friday(year, month)

    def monthly_expiry(self, year: int, month: int) -> _dt.date:
        """Standard (third-Friday) expiry; the previous session if that Friday is a holiday."""
        tf = third_friday(year, month)
        return self.session_on_or_before(tf).date()

    def vix_expiry(self, year: int, month: int) -> _dt.date:
        """Standard VIX option/future expiry for contract month ``(year, month)``.

        Cboe rule: the Wednesday 30 days before the third Friday of the
        *following* calendar month.  If that Wednesday or that Friday is an
        exchange holiday, the expiry is the business day immediately
        preceding the Wednesday (usually the Tuesday).
        """
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        friday = third_friday(ny, nm)
        wednesday = friday - _dt.timedelta(days=30)
        if self.is_session(friday) and self.is_session(wednesday):
            return wednesday
        return self.previous_session(wednesday).date()

    def weekly_expiries(self, start: DayLike, end: DayLike) -> list[_dt.date]:
        """SPXW/XSP short-dated expiries in ``[start, end]``: every session (Mon-Fri dailies)."""
        return [ts.date() for ts in self.sessions(start, end)]


# --------------------------------------------------------------------------
# Module-level conveniences
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def default_calendar() -> MarketCalendar:
    """The shared ``MarketCalendar("XNYS")``."""
    return MarketCalendar()


def third_friday(year: int, month: int) -> _dt.date:
    """Third Friday of ``month`` in ``year`` (pure date arithmetic, no holidays)."""
    if not 1 <= int(month) <= 12:
        raise ValueError(f"month must be 1..12, got {month!r}")
    first = _dt.date(int(year), int(month), 1)
    # weekday(): Monday=0 ... Friday=4
    first_friday = first + _dt.timedelta(days=(4 - first.weekday()) % 7)
    return first_friday + _dt.timedelta(days=14)


def monthly_expiry(year: int, month: int, calendar: MarketCalendar | None = None) -> _dt.date:
    return (calendar or default_calendar()).monthly_expiry(year, month)


def vix_expiry(year: int, month: int, calendar: MarketCalendar | None = None) -> _dt.date:
    return (calendar or default_calendar()).vix_expiry(year, month)


def weekly_expiries(start: DayLike, end: DayLike, calendar: MarketCalendar | None = None) -> list[_dt.date]:
    return (calendar or default_calendar()).weekly_expiries(start, end)


_INAT = np.int64(np.iinfo(np.int64).min)  # pandas' NaT sentinel


def _to_ns(x: Any) -> tuple[Any, bool]:
    """Convert moments to int64 UTC-epoch nanoseconds; returns (value, is_scalar).

    Integers are taken as UTC-epoch nanoseconds already.  Naive datetimes of
    any flavour are interpreted as America/New_York wall time.
    """
    # --- scalars ---
    if isinstance(x, (bool, np.bool_)):
        raise TypeError("years_between: booleans are not moments")
    if isinstance(x, (int, np.integer)):
        return np.int64(x), True
    if isinstance(x, (pd.Timestamp, _dt.datetime, _dt.date, str, np.datetime64)):
        ts = pd.Timestamp(x)
        if ts is pd.NaT:
            return _INAT, True
        if ts.tzinfo is None:
            ts = ts.tz_localize(NY)
        return np.int64(ts.as_unit("ns").value), True
    # --- arrays ---
    if isinstance(x, (pd.Series, pd.Index)):
        if pd.api.types.is_integer_dtype(x.dtype):
            return np.asarray(x, dtype=np.int64), False
        x = pd.DatetimeIndex(x)
    elif not isinstance(x, pd.DatetimeIndex):
        arr = np.asarray(x)
        if arr.ndim == 0:
            return _to_ns(arr.item())
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64, copy=False), False
        if arr.dtype.kind == "M":
            shape = arr.shape
            di = pd.DatetimeIndex(arr.ravel())
            di = di.tz_localize(NY)
            return di.as_unit("ns").asi8.reshape(shape), False
        x = pd.DatetimeIndex(list(arr.ravel()))
    di = x
    if di.tz is None:
        di = di.tz_localize(NY)
    return di.as_unit("ns").asi8.copy(), False


def years_between(t0: Any, t1: Any) -> Any:
    """ACT/365 calendar time ``t1 - t0`` in years, exact to the nanosecond.

    Accepts scalars or arrays (broadcasting) of: int64 UTC-epoch
    nanoseconds, ``pd.Timestamp``/``datetime``/``str``/``np.datetime64``,
    ``DatetimeIndex``/``Series``.  Naive datetimes are read as New York wall
    time; tz-aware ones are converted.  Returns a ``float`` when both inputs
    are scalars, else a float64 ``np.ndarray``.  ``(t1 - t0) / NS_PER_YEAR``
    with ``NS_PER_YEAR = 365 * 24 * 3600 * 1e9``: one calendar day is 1/365,
    one minute is 1/525600.
    """
    a, a_scalar = _to_ns(t0)
    b, b_scalar = _to_ns(t1)
    # int64 subtraction is exact; convert only the difference to float.
    with np.errstate(over="ignore"):
        diff = np.subtract(b, a, dtype=np.int64)
    out = diff / NS_PER_YEAR
    nat = (np.asarray(a) == _INAT) | (np.asarray(b) == _INAT)
    if np.any(nat):
        out = np.where(nat, np.nan, out)
    if a_scalar and b_scalar:
        return float(out)
    return np.asarray(out, dtype=np.float64)
