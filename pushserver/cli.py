"""The ``pushserver`` command line: ``serve``, ``token`` and ``demo``."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

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
    func = click.option("--backend", envvar=["PUSHSERVER_RESULT_BACKEND", "CELERY_RESULT_BACKEND"],
                        default=DEFAULT_BACKEND, show_default=True, metavar="URL",
                        help="Celery result backend, read for snapshots of tasks not in memory "
                             "[env: PUSHSERVER_RESULT_BACKEND, CELERY_RESULT_BACKEND].")(func)
    func = click.option("--broker", envvar=["PUSHSERVER_BROKER_URL", "CELERY_BROKER_URL"],
                        default=DEFAULT_BROKER, show_default=True, metavar="URL",
                        help="Celery broker whose event exchange to consume; use the same Redis "
                             "DB number as the workers [env: PUSHSERVER_BROKER_URL, CELERY_BROKER_URL].")(func)
    return func


@main.command()
@broker_options
@click.option("--mongo", envvar="PUSHSERVER_MONGO_URL", metavar="URL",
              help="MongoDB for the event log (unset: no log) [env: PUSHSERVER_MONGO_URL].")
@click.option("--mongo-db", envvar="PUSHSERVER_MONGO_DB", default="pushserver", show_default=True,
              help="MongoDB database name [env: PUSHSERVER_MONGO_DB].")
@click.option("--retention-days", envvar="PUSHSERVER_RETENTION_DAYS", default=7.0, show_default=True,
              type=float, help="Days the event log keeps events (a MongoDB TTL index).")
@click.option("--host", envvar="PUSHSERVER_HOST", default="127.0.0.1", show_default=True,
              help="Address to listen on [env: PUSHSERVER_HOST].")
@click.option("--port", envvar="PUSHSERVER_PORT", default=8000, show_default=True, type=int,
              help="Port to listen on; 0 picks a free one [env: PUSHSERVER_PORT].")
@click.option("--secret", envvar="PUSHSERVER_SECRET", metavar="S[,S...]",
              help="Shared HS256 secret(s) tokens are signed with; a comma list accepts each, "
                   "for rotation [env: PUSHSERVER_SECRET].")
@click.option("--insecure", is_flag=True, envvar="PUSHSERVER_INSECURE",
              help="Allow every subscription without a token (local development only).")
@click.option("--cors", envvar="PUSHSERVER_CORS_ORIGINS", metavar="ORIGINS",
              help="Comma list of browser origins allowed to connect; default same origin only "
                   "[env: PUSHSERVER_CORS_ORIGINS].")
@click.option("--max-tasks", envvar="PUSHSERVER_MAX_TASKS", default=100_000, show_default=True,
              type=int, help="Tasks kept in memory; the least recently updated are evicted.")
@click.option("--progress-hz", envvar="PUSHSERVER_PROGRESS_HZ", default=10.0, show_default=True,
              type=float, help="Most progress updates per second sent for one task (the newest wins).")
@click.option("--log-level", envvar="PUSHSERVER_LOG_LEVEL", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def serve(broker: str, backend: str, mongo: str | None, mongo_db: str, retention_days: float,
          host: str, port: int,
          secret: str | None, insecure: bool, cors: str | None, max_tasks: int,
          progress_hz: float, log_level: str) -> None:
    """Run the push server until SIGTERM or Ctrl-C."""
    settings = Settings(
        broker_url=broker, result_backend=backend, mongo_url=mongo or None, mongo_db=mongo_db,
        retention_days=retention_days,
        host=host, port=port, secrets=split_list(secret), insecure=insecure,
        cors_origins=split_list(cors), max_tasks=max_tasks, progress_hz=progress_hz,
        log_level=log_level.upper(),
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
@click.option("--task", "tasks", multiple=True, required=True, metavar="ID",
              help="Task id the token grants (repeat; '*' grants every task).")
@click.option("--sub", metavar="USER", help="User id to record in the token.")
@click.option("--ttl", default=900, show_default=True, type=click.IntRange(1, 30 * 86400),
              help="Seconds until the token expires.")
@click.option("--secret", envvar="PUSHSERVER_SECRET", required=True, metavar="S",
              help="Secret to sign with; with a comma list, the first [env: PUSHSERVER_SECRET].")
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
@click.option("--port", envvar="PUSHSERVER_PORT", default=8000, show_default=True, type=int,
              help="Port for the demo's pushserver [env: PUSHSERVER_PORT].")
@click.option("--once", is_flag=True, help="Run one round of tasks, then stop everything and exit.")
def demo(broker: str, backend: str, port: int, once: bool) -> None:
    """Start Redis (if none answers), a worker and the server, and watch tasks pushed live."""
    from .demo import run_demo

    for flag, url, schemes in (("--broker", broker, {"redis"}), ("--backend", backend, {"redis"})):
        try:
            check_url(flag, url, schemes)
        except ConfigError as exc:
            fail(f"{exc} (the demo runs on Redis)")
    try:
        sys.exit(run_demo(broker, backend, port, once))
    except RuntimeError as exc:
        fail(str(exc))
