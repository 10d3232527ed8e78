"""A decision's fast paths equal the general paths they replace (issue 15, helper `decide`).

Each fast path (one pass for all delta targets, offset rows and OCC symbols from the contract key, the
snapshot checksum and blob read in place, JSON of plain data in one C pass, the strategies' candidate
loops) is checked against the general computation on random chains: several roots and expiries,
negative deltas, NaN/crossed/negative quotes, tied |delta|, fractional strikes and strikes a rounding
step apart, non-contiguous input columns, empty snapshots.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
import zlib
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from strikebench import journal as J
from strikebench.api import Candidate
from strikebench.options.chain import COLUMNS, ChainSnapshot, _factorize_roots
from strikebench.strategies.credit_vertical import CreditVertical, CreditVerticalParams
from strikebench.strategies.spreads import PRICE_EPS
from strikebench.strategies.zero_dte import ZeroDte, ZeroDteParams, side_by_features

NY = "America/New_York"


def random_chain(rng, *, roots=("SPXW",), n_exp=3, strikes=None, at="2024-01-08 11:00", bad=0.1,
                 strided=False) -> ChainSnapshot:
    """Puts and calls of a few expiries and roots, deltas loosely monotone with noise, repeats (ties) and
    NaNs; quotes with NaN, crossed, negative and zero bids; rows shuffled."""
    ts = pd.Timestamp(at, tz=NY)
    k = np.asarray(strikes if strikes is not None else np.arange(4700.0, 4900.0, 5.0))
    cols = {n: [] for n in ("root", "expiry", "strike", "is_call")}
    for root in roots:
        for e in range(n_exp):
            exp = np.datetime64(ts.date() + dt.timedelta(days=int(rng.integers(0, 10)) if e else 0), "D")
            for call in (False, True):
                cols["root"] += [root] * len(k)
                cols["expiry"] += [exp] * len(k)
                cols["strike"] += list(k)
                cols["is_call"] += [call] * len(k)
    n = len(cols["strike"])
    strike = np.asarray(cols["strike"], dtype=float)
    call = np.asarray(cols["is_call"])
    x = (strike - 4800.0) / 60.0
    delta = np.where(call, 1 / (1 + np.exp(x)), -1 / (1 + np.exp(-x))) + rng.normal(0, 0.01, n)
    delta = np.round(delta, int(rng.integers(2, 5)))  # rounded: many exactly tied |delta|
    delta[rng.random(n) < 0.05] = np.nan
    mid = np.abs(delta) * 20 + 0.05
    half = rng.choice([0.025, 0.05, 0.1, 0.5], n)
    bid, ask = np.round(mid - half, 2), np.round(mid + half, 2)
    r = rng.random(n)
    bid[r < bad / 4] = np.nan
    bid[(r >= bad / 4) & (r < bad / 2)] = ask[(r >= bad / 4) & (r < bad / 2)] + 0.05  # crossed
    bid[(r >= bad / 2) & (r < 3 * bad / 4)] = -0.05
    bid[(r >= 3 * bad / 4) & (r < bad)] = 0.0
    order = rng.permutation(n)
    columns = dict(root=np.asarray(cols["root"]), expiry=np.asarray(cols["expiry"], dtype="datetime64[D]"),
                   strike=strike, is_call=call, bid=bid, ask=ask, delta=delta,
                   iv=rng.random(n), gamma=rng.random(n), theta=-rng.random(n), vega=rng.random(n),
                   last=mid, volume=rng.integers(0, 100, n), open_interest=rng.integers(0, 1000, n))
    columns = {name: v[order] for name, v in columns.items()}
    if strided:  # columns as strided views (from_arrays keeps them as given when already in key order)
        snap = ChainSnapshot.from_arrays("SPX", ts, 4800.0, **columns)
        wide = {name: np.repeat(getattr(snap, name), 2)[::2] for name in COLUMNS}
        assert not wide["bid"].flags.c_contiguous
        return ChainSnapshot.from_arrays("SPX", ts, 4800.0, **wide)
    return ChainSnapshot.from_arrays("SPX", ts, 4800.0, **columns)


# ------------------------------------------------------------------ general paths (the code before the fast ones)
def closest_delta_general(snap, expiry, right, target, root=None):
    idx = snap.rows(expiry, right, root=root)
    idx = idx[np.isfinite(snap.delta[idx])]
    if idx.size == 0:
        return None
    dist = np.abs(np.abs(snap.delta[idx]) - target)
    return int(idx[np.lexsort((np.abs(snap.delta[idx]), dist))[0]])


def offset_row_general(snap, row, points):
    call = bool(snap.is_call[row])
    strike = float(snap.strike[row]) + (points if call else -points)
    return snap.find(str(snap.root[row]), snap.expiry[row], call, strike)


def occ_symbol_general(snap, row):
    from strikebench.options.contracts import _occ_body

    return (f"{str(snap.root[row]):<6}"
            f"{_occ_body(snap.expiry[row].item(), 'C' if snap.is_call[row] else 'P', float(snap.strike[row]))}")


def checksum_general(snap):
    h = hashlib.sha256()
    h.update(f"{snap.underlying}|{snap.timestamp.isoformat()}|{snap.underlying_price!r}".encode())
    for name in COLUMNS:
        h.update(name.encode())
        h.update(np.ascontiguousarray(getattr(snap, name)).tobytes())
    return h.hexdigest()


def blob_general(snapshot, fmt="columns-lz4"):
    n = len(snapshot)
    roots, codes = np.unique(np.asarray(snapshot.root), return_inverse=True)
    columns, buffers, run = [], [], []

    def shuffle_run():
        if run:
            block = np.empty((len(run), n, 8), dtype=np.uint8)
            for k, arr in enumerate(run):
                block[k] = arr.view(np.uint8).reshape(n, 8)
            buffers.append(block.transpose(0, 2, 1).tobytes())
            run.clear()

    for name, dtype in COLUMNS.items():
        if name == "root":
            arr = codes.astype("<u1")
        elif name == "expiry":
            arr = np.asarray(snapshot.expiry).astype("datetime64[D]", copy=False).astype("<i4")
        else:
            arr = np.ascontiguousarray(np.asarray(getattr(snapshot, name)).astype(np.dtype(dtype).newbyteorder("<"),
                                                                                  copy=False))
        shuffled = arr.dtype.itemsize == 8
        columns.append([name, arr.dtype.str, arr.nbytes, shuffled])
        if shuffled and n:
            run.append(arr)
        else:
            shuffle_run()
            buffers.append(arr.tobytes())
    shuffle_run()
    header = json.dumps({"rows": n, "roots": [str(r) for r in roots], "columns": columns},
                        separators=(",", ":")).encode()
    payload = b"".join(buffers)
    packed = J._lz4().compress(payload, asbytes=True) if fmt == "columns-lz4" else zlib.compress(payload, 1)
    return J._SNAP_MAGIC[fmt] + struct.pack("<I", len(header)) + header + packed


def to_json_general(obj, sort_keys=True):
    return json.dumps(J._plain(obj), sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


def candidates_json_general(candidates):
    out = []
    for c in candidates or ():
        if isinstance(c, dict):
            item = dict(c)
        else:
            item = {"description": c.description if hasattr(c, "description") else str(c),
                    "legs": list(getattr(c, "legs", ()) or ()),
                    "score": getattr(c, "score", None), "credit": getattr(c, "credit", None),
                    "details": dict(getattr(c, "details", {}) or {})}
        credit = item.get("credit")
        if credit is not None and not isinstance(credit, str):
            item["credit"] = format(J._decimal(credit), "f") if math.isfinite(float(credit)) else None
        out.append(item)
    return to_json_general(out)


SEEDS = range(6)


def chains(seed):
    rng = np.random.default_rng(seed)
    kinds = [dict(), dict(roots=("SPX", "SPXW")), dict(roots=("XSP",), strikes=np.arange(470.0, 490.0, 0.5)),
             dict(strided=True, roots=("SPXW", "SPX")), dict(strikes=[4800.0, 4800.0005, 4800.001, 4805.0, 4810.0])]
    return [random_chain(rng, **kw) for kw in kinds]


@pytest.mark.parametrize("seed", SEEDS)
def test_closest_deltas_is_closest_delta_of_each_target(seed):
    rng = np.random.default_rng(100 + seed)
    for snap in chains(seed):
        targets = [0.1, 0.15, 0.2, 0.5, 0.0, 1.0, 0.3333, float("nan")] + list(np.round(rng.random(6), 3))
        for root in (None, *sorted(set(snap.root.tolist())), "NOPE"):
            for expiry in snap.expiries + [dt.date(2030, 1, 1)]:
                for right in ("P", "C"):
                    want = [closest_delta_general(snap, expiry, right, t, root) for t in targets]
                    assert snap.closest_deltas(expiry, right, targets, root=root) == want
                    assert [snap.closest_delta(expiry, right, t, root=root) for t in targets] == want
                    # and on a fresh snapshot (nothing memoized yet), one target at a time
                    fresh = ChainSnapshot(**{f: getattr(snap, f) for f in snap.__dataclass_fields__})
                    assert fresh.closest_delta(expiry, right, targets[1], root=root) == want[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_offset_row_and_occ_symbol_are_find_and_the_contract_s(seed):
    for snap in chains(seed):
        for sub in (snap, snap.subset(np.flatnonzero(snap.root == snap.root[-1])),
                    snap.subset(np.arange(0, len(snap), 3))):
            for row in range(len(sub)):
                assert sub.occ_symbol(row) == occ_symbol_general(sub, row)
                if abs(sub.strike[row] * 1000 - round(sub.strike[row] * 1000)) < 1e-6:  # a listable strike
                    assert sub.occ_symbol(row) == sub.contract(row).occ_symbol
                for points in (5.0, -5.0, 0.5, 10.0, 0.0005, 0.0004999, 0.0, 1e-9, 25.0, -4800.0, 7000.0):
                    assert sub.offset_row(row, points) == offset_row_general(sub, row, points), (row, points)
                assert sub.offset_row(np.int64(row), 5.0) == offset_row_general(sub, row, 5.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_checksum_blob_and_roots_are_the_general_ones(seed):
    rng = np.random.default_rng(seed)
    for snap in chains(seed) + [random_chain(rng).subset(np.zeros(0, dtype=int))]:
        for sub in (snap, snap.subset(np.flatnonzero(snap.is_call))):
            assert sub.checksum == checksum_general(sub)
            for fmt in ("columns-lz4", "columns-zlib"):
                blob = J.snapshot_to_bytes(sub, fmt)
                assert blob == blob_general(sub, fmt)
                back = J.snapshot_from_bytes(blob, sub.underlying, sub.timestamp.isoformat(), NY,
                                             repr(sub.underlying_price), fmt)
                assert back.checksum == sub.checksum
    for roots in (["A"] * 5, ["B", "A", "B"], list("ABAB" * 40), list("ZZYYXX"), ["Q"], [], list("abc" * 30)):
        arr = np.asarray(roots, dtype="U6")
        names, codes = _factorize_roots(arr)
        want_names, want_codes = np.unique(arr, return_inverse=True)
        assert names == [str(r) for r in want_names] and np.array_equal(codes, want_codes)
        assert codes.dtype == np.int64


def random_plain(rng, depth=0):
    """Nested data as decisions' contexts and candidates hold it, and what to_json must convert."""
    pick = int(rng.integers(0, 16 if depth < 3 else 9))
    floats = [0.1, -2.5, 1e-7, 1e22, float("nan"), float("inf"), -0.0, 3.0, float(rng.normal())]
    if pick == 0:
        return str(rng.integers(0, 1000))
    if pick == 1:
        return int(rng.integers(-5, 5))
    if pick == 2:
        return floats[int(rng.integers(0, len(floats)))]
    if pick == 3:
        return bool(rng.integers(0, 2))
    if pick == 4:
        return None
    if pick == 5:
        return np.float64(floats[int(rng.integers(0, len(floats)))])
    if pick == 6:
        return "é\n\"x\"" if rng.random() < 0.5 else dt.date(2024, 1, 8)
    if pick == 7:
        return Decimal("1.25")
    if pick == 8:
        return np.int64(7)
    if pick in (9, 10, 11):
        keys = [str(i) for i in rng.integers(0, 50, int(rng.integers(0, 6)))]
        if rng.random() < 0.15:
            keys.append(int(rng.integers(0, 20)))  # a non-str key: sorted as text, not as numbers
        if rng.random() < 0.05:
            keys += [3, "3"]  # two keys one JSON key
        return {k: random_plain(rng, depth + 1) for k in keys}
    if pick in (12, 13):
        return [random_plain(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    if pick == 14:
        return tuple(random_plain(rng, depth + 1) for _ in range(int(rng.integers(0, 4))))
    return Candidate("c", legs=("A",), score=float(rng.random()), credit=0.5, details={"x": 1})


def test_to_json_of_plain_data_is_the_general_text():
    rng = np.random.default_rng(11)
    for _ in range(6000):
        obj = random_plain(rng)
        for sort_keys in (True, False):
            try:
                want = to_json_general(obj, sort_keys)
            except (TypeError, ValueError) as exc:
                with pytest.raises(type(exc)):
                    J.to_json(obj, sort_keys=sort_keys)
                continue
            assert J.to_json(obj, sort_keys=sort_keys) == want, obj


class OtherCandidate:  # a strategy's own record type: read through getattr
    def __init__(self, credit):
        self.description, self.legs, self.score, self.credit, self.details = "o", ["L"], None, credit, {"a": 1}


def test_candidates_json_is_the_general_text():
    rng = np.random.default_rng(5)
    credits = [0.55, -0.05, 1e-05, 1.5e16, 123456789.125, 0.1 + 0.2, float("nan"), float("inf"), -0.0, 0.0, 3, -2,
               np.float64(0.35), np.float64("nan"), np.int64(4), Decimal("0.3"), "0.40", None, True]
    credits += list(np.round(rng.normal(0, 3, 300), int(rng.integers(0, 6))).tolist())
    credits += [float(x) for x in rng.random(200) * 10.0 ** rng.integers(-9, 18, 200)]
    for i, credit in enumerate(credits):
        cands = [Candidate("0DTE P 4800/4795", legs=("SPXW  240108P04800000", "SPXW  240108P04795000"),
                           score=None if i % 3 else 0.123456, credit=credit,
                           details={"expiry": "2024-01-08", "short_row": 3, "mid_credit": 0.1 + i,
                                    "rejected": "credit 0.0500 < min 0.10"}),
                 OtherCandidate(credit), {"description": "d", "credit": credit, "details": {"k": [1, 2.5]}}]
        if i % 7 == 0:
            cands[0].details["nan"] = float("nan")
        if i % 11 == 0:
            cands[0].details[5] = "int key"
        assert J.candidates_json(cands) == candidates_json_general(cands), credit
    assert J.candidates_json(None) == candidates_json_general(None) == "[]"


# ------------------------------------------------------------------ the strategies' candidate loops
def zero_dte_general(self, snapshot, context):
    """ZeroDte.evaluate before the one-pass candidate loop (selection one target and one row at a time)."""
    p = self.params
    k = float(context.get("k", 0.30))
    today = snapshot.timestamp.date()
    price = context.get("price", snapshot.underlying_price)
    price = float(price) if price is not None and price == price else float(snapshot.underlying_price)
    if p.side_rule == "opening_range_vwap":
        allowed, why = side_by_features(price, context)
    else:
        allowed, why = {"put": ["P"], "call": ["C"], "both": ["P", "C"]}[p.side_rule], f"side rule {p.side_rule}"
    vix = context.get("vix")
    if p.max_vix is not None and vix is not None and vix == vix and vix > p.max_vix:
        allowed, why = [], f"VIX {vix:g} above max {p.max_vix:g}"
    if today not in snapshot.expiries or not len(snapshot.rows(today, root=p.root)):
        return "SKIP", f"no {p.root} expiry today ({today})", [], None
    candidates, listed = [], set()
    for right in ("P", "C"):
        for target_delta in p.short_deltas:
            short = closest_delta_general(snapshot, today, right, target_delta, p.root)
            if short is None:
                continue
            for width in p.widths:
                long = offset_row_general(snapshot, short, width)
                if long is None or (int(short), int(long)) in listed:
                    continue
                listed.add((int(short), int(long)))
                sb, sa = float(snapshot.bid[short]), float(snapshot.ask[short])
                lb, la = float(snapshot.bid[long]), float(snapshot.ask[long])
                mid_credit = (sb + sa) / 2 - (lb + la) / 2
                ba_width = (sa - sb) + (la - lb)
                est_credit = mid_credit - k * ba_width
                max_loss = width - est_credit
                details = {
                    "expiry": str(today), "right": right, "target_delta": target_delta, "width": width,
                    "short_strike": float(snapshot.strike[short]), "long_strike": float(snapshot.strike[long]),
                    "short_delta": round(float(snapshot.delta[short]), 4),
                    "mid_credit": round(mid_credit, 4), "est_credit": round(est_credit, 4),
                    "bid_ask_width": round(ba_width, 4), "max_loss_points": round(max_loss, 4),
                    "short_row": int(short), "long_row": int(long),
                }
                if right not in allowed:
                    reject = f"side: no {'puts' if right == 'P' else 'calls'} ({why})"
                elif est_credit < p.min_credit - PRICE_EPS:
                    reject = f"credit {est_credit:.4f} < min {p.min_credit:.2f}"
                elif ba_width > p.max_bid_ask_width:
                    reject = f"bid/ask width {ba_width:.2f} > max {p.max_bid_ask_width:.2f}"
                elif max_loss <= 0:
                    reject = "credit exceeds the width"
                else:
                    reject = None
                score = None if reject else round(est_credit / max_loss * (1.0 - abs(float(snapshot.delta[short]))), 6)
                if reject:
                    details["rejected"] = reject
                candidates.append(Candidate(
                    description=f"0DTE {right} {details['short_strike']:g}/{details['long_strike']:g}",
                    legs=(occ_symbol_general(snapshot, short), occ_symbol_general(snapshot, long)),
                    score=score, credit=round(est_credit, 4), details=details))
    if not allowed:
        return "SKIP", why, candidates, None
    scored = [(c.score, -i) for i, c in enumerate(candidates) if c.score is not None]
    if not scored:
        rejects = [c.details["rejected"] for c in candidates
                   if c.details["right"] in allowed and "rejected" in c.details]
        return "SKIP", "; ".join([why] + rejects[:3]) if rejects else f"{why}; no quotable strikes", candidates, None
    best = -max(scored)[1]
    return "TRADE", f"{why}; best score {candidates[best].score:.4f}: {candidates[best].description}", candidates, best


def credit_vertical_general(self, snapshot, context):
    """CreditVertical.evaluate before the one-pass candidate loop."""
    p = self.params
    k = float(context.get("k", 0.30))
    rights = {"put": ["P"], "call": ["C"], "both": ["P", "C"]}[p.side]
    candidates, notes = [], []
    for target in p.dte_targets:
        expiry = snapshot.nearest_expiry(target, p.dte_tolerance, root=p.root)
        if expiry is None:
            notes.append(f"no expiry within {p.dte_tolerance}d of {target} DTE")
            continue
        dte = (expiry - snapshot.timestamp.date()).days
        for right in rights:
            for target_delta in p.short_deltas:
                short = closest_delta_general(snapshot, expiry, right, target_delta, p.root)
                if short is None:
                    notes.append(f"{target} DTE {right}: no quotable strikes")
                    continue
                if p.width is not None:
                    long = offset_row_general(snapshot, short, p.width)
                else:
                    long = snapshot.delta_offset_row(short, p.long_delta_distance)
                if long is None:
                    notes.append(f"{target} DTE {right} {target_delta:.2f}: no long leg")
                    continue
                sb, sa = float(snapshot.bid[short]), float(snapshot.ask[short])
                lb, la = float(snapshot.bid[long]), float(snapshot.ask[long])
                mid_credit = (sb + sa) / 2 - (lb + la) / 2
                ba_width = (sa - sb) + (la - lb)
                est_credit = mid_credit - k * ba_width
                spread_width = abs(float(snapshot.strike[short]) - float(snapshot.strike[long]))
                max_loss = spread_width - est_credit
                details = {
                    "target_dte": target, "dte": dte, "expiry": str(expiry), "right": right,
                    "target_delta": target_delta, "short_strike": float(snapshot.strike[short]),
                    "long_strike": float(snapshot.strike[long]), "short_delta": round(float(snapshot.delta[short]), 4),
                    "long_delta": round(float(snapshot.delta[long]), 4), "mid_credit": round(mid_credit, 4),
                    "est_credit": round(est_credit, 4), "bid_ask_width": round(ba_width, 4),
                    "short_row": int(short), "long_row": int(long),
                }
                reject = None
                if est_credit < p.min_credit - PRICE_EPS:
                    reject = f"credit {est_credit:.4f} < min {p.min_credit:.2f}"
                elif ba_width > p.max_bid_ask_width:
                    reject = f"bid/ask width {ba_width:.2f} > max {p.max_bid_ask_width:.2f}"
                elif max_loss <= 0:
                    reject = "credit exceeds the width"
                score = None if reject else est_credit / max_loss * (1.0 - abs(float(snapshot.delta[short])))
                if reject:
                    details["rejected"] = reject
                candidates.append(Candidate(
                    description=f"{dte}DTE {right} {details['short_strike']:g}/{details['long_strike']:g}",
                    legs=(occ_symbol_general(snapshot, short), occ_symbol_general(snapshot, long)),
                    score=None if score is None else round(score, 6), credit=round(est_credit, 4), details=details))
    scored = [(c.score, -i) for i, c in enumerate(candidates) if c.score is not None]
    if not scored:
        reason = "; ".join(notes + [c.details["rejected"] for c in candidates if "rejected" in c.details][:3])
        return "SKIP", reason or "no candidates", candidates, None
    best = -max(scored)[1]
    return "TRADE", f"best score {candidates[best].score:.4f}: {candidates[best].description}", candidates, best


def fresh(snap):
    return ChainSnapshot(**{f: getattr(snap, f) for f in snap.__dataclass_fields__})


@pytest.mark.parametrize("seed", SEEDS)
def test_the_strategies_candidate_loops_are_the_general_ones(seed):
    rng = np.random.default_rng(200 + seed)
    zero = [ZeroDte(ZeroDteParams(root="SPXW", underlying="SPX", strike_grid=5.0, widths=[5.0, 10.0],
                                  short_deltas=[0.1, 0.15, 0.2, 0.12], side_rule=rule, min_credit=0.0,
                                  max_bid_ask_width=mx))
            for rule in ("opening_range_vwap", "both", "put") for mx in (0.5, 5.0)]
    zero.append(ZeroDte(ZeroDteParams(root="XSP", underlying="XSP", strike_grid=0.5, widths=[0.5, 1.0])))
    cv = [CreditVertical(CreditVerticalParams(side=side, dte_targets=[0, 3, 5, 7], short_deltas=[0.1, 0.2, 0.15],
                                              min_credit=mc, width=w, strike_grid=5.0, max_bid_ask_width=2.0))
          for side in ("put", "call", "both") for mc, w in ((0.0, 10.0), (0.3, 25.0))]
    cv.append(CreditVertical(CreditVerticalParams(width=None, long_delta_distance=0.05, side="both")))
    for snap in chains(seed):
        for price, hi, lo, vwap in ((4850.0, 4820.0, 4790.0, 4810.0), (4700.0, 4820.0, 4790.0, 4750.0),
                                    (4800.0, 4820.0, 4790.0, 4805.0), (4800.0, None, None, None)):
            context = {"k": float(rng.choice([0.0, 0.3, 0.5])), "price": price, "or_high": hi, "or_low": lo,
                       "vwap": vwap}
            for s in zero:
                assert repr(s.evaluate(fresh(snap), context)) == repr(zero_dte_general(s, fresh(snap), context))
        for s in cv:
            context = {"k": 0.3}
            assert repr(s.evaluate(fresh(snap), context)) == repr(credit_vertical_general(s, fresh(snap), context))


# ------------------------------------------------------------------ selections by contract group, flags
def rows_general(snap, expiry=None, right=None, root=None, valid_only=True):
    mask = snap.valid.copy() if valid_only else np.ones(len(snap), dtype=bool)
    if expiry is not None:
        mask &= snap.expiry == np.datetime64(expiry, "D")
    if right is not None:
        mask &= snap.is_call == (right == "C")
    if root is not None:
        mask &= snap.root == root
    idx = np.flatnonzero(mask)
    return idx[np.argsort(snap.strike[idx], kind="stable")]


def nearest_expiry_general(snap, target, tolerance, root=None):
    mask = snap.valid if root is None else snap.valid & (snap.root == root)
    exp = np.unique(snap.expiry[mask])
    today = np.datetime64(snap.timestamp.date(), "D")
    best = None
    for d, e in zip((exp - today).astype(np.int64), exp):
        d = int(d)
        if d >= 0 and abs(d - target) <= tolerance and (best is None or (abs(d - target), d) < best[0]):
            best = ((abs(d - target), d), e.item())
    return None if best is None else best[1]


def flags_general(bid, ask):
    flags = np.zeros(len(bid), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        flags |= np.where(~(np.isfinite(bid) & np.isfinite(ask)), 1, 0).astype(np.int8)
        flags |= np.where(bid == 0, 2, 0).astype(np.int8)
        flags |= np.where(bid < 0, 16, 0).astype(np.int8)
        flags |= np.where(ask <= 0, 4, 0).astype(np.int8)
        flags |= np.where(bid > ask, 8, 0).astype(np.int8)
    return flags


@pytest.mark.parametrize("seed", SEEDS)
def test_rows_and_nearest_expiry_by_contract_group_are_the_masks(seed):
    rng = np.random.default_rng(300 + seed)
    snaps = chains(seed)
    first = snaps[1]
    scrambled = rng.permutation(len(first))  # keys not sorted (built directly): the masks' path is taken
    snaps.append(ChainSnapshot(**{f: (getattr(first, f)[scrambled] if isinstance(getattr(first, f), np.ndarray)
                                      else getattr(first, f)) for f in first.__dataclass_fields__}))
    assert snaps[-1]._groups is None and snaps[0]._groups is not None
    dead = first.expiry == first.expiry[0]  # one expiry without a usable quote: not listed by nearest_expiry
    bid = np.where(dead, np.nan, first.bid)
    snaps.append(ChainSnapshot.from_arrays("SPX", first.timestamp, 4800.0, bid=bid,
                                           **{n: getattr(first, n) for n in COLUMNS if n != "bid"}))
    for snap in snaps:
        roots = [None, *sorted(set(snap.root.tolist())), "NOPE"]
        days = [None, *snap.expiries, dt.date(2030, 1, 1)]
        for root in roots:
            for day in days:
                for right in (None, "P", "C"):
                    for valid_only in (True, False):
                        want = rows_general(snap, day, right, root, valid_only)
                        got = fresh(snap).rows(day, right, root=root, valid_only=valid_only)
                        assert np.array_equal(got, want) and got.dtype == want.dtype, (root, day, right)
            for target in (0, 1, 3, 5, 7, 30):
                for tol in (0, 1, 3):
                    assert fresh(snap).nearest_expiry(target, tol, root=root) == \
                        nearest_expiry_general(snap, target, tol, root)


def test_quote_flags_are_each_condition_s_bit():
    rng = np.random.default_rng(9)
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -0.05, 0.05, 1.0, 1.05, 5e-324])
    bid, ask = rng.choice(values, 5000), rng.choice(values, 5000)
    ts = pd.Timestamp("2024-01-08 10:00", tz=NY)
    snap = ChainSnapshot.from_arrays("SPX", ts, 4800.0, root=np.full(5000, "SPXW"),
                                     expiry=np.full(5000, np.datetime64("2024-01-08")), strike=np.arange(5000.0) + 1,
                                     is_call=np.zeros(5000, dtype=bool), bid=bid, ask=ask)
    assert snap.flags.dtype == np.int8 and np.array_equal(snap.flags, flags_general(snap.bid, snap.ask))


def test_a_subset_of_every_row_in_order_is_the_snapshot_itself_when_nothing_changes():
    rng = np.random.default_rng(3)
    one = random_chain(rng)  # one root: its code is 0 already
    assert one.subset(np.arange(len(one))) is one
    spxw = random_chain(rng, roots=("SPX", "SPXW"))
    spxw = spxw.subset(np.flatnonzero(spxw.root == "SPXW"))
    assert spxw.subset(np.arange(len(spxw))) is spxw
    two = random_chain(rng, roots=("SPX", "SPXW"))
    keep = np.flatnonzero(two.root == "SPXW")  # built directly with the two-root chain's keys: SPXW's code is 1
    coded = ChainSnapshot(**{f: (getattr(two, f)[keep] if isinstance(getattr(two, f), np.ndarray) else getattr(two, f))
                             for f in two.__dataclass_fields__})
    assert coded.key[0] >> 55 == 1 and coded.subset(np.arange(len(coded))) is not coded
    for snap in (one, two, coded):
        n = len(snap)
        for rows in (np.arange(n), np.r_[0, 0, np.arange(1, n - 1)], np.arange(n)[::-1], np.arange(1, n),
                     np.r_[np.arange(n - 1), n - 1], np.arange(n)[:1]):
            got = snap.subset(rows)
            want = ChainSnapshot.from_arrays(snap.underlying, snap.timestamp, snap.underlying_price,
                                             **{c: getattr(snap, c)[rows] for c in COLUMNS})
            assert got.checksum == want.checksum and np.array_equal(got.key, want.key)
            assert np.array_equal(got.flags, want.flags) and J.snapshot_to_bytes(got) == J.snapshot_to_bytes(want)
    one_row = one.subset([5])
    assert one_row.subset([0]) is one_row


@pytest.mark.parametrize("seed", SEEDS)
def test_expiries_are_the_distinct_expiry_column(seed):
    for snap in chains(seed) + [random_chain(np.random.default_rng(seed)).subset(np.zeros(0, dtype=int))]:
        want = [pd.Timestamp(d).date() for d in np.unique(snap.expiry)]
        assert fresh(snap).expiries == want and all(type(d) is dt.date for d in fresh(snap).expiries)


def test_a_row_s_contract_is_the_one_its_columns_make():
    from strikebench.options.contracts import ContractError, OptionContract, Right

    for snap in chains(0):
        for row in range(len(snap)):
            args = dict(root=str(snap.root[row]), expiry=snap.expiry[row].item(), strike=float(snap.strike[row]),
                        right=Right.CALL if snap.is_call[row] else Right.PUT)
            try:
                want = OptionContract(**args)
            except ContractError as exc:  # a strike off the 0.001 grid: refused every time, never cached
                for _ in range(2):
                    with pytest.raises(ContractError, match=str(exc)[:20]):
                        snap.contract(row)
                continue
            got = snap.contract(row)
            assert got == want and type(got.strike) is float and got.strike == args["strike"]
            assert snap.contract(row) is got  # one object per contract


def test_the_journals_json_encoders_write_jsons_own_text():
    """``_ENCODERS`` (json's C encoder made once) against ``json.JSONEncoder(...).encode``: the same text for plain
    nested data (str/int/float subclasses, -0.0, tiny and huge floats, non-ASCII, tuples), sorted and not, and the
    same error (ValueError for NaN/inf, TypeError for an object json cannot write) otherwise."""
    import enum
    import json

    class Level(enum.IntEnum):
        HIGH = 3

    class Side(str, enum.Enum):
        PUT = "P"

    leaves = [0.1, -0.0, 1e-300, 1.5e300, 2 ** 70, -3, True, False, None, "x", "é\n\"\\\u2028", "", np.float64(0.35),
              Level.HIGH, Side.PUT, 12345.678901234567, float("nan"), float("inf"), object(), dt.date(2024, 1, 8)]
    rng = np.random.default_rng(21)

    def build(depth=0):
        pick = int(rng.integers(0, 10 if depth < 4 else 6))
        if pick < 6:
            return leaves[int(rng.integers(0, len(leaves) - (4 if rng.random() < 0.9 else 0)))]
        if pick < 8:
            return {str(k): build(depth + 1) for k in rng.integers(0, 40, int(rng.integers(0, 6)))}
        if pick == 8:
            return [build(depth + 1) for _ in range(int(rng.integers(0, 5)))]
        return tuple(build(depth + 1) for _ in range(int(rng.integers(0, 4))))

    outcomes = set()
    for _ in range(8000):
        obj = build()
        for sort_keys in (True, False):
            ref = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)
            try:
                want = ref.encode(obj)
            except (TypeError, ValueError) as exc:
                with pytest.raises(type(exc)):
                    J._ENCODERS[sort_keys](obj)
                outcomes.add(type(exc).__name__)
                continue
            assert J._ENCODERS[sort_keys](obj) == want, obj
            outcomes.add("text")
    assert outcomes == {"text", "TypeError", "ValueError"}
    assert J._json_list([["1.25", None], {"b": 1, "a": 2}]) == '[["1.25",null],{"b":1,"a":2}]'


def test_orjson_writes_jsons_text_or_hands_back():
    """``_ORJSON`` (orjson, ~10x json's encoder on a decision's candidates) returns json's own text of plain data with
    NaN/inf as null, or None so json writes it: random trees of every control character, DEL, non-ASCII, a lone
    surrogate, text that looks like an exponent, floats of every magnitude (repr's exponent form below 1e-4 and from
    1e16 is not orjson's), ints past 64 bits, nesting past orjson's 255. And it does write the common case itself."""
    rng = np.random.default_rng(31)
    chars = [chr(c) for c in range(0, 0x80)] + ["é", "\u2028", "\ud800", "€", "e-", "1e-5", "2E+3", "e+"]

    def text():
        return "".join(chars[int(i)] for i in rng.integers(0, len(chars), int(rng.integers(0, 6))))

    def number():
        pick = rng.random()
        if pick < 0.3:
            return float(struct.unpack("<d", struct.pack("<Q", int(rng.integers(0, 2 ** 63, dtype=np.uint64)) *
                                                          (2 if rng.random() < 0.5 else 1)))[0])
        if pick < 0.6:
            return float(rng.uniform(-1, 1) * 10.0 ** int(rng.integers(-9, 22)))
        if pick < 0.8:
            return int(rng.integers(-2 ** 62, 2 ** 62)) * (2 ** int(rng.integers(0, 12)))
        return [float("nan"), float("inf"), -0.0, 0.0, 1e16, 1e-4, 9.999e-5, True, False, None][int(rng.integers(0, 10))]

    def build(depth=0):
        pick = int(rng.integers(0, 8 if depth < 4 else 4))
        if pick < 2:
            return number()
        if pick < 4:
            return text()
        if pick < 6:
            return {text() + str(i): build(depth + 1) for i in range(int(rng.integers(0, 5)))}
        return [build(depth + 1) for _ in range(int(rng.integers(0, 5)))]

    deep = []
    for _ in range(300):
        deep = [deep]
    used = 0
    for i in range(6000):
        obj = build() if i else deep
        for sort_keys in (True, False):
            got = J._ORJSON[sort_keys](obj)
            if got is None:
                continue
            used += 1
            assert got == json.dumps(J._plain(obj), sort_keys=sort_keys, separators=(",", ":"), allow_nan=False), obj
            assert J._json_text(obj, sort_keys, True) == got
    assert used > 4000  # most random trees are written by orjson itself
    candidate = [{"description": "XSP 0DTE P 400/399", "legs": ["XSP   230103P00400000", "XSP   230103P00399000"],
                  "score": 0.1234, "credit": "0.35", "details": {"short_delta": -0.1012, "mid": 1.27, "side": "put"}}]
    assert J._ORJSON[True](candidate) == json.dumps(candidate, sort_keys=True, separators=(",", ":"))
    assert J._ORJSON[True]([1.5e-7]) is None and J._ORJSON[True](["é"]) is None and J._ORJSON[True]([2 ** 64]) is None
    assert J._ORJSON[True](deep) is None and J._ORJSON[False](["\x7f"]) is None
