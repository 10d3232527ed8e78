"""``data: {source: tradier}``: the session in progress as Tradier reports it, behind the market interface.

What a live session needs from a market, from Tradier's REST market data:

* **sessions** -- one: the day of Tradier's market clock (``/v1/markets/clock``), cross-checked with Tradier's
  calendar (``/v1/markets/calendar``) and the exchange calendar (exchange_calendars); a disagreement on whether
  the day is a session, or on its close (an early close), is a one-line error (never guessed);
* **bars** of the underlying (and VIX etc. when asked) -- the session's minute grid from the exchange calendar,
  filled from ``/v1/markets/timesales`` (1min, ``session_filter=open``) up to the clock and, bar by bar, as the
  live runtime calls :meth:`TradierMarket.bar_closed`; minutes not yet happened are NaN;
* **chains** -- ``/v1/markets/options/expirations?includeAllRoots=true`` (SPX and SPXW) and
  ``/v1/markets/options/chains?greeks=true`` per expiry: quotes, IV and greeks as Tradier sends them (ORATS;
  delta/gamma per point, theta per day, vega per vol point, as strikebench's). Greeks that are missing, NaN or
  older than ``max_greeks_age_minutes`` (Tradier's ``updated_at``) are recomputed by strikebench
  (:func:`strikebench.feeds.greeks.fill_greeks`, from the quote mid) and flagged: :meth:`greeks_flags` names
  each such contract and why, and :attr:`recomputed` counts them;
* **leg quotes** of open positions -- ``/v1/markets/quotes`` for every tracked contract at each bar's close;
* **settlement values** -- the session's last minute close (PM-settled roots) or the day's open from
  ``/v1/markets/history`` (AM-settled roots: the open, not the special opening quotation: flagged in the log).

Credentials: ``token`` (default: the ``TRADIER_TOKEN`` environment variable), ``environment`` (sandbox data is
delayed 15 minutes by Tradier). The token is never shown.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, SecretStr

from strikebench.api import DataFeed, PluginParams
from strikebench.calendar import NY, MarketCalendar
from strikebench.feeds.live_session import LiveLegQuotes, LiveSessionMarket
from strikebench.errors import StrikebenchError
from strikebench.hookspecs import hookimpl
from strikebench.options.chain import ChainSnapshot

__all__ = ["TradierFeed", "TradierFeedParams", "TradierMarket", "LiveLegQuotes"]


class TradierFeedParams(PluginParams):
    token: SecretStr | None = Field(None, description="API token (default: the TRADIER_TOKEN environment variable)")
    environment: Literal["sandbox", "live"] = Field("sandbox", description="sandbox (15-minute delayed data) or live")
    base_url: str | None = Field(None, description="another API host (tests: a loopback server)")
    symbols: list[str] = Field(default_factory=lambda: ["SPX"], description="underlyings whose bars are read")
    max_dte: int = Field(60, ge=0, le=400, description="expiries fetched when a snapshot asks for all of them")
    max_greeks_age_minutes: float = Field(90.0, gt=0, description="Tradier greeks older than this are recomputed")
    rate: float = Field(0.045, ge=-0.05, le=0.25, description="risk-free rate for recomputed IV/greeks (decimal)")
    dividend_yield: float = Field(0.015, ge=0, le=0.25, description="dividend yield for recomputed IV/greeks")
    timeout_seconds: float = Field(10.0, gt=0, le=120)


class TradierMarket(LiveSessionMarket):
    """One session of Tradier market data (see the module doc)."""

    source = "Tradier"

    def __init__(self, api, params: TradierFeedParams, *, now=None):
        self.api, self.params = api, params
        self.calendar = MarketCalendar()
        self._snaps: dict = {}
        self._flags: dict[tuple, dict[str, str]] = {}
        self.recomputed = 0
        self._init_session(self._session_day(), params.symbols, now)

    def __repr__(self) -> str:
        return f"TradierMarket({self.api.environment}, {self.day})"

    # ---------------------------------------------------------------- clock
    def _session_day(self) -> dt.date:
        clock = self.api.clock()
        try:
            day = dt.date.fromisoformat(str(clock.get("date")))
        except ValueError:
            raise StrikebenchError(f"Tradier market clock: no date in {clock!r}") from None
        day = self.session_day(self.calendar, day)
        days = {d.get("date"): d for d in self.api.calendar(day.month, day.year)}
        theirs = days.get(str(day))
        if theirs is None or theirs.get("status") != "open":
            raise StrikebenchError(f"Tradier's calendar says {day} is "
                                   f"{'missing' if theirs is None else theirs.get('status')}; the exchange calendar "
                                   f"says it is a session: not trading on a guess")
        close = pd.Timestamp(self.calendar.session_close(day)).tz_convert(NY)
        end = ((theirs.get("open") or {}).get("end")) if isinstance(theirs.get("open"), dict) else None
        if end and end != f"{close:%H:%M}":
            raise StrikebenchError(f"{day}: Tradier's calendar closes at {end}, the exchange calendar at "
                                   f"{close:%H:%M}: not trading on a guess")
        return day

    # ---------------------------------------------------------------- chains
    def listed_expiries(self, underlying: str, day) -> list[dt.date]:
        day = pd.Timestamp(day).date()
        return [e for e in self.api.expirations(underlying) if e >= day]

    def _fetch_snapshot(self, underlying: str, at: pd.Timestamp, expiries: list[dt.date]) -> ChainSnapshot:
        rows = []
        for e in expiries:
            rows += self.api.chain(underlying, e)
        return self._to_snapshot(underlying, at, rows)

    def _spot(self, underlying: str, at) -> float:
        v = self.bar_spot(underlying, at)
        if v is not None:
            return v
        q = self.api.quotes([underlying])
        last = _num(q[0].get("last")) if q else None
        if last is None:
            raise StrikebenchError(f"Tradier: no price for {underlying}")
        return last

    def _to_snapshot(self, underlying: str, at, rows: list[dict]) -> ChainSnapshot:
        from strikebench.feeds.greeks import fill_greeks
        from strikebench.options.contracts import OptionContract

        cols: dict[str, list] = {k: [] for k in ("root", "expiry", "strike", "is_call", "bid", "ask", "last",
                                                 "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega")}
        why: dict[str, str] = {}
        max_age = pd.Timedelta(minutes=self.params.max_greeks_age_minutes)
        for r in rows:
            try:
                c = OptionContract.from_occ(str(r.get("symbol")))
            except Exception:  # noqa: BLE001 - a symbol strikebench does not trade
                continue
            g = r.get("greeks") if isinstance(r.get("greeks"), dict) else {}
            vals = {k: _num(g.get(k)) for k in ("delta", "gamma", "theta", "vega")}
            iv = _num(g.get("mid_iv")) or _num(g.get("smv_vol"))
            reason = ""
            if not g:
                reason = "no greeks"
            elif iv is None or iv <= 0 or any(v is None for v in vals.values()):
                reason = "missing greeks"
            else:
                try:
                    upd = pd.Timestamp(g.get("updated_at")).tz_localize("UTC")
                    if at - upd > max_age:
                        reason = f"stale greeks (updated {upd.tz_convert(NY):%H:%M})"
                except (TypeError, ValueError):
                    reason = "greeks without updated_at"
            if reason:
                why[c.occ_compact] = reason
                iv, vals = None, {k: None for k in vals}
            cols["root"].append(c.root)
            cols["expiry"].append(np.datetime64(c.expiry, "D"))
            cols["strike"].append(c.strike)
            cols["is_call"].append(c.right.value == "C" if hasattr(c.right, "value") else str(c.right) == "C")
            for k in ("bid", "ask", "last"):
                v = _num(r.get(k))
                cols[k].append(np.nan if v is None else v)
            cols["volume"].append(_num(r.get("volume")) or 0)
            cols["open_interest"].append(_num(r.get("open_interest")) or 0)
            cols["iv"].append(np.nan if iv is None else iv)
            for k, v in vals.items():
                cols[k].append(np.nan if v is None else v)
        spot = self._spot(underlying, at)
        arrays = {k: np.asarray(v) for k, v in cols.items()}
        arrays["root"] = arrays["root"].astype(object)
        arrays["expiry"] = arrays["expiry"].astype("datetime64[D]") if len(rows) else np.array([], "datetime64[D]")
        if why:
            n = len(arrays["strike"])
            t_ns = np.full(n, (at - pd.Timedelta(minutes=1)).tz_convert("UTC").value, dtype=np.int64)
            self.recomputed += int(fill_greeks(arrays, t_ns, np.full(n, spot), self.params.rate,
                                               self.params.dividend_yield))
        self._flags[(underlying, at)] = why
        return ChainSnapshot.from_arrays(underlying, at, spot, **arrays)

    def greeks_flags(self, underlying: str, at) -> dict[str, str]:
        """The contracts of the snapshot at ``at`` whose greeks strikebench recomputed, and why."""
        return dict(self._flags.get((underlying, pd.Timestamp(at).tz_convert(NY)), {}))

    # ---------------------------------------------------------------- source
    def _fetch_bars(self, symbol, lo, hi):
        """Timesales (1min, open session) from ``lo`` to ``hi``."""
        for r in self.api.timesales(symbol, f"{lo:%Y-%m-%d %H:%M}", f"{hi:%Y-%m-%d %H:%M}"):
            try:
                t = pd.Timestamp(r.get("time"))
            except (TypeError, ValueError):
                continue
            yield (t, *[_num(r.get(k)) for k in ("open", "high", "low", "close", "volume")])

    def _fetch_quotes(self, contracts):
        """One /v1/markets/quotes request for every tracked contract."""
        quotes = {str(q.get("symbol")): q for q in self.api.quotes(sorted({c.occ_compact for c in contracts}))}
        return {c: (_num(q.get("bid")), _num(q.get("ask"))) for c in contracts
                if (q := quotes.get(c.occ_compact)) is not None}

    def _day_prints(self, symbol, day):
        h = {x.get("date"): x for x in self.api.history(symbol, day, day)}.get(str(day)) or {}
        return _num(h.get("open")), _num(h.get("close"))


def _num(x):
    from strikebench.brokers.tradier_client import num

    return num(x)


class TradierFeed(DataFeed):
    """Tradier market data for the session in progress: clock, calendar, chains with greeks, quotes, timesales."""

    name = "tradier"
    Params = TradierFeedParams

    def open(self, *, now=None):
        from strikebench.brokers.tradier import TOKEN_ENV
        from strikebench.brokers.tradier_client import TradierAPI

        p = self.params
        token = p.token.get_secret_value() if p.token is not None else os.environ.get(TOKEN_ENV, "")
        if not token.strip():
            raise StrikebenchError(f"data source tradier: no token; set {TOKEN_ENV} (or data.token)")
        api = TradierAPI(token, "-", environment=p.environment, base_url=p.base_url, timeout=p.timeout_seconds)
        return TradierMarket(api, p, now=now)


@hookimpl
def register_feeds(register):
    register(TradierFeed)
