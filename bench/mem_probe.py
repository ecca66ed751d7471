"""Run ``pushserver`` with memory experiments switched on, alone or under bench/connections.py.

    PUSHSERVER_PROBE=stock-queue .venv/bin/python bench/mem_probe.py connections --steps 1000 10000
    PUSHSERVER_PROBE=tracemalloc .venv/bin/python bench/mem_probe.py serve --insecure ...

``connections`` runs bench/connections.py (its arguments follow) with the
server started through this script; ``serve ...`` is ``pushserver serve ...``.
``PUSHSERVER_PROBE`` (a comma list) says what to change in the server, which
is otherwise untouched:

- ``uvloop``: run on uvloop's event loop rather than asyncio's.
- ``tracemalloc``: trace allocations (25 frames); on SIGUSR1 the server
  writes a snapshot to ``$PUSHSERVER_PROBE_DIR/snap-<n>.pickle`` (default
  /tmp), for bench/mem_report.py.
- ``arena1`` / ``arena2``: glibc malloc with at most 1 (2) arenas
  (``mallopt(M_ARENA_MAX)``, as MALLOC_ARENA_MAX).
- ``malloc-trim``: glibc ``malloc_trim(0)`` on SIGUSR2.

To measure pushserver/eioserver.py's savings one at a time:

- ``stock-queue``: engineio's ``asyncio.Queue`` as each connection's send
  queue instead of eioserver's SendQueue;
- ``keep-environ``: the connect handler does not trim the environ.

And one not in the server yet:

- ``lean-middleware``: the HTTP API's middlewares (http.py) hand /socket.io
  requests on without awaiting them, so their frames do not stay suspended
  for the life of every WebSocket.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PROBES = {p.strip() for p in os.environ.get("PUSHSERVER_PROBE", "").split(",") if p.strip()}
M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def install() -> None:
    """Apply PUSHSERVER_PROBE to this (server) process."""
    if PROBES & {"arena1", "arena2"}:
        _libc().mallopt(M_ARENA_MAX, 1 if "arena1" in PROBES else 2)
    if "tracemalloc" in PROBES:
        import tracemalloc

        tracemalloc.start(25)
        count = [0]
        directory = os.environ.get("PUSHSERVER_PROBE_DIR", "/tmp")

        def dump(*_: object) -> None:
            count[0] += 1
            tracemalloc.take_snapshot().dump(os.path.join(directory, f"snap-{count[0]}.pickle"))

        signal.signal(signal.SIGUSR1, dump)
    if "malloc-trim" in PROBES:
        signal.signal(signal.SIGUSR2, lambda *_: _libc().malloc_trim(0))
    if PROBES & {"stock-queue", "keep-environ"}:
        import asyncio

        import pushserver.sockets
        from pushserver import eioserver

        if "stock-queue" in PROBES:
            eioserver.EngineIOServer.create_queue = lambda self, *a, **k: asyncio.Queue(*a, **k)  # type: ignore[method-assign]
        if "keep-environ" in PROBES:
            pushserver.sockets.trim_environ = lambda environ: None  # type: ignore[attr-defined]
    if "lean-middleware" in PROBES:
        import pushserver.http as http

        plain_json_errors, plain_cors = http._json_errors, http.HttpApi._cors

        def json_errors(request, handler):  # type: ignore[no-untyped-def]
            if request.path.startswith("/socket.io"):
                return handler(request)  # awaited by aiohttp; no frame of ours kept
            return plain_json_errors(request, handler)

        def cors(self, request, handler):  # type: ignore[no-untyped-def]
            if request.path.startswith("/socket.io"):
                return handler(request)
            return plain_cors(self, request, handler)

        json_errors.__middleware_version__ = 1  # type: ignore[attr-defined]
        cors.__middleware_version__ = 1  # type: ignore[attr-defined]
        http._json_errors = json_errors  # type: ignore[assignment]
        http.HttpApi._cors = cors  # type: ignore[assignment]
    if "uvloop" in PROBES:
        import asyncio

        import uvloop

        import pushserver.cli

        def run(main):  # type: ignore[no-untyped-def]
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)

        class _Asyncio:  # the CLI's asyncio, with run() on uvloop
            def __getattr__(self, attr: str) -> object:
                return run if attr == "run" else getattr(asyncio, attr)

        pushserver.cli.asyncio = _Asyncio()  # type: ignore[attr-defined]


def connections() -> int:
    """bench/connections.py, its server started through this script."""
    bench = Path(__file__).resolve().parent
    sys.path.insert(0, str(bench))
    import common
    import connections as conn

    plain = common.server_command

    def server_command(args, gc_log=None):  # type: ignore[no-untyped-def]
        cmd, env, cwd = plain(args, gc_log)
        return [common.PYTHON, str(bench / "mem_probe.py"), *args], env, cwd

    common.server_command = server_command
    sys.argv = [str(bench / "connections.py"), *sys.argv[2:]]
    return conn.main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["connections"]:
        sys.exit(connections())
    install()
    from pushserver.cli import main

    sys.argv[0] = "pushserver"
    sys.exit(main())
