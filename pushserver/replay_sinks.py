"""Where a replay's events go: JSON lines (stdout or a file), or the broker's live ``celeryev`` exchange.

``BrokerSink`` republishes through Celery's own event dispatcher, one per
original hostname, so every receiver (pushserver, Flower, ``celery events``)
sees the worker names and timestamps that were recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from .replay_sources import ReplayError, redact, to_json_line

#: Fields Celery's Dispatcher sets itself (it raises if given them twice), or
#: the receiver adds; they describe the original transport, not the event.
DISPATCHER_FIELDS = frozenset({"type", "hostname", "pid", "clock", "utcoffset", "local_received"})


# -- sinks ---------------------------------------------------------------------------------


class Sink(Protocol):
    def send(self, event: Mapping[str, Any]) -> None:
        """Write or publish one event."""

    def close(self) -> None:
        """Flush and release what the sink holds."""


class JsonlSink:
    """Writes JSON lines to a binary stream (stdout) or a file."""

    def __init__(self, stream: IO[bytes], *, flush_each: bool = False, owns: bool = False) -> None:
        self.stream = stream
        self.flush_each = flush_each
        self.owns = owns

    @classmethod
    def to_file(cls, path: Path) -> JsonlSink:
        try:
            return cls(open(path, "wb"), owns=True)
        except OSError as exc:
            raise ReplayError(f"--to: cannot write {path}: {exc.strerror}") from None

    def send(self, event: Mapping[str, Any]) -> None:
        self.stream.write(to_json_line(event))
        if self.flush_each:
            self.stream.flush()

    def close(self) -> None:
        if self.owns:
            self.stream.close()
        else:
            self.stream.flush()


def dispatcher_fields(event: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """Split an event into (type, original hostname, the fields a Dispatcher may be given)."""
    hostname = event.get("hostname")
    fields = {k: v for k, v in event.items() if k not in DISPATCHER_FIELDS}
    return event["type"], hostname if isinstance(hostname, str) and hostname else None, fields


class BrokerSink:
    """Republishes events onto the broker's live ``celeryev`` exchange, one Dispatcher per original hostname.

    Celery's Dispatcher stamps ``hostname``, ``pid``, ``clock`` and
    ``utcoffset`` itself and keeps a given ``timestamp``. The receiver shifts
    a timestamp by the sender's ``utcoffset`` minus its own, so with the
    replayer and the receiver in one timezone an event arrives with the
    timestamp it was recorded with.
    """

    RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}

    def __init__(self, broker_url: str, *, timeout: float = 3.0) -> None:
        from celery import Celery

        self.url = broker_url
        self.app = Celery("pushserver-replay", broker=broker_url, set_as_current=False)
        self.app.conf.broker_connection_timeout = timeout
        self.connection = self.app.connection_for_write()
        self._dispatchers: dict[str | None, Any] = {}
        try:
            self.connection.ensure_connection(max_retries=1, interval_start=0.5)
        except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
            self.connection.release()
            raise ReplayError(f"cannot reach the broker at {redact(broker_url)} ({exc})") from None

    def _dispatcher(self, hostname: str | None) -> Any:
        dispatcher = self._dispatchers.get(hostname)
        if dispatcher is None:
            # Offline buffering would hide a lost broker: let publish errors raise.
            dispatcher = self.app.events.Dispatcher(self.connection, hostname=hostname, buffer_while_offline=False)
            self._dispatchers[hostname] = dispatcher
        return dispatcher

    def send(self, event: Mapping[str, Any]) -> None:
        kind, hostname, fields = dispatcher_fields(event)
        dispatcher = self._dispatcher(hostname)
        try:
            # publish() takes the fields as a dict, so a field named like one of
            # send()'s own keywords (retry, blind...) cannot collide with it.
            dispatcher.publish(kind, fields, dispatcher.producer, retry=True, retry_policy=self.RETRY_POLICY)
        except Exception as exc:  # noqa: BLE001
            raise ReplayError(f"lost the broker at {redact(self.url)} ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        for dispatcher in self._dispatchers.values():
            dispatcher.close()
        self.connection.release()
        self.app.close()
