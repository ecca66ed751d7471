"""The ``pushserver`` command line: ``serve``, ``token`` and ``replay``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any, NoReturn, TypeVar, get_type_hints

import click

from .auth import WILDCARD, mint_token, secret_problem
from .config import DEFAULT_BROKER, ConfigError, Settings, option_of, split_list
from .fdlimit import log_open_files_limit, raise_open_files_limit
from .logs import configure_logging

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2


def fail(message: str) -> NoReturn:
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


def click_option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """``click.option`` that shows the environment variable in ``--help``: every flag has one."""
    return click.option(*decls, show_envvar=True, **attrs)


def settings_option(setting: Field[Any]) -> Callable[[F], F]:
    """The click option of one Settings field: its flag, env var(s), default, type and help, all from the field."""
    opt = option_of(setting)
    kind = get_type_hints(Settings)[setting.name]
    attrs: dict[str, Any] = {
        "help": opt.help,
        "show_default": True,
        "metavar": opt.metavar,
        "envvar": list(opt.env) if len(opt.env) > 1 else opt.env[0],
        "default": None if setting.default is MISSING else setting.default,
    }
    if kind is bool and "/" not in opt.flag:
        attrs.update(is_flag=True, show_default=False)  # a switch, off unless given
    elif opt.choices is not None:
        attrs["type"] = click.Choice(opt.choices, case_sensitive=opt.case_sensitive)
    elif opt.range is not None:
        low, high = opt.range
        attrs["type"] = click.FloatRange(low, high) if kind is float else click.IntRange(int(low), int(high))
    elif kind in (int, float):
        attrs["type"] = kind
    return click_option(opt.flag, **attrs)


def settings_options(command: F) -> F:
    """One click option per Settings field, listed in ``--help`` in the fields' order."""
    for setting in reversed(fields(Settings)):
        command = settings_option(setting)(command)
    return command


def broker_options(command: F) -> F:
    """The --broker/--backend pair of ``serve``, for the other commands that talk to Celery."""
    by_name = {setting.name: setting for setting in fields(Settings)}
    command = settings_option(by_name["result_backend"])(command)
    return settings_option(by_name["broker_url"])(command)


@main.command()
@settings_options
def serve(**options: Any) -> None:
    """Run the push server until SIGTERM or Ctrl-C."""
    try:
        settings = Settings.from_options(options).validate()
    except ConfigError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    # Every client connection is a file descriptor: take all the open files the hard limit allows.
    log_open_files_limit(raise_open_files_limit(), settings.max_connections)
    if settings.insecure and not settings.secrets:
        logging.getLogger("pushserver").warning(
            "--insecure: tokens are NOT checked; anyone who can reach this server can watch any task"
        )
    from .server import PushServer

    try:
        asyncio.run(PushServer(settings).run_forever())
    except ConfigError as exc:
        fail(str(exc))


@main.command()
@click_option(
    "--task",
    "tasks",
    multiple=True,
    required=True,
    metavar="ID",
    help="Task id the token grants (repeat; '*' grants every task).",
)
@click_option("--sub", metavar="USER", help="User id to record in the token.")
@click_option(
    "--ttl", default=900, show_default=True, type=click.IntRange(1, 30 * 86400), help="Seconds until the token expires."
)
@click_option(
    "--secret",
    envvar="PUSHSERVER_SECRET",
    required=True,
    metavar="S",
    help="Secret to sign with; with a comma list, the first.",
)
def token(tasks: tuple[str, ...], sub: str | None, ttl: int, secret: str) -> None:
    """Print a signed subscription token (for development and tests)."""
    secrets = split_list(secret)
    problem = secret_problem(secrets[:1])
    if problem is not None:
        fail(f"--secret: {problem}")
    if WILDCARD in tasks and len(tasks) > 1:
        fail("--task: '*' grants every task only by itself (the server refuses it among other ids)")
    click.echo(mint_token(secrets[0], tasks, ttl=ttl, sub=sub))


@main.command("replay")
@click_option(
    "--mongo",
    envvar="PUSHSERVER_MONGO_URL",
    metavar="URL",
    help="Read the event log (collection task_events) of this MongoDB.",
)
@click_option(
    "--mongo-db", envvar="PUSHSERVER_MONGO_DB", default="pushserver", show_default=True, help="MongoDB database name."
)
@click_option(
    "--from",
    "from_file",
    metavar="FILE.jsonl",
    help="Read events from a JSON-lines file instead (the format --to FILE writes).",
)
@click_option("--task", "tasks", multiple=True, metavar="ID", help="Only this task's events (repeat for more).")
@click_option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only the events of tasks with this task name, e.g. workers.tasks.predict (repeat for more).",
)
@click_option(
    "--since",
    metavar="T",
    help="Only events at or after T: ISO-8601 (without a zone: local time), 'now', "
    "or relative: -30s, -15m, -2h, -7d, -1w.",
)
@click_option("--until", metavar="T", help="Only events at or before T (same forms as --since).")
@click_option(
    "--to",
    "to",
    default="stdout",
    show_default=True,
    metavar="stdout|broker|FILE.jsonl",
    help="Where events go: JSON lines on stdout or into a file, or 'broker' to republish them "
    "on the live celeryev exchange of --broker.",
)
@click_option(
    "--broker",
    envvar=["PUSHSERVER_BROKER_URL", "CELERY_BROKER_URL"],
    default=DEFAULT_BROKER,
    show_default=True,
    metavar="URL",
    help="Broker to republish on with --to broker; use the same Redis DB number as the workers.",
)
@click_option(
    "--speed",
    metavar="X|max",
    help="Divide the recorded gaps between events by X (2 = twice as fast); 'max' sends as fast "
    "as the sink takes them.  [default: 1 with --to broker, max otherwise]",
)
@click_option(
    "--strict",
    is_flag=True,
    help="Stop with exit code 2 at the first input line that is not an event, instead of reporting and skipping it.",
)
@click.pass_context
def replay_command(
    ctx: click.Context,
    mongo: str | None,
    mongo_db: str,
    from_file: str | None,
    tasks: tuple[str, ...],
    names: tuple[str, ...],
    since: str | None,
    until: str | None,
    to: str,
    broker: str,
    speed: str | None,
    strict: bool,
) -> None:
    """Replay recorded task events: print or export them, or republish them to the broker.

    Reads the event log (--mongo) or a JSON-lines file (--from), oldest first,
    and writes each event to --to with the recorded gaps divided by --speed.
    Ctrl-C stops cleanly (exit 130) and says how many events were sent.
    """
    from . import replay as rp

    options = rp.ReplayOptions(
        mongo=mongo,
        mongo_db=mongo_db,
        from_file=from_file,
        tasks=tasks,
        names=names,
        since=since,
        until=until,
        to=to,
        broker=broker,
        speed=speed,
        strict=strict,
        mongo_from_env=ctx.get_parameter_source("mongo") is click.core.ParameterSource.ENVIRONMENT,
    )
    try:
        run = rp.ReplayRun(options)
    except rp.ReplayError as exc:
        fail(str(exc))
    tally = run.tally
    output = sys.stdout.buffer
    rejects = rp.Rejects(lambda line: click.echo(line, err=True), strict=strict)
    configure_logging("WARNING")
    try:
        total = run.open(output)
        show_bar = sys.stderr.isatty() and not (to == "stdout" and sys.stdout.isatty()) and total > 0
        with _replay_progress(show_bar, total) as progress:
            if progress is not None:
                rejects.report = lambda line: progress.console.print(line, markup=False, highlight=False)
            advance = (lambda: progress.advance(progress.task_ids[0])) if progress is not None else None
            run.run(rejects, on_sent=advance)
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
        run.close()
    click.echo(f"replayed {tally.sent} events ({rejects.count} skipped)", err=True)


def _replay_progress(enabled: bool, total: int) -> Any:
    """A rich progress bar on stderr, or a no-op context when stderr is not a terminal."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    progress.add_task("replay", total=total)
    return progress
