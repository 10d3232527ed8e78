"""The dashboard's web application (FastAPI): a JSON API over :mod:`strikebench.dashboard.sources` and the page.

Read-only unless the server was started with a token: then ``POST /api/live/{id}/kill`` and ``.../flatten``
exist, each needing ``Authorization: Bearer <token>``, each going through the CLI's own
:func:`strikebench.live.launch.request_kill` / :func:`request_flatten` and journaled (who, from where, when) in the
account's live log. The page and its assets ship inside the package (``static/``): nothing is fetched from a CDN.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import hmac
import json
import socket
import threading
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from strikebench.dashboard.sources import DashboardError, LiveSource, RunSource, SweepSource

__all__ = ["create_app", "STATIC_DIR"]

STATIC_DIR = Path(str(resources.files("strikebench.dashboard") / "static"))
POLL_SECONDS = 0.25  # how often live journals are checked for a writer's commit (PRAGMA data_version: cheap)


class _Poller(threading.Thread):
    """Polls every live source: reads only what changed (see LiveSource.poll)."""

    def __init__(self, sources):
        super().__init__(name="dashboard-poller", daemon=True)
        self.sources = [s for s in sources if isinstance(s, LiveSource)]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for s in self.sources:
                try:
                    s.poll()
                except Exception:  # noqa: BLE001 - one bad poll is retried; the page shows the last good view
                    pass
            self.stop.wait(POLL_SECONDS)


def create_app(sources: list, *, token: str | None = None, actor: str | None = None) -> FastAPI:
    """The application over opened sources (:func:`strikebench.dashboard.sources.open_source`)."""
    poller = _Poller(sources)
    for s in poller.sources:
        s.poll()  # the first view is there before the first request

    def warm():
        for s in sources:
            if hasattr(s, "warm"):
                try:
                    s.warm()
                except Exception:  # noqa: BLE001 - the request that needs it reports the problem
                    pass
        app.state.warm_done.set()

    async def lifespan(app):
        poller.start()
        threading.Thread(target=warm, name="dashboard-warm", daemon=True).start()
        try:
            yield
        finally:
            poller.stop.set()
            poller.join(timeout=2)
            for s in sources:
                s.close()

    app = FastAPI(title="strikebench dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.sources = sources
    app.state.warm_done = threading.Event()  # set once every run's curve, summary and trades are read
    app.state.poller = poller
    who = actor or _actor()

    def source(sid: int, kind: str | None = None):
        if not 0 <= sid < len(sources):
            raise HTTPException(404, f"no source {sid}")
        s = sources[sid]
        if kind is not None and s.kind != kind:
            raise HTTPException(404, f"source {sid} is a {s.kind}, not a {kind}")
        return s

    def guard(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DashboardError as exc:
            raise HTTPException(400, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - StrikebenchError and friends: one line to the page
            from strikebench.errors import StrikebenchError

            if isinstance(exc, StrikebenchError):
                raise HTTPException(400, str(exc)) from None
            raise

    def sources_view() -> dict:
        return {"sources": [dict(s.describe(), id=i) for i, s in enumerate(sources)], "actions": token is not None}

    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    @app.get("/")
    def index():
        data = json.dumps(sources_view(), default=str).replace("<", "\\u003c")
        return Response(page.replace("<!--SOURCES-->", f"<script>window.SB_SOURCES = {data};</script>"),
                        media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico")
    def favicon():
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/sources")
    def list_sources():
        return sources_view()

    # ------------------------------------------------------------ backtest run
    # big answers are encoded once with json.dumps (FastAPI's per-field encoder is ~10x slower on 100 kB)
    encoded: dict = {}

    def cached(key, make):
        if key not in encoded:
            encoded[key] = _encode(make())
        return Response(encoded[key], media_type="application/json")

    @app.get("/api/run/{sid}/summary")
    def run_summary(sid: int):
        s = source(sid, "run")
        return cached(("summary", sid), lambda: guard(s.summary))

    @app.get("/api/run/{sid}/equity")
    def run_equity(sid: int, points: int = 1500, lo: float | None = None, hi: float | None = None):
        return Response(_encode(guard(source(sid, "run").equity, points=points, lo=lo, hi=hi)),
                        media_type="application/json")

    @app.get("/api/run/{sid}/trades")
    def run_trades(sid: int):
        s = source(sid, "run")
        return cached(("trades", sid), lambda: {"trades": guard(s.trades)})

    @app.get("/api/run/{sid}/days")
    def run_days(sid: int):
        s = source(sid, "run")
        return cached(("days", sid), lambda: {"days": guard(s.days)})

    @app.get("/api/run/{sid}/decisions")
    def run_decisions(sid: int, day: str):
        return Response(_encode({"day": day, "decisions": guard(source(sid, "run").decisions, day)}),
                        media_type="application/json")

    @app.get("/api/{kind}/{sid}/chain/{decision_id}")
    def chain(kind: str, sid: int, decision_id: str, expiry: str | None = None):
        if kind not in ("run", "live"):
            raise HTTPException(404, "no such page")
        return guard(source(sid, kind).chain, decision_id, expiry)

    # ------------------------------------------------------------ live account
    @app.get("/api/live/{sid}/state")
    def live_state(sid: int):
        return source(sid, "live").view()

    @app.get("/api/live/{sid}/stream")
    async def live_stream(sid: int, request: Request):
        s = source(sid, "live")

        async def events():
            seen = None
            yield "retry: 1000\n\n"
            while True:
                if await request.is_disconnected():
                    return
                if s.version != seen:
                    seen = s.version
                    view = await asyncio.to_thread(s.view)
                    yield f"event: state\ndata: {json.dumps(view, default=str)}\n\n"
                else:
                    yield ": keep-alive\n\n" if _tick() else ""
                await asyncio.sleep(0.2)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _authorized(request: Request) -> None:
        if token is None:
            raise HTTPException(403, "read-only dashboard: start it with --token-env VAR to allow kill and flatten")
        got = request.headers.get("authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), token.encode()):
            raise HTTPException(401, "wrong or missing token")

    def _folder(s: LiveSource) -> Path:
        if s.folder is None:  # a run of a journal URL: its switch files live in its folder, on another machine
            raise HTTPException(409, f"the run's folder is not on this machine: kill or flatten it where it runs "
                                     f"(strikebench kill/flatten FOLDER)")
        return s.folder

    def _journal_action(s: LiveSource, kind: str, message: str) -> None:
        from strikebench.live.runtime import LiveState

        if not s.journal_exists():
            return  # no journal yet: the KILL file itself says who and when
        st = LiveState(s.url, s.run_id)
        try:
            st.log(dt.datetime.now(dt.timezone.utc), kind, message)
        finally:
            st.close()

    @app.post("/api/live/{sid}/kill")
    async def live_kill(sid: int, request: Request):
        _authorized(request)
        s = source(sid, "live")
        body = await _json(request)
        from strikebench.live.launch import request_kill

        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        client = request.client.host if request.client else "?"
        why = str(body.get("reason") or "kill switch").strip()[:200]
        reason = f"{why} (dashboard, {who} from {client}, {when})"
        guard(request_kill, _folder(s), reason)
        _journal_action(s, "dashboard", f"kill switch tripped from the dashboard by {who} from {client} at {when}: "
                                        f"{why}")
        s.poll()
        return {"ok": True, "action": "kill", "by": who, "at": when, "reason": reason}

    @app.post("/api/live/{sid}/flatten")
    async def live_flatten(sid: int, request: Request):
        _authorized(request)
        s = source(sid, "live")
        from strikebench.live.launch import request_flatten

        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        client = request.client.host if request.client else "?"
        guard(request_flatten, _folder(s))
        _journal_action(s, "dashboard", f"flatten requested from the dashboard by {who} from {client} at {when}")
        s.poll()
        return {"ok": True, "action": "flatten", "by": who, "at": when}

    # ------------------------------------------------------------ sweep
    @app.get("/api/sweep/{sid}")
    def sweep(sid: int):
        return guard(source(sid, "sweep").view)

    @app.get("/api/sweep/{sid}/importance")
    def sweep_importance(sid: int):  # apart: loading the study takes a moment, the table shows at once
        return guard(source(sid, "sweep").importance)

    @app.exception_handler(HTTPException)
    async def _one_line(request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return app


_ticks = [0]


def _encode(obj) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False).encode()
    except ValueError:  # a NaN or infinity somewhere: JSON has none, the page shows it empty
        return json.dumps(_finite(obj), separators=(",", ":"), default=str).encode()


def _finite(obj):
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _tick() -> bool:
    """Every 50th idle loop of an event stream sends a comment (about every 10 s): proxies keep it open."""
    _ticks[0] += 1
    return _ticks[0] % 50 == 0


async def _json(request: Request) -> dict:
    try:
        body = await request.body()
        data = json.loads(body) if body else {}
    except ValueError:
        raise HTTPException(400, "the request body is not JSON") from None
    return data if isinstance(data, dict) else {}


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def open_sources(args: list[str]) -> list:
    """Each argument opened (one line and exit for the first bad one); none given: the runs, accounts and sweeps
    under the current folder (``runs/``, ``accounts/``), the newest first."""
    from strikebench.dashboard.sources import open_source

    if args:
        from strikebench.dashboard.sources import url_sources

        out, seen = [], set()
        for a in args:
            if a in seen:
                continue
            seen.add(a)
            if "://" in a:  # a journal URL: every run it holds (the newest 50); paper runs and accounts watched live
                out.extend(url_sources(a))
                continue
            out.append(open_source(a))
        return out
    found = []
    for parent in (Path("accounts"), Path("runs")):
        if parent.is_dir():
            kids = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
            for p in kids[:30]:
                try:
                    found.append(open_source(str(p)))
                except Exception:  # noqa: BLE001 - a folder that is not a run is passed over when scanning
                    continue
    if not found:
        raise DashboardError("nothing to show: name a run folder, an account, a sweep folder or a journal URL "
                             "(none found under runs/ or accounts/ here)")
    return found


__all__ += ["open_sources", "RunSource", "SweepSource"]
