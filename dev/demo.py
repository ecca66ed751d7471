"""``make demo`` (``python -m dev.demo``): start a local stack and watch real tasks' progress pushed to a terminal.

It starts Redis (only if none answers at the broker URL), nx-27017 as the
MongoDB of the whole app (unless one is given), a Celery worker, Celery Beat,
``pushserver serve`` and the Express app, then dispatches the example tasks the way a web backend
would, subscribes to each with its own token the way a browser would, and
draws every pushed update as it arrives. Ctrl-C stops what it started, and
nothing else.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import socketio
from celery import Celery
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from dev.stack import (
    BIN,
    ROOT,
    Proc,
    free_port,
    http_status,
    redis_ping,
    start_mongo,
    start_pushserver,
    start_redis,
    start_worker,
    wait_until,
)
from pushserver.auth import mint_token
from pushserver.config import DEFAULT_BACKEND, DEFAULT_BROKER, ConfigError, check_redis_tls, check_url, redact_url
from pushserver.state import READY_STATES

STATE_STYLE = {
    "SUCCESS": "bold green",
    "FAILURE": "bold red",
    "REVOKED": "red",
    "RETRY": "yellow",
    "PROGRESS": "cyan",
    "STARTED": "cyan",
    "RECEIVED": "blue",
    "SENT": "blue",
    "PENDING": "dim",
}


@dataclass
class DemoTask:
    """One task the demo dispatches: a label, the Celery task name and its arguments."""

    label: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


ROUND = [
    DemoTask(
        "resize & watermark an image", "workers.tasks.resize_and_watermark", kwargs={"width": 480, "steps_delay": 0.4}
    ),
    DemoTask(
        "send a welcome email", "workers.tasks.send_welcome_email", ("demo-user-ada",), {"email": "ada@example.com"}
    ),
    DemoTask("ML inference (iris)", "workers.tasks.predict", ([5.1, 3.5, 1.4, 0.2],)),
    DemoTask("a 10-step report", "workers.tasks.demo_progress", (10, 0.3)),
    DemoTask("a flaky task (retries once)", "workers.tasks.flaky", (1, 1.0)),
    DemoTask("a task that fails", "workers.tasks.fail", ("card declined",)),
]


class Demo:
    """The demo stack and its terminal client."""

    def __init__(
        self,
        broker: str,
        backend: str,
        port: int,
        web_port: int = 3000,
        mongo_url: str | None = None,
        console: Console | None = None,
    ) -> None:
        self.broker = broker
        self.backend = backend
        self.port = port
        self.web_port = web_port
        self.mongo_url = mongo_url
        self.web_url: str | None = None
        self.console = console or Console()
        self.secret = secrets.token_hex(32)
        self.log_dir = Path(tempfile.mkdtemp(prefix="pushserver-demo-"))
        self.procs: list[Proc] = []
        self.url = f"http://127.0.0.1:{port}"

    # -- the stack -----------------------------------------------------------

    def start(self) -> None:
        """Start Redis if needed, a worker and the server; wait until the server is ready."""
        say = self.console.print
        parts = urlsplit(self.broker)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        if redis_answers(self.broker):
            say(
                f"[dim]using the Redis already running at {host}:{port}"
                f"{' (TLS)' if parts.scheme == 'rediss' else ''}[/]"
            )
        elif parts.scheme == "redis" and host in ("127.0.0.1", "localhost"):
            redis, _ = start_redis(self.log_dir, port=port)
            self.procs.append(redis)
            say(f"started redis-server on {host}:{port} [dim](pid {redis.pid})[/]")
        else:
            raise RuntimeError(f"no Redis answers at {host}:{port} (from the broker URL {redact_url(self.broker)})")
        if self.mongo_url:
            say(f"[dim]using the MongoDB at {redact_url(self.mongo_url)}[/]")
        else:
            mongo, self.mongo_url = start_mongo(self.log_dir)
            self.procs.append(mongo)
            say(f"started nx-27017 (MongoDB wire protocol) at {self.mongo_url} [dim](pid {mongo.pid})[/]")
        # One MongoDB, one database each: Express's users and task records in 'app', the
        # workers' reports and archive in 'workers', pushserver's event log in 'pushserver'.
        _add_demo_user(self.mongo_url)
        # The page's webhook demo posts to the local Express app's sink, on loopback,
        # which the webhook task refuses unless the network is allowed explicitly.
        worker = start_worker(
            "demo-worker",
            self.broker,
            self.backend,
            self.log_dir,
            concurrency=4,
            log_level="warning",
            extra_env={"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128", "MONGO_URL": self.mongo_url},
        )
        self.procs.append(worker)
        say(f"started a Celery worker [dim](pid {worker.pid}, events on: -E)[/]")
        beat = Proc(
            "beat",
            [str(BIN / "celery"), "-A", "workers", "beat", "-l", "warning", "-s", str(self.log_dir / "beat-schedule")],
            self.log_dir,
            env={
                "CELERY_BROKER_URL": self.broker,
                "CELERY_RESULT_BACKEND": self.backend,
                "NIGHTLY_REPORT_EVERY": "300",
            },
        )
        self.procs.append(beat)
        say(f"started Celery Beat [dim](pid {beat.pid}; the nightly report runs every 5 minutes here)[/]")
        self.port = _port_or_free(self.port, say, "pushserver")
        self.web_port = _port_or_free(self.web_port, say, "the web app")
        web_origins = f"http://127.0.0.1:{self.web_port},http://localhost:{self.web_port}"
        server, self.url = start_pushserver(
            "pushserver",
            self.broker,
            self.backend,
            self.log_dir,
            secret=self.secret,
            port=self.port,
            log_level="INFO",
            extra=["--mongo", self.mongo_url, "--cors", web_origins],
            ready=30,
        )
        self.procs.append(server)
        say(f"started pushserver at [bold]{self.url}[/] [dim](pid {server.pid})[/]")
        self._start_web(say)
        say(f"[dim]logs in {self.log_dir}[/]")

    def _start_web(self, say: Any) -> None:
        """The Express app serving the React client, when Node and the built client are there."""
        server_js = ROOT / "examples" / "express-dispatch" / "src" / "server.js"
        built = ROOT / "examples" / "react-client" / "dist" / "index.html"
        node = shutil.which("node")
        if not (node and server_js.exists() and built.exists() and (server_js.parents[1] / "node_modules").exists()):
            say("[yellow]web app skipped[/]: run `make demo` (it installs the Node examples) to get the React page")
            return
        web = Proc(
            "express",
            [node, str(server_js)],
            self.log_dir,
            cwd=server_js.parents[1],
            env={
                "HOST": "127.0.0.1",
                "PORT": str(self.web_port),
                "PUSHSERVER_SECRET": self.secret,
                "PUSHSERVER_PUBLIC_URL": self.url,
                "CELERY_BROKER_URL": self.broker,
                "CELERY_RESULT_BACKEND": self.backend,
                "MONGO_URL": self.mongo_url or "",
            },
        )
        self.procs.append(web)
        self.web_url = web_url = f"http://127.0.0.1:{self.web_port}"
        wait_until(lambda: http_status(web_url + "/healthz") == 200 or not web.alive(), 30, "the Express app")
        if not web.alive():
            raise RuntimeError(f"the Express app exited:\n{web.log()}")
        say(f"started the Express app serving the React page [dim](pid {web.pid})[/]")

    def stop(self) -> None:
        """Stop every process the demo started, newest first."""
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    # -- the terminal client --------------------------------------------------

    async def run_round(self, timeout: float = 60.0) -> dict[str, str]:
        """Dispatch one round of tasks and draw their pushed updates; return each task's final state."""
        app = Celery("demo-client", broker=self.broker, backend=self.backend, set_as_current=False)
        app.conf.task_send_sent_event = True
        client = socketio.AsyncClient()
        finals: dict[str, str] = {}
        done = asyncio.Event()
        rows: dict[str, TaskID] = {}
        progress = Progress(
            TextColumn("{task.description:<30}"),
            BarColumn(bar_width=28),
            TextColumn("{task.percentage:>5.0f}%"),
            TextColumn("{task.fields[state]}"),
            TextColumn("[dim]{task.fields[detail]}[/]"),
            console=self.console,
        )

        def show(update: dict[str, Any]) -> None:
            row = rows.get(update["task_id"])
            if row is None:
                return
            state = update["state"]
            info = update.get("progress") or {}
            detail = info.get("message") or ""
            if state == "SUCCESS":
                detail = f"result: {update.get('result')}"
            elif state in ("FAILURE", "RETRY"):
                detail = f"error: {update.get('exception')}"
            completed = info.get("percent") or 0
            if state in READY_STATES:
                completed = 100 if state == "SUCCESS" else completed
                finals[update["task_id"]] = state
            progress.update(
                row, completed=completed, detail=detail[:60], state=f"[{STATE_STYLE.get(state, '')}]{state}[/]"
            )
            if len(finals) == len(rows):
                done.set()

        client.on("task:update", show)
        await client.connect(self.url, transports=["websocket"])
        started = time.monotonic()
        try:
            with progress:
                for item in ROUND:
                    result = app.send_task(item.name, args=item.args, kwargs=item.kwargs or {})
                    rows[result.id] = progress.add_task(item.label, total=100, state="SENT", detail="")
                    # Each task gets its own short-lived token, as Express mints them.
                    ack = await client.call(
                        "subscribe", {"task_id": result.id, "token": mint_token(self.secret, [result.id])}
                    )
                    for snapshot in ack.get("tasks", []):
                        show(snapshot)
                try:
                    await asyncio.wait_for(done.wait(), timeout)
                except asyncio.TimeoutError:
                    waiting = [progress.tasks[row].description for tid, row in rows.items() if tid not in finals]
                    self.console.print(
                        f"[red]still unfinished after {timeout:.0f}s:[/] {', '.join(waiting)}"
                        f" (see the logs in {self.log_dir})"
                    )
        finally:
            await client.disconnect()
            app.close()
        ok = sum(state == "SUCCESS" for state in finals.values())
        self.console.print(
            f"{len(finals)} tasks finished in {time.monotonic() - started:.1f}s "
            f"({ok} succeeded), every update pushed — no polling."
        )
        return finals


DEMO_USER = {"_id": "demo-user-ada", "username": "ada", "username_lower": "ada"}


def _add_demo_user(mongo_url: str) -> None:
    """The user the terminal round's welcome email is for, as Express stores one (without a password: no sign-in)."""
    from pymongo import MongoClient
    from pymongo.errors import DuplicateKeyError

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client["app"]["users"].insert_one(dict(DEMO_USER))
    except DuplicateKeyError:
        pass  # a MongoDB given with --mongo may have it from an earlier run
    finally:
        client.close()


def redis_answers(url: str) -> bool:
    """Tell whether the Redis of a redis:// or rediss:// URL answers PING (TLS, certificates and password as the
    URL says)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _port_or_free(port: int, say: Any, what: str) -> int:
    """``port`` if nothing listens there, else a free one (said out loud)."""
    if http_status(f"http://127.0.0.1:{port}/") is None and not redis_ping(port):
        return port
    other = free_port()
    say(f"[yellow]port {port} is taken[/]: {what} uses {other} instead")
    return other


def run_demo(
    broker: str, backend: str, port: int, once: bool, web_port: int = 3000, mongo_url: str | None = None
) -> int:
    """Run the demo until Ctrl-C (or after one round with ``once``); return the exit code."""
    demo = Demo(broker, backend, port, web_port, mongo_url)
    try:
        demo.start()
        if demo.web_url:
            demo.console.print(f"\n[bold green]Open {demo.web_url}[/] and click a use case to watch it live.")
        demo.console.print("\n[bold]Dispatching tasks; updates are pushed over Socket.IO:[/]")
        finals = asyncio.run(demo.run_round())
        if once:
            return 0 if len(finals) == len(ROUND) else 1
        demo.console.print(
            f"\nThe stack keeps running: pushserver at {demo.url} (try {demo.url}/metrics)"
            + (f", the web page at {demo.web_url}" if demo.web_url else "")
            + ".\n"
            "Press Enter for another round, Ctrl-C to stop everything the demo started."
        )
        while True:
            if os.isatty(0):
                input()
                asyncio.run(demo.run_round())
            else:
                time.sleep(3600)
    except KeyboardInterrupt:
        demo.console.print("\nstopping…")
        return 0
    finally:
        demo.stop()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--broker",
    envvar=["PUSHSERVER_BROKER_URL", "CELERY_BROKER_URL"],
    default=DEFAULT_BROKER,
    show_default=True,
    show_envvar=True,
    metavar="URL",
    help="Celery broker (Redis); started here when nothing answers at a loopback address.",
)
@click.option(
    "--backend",
    envvar=["PUSHSERVER_RESULT_BACKEND", "CELERY_RESULT_BACKEND"],
    default=DEFAULT_BACKEND,
    show_default=True,
    show_envvar=True,
    metavar="URL",
    help="Celery result backend (Redis).",
)
@click.option(
    "--port",
    envvar="PUSHSERVER_PORT",
    default=8000,
    show_default=True,
    show_envvar=True,
    type=int,
    help="Port for the demo's pushserver.",
)
@click.option(
    "--web-port",
    envvar="DEMO_WEB_PORT",
    default=3000,
    show_default=True,
    show_envvar=True,
    type=int,
    help="Port for the Express app serving the React page.",
)
@click.option(
    "--mongo",
    envvar="PUSHSERVER_MONGO_URL",
    show_envvar=True,
    metavar="URL",
    help="MongoDB for the event log, Express and the workers; unset: the demo starts nx-27017.",
)
@click.option("--once", is_flag=True, help="Run one round of tasks, then stop everything and exit.")
def main(broker: str, backend: str, port: int, web_port: int, mongo: str | None, once: bool) -> None:
    """Start the whole stack locally and watch tasks pushed live.

    Redis (if none answers at the broker URL), nx-27017 as the MongoDB of
    all of them (unless --mongo), a Celery worker, Celery Beat, pushserver, and the Express app
    serving the React page; then a round of tasks drawn in the terminal.
    Ctrl-C stops everything it started and nothing else.
    """
    for flag, url in (("--broker", broker), ("--backend", backend)):
        try:
            check_url(flag, url, {"redis", "rediss"})
            check_redis_tls(flag, url)
        except ConfigError as exc:
            _fail(f"{exc} (the demo runs on Redis, with or without TLS)")
    try:
        sys.exit(run_demo(broker, backend, port, once, web_port, mongo or None))
    except RuntimeError as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    """One clear line on stderr, exit code 2 (as ``pushserver`` does for a configuration error)."""
    click.echo(f"demo: error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
