"""Starting the dashboard: check every argument and the port first (one line each), then serve with uvicorn."""

from __future__ import annotations

import errno
import os
import socket

from strikebench.dashboard.sources import DashboardError

__all__ = ["serve", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a port in use or an address that is not here is one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise DashboardError(f"--host {host}: not an address of this machine") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {host} is in use (another program listens there); "
                                 f"choose another with --port, or --port 0 for any free one") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise DashboardError(f"port {port} on {host}: permission denied (ports below 1024 need privileges)") \
                from None
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def serve(args: list[str], *, host: str = "127.0.0.1", port: int = 8050, token_env: str | None = None,
          say=print) -> None:
    try:
        import uvicorn

        from strikebench.dashboard.app import create_app, open_sources
    except ImportError as exc:
        raise DashboardError(f"the dashboard needs its extra: pip install 'strikebench[dashboard]' "
                             f"({exc.name} is missing)") from None
    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise DashboardError(f"--token-env {token_env}: the environment variable is not set or empty")
    sources = open_sources(args)
    sock = bind(host, port)
    try:
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        app = create_app(sources, token=token)
        mode = "kill and flatten enabled (token required)" if token else "read-only"
        say(f"dashboard: http://{shown}:{bound[1]}/  ({len(sources)} source(s), {mode}); Ctrl-C stops it")
        for i, s in enumerate(sources):
            say(f"  [{i}] {s.kind}: {s.label}")
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    finally:
        sock.close()
