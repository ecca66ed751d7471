"""The ``pushserver`` command line: ``serve``, ``token`` and ``demo``."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import Any

import click

# Every flag has an environment variable (DESIGN.md): show it in --help.
click_option = functools.partial(click.option, show_envvar=True)

from .auth import mint_token
from .config import DEFAULT_BACKEND, DEFAULT_BROKER, ConfigError, Settings, check_url, split_list

EXIT_CONFIG = 2


def fail(message: str) -> None:
    """Print one clear line on stderr and exit with the configuration error code."""
    click.echo(f"pushserver: error: {message}", err=True)
    sys.exit(EXIT_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="celery-pushserver")
def main() -> None:
    """Push Celery task status to browsers over Socket.IO, instead of polling.

    Workers must run with task events on (celery worker -E). Start the server
    with `pushserver serve --secret S`; give browsers tokens from `pushserver
    token` (in development) or from your backend (in production).
    """


def broker_options(func: Any) -> Any:
    """The --broker/--backend pair shared by the commands that talk to Celery."""
    func = click_option("--backend", envvar=["PUSHSERVER_RESULT_BACKEND", "CELERY_RESULT_BACKEND"],
                        default=DEFAULT_BACKEND, show_default=True, metavar="URL",
                        help="Celery result backend, read for snapshots of tasks not in memory"
                             ".")(func)
    func = click_option("--broker", envvar=["PUSHSERVER_BROKER_URL", "CELERY_BROKER_URL"],
                        default=DEFAULT_BROKER, show_default=True, metavar="URL",
                        help="Celery broker whose event exchange to consume; use the same Redis "
                             "DB number as the workers.")(func)
    return func


@main.command()
@broker_options
@click_option("--mongo", envvar="PUSHSERVER_MONGO_URL", metavar="URL",
              help="MongoDB for the event log (unset: no log).")
@click_option("--mongo-db", envvar="PUSHSERVER_MONGO_DB", default="pushserver", show_default=True,
              help="MongoDB database name.")
@click_option("--retention-days", envvar="PUSHSERVER_RETENTION_DAYS", default=7.0, show_default=True,
              type=float, help="Days the event log keeps events (a MongoDB TTL index).")
@click_option("--host", envvar="PUSHSERVER_HOST", default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click_option("--port", envvar="PUSHSERVER_PORT", default=8000, show_default=True, type=int,
              help="Port to listen on; 0 picks a free one.")
@click_option("--secret", envvar="PUSHSERVER_SECRET", metavar="S[,S...]",
              help="Shared HS256 secret(s) tokens are signed with; a comma list accepts each, "
                   "for rotation.")
@click_option("--insecure", is_flag=True, envvar="PUSHSERVER_INSECURE",
              help="Allow every subscription without a token (local development only).")
@click_option("--cors", envvar="PUSHSERVER_CORS_ORIGINS", metavar="ORIGINS",
              help="Comma list of browser origins allowed to connect; default same origin only "
                   ".")
@click_option("--max-tasks", envvar="PUSHSERVER_MAX_TASKS", default=100_000, show_default=True,
              type=int, help="Tasks kept in memory; the least recently updated are evicted.")
@click_option("--progress-hz", envvar="PUSHSERVER_PROGRESS_HZ", default=10.0, show_default=True,
              type=float, help="Most progress updates per second sent for one task (the newest wins).")
@click_option("--token-audience", envvar="PUSHSERVER_TOKEN_AUDIENCE", metavar="AUD",
              help="Require this 'aud' claim in tokens.")
@click_option("--token-issuer", envvar="PUSHSERVER_TOKEN_ISSUER", metavar="ISS",
              help="Require this 'iss' claim in tokens.")
@click_option("--token-leeway", envvar="PUSHSERVER_TOKEN_LEEWAY", default=5.0, show_default=True,
              type=float, help="Seconds of clock skew allowed on 'exp'.")
@click_option("--forward-results", envvar="PUSHSERVER_FORWARD_RESULTS", default="repr",
              show_default=True, type=click.Choice(["repr", "none"]),
              help="Send task results to clients (Celery's repr: 1 024 characters by default,"
                   " never more than 4 096 here) or not.")
@click_option("--forward-tracebacks/--no-forward-tracebacks", envvar="PUSHSERVER_FORWARD_TRACEBACKS",
              default=False, show_default=True,
              help="Send tracebacks to clients (off: exception type and message only).")
@click_option("--forward-args/--no-forward-args", envvar="PUSHSERVER_FORWARD_ARGS", default=False,
              show_default=True, help="Send task args/kwargs (reprs) to clients.")
@click_option("--max-message-bytes", envvar="PUSHSERVER_MAX_MESSAGE_BYTES", default=64 * 1024,
              show_default=True, type=int, help="Largest message a client may send.")
@click_option("--subscribe-rate", envvar="PUSHSERVER_SUBSCRIBE_RATE", default=10.0, show_default=True,
              type=float, help="Subscribe calls per second per connection, after a burst of"
                                 " max(100, 5 x rate) (a reconnect re-subscribes every task at once).")
@click_option("--max-connections-per-ip", envvar="PUSHSERVER_MAX_CONNECTIONS_PER_IP", default=0,
              show_default=True, type=int,
              help="Connections (WebSocket or long-polling sessions, counted at the Engine.IO handshake)"
                   " per client address; 0 is no limit.")
@click_option("--message-rate", envvar="PUSHSERVER_MESSAGE_RATE", default=50.0, show_default=True,
              type=float, help="Messages per second one connection may send, after a burst of"
                               " max(250, 5 x rate); over it calls get too_many, and a client more"
                               " than 100 messages over it within 10 s is disconnected.")
@click_option("--max-connection-bytes", envvar="PUSHSERVER_MAX_CONNECTION_BYTES", default=1024 * 1024,
              show_default=True, type=int,
              help="Bytes of one connection's messages the server handles at once (each counted at its"
                   " size + 1 KiB); more calls get too_many until acks go out.")
@click_option("--transports", envvar="PUSHSERVER_TRANSPORTS", default="polling,websocket",
              show_default=True, type=click.Choice(["polling,websocket", "websocket"]),
              help="Engine.IO transports accepted: 'websocket' refuses long-polling (clients must"
                   " connect with transports: ['websocket']).")
@click_option("--max-backlog", envvar="PUSHSERVER_MAX_BACKLOG", default=1024, show_default=True,
              type=click.IntRange(16, 1_000_000),
              help="Updates a client may leave unread before it is disconnected (progress is shed"
                   " from 1/16 of that).")
@click_option("--trust-proxy", is_flag=True, envvar="PUSHSERVER_TRUST_PROXY",
              help="Take the client address from X-Forwarded-For (only behind a proxy you run).")
@click_option("--event-queue", envvar="PUSHSERVER_EVENT_QUEUE", metavar="NAME",
              help="RabbitMQ: consume events from this durable queue, one name per replica, so a"
                   " restarted replica catches up on what it missed (default: Celery's temporary"
                   " queue; no effect on Redis).")
@click_option("--event-queue-ttl", envvar="PUSHSERVER_EVENT_QUEUE_TTL", default=3600.0,
              show_default=True, type=float,
              help="Seconds an event waits in the --event-queue before RabbitMQ drops it.")
@click_option("--event-queue-expires", envvar="PUSHSERVER_EVENT_QUEUE_EXPIRES", default=86400.0,
              show_default=True, type=float,
              help="Seconds the --event-queue outlives its last consumer before RabbitMQ deletes it.")
@click_option("--receiver", envvar="PUSHSERVER_RECEIVER", default="process", show_default=True,
              type=click.Choice(["process", "thread"]),
              help="Where Celery's event receiver decodes: a child process (a core of its own; about"
                   " twice the ingest rate) or a thread of the server (one process, for small hosts).")
@click_option("--shutdown-timeout", envvar="PUSHSERVER_SHUTDOWN_TIMEOUT", default=15.0,
              show_default=True, type=float,
              help="Seconds SIGTERM may take: clients are dropped (they reconnect elsewhere) and the"
                   " event log is written out; keep it below your orchestrator's kill timeout.")
@click_option("--log-level", envvar="PUSHSERVER_LOG_LEVEL", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def serve(broker: str, backend: str, mongo: str | None, mongo_db: str, retention_days: float,
          host: str, port: int, secret: str | None, insecure: bool, cors: str | None,
          max_tasks: int, progress_hz: float, token_audience: str | None, token_issuer: str | None,
          token_leeway: float, forward_results: str, forward_tracebacks: bool, forward_args: bool,
          max_message_bytes: int, subscribe_rate: float, max_connections_per_ip: int,
          message_rate: float, max_connection_bytes: int, transports: str,
          max_backlog: int, trust_proxy: bool, event_queue: str | None, event_queue_ttl: float,
          event_queue_expires: float, receiver: str, shutdown_timeout: float,
          log_level: str) -> None:
    """Run the push server until SIGTERM or Ctrl-C."""
    settings = Settings(
        broker_url=broker, result_backend=backend, mongo_url=mongo or None, mongo_db=mongo_db,
        retention_days=retention_days,
        host=host, port=port, secrets=split_list(secret), insecure=insecure,
        cors_origins=split_list(cors), max_tasks=max_tasks, progress_hz=progress_hz,
        token_audience=token_audience, token_issuer=token_issuer, token_leeway=token_leeway,
        forward_results=forward_results, forward_tracebacks=forward_tracebacks,
        forward_args=forward_args, max_message_bytes=max_message_bytes,
        # A reconnecting page re-subscribes each watched task with its own
        # token at once: the burst lets 100 of them through.
        subscribe_rate=subscribe_rate, subscribe_burst=max(100.0, 5 * subscribe_rate),
        max_connections_per_ip=max_connections_per_ip, trust_proxy=trust_proxy,
        message_rate=message_rate, message_burst=max(250.0, 5 * message_rate),
        max_connection_bytes=max_connection_bytes, transports=tuple(split_list(transports)),
        hard_backlog=max_backlog, soft_backlog=max(8, max_backlog // 16),
        event_queue=event_queue or None, event_queue_ttl=event_queue_ttl,
        event_queue_expires=event_queue_expires, receiver=receiver,
        shutdown_timeout=shutdown_timeout, log_level=log_level.upper(),
    )
    try:
        settings.validate()
    except ConfigError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    if settings.insecure and not settings.secrets:
        logging.getLogger("pushserver").warning(
            "--insecure: tokens are NOT checked; anyone who can reach this server can watch any task")
    from .server import PushServer

    try:
        asyncio.run(PushServer(settings).run_forever())
    except ConfigError as exc:
        fail(str(exc))


@main.command()
@click_option("--task", "tasks", multiple=True, required=True, metavar="ID",
              help="Task id the token grants (repeat; '*' grants every task).")
@click_option("--sub", metavar="USER", help="User id to record in the token.")
@click_option("--ttl", default=900, show_default=True, type=click.IntRange(1, 30 * 86400),
              help="Seconds until the token expires.")
@click_option("--secret", envvar="PUSHSERVER_SECRET", required=True, metavar="S",
              help="Secret to sign with; with a comma list, the first.")
def token(tasks: tuple[str, ...], sub: str | None, ttl: int, secret: str) -> None:
    """Print a signed subscription token (for development and tests)."""
    secrets = split_list(secret)
    if not secrets:
        fail("--secret: empty secret")
    click.echo(mint_token(secrets[0], tasks, ttl=ttl, sub=sub))


def configure_logging(level: str) -> None:
    """One line per state change, with a timestamp, on stderr."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # kombu and celery log every reconnect attempt themselves; ours says it once.
    logging.getLogger("kombu").setLevel(logging.ERROR)
    logging.getLogger("celery").setLevel(logging.WARNING)


@main.command()
@broker_options
@click_option("--port", envvar="PUSHSERVER_PORT", default=8000, show_default=True, type=int,
              help="Port for the demo's pushserver.")
@click_option("--web-port", envvar="DEMO_WEB_PORT", default=3000, show_default=True, type=int,
              help="Port for the Express app serving the React page.")
@click_option("--mongo", envvar="PUSHSERVER_MONGO_URL", metavar="URL",
              help="MongoDB for the event log; unset: the demo starts nx-27017.")
@click_option("--once", is_flag=True, help="Run one round of tasks, then stop everything and exit.")
def demo(broker: str, backend: str, port: int, web_port: int, mongo: str | None, once: bool) -> None:
    """Start the whole stack locally and watch tasks pushed live.

    Redis (if none answers at the broker URL), nx-27017 as MongoDB (unless
    --mongo), a Celery worker, Celery Beat, pushserver, and the Express app
    serving the React page; then a round of tasks drawn in the terminal.
    Ctrl-C stops everything it started and nothing else.
    """
    from .demo import run_demo

    for flag, url, schemes in (("--broker", broker, {"redis"}), ("--backend", backend, {"redis"})):
        try:
            check_url(flag, url, schemes)
        except ConfigError as exc:
            fail(f"{exc} (the demo runs on Redis)")
    try:
        sys.exit(run_demo(broker, backend, port, once, web_port, mongo or None))
    except RuntimeError as exc:
        fail(str(exc))


@main.command("replay")
@click_option("--mongo", envvar="PUSHSERVER_MONGO_URL", metavar="URL",
              help="Read the event log (collection task_events) of this MongoDB.")
@click_option("--mongo-db", envvar="PUSHSERVER_MONGO_DB", default="pushserver", show_default=True,
              help="MongoDB database name.")
@click_option("--from", "from_file", metavar="FILE.jsonl",
              help="Read events from a JSON-lines file instead (the format --to FILE writes).")
@click_option("--task", "tasks", multiple=True, metavar="ID", help="Only this task's events (repeat for more).")
@click_option("--name", "names", multiple=True, metavar="NAME",
              help="Only the events of tasks with this task name, e.g. workers.tasks.predict (repeat for more).")
@click_option("--since", metavar="T",
              help="Only events at or after T: ISO-8601 (without a zone: local time), 'now', "
                   "or relative: -30s, -15m, -2h, -7d, -1w.")
@click_option("--until", metavar="T", help="Only events at or before T (same forms as --since).")
@click_option("--to", "to", default="stdout", show_default=True, metavar="stdout|broker|FILE.jsonl",
              help="Where events go: JSON lines on stdout or into a file, or 'broker' to republish them "
                   "on the live celeryev exchange of --broker.")
@click_option("--broker", envvar=["PUSHSERVER_BROKER_URL", "CELERY_BROKER_URL"],
              default=DEFAULT_BROKER, show_default=True, metavar="URL",
              help="Broker to republish on with --to broker; use the same Redis DB number as the "
                   "workers.")
@click_option("--speed", metavar="X|max",
              help="Divide the recorded gaps between events by X (2 = twice as fast); 'max' sends as fast "
                   "as the sink takes them.  [default: 1 with --to broker, max otherwise]")
@click_option("--strict", is_flag=True,
              help="Stop with exit code 2 at the first input line that is not an event, instead of "
                   "reporting and skipping it.")
@click.pass_context
def replay_command(ctx: click.Context, mongo: str | None, mongo_db: str, from_file: str | None,
                   tasks: tuple[str, ...], names: tuple[str, ...], since: str | None, until: str | None,
                   to: str, broker: str, speed: str | None, strict: bool) -> None:
    """Replay recorded task events: print or export them, or republish them to the broker.

    Reads the event log (--mongo) or a JSON-lines file (--from), oldest first,
    and writes each event to --to with the recorded gaps divided by --speed.
    Ctrl-C stops cleanly (exit 130) and says how many events were sent.
    """
    from pathlib import Path

    from . import replay as rp
    from .config import BROKER_SCHEMES

    # A MongoDB URL from the environment is a default, which --from overrides.
    mongo_from_env = ctx.get_parameter_source("mongo") is click.core.ParameterSource.ENVIRONMENT
    if from_file and mongo and not mongo_from_env:
        fail("give one source, --mongo URL or --from FILE.jsonl, not both")
    if not from_file and not mongo:
        fail("no source: give --mongo URL (or set PUSHSERVER_MONGO_URL) or --from FILE.jsonl")
    window: dict[str, float | None] = {}
    for flag, value in (("--since", since), ("--until", until)):
        try:
            window[flag] = rp.parse_time(value) if value else None
        except ValueError as exc:
            fail(f"{flag}: {exc}")
    try:
        pace = rp.parse_speed(speed) if speed is not None else (1.0 if to == "broker" else None)
    except ValueError as exc:
        fail(f"--speed: {exc}")
    try:
        event_filter = rp.EventFilter(frozenset(tasks), frozenset(names), window["--since"], window["--until"])
    except ValueError as exc:
        fail(str(exc))
    if to == "broker":
        try:
            check_url("--broker", broker, BROKER_SCHEMES)
        except ConfigError as exc:
            fail(str(exc))
    elif to != "stdout" and from_file and Path(to).resolve() == Path(from_file).resolve():
        fail(f"--to {to}: that is the --from file; write to another file")

    source: Any = None
    sink: Any = None
    tally = rp.Tally()
    output = sys.stdout.buffer
    rejects = rp.Rejects(lambda line: click.echo(line, err=True), strict=strict)
    configure_logging("WARNING")
    try:
        if from_file:
            if not Path(from_file).is_file():
                fail(f"--from: {from_file}: no such file")
            source = rp.JsonlSource(Path(from_file), event_filter)
        else:
            source = rp.MongoSource(mongo or "", mongo_db, event_filter)
        tally.total = source.count()
        if to == "stdout":
            sink = rp.JsonlSink(output, flush_each=pace is not None)
        elif to == "broker":
            sink = rp.BrokerSink(broker)
        else:
            sink = rp.JsonlSink.to_file(Path(to))
        show_bar = sys.stderr.isatty() and not (to == "stdout" and sys.stdout.isatty()) and tally.total > 0
        with _replay_progress(show_bar, tally.total) as progress:
            if progress is not None:
                rejects.report = lambda line: progress.console.print(line, markup=False, highlight=False)
            advance = (lambda: progress.advance(progress.task_ids[0])) if progress is not None else None
            rp.replay(source, sink, rp.Pacer(pace), rejects, tally, on_sent=advance)
    except KeyboardInterrupt:
        click.echo(f"replay interrupted: {tally.sent} of {tally.total} events sent", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, like cat.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), output.fileno())
        click.echo(f"replay stopped: stdout closed after {tally.sent} of {tally.total} events", err=True)
        sys.exit(0)
    except rp.BadInput as exc:
        fail(f"{exc} (--strict: stopped there, {tally.sent} of {tally.total} events sent)")
    except rp.ReplayError as exc:
        fail(f"{exc}; {tally.sent} of {tally.total} events sent" if tally.sent else str(exc))
    finally:
        for resource in (sink, source):
            if resource is not None and hasattr(resource, "close"):
                try:
                    resource.close()
                except Exception:  # noqa: BLE001 - closing must not mask the outcome
                    pass
    click.echo(f"replayed {tally.sent} events ({rejects.count} skipped)", err=True)


def _replay_progress(enabled: bool, total: int) -> Any:
    """A rich progress bar on stderr, or a no-op context when stderr is not a terminal."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False)
    progress.add_task("replay", total=total)
    return progress
