"""ChainSnapshot: flags on unusable quotes, selection helpers, checksum, and timers across DST."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from strikebench.api import Strategy
from strikebench.options.chain import QUOTE_CROSSED, QUOTE_NAN, QUOTE_NEGATIVE_BID, QUOTE_ZERO_BID, ChainSnapshot
from strikebench.options.contracts import OptionContract
from strikebench.testing import ModelMarket, make_chain, run_strategy

AT = pd.Timestamp("2024-01-08 10:00", tz="America/New_York")


def hand_chain(**overrides) -> ChainSnapshot:
    """Five SPXW puts expiring Friday 2024-01-12, deltas -0.05 .. -0.40."""
    cols = dict(
        root=["SPXW"] * 5, expiry=[np.datetime64("2024-01-12")] * 5,
        strike=[4700.0, 4725.0, 4750.0, 4775.0, 4800.0], is_call=[False] * 5,
        bid=[1.00, 1.60, 2.50, 4.00, 6.00], ask=[1.10, 1.75, 2.70, 4.30, 6.40],
        delta=[-0.05, -0.10, -0.16, -0.25, -0.40],
    )
    cols.update(overrides)
    return ChainSnapshot.from_arrays("SPX", AT, 4830.0, **cols)


def test_unusable_quotes_are_flagged_counted_and_never_selected():
    snap = hand_chain(bid=[1.00, np.nan, -0.05, 4.50, 6.00], ask=[1.10, 1.75, 2.70, 4.30, 6.40])
    assert snap.flags[1] & QUOTE_NAN and snap.flags[2] & QUOTE_NEGATIVE_BID and snap.flags[3] & QUOTE_CROSSED
    assert snap.dropped == {"total": 3, "nan": 1, "zero_bid": 0, "zero_ask": 0, "crossed": 1, "negative_bid": 1}
    assert list(snap.rows("2024-01-12", "P")) == [0, 4]
    # 0.10 and 0.16 targets would pick the flagged rows 1 and 2; they must fall back to usable ones
    assert snap.closest_delta("2024-01-12", "P", 0.10) == 0
    assert snap.closest_delta("2024-01-12", "P", 0.25) == 4
    assert np.isnan(snap.mid[1]) and snap.mid[0] == 1.05
    assert snap.find("SPXW", "2024-01-12", False, 4750.0) is None


def test_a_zero_bid_is_flagged_for_information_but_usable():
    """A 0.00/0.05 wing can be bought (and is marked at 0.025); selling it is refused by the fill rule."""
    snap = hand_chain(bid=[0.0, 1.60, 2.50, 4.00, 6.00], ask=[0.05, 1.75, 2.70, 4.30, 6.40])
    assert snap.flags[0] & QUOTE_ZERO_BID
    assert snap.dropped["total"] == 0 and snap.dropped["zero_bid"] == 1
    assert snap.valid[0] and snap.mid[0] == 0.025
    assert snap.find("SPXW", "2024-01-12", False, 4700.0) == 0
    assert snap.find("SPXW", "2024-01-12", False, 4750.0, valid_only=False) == 2


def test_selection_helpers():
    snap = hand_chain()
    assert snap.closest_delta("2024-01-12", "P", 0.20) == 2  # |0.16 - 0.20| < |0.25 - 0.20|
    assert snap.offset_row(3, 25) == 2 and snap.offset_row(0, 25) is None
    assert snap.delta_offset_row(4, 0.15) == 3  # 0.40 - 0.15 = 0.25
    contract = snap.contract(2)
    assert contract == OptionContract("SPXW", dt.date(2024, 1, 12), 4750.0, "P")
    assert snap.find_contract(contract) == 2


def test_nearest_expiry_within_tolerance_ties_go_shorter():
    snap = make_chain(spot=4800, expiries=["2024-01-10", "2024-01-12", "2024-01-16"], at=AT)
    assert snap.nearest_expiry(3, 1) == dt.date(2024, 1, 10)  # 2 and 4 DTE tie: the shorter wins
    assert snap.nearest_expiry(7, 1) == dt.date(2024, 1, 16)  # 8 DTE: Monday the 15th is a holiday
    assert snap.nearest_expiry(20, 2) is None


def test_checksum_is_stable_and_sensitive():
    a, b = hand_chain(), hand_chain()
    assert a.checksum == b.checksum and len(a.checksum) == 64
    c = hand_chain(bid=[1.00, 1.60, 2.50, 4.00, 6.05])
    assert c.checksum != a.checksum
    assert a.subset([0, 2]).checksum == hand_chain().subset([0, 2]).checksum
    assert len(a.subset([0, 2])) == 2


def test_rows_are_sorted_by_contract_key_whatever_the_input_order():
    snap = hand_chain(strike=[4800.0, 4700.0, 4775.0, 4725.0, 4750.0])
    assert list(snap.strike) == [4700.0, 4725.0, 4750.0, 4775.0, 4800.0]
    assert snap.key.flags.writeable is False and snap.bid.flags.writeable is False


def test_bad_columns_are_named():
    with pytest.raises(ValueError, match="missing column 'ask'"):
        ChainSnapshot.from_arrays("SPX", AT, 4800.0, root=["SPXW"], expiry=[np.datetime64("2024-01-12")],
                                  strike=[4800.0], is_call=[True], bid=[1.0])
    with pytest.raises(ValueError, match="chain column 'bid' has length"):
        hand_chain(bid=[1.0, 2.0])
    with pytest.raises(ValueError, match="timezone-aware"):
        ChainSnapshot.from_arrays("SPX", "2024-01-08 10:00", 4800.0, root=["SPXW"],
                                  expiry=[np.datetime64("2024-01-12")], strike=[4800.0], is_call=[True],
                                  bid=[1.0], ask=[1.1])


class _Recorder(Strategy):
    name = "recorder"

    def __init__(self):
        super().__init__()
        self.seen: list[pd.Timestamp] = []

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        self.seen.append(ctx.now)


def test_decision_times_are_new_york_wall_clock_across_the_dst_change():
    # 2023-03-12: clocks go forward; 10:00 New York is 15:00 UTC before and 14:00 UTC after
    strat = _Recorder()
    run_strategy(strat, ModelMarket("2023-03-09", "2023-03-14", spot=4000.0))
    assert [t.strftime("%m-%d %H:%M") for t in strat.seen] == ["03-09 10:00", "03-10 10:00", "03-13 10:00", "03-14 10:00"]
    assert [t.tz_convert("UTC").hour for t in strat.seen] == [15, 15, 14, 14]


def test_subset_is_the_snapshot_from_arrays_builds_from_those_rows():
    """subset() skips re-validation; it must still equal from_arrays on the same rows (checksum, keys, flags,
    lookups), also when the subset drops a root (SPX monthlies and SPXW weeklies in one chain)."""
    import datetime as _dt

    from strikebench.feeds.synthetic import SyntheticMarket, load_scenario
    from strikebench.options.chain import COLUMNS

    market = SyntheticMarket(seed=42, start=_dt.date(2023, 1, 3), end=_dt.date(2023, 1, 31),
                             scenario=load_scenario("default"))
    snap = market.snapshot("SPX", pd.Timestamp("2023-01-10 10:00", tz="America/New_York"))
    assert set(snap.root) == {"SPX", "SPXW"}
    bid = snap.bid.copy()
    bid[::7] = np.nan  # some unusable rows, so flags are carried
    snap = ChainSnapshot.from_arrays("SPX", snap.timestamp, snap.underlying_price, bid=bid,
                                     **{n: getattr(snap, n) for n in COLUMNS if n != "bid"})
    rng = np.random.default_rng(7)
    for rows in (np.flatnonzero(snap.root == "SPXW"), np.flatnonzero(snap.root == "SPX"),
                 rng.choice(len(snap), 300, replace=False), np.array([9, 3, 3]), np.zeros(0, dtype=int)):
        got = snap.subset(rows)
        want = ChainSnapshot.from_arrays(snap.underlying, snap.timestamp, snap.underlying_price,
                                         **{n: getattr(snap, n)[rows] for n in COLUMNS})
        assert got.checksum == want.checksum
        assert np.array_equal(got.key, want.key) and np.array_equal(got.flags, want.flags)
        for r in range(0, len(got), max(1, len(got) // 25)):
            c = got.contract(r)
            assert got.find_contract(c, valid_only=False) == want.find_contract(c, valid_only=False)
            assert got.find_contract(c) == want.find_contract(c)


def test_leg_quotes_refuse_times_that_are_not_nanoseconds():
    """A microsecond index (pandas 3's pd.date_range) would misread every minute lookup: refused, naming the fix."""
    import pandas as pd

    from strikebench.options.chain import LegQuotes

    idx = pd.date_range("2024-01-08 09:30", periods=3, freq="1min", tz="America/New_York")
    bid = ask = np.ones((3, 1))
    ok = LegQuotes((), idx.as_unit("ns").asi8, bid, ask)
    assert ok.index_at(pd.Timestamp("2024-01-08 09:31", tz="America/New_York").value) == 1
    with pytest.raises(ValueError, match=r"nanosecond epochs.*as_unit\('ns'\)"):
        LegQuotes((), idx.as_unit("us").asi8, bid, ask)
    assert len(LegQuotes((), np.zeros(0, dtype=np.int64), np.zeros((0, 1)), np.zeros((0, 1))).times) == 0


def test_flags_of_a_block_of_minutes_are_each_minutes_own_flags():
    """A source pricing many minutes at once hands each snapshot its row of the block's quote_flags: equal to the
    flags the snapshot computes from its own bid/ask (NaN, inf, zero, negative, crossed, -0.0, tiny), and the same
    snapshot (every column, checksum) as without them."""
    from strikebench.options.chain import quote_flags

    rng = np.random.default_rng(3)
    n = 64
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -0.05, 1e-300, 5e-324, 0.05, 3.0])
    bid = rng.normal(1.0, 2.0, (7, n)).round(2)
    ask = bid + rng.normal(0.1, 0.3, (7, n)).round(2)
    bid[rng.random((7, n)) < 0.2] = rng.choice(special, 1)[0]
    for i in range(7):
        bid[i, :10] = special
        ask[i, 10:20] = special
        ask[i, 20:30] = bid[i, 20:30]
    block = quote_flags(bid, ask)
    assert block.dtype == np.int8 and block.shape == bid.shape
    base = make_chain(4800.0, strikes=np.arange(n // 2) * 5.0 + 4700.0)
    assert len(base) == n
    cols = {k: getattr(base, k) for k in ("root", "expiry", "strike", "is_call", "last", "volume", "open_interest",
                                           "iv", "delta", "gamma", "theta", "vega")}
    for i in range(7):
        own = ChainSnapshot.from_sorted(base.underlying, base.timestamp, base.underlying_price, base.key,
                                        bid=bid[i].copy(), ask=ask[i].copy(), **cols)
        got = ChainSnapshot.from_sorted(base.underlying, base.timestamp, base.underlying_price, base.key, block[i],
                                        bid=bid[i], ask=ask[i], **cols)
        assert np.array_equal(own.flags, block[i]) and own.flags.dtype == np.int8
        assert got.checksum == own.checksum and np.array_equal(got.valid, own.valid)
        assert got.dropped == own.dropped
    with pytest.raises(ValueError, match="flags"):
        ChainSnapshot.from_sorted(base.underlying, base.timestamp, base.underlying_price, base.key, block[0][:-1],
                                  bid=bid[0], ask=ask[0], **cols)
