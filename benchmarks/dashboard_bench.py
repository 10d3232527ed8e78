"""How fast `strikebench dashboard` shows a year run.

    python benchmarks/dashboard_bench.py [RUN_DIR ...]

Without RUN_DIR it first backtests the README's main job for a year into a temporary folder (a minute or two).
For each run it starts the real server (uvicorn on 127.0.0.1, port 0, in this process) and reports:

* ``warm``: seconds from the server's start until it has read the run's curve, summary and trades;
* ``api``: the requests the run page makes, as a browser issues them (page + assets, then the summary, trades,
  days, decimated equity and the first day's decisions in parallel), cold (before warming) and warm;
* ``zoom``: one zoom request (a tenth of the year at full detail);
* ``browser``: with Debian's chromium present, navigation start until the frame after the equity and drawdown
  charts, the summary cards, the trades table and the first day's decisions are drawn, by the page's own clock
  (``performance.now()``; Playwright drives it; median of 5 loads).

The figures go to docs/performance.md ("Dashboard").
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests


@contextlib.contextmanager
def server(run_dir: str, *, warm: bool = True):
    import uvicorn

    from strikebench.dashboard.app import create_app, open_sources
    from strikebench.dashboard.server import bind

    t0 = time.perf_counter()
    sources = open_sources([run_dir])
    app = create_app(sources)
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.005)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield url, app, t0
    finally:
        srv.should_exit = True
        th.join(10)
        sock.close()


def page_load(url: str, day: str | None) -> float:
    """The run page's requests in the order and concurrency a browser uses; seconds until the last answer."""
    s = requests.Session()
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(6) as ex:
        list(ex.map(lambda p: s.get(url + p).raise_for_status(),
                    ["/", "/static/app.js", "/static/app.css", "/static/uPlot.iife.min.js", "/static/uPlot.min.css",
                     "/api/sources"]))
        paths = ["/api/run/0/summary", "/api/run/0/trades", "/api/run/0/days", "/api/run/0/equity?points=1400"]
        if day:
            paths.append(f"/api/run/0/decisions?day={day}")
        list(ex.map(lambda p: s.get(url + p).raise_for_status(), paths))
    return time.perf_counter() - t


def browser_load(url: str, n: int = 5) -> list[float] | None:
    if not Path("/usr/bin/chromium").exists():
        return None
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    out = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args, headless=True)
        try:
            for _ in range(n):
                page = b.new_page(viewport={"width": 1400, "height": 1000})
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                server_cpu = time.process_time()
                page.goto(url + "/#/s/0")
                page.wait_for_selector("#eq-chart canvas")
                page.wait_for_selector("#dd-chart canvas")
                page.wait_for_selector("#summary .card")
                page.wait_for_selector("table.trades tbody tr")
                page.wait_for_selector("table.decisions tbody tr")
                page.wait_for_function("document.body.dataset.ready")
                # the page's own clock: navigation start to the frame after the last of them was drawn
                ready = int(page.evaluate("document.body.dataset.ready")) / 1000.0
                server_cpu = time.process_time() - server_cpu  # this process: the server (and Playwright's client)
                metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                # the renderer's main-thread busy time (script, style, layout, paint): what a quiet machine waits for
                out.append((ready, metrics.get("TaskDuration", float("nan")), server_cpu))
                page.close()
        finally:
            b.close()
    return out


def measure(run_dir: str) -> dict:
    res: dict = {"run": run_dir}
    with server(run_dir) as (url, app, t0):
        first = requests.get(url + "/api/run/0/days").json()["days"]
        day = first[0]["day"] if first else None
        res["cold_api_s"] = page_load(url, day)  # races the warm-up: what a user opening the page at once sees
        app.state.warm_done.wait(300)
        res["warm_s"] = time.perf_counter() - t0
        res["api_s"] = statistics.median(page_load(url, day) for _ in range(5))
        eq = requests.get(url + "/api/run/0/equity?points=1400").json()
        res["points_total"], res["points_sent"] = eq["points_total"], eq["points"]
        res["decisions"] = sum(d["decisions"] for d in first)
        res["trades"] = len(requests.get(url + "/api/run/0/trades").json()["trades"])
        lo, hi = eq["t"][0], eq["t"][0] + (eq["t"][-1] - eq["t"][0]) / 10
        t = time.perf_counter()
        z = requests.get(url + f"/api/run/0/equity?points=1400&lo={lo}&hi={hi}").json()
        res["zoom_s"], res["zoom_points"] = time.perf_counter() - t, z["points"]
        b = browser_load(url)
        if b is not None:
            res["browser_s_median"] = statistics.median(x[0] for x in b)
            res["browser_s_max"] = max(x[0] for x in b)
            res["renderer_cpu_s"] = statistics.median(x[1] for x in b)
            res["server_cpu_s"] = statistics.median(x[2] for x in b)
    return res


def main(argv: list[str]) -> int:
    runs = argv
    if not runs:
        tmp = tempfile.mkdtemp(prefix="dash-bench-")
        print(f"backtesting a year of the main job into {tmp} ...", flush=True)
        subprocess.run([str(Path(sys.executable).with_name("strikebench")), "backtest",
                        str(Path(__file__).resolve().parents[1] / "configs" / "spx_credit_vertical.yaml"), "--quiet",
                        "--set", f"output.dir={tmp}"], check=True, stdout=subprocess.DEVNULL)
        runs = [str(next(Path(tmp).iterdir()))]
    for r in runs:
        m = measure(r)
        print(f"{m['run']}")
        print(f"  {m['points_total']:,} equity points (sent {m['points_sent']:,}), {m['decisions']:,} decisions, "
              f"{m['trades']:,} trades")
        print(f"  server warm after {m['warm_s']:.2f} s; page's requests: cold {m['cold_api_s']:.3f} s, "
              f"warm {m['api_s']:.3f} s (median of 5); zoom to a tenth {m['zoom_s']:.3f} s ({m['zoom_points']:,} points)")
        if "browser_s_median" in m:
            print(f"  Chromium: page drawn (charts, cards, trades, decisions) in {m['browser_s_median']:.3f} s "
                  f"median, {m['browser_s_max']:.3f} s worst of 5; CPU per load: renderer main thread "
                  f"{m['renderer_cpu_s']:.3f} s + server {m['server_cpu_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
