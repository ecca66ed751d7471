"""Replay recorded task events: read them (event log or JSONL), filter, pace, and write or republish them.

A replay is a source, a sink and a pacer: ``MongoSource`` or ``JsonlSource``
yields Celery events (the dicts the receiver delivered, oldest first),
``Pacer`` holds each one until its recorded offset divided by the speed, and
``JsonlSink`` or ``BrokerSink`` writes it out. ``BrokerSink`` republishes
through Celery's own event dispatcher, one per original hostname, so every
receiver (pushserver, Flower, ``celery events``) sees the worker names and
timestamps that were recorded — and the event log, which derives an event's
``_id`` from what happened rather than how it travelled, stores a replayed
event once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from .config import BROKER_SCHEMES, ConfigError, check_url
from .replay_sinks import BrokerSink, JsonlSink, Sink
from .replay_sources import BadInput, EventFilter, JsonlSource, MongoSource, ReplayError, Source, is_number

_RELATIVE = re.compile(r"-(\d+(?:\.\d*)?|\.\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# -- option values ---------------------------------------------------------------


def parse_time(text: str, now: float | None = None) -> float:
    """An epoch timestamp from ISO-8601 (no zone: local time), ``now``, or ``-N`` + s/m/h/d/w ago."""
    value = text.strip()
    reference = time.time() if now is None else now
    if value.lower() == "now":
        return reference
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = relative.groups()
        return reference - float(amount) * _UNIT_SECONDS[unit]
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2024-11-24T10:00:00+01:00), "
            "'now', or a relative time like -15m, -2h, -7d"
        ) from None
    return moment.timestamp()  # a naive datetime is taken as local time, as Celery's timestamps are


def parse_speed(text: str) -> float | None:
    """The speed factor, or None for ``max`` (no pacing)."""
    value = text.strip().lower()
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ValueError(f"expected a number > 0 or 'max', got {text!r}") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"expected a number > 0 or 'max', got {text!r}")
    return speed


# -- handling bad input ------------------------------------------------------------------


class Rejects:
    """Counts and reports input that is not an event; with ``strict``, the first one stops the replay."""

    def __init__(self, report: Callable[[str], None], strict: bool = False) -> None:
        self.report = report
        self.strict = strict
        self.count = 0

    def __call__(self, where: str, what: str) -> None:
        if self.strict:
            raise BadInput(where, what)
        self.count += 1
        self.report(f"{where}: {what}")


# -- pacing and the loop -----------------------------------------------------------------


def due_offset(first: float, timestamp: float, speed: float) -> float:
    """Seconds after the first event's send at which an event recorded at ``timestamp`` is due."""
    return (timestamp - first) / speed


class Pacer:
    """Holds each event until its recorded offset from the first, divided by ``speed`` (None: never holds).

    Every deadline is computed from the start, on a monotonic clock, so
    sleep overshoot never accumulates; an event whose time has passed (a slow
    sink, or one recorded out of order) goes at once.
    """

    def __init__(
        self,
        speed: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._start: float | None = None
        self._first: float | None = None

    def delay(self, timestamp: Any) -> float:
        """How long to wait now before sending an event recorded at ``timestamp``."""
        if self.speed is None or not is_number(timestamp):
            return 0.0
        now = self.clock()
        if self._start is None or self._first is None:
            self._start, self._first = now, float(timestamp)
            return 0.0
        return max(0.0, self._start + due_offset(self._first, float(timestamp), self.speed) - now)

    def wait(self, timestamp: Any) -> None:
        pause = self.delay(timestamp)
        if pause > 0:
            self.sleep(pause)


@dataclass
class Tally:
    """What a replay has done so far: read it after an interrupt too."""

    total: int = 0
    sent: int = 0


def replay(
    source: Source,
    sink: Sink,
    pacer: Pacer,
    rejects: Callable[[str, str], None],
    tally: Tally,
    on_sent: Callable[[], None] | None = None,
) -> Tally:
    """Send every event of ``source`` to ``sink`` at the pacer's speed, counting in ``tally`` as it goes."""
    for event in source.events(rejects):
        pacer.wait(event.get("timestamp"))
        sink.send(event)
        tally.sent += 1
        if on_sent is not None:
            on_sent()
    return tally


# -- one run of the command ----------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOptions:
    """What ``pushserver replay`` was asked to do, as given on its command line."""

    mongo: str | None = None
    mongo_db: str = "pushserver"
    from_file: str | None = None
    tasks: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    to: str = "stdout"
    broker: str = ""
    speed: str | None = None
    strict: bool = False
    #: The MongoDB URL came from the environment: a default, which --from overrides.
    mongo_from_env: bool = False


class ReplayRun:
    """One replay: the options checked (ReplayError saying which is wrong), then a source and a sink, then the loop.

    ``tally`` counts as it goes, so whoever stops a run (Ctrl-C, a closed
    stdout) can still say how far it got.
    """

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        if options.from_file and options.mongo and not options.mongo_from_env:
            raise ReplayError("give one source, --mongo URL or --from FILE.jsonl, not both")
        if not options.from_file and not options.mongo:
            raise ReplayError("no source: give --mongo URL (or set PUSHSERVER_MONGO_URL) or --from FILE.jsonl")
        window: dict[str, float | None] = {}
        for flag, value in (("--since", options.since), ("--until", options.until)):
            try:
                window[flag] = parse_time(value) if value else None
            except ValueError as exc:
                raise ReplayError(f"{flag}: {exc}") from None
        try:
            # Republishing keeps the recorded pace unless told otherwise; exports go as fast as they can.
            self.pace = (
                parse_speed(options.speed) if options.speed is not None else (1.0 if options.to == "broker" else None)
            )
        except ValueError as exc:
            raise ReplayError(f"--speed: {exc}") from None
        try:
            self.filter = EventFilter(
                frozenset(options.tasks), frozenset(options.names), window["--since"], window["--until"]
            )
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        if options.to == "broker":
            try:
                check_url("--broker", options.broker, BROKER_SCHEMES)
            except ConfigError as exc:
                raise ReplayError(str(exc)) from None
        elif (
            options.to != "stdout"
            and options.from_file
            and Path(options.to).resolve() == Path(options.from_file).resolve()
        ):
            raise ReplayError(f"--to {options.to}: that is the --from file; write to another file")
        self.tally = Tally()
        self.source: Source | None = None
        self.sink: Sink | None = None

    def open(self, stdout: IO[bytes]) -> int:
        """Open the source and the sink (``stdout`` for ``--to stdout``); return how many events will be sent."""
        options = self.options
        if options.from_file:
            if not Path(options.from_file).is_file():
                raise ReplayError(f"--from: {options.from_file}: no such file")
            self.source = JsonlSource(Path(options.from_file), self.filter)
        else:
            self.source = MongoSource(options.mongo or "", options.mongo_db, self.filter)
        self.tally.total = self.source.count()
        if options.to == "stdout":
            # Paced output is flushed per event, so a reader sees each one when it is due.
            self.sink = JsonlSink(stdout, flush_each=self.pace is not None)
        elif options.to == "broker":
            self.sink = BrokerSink(options.broker)
        else:
            self.sink = JsonlSink.to_file(Path(options.to))
        return self.tally.total

    def run(self, rejects: Callable[[str, str], None], on_sent: Callable[[], None] | None = None) -> Tally:
        """Send every event of the opened source to the sink at the requested pace."""
        assert self.source is not None and self.sink is not None, "open() first"
        return replay(self.source, self.sink, Pacer(self.pace), rejects, self.tally, on_sent=on_sent)

    def close(self) -> None:
        """Release the sink and the source; an error while closing never hides how the run ended."""
        for resource in (self.sink, self.source):
            close = getattr(resource, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing must not mask the outcome
                    pass
