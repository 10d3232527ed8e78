"""A loopback TWS: speaks the TWS API socket protocol (server version 157) well enough for the real ib_async.

Length-prefixed, NUL-separated messages; the ``API\\0`` handshake with the client's version range; server version
and connection time; nextValidId and managedAccounts after startApi; contract details (qualification), option
chain parameters, market data (bid/ask/last and model-greek ticks, sentinels included), historical bars,
placeOrder -> openOrder/orderStatus, executions (one per leg plus one for the BAG) with commission reports, cancel,
positions, open and completed orders and executions on request, account summary, whatIf margins, error 326 for a
client id in use. Field layouts follow ib_async's decoder (ib_async/decoder.py) for server version 157.

The test drives it: ``fill(order_id, qty, leg_prices)`` executes part of an order, ``drop()`` cuts every socket
(TWS's nightly restart), ``duplicate_executions`` sends each execution twice, ``hold_acks`` delays order
acknowledgements. State (orders, executions, positions) outlives connections, as TWS's does during a day.
"""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import struct
import threading
import time

SERVER_VERSION = 157
ACCOUNT = "DU1234567"


def _s(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e15 else (str(int(v)) if abs(v) < 1e15 else repr(v))
    return str(v)


def _msg(*fields) -> bytes:
    body = "".join(_s(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


class _Conn:
    def __init__(self, server: "FakeTWS", sock: socket.socket):
        self.server, self.sock = server, sock
        self.client_id: int | None = None
        self.lock = threading.Lock()
        self.alive = True

    def send(self, *fields) -> None:
        try:
            with self.lock:
                self.sock.sendall(_msg(*fields))
        except OSError:
            self.alive = False

    def close(self) -> None:
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeTWS:
    """One TWS / IB Gateway on 127.0.0.1 (port 0: an ephemeral port); ``with FakeTWS() as tws: tws.port``."""

    def __init__(self, *, account: str = ACCOUNT, cash: float = 100_000.0, first_order_id: int = 1,
                 commission_per_contract: float = 0.65):
        self.account, self.cash, self.commission = account, cash, commission_per_contract
        self.lock = threading.RLock()
        self.next_order_id = first_order_id
        self.orders: dict[int, dict] = {}  # orderId -> order record
        self.executions: list[dict] = []
        self.positions: dict[int, float] = {}  # conId -> signed qty
        self.contracts: dict[int, dict] = {}  # conId -> contract fields
        self._conids = itertools.count(700_000_001)
        self._perm = itertools.count(1_900_000_001)
        self._exec_n = itertools.count(1)
        self.quotes: dict[int, dict] = {}  # conId -> {bid, ask, last, greeks: (iv, delta, price, pv, g, v, t, und)}
        self.chains: dict[str, dict] = {}  # underlying -> {"classes": {trading class: [YYYYMMDD...]}, "strikes": []}
        self.received: list[list[str]] = []
        self.duplicate_executions = False
        self.quote_fn = None  # callable(contract fields) -> quote dict or None, for contracts without quotes[...]
        # callable(contract fields, start, end, bar size) -> [(bar start (UTC datetime), o, h, l, c, volume)]: the
        # bars of reqHistoricalData that start in [start, end) (aware UTC datetimes); None: no historical data
        self.history_fn = None
        self.list_on_demand = True  # False: only contracts added with option() exist
        self.reject_next: tuple[int, str] | None = None  # (code, text): the next order is refused with it
        self.hold_acks = False  # True: placeOrder is taken but nothing is answered (a slow / lost ack)
        self.fill_policy = None  # callable(server, order) -> None, run after every placeOrder
        self.cancel_policy = None  # callable(server, order) -> None, run after every cancelOrder taken
        self.margin_change = 2_000.0
        self.now = dt.datetime(2024, 3, 4, 15, 0, tzinfo=dt.timezone.utc)
        self.conns: list[_Conn] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        self.index = {s: self.add_contract(dict(secType="IND", symbol=s, exchange="CBOE", currency="USD"))
                      for s in ("SPX", "XSP", "VIX")}

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._stop = True
        try:  # shutdown first: a close alone leaves the socket listening while accept() blocks on it
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(timeout=2)
        self.drop()

    def drop(self) -> None:
        """Cut every client connection (TWS's nightly restart, a network blip). Orders stay."""
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            c.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, s)
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: _Conn) -> None:
        buf = b""
        try:
            while conn.alive:
                data = conn.sock.recv(65536)
                if not data:
                    break
                buf += data
                if conn.client_id is None and buf.startswith(b"API\0"):
                    if len(buf) < 8:
                        continue
                    n = struct.unpack(">I", buf[4:8])[0]
                    if len(buf) < 8 + n:
                        continue
                    versions = buf[8:8 + n].decode()
                    buf = buf[8 + n:]
                    lo, hi = versions.lstrip("v").split("..")
                    assert int(lo) <= SERVER_VERSION <= int(hi.split()[0]), versions
                    conn.send(SERVER_VERSION, self.now.strftime("%Y%m%d %H:%M:%S UTC"))
                    conn.client_id = -1
                while len(buf) >= 4:
                    n = struct.unpack(">I", buf[:4])[0]
                    if len(buf) < 4 + n:
                        break
                    fields = buf[4:4 + n].decode().split("\0")[:-1]
                    buf = buf[4 + n:]
                    with self.lock:
                        self.received.append(fields)
                        self._handle(conn, fields)
        except OSError:
            pass
        finally:
            conn.alive = False
            with self.lock:
                if conn in self.conns:
                    self.conns.remove(conn)

    # ----------------------------------------------------------------- contracts
    def add_contract(self, fields: dict) -> int:
        con = next(self._conids)
        self._by_key = None  # rebuilt on the next lookup
        self.contracts[con] = {**dict(conId=con, lastTradeDateOrContractMonth="", strike=0.0, right="", multiplier="",
                                      tradingClass=fields.get("symbol", ""), localSymbol=""), **fields}
        return con

    def option(self, symbol: str, trading_class: str, expiry: str, strike: float, right: str) -> int:
        for con, c in self.contracts.items():
            if (c["secType"], c["symbol"], c["tradingClass"], c["lastTradeDateOrContractMonth"], c["strike"],
                    c["right"]) == ("OPT", symbol, trading_class, expiry, float(strike), right):
                return con
        return self.add_contract(dict(secType="OPT", symbol=symbol, tradingClass=trading_class,
                                      lastTradeDateOrContractMonth=expiry, strike=float(strike), right=right,
                                      multiplier="100", exchange="CBOE", currency="USD",
                                      localSymbol=f"{trading_class} {expiry[2:]}{right}{int(strike * 1000):08d}"))

    def _match(self, q: dict) -> list[dict]:
        if not int(q["conId"] or 0) and q["secType"] == "OPT" and q["tradingClass"] and \
                q["lastTradeDateOrContractMonth"] and q["strike"] and q["right"]:  # fully specified: one lookup
            if getattr(self, "_by_key", None) is None:
                self._by_key = {(c["secType"], c["symbol"], c["tradingClass"], c["lastTradeDateOrContractMonth"],
                                 float(c["strike"] or 0), c["right"]): c for c in self.contracts.values()}
            c = self._by_key.get(("OPT", q["symbol"], q["tradingClass"], q["lastTradeDateOrContractMonth"],
                                  float(q["strike"]), q["right"][0]))
            if c is not None:
                return [c]
        out = []
        for c in self.contracts.values():
            qid = int(q["conId"] or 0)
            if qid and qid != c["conId"]:
                continue
            if not qid:
                if q["secType"] != c["secType"] or q["symbol"] != c["symbol"]:
                    continue
                if q["tradingClass"] and q["tradingClass"] != c["tradingClass"]:
                    continue
                if q["lastTradeDateOrContractMonth"] and q["lastTradeDateOrContractMonth"] != \
                        c["lastTradeDateOrContractMonth"]:
                    continue
                if q["strike"] and float(q["strike"]) != c["strike"]:
                    continue
                if q["right"] and q["right"][0] != c["right"]:
                    continue
            out.append(c)
        if not out and q["secType"] == "OPT" and self.list_on_demand and q["symbol"] in self.index and \
                q["lastTradeDateOrContractMonth"] and q["strike"] and q["right"]:
            # TWS knows every listed option: the fake lists one when it is first asked for
            out.append(self.contracts[self.option(q["symbol"], q["tradingClass"] or q["symbol"],
                                                  q["lastTradeDateOrContractMonth"], float(q["strike"]),
                                                  q["right"][0])])
        return out

    @staticmethod
    def _contract(f: list[str], i: int) -> tuple[dict, int]:
        keys = ("conId", "symbol", "secType", "lastTradeDateOrContractMonth", "strike", "right", "multiplier",
                "exchange", "primaryExchange", "currency", "localSymbol", "tradingClass")
        return dict(zip(keys, f[i:i + 12])), i + 12

    def _cfields(self, c: dict, *, exchange=True) -> list:
        out = [c["conId"], c["symbol"], c["secType"], c["lastTradeDateOrContractMonth"], c["strike"], c["right"],
               c["multiplier"]]
        if exchange:
            out.append(c["exchange"])
        return out + [c["currency"], c["localSymbol"], c["tradingClass"]]

    # ----------------------------------------------------------------- requests
    def _handle(self, conn: _Conn, f: list[str]) -> None:
        mid = int(f[0])
        if mid == 71:  # startApi
            cid = int(f[2])
            if any(c.client_id == cid and c is not conn and c.alive for c in self.conns):
                conn.send(4, 2, -1, 326, "Unable to connect as the client id is already in use. Retry with a "
                                         "unique client id.")
                threading.Timer(0.05, conn.close).start()
                return
            conn.client_id = cid
            conn.send(15, 1, self.account)
            conn.send(9, 1, self.next_order_id)
        elif mid == 61:  # reqPositions
            for con, q in self.positions.items():
                if q:
                    c = self.contracts[con]
                    conn.send(61, 3, self.account, *self._cfields(c), float(q), 1.0)
            conn.send(62, 1)
        elif mid == 5:  # reqOpenOrders
            for o in self.orders.values():
                if o["client_id"] == conn.client_id and o["status"] not in ("Filled", "Cancelled", "Inactive"):
                    self._send_open_order(conn, o)
                    self._send_status(conn, o)
            conn.send(53, 1)
        elif mid == 99:  # reqCompletedOrders
            for o in self.orders.values():
                if o["status"] in ("Filled", "Cancelled", "Inactive"):
                    self._send_completed(conn, o)
            conn.send(102)
        elif mid == 7:  # reqExecutions
            req = int(f[2])
            for e in self.executions:
                if e["client_id"] == conn.client_id:
                    self._send_exec(conn, e, req)
            conn.send(55, 1, req)
            for e in self.executions:
                if e["client_id"] == conn.client_id:
                    self._send_commission(conn, e)
        elif mid == 9:  # reqContractDetails
            req = int(f[2])
            q, _ = self._contract(f, 3)
            for c in self._match(q):
                conn.send(10, 8, req, c["symbol"], c["secType"], c["lastTradeDateOrContractMonth"], c["strike"],
                          c["right"], c["exchange"], c["currency"], c["localSymbol"], c["tradingClass"],
                          c["tradingClass"], c["conId"], 0.01 if c["secType"] != "OPT" else 0.05, 1,
                          c["multiplier"], "LMT,MKT", "CBOE,SMART", 1, 0, c["symbol"], "", "", "", "", "",
                          "US/Central", "", "", "", "", 0, 1, "", "", "", "", "")
            conn.send(52, 1, req)
        elif mid == 78:  # reqSecDefOptParams
            req = int(f[1])
            ch = self.chains.get(f[2])
            if ch:
                for cls, exps in ch["classes"].items():
                    conn.send(75, req, "CBOE", self.index[f[2]], cls, "100", len(exps), *exps, len(ch["strikes"]),
                              *ch["strikes"])
            conn.send(76, req)
        elif mid == 1:  # reqMktData
            req = int(f[2])
            q, i = self._contract(f, 3)
            if q["secType"] == "BAG":
                i += 1 + 4 * int(f[i])
            i += 1 + (3 if f[i] == "1" else 0)  # delta-neutral contract
            snapshot = f[i + 1] == "1"
            self._ticks(conn, req, int(q["conId"] or 0))
            if snapshot:
                conn.send(57, 1, req)
        elif mid == 20:  # reqHistoricalData
            self._history(conn, f)
        elif mid == 59:  # reqMarketDataType
            self.market_data_type = int(f[2])
        elif mid == 62:  # reqAccountSummary
            req = int(f[2])
            for tag, v in (("NetLiquidation", self.cash), ("TotalCashValue", self.cash),
                           ("BuyingPower", self.cash * 0.9), ("AvailableFunds", self.cash * 0.9)):
                conn.send(63, 1, req, self.account, tag, f"{v:.2f}", "USD")
            conn.send(64, 1, req)
        elif mid == 49:  # reqCurrentTime: TWS's clock (the machine's, as a real TWS on it would say)
            conn.send(49, 1, int(time.time()))
        elif mid == 6:  # reqAccountUpdates: (values are served by reqAccountSummary here)
            conn.send(54, 1, self.account)
        elif mid == 76:  # reqAccountUpdatesMulti
            conn.send(74, 1, int(f[2]))
        elif mid == 3:
            self._place(conn, f)
        elif mid == 4:  # cancelOrder
            oid = int(f[2])
            o = self.orders.get(oid)
            if o is None:
                conn.send(4, 2, oid, 10147, f"OrderId {oid} that needs to be cancelled is not found.")
            elif o["status"] in ("Filled", "Cancelled", "Inactive"):
                conn.send(4, 2, oid, 10148, f"OrderId {oid} that needs to be cancelled cannot be cancelled, "
                                            f"state: {o['status']}.")
            else:
                o["status"] = "Cancelled"
                self._send_status(conn, o)
                conn.send(4, 2, oid, 202, "Order Canceled - reason:")
                if self.cancel_policy is not None:
                    self.cancel_policy(self, o)
        # anything else (cancelMktData, reqIds, ...) needs no answer here

    def _ticks(self, conn, req, con) -> None:
        q = self.quotes.get(con)
        if q is None and self.quote_fn is not None and con in self.contracts:
            q = self.quote_fn(self.contracts[con])
        if q is None:
            conn.send(4, 2, req, 354, "Requested market data is not subscribed.")
            return
        conn.send(58, 1, req, getattr(self, "market_data_type", 1))
        for tick, key in ((1, "bid"), (2, "ask"), (4, "last")):
            if q.get(key) is not None:
                conn.send(1, 6, req, tick, q[key], 10, 0)
        if q.get("greeks") is not None:
            conn.send(21, req, 13, 0, *q["greeks"])

    def _history(self, conn, f) -> None:
        """reqHistoricalData (server version 157: no version field): reqId, contract, includeExpired, end,
        bar size, duration, useRTH, whatToShow, formatDate, keepUpToDate, chartOptions -> historicalData (17):
        reqId, start, end, count, then date/open/high/low/close/volume/WAP/barCount per bar."""
        req = int(f[1])
        q, i = self._contract(f, 2)
        end_s, bar_size, duration, what, fmt = f[i + 1], f[i + 2], f[i + 3], f[i + 5], f[i + 6]
        con = self.contracts.get(int(q["conId"] or 0))
        if con is None or self.history_fn is None or what != "TRADES":
            conn.send(4, 2, req, 162, "Historical Market Data Service error message:HMDS query returned no data")
            return
        end = dt.datetime.strptime(end_s, "%Y%m%d %H:%M:%S UTC").replace(tzinfo=dt.timezone.utc) if end_s else \
            self.now
        n, unit = duration.split()
        start = end - dt.timedelta(seconds=int(n) * (1 if unit == "S" else 86400))
        bars = self.history_fn(con, start, end, bar_size)
        out = []
        for t, o, h, low, c, v in bars:
            date = t.strftime("%Y%m%d") if bar_size == "1 day" else (
                str(int(t.timestamp())) if fmt == "2" else t.strftime("%Y%m%d %H:%M:%S"))
            out += [date, float(o), float(h), float(low), float(c), float(v), float(c), 1]
        conn.send(17, req, start.strftime("%Y%m%d %H:%M:%S"), end.strftime("%Y%m%d %H:%M:%S"), len(bars), *out)

    # ----------------------------------------------------------------- orders
    def _place(self, conn: _Conn, f: list[str]) -> None:
        oid = int(f[1])
        c, i = self._contract(f, 2)
        i += 2  # secIdType, secId
        action, qty, otype, lmt, aux, tif, oca, acct, oc, origin, ref, transmit = f[i:i + 12]
        i += 12 + 7  # parentId .. hidden
        legs = []
        if c["secType"] == "BAG":
            n = int(f[i]); i += 1
            for _ in range(n):
                legs.append(dict(conId=int(f[i]), ratio=int(f[i + 1]), action=f[i + 2], exchange=f[i + 3]))
                i += 8
            n = int(f[i]); i += 1 + n
            n = int(f[i]); i += 1 + 2 * n
        i += 8  # "", discretionaryAmt, goodAfterTime, goodTillDate, faGroup, faMethod, faPercentage, faProfile
        dn_type = f[i + 22]
        i += 24 + (8 if dn_type else 0)
        incr = f[i + 6]
        i += 7 + (7 if incr and 0 < float(incr) < 1e300 else 0)
        i += 3
        hedge = f[i]; i += 1 + (1 if hedge else 0)
        i += 4
        dnc = f[i]; i += 1 + (3 if dnc == "1" else 0)
        algo = f[i]; i += 1
        if algo:
            n = int(f[i]); i += 1 + 2 * n
        i += 1  # algoId
        what_if = f[i] == "1"
        rec = dict(order_id=oid, client_id=conn.client_id, contract=c, legs=legs, action=action,
                   qty=int(float(qty)), order_type=otype, lmt=float(lmt) if lmt else None, tif=tif, ref=ref,
                   account=acct or self.account, status="PreSubmitted", filled=0, perm_id=None, what_if=what_if,
                   transmit=transmit == "1")
        if what_if:
            self._send_open_order(conn, dict(rec, perm_id=0, status="PreSubmitted"), what_if=True)
            return
        if c["secType"] != "BAG" and not int(c["conId"] or 0):
            conn.send(4, 2, oid, 321, "Error validating request.-'bN' : cause - Please enter a valid contract")
            return
        old = self.orders.get(oid)
        if old is not None:  # same id: a modification (TWS never makes a second order of it)
            if old["status"] in ("Filled", "Cancelled", "Inactive"):
                conn.send(4, 2, oid, 104, "Cannot modify a filled order.")
                return
            old.update(qty=rec["qty"], lmt=rec["lmt"], order_type=otype, tif=tif)
            self._send_open_order(conn, old)
            self._send_status(conn, old)
            return
        rec["perm_id"] = next(self._perm)
        self.orders[oid] = rec
        self.next_order_id = max(self.next_order_id, oid + 1)
        if rec["lmt"] is not None and abs(rec["lmt"] * 100 - round(rec["lmt"] * 100)) > 1e-6:
            rec["status"] = "Inactive"
            conn.send(4, 2, oid, 110, "The price does not conform to the minimum price variation for this "
                                      "contract.")
            self._send_status(conn, rec)
            return
        if self.reject_next is not None:
            code, text = self.reject_next
            self.reject_next = None
            rec["status"] = "Inactive"
            conn.send(4, 2, oid, code, text)
            self._send_status(conn, rec)
            return
        if self.hold_acks:
            return
        self._send_open_order(conn, rec)
        self._send_status(conn, rec)
        rec["status"] = "Submitted"
        self._send_open_order(conn, rec)
        self._send_status(conn, rec)
        if self.fill_policy is not None:
            self.fill_policy(self, rec)

    def release_acks(self) -> None:
        with self.lock:
            self.hold_acks = False
            for o in self.orders.values():
                if o["status"] == "PreSubmitted":
                    o["status"] = "Submitted"
                    for conn in self._conns_of(o):
                        self._send_open_order(conn, o)
                        self._send_status(conn, o)

    def _conns_of(self, o) -> list[_Conn]:
        return [c for c in self.conns if c.alive and c.client_id == o["client_id"]]

    def _send_open_order(self, conn: _Conn, o: dict, what_if: bool = False) -> None:
        c = o["contract"]
        legs = o["legs"]
        margin = [""] * 9
        if what_if:
            margin = ["50000", "45000", "100000", f"{self.margin_change:.2f}", f"{self.margin_change * 0.9:.2f}",
                      "0", f"{50000 + self.margin_change:.2f}", "46800", "100000"]
        conn.send(5, o["order_id"], *self._cfields(dict(c, conId=c["conId"] or 0, strike=c["strike"] or 0.0)),
                  o["action"], o["qty"], o["order_type"], "" if o["lmt"] is None else o["lmt"], "", o["tif"], "",
                  o["account"], "O", 0, o["ref"], o["client_id"], o["perm_id"], 0, 0, 0, "", "", "", "", "", "",
                  # modelCode .. deltaNeutralAuxPrice
                  "", "", "", "", "", 0, "", 0, 0, "", "", "", "", "", 0, 0, 0, 0, "", 0, 0, 0, "", 0, 0, "", 0, "",
                  "",
                  # continuousUpdate .. comboLegsDescrip
                  0, 0, "", "", "", "", "",
                  len(legs), *[x for leg in legs for x in (leg["conId"], leg["ratio"], leg["action"],
                                                           leg["exchange"], 0, 0, "", -1)],
                  0, 0,
                  "", "", "",  # scale
                  "",  # hedgeType
                  0, "", "", 0, 0,  # optOutSmartRouting .. dncPresent
                  "",  # algoStrategy
                  0, 1 if what_if else 0, o["status"], *margin, "0.65" if what_if else "", "", "", "USD", "",
                  0, 0,
                  0,  # conditions
                  "", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", 0)

    def _send_completed(self, conn: _Conn, o: dict) -> None:
        c = o["contract"]
        legs = o["legs"]
        conn.send(101, *self._cfields(dict(c, conId=c["conId"] or 0, strike=c["strike"] or 0.0)),
                  o["action"], o["qty"], o["order_type"], "" if o["lmt"] is None else o["lmt"], "", o["tif"], "",
                  o["account"], "O", 0, o["ref"], o["perm_id"], 0, 0, 0, "", "", "", "", "",
                  # modelCode .. deltaNeutralAuxPrice (23)
                  "", "", "", "", "", 0, "", 0, "", "", "", "", "", 0, 0, 0, 0, 0, 0, "", 0, "", "",
                  0, 0, "", "", "",  # continuousUpdate .. comboLegsDescrip
                  len(legs), *[x for leg in legs for x in (leg["conId"], leg["ratio"], leg["action"],
                                                           leg["exchange"], 0, 0, "", -1)],
                  0, 0, "", "", "", "",  # order legs, params, scale, hedgeType
                  "", "", 0, 0,  # clearingAccount, clearingIntent, notHeld, dncPresent
                  "",  # algoStrategy
                  0, o["status"], 0, 0,
                  0,  # conditions
                  "", "", "", 0, 0, "", o["filled"], 0, 0, "", 0, 0, 0,
                  self.now.strftime("%Y%m%d %H:%M:%S"), o["status"])

    def _send_status(self, conn: _Conn, o: dict) -> None:
        avg = o.get("avg", 0.0)
        conn.send(3, o["order_id"], o["status"], o["filled"], o["qty"] - o["filled"], avg, o["perm_id"], 0,
                  o.get("last", 0.0), o["client_id"], "", 0)

    def _send_exec(self, conn: _Conn, e: dict, req: int = -1) -> None:
        c = e["contract"]
        conn.send(11, req, e["order_id"], *self._cfields(c), e["exec_id"], e["time"], self.account, "CBOE",
                  e["side"], e["shares"], e["price"], e["perm_id"], e["client_id"], 0, e["cum"], e["avg"], e["ref"],
                  "", "", "", 1)

    def _send_commission(self, conn: _Conn, e: dict) -> None:
        conn.send(59, 1, e["exec_id"], e["commission"], "USD", 1.7976931348623157e308, 1.7976931348623157e308, "")

    # ----------------------------------------------------------------- fills (driven by the test)
    def fill(self, order_id: int, qty: int, leg_prices, *, net: float | None = None, order: str = "legs-first",
             commission_reports: bool = True, fees: float | None = None) -> list[dict]:
        """Execute ``qty`` combos of ``order_id``: one execution per leg, one for the BAG, then the commission
        reports (the BAG's is 0, the legs' ``commission_per_contract`` x contracts, or ``fees`` in all spread over
        the legs in cents), then the order status."""
        with self.lock:
            o = self.orders[order_id]
            assert o["status"] not in ("Filled", "Cancelled", "Inactive"), o["status"]
            assert o["filled"] + qty <= o["qty"]
            when = self.now.strftime("%Y%m%d %H:%M:%S") + " UTC"
            execs = []
            n = next(self._exec_n)
            base = f"0000e0d5.{65000000 + n:08x}"
            c = o["contract"]
            if c["secType"] == "BAG":
                signed = {"BUY": 1, "SELL": -1}
                combo = round(sum(signed[leg["action"]] * leg["ratio"] * p for leg, p in zip(o["legs"], leg_prices)),
                              2) if net is None else net
                if o["action"] == "SELL":
                    combo = -combo
                for k, (leg, p) in enumerate(zip(o["legs"], leg_prices)):
                    side = ("BOT" if leg["action"] == "BUY" else "SLD") if o["action"] == "BUY" else \
                        ("SLD" if leg["action"] == "BUY" else "BOT")
                    sh = leg["ratio"] * qty
                    execs.append(dict(contract=self.contracts[leg["conId"]], exec_id=f"{base}.{k + 2:02d}.01",
                                      side=side, shares=sh, price=p, commission=round(self.commission * sh, 2)))
                    self.positions[leg["conId"]] = self.positions.get(leg["conId"], 0) + (sh if side == "BOT" else -sh)
                    self.cash -= (p if side == "BOT" else -p) * sh * 100
                bag = dict(contract=dict(c, conId=c["conId"] or 28812380, localSymbol="", tradingClass="COMB"),
                           exec_id=f"{base}.01.01", side="BOT" if o["action"] == "BUY" else "SLD", shares=qty,
                           price=combo, commission=0.0)
                execs = execs + [bag] if order == "legs-first" else [bag] + execs
                o["avg"] = ((o.get("avg", 0.0) * o["filled"]) + combo * qty) / (o["filled"] + qty)
                o["last"] = combo
            else:
                (p,) = leg_prices
                side = "BOT" if o["action"] == "BUY" else "SLD"
                con = int(c["conId"])
                execs.append(dict(contract=self.contracts[con], exec_id=f"{base}.01.01", side=side, shares=qty,
                                  price=p, commission=round(self.commission * qty, 2)))
                self.positions[con] = self.positions.get(con, 0) + (qty if side == "BOT" else -qty)
                self.cash -= (p if side == "BOT" else -p) * qty * 100
                o["avg"], o["last"] = p, p
            if fees is not None:
                legs_x = [e for e in execs if e["contract"].get("tradingClass") != "COMB"]
                cents = int(round(fees * 100))
                for k, e in enumerate(legs_x):
                    share = cents // len(legs_x) + (1 if k < cents % len(legs_x) else 0)
                    e["commission"] = share / 100
            o["filled"] += qty
            for e in execs:
                self.cash -= e["commission"]
                e.update(order_id=order_id, perm_id=o["perm_id"], client_id=o["client_id"], time=when,
                         cum=o["filled"], avg=o["avg"], ref=o["ref"])
                self.executions.append(e)
            o["status"] = "Filled" if o["filled"] >= o["qty"] else "Submitted"
            for conn in self._conns_of(o):
                for e in execs:
                    for _ in range(2 if self.duplicate_executions else 1):
                        self._send_exec(conn, e)
                if commission_reports:
                    for e in execs:
                        for _ in range(2 if self.duplicate_executions else 1):
                            self._send_commission(conn, e)
                self._send_status(conn, o)
                for e in execs:  # the reqPositions subscription's updates
                    con = e["contract"]["conId"]
                    if con in self.positions:
                        conn.send(61, 3, self.account, *self._cfields(self.contracts[con]), float(self.positions[con]),
                                  1.0)
            return execs

    def cancel_by_broker(self, order_id: int, code: int | None = 202, text: str = "Order Canceled - reason:") -> None:
        """TWS cancels on its own (a DAY order at the close: status only, ``code=None``)."""
        with self.lock:
            o = self.orders[order_id]
            if o["status"] in ("Filled", "Cancelled", "Inactive"):
                return
            o["status"] = "Cancelled"
            for conn in self._conns_of(o):
                if code is not None:
                    conn.send(4, 2, order_id, code, text)
                self._send_status(conn, o)

    def live_orders(self) -> list[dict]:
        with self.lock:
            return [o for o in self.orders.values() if not o["what_if"]]

    def wait(self, cond, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError("fake TWS: condition not met in time")
            time.sleep(0.005)


class PaperExchange:
    """The market behind the fake TWS: strikebench's paper broker (latency 0, the configured fill model and
    commission) fills the orders TWS holds, at the time the trader's clock has reached (``advance(now)``, called
    from the broker's ``sync``); TWS then reports each fill the way IB does (executions per leg + BAG, commission
    reports, status). A DAY order the exchange expires is cancelled by TWS."""

    def __init__(self, tws: FakeTWS, path, *, market, fill_model, commission):
        from strikebench.brokers.paper import PaperAccount, PaperParams

        self.tws = tws
        self.paper = PaperAccount(path, market=market, fill_model=fill_model, commission=commission,
                                  params=PaperParams(latency_seconds=0, seed=5), underlying="SPX")
        self.queue: list[tuple[str, dict]] = []
        self.ib_id: dict[str, int] = {}
        self.cursor = 0
        self.advances = 0
        self.on_advance = None  # callable(exchange, now): a test's hook (drop the connection mid-week, ...)
        tws.fill_policy = lambda _, o: self.queue.append(("place", o))
        tws.cancel_policy = lambda _, o: self.queue.append(("cancel", o))

    def _order(self, o: dict):
        from strikebench.brokers.ibkr_contracts import occ_from_ib
        from strikebench.options.orders import Leg, Order, OrderType, TimeInForce

        legs = []
        for leg in o["legs"]:
            c = self.tws.contracts[leg["conId"]]
            oc = occ_from_ib("OPT", c["symbol"], c["lastTradeDateOrContractMonth"], c["strike"], c["right"],
                             c["tradingClass"])
            legs.append(Leg(oc, leg["ratio"] * (1 if leg["action"] == "BUY" else -1)))
        assert o["action"] == "BUY"
        return Order(client_id=o["ref"], legs=tuple(legs), quantity=o["qty"],
                     order_type=OrderType.MARKET if o["order_type"] == "MKT" else OrderType.LIMIT,
                     limit_price=o["lmt"] if o["order_type"] == "LMT" else None,
                     tif=TimeInForce.GTC if o["tif"] == "GTC" else TimeInForce.DAY)

    def advance(self, now) -> None:
        import pandas as pd

        now = pd.Timestamp(now)
        with self.tws.lock:
            queue, self.queue = self.queue, []
        for kind, o in queue:
            if kind == "place":
                self.ib_id[o["ref"]] = o["order_id"]
                self.paper.place(self._order(o), now)
            else:
                self.paper.cancel(o["ref"], now)
        self.paper.sync(now)
        for e in self.paper.events(self.cursor):
            self.cursor = e.seq
            oid = self.ib_id.get(e.client_id)
            if oid is None:
                continue
            if e.kind == "fill":
                self.tws.now = pd.Timestamp(e.fill.at).tz_convert("UTC").to_pydatetime()
                if self.tws.orders[oid]["status"] not in ("Filled", "Cancelled", "Inactive"):
                    self.tws.fill(oid, e.fill.quantity, list(e.fill.leg_prices), net=e.fill.net_price,
                                  fees=e.fill.fees)
            elif e.kind == "status" and e.status in ("expired", "cancelled", "rejected"):
                self.tws.cancel_by_broker(oid, code=None)
        self.advances += 1
        if self.on_advance is not None:
            self.on_advance(self, now)
