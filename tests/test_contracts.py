"""strikebench.options.contracts: roots, OptionContract, OCC symbols, settlement moments."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle

import pandas as pd
import pytest

from strikebench.calendar import NY, MarketCalendar
from strikebench.options.contracts import (
    ROOTS,
    ContractError,
    ExerciseStyle,
    ExpiryNotASessionError,
    OCCSymbolError,
    OptionContract,
    Right,
    RootSpec,
    SettlementStyle,
    SettlementType,
    UnknownRootError,
    last_trade_time,
    root_spec,
    settlement_print,
    settlement_time,
)

D = dt.date


def ny(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=NY)


def C(root, expiry, strike, right):
    return OptionContract.make(root, expiry, strike, right)


# ---------------------------------------------------------------- roots
def test_roots_table():
    assert set(ROOTS) == {"SPX", "SPXW", "XSP", "VIX", "SPY", "QQQ", "IWM"}
    for root, spec in ROOTS.items():
        assert isinstance(spec, RootSpec) and spec.root == root and spec.multiplier == 100
    assert ROOTS["SPXW"].underlying == "SPX" and ROOTS["SPX"].underlying == "SPX"
    assert ROOTS["XSP"].underlying == "XSP" and ROOTS["VIX"].underlying == "VIX"
    assert ROOTS["SPX"].settlement_style is SettlementStyle.AM
    assert ROOTS["VIX"].settlement_style is SettlementStyle.AM
    for r in ("SPXW", "XSP", "SPY", "QQQ", "IWM"):
        assert ROOTS[r].settlement_style is SettlementStyle.PM
    for r in ("SPX", "SPXW", "XSP", "VIX"):
        assert ROOTS[r].exercise is ExerciseStyle.EUROPEAN
        assert ROOTS[r].settlement_type is SettlementType.CASH
    for r in ("SPY", "QQQ", "IWM"):
        assert ROOTS[r].exercise is ExerciseStyle.AMERICAN
        assert ROOTS[r].settlement_type is SettlementType.PHYSICAL
    assert "VX future" in ROOTS["VIX"].priced_off
    assert {s.tick_rule for s in ROOTS.values()} == {"SPX", "XSP", "VIX", "PENNY"}


def test_roots_are_read_only():
    with pytest.raises(TypeError):
        ROOTS["FOO"] = ROOTS["SPX"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROOTS["SPX"].multiplier = 10  # type: ignore[misc]


def test_root_spec_unknown_names_known_roots():
    assert root_spec("XSP") is ROOTS["XSP"]
    with pytest.raises(UnknownRootError) as ei:
        root_spec("NDX")
    msg = str(ei.value)
    assert "'NDX'" in msg and "SPX, SPXW, XSP, VIX, SPY, QQQ, IWM" in msg
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, KeyError)
    with pytest.raises(UnknownRootError, match="did you mean 'SPXW'"):
        root_spec("spxw")


def test_enums_are_strings():
    assert Right.CALL == "C" and Right.PUT == "P"
    assert str(Right.PUT) == "P"
    assert SettlementStyle.AM == "AM"
    for v, r in [("C", Right.CALL), ("call", Right.CALL), ("Put", Right.PUT), ("p", Right.PUT)]:
        assert Right.parse(v) is r


# ---------------------------------------------------------------- construction / validation
def test_strict_constructor_and_properties():
    c = OptionContract("SPXW", D(2024, 12, 20), 5800.0, Right.PUT)
    assert c.spec is ROOTS["SPXW"]
    assert c.multiplier == 100 and c.underlying == "SPX"
    assert c.settlement_style is SettlementStyle.PM
    assert c.exercise is ExerciseStyle.EUROPEAN and c.settlement_type is SettlementType.CASH
    assert not c.is_call and c.is_put
    assert C("VIX", "2024-01-17", 15, "call").is_call


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("NDX", D(2024, 12, 20), 5800.0, Right.PUT), "unknown option root 'NDX'"),
        (("spxw", D(2024, 12, 20), 5800.0, Right.PUT), "use OptionContract.make()"),
        (("SPXW", "2024-12-20", 5800.0, Right.PUT), "expiry must be a datetime.date"),
        (("SPXW", dt.datetime(2024, 12, 20), 5800.0, Right.PUT), "expiry must be a datetime.date"),
        (("SPXW", D(2024, 12, 20), 0.0, Right.PUT), "> 0"),
        (("SPXW", D(2024, 12, 20), -5.0, Right.PUT), "> 0"),
        (("SPXW", D(2024, 12, 20), float("nan"), Right.PUT), "finite"),
        (("SPXW", D(2024, 12, 20), 5800.0005, Right.PUT), "multiple of 0.001"),
        (("SPXW", D(2024, 12, 20), 100_000.0, Right.PUT), "OCC maximum"),
        (("SPXW", D(2024, 12, 20), "5800", Right.PUT), "real number"),
        (("SPXW", D(2024, 12, 20), True, Right.PUT), "real number"),
        (("SPXW", D(2024, 12, 20), 5800.0, "put"), "right must be Right"),
    ],
)
def test_constructor_validation(args, fragment):
    with pytest.raises(ContractError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        OptionContract(*args)


def test_make_is_lenient_but_does_not_mutate():
    ref = OptionContract("SPXW", D(2024, 12, 20), 5800.0, Right.PUT)
    assert C("spxw", "2024-12-20", 5800, "put") == ref
    assert C(" SPXW ", pd.Timestamp("2024-12-20"), "5800", "P") == ref
    assert C("SPXW", dt.datetime(2024, 12, 20, 16, 0), 5800.0, Right.PUT) == ref
    assert C("XSP", "2025-01-17", 587.4999999999, "C").strike == 587.5
    with pytest.raises(ContractError, match="bad option right"):
        C("SPXW", "2024-12-20", 5800, "straddle")
    with pytest.raises(ContractError, match="cannot read expiry"):
        C("SPXW", "someday", 5800, "P")


def test_frozen_hashable_orderable():
    a = C("SPXW", "2024-12-20", 5800, "P")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.strike = 5900.0  # type: ignore[misc]
    b = OptionContract.from_occ("SPXW  241220P05800000")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert {a: 1}[b] == 1
    assert pickle.loads(pickle.dumps(a)) == a
    chain = [
        C("SPXW", "2024-12-20", 5800, "P"),
        C("SPXW", "2024-12-20", 5900, "C"),
        C("SPX", "2024-12-20", 6000, "C"),
        C("SPXW", "2024-12-19", 5800, "P"),
        C("SPXW", "2024-12-20", 5800, "C"),
    ]
    assert [c.occ_compact for c in sorted(chain)] == [
        "SPX241220C06000000",   # root first
        "SPXW241219P05800000",  # then expiry
        "SPXW241220C05800000",  # then right (calls before puts)
        "SPXW241220C05900000",  # then strike
        "SPXW241220P05800000",
    ]
    assert chain[3] < chain[0] and chain[0] >= chain[4]


# ---------------------------------------------------------------- OCC symbols
@pytest.mark.parametrize(
    "root, expiry, strike, right, padded, compact",
    [
        ("SPXW", D(2024, 12, 20), 5800.0, "P", "SPXW  241220P05800000", "SPXW241220P05800000"),
        ("SPX", D(2024, 12, 20), 6025.0, "C", "SPX   241220C06025000", "SPX241220C06025000"),
        ("XSP", D(2025, 1, 17), 587.5, "C", "XSP   250117C00587500", "XSP250117C00587500"),
        ("VIX", D(2024, 1, 17), 17.5, "C", "VIX   240117C00017500", "VIX240117C00017500"),
        ("SPY", D(2024, 3, 15), 450.5, "P", "SPY   240315P00450500", "SPY240315P00450500"),
        ("QQQ", D(2024, 3, 15), 0.5, "C", "QQQ   240315C00000500", "QQQ240315C00000500"),
        ("IWM", D(2030, 6, 21), 201.0, "P", "IWM   300621P00201000", "IWM300621P00201000"),
        ("SPXW", D(2024, 12, 20), 99_999.999, "C", "SPXW  241220C99999999", "SPXW241220C99999999"),
    ],
)
def test_occ_round_trip(root, expiry, strike, right, padded, compact):
    c = OptionContract(root, expiry, strike, Right(right))
    assert c.occ_symbol == padded and len(c.occ_symbol) == 21
    assert c.occ_compact == compact and str(c) == compact
    assert OptionContract.from_occ(padded) == c
    assert OptionContract.from_occ(compact) == c
    assert OptionContract.from_occ(padded + "\n") == c  # trailing whitespace tolerated


@pytest.mark.parametrize(
    "symbol, fragment",
    [
        ("SPXW  241320P05800000", "month 13 in expiry '241320'"),
        ("SPXW  240230P05800000", "day 30 in expiry '240230'"),
        ("SPXW  241200P05800000", "day 0 in expiry '241200'"),
        ("SPXW  2412a0P05800000", "expiry '2412a0' is not 6 digits"),
        ("SPXW  241220X05800000", "right 'X'"),
        ("SPXW  241220P0580000A", "strike '0580000A' is not 8 digits"),
        ("SPXW  241220P00000000", "strike '00000000' is zero"),
        ("SPXW241220P058000", "strike '058000' has 6 digits"),
        ("SPXW241220P0580000000", "strike '0580000000' has 10 digits"),
        ("NDX   241220P05800000", "unknown root 'NDX'"),
        ("SPXW 241220P05800000", "root field 'SPXW '"),
        ("SPXW   241220P05800000", "root field 'SPXW   '"),
        ("spxw241220p05800000", "root 'spxw'"),
        ("SPXWEEK241220P05800000", "root 'SPXWEEK'"),
        ("241220P05800000", "too short"),
        ("", "too short"),
        ("  SPXW241220P05800000", "leading whitespace"),
        ("SP XW241220P05800000", "root field 'SP XW'"),
    ],
)
def test_bad_occ_symbols_name_the_bad_part(symbol, fragment):
    with pytest.raises(OCCSymbolError) as ei:
        OptionContract.from_occ(symbol)
    msg = str(ei.value)
    assert msg.startswith(f"bad OCC symbol {symbol!r}: ")
    assert fragment in msg
    assert "\n" not in msg
    assert isinstance(ei.value, ValueError)


def test_bad_occ_symbol_not_a_string():
    with pytest.raises(OCCSymbolError, match="not a string"):
        OptionContract.from_occ(12345)  # type: ignore[arg-type]


# ---------------------------------------------------------------- settlement / last trade
@pytest.mark.parametrize(
    "root, expiry, settles, last_trade, print_",
    [
        # PM-settled: last trade = settlement = the expiry day's close
        ("SPXW", "2024-12-20", "2024-12-20 16:00", "2024-12-20 16:00", "close"),
        ("SPXW", "2023-11-24", "2023-11-24 13:00", "2023-11-24 13:00", "close"),  # early close
        ("XSP", "2024-07-03", "2024-07-03 13:00", "2024-07-03 13:00", "close"),  # early close
        ("XSP", "2025-01-17", "2025-01-17 16:00", "2025-01-17 16:00", "close"),
        ("SPY", "2024-03-15", "2024-03-15 16:00", "2024-03-15 16:00", "close"),
        ("QQQ", "2024-11-29", "2024-11-29 13:00", "2024-11-29 13:00", "close"),
        ("IWM", "2024-06-21", "2024-06-21 16:00", "2024-06-21 16:00", "close"),
        # SPX monthlies: settle at the expiry-day open; last trade the prior close
        ("SPX", "2024-01-19", "2024-01-19 09:30", "2024-01-18 16:00", "open"),
        ("SPX", "2026-06-18", "2026-06-18 09:30", "2026-06-17 16:00", "open"),  # Juneteenth move
        ("SPX", "2025-04-17", "2025-04-17 09:30", "2025-04-16 16:00", "open"),  # Good Friday move
        ("SPX", "2024-12-20", "2024-12-20 09:30", "2024-12-19 16:00", "open"),
        # VIX: settle at the expiry-day open (SOQ); last trade the prior session's close
        ("VIX", "2024-01-17", "2024-01-17 09:30", "2024-01-16 16:00", "open"),
        ("VIX", "2025-03-18", "2025-03-18 09:30", "2025-03-17 16:00", "open"),  # Tuesday expiry
        ("VIX", "2008-02-19", "2008-02-19 09:30", "2008-02-15 16:00", "open"),  # over Presidents' Day
    ],
)
def test_settlement_and_last_trade_moments(root, expiry, settles, last_trade, print_):
    c = C(root, expiry, 100, "C")
    st, lt = settlement_time(c), last_trade_time(c)
    assert st == ny(settles)
    assert lt == ny(last_trade)
    assert str(st.tz) == "America/New_York" and str(lt.tz) == "America/New_York"
    assert settlement_print(c) == print_
    assert lt <= st


def test_spx_and_spxw_on_the_same_third_friday_differ():
    am = C("SPX", "2024-12-20", 6000, "C")
    pm = C("SPXW", "2024-12-20", 6000, "C")
    assert settlement_time(am) < last_trade_time(pm)
    assert settlement_time(pm) - settlement_time(am) == pd.Timedelta(hours=6, minutes=30)


def test_expiry_not_a_session_raises_clear_error():
    c = C("SPX", "2026-06-19", 6000, "C")  # Juneteenth
    with pytest.raises(ExpiryNotASessionError, match=r"expiry 2026-06-19 \(Friday\) is not a trading session"):
        settlement_time(c)
    with pytest.raises(ExpiryNotASessionError, match="SPX260619C06000000"):
        last_trade_time(c)
    assert issubclass(ExpiryNotASessionError, ValueError)


def test_pre_2015_saturday_expiry_gets_a_hint():
    c = C("SPX", "2014-12-20", 2000, "P")  # old OCC Saturday dating
    with pytest.raises(ExpiryNotASessionError, match="Saturday after the third Friday"):
        settlement_time(c)


def test_explicit_calendar_argument():
    c = C("SPXW", "2024-12-24", 6000, "P")
    assert settlement_time(c, MarketCalendar()) == ny("2024-12-24 13:00")
    assert last_trade_time(c, calendar=MarketCalendar()) == ny("2024-12-24 13:00")
