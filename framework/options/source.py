"""The chain-source interface: where option quotes come from, beside Backtrader's feeds.

Backtrader owns the clock and the underlying bars; a :class:`ChainSource` answers
"the chain of SPX at time t" with a columnar :class:`ChainSnapshot`, and "these
few contracts for the whole session" with :class:`LegQuotes`, so an open
position is marked every bar by an array lookup. The synthetic market, the
historical-file feed and the live feeds all implement it.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, Sequence, runtime_checkable

import pandas as pd

from strikebench.options.chain import ChainSnapshot, LegQuotes

__all__ = ["ChainSource", "MarketData"]


@runtime_checkable
class ChainSource(Protocol):
    """What the engine and strategies need from an option-quote source."""

    def snapshot(self, underlying: str, at: pd.Timestamp,
                 expiries: Sequence[dt.date] | None = None) -> ChainSnapshot:
        """Every quote of ``underlying`` ('SPX', 'XSP', 'VIX') at minute ``at``.

        ``at`` is tz-aware; quotes are those of the minute bar labelled ``at``
        (its close). ``expiries`` narrows the chain; None means all listed.
        """
        ...

    def leg_quotes(self, contracts: Sequence, day: dt.date) -> LegQuotes:
        """Bid/ask of ``contracts`` at every minute of session ``day``."""
        ...

    def settlement_value(self, contract) -> float:
        """The underlying print that settles ``contract`` (AM: opening print, PM: close)."""
        ...

    # Optional: ``listed_expiries(underlying, day) -> list[date]``, the expiries listed on a session.
    # With it a strategy's ``ctx.chain(dte=(lo, hi))`` asks :meth:`snapshot` for only the expiries it
    # reads (a decision then costs the same on a 500- or a 43,000-contract chain); without it the
    # engine takes them from the full snapshot.


@runtime_checkable
class MarketData(ChainSource, Protocol):
    """A chain source that also supplies the minute bars Backtrader runs on."""

    def bars(self, symbol: str) -> pd.DataFrame:
        """Minute bars of ``symbol`` ('SPX', 'XSP', 'VIX', 'VIX9D'): a DataFrame indexed
        by tz-aware America/New_York minute labels (bar start), columns open, high,
        low, close, volume (float64)."""
        ...

    def sessions(self) -> pd.DatetimeIndex:
        """The sessions (dates) the data covers."""
        ...
