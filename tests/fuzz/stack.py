"""The processes the fuzzing suite attacks: a private Redis, two pushservers, one Celery worker; and an event publisher.

``main`` is configured the way a careful production deployment would be
(two secrets for rotation, audience and issuer checks, a CORS allowlist)
but with the subscribe and message rate limits out of the way, so that
thousands of payloads per second reach the parser. ``limits`` keeps a tight
subscribe rate limit, the default message rate limit and a per-address
connection limit behind a trusted proxy, for the tests of those limits under
fuzzing.
"""

from __future__ import annotations

import secrets as _secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.events.event import get_exchange
from kombu import Connection, Producer

from dev.stack import Proc, http_get, is_ready, readyz

from .oracle import Expectations

AUDIENCE = "pushserver-fuzz"
ISSUER = "express-fuzz"
ALLOWED_ORIGIN = "https://app.example.com"
LIMITS_RATE = 5.0  # subscribe calls per second on the `limits` server (bursts of twice that)
LIMITS_PER_IP = 3
#: The result of the task whose state must never leak; appears in no other data.
MARKER = "SECRET-RESULT-" + _secrets.token_hex(8)


@dataclass
class Server:
    """A running pushserver and what it expects of tokens."""

    name: str
    url: str
    proc: Proc
    expect: Expectations

    def __repr__(self) -> str:
        return f"<pushserver {self.name} at {self.url}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis prints fixtures with this
        printer.text(repr(self))

    def token(self, tasks: list[str], ttl: int = 600, secret: str | None = None, **claims: Any) -> str:
        """A token the server accepts (unless the arguments say otherwise)."""
        import jwt

        now = int(time.time())
        body: dict[str, Any] = {
            "tasks": list(tasks),
            "iat": now - 10,
            "exp": now + ttl,
            "aud": self.expect.audience,
            "iss": self.expect.issuer,
        }
        body = {k: v for k, v in {**body, **claims}.items() if v is not None}
        return jwt.encode(body, secret or self.expect.secrets[0], algorithm="HS256")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return http_get(self.url + path, headers)

    def readyz(self) -> dict[str, Any]:
        """What /readyz answers now."""
        return readyz(self.url)

    def is_ready(self) -> bool:
        """Whether /readyz answers 200."""
        return is_ready(self.url)

    def healthy(self) -> bool:
        try:
            return self.proc.alive() and self.get("/healthz")[0] == 200
        except OSError:
            return False


@dataclass
class FuzzStack:
    """Everything the fuzz tests share."""

    log_dir: Path
    redis_port: int
    broker: str
    backend: str
    main: Server
    limits: Server
    worker: Proc
    celery: Celery
    #: a finished task whose result is MARKER: no response without a token for it may contain MARKER
    secret_task: str
    procs: list[Proc] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<fuzz stack: redis :{self.redis_port}, {self.main!r}, {self.limits!r}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class EventPublisher:
    """Publishes raw message bodies on the ``celeryev`` exchange, the way a worker's Dispatcher does."""

    def __init__(self, broker: str) -> None:
        self.connection = Connection(broker)
        self.connection.ensure_connection(max_retries=3)
        self.exchange = get_exchange(self.connection)
        self.producer = Producer(self.connection.default_channel, exchange=self.exchange)
        self.producer.maybe_declare(self.exchange)

    def publish(self, body: Any, routing_key: str = "task.multi", **options: Any) -> None:
        """Publish ``body`` (JSON-serialised unless ``serializer``/``content_type`` say otherwise)."""
        if "content_type" not in options:
            options.setdefault("serializer", "json")
        self.producer.publish(body, routing_key=routing_key, retry=True, **options)

    def task_event(self, type_: str, task_id: str, **fields: Any) -> dict[str, Any]:
        """A well-formed task event, as Celery's Dispatcher would send it."""
        return {
            "type": type_,
            "uuid": task_id,
            "hostname": "celery@fuzz",
            "utcoffset": 0,
            "pid": 1,
            "clock": 1,
            "timestamp": time.time(),
            **fields,
        }

    def close(self) -> None:
        self.connection.release()


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4()}"
