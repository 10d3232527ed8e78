"""Scenarios of the synthetic market: typed, validated, loaded from YAML.

A scenario describes *how* the market behaves (variance process, day
archetypes, events, surface, spreads...); the seed and the date range say
*which* path is drawn. Shipped scenarios live in ``strikebench.configs``
package data (``configs/scenarios/<name>.yaml``); a scenario file may start
from another with ``extends: default`` and override only what differs.

Every field is documented (``Field(description=...)``) and unknown keys are
errors. :func:`load_scenario` turns every problem into a :class:`ScenarioError`
whose message is one line naming the file, the YAML path, the bad value and
what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from strikebench.config import load_yaml, parse_yaml_text, validation_error_message
from strikebench.errors import ConfigError

__all__ = [
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "shipped_scenarios",
    "ARCHETYPES",
]

#: Day archetypes, in the order their probabilities are drawn.
ARCHETYPES = ("calm_range", "trend_up", "trend_down", "fakeout", "event_spike_fade")


class ScenarioError(ConfigError, ValueError):
    """A scenario file is missing, malformed or invalid (one line; CLI exit code 2)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------- underlying
class UnderlyingSpec(_Strict):
    """The SPX index level, carry and drift."""

    start_level: float = Field(3850.0, gt=0, description="SPX level at the open of anchor_date, index points (the path is the same whatever dates are asked)")
    anchor_date: dt.date = Field(dt.date(2023, 1, 3), description="the session whose open is start_level (the next session if it is not one)")
    rate: float = Field(0.045, ge=-0.05, le=0.25, description="continuously compounded risk-free rate (decimal), constant")
    dividend_yield: float = Field(0.015, ge=0.0, le=0.2, description="continuous dividend yield of SPX (decimal), constant")
    drift: float = Field(0.07, ge=-1.0, le=1.0, description="physical expected return per year (decimal) of the index path")
    overnight_variance_share: float = Field(
        0.18, ge=0.0, lt=0.8, description="share of a day's variance realized in the overnight gap (close to next open)"
    )
    weekend_gap_extra: float = Field(
        0.15, ge=0.0, le=2.0, description="extra gap variance per additional calendar day closed (weekends, holidays), as a fraction of a weeknight gap"
    )
    daily_tail_df: float = Field(
        10.0, gt=2.0, le=1000.0, description="degrees of freedom of the Student-t overnight and open-to-close scores of a day (fat daily tails; large = normal)"
    )
    minute_tail_df: float = Field(
        4.0, gt=2.0, le=1000.0, description="degrees of freedom of the Student-t minute shocks (fat tails; large = normal)"
    )


class FactorSpec(_Strict):
    """One mean-reverting factor of log variance (an Ornstein-Uhlenbeck process in trading time)."""

    half_life_days: float = Field(gt=0.05, le=2000, description="half-life of a shock to this factor, trading days")
    stdev: float = Field(ge=0.0, le=3.0, description="stationary standard deviation of the factor (log-variance units)")


class VarianceSpec(_Strict):
    """Instantaneous variance v = long_run_vol^2 * exp(fast + slow) (annualized, 252-day basis)."""

    long_run_vol: float = Field(0.12, gt=0.01, le=2.0, description="median instantaneous volatility (decimal, annualized) when both factors sit at 0")
    initial_vix: float | None = Field(
        None, gt=5.0, le=150.0, description="VIX level at the open of underlying.anchor_date (a slow-factor shift from that session on); null = no shift"
    )
    fast: FactorSpec = Field(
        FactorSpec(half_life_days=8.0, stdev=0.5), description="fast log-variance factor (days): clustering after shocks; drives VIX9D"
    )
    slow: FactorSpec = Field(
        FactorSpec(half_life_days=45.0, stdev=0.4), description="slow log-variance factor (months): volatility regimes"
    )
    return_correlation: float = Field(
        -0.83, ge=-1.0, le=1.0, description="correlation of log-variance shocks with return shocks (leverage effect)"
    )
    jump_leverage_down: float = Field(
        0.10, ge=0.0, le=2.0, description="log-variance rise per day-sigma of a downward jump (events, spikes)"
    )
    jump_leverage_up: float = Field(
        0.03, ge=0.0, le=2.0, description="log-variance fall per day-sigma of an upward jump"
    )


# ----------------------------------------------------------------- archetypes
class CalmRange(_Strict):
    """A range-bound day: prices revert to the open."""

    probability: float = Field(0.40, ge=0.0, le=1.0, description="probability that a session is of this archetype")
    vol_mult: float = Field(0.85, gt=0.0, le=5.0, description="multiplier of the day's minute volatility")
    reversion_half_life_minutes: float = Field(
        150.0, gt=1.0, le=10000.0, description="half-life of the pull back to the open, minutes"
    )


class Trend(_Strict):
    """A trending day: a steady drift from open to close."""

    probability: float = Field(ge=0.0, le=1.0, description="probability that a session is of this archetype")
    vol_mult: float = Field(1.05, gt=0.0, le=5.0, description="multiplier of the day's minute volatility")
    drift_sigmas: float = Field(
        0.9, ge=0.0, le=10.0, description="mean open-to-close drift in units of the day's volatility (sign set by the archetype)"
    )
    drift_dispersion: float = Field(0.35, ge=0.0, le=5.0, description="standard deviation of the drift, day-sigmas")


class Fakeout(_Strict):
    """A fake-out: a move out of the opening range that reverses."""

    probability: float = Field(0.12, ge=0.0, le=1.0, description="probability that a session is of this archetype")
    vol_mult: float = Field(1.1, gt=0.0, le=5.0, description="multiplier of the day's minute volatility")
    opening_range_minutes: int = Field(30, ge=5, le=180, description="length of the opening range, minutes")
    fake_sigmas: float = Field(0.7, ge=0.0, le=10.0, description="size of the opening move, day-sigmas")
    reversal_sigmas: float = Field(
        0.8, ge=0.0, le=10.0, description="net move in the opposite direction by the close, day-sigmas"
    )


class EventSpikeFade(_Strict):
    """A sudden move (an unscheduled headline) that partly fades."""

    probability: float = Field(0.06, ge=0.0, le=1.0, description="probability that a session is of this archetype")
    vol_mult: float = Field(1.25, gt=0.0, le=5.0, description="multiplier of the day's minute volatility")
    spike_sigmas: float = Field(2.0, ge=0.0, le=20.0, description="size of the spike, day-sigmas")
    down_probability: float = Field(0.65, ge=0.0, le=1.0, description="probability that the spike is downward")
    fade_fraction: float = Field(0.6, ge=0.0, le=1.5, description="share of the spike retraced by the close")
    spike_minutes: int = Field(15, ge=1, le=120, description="minutes over which the spike unfolds (most of it in the first few)")
    fade_half_life_minutes: float = Field(45.0, gt=1.0, le=1000.0, description="half-life of the fade, minutes")
    vol_bump: float = Field(
        0.25, ge=0.0, le=3.0, description="log-variance rise at a downward spike (half of it on an upward one)"
    )


class Archetypes(_Strict):
    """Day archetypes, drawn independently per session; probabilities must sum to 1."""

    calm_range: CalmRange = Field(CalmRange(), description="range-bound day reverting to the open")
    trend_up: Trend = Field(Trend(probability=0.22), description="steady rise from open to close")
    trend_down: Trend = Field(Trend(probability=0.20), description="steady fall from open to close")
    fakeout: Fakeout = Field(Fakeout(), description="opening-range break that reverses")
    event_spike_fade: EventSpikeFade = Field(EventSpikeFade(), description="sudden spike that partly fades")

    @model_validator(mode="after")
    def _probabilities_sum_to_one(self) -> "Archetypes":
        total = sum(getattr(self, name).probability for name in ARCHETYPES)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"archetype probabilities must sum to 1, they sum to {total:.6g}")
        return self


# ---------------------------------------------------------------- intraday
class IntradaySpec(_Strict):
    """U-shaped intraday volatility and volume."""

    vol_open_boost: float = Field(1.6, ge=0.0, le=20.0, description="extra minute variance at the open (decays over ~20 min), relative to midday")
    vol_close_boost: float = Field(0.6, ge=0.0, le=20.0, description="extra minute variance into the close (last ~30 min), relative to midday")
    volume_open_boost: float = Field(3.0, ge=0.0, le=50.0, description="extra volume at the open, relative to midday")
    volume_close_boost: float = Field(3.5, ge=0.0, le=50.0, description="extra volume into the close, relative to midday")
    daily_volume: float = Field(2.4e9, gt=0.0, description="mean shares traded per session in SPX constituents (bars' volume column)")


# ------------------------------------------------------------------ vol indices
class VolIndexSpec(_Strict):
    """VIX, VIX9D, the VIX futures curve and VIX options."""

    variance_risk_premium: float = Field(
        1.6, ge=0.5, le=4.0, description="risk-neutral / expected physical variance (VIX^2 over the forecast): the premium option sellers earn"
    )
    vix9d_premium_ratio: float = Field(
        0.93, gt=0.2, le=3.0, description="VIX9D's variance premium relative to VIX's (short-dated premium is smaller in calm markets)"
    )
    premium_noise: float = Field(0.05, ge=0.0, le=1.0, description="stationary stdev of log-premium noise (VIX moves not explained by the forecast)")
    premium_half_life_days: float = Field(5.0, gt=0.05, le=500.0, description="half-life of the premium noise, trading days")
    atm_variance_ratio: float = Field(
        0.86, gt=0.3, le=1.0, description="ATM implied variance / variance-swap level (VIX^2): skew makes VIX exceed ATM vol"
    )
    futures_term_premium: float = Field(
        1.3, ge=-5.0, le=10.0, description="VIX futures premium over the expected VIX, points per sqrt(month) to expiry"
    )
    vvix: float = Field(0.95, gt=0.05, le=5.0, description="30-day implied vol of VIX options at VIX = 20 (decimal)")
    vvix_term_exponent: float = Field(0.3, ge=0.0, lt=0.5, description="VIX-option ATM vol ~ T^-exponent (short expiries more volatile)")
    vix_option_skew: float = Field(0.55, ge=-0.95, le=0.95, description="SSVI rho of VIX options (positive: call skew)")
    vix_option_eta: float = Field(0.9, gt=0.0, le=2.0, description="SSVI eta of VIX options (smile curvature)")


# ------------------------------------------------------------------ surface
class SurfaceSpec(_Strict):
    """SPX implied-volatility surface: SSVI (Gatheral-Jacquier), free of static arbitrage when eta*(1+|rho|) <= 2."""

    rho: float = Field(-0.68, ge=-0.99, le=0.99, description="SSVI rho: skew direction and strength (negative = put skew)")
    eta: float = Field(0.75, gt=0.0, le=4.0, description="SSVI eta: overall smile level")
    gamma: float = Field(0.45, gt=0.0, le=0.5, description="SSVI power-law gamma: how much steeper short-dated smiles are")
    event_premium: float = Field(1.25, ge=0.0, le=5.0, description="risk-neutral / physical variance of scheduled event jumps (priced before the event)")

    @model_validator(mode="after")
    def _no_butterfly_arbitrage(self) -> "SurfaceSpec":
        if self.eta * (1.0 + abs(self.rho)) > 2.0 + 1e-12:
            raise ValueError(
                f"eta*(1+|rho|) = {self.eta * (1 + abs(self.rho)):.4g} must be <= 2 (otherwise butterflies are arbitrageable)"
            )
        return self


# ------------------------------------------------------------------- quotes
class SpreadSpec(_Strict):
    """Bid/ask around the model mid for one family of roots: full spread = (base + relative*mid) * multipliers."""

    base: float = Field(gt=0.0, le=100.0, description="base full spread, premium points")
    relative: float = Field(ge=0.0, le=1.0, description="full spread as a fraction of the mid")
    max_spread: float = Field(gt=0.0, description="cap on the full spread, premium points")


class QuoteSpec(_Strict):
    """How quotes widen: with IV, distance from the money, the open, the last hour and events."""

    spx: SpreadSpec = Field(SpreadSpec(base=0.10, relative=0.009, max_spread=12.0), description="SPX and SPXW")
    xsp: SpreadSpec = Field(SpreadSpec(base=0.02, relative=0.012, max_spread=1.5), description="XSP")
    vix: SpreadSpec = Field(SpreadSpec(base=0.04, relative=0.025, max_spread=2.0), description="VIX options")
    iv_exponent: float = Field(0.6, ge=0.0, le=3.0, description="spreads scale like (IV / 18%)^exponent")
    distance_slope: float = Field(0.08, ge=0.0, le=2.0, description="extra relative width per standard deviation from the money")
    open_minutes: int = Field(10, ge=0, le=120, description="minutes after the open with wider quotes")
    open_mult: float = Field(1.8, ge=1.0, le=10.0, description="spread multiplier at the first minute (decays over open_minutes)")
    last_hour_mult: float = Field(1.5, ge=1.0, le=10.0, description="spread multiplier reached at the close (ramps over the last hour)")
    expiring_late_mult: float = Field(1.8, ge=1.0, le=10.0, description="additional multiplier for same-day expiries at the close (ramps over the last hour)")
    event_window_minutes: int = Field(30, ge=0, le=240, description="minutes either side of an intraday event with wider quotes")
    event_mult: float = Field(1.7, ge=1.0, le=10.0, description="spread multiplier around events")


# ------------------------------------------------------------------- chains
class ChainSpec(_Strict):
    """Which series are listed and on what strike grid."""

    spxw_max_dte: int = Field(45, ge=0, le=400, description="SPXW dailies listed out to this many calendar days")
    spx_monthly_max_dte: int = Field(75, ge=0, le=800, description="SPX AM-settled monthlies listed out to this many calendar days")
    xsp_max_dte: int = Field(45, ge=0, le=400, description="XSP dailies listed out to this many calendar days")
    vix_max_dte: int = Field(130, ge=0, le=800, description="VIX monthly options listed out to this many calendar days")
    fine_sigmas: float = Field(1.5, gt=0.0, le=10.0, description="5-point SPX strikes within this many standard deviations (to expiry) of the money")
    min_fine_points: float = Field(100.0, ge=0.0, le=5000.0, description="5-point strikes at least this many SPX points either side of the money")
    put_wing_sigmas: float = Field(4.0, gt=0.0, le=20.0, description="put strikes listed down to this many standard deviations")
    call_wing_sigmas: float = Field(2.5, gt=0.0, le=20.0, description="call strikes listed up to this many standard deviations")
    far_sigmas: float = Field(2.5, gt=0.0, le=20.0, description="beyond this many standard deviations strikes are 100 points apart (25 before)")
    open_interest_scale: float = Field(4000.0, gt=0.0, description="open interest of an at-the-money SPX monthly, contracts")
    turnover: float = Field(0.35, gt=0.0, le=100.0, description="day's volume / open interest at the money for a 7-day expiry")


# ------------------------------------------------------------------- events
class ScheduledEventSpec(_Strict):
    """One kind of scheduled macro release."""

    enabled: bool = Field(True, description="simulate this event kind")
    time: str = Field(pattern=r"^\d\d:\d\d$", description="release time, HH:MM America/New_York; before 09:30 it moves the opening gap")
    jump_stdev_pct: float = Field(ge=0.0, le=20.0, description="standard deviation of the index jump at the release, percent")
    jump_df: float = Field(5.0, gt=2.0, le=1000.0, description="Student-t degrees of freedom of the jump (fat tails; clipped at 3.5 standard deviations)")
    spread_minutes: int = Field(3, ge=1, le=30, description="minutes over which an intraday release's jump unfolds (half in the first, then halving)")
    vol_crush: float = Field(ge=0.0, le=3.0, description="fall of the fast log-variance factor right after the release")


class InjectedEvent(_Strict):
    """An event placed by hand: a jump of the index and of VIX at a given minute."""

    at: dt.datetime | None = Field(None, description="minute of the jump, America/New_York (e.g. '2023-03-14 10:30'); before the open it moves the gap")
    session: int | None = Field(None, ge=0, description="alternative to 'at': index of the session from the market's start (0 = first)")
    time: str = Field("10:30", pattern=r"^\d\d:\d\d$", description="HH:MM used with 'session'")
    move_pct: float = Field(0.0, gt=-60.0, le=60.0, description="index move at that minute, percent")
    vol_jump: float = Field(0.0, ge=-50.0, le=150.0, description="VIX move at that minute, points (decays like a fast-factor shock)")
    label: str = Field("injected", description="name shown in reports")

    @model_validator(mode="after")
    def _one_anchor(self) -> "InjectedEvent":
        if (self.at is None) == (self.session is None):
            raise ValueError("give exactly one of 'at' (a date and time) or 'session' (an index)")
        return self


class Episode(_Strict):
    """A multi-session move (a crash, a melt-up) with a VIX move to match."""

    start: dt.date | None = Field(None, description="first session of the episode (a date)")
    after_sessions: int | None = Field(None, ge=0, description="alternative to 'start': the episode starts this many sessions after the market's start")
    sessions: int = Field(5, ge=1, le=250, description="length in sessions")
    move_pct: float = Field(gt=-90.0, le=200.0, description="index move from the episode's first open to its last close, percent (exact)")
    vol_jump: float = Field(0.0, ge=-50.0, le=150.0, description="VIX rise over the episode, points (approximate: the fast factor decays meanwhile)")
    label: str = Field("episode", description="name shown in reports")

    @model_validator(mode="after")
    def _one_anchor(self) -> "Episode":
        if (self.start is None) == (self.after_sessions is None):
            raise ValueError("give exactly one of 'start' (a date) or 'after_sessions' (a count)")
        return self


class EventsSpec(_Strict):
    """Scheduled macro events (from a CSV calendar, with rule-based dates outside it) and injected ones."""

    calendar: str = Field(
        "events_calendar.csv", description="CSV of scheduled events (event,date,time_et): a file in strikebench.configs or a path"
    )
    fomc: ScheduledEventSpec = Field(
        ScheduledEventSpec(time="14:00", jump_stdev_pct=0.55, vol_crush=0.12), description="FOMC statement, intraday"
    )
    cpi: ScheduledEventSpec = Field(
        ScheduledEventSpec(time="08:30", jump_stdev_pct=0.75, vol_crush=0.08), description="CPI release, before the open"
    )
    nfp: ScheduledEventSpec = Field(
        ScheduledEventSpec(time="08:30", jump_stdev_pct=0.45, vol_crush=0.05), description="jobs report, before the open"
    )
    injected: list[InjectedEvent] = Field(default_factory=list, description="events placed by hand")
    episodes: list[Episode] = Field(default_factory=list, description="multi-session moves placed by hand")


# ------------------------------------------------------------------ scenario
class Scenario(_Strict):
    """Everything that shapes the synthetic market except the seed and the date range."""

    name: str = Field("custom", description="scenario name (shown in reports)")
    description: str = Field("", description="one-paragraph description")
    extends: str | None = Field(None, description="name or path of a scenario this one overrides (deep merge)")
    underlying: UnderlyingSpec = Field(UnderlyingSpec(), description="index level, carry and drift")
    variance: VarianceSpec = Field(VarianceSpec(), description="the two-factor log-variance process")
    archetypes: Archetypes = Field(Archetypes(), description="day archetypes and their probabilities")
    intraday: IntradaySpec = Field(IntradaySpec(), description="U-shaped intraday volatility and volume")
    vol_index: VolIndexSpec = Field(VolIndexSpec(), description="VIX, VIX9D, futures and VIX options")
    surface: SurfaceSpec = Field(SurfaceSpec(), description="SPX implied-volatility surface")
    quotes: QuoteSpec = Field(QuoteSpec(), description="bid/ask spreads")
    chains: ChainSpec = Field(ChainSpec(), description="listed series and strike grid")
    events: EventsSpec = Field(
        EventsSpec(), description="scheduled and injected events; a plain list here is short for events.injected"
    )


# ------------------------------------------------------------------- loading
def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``strikebench.configs`` (``scenarios/*.yaml``)."""
    folder = resources.files("strikebench.configs") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _scenario_path(name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text:
        return Path(text)
    folder = resources.files("strikebench.configs") / "scenarios"
    candidate = folder / f"{text}.yaml"
    if not candidate.is_file():
        raise ScenarioError(
            f"unknown scenario '{text}' (shipped: {', '.join(shipped_scenarios())}; or give a path to a .yaml file)"
        )
    return Path(str(candidate))


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _normalise(data: dict) -> dict:
    """Accept the short form ``events: [ {at:..., move_pct:...}, ... ]`` for injected events."""
    events = data.get("events")
    if isinstance(events, list):
        data = dict(data)
        data["events"] = {"injected": events}
    return data


def _read(path: Path, chain: tuple[str, ...]) -> tuple[dict, Any]:
    try:
        src = load_yaml(path, what="scenario")
    except ScenarioError:
        raise
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    data = _normalise(src.data)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ScenarioError(f"{src.where(('extends',))}: extends: {parent!r} is not allowed: give a scenario name or path")
        parent_path = _scenario_path(parent) if not parent.endswith((".yaml", ".yml")) else (path.parent / parent)
        if str(parent_path) in chain:
            raise ScenarioError(f"{src.where(('extends',))}: extends: '{parent}' is not allowed: scenarios extend each other in a loop")
        base, _ = _read(parent_path, chain + (str(path),))
        base.pop("name", None)
        base.pop("description", None)
        data = _deep_merge(base, {k: v for k, v in data.items() if k != "extends"})
        data["extends"] = parent
    return data, src


def load_scenario(name_or_path: str | os.PathLike | Scenario = "default") -> Scenario:
    """A validated :class:`Scenario` from a shipped name (``"crash"``) or a YAML path.

    Raises :class:`ScenarioError` (one line: file, line, YAML path, bad value,
    what is allowed) for a missing file, a YAML syntax error (file, line and
    column) or a field that fails validation.
    """
    if isinstance(name_or_path, Scenario):
        return name_or_path
    path = _scenario_path(name_or_path)
    data, src = _read(path, ())
    data.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        exc._strikebench_model = Scenario  # type: ignore[attr-defined]  (lets the message list allowed keys)
        raise ScenarioError(validation_error_message(src, exc)) from None


def scenario_from_text(text: str, path: str = "<string>") -> Scenario:
    """Validate a scenario given as YAML text (tests, notebooks); same errors as :func:`load_scenario`."""
    try:
        src = parse_yaml_text(text, path, what="scenario")
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    data = _normalise(src.data)
    if data.get("extends"):
        base, _ = _read(_scenario_path(data["extends"]), (path,))
        base.pop("name", None)
        base.pop("description", None)
        data = _deep_merge(base, data)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        exc._strikebench_model = Scenario  # type: ignore[attr-defined]
        raise ScenarioError(validation_error_message(src, exc)) from None

