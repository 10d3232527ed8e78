"""`strikebench dashboard`: the API on a real uvicorn on 127.0.0.1 and the page in a real headless Chromium.

The run is a real `strikebench backtest` of one week, the live account a real `strikebench paper` replay of one
session (it opens a credit vertical at 10:00 that is still open at the close). Every number the API or the page
shows is compared with the journal read here directly with sqlite3 (and the per-bar equity file with pyarrow),
never with the dashboard's own code.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import yaml

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))
CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
WEEK = ("2023-03-13", "2023-03-17")
DAY = "2023-03-13"

CONFIG = {
    "name": "dash",
    "data": {"source": "synthetic", "seed": 42, "start": WEEK[0], "end": WEEK[1], "scenario": "default"},
    "broker": {"name": "backtest", "params": {"initial_cash": 100000},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.30}}, "commission": {"name": "cboe_retail"}},
    "strategies": [{"name": "credit_vertical", "params": {
        "dte_targets": [3, 5, 7], "dte_tolerance": 1, "entry_times": ["10:00", "11:00", "12:00"],
        "short_deltas": [0.10, 0.20], "side": "put", "width": 25, "take_profit_pct": 0.5, "stop_multiple": 2.0,
        "contracts": 1}}],
    "risk": [{"name": "max_open_trades", "params": {"limit": 1}},
             {"name": "max_new_trades_per_day", "params": {"limit": 1}},
             {"name": "daily_loss_cap", "params": {"cap": 1000}}],
}
PAPER = {"name": "paper", "params": {"initial_cash": 100000, "latency_seconds": 0, "seed": 5},
         "fill_model": {"name": "mid_slippage", "params": {"k": 0.30}}, "commission": {"name": "cboe_retail"}}


def cents(text) -> int:
    return int(Decimal(str(text)) * 100)


def q(db: Path, sql: str, params=()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dash")


@pytest.fixture(scope="module")
def paper(folder):
    """A real `strikebench paper` replay of one session at 3600x (about 7 s), started now and left running: the
    browser test watches it live; `paper_done` waits for its end."""
    cfg = dict(CONFIG, broker=PAPER)
    path = folder / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = folder / "live"
    proc = subprocess.Popen([STRIKEBENCH, "paper", str(path), "--clock", "replay", "--speed", "3600", "--day", DAY,
                             "--no-panel", "--run-dir", str(out)], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (out / "live.json").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the paper run did not start"
        time.sleep(0.05)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture(scope="module")
def paper_done(paper):
    proc, out = paper
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, text
    return out


@pytest.fixture(scope="module")
def run_dir(folder) -> Path:
    path = folder / "bt.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    p = subprocess.run([STRIKEBENCH, "backtest", str(path), "--quiet", "--set", f"output.dir={folder / 'runs'}",
                        "--set", "output.plots=false"], cwd=folder, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return next((folder / "runs").glob("dash-*"))


@contextlib.contextmanager
def dashboard(args, token=None):
    """The real application under uvicorn on 127.0.0.1, port 0, in a thread."""
    import uvicorn

    from strikebench.dashboard.app import create_app, open_sources
    from strikebench.dashboard.server import bind

    sources = open_sources([str(a) for a in args])
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(sources, token=token, actor="tester@test"), log_level="warning",
                                           lifespan="on"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert th.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", sources
    finally:
        server.should_exit = True
        th.join(10)
        sock.close()


def journal_figures(j: Path, run_id: str) -> dict:
    init = cents(q(j, "SELECT initial_cash FROM runs WHERE run_id = ?", (run_id,))[0][0])
    cash = init + sum(cents(r[0]) for r in q(j, "SELECT cash FROM fills WHERE run_id = ?", (run_id,)))
    realized = sum(cents(r[0]) for r in q(j, "SELECT realized_pnl FROM trades WHERE run_id = ? AND closed_at IS NOT"
                                          " NULL", (run_id,)))
    return {"initial": init, "cash": cash, "realized": realized}


# ------------------------------------------------------------------ the browser
def _browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
                    f"(apt-get install -y chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_page_in_a_real_browser(run_dir, paper, folder, tmp_path):
    """Loads the page offline for a run and a live replay, checks numbers against the journal, clicks through to a
    decision's chain slice, sees live updates arrive, trips the kill switch with the token; screenshots kept."""
    proc, live = paper
    run_id = run_dir.name
    j = run_dir / "journal.sqlite"
    token = "t0k-" + os.urandom(6).hex()
    with dashboard([run_dir, live], token=token) as (url, _), _browser() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            outside = []
            # offline: any request that is not this server fails the test
            ctx.route("**/*", lambda route: (route.continue_() if route.request.url.startswith(url)
                                             else (outside.append(route.request.url), route.abort())))
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # ---- the live replay, watched while it runs
            page.goto(f"{url}/#/s/1")
            page.wait_for_selector("#live-cards")
            first = int(page.evaluate("document.body.dataset.liveVersion"))
            page.wait_for_function(f"Number(document.body.dataset.liveVersion) > {first}", timeout=60_000)
            page.wait_for_selector("table.decisions tr[data-id]", timeout=60_000)  # the 10:00 decision arrived
            page.screenshot(path=tmp_path / "live-running.png", full_page=True)
            assert proc.wait(180) == 0
            jl = live / "journal.sqlite"
            lrun = live.name
            page.wait_for_function("document.querySelector('#live-status').textContent.includes('session complete')",
                                   timeout=10_000)
            jf = journal_figures(jl, lrun)
            eq_day = q(jl, "SELECT equity FROM equity WHERE run_id = ? AND day = ?", (lrun, DAY))[0][0]

            def shown(key):
                return page.inner_text(f'#live-cards [data-key="{key}"] .v').replace(",", "")

            assert Decimal(shown("cash")) == Decimal(jf["cash"]) / 100
            # the open position marked at the last bar: cash + marks is the runtime's own end-of-day equity
            assert Decimal(shown("equity")) == Decimal(eq_day)
            opened = q(jl, "SELECT trade_id FROM trades WHERE run_id = ? AND closed_at IS NULL", (lrun,))
            assert len(opened) == 1 and int(shown("open_count")) == 1
            assert page.locator(f'table.positions tr[data-id="{opened[0][0]}"]').count() == 1
            n_dec = q(jl, "SELECT COUNT(*) FROM trade_decisions WHERE run_id = ? AND decided_at LIKE ?",
                      (lrun, DAY + "%"))[0][0]
            assert page.locator("table.decisions tbody tr").count() == n_dec

            # a line the runtime's own writer adds shows within 2 s
            from strikebench.live.runtime import LiveState

            v0 = int(page.evaluate("document.body.dataset.liveVersion"))
            st = LiveState(jl, lrun)
            t0 = time.monotonic()
            st.log("2023-03-13T16:00:00-04:00", "note", "hello from the writer")
            st.close()
            page.wait_for_function("document.querySelector('#live-log').textContent.includes('hello from the writer')",
                                   timeout=2_000)
            assert time.monotonic() - t0 < 2.0 and int(page.evaluate("document.body.dataset.liveVersion")) > v0

            # kill switch: confirmation dialog with the token, journaled with who and when
            page.click("#btn-kill")
            page.fill("#confirm-token", token)
            page.fill("#confirm-reason", "risk check")
            page.click("#confirm-ok")
            page.wait_for_function("document.querySelector('#kill-state').textContent.includes('risk check')",
                                   timeout=5_000)
            assert (live / "KILL").read_text().startswith("risk check (dashboard, tester@test from 127.0.0.1")
            logged = q(jl, "SELECT kind, message FROM live_log WHERE run_id = ? ORDER BY log_id DESC LIMIT 1", (lrun,))
            assert logged[0][0] == "dashboard" and "by tester@test from 127.0.0.1" in logged[0][1]
            page.screenshot(path=tmp_path / "live.png", full_page=True)

            # ---- the backtest run
            page.goto(f"{url}/#/s/0")
            page.wait_for_selector("#summary .card")
            page.wait_for_selector("#eq-chart canvas")
            f = journal_figures(j, run_id)
            final = q(j, "SELECT equity FROM equity WHERE run_id = ? ORDER BY day DESC LIMIT 1", (run_id,))[0][0]
            assert page.inner_text('#summary [data-key="final_equity"] .v').replace(",", "") == final
            assert Decimal(page.inner_text('#summary [data-key="realized_pnl"] .v').replace(",", "")) == \
                Decimal(f["realized"]) / 100
            trades = q(j, "SELECT trade_id, realized_pnl, strategy, exit_reason FROM trades WHERE run_id = ?", (run_id,))
            assert page.locator("table.trades tbody tr").count() == len(trades)
            # a filter: the losers only, and the shown P&L is their exact sum
            page.select_option('#trade-filters select[name="result"]', "loss")
            losers = [t for t in trades if t[1] is not None and Decimal(t[1]) <= 0]
            assert page.locator("table.trades tbody tr").count() == len(losers)
            assert Decimal(page.inner_text("#trade-pnl").replace(",", "")) == sum(Decimal(t[1]) for t in losers)
            page.select_option('#trade-filters select[name="result"]', "")
            # click through: a trade -> its decision -> candidates and the chain slice with its legs marked
            tid, did = q(j, "SELECT trade_id, decision_id FROM trades WHERE run_id = ? AND decision_id IS NOT NULL"
                            " ORDER BY opened_at LIMIT 1", (run_id,))[0]
            page.click(f'table.trades tr[data-id="{tid}"]')
            page.wait_for_selector("#decision-detail table.cand")
            page.wait_for_selector("#ladder tr.chosen")
            legs = q(j, "SELECT strike, ratio FROM trade_legs WHERE run_id = ? AND trade_id = ? ORDER BY leg",
                     (run_id, tid))
            rows = page.locator("#ladder tr.chosen")
            assert rows.count() == len(legs)
            shown_legs = sorted((float(rows.nth(i).locator("td").nth(5).inner_text()),
                                 int(rows.nth(i).locator("b.leg").inner_text())) for i in range(rows.count()))
            assert shown_legs == sorted((float(k), int(r)) for k, r in legs)
            ncand = len(json.loads(q(j, "SELECT candidates FROM trade_decisions WHERE run_id = ? AND decision_id = ?",
                                     (run_id, did))[0][0]))
            assert page.locator("#decision-detail table.cand tbody tr").count() == ncand
            assert page.locator("#smile canvas").count() >= 1
            page.screenshot(path=tmp_path / "run.png", full_page=True)
            # zoom: drag across the equity chart; the server sends the finer range
            page.locator("#eq-chart").scroll_into_view_if_needed()
            box = page.locator("#eq-chart .u-over").bounding_box()
            before = page.evaluate("document.querySelector('#eq-chart').dataset.points")
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 50)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 50, steps=4)
            page.mouse.up()
            page.wait_for_function(f"document.querySelector('#eq-chart').dataset.points !== '{before}'",
                                   timeout=5_000)
            assert not errors, errors
            assert not outside, outside
            if os.environ.get("STRIKEBENCH_SCREENSHOTS"):
                # docs/img: `STRIKEBENCH_SCREENSHOTS=docs/img pytest tests/test_dashboard.py -k browser`
                import shutil

                for name in ("run.png", "live.png"):
                    shutil.copy(tmp_path / name, Path(os.environ["STRIKEBENCH_SCREENSHOTS"]) / f"dashboard-{name}")
        finally:
            browser.close()


# ------------------------------------------------------------------ the API
def test_run_api_equals_the_journal(run_dir):
    import numpy as np
    import pyarrow.parquet as pq

    run_id = run_dir.name
    j = run_dir / "journal.sqlite"
    with dashboard([run_dir]) as (url, _):
        get = lambda p, **kw: requests.get(url + p, timeout=30, **kw)  # noqa: E731
        s = get("/api/run/0/summary").json()
        f = journal_figures(j, run_id)
        assert round(s["realized_pnl"] * 100) == f["realized"]
        assert s["trades"] == q(j, "SELECT COUNT(*) FROM trades WHERE run_id = ? AND closed_at IS NOT NULL",
                                (run_id,))[0][0]
        trades = get("/api/run/0/trades").json()["trades"]
        rows = q(j, "SELECT trade_id, realized_pnl, entry_credit, fees FROM trades WHERE run_id = ? ORDER BY opened_at",
                 (run_id,))
        assert [(t["trade_id"], t["realized_pnl"], t["entry_credit"], t["fees"]) for t in trades] == rows
        per = s["per_strategy"]["credit_vertical"]
        assert round(per["realized_pnl"] * 100) == f["realized"]
        days = get("/api/run/0/days").json()["days"]
        want = q(j, "SELECT substr(decided_at, 1, 10), COUNT(*), SUM(action = 'TRADE') FROM trade_decisions"
                    " WHERE run_id = ? GROUP BY 1 ORDER BY 1", (run_id,))
        assert [(d["day"], d["decisions"], d["trades"]) for d in days] == want
        dec = get("/api/run/0/decisions", params={"day": WEEK[0]}).json()["decisions"]
        assert [(d["decision_id"], d["action"], d["reason"]) for d in dec] == q(
            j, "SELECT decision_id, action, reason FROM trade_decisions WHERE run_id = ? AND decided_at LIKE ?"
               " ORDER BY decided_at, seq", (run_id, WEEK[0] + "%"))
        # the chain slice of the decision behind the first trade: its legs marked with the trade's ratios
        tid, did = q(j, "SELECT trade_id, decision_id FROM trades WHERE run_id = ? ORDER BY opened_at LIMIT 1",
                     (run_id,))[0]
        c = get(f"/api/run/0/chain/{did}").json()
        legs = q(j, "SELECT occ_symbol, ratio FROM trade_legs WHERE run_id = ? AND trade_id = ?", (run_id, tid))
        assert c["marked"] == {o: r for o, r in legs}
        marked = [(x["strike"], side, x[side]["ratio"]) for x in c["strikes"] for side in ("put", "call")
                  if x.get(side, {}).get("chosen")]
        assert sorted(marked) == sorted((float(k), "put" if r == "P" else "call", ratio) for k, r, ratio in q(
            j, "SELECT strike, option_right, ratio FROM trade_legs WHERE run_id = ? AND trade_id = ?", (run_id, tid)))
        spot = q(j, "SELECT s.underlying_price FROM chain_snapshots s JOIN trade_decisions d ON d.snapshot_id ="
                    " s.snapshot_id WHERE d.run_id = ? AND d.decision_id = ?", (run_id, did))[0][0]
        assert c["underlying_price"] == float(spot)
        assert [x["strike"] for x in c["strikes"]] == sorted(x["strike"] for x in c["strikes"])

        # equity per bar, decimated: extremes kept, drawdown exact, session ends equal the journal's equity rows
        table = pq.read_table(run_dir / "equity_bars.parquet")
        t = table.column("time").cast("int64").to_numpy()
        y = table.column("equity").to_numpy()
        init = f["initial"] / 100
        dd_full = np.r_[init, y] - np.maximum.accumulate(np.r_[init, y])
        e = get("/api/run/0/equity", params={"points": 100}).json()
        assert e["what"] == "bar" and e["points_total"] == len(y) == 5 * 390
        assert e["points"] <= 2 * 100 * 2 + 4
        assert max(e["equity"]) == round(float(y.max()), 2) and min(e["equity"]) == round(float(y.min()), 2)
        assert min(e["drawdown"]) == round(float(dd_full.min()), 2)
        assert e["max_drawdown"] == round(float(-dd_full.min()), 2) == s["max_drawdown_per_bar"]
        import pandas as pd

        days_idx = pd.DatetimeIndex(t).tz_localize("UTC").tz_convert("America/New_York").strftime("%Y-%m-%d")
        last_of_day = pd.Series(y, index=days_idx).groupby(level=0).last()
        assert {d: f"{v:.2f}" for d, v in last_of_day.items()} == dict(
            q(j, "SELECT day, equity FROM equity WHERE run_id = ?", (run_id,)))
        # zoomed: the range alone, at full detail when it is small
        lo, hi = t[400] / 1e9, t[700] / 1e9
        z = get("/api/run/0/equity", params={"points": 1000, "lo": lo, "hi": hi}).json()
        assert z["points"] == 301 + 2 and z["t"][1] == lo and z["t"][-2] == hi
        # bad input: one line, HTTP 400 / 404
        r = get("/api/run/0/decisions", params={"day": "yesterday"})
        assert r.status_code == 400 and r.json()["error"] == "day 'yesterday' is not a date (YYYY-MM-DD)"
        assert get("/api/run/0/chain/nope").status_code == 400
        assert get("/api/run/7/summary").status_code == 404
        assert get("/api/live/0/state").status_code == 404
        # read-only: no action without a token
        r = requests.post(url + "/api/live/0/kill", timeout=10)
        assert r.status_code == 403
        assert get("/").status_code == 200 and get("/static/uPlot.iife.min.js").status_code == 200
    # the same run named by its journal URL: every run of the journal, the bar curve found through output_dir
    from strikebench.dashboard.app import open_sources

    (src,) = open_sources([f"sqlite:///{j}"])
    try:
        assert src.run_id == run_id and src.summary()["realized_pnl"] == s["realized_pnl"]
        assert src.equity(points=100)["max_drawdown"] == s["max_drawdown_per_bar"]
    finally:
        src.close()


def test_live_reads_only_what_changed(paper_done, tmp_path):
    """After the first view, a poll with nothing new reads no row; one new log line reads one row; a new fill reads
    that fill and its trade; the view's figures equal the journal's."""
    import shutil

    live = tmp_path / "acct"
    shutil.copytree(paper_done, live, ignore=shutil.ignore_patterns("*.pid", "KILL", "FLATTEN"))
    from strikebench.dashboard.sources import open_source
    from strikebench.live.runtime import LiveState

    src = open_source(str(live))
    try:
        assert src.kind == "live"
        src.poll()
        v = src.view()
        j, rid = live / "journal.sqlite", src.run_id
        f = journal_figures(j, rid)
        assert round(v["cash"] * 100) == f["cash"] and round(v["realized_pnl"] * 100) == f["realized"]
        assert v["equity"] == float(q(j, "SELECT equity FROM equity WHERE run_id = ? AND day = ?", (rid, DAY))[0][0])
        assert [o["trade_id"] for o in v["open"]] == [r[0] for r in q(
            j, "SELECT trade_id FROM trades WHERE run_id = ? AND closed_at IS NULL", (rid,))]
        pos = v["open"][0]
        g = pos["greeks"]
        # a short put vertical: long delta, earns theta, short vega; dollar delta is delta x spot
        assert g["delta_shares"] > 0 and g["theta_dollars"] > 0 and g["vega_dollars"] < 0
        assert g["delta_dollars"] == round(g["delta_shares"] * v["spot"], 2) or \
            abs(g["delta_dollars"] - g["delta_shares"] * v["spot"]) < 0.01 * v["spot"]
        entry = q(j, "SELECT entry_price, contracts, multiplier FROM trades WHERE trade_id = ?", (pos["trade_id"],))[0]
        marks = sum(leg["ratio"] * leg["mark"] for leg in pos["legs"])
        assert round(pos["unrealized"] * 100) == round((marks - float(entry[0])) * entry[1] * entry[2] * 100)
        assert v["risk"]["limits"][0] == {"limit": "daily loss cap", "used": max(0.0, -v["today_pnl"]), "of": 1000.0}
        assert [d["decision_id"] for d in v["decisions"]] == [r[0] for r in q(
            j, "SELECT decision_id FROM trade_decisions WHERE run_id = ? ORDER BY rowid", (rid,))]

        before = src.rows_read
        assert src.poll() is False and src.rows_read == before  # nothing new: nothing read
        st = LiveState(j, rid)
        st.log("2023-03-13T16:00:00-04:00", "note", "one more line")
        st.close()
        assert src.poll() is True
        assert src.rows_read == before + 1 and src.view()["log"][-1]["message"] == "one more line"
        # a fill closing the open trade (as the journal writes it): the fill and that trade are read, nothing else
        con = sqlite3.connect(j)
        with con:
            con.execute("INSERT INTO fills(fill_id, run_id, order_id, trade_id, kind, opens, filled_at, price, quantity,"
                        " multiplier, fees, cash, leg_prices) VALUES ('X-F1', ?, NULL, ?, 'fill', 0, ?, '0.50', 1, 100,"
                        " '2.56', '-52.56', '[]')", (rid, pos["trade_id"], "2023-03-14T10:00:00-04:00"))
            con.execute("UPDATE trades SET closed_at = ?, realized_pnl = '123.45' WHERE trade_id = ?",
                        ("2023-03-14T10:00:00-04:00", pos["trade_id"]))
        con.close()
        before = src.rows_read
        assert src.poll() is True
        assert src.rows_read == before + 2
        v2 = src.view()
        assert round(v2["cash"] * 100) == f["cash"] - 5256
        assert round(v2["realized_pnl"] * 100) == f["realized"] + 12345 and v2["open"] == []
    finally:
        src.close()


def test_live_stream_pushes_a_change(paper_done, tmp_path):
    """The event stream sends the view at once, then again within 2 s of a commit by another process's writer."""
    import shutil

    live = tmp_path / "acct"
    shutil.copytree(paper_done, live, ignore=shutil.ignore_patterns("*.pid", "KILL", "FLATTEN"))
    from strikebench.live.runtime import LiveState

    with dashboard([live], token="s3cret") as (url, sources):
        r = requests.get(url + "/api/live/0/stream", stream=True, timeout=10)
        events = r.iter_lines(decode_unicode=True)

        def next_state():
            for line in events:
                if line.startswith("data: "):
                    return json.loads(line[6:])
            raise AssertionError("stream ended")

        first = next_state()
        st = LiveState(live / "journal.sqlite", sources[0].run_id)
        t0 = time.monotonic()
        st.log("2023-03-13T16:00:00-04:00", "note", "streamed")
        st.close()
        second = next_state()
        assert time.monotonic() - t0 < 2.0
        assert second["version"] > first["version"] and second["log"][-1]["message"] == "streamed"
        r.close()
        # flatten: refused without the right token; with it, the CLI's request_flatten (FLATTEN + KILL) and a
        # journaled line saying who
        assert requests.post(url + "/api/live/0/flatten", timeout=10).status_code == 401
        assert requests.post(url + "/api/live/0/flatten", headers={"Authorization": "Bearer nope"},
                             timeout=10).status_code == 401
        assert not (live / "FLATTEN").exists()
        ok = requests.post(url + "/api/live/0/flatten", headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["by"] == "tester@test"
        assert (live / "FLATTEN").exists() and (live / "KILL").read_text().strip() == "flatten requested"
        (kind, msg), = q(live / "journal.sqlite", "SELECT kind, message FROM live_log ORDER BY log_id DESC LIMIT 1")
        assert kind == "dashboard" and msg.startswith("flatten requested from the dashboard by tester@test from 127.0.0.1")
        view = requests.get(url + "/api/live/0/state", timeout=10).json()
        assert view["risk"]["flatten_requested"] is True and view["risk"]["kill_switch"] == "flatten requested"


# ------------------------------------------------------------------ the command line
def test_bad_arguments_are_one_line(tmp_path, capsys, run_dir):
    from strikebench.cli import main

    notjournal = tmp_path / "x.sqlite"
    notjournal.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(tmp_path / "missing")], "no such run folder, account, sweep folder or journal"),
        ([str(empty)], "not a run folder, an account or a sweep folder"),
        ([str(notjournal)], "not a journal (not an SQLite database)"),
        ([str(run_dir), "--token-env", "SB_DASH_TOKEN_UNSET"], "--token-env SB_DASH_TOKEN_UNSET: the environment"),
    ]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cases.append(([str(run_dir), "--port", str(busy.getsockname()[1])],
                  f"port {busy.getsockname()[1]} on 127.0.0.1 is in use"))
    try:
        for args, words in cases:
            assert main(["dashboard", *args]) == 2, args
            err = capsys.readouterr().err.strip()
            assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    finally:
        busy.close()


def test_sweep_folder(tmp_path):
    """A sweep folder as `strikebench sweep` writes it (trials.csv, sweep.json, an Optuna SQLite study): the trials,
    the Pareto front computed here by hand, and importances from the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tmp_path / "s-sweep"
    folder.mkdir()
    storage = f"sqlite:///{folder / 'study.sqlite3'}"
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    pts = {0: (1.0, 5.0, 10, 0.1), 1: (2.0, 6.0, 20, 0.2), 2: (0.5, 1.0, 30, 0.3), 3: (1.5, 7.0, 40, 0.1),
           4: (2.0, 9.0, 50, 0.2), 5: (0.2, 0.5, 60, 0.3)}
    dists = {"width": optuna.distributions.IntDistribution(10, 60),
             "delta": optuna.distributions.FloatDistribution(0.1, 0.3)}
    lines = ["trial,state,width,delta,return_pct,max_drawdown,final_equity,trades,seconds,error"]
    for i, (a, b, w, d) in pts.items():
        study.add_trial(optuna.trial.create_trial(params={"width": w, "delta": d}, distributions=dists, values=[a, b]))
        lines.append(f"{i},complete,{w},{d},{a},{b},{100000 + a * 1000},{i},1.000,")
    lines.append("6,fail,25,0.2,,,,,0.500,error: boom")
    (folder / "trials.csv").write_text("\n".join(lines) + "\n")
    (folder / "sweep.json").write_text(json.dumps({
        "study": "s", "storage": storage, "sampler": "nsga2", "budget": 7, "complete": 6, "failed": 1,
        "objectives": [{"name": "return_pct", "direction": "maximize"}, {"name": "max_drawdown",
                                                                          "direction": "minimize"}], "best": []}))
    # the front by hand: a trial is on it unless another has >= return and <= drawdown, one strictly
    front = sorted(i for i, (a, b, *_) in pts.items()
                   if not any(a2 >= a and b2 <= b and (a2 > a or b2 < b) for k, (a2, b2, *_) in pts.items() if k != i))
    assert front == [0, 1, 2, 5]
    with dashboard([folder]) as (url, _):
        v = requests.get(url + "/api/sweep/0", timeout=60).json()
        imp = requests.get(url + "/api/sweep/0/importance", timeout=60).json()["objectives"]
    assert v["pareto"] == front
    assert [t["trial"] for t in v["trials"]] == list(range(7)) and v["trials"][6]["error"] == "error: boom"
    assert v["params"] == ["width", "delta"]
    assert set(imp) == {"return_pct", "max_drawdown"} and set(imp["return_pct"]) == {"width", "delta"}
    assert abs(sum(imp["max_drawdown"].values()) - 1.0) < 0.01


def test_every_asset_is_package_data():
    """A non-editable install carries the page: every file under static/ matches setup.cfg's package_data."""
    import configparser
    import fnmatch

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["strikebench.dashboard"].split(",")]
    static = Path(__file__).resolve().parents[1] / "framework" / "dashboard" / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.iterdir()]
    assert {"static/index.html", "static/app.js", "static/uPlot.iife.min.js", "static/uPlot.LICENSE"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
    assert "strikebench.dashboard" in cfg["options"]["packages"].split()
