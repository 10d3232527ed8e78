"""``data: {source: ibkr}``: the session in progress as Interactive Brokers reports it, behind the market interface.

What a live session needs from a market, from TWS / IB Gateway through ib_async (its own API connection, with a
client id distinct from the broker's: TWS allows one connection per client id):

* **sessions** -- one: today on the exchange calendar (exchange_calendars), or the next session (IB publishes no
  session calendar of its own for indices);
* **bars** of the underlying (and VIX etc. when asked) -- the session's minute grid from the exchange calendar,
  filled by ``reqHistoricalData`` (1 min, TRADES, regular hours) up to now and, bar by bar, as the live runtime
  calls :meth:`~strikebench.feeds.live_session.LiveSessionMarket.bar_closed` (one request for the minutes not
  filled yet: simpler and sturdier across a reconnect than a keepUpToDate subscription); minutes not yet happened,
  and minutes IB did not send, are NaN;
* **chains** -- :func:`strikebench.brokers.ibkr_data.fetch_chain`: ``reqSecDefOptParams`` (SPX and SPXW) and quote
  snapshots with IB's model greeks; a row whose greeks IB sent as its "not computed" sentinels is recomputed by
  strikebench (iv from the quote mid) and flagged: :meth:`IBKRMarket.greeks_flags` names each such contract and
  why, :attr:`IBKRMarket.recomputed` counts them;
* **market-data type** -- ``market_data_type`` (live, frozen, delayed, delayed_frozen) is requested at connect;
  the type IB marked the quotes with is :attr:`IBKRMarket.quotes_type`, and a chain whose quotes are not what was
  asked (e.g. delayed because the account has no live subscription) is noted in :attr:`IBKRMarket.notes`;
* **leg quotes** of open positions -- a snapshot of every tracked contract at each bar's close;
* **settlement values** -- the session's last minute close (PM-settled roots) or the day's open from IB's daily
  bar (AM-settled roots: the open, not the special opening quotation: noted).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from strikebench.api import DataFeed, PluginParams
from strikebench.calendar import NY, MarketCalendar
from strikebench.errors import StrikebenchError
from strikebench.feeds.live_session import LiveSessionMarket
from strikebench.hookspecs import hookimpl
from strikebench.options.chain import ChainSnapshot

__all__ = ["IBKRFeed", "IBKRFeedParams", "IBKRMarket"]

#: why a row's greeks are strikebench's, in :meth:`IBKRMarket.greeks_flags`
SENTINEL_REASON = "IB sent no model greeks (sentinel)"


class IBKRFeedParams(PluginParams):
    host: str = Field("127.0.0.1", min_length=1, description="TWS / IB Gateway host")
    port: int = Field(7497, ge=1, le=65535, description="API port (7497 TWS paper, 4002 Gateway paper, 7496 / 4001 "
                                                        "live: market data only, nothing is ever sent from here)")
    client_id: int = Field(18, ge=0, le=2**31 - 1, description="this connection's API client id: distinct from "
                                                              "broker.client_id (17 by default)")
    market_data_type: Literal["live", "frozen", "delayed", "delayed_frozen"] = Field(
        "live", description="reqMarketDataType: live, frozen (last quotes after the close), delayed, delayed_frozen")
    symbols: list[str] = Field(default_factory=lambda: ["SPX"], description="underlyings whose bars are read")
    max_dte: int = Field(60, ge=0, le=400, description="expiries fetched when a snapshot asks for all of them")
    strike_width: float = Field(0.05, gt=0, le=0.5, description="strikes within this fraction of the index level")
    rate: float = Field(0.045, ge=-0.05, le=0.25, description="risk-free rate for recomputed IV/greeks (decimal)")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="connect and request timeout")


def _price(x) -> float | None:
    """An IB price, None for its 'no value' (NaN, -1, the unset double)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 and v < 1e300 else None


class IBKRMarket(LiveSessionMarket):
    """One session of IB market data (see the module doc)."""

    source = "IB"
    carry_missing = False  # a minute IB did not send stays NaN

    def __init__(self, session, params: IBKRFeedParams, *, now=None):
        self.session, self.ib, self.params = session, session.ib, params
        self.calendar = MarketCalendar()
        self._contracts: dict = {}  # OptionContract / index symbol -> qualified ib_async Contract
        self._listed: dict[str, list[dt.date]] = {}
        self._snaps: dict = {}
        self._flags: dict[tuple, dict[str, str]] = {}
        self.recomputed = 0
        self.quotes_type: str | None = None  # as IB marked the last chain's quotes
        now = now or (lambda: pd.Timestamp.now(tz=NY))
        self._init_session(self.session_day(self.calendar, pd.Timestamp(now()).tz_convert(NY).date()),
                           params.symbols, now)

    def __repr__(self) -> str:
        return f"IBKRMarket({self.params.host}:{self.params.port}, {self.params.market_data_type}, {self.day})"

    def close(self) -> None:
        try:
            self.ib.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass

    # ---------------------------------------------------------------- source
    def _index(self, symbol: str):
        if symbol not in self._contracts:
            from ib_async import Contract

            from strikebench.brokers.ibkr_contracts import index_fields

            c = Contract(**index_fields(symbol))
            self.session.ensure()
            if not self.ib.qualifyContracts(c) or not c.conId:
                raise StrikebenchError(f"IB does not know the index {symbol}")
            self._contracts[symbol] = c
        return self._contracts[symbol]

    def _history(self, symbol: str, end: pd.Timestamp, duration: str, bar: str):
        self.session.ensure()
        return self.ib.reqHistoricalData(self._index(symbol), endDateTime=end.tz_convert("UTC").to_pydatetime(),
                                         durationStr=duration, barSizeSetting=bar, whatToShow="TRADES", useRTH=True,
                                         formatDate=2, timeout=self.params.timeout_seconds)

    def _fetch_bars(self, symbol, lo, hi):
        """1-minute TRADES bars from ``lo`` to ``hi`` (their start times) in one request."""
        seconds = int((hi - lo).total_seconds()) + 60
        for b in self._history(symbol, hi + pd.Timedelta(minutes=1), f"{seconds} S", "1 min"):
            v = _price(b.volume)
            yield (pd.Timestamp(b.date), _price(b.open), _price(b.high), _price(b.low), _price(b.close),
                   0.0 if v is None else v)

    def _qualified(self, contracts: Sequence) -> dict:
        from ib_async import Contract

        from strikebench.brokers.ibkr_contracts import option_fields

        new = [c for c in contracts if c not in self._contracts]
        if new:
            ibcs = [Contract(**option_fields(c)) for c in new]
            self.session.ensure()
            self.ib.qualifyContracts(*ibcs)
            self._contracts.update(zip(new, ibcs))  # unknown ones too (conId 0): not asked again
        return {c: self._contracts[c] for c in contracts if self._contracts[c].conId}

    def _fetch_quotes(self, contracts):
        """One snapshot of every tracked contract (bid/ask; IB's -1 'no quote' is None)."""
        known = self._qualified(contracts)
        if not known:
            return {}
        self.session.ensure()
        tickers = self.ib.reqTickers(*known.values())
        by_id = {t.contract.conId: t for t in tickers}
        out = {}
        for c, ibc in known.items():
            t = by_id.get(ibc.conId)
            if t is not None:
                out[c] = (_price(t.bid), _price(t.ask))
        return out

    def _day_prints(self, symbol, day):
        end = pd.Timestamp(self.calendar.session_close(day)).tz_convert(NY)
        for b in self._history(symbol, end, "1 D", "1 day"):
            if pd.Timestamp(b.date).date() == day:
                return _price(b.open), _price(b.close)
        return None, None

    # ---------------------------------------------------------------- chains
    def listed_expiries(self, underlying: str, day) -> list[dt.date]:
        from strikebench.brokers.ibkr_data import TRADING_CLASSES

        if underlying not in self._listed:
            idx = self._index(underlying)
            classes = TRADING_CLASSES.get(underlying, (underlying,))
            self.session.ensure()
            params = [c for c in self.ib.reqSecDefOptParams(underlying, "", "IND", idx.conId)
                      if c.tradingClass in classes]
            self._listed[underlying] = sorted({dt.datetime.strptime(e, "%Y%m%d").date() for c in params
                                               for e in c.expirations})
        day = pd.Timestamp(day).date()
        return [e for e in self._listed[underlying] if e >= day]

    def _fetch_snapshot(self, underlying: str, at: pd.Timestamp, expiries: list[dt.date]) -> ChainSnapshot:
        from strikebench.brokers.ibkr_data import fetch_chain
        from strikebench.options.contracts import OptionContract

        self.session.ensure()
        chain = fetch_chain(self.ib, underlying, at=at, expiries=expiries, width=self.params.strike_width,
                            rate=self.params.rate, timeout=self.params.timeout_seconds, qualified=self._contracts)
        snap = chain.snapshot
        why = {}
        for j in np.flatnonzero(chain.recomputed):
            c = OptionContract.make(str(snap.root[j]), pd.Timestamp(snap.expiry[j]).date(), float(snap.strike[j]),
                                    "C" if snap.is_call[j] else "P")
            why[c.occ_compact] = SENTINEL_REASON
        self.recomputed += len(why)
        self._flags[(underlying, at)] = why
        if chain.market_data_type != self.params.market_data_type and chain.market_data_type != self.quotes_type:
            self.notes.append(f"{underlying} chain at {at:%H:%M}: IB sent {chain.market_data_type} quotes "
                              f"(asked for {self.params.market_data_type})")
        self.quotes_type = chain.market_data_type
        return snap

    def greeks_flags(self, underlying: str, at) -> dict[str, str]:
        """The contracts of the snapshot at ``at`` whose greeks strikebench recomputed, and why."""
        return dict(self._flags.get((underlying, pd.Timestamp(at).tz_convert(NY)), {}))


class IBKRFeed(DataFeed):
    """IB market data for the session in progress through TWS / IB Gateway: bars, chains with model greeks, quotes."""

    name = "ibkr"
    Params = IBKRFeedParams

    def open(self, *, now=None):
        from strikebench.brokers.ibkr import IBKRParams, IBSession

        p = self.params
        session = IBSession(IBKRParams(host=p.host, port=p.port, client_id=p.client_id,
                                       market_data_type=p.market_data_type, timeout_seconds=p.timeout_seconds))
        try:
            session.connect(first=True)
        except StrikebenchError as exc:  # the broker's wording names broker.client_id: here it is data.client_id
            raise StrikebenchError(f"data source ibkr: {str(exc).replace('broker.client_id', 'data.client_id')}") \
                from None
        return IBKRMarket(session, p, now=now)


@hookimpl
def register_feeds(register):
    register(IBKRFeed)
