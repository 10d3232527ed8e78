"""Immutable option-contract basics: roots, contracts, OCC symbols, settlement moments.

Everything here is a value object: ``RootSpec`` and ``OptionContract`` are
frozen dataclasses, safe to hash, sort, share between threads and use as
dict keys.  See ``docs/options-domain.md`` for the exchange rules (with
citations) that the settlement/last-trade functions implement.

Units: strikes and prices are in index points (or ETF dollars); one point is
worth ``multiplier`` (100) dollars per contract.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import numbers
import re
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, Mapping

import pandas as pd

from strikebench.calendar import MarketCalendar, NotASessionError, default_calendar

__all__ = [
    "Right",
    "SettlementStyle",
    "ExerciseStyle",
    "SettlementType",
    "RootSpec",
    "ROOTS",
    "UnknownRootError",
    "OCCSymbolError",
    "ContractError",
    "ExpiryNotASessionError",
    "root_spec",
    "OptionContract",
    "last_trade_time",
    "settlement_time",
    "settlement_print",
]


# --------------------------------------------------------------------------
# Enums
# --------------------------------------------------------------------------
class Right(str, Enum):
    CALL = "C"
    PUT = "P"

    @classmethod
    def parse(cls, value: Any) -> "Right":
        """``Right`` from ``Right``, "C"/"P", "call"/"put" (any case)."""
        if isinstance(value, Right):
            return value
        if isinstance(value, str):
            v = value.strip().upper()
            if v in ("C", "CALL", "CALLS"):
                return cls.CALL
            if v in ("P", "PUT", "PUTS"):
                return cls.PUT
        raise ValueError(f"bad option right {value!r}: want 'C'/'P' or 'call'/'put'")

    def __str__(self) -> str:  # "C" / "P", not "Right.CALL"
        return self.value


class SettlementStyle(str, Enum):
    AM = "AM"  #: settles to a value computed from the expiry day's OPENING prints
    PM = "PM"  #: settles to the expiry day's CLOSING value

    def __str__(self) -> str:
        return self.value


class ExerciseStyle(str, Enum):
    EUROPEAN = "EUROPEAN"
    AMERICAN = "AMERICAN"

    def __str__(self) -> str:
        return self.value


class SettlementType(str, Enum):
    CASH = "CASH"
    PHYSICAL = "PHYSICAL"

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------
# Root specifications
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class RootSpec:
    """Static contract terms of one option root (OCC "option symbol")."""

    root: str
    underlying: str
    multiplier: int
    exercise: ExerciseStyle
    settlement_type: SettlementType
    settlement_style: SettlementStyle
    tick_rule: str  #: rule name understood by :mod:`strikebench.options.ticks`
    strike_grid: str  #: human note on listed strike intervals (not enforced)
    description: str = ""
    priced_off: str = ""  #: what the option is naturally priced against (forward)


_ROOT_LIST = (
    RootSpec(
        root="SPX",
        underlying="SPX",
        multiplier=100,
        exercise=ExerciseStyle.EUROPEAN,
        settlement_type=SettlementType.CASH,
        settlement_style=SettlementStyle.AM,
        tick_rule="SPX",
        strike_grid="5-point near the money; 10/25/50/100/200 on longer-dated/far strikes",
        description="S&P 500 standard monthly options, AM-settled (SET) on the third Friday",
        priced_off="SPX forward to the expiry morning",
    ),
    RootSpec(
        root="SPXW",
        underlying="SPX",
        multiplier=100,
        exercise=ExerciseStyle.EUROPEAN,
        settlement_type=SettlementType.CASH,
        settlement_style=SettlementStyle.PM,
        tick_rule="SPX",
        strike_grid="5-point near the money; 10/25/50/100/200 on longer-dated/far strikes",
        description="S&P 500 Weeklys/EOM/dailies, PM-settled to the official SPX close",
        priced_off="SPX forward to the expiry close",
    ),
    RootSpec(
        root="XSP",
        underlying="XSP",
        multiplier=100,
        exercise=ExerciseStyle.EUROPEAN,
        settlement_type=SettlementType.CASH,
        settlement_style=SettlementStyle.PM,
        tick_rule="XSP",
        strike_grid="1-point (0.50 allowed for weeklys); XSP = SPX / 10",
        description="Mini-SPX options (1/10 of SPX), PM-settled",
        priced_off="XSP (= SPX/10) forward to the expiry close",
    ),
    RootSpec(
        root="VIX",
        underlying="VIX",
        multiplier=100,
        exercise=ExerciseStyle.EUROPEAN,
        settlement_type=SettlementType.CASH,
        settlement_style=SettlementStyle.AM,
        tick_rule="VIX",
        strike_grid="0.50 below 15, 1 below 200, 5 above 200",
        description="Cboe Volatility Index options, AM-settled to the Special Opening Quotation (VRO)",
        priced_off="VX future expiring on the option's expiry date (not spot VIX)",
    ),
    RootSpec(
        root="SPY",
        underlying="SPY",
        multiplier=100,
        exercise=ExerciseStyle.AMERICAN,
        settlement_type=SettlementType.PHYSICAL,
        settlement_style=SettlementStyle.PM,
        tick_rule="PENNY",
        strike_grid="1-point (0.50 on some short-dated series)",
        description="SPDR S&P 500 ETF Trust options (100 shares), American, physical",
        priced_off="SPY forward (dividends matter; early exercise possible)",
    ),
    RootSpec(
        root="QQQ",
        underlying="QQQ",
        multiplier=100,
        exercise=ExerciseStyle.AMERICAN,
        settlement_type=SettlementType.PHYSICAL,
        settlement_style=SettlementStyle.PM,
        tick_rule="PENNY",
        strike_grid="1-point (0.50 on some short-dated series)",
        description="Invesco QQQ Trust options (100 shares), American, physical",
        priced_off="QQQ forward (dividends matter; early exercise possible)",
    ),
    RootSpec(
        root="IWM",
        underlying="IWM",
        multiplier=100,
        exercise=ExerciseStyle.AMERICAN,
        settlement_type=SettlementType.PHYSICAL,
        settlement_style=SettlementStyle.PM,
        tick_rule="PENNY",
        strike_grid="1-point (0.50 on some short-dated series)",
        description="iShares Russell 2000 ETF options (100 shares), American, physical",
        priced_off="IWM forward (dividends matter; early exercise possible)",
    ),
)

#: Known roots, read-only.
ROOTS: Mapping[str, RootSpec] = MappingProxyType({r.root: r for r in _ROOT_LIST})


class UnknownRootError(KeyError, ValueError):
    """An option root strikebench does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _known_roots() -> str:
    return ", ".join(ROOTS)


def root_spec(root: str) -> RootSpec:
    """The :class:`RootSpec` of ``root`` (exact, upper-case OCC root)."""
    try:
        return ROOTS[root]
    except (KeyError, TypeError):
        hint = ""
        if isinstance(root, str) and root.strip().upper() in ROOTS and root != root.strip().upper():
            hint = f" (did you mean {root.strip().upper()!r}?)"
        raise UnknownRootError(f"unknown option root {root!r}{hint}; known roots: {_known_roots()}") from None


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
class ContractError(ValueError):
    """An invalid :class:`OptionContract` field."""


class OCCSymbolError(ValueError):
    """A string that is not a valid OCC option symbol for a known root."""


class ExpiryNotASessionError(NotASessionError):
    """The contract's expiry date is not a trading session, so it cannot settle then."""


# --------------------------------------------------------------------------
# OptionContract
# --------------------------------------------------------------------------
_STRIKE_MAX = 99_999.999  # 8 OCC digits at 1/1000 resolution
_OCC_TAIL = 15  # yymmdd + C/P + 8 strike digits
_OCC_WIDTH = 21
_ROOT_WIDTH = 6
_ROOT_RE = re.compile(r"^[A-Z0-9]{1,6}$")
# Used only to diagnose a wrong-length strike (which shifts every fixed field).
_OCC_LOOSE_RE = re.compile(r"^(?P<root>[A-Za-z0-9]{1,6}) *(?P<exp>\d{6})(?P<right>[CPcp])(?P<strike>\d+)$")


def _strike_millis(strike: float) -> int:
    return int(round(float(strike) * 1000.0))


@functools.lru_cache(maxsize=1 << 16)
def _occ_body(expiry: _dt.date, right: str, strike: float) -> str:
    """``YYMMDD`` + right + strike x 1000 in 8 digits (asked for every candidate, order and fill:
    formatted once per contract)."""
    return f"{expiry:%y%m%d}{right}{_strike_millis(strike):08d}"


@dataclass(frozen=True, slots=True)
class OptionContract:
    """One listed option series.

    * ``root`` -- OCC option root, e.g. ``"SPXW"`` (see :data:`ROOTS`).
    * ``expiry`` -- the OCC expiration date, which for every root here is also
      the settlement day (AM roots settle at that morning's open, PM roots at
      that day's close).
    * ``strike`` -- index points / dollars, > 0, a multiple of 0.001.
    * ``right`` -- :class:`Right`.

    Construct with exact types, or leniently with :meth:`make` /
    :meth:`from_occ`.  Ordering is by (root, expiry, right, strike), calls
    before puts.
    """

    root: str
    expiry: _dt.date
    strike: float
    right: Right

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or self.root not in ROOTS:
            raise ContractError(
                f"unknown option root {self.root!r}; known roots: {_known_roots()}"
                + (" (use OptionContract.make() to normalise case)" if isinstance(self.root, str) and self.root.upper() in ROOTS else "")
            )
        if type(self.expiry) is not _dt.date:
            raise ContractError(
                f"expiry must be a datetime.date (not {type(self.expiry).__name__}): {self.expiry!r}; "
                "use OptionContract.make() to convert strings/Timestamps"
            )
        s = self.strike
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise ContractError(f"strike must be a real number, got {s!r}")
        fs = float(s)
        if not math.isfinite(fs) or fs <= 0:
            raise ContractError(f"strike must be finite and > 0, got {s!r}")
        if fs > _STRIKE_MAX:
            raise ContractError(f"strike {s!r} exceeds the OCC maximum {_STRIKE_MAX}")
        if abs(fs * 1000.0 - round(fs * 1000.0)) > 1e-6:
            raise ContractError(f"strike {s!r} is not a multiple of 0.001")
        if not isinstance(self.right, Right):
            if self.right in ("C", "P"):  # Right is a str enum: "C"/"P" are its values
                object.__setattr__(self, "right", Right(self.right))
            else:
                raise ContractError(
                    f"right must be Right.CALL/Right.PUT or 'C'/'P', got {self.right!r}; "
                    "use OptionContract.make() to accept 'call'/'put'"
                )
        if type(s) is not float:
            object.__setattr__(self, "strike", fs)

    # -- construction -------------------------------------------------------
    @classmethod
    def make(cls, root: str, expiry: Any, strike: Any, right: Any) -> "OptionContract":
        """Lenient constructor: root in any case; expiry as date/str/Timestamp;
        strike as number or numeric string; right as Right/"C"/"P"/"call"/"put"."""
        if not isinstance(root, str):
            raise ContractError(f"root must be a string, got {root!r}")
        r = root.strip().upper()
        if isinstance(expiry, _dt.datetime):
            exp = expiry.date()
        elif isinstance(expiry, _dt.date):
            exp = expiry
        else:
            try:
                ts = pd.Timestamp(expiry)
            except (ValueError, TypeError) as exc:
                raise ContractError(f"cannot read expiry {expiry!r}: {exc}") from None
            if ts is pd.NaT:
                raise ContractError(f"cannot read expiry {expiry!r}")
            exp = ts.date()
        if isinstance(strike, str):
            try:
                strike = float(strike)
            except ValueError:
                raise ContractError(f"cannot read strike {strike!r}") from None
        elif isinstance(strike, numbers.Real) and not isinstance(strike, bool):
            strike = float(strike)
        # round away binary noise (e.g. 587.4999999) onto the 0.001 grid
        if isinstance(strike, float) and math.isfinite(strike):
            snapped = round(strike * 1000.0) / 1000.0
            if abs(snapped - strike) < 1e-6:
                strike = snapped
        try:
            rt = Right.parse(right)
        except ValueError as exc:
            raise ContractError(str(exc)) from None
        return cls(r, exp, strike, rt)

    @classmethod
    def from_occ(cls, symbol: str) -> "OptionContract":
        """Parse an OCC/OSI symbol, padded (``"SPXW  241220P05800000"``) or
        compact (``"SPXW241220P05800000"``, Tradier's form)."""

        def bad(why: str) -> OCCSymbolError:
            return OCCSymbolError(f"bad OCC symbol {symbol!r}: {why}")

        if not isinstance(symbol, str):
            raise OCCSymbolError(f"bad OCC symbol {symbol!r}: not a string ({type(symbol).__name__})")
        s = symbol.rstrip()
        if s != s.lstrip():
            raise bad("leading whitespace")
        loose = _OCC_LOOSE_RE.match(s)
        if loose and len(loose["strike"]) != 8:
            raise bad(
                f"strike {loose['strike']!r} has {len(loose['strike'])} digits "
                "(want 8: strike x 1000, zero-padded)"
            )
        if len(s) <= _OCC_TAIL:
            raise bad(
                f"too short ({len(s)} chars; want a 1-6 char root + yymmdd + C/P + 8 strike digits)"
            )
        root_field, tail = s[:-_OCC_TAIL], s[-_OCC_TAIL:]
        exp_s, right_s, strike_s = tail[:6], tail[6], tail[7:]

        # root
        root = root_field.rstrip(" ")
        if " " in root_field:
            if len(root_field) != _ROOT_WIDTH:
                raise bad(
                    f"root field {root_field!r} is space-padded to {len(root_field)} chars; "
                    f"the padded form pads the root to exactly {_ROOT_WIDTH}"
                )
            if " " in root:
                raise bad(f"root {root_field.strip()!r} contains a space")
        if not root:
            raise bad("empty root")
        if not _ROOT_RE.match(root):
            raise bad(f"root {root!r} must be 1-6 upper-case letters/digits")
        if root not in ROOTS:
            raise bad(f"unknown root {root!r} (known: {_known_roots()})")

        # expiry
        if not (exp_s.isascii() and exp_s.isdigit()):
            raise bad(f"expiry {exp_s!r} is not 6 digits yymmdd")
        yy, mm, dd = int(exp_s[:2]), int(exp_s[2:4]), int(exp_s[4:])
        if not 1 <= mm <= 12:
            raise bad(f"month {mm} in expiry {exp_s!r}")
        try:
            expiry = _dt.date(2000 + yy, mm, dd)
        except ValueError:
            raise bad(f"day {dd} in expiry {exp_s!r} (no such date)") from None

        # right
        if right_s not in ("C", "P"):
            raise bad(f"right {right_s!r} (want 'C' or 'P')")

        # strike
        if not (strike_s.isascii() and strike_s.isdigit()):
            raise bad(f"strike {strike_s!r} is not 8 digits (strike x 1000)")
        millis = int(strike_s)
        if millis == 0:
            raise bad(f"strike {strike_s!r} is zero")

        return cls(root, expiry, millis / 1000.0, Right(right_s))

    # -- properties ---------------------------------------------------------
    @property
    def spec(self) -> RootSpec:
        return ROOTS[self.root]

    @property
    def multiplier(self) -> int:
        return ROOTS[self.root].multiplier

    @property
    def underlying(self) -> str:
        return ROOTS[self.root].underlying

    @property
    def settlement_style(self) -> SettlementStyle:
        return ROOTS[self.root].settlement_style

    @property
    def exercise(self) -> ExerciseStyle:
        return ROOTS[self.root].exercise

    @property
    def settlement_type(self) -> SettlementType:
        return ROOTS[self.root].settlement_type

    @property
    def is_call(self) -> bool:
        return self.right is Right.CALL

    @property
    def is_put(self) -> bool:
        return self.right is Right.PUT

    def _occ_body(self) -> str:
        return _occ_body(self.expiry, self.right.value, self.strike)

    @property
    def occ_symbol(self) -> str:
        """21-char OCC/OSI symbol, root padded to 6: ``"SPXW  241220P05800000"``."""
        return f"{self.root:<{_ROOT_WIDTH}}{self._occ_body()}"

    @property
    def occ_compact(self) -> str:
        """OCC symbol without padding (Tradier's form): ``"SPXW241220P05800000"``."""
        return f"{self.root}{self._occ_body()}"

    def __str__(self) -> str:
        return self.occ_compact

    # -- ordering -----------------------------------------------------------
    def _key(self) -> tuple:
        return (self.root, self.expiry, self.right.value, float(self.strike))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OptionContract):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, OptionContract):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, OptionContract):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, OptionContract):
            return NotImplemented
        return self._key() >= other._key()


# --------------------------------------------------------------------------
# Settlement and last-trading moments
# --------------------------------------------------------------------------
def _expiry_session(contract: OptionContract, cal: MarketCalendar) -> pd.Timestamp:
    if not cal.is_session(contract.expiry):
        hint = ""
        if contract.expiry.weekday() == 5 and contract.expiry < _dt.date(2015, 2, 15):
            hint = (
                "; before 2015-02-15 OCC dated standard monthlies on the Saturday after "
                "the third Friday -- use the preceding session as the expiry"
            )
        raise ExpiryNotASessionError(
            f"{contract.occ_compact}: expiry {contract.expiry} ({contract.expiry:%A}) is not a "
            f"trading session (weekend or exchange holiday), so the contract cannot settle then{hint}"
        )
    return pd.Timestamp(contract.expiry)


def settlement_time(contract: OptionContract, calendar: MarketCalendar | None = None) -> pd.Timestamp:
    """When the settlement value is struck (tz-aware America/New_York).

    * AM roots (SPX monthlies, VIX): the expiry day's open, 09:30 (SET from
      the S&P 500 components' opening prints; VRO, the VIX Special Opening
      Quotation, from SPX options' opening prices).
    * PM roots (SPXW, XSP, SPY/QQQ/IWM): the expiry day's close, 16:00 or
      13:00 on an early close.

    Raises :class:`ExpiryNotASessionError` if the expiry is not a session.
    """
    if calendar is None:
        return _default_moments(contract.settlement_style, contract.expiry, contract)[0]
    return _moments(contract, calendar)[0]


def last_trade_time(contract: OptionContract, calendar: MarketCalendar | None = None) -> pd.Timestamp:
    """The last moment the contract can trade (tz-aware America/New_York).

    * PM roots: the expiry day's close (16:00, 13:00 on early closes) --
      the same moment as settlement.
    * AM roots (SPX monthlies, VIX): the close of the session before the
      expiry day (trading ceases the business day before settlement).

    Modelled on the *underlying* session (bars 09:30-16:00).  Cboe lets
    expiring AM-settled SPX and VIX options trade until 3:15 p.m. CT (16:15
    ET) on their last trading day; that curb quarter-hour is deliberately
    not modelled (see docs/options-domain.md).

    Raises :class:`ExpiryNotASessionError` if the expiry is not a session.
    """
    if calendar is None:
        return _default_moments(contract.settlement_style, contract.expiry, contract)[1]
    return _moments(contract, calendar)[1]


def _moments(contract: OptionContract, cal: MarketCalendar) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(settlement moment, last trade moment) of a contract on a calendar."""
    day = _expiry_session(contract, cal)
    if contract.settlement_style is SettlementStyle.AM:
        return cal.session_open(day), cal.session_close(cal.previous_session(day))
    close = cal.session_close(day)
    return close, close


_MOMENTS_CACHE: dict[tuple, tuple[pd.Timestamp, pd.Timestamp]] = {}


def _default_moments(style: SettlementStyle, expiry: _dt.date, contract: OptionContract):
    """The moments on the default calendar, cached: they depend only on (style, expiry)."""
    key = (style, expiry)
    hit = _MOMENTS_CACHE.get(key)
    if hit is None:
        hit = _moments(contract, default_calendar())
        _MOMENTS_CACHE[key] = hit
    return hit


def settlement_print(contract: OptionContract) -> str:
    """Which underlying print settles the contract: ``"open"`` (AM) or ``"close"`` (PM)."""
    return "open" if contract.settlement_style is SettlementStyle.AM else "close"
