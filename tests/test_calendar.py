"""strikebench.calendar: sessions, moments, minute bars, ACT/365 time, expiries.

Every expected value below can be checked against a paper calendar and the
NYSE holiday/early-close schedule (or, for VIX, Cboe's published dates).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from strikebench.calendar import (
    NS_PER_YEAR,
    NY,
    CalendarError,
    MarketCalendar,
    NotASessionError,
    default_calendar,
    monthly_expiry,
    third_friday,
    vix_expiry,
    weekly_expiries,
    years_between,
)

D = dt.date
cal = MarketCalendar()


def ny(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=NY)


# ---------------------------------------------------------------- construction
def test_construction_shares_the_exchange_calendar():
    """Every MarketCalendar shares one exchange calendar (what makes constructing one cheap; timing lives in
    benchmarks/, never in tests)."""
    MarketCalendar().is_session("2024-01-02")
    cals = [MarketCalendar() for _ in range(3)]
    assert cals[0].xcal is cals[1].xcal is cals[2].xcal is default_calendar().xcal


def test_history_back_to_2000():
    assert cal.first_session <= pd.Timestamp("2000-01-03")
    assert cal.is_session("2000-01-03")
    assert not cal.is_session("2001-09-11")  # closed after the attacks
    assert not cal.is_session("2012-10-29")  # Hurricane Sandy


# ---------------------------------------------------------------- sessions
def test_sessions_over_christmas_2024():
    got = cal.sessions("2024-12-20", "2025-01-03")
    assert list(got.strftime("%Y-%m-%d")) == [
        "2024-12-20", "2024-12-23", "2024-12-24", "2024-12-26", "2024-12-27",
        "2024-12-30", "2024-12-31", "2025-01-02", "2025-01-03",
    ]
    assert got.tz is None
    assert (got == got.normalize()).all()


def test_sessions_accept_dates_and_are_inclusive():
    got = cal.sessions(D(2024, 1, 2), pd.Timestamp("2024-01-05"))
    assert len(got) == 4
    assert len(cal.sessions("2024-01-06", "2024-01-07")) == 0  # a weekend
    assert len(cal.sessions("2024-01-05", "2024-01-02")) == 0  # reversed


@pytest.mark.parametrize(
    "day, expected",
    [
        ("2024-06-18", True),
        ("2026-06-19", False),  # Juneteenth (Friday)
        ("2024-06-19", False),  # Juneteenth (Wednesday)
        ("2025-04-18", False),  # Good Friday
        ("2024-07-04", False),  # Independence Day
        ("2025-01-09", False),  # National Day of Mourning, President Carter
        ("2018-12-05", False),  # National Day of Mourning, President G.H.W. Bush
        ("2027-06-18", False),  # Juneteenth 2027 (Sat) observed Friday
        ("2024-06-22", False),  # Saturday
        ("2023-11-24", True),  # day after Thanksgiving: open, early close
    ],
)
def test_is_session(day, expected):
    assert cal.is_session(day) is expected


def test_day_argument_types():
    assert cal.is_session(D(2024, 6, 18))
    assert cal.is_session(pd.Timestamp("2024-06-18 15:59"))
    assert cal.is_session(np.datetime64("2024-06-18"))
    # tz-aware moments use their New York date: 02:00 UTC on the 19th is
    # 22:00 on the 18th in New York (a session), not Juneteenth.
    assert cal.is_session(pd.Timestamp("2024-06-19 02:00", tz="UTC"))
    assert not cal.is_session(pd.Timestamp("2024-06-19 14:00", tz="UTC"))


def test_next_and_previous_session():
    # from a session: strictly after / before
    assert cal.next_session("2024-06-18") == pd.Timestamp("2024-06-20")
    assert cal.previous_session("2024-06-20") == pd.Timestamp("2024-06-18")
    assert cal.previous_session("2024-01-16") == pd.Timestamp("2024-01-12")  # over MLK day
    # from non-sessions
    assert cal.next_session("2026-06-19") == pd.Timestamp("2026-06-22")
    assert cal.previous_session("2026-06-19") == pd.Timestamp("2026-06-18")
    assert cal.next_session(D(2024, 6, 22)) == pd.Timestamp("2024-06-24")  # Saturday
    assert cal.previous_session(D(2024, 6, 23)) == pd.Timestamp("2024-06-21")  # Sunday
    assert cal.session_on_or_before("2025-04-18") == pd.Timestamp("2025-04-17")
    assert cal.session_on_or_after("2025-04-18") == pd.Timestamp("2025-04-21")
    assert cal.session_on_or_before("2025-04-17") == pd.Timestamp("2025-04-17")


def test_out_of_range_and_garbage_raise_clear_errors():
    with pytest.raises(CalendarError, match="outside the calendar range"):
        cal.is_session("1990-01-02")
    with pytest.raises(CalendarError, match="cannot read"):
        cal.is_session("not a date")
    with pytest.raises(CalendarError):
        cal.is_session(3.5)


# ---------------------------------------------------------------- moments
def test_session_open_close_are_new_york_times():
    o, c = cal.session_open("2024-01-02"), cal.session_close("2024-01-02")
    assert o == ny("2024-01-02 09:30") and c == ny("2024-01-02 16:00")
    assert str(o.tz) == "America/New_York" and str(c.tz) == "America/New_York"
    # summer time: still 09:30 local (13:30 UTC)
    assert cal.session_open("2024-07-01") == pd.Timestamp("2024-07-01 13:30", tz="UTC")


@pytest.mark.parametrize("day", ["2023-11-24", "2024-07-03", "2024-12-24", "2024-11-29"])
def test_early_closes_at_13(day):
    assert cal.is_early_close(day)
    assert cal.session_close(day) == ny(f"{day} 13:00")


def test_normal_days_are_not_early_closes():
    assert not cal.is_early_close("2023-11-22")
    assert not cal.is_early_close("2024-12-26")


def test_moments_on_a_holiday_raise():
    with pytest.raises(NotASessionError, match="2026-06-19"):
        cal.session_close("2026-06-19")
    with pytest.raises(NotASessionError):
        cal.minutes("2025-04-18")
    assert issubclass(NotASessionError, ValueError)


# ---------------------------------------------------------------- minutes
def test_full_session_has_390_bars_labelled_by_start():
    m = cal.minutes("2024-03-12")
    assert len(m) == 390
    assert m[0] == ny("2024-03-12 09:30") and m[-1] == ny("2024-03-12 15:59")
    assert str(m.tz) == "America/New_York"
    assert (np.diff(m.asi8) == 60 * 10**9).all()
    # the close itself is the END of the last bar, not a label
    assert cal.session_close("2024-03-12") not in m


def test_early_close_has_210_bars():
    m = cal.minutes("2023-11-24")
    assert len(m) == 210
    assert m[0] == ny("2023-11-24 09:30") and m[-1] == ny("2023-11-24 12:59")


def test_minutes_across_dst_changes_stay_0930_local():
    for day in ("2024-03-11", "2024-11-04"):  # first sessions after DST start / end
        m = cal.minutes(day)
        assert len(m) == 390
        assert (m[0].hour, m[0].minute) == (9, 30)


# ---------------------------------------------------------------- years_between
def test_ns_per_year_constant():
    assert NS_PER_YEAR == 365 * 24 * 3600 * 10**9 == 31_536_000_000_000_000


def test_years_between_known_spans():
    # 2024 is a leap year: 366 calendar days = 366/365 ACT/365 years
    assert years_between(ny("2024-01-01"), ny("2025-01-01")) == pytest.approx(366 / 365, abs=1e-15)
    # one minute
    assert years_between(ny("2024-06-18 09:30"), ny("2024-06-18 09:31")) == pytest.approx(1 / 525_600, rel=1e-12)
    # a regular session, open to close: 390 minutes
    y = years_between(cal.session_open("2024-06-18"), cal.session_close("2024-06-18"))
    assert y == pytest.approx(390 / 525_600, rel=1e-12)
    # SPX monthly bought at Thursday's close, settled at Friday's open: 17.5 h
    assert years_between(ny("2024-01-18 16:00"), ny("2024-01-19 09:30")) == pytest.approx(17.5 / 24 / 365, rel=1e-12)
    assert isinstance(y, float)


def test_years_between_is_real_elapsed_time_across_dst():
    # Sat 16:00 -> Sun 16:00 over the spring-forward night is 23 hours
    assert years_between("2024-03-09 16:00", "2024-03-10 16:00") == pytest.approx(23 / 24 / 365, rel=1e-12)


def test_years_between_vectorised_over_epochs_and_timestamps():
    bars = cal.minutes("2024-06-18")
    close = cal.session_close("2024-06-18")
    from_ns = years_between(bars.asi8, close.value)
    from_ts = years_between(bars, close)
    expected = (390 - np.arange(390)) / 525_600
    assert isinstance(from_ns, np.ndarray) and from_ns.shape == (390,)
    np.testing.assert_allclose(from_ns, expected, rtol=1e-12)
    np.testing.assert_allclose(from_ts, expected, rtol=1e-12)
    # plain int64 epochs both sides
    got = years_between(np.array([0, 60 * 10**9], dtype=np.int64), np.int64(NS_PER_YEAR))
    np.testing.assert_allclose(got, [1.0, 1 - 1 / 525_600], rtol=1e-15)


def test_years_between_naive_means_new_york_and_nat_is_nan():
    assert years_between("2024-06-18 09:30", ny("2024-06-18 10:30")) == pytest.approx(1 / 24 / 365)
    assert np.isnan(years_between(pd.NaT, ny("2024-06-18 10:30")))
    assert MarketCalendar.years_between(0, NS_PER_YEAR) == 1.0


# ---------------------------------------------------------------- expiries
@pytest.mark.parametrize(
    "year, month, expected",
    [
        (2024, 1, D(2024, 1, 19)),
        (2024, 3, D(2024, 3, 15)),  # month starts on a Friday
        (2025, 8, D(2025, 8, 15)),  # month starts on a Friday
        (2026, 6, D(2026, 6, 19)),
        (2024, 12, D(2024, 12, 20)),
    ],
)
def test_third_friday(year, month, expected):
    assert third_friday(year, month) == expected
    assert MarketCalendar.third_friday(year, month) == expected


def test_third_friday_rejects_bad_month():
    with pytest.raises(ValueError):
        third_friday(2024, 13)


@pytest.mark.parametrize(
    "year, month, expected",
    [
        (2024, 1, D(2024, 1, 19)),
        (2024, 12, D(2024, 12, 20)),
        (2026, 6, D(2026, 6, 18)),  # Juneteenth Fri 2026-06-19 -> Thursday
        (2025, 4, D(2025, 4, 17)),  # Good Friday 2025-04-18 -> Thursday
        (2014, 4, D(2014, 4, 17)),  # Good Friday 2014-04-18 -> Thursday
        (2027, 6, D(2027, 6, 17)),  # Juneteenth 2027 observed Fri 06-18 -> Thursday
    ],
)
def test_monthly_expiry(year, month, expected):
    assert monthly_expiry(year, month) == expected
    assert cal.monthly_expiry(year, month) == expected
    assert isinstance(monthly_expiry(year, month), dt.date)


@pytest.mark.parametrize(
    "year, month, expected",
    [
        # plain Wednesdays
        (2011, 12, D(2011, 12, 21)),  # Cboe Options Hub: last trade Tue Dec 20
        (2012, 1, D(2012, 1, 18)),
        (2012, 8, D(2012, 8, 22)),
        (2024, 1, D(2024, 1, 17)),
        (2024, 10, D(2024, 10, 16)),  # the following from Cboe's CFE settlement page
        (2024, 11, D(2024, 11, 20)),
        (2024, 12, D(2024, 12, 18)),
        (2025, 1, D(2025, 1, 22)),
        (2025, 2, D(2025, 2, 19)),
        (2025, 4, D(2025, 4, 16)),
        (2025, 5, D(2025, 5, 21)),
        (2025, 6, D(2025, 6, 18)),
        # holiday moves to the business day before the Wednesday
        (2008, 2, D(2008, 2, 19)),  # Good Friday 2008-03-21 is March's 3rd Friday
        (2014, 3, D(2014, 3, 18)),  # Good Friday 2014-04-18
        (2025, 3, D(2025, 3, 18)),  # Good Friday 2025-04-18 (Cboe: VX/H5 2025-03-18)
        (2024, 6, D(2024, 6, 18)),  # the Wednesday itself, 2024-06-19, is Juneteenth
        (2026, 5, D(2026, 5, 19)),  # Juneteenth Fri 2026-06-19
    ],
)
def test_vix_expiry(year, month, expected):
    assert vix_expiry(year, month) == expected
    assert cal.vix_expiry(year, month) == expected


def test_vix_expiry_december_rolls_into_next_year():
    # January 2025's third Friday is the 17th; 30 days earlier is Wed 2024-12-18
    assert vix_expiry(2024, 12) == D(2024, 12, 18)
    assert third_friday(2025, 1) - dt.timedelta(days=30) == D(2024, 12, 18)


def test_weekly_expiries_are_every_session():
    got = weekly_expiries("2023-11-20", "2023-11-26")  # Thanksgiving week
    assert got == [D(2023, 11, 20), D(2023, 11, 21), D(2023, 11, 22), D(2023, 11, 24)]
    assert all(type(d) is dt.date for d in got)
    assert len(cal.weekly_expiries("2024-01-01", "2024-12-31")) == 252
