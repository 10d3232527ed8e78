"""The live broker interface: what the runtime needs from every live broker (paper, Tradier, IBKR).

Rules every implementation keeps (docs/live.md):

* ``place`` is keyed by the framework's ``client_id`` (Tradier ``tag``, IB ``orderRef``). A second
  ``place`` with an id the broker already knows must not create a second order.
* ``lookup(client_id)`` answers from the broker's own records; None means the broker has never
  seen the order (not "unknown": raise :class:`BrokerUnavailable` when the broker cannot answer).
* ``events(since)`` returns every order event after cursor ``since`` in the broker's order; each
  has a broker-unique ``event_id`` so the runtime applies a replayed event once. Fills carry a
  broker-unique ``fill_id``.
* ``positions()`` returns None when the broker did not report (never an empty dict for "unknown").
* Prices follow strikebench's sign convention (net = sum ratio x leg price, + debit, - credit);
  a broker with another convention translates at its edge.
"""

from __future__ import annotations

import abc
import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass

from strikebench.errors import StrikebenchError

__all__ = ["EVENT_LOG_SCHEMA", "write_transaction", "LiveBroker", "BrokerAck", "BrokerOrder", "BrokerFill", "BrokerEvent", "BrokerSettlement",
           "BrokerUnavailable", "BROKER_STATUSES"]

#: statuses a live broker reports, in strikebench's vocabulary (OrderStatus values)
BROKER_STATUSES = ("submitted", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired")


#: The SQLite tables every broker's local record keeps for the runtime (paper state, Tradier and IB mirrors):
#: one row per fill (money as decimal text) and the event log ``events(since)`` reads, ``seq`` being its cursor
#: and ``event_id`` unique at the broker so a replayed event is applied once. Append to a broker's own schema.
EVENT_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS fills (
    fill_id    TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    at         TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    net_price  TEXT NOT NULL,
    leg_prices TEXT NOT NULL,
    fees       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id  TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL DEFAULT '',
    at        TEXT NOT NULL,
    reason    TEXT NOT NULL DEFAULT '',
    fill_id   TEXT
);
"""


@contextmanager
def write_transaction(db):
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a broker's local record (``isolation_level=None``): the write lock is
    taken before anything is read, so two processes never interleave a read-then-write; any error rolls back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")


class BrokerUnavailable(StrikebenchError):
    """The broker did not answer (timeout, connection lost): the outcome of the call is unknown."""

    exit_code = 7


@dataclass(frozen=True)
class BrokerAck:
    client_id: str
    broker_id: str
    status: str  # one of BROKER_STATUSES
    duplicate: bool = False  # the broker already knew this client id (nothing new was placed)
    reason: str = ""


@dataclass(frozen=True)
class BrokerFill:
    fill_id: str
    client_id: str
    at: dt.datetime
    quantity: int
    net_price: float
    leg_prices: tuple[float, ...]
    fees: float


@dataclass(frozen=True)
class BrokerOrder:
    client_id: str
    broker_id: str
    status: str
    quantity: int
    filled_quantity: int
    reason: str = ""
    fills: tuple[BrokerFill, ...] = ()
    cancel_requested: bool = False
    tag: str = ""


@dataclass(frozen=True)
class BrokerEvent:
    seq: int  # the broker's cursor: events(since=seq) returns the ones after it
    event_id: str  # unique at the broker: the same event replayed has the same id
    client_id: str
    kind: str  # "status" | "fill"
    status: str = ""
    at: dt.datetime | None = None
    reason: str = ""
    fill: BrokerFill | None = None


@dataclass(frozen=True)
class BrokerSettlement:
    """An expiry the broker settled: the position it closed, the print it used and the cash it booked."""

    occ: str  # compact OCC symbol
    quantity: int  # signed position that settled
    value: float  # the settlement print of the underlying
    cash: float  # dollars booked (signed)
    at: dt.datetime


class LiveBroker(abc.ABC):
    """Abstract live broker. All times are tz-aware; all calls may raise :class:`BrokerUnavailable`."""

    name = "live"

    @abc.abstractmethod
    def place(self, order, now: dt.datetime, *, tag: str = "") -> BrokerAck:
        """Send ``order`` (a :class:`strikebench.options.orders.Order`) under ``order.client_id``."""

    @abc.abstractmethod
    def lookup(self, client_id: str) -> BrokerOrder | None:
        """The broker's record of ``client_id`` with its fills, or None if it never received it."""

    @abc.abstractmethod
    def cancel(self, client_id: str, now: dt.datetime) -> bool:
        """Ask to cancel; True when the request was taken (confirmation comes as an event)."""

    @abc.abstractmethod
    def events(self, since: int = 0) -> list[BrokerEvent]:
        """Order events after cursor ``since``, oldest first."""

    @abc.abstractmethod
    def positions(self) -> dict[str, int] | None:
        """Signed quantity per OCC symbol (compact form), or None when the broker did not report."""

    @abc.abstractmethod
    def balances(self) -> dict | None:
        """Cash and buying power as the broker reports them, or None."""

    def orders(self, tag: str = "") -> list[BrokerOrder]:
        """Every order the broker holds under ``tag`` (a run id); used to find orders unknown to the journal."""
        return []

    def settlements(self) -> list[BrokerSettlement]:
        """Expiries the broker has settled (cash-settled index options), oldest first; [] when it keeps none.

        The runtime settles a trade that expired while it was down at the broker's print."""
        return []

    def sync(self, now: dt.datetime) -> None:
        """Let a simulated broker catch up to ``now`` (a real broker runs on its own: no-op)."""

    def close(self) -> None:
        pass
