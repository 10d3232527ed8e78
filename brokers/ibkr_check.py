"""``strikebench broker check`` for the ibkr broker: connect, read, disconnect (and a whatIf with ``--preview``).

Rows: the connection (server version, the port's kind), the account, its cash and buying power, the market-data
type asked for, SPX / XSP / VIX option data permissions (a quote snapshot of one near-the-money option each:
live, delayed or refused, with IB's code), and with ``--preview`` a whatIf of a sample SPXW put credit spread
(IB's initial-margin change and commission). Nothing is placed; nothing is written.
"""

from __future__ import annotations

import math

from strikebench.brokers.ibkr_contracts import LIVE_PORTS, combo_legs, option_fields, order_fields
from strikebench.errors import StrikebenchError
from strikebench.live.broker_api import BrokerUnavailable

__all__ = ["check_rows"]

#: IB codes that mean "no market data permission" (354 not subscribed, 10089/10090/10091 need subscription,
#: 10167/10168 delayed instead of live / not even delayed)
_NO_DATA = {354, 10089, 10090, 10091, 10168}
_DELAYED = {10167}


def _row(item, ok, detail, fix=""):
    from strikebench.api import CheckRow

    return CheckRow(item=item, ok=ok, detail=detail, fix=fix)


def check_rows(params, *, resolved=None, preview: bool = False) -> list:
    from strikebench.brokers.ibkr import IBSession

    rows = []
    kind = "LIVE (real money)" if int(params.port) in LIVE_PORTS else "paper"
    s = IBSession(params)
    try:
        s.connect(first=True)
    except (BrokerUnavailable, StrikebenchError) as exc:
        fix = ("set broker.params.client_id to an id no other API client uses" if "326" in str(exc) else
               "start TWS or IB Gateway, log in, enable the API (Configure > API > Settings) on that port")
        return [_row("connection", False, str(exc), fix)]
    ib = s.ib
    try:
        rows.append(_row("connection", True, f"{params.host}:{params.port} ({kind} port), server version "
                                             f"{ib.client.serverVersion()}, client id {params.client_id}"))
        accounts = ib.managedAccounts()
        rows.append(_row("account", bool(s.account), f"{s.account or '?'} (managed: {', '.join(accounts)})",
                         "" if s.account else "several accounts: set broker.params.account (e.g. ${IB_ACCOUNT})"))
        tags = {v.tag: v.value for v in ib.accountSummary(s.account) if v.currency in ("USD", "")}

        def money(tag):
            try:
                return f"{float(tags[tag]):,.2f}"
            except (KeyError, ValueError):
                return "?"

        bp_ok = "BuyingPower" in tags and math.isfinite(float(tags["BuyingPower"])) and float(tags["BuyingPower"]) > 0
        rows.append(_row("option buying power", bp_ok,
                         f"cash {money('TotalCashValue')}, net liquidation {money('NetLiquidation')}, buying power "
                         f"{money('BuyingPower')}, available funds {money('AvailableFunds')} USD",
                         "" if bp_ok else "the account reports no buying power"))
        rows.append(_clock_row(ib))
        rows.append(_row("market data type", None, f"{params.market_data_type} (broker.params.market_data_type: "
                                                   f"live, frozen, delayed, delayed_frozen)"))
        sample = None
        for und in ("SPX", "XSP", "VIX"):
            try:
                got, detail, chain = _permission(ib, s, und)
            except StrikebenchError as exc:
                got, detail, chain = False, str(exc), None
            except (BrokerUnavailable, ConnectionError, OSError, TimeoutError) as exc:
                got, detail, chain = False, f"{type(exc).__name__}: {exc}", None
            except Exception as exc:  # noqa: BLE001 - an answer we cannot read is what the check reports
                got, detail, chain = False, f"unreadable answer ({type(exc).__name__}: {exc})", None
            rows.append(_row(f"data permissions {und} options", got, detail,
                             "" if got else f"subscribe to {und} option quotes (OPRA / CBOE indexes) in Client "
                                            f"Portal, or set market_data_type: delayed"))
            if und == "SPX" and got:
                sample = chain
        if preview:
            rows.append(_preview(ib, s, sample) if sample is not None else
                        _row("preview", None, "not run: no SPX option quote to price a sample spread"))
    finally:
        s.close()
    return rows


def _clock_row(ib):
    """TWS's clock against ours, and the exchange calendar's next session."""
    import pandas as pd

    from strikebench.calendar import NY, MarketCalendar

    tws = pd.Timestamp(ib.reqCurrentTime()).tz_convert(NY)
    skew = (pd.Timestamp.now(tz=NY) - tws).total_seconds()
    cal = MarketCalendar()
    today = tws.date()
    if cal.is_session(today) and pd.Timestamp(cal.session_open(today)) <= tws < pd.Timestamp(cal.session_close(today)):
        state = f"the session of {today} is open until {pd.Timestamp(cal.session_close(today)).tz_convert(NY):%H:%M}"
    else:
        nxt = pd.Timestamp(cal.next_session(today)).date() if not cal.is_session(today) or \
            tws >= pd.Timestamp(cal.session_open(today)) else today
        state = f"closed; next session {nxt} opens {pd.Timestamp(cal.session_open(nxt)).tz_convert(NY):%H:%M %Z}"
    ok = abs(skew) < 5
    return _row("market clock", ok, f"TWS time {tws:%Y-%m-%d %H:%M:%S %Z} (ours {skew:+.1f} s); {state}",
                "" if ok else "this machine's clock is off: sync it (NTP) before trading")


def _permission(ib, s, und):
    """(ok, detail, chain) of a quote snapshot of the near-the-money options of ``und``'s first expiry."""
    from strikebench.brokers.ibkr_data import fetch_chain

    before = len(s.errors)
    chain = fetch_chain(ib, und, expiries=1, width=0.01, timeout=float(s.p.timeout_seconds))
    codes = {c for _, c, _ in s.errors[before:]}
    snap = chain.snapshot
    quoted = int((snap.bid > 0).sum() + (snap.ask > 0).sum()) if len(snap) else 0
    if codes & _NO_DATA or not quoted:
        code = sorted(codes & _NO_DATA)
        return False, (f"no quotes for {und} options" + (f" (IB {code[0]})" if code else "") +
                       f"; {len(snap)} contract(s) asked"), chain
    flagged = int(chain.recomputed.sum())
    delayed = " (IB 10167: delayed)" if codes & _DELAYED else ""
    return True, (f"{chain.market_data_type}{delayed} quotes on {len(snap)} near-the-money {und} option(s) "
                  f"(index {snap.underlying_price:,.2f}); model greeks missing on {flagged}, recomputed"), chain


def _preview(ib, s, sample):
    """whatIf of a 1-lot put credit spread (the two nearest-the-money-below puts of the first SPXW expiry)."""
    from ib_async import ComboLeg, Contract
    from ib_async import Order as IBOrder

    from strikebench.options.contracts import OptionContract
    from strikebench.options.orders import Leg, Order

    snap = sample.snapshot
    puts = [i for i in range(len(snap)) if not snap.is_call[i] and snap.root[i] == "SPXW"
            and snap.strike[i] <= snap.underlying_price]
    if len(puts) < 2:
        return _row("preview", None, "not run: fewer than two SPXW puts below the index in the sample")
    hi, lo = sorted(puts, key=lambda i: -snap.strike[i])[:2]
    mk = [OptionContract.make("SPXW", snap.expiry[i].astype(object), float(snap.strike[i]), "P") for i in (hi, lo)]
    order = Order(client_id="preview", legs=(Leg(mk[0], -1), Leg(mk[1], 1)), quantity=1, limit_price=-0.50)
    ids = {}
    for c in mk:
        ibc = Contract(**option_fields(c))
        ib.qualifyContracts(ibc)
        ids[c] = ibc.conId
    bag = Contract(secType="BAG", symbol="SPX", exchange="CBOE", currency="USD",
                   comboLegs=[ComboLeg(conId=ids[c], ratio=r, action=a, exchange="CBOE") for c, a, r in
                              combo_legs(order)])
    fields = order_fields(order, account=s.account)
    fields.pop("orderRef")
    state = ib.whatIfOrder(bag, IBOrder(**fields))
    if not state or not getattr(state, "initMarginChange", ""):
        return _row("preview", False, "IB returned no margin for the sample spread (whatIf refused)")
    what = f"{mk[0].occ_compact} / {mk[1].occ_compact} x1 at -0.50"
    return _row("preview", True, f"whatIf {what}: initial margin change {float(state.initMarginChange):,.2f}, "
                                 f"maintenance {float(state.maintMarginChange):,.2f}, commission "
                                 f"{float(state.commission):.2f} USD (nothing placed)")
