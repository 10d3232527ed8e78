"""Context providers: features checked by hand on paths we construct, no look-ahead, wired into the engine."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from strikebench.api import ContextProvider, Strategy
from strikebench.engine.core import Engine
from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.features import Atr, Momentum, OpeningRange, VixLevels, Vwap
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.testing import ModelMarket, plugin_registry

MONDAY = dt.date(2024, 1, 8)


class BarsMarket:
    """A market of given minute bars only (what a context provider reads): ``bars(symbol)``."""

    def __init__(self, bars: dict[str, pd.DataFrame]):
        self._bars = bars

    def bars(self, symbol):
        if symbol not in self._bars:
            raise KeyError(symbol)
        return self._bars[symbol]


def session_frame(close, *, high=None, low=None, open_=None, volume=None, day=MONDAY) -> pd.DataFrame:
    """Minute bars from 09:30 of ``day`` with the given columns (defaults: flat bars, volume 1000)."""
    close = np.asarray(close, dtype=float)
    index = ModelMarket(day, day).calendar.minutes(day)[: len(close)]
    return pd.DataFrame({"open": close if open_ is None else open_, "high": close if high is None else high,
                         "low": close if low is None else low, "close": close,
                         "volume": np.full(len(close), 1000.0) if volume is None else volume}, index=index)


def read_all(provider: ContextProvider, market, minutes) -> pd.DataFrame:
    """Every bar's values of ``provider`` for one session."""
    provider.on_session_start(minutes[0].date(), market, minutes)
    return pd.DataFrame([provider.values(i) for i in range(len(minutes))], index=minutes)


def minutes_of(day=MONDAY) -> pd.DatetimeIndex:
    return ModelMarket(day, day).calendar.minutes(day)


# ------------------------------------------------------------------ opening range
def test_opening_range_is_the_high_and_low_of_the_first_15_minutes_known_from_0944():
    # 09:30 .. 09:44 climb 4800 -> 4814 with a 4820 spike at 09:37 and a 4795 dip at 09:40; later 4850 is ignored
    close = np.r_[4800.0 + np.arange(15), np.full(375, 4850.0)]
    high, low = close.copy(), close.copy()
    high[7], low[10] = 4820.0, 4795.0
    market = BarsMarket({"SPX": session_frame(close, high=high, low=low)})
    f = read_all(OpeningRange(), market, minutes_of())
    assert f["or_high"].iloc[:14].isna().all()  # 09:30 .. 09:43: not complete yet
    at_0944 = f.loc[pd.Timestamp("2024-01-08 09:44", tz="America/New_York")]
    assert (at_0944["or_high"], at_0944["or_low"], at_0944["or_width"]) == (4820.0, 4795.0, 25.0)
    assert (f["or_high"].iloc[14:] == 4820.0).all() and (f["or_low"].iloc[14:] == 4795.0).all()


def test_opening_range_minutes_is_a_parameter():
    close = 4800.0 + np.arange(390)
    f = read_all(OpeningRange(OpeningRange.Params(minutes=30)), BarsMarket({"SPX": session_frame(close)}), minutes_of())
    assert math.isnan(f["or_high"].iloc[28]) and f["or_high"].iloc[29] == 4829.0 and f["or_low"].iloc[29] == 4800.0


# --------------------------------------------------------------------------- VWAP
def test_vwap_with_known_volumes():
    # flat bars at 10, 20, 30 with volumes 1, 2, 3: VWAP 10, (10 + 40) / 3, (10 + 40 + 90) / 6
    market = BarsMarket({"SPX": session_frame([10.0, 20.0, 30.0], volume=np.array([1.0, 2.0, 3.0]))})
    f = read_all(Vwap(Vwap.Params(window_minutes=None)), market, minutes_of()[:3])  # anchored at the open
    assert f["vwap"].tolist() == pytest.approx([10.0, 50 / 3, 140 / 6])


def test_vwap_uses_the_typical_price_high_low_close():
    market = BarsMarket({"SPX": session_frame([100.0, 100.0], high=np.array([103.0, 106.0]),
                                              low=np.array([97.0, 100.0]), volume=np.array([1.0, 1.0]))})
    f = read_all(Vwap(Vwap.Params(window_minutes=None)), market, minutes_of()[:2])
    assert f["vwap"].tolist() == pytest.approx([100.0, (100.0 + 102.0) / 2])


def test_rolling_vwap_over_a_window():
    market = BarsMarket({"SPX": session_frame([10.0, 20.0, 30.0, 40.0], volume=np.array([1.0, 2.0, 3.0, 4.0]))})
    f = read_all(Vwap(Vwap.Params(window_minutes=2)), market, minutes_of()[:4])
    assert math.isnan(f["vwap"].iloc[0])
    assert f["vwap"].iloc[1:].tolist() == pytest.approx([50 / 3, 130 / 5, 250 / 7])


def _rolling_vwap_by_hand(frame: pd.DataFrame, at: pd.Timestamp, minutes: int) -> float:
    """Σ typical x volume / Σ volume over the bars labelled in (at - minutes, at], written out bar by bar."""
    num = den = 0.0
    for ts, bar in frame.iterrows():
        if at - pd.Timedelta(minutes=minutes) < ts <= at:
            typical = (bar["high"] + bar["low"] + bar["close"]) / 3
            num += typical * bar["volume"]
            den += bar["volume"]
    return num / den


def test_the_default_vwap_is_a_rolling_30_minute_vwap_known_from_0959():
    """Seed 000's VWAP(30m): at each minute the last 30 one-minute bars, checked bar by bar."""
    rng = np.random.default_rng(7)
    close = 4800.0 + np.cumsum(rng.normal(0, 1, 390))
    high, low = close + rng.uniform(0, 2, 390), close - rng.uniform(0, 2, 390)
    volume = rng.integers(100, 5000, 390).astype(float)
    frame = session_frame(close, high=high, low=low, volume=volume)
    f = read_all(Vwap(), BarsMarket({"SPX": frame}), minutes_of())
    assert Vwap.Params().window_minutes == 30
    ny = "America/New_York"
    assert f["vwap"].loc[:pd.Timestamp("2024-01-08 09:58", tz=ny)].isna().all()  # 29 bars: not a window yet
    for hhmm in ("09:59", "10:00", "10:31", "12:00", "15:59"):
        at = pd.Timestamp(f"2024-01-08 {hhmm}", tz=ny)
        assert f["vwap"].loc[at] == pytest.approx(_rolling_vwap_by_hand(frame, at, 30), rel=1e-12), hhmm
    # by hand at 10:00: bars 09:31 .. 10:00, the 09:30 bar has left the window
    window = frame.iloc[1:31]
    typical = (window.high + window.low + window.close) / 3
    assert f["vwap"].iloc[30] == pytest.approx((typical * window.volume).sum() / window.volume.sum(), rel=1e-12)
    # anchored (the option) differs: it still weighs the 09:30 bar
    anchored = read_all(Vwap(Vwap.Params(window_minutes=None)), BarsMarket({"SPX": frame}), minutes_of())
    assert anchored["vwap"].iloc[30] != pytest.approx(f["vwap"].iloc[30], rel=1e-9)


def test_rolling_vwap_cuts_the_window_on_bar_times_and_never_reads_yesterday():
    """A missing minute is not counted twice, and 09:45 does not reach back into the previous session."""
    two_days = pd.concat([session_frame(np.full(390, 100.0), day=dt.date(2024, 1, 5)),
                          session_frame(np.full(390, 200.0))])
    gap = two_days.drop(pd.Timestamp("2024-01-08 10:10", tz="America/New_York"))
    gap.loc[pd.Timestamp("2024-01-08 10:09", tz="America/New_York"), ["high", "low", "close", "volume"]] = [
        260.0, 260.0, 260.0, 3000.0]
    f = read_all(Vwap(Vwap.Params(window_minutes=30)), BarsMarket({"SPX": gap}), minutes_of())
    ny = "America/New_York"
    assert f["vwap"].loc[pd.Timestamp("2024-01-08 10:00", tz=ny)] == 200.0  # only today's 200s
    # at 10:10 (no bar of its own): the 29 bars 09:41 .. 10:09, one of them 260 x 3000
    at = pd.Timestamp("2024-01-08 10:10", tz=ny)
    assert f["vwap"].loc[at] == pytest.approx((28 * 200.0 * 1000 + 260.0 * 3000) / (28 * 1000 + 3000), rel=1e-12)


# ---------------------------------------------------------------------------- ATR
def test_atr_of_one_minute_bars():
    # close rises 1 a bar; high = close + 0.5, low = close - 0.5: true range 1.5 (from the previous close),
    # except the first bar of the session (open = close): 1.0
    close = 4800.0 + np.arange(30)
    market = BarsMarket({"SPX": session_frame(close, high=close + 0.5, low=close - 0.5)})
    f = read_all(Atr(Atr.Params(bars=10)), market, minutes_of()[:30])
    assert f["atr"].iloc[:9].isna().all()
    assert f["atr"].iloc[9] == pytest.approx((1.0 + 9 * 1.5) / 10)
    assert f["atr"].iloc[10:].tolist() == pytest.approx([1.5] * 20)


# ----------------------------------------------------------------------- momentum
def test_momentum_is_the_return_over_5_and_15_minutes():
    close = 4800.0 + np.arange(60)
    f = read_all(Momentum(), BarsMarket({"SPX": session_frame(close)}), minutes_of()[:60])
    assert f["mom_5"].iloc[:5].isna().all() and f["mom_15"].iloc[:15].isna().all()
    assert f["mom_5"].iloc[5] == pytest.approx(4805 / 4800 - 1)
    assert f["mom_15"].iloc[40] == pytest.approx(4840 / 4825 - 1)


# ---------------------------------------------------------------------------- VIX
def test_vix_levels_from_the_market_and_nan_without_them():
    market = SyntheticMarket(seed=7, start="2024-01-08", end="2024-01-09")
    minutes = minutes_of()
    f = read_all(VixLevels(), market, minutes)
    vix = market.bars("VIX")["close"].reindex(minutes)
    vix9d = market.bars("VIX9D")["close"].reindex(minutes)
    assert f["vix"].tolist() == vix.tolist() and f["vix9d"].tolist() == vix9d.tolist()
    assert f["vix9d_vix_ratio"].iloc[100] == pytest.approx(vix9d.iloc[100] / vix.iloc[100])
    no_vix = read_all(VixLevels(), ModelMarket(MONDAY, MONDAY), minutes)
    assert no_vix.isna().all().all()


# -------------------------------------------------------------------- look-ahead
ALL = (OpeningRange, Vwap, Atr, Momentum, VixLevels)


def test_no_look_ahead_values_at_a_bar_use_bars_up_to_it_only():
    """Every provider's values at bar i are the same when the market ends at bar i."""
    market = SyntheticMarket(seed=11, start="2024-01-08", end="2024-01-09")
    minutes = minutes_of()
    full = {cls: read_all(cls(), market, minutes) for cls in ALL}
    symbols = ("SPX", "VIX", "VIX9D")
    for i in (0, 5, 14, 15, 40, 200, 389):
        cut = minutes[i]
        truncated = BarsMarket({s: market.bars(s).loc[:cut] for s in symbols})
        for cls in ALL:
            provider = cls()
            provider.on_session_start(MONDAY, truncated, minutes)
            assert provider.values(i) == pytest.approx(full[cls].iloc[i].to_dict(), nan_ok=True), (cls.name, i)
    # and the later bars do move the values (the test has teeth)
    assert full[Vwap]["vwap"].iloc[389] != full[Vwap]["vwap"].iloc[200]


def test_a_path_that_diverges_later_gives_the_same_features_until_it_does():
    base = 4800.0 + np.sin(np.arange(390) / 7.0) * 5
    other = base.copy()
    other[201:] += 50.0
    vols = np.full(390, 1000.0)
    vols2 = vols.copy()
    vols2[201:] = 9000.0
    a = BarsMarket({"SPX": session_frame(base, volume=vols)})
    b = BarsMarket({"SPX": session_frame(other, volume=vols2)})
    for cls in (OpeningRange, Vwap, Atr, Momentum):
        fa, fb = read_all(cls(), a, minutes_of()), read_all(cls(), b, minutes_of())
        pd.testing.assert_frame_equal(fa.iloc[:201], fb.iloc[:201])


# ------------------------------------------------------------------ in the engine
class FeatureProbe(Strategy):
    """Records ctx.features at each decision time."""

    name = "feature_probe"

    def __init__(self, times):
        super().__init__()
        self.times = times
        self.seen: dict = {}

    def decision_times(self):
        return self.times

    def on_decision_time(self, ctx):
        self.seen[ctx.now] = dict(ctx.features)


def test_the_engine_fills_ctx_features_every_bar_before_strategies_run():
    def path(index):
        i = np.arange(len(index)) % 390  # every session: up 1 a minute from 4800
        return 4800.0 + i

    market = ModelMarket("2024-01-08", "2024-01-09", spot=path)
    probe = FeatureProbe([dt.time(9, 40), dt.time(10, 0)])
    engine = Engine(market=market, strategies=[("probe", probe)], fill_model=MidSlippageFill(),
                    commission=ZeroCommission(), features=[OpeningRange(), Vwap(), Momentum()])
    engine.run_all()
    ny = "America/New_York"
    early = probe.seen[pd.Timestamp("2024-01-08 09:40", tz=ny)]
    assert math.isnan(early["or_high"]) and early["mom_5"] == pytest.approx(4810 / 4805 - 1)
    for day in ("2024-01-08", "2024-01-09"):  # recomputed for each session
        at10 = probe.seen[pd.Timestamp(f"{day} 10:00", tz=ny)]
        assert (at10["or_high"], at10["or_low"]) == (4814.0, 4800.0)
        assert at10["vwap"] == pytest.approx(4815.5)  # rolling 30 minutes, equal volumes: mean of 4801 .. 4830
        assert set(at10) == {"or_high", "or_low", "or_width", "vwap", "mom_5", "mom_15"}


def test_two_providers_may_not_share_a_feature_name():
    with pytest.raises(ValueError, match="feature 'vwap' comes from two providers"):
        Engine(market=ModelMarket("2024-01-08", "2024-01-08"), strategies=[("probe", FeatureProbe([]))],
               fill_model=MidSlippageFill(), commission=ZeroCommission(),
               features=[Vwap(), Vwap(Vwap.Params(window_minutes=None))])


def test_builtin_providers_are_registered_by_name():
    registry = plugin_registry()
    for cls in ALL:
        assert registry.get("context_provider", cls.name).cls is cls


def test_a_feature_on_a_symbol_the_market_lacks_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "cfg.yaml"
    config.write_text("name: x\ndata: {source: synthetic, start: 2023-01-03, end: 2023-01-04}\n"
                      "strategies: [{name: credit_vertical}]\n"
                      "features: [{name: opening_range, params: {symbol: FOO}}]\n"
                      f"output: {{dir: {tmp_path / 'runs'}}}\n")
    proc = subprocess.run([sys.executable, "-m", "strikebench.cli", "backtest", str(config), "--quiet"],
                          capture_output=True, text=True, env={"COLUMNS": "300", "NO_COLOR": "1", "PATH": ""})
    assert proc.returncode == 4
    assert proc.stderr.strip() == ("error: feature provider 'opening_range': the market has no minute bars for "
                                   "params.symbol 'FOO'")
    assert "Traceback" not in proc.stderr
    # the run that stopped says so in its journal
    (run_dir,) = list((tmp_path / "runs").iterdir())
    import sqlite3

    completed = sqlite3.connect(run_dir / "journal.sqlite").execute("SELECT completed FROM runs").fetchone()
    assert completed == (0,)
