"""Server settings: one dataclass, the single declaration of every ``pushserver serve`` flag.

Each field of ``Settings`` carries, in its metadata, the flag, the
environment variable(s), the help text and how the flag's text becomes the
field's value (``Option``); the command line is built from them (cli.py),
and flags win over environment variables.

A new setting is one field, ``name: type = field(default=..., metadata=option(
"--flag", "PUSHSERVER_FLAG", "Help text."))``, placed where it should appear in
``--help``; its check in ``Settings.validate``; and its row in README's
configuration table (a unit test holds the three together).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from .auth import MAX_LEEWAY, secret_problem
from .errors import PushserverError

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"

#: Room for a few events of the largest size the event log keeps whole (eventlog.MAX_EVENT_BYTES).
MIN_EVENT_LOG_QUEUE_BYTES = 4 * 1024 * 1024

BROKER_SCHEMES = {"redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "memory"}
BACKEND_SCHEMES = {"redis", "rediss", "sentinel", "rpc", "db", "mongodb", "disabled", "cache", "memory"}
BACKLOG_RANGE = (16, 1_000_000)
#: Bounds of --max-result-bytes: an event with the largest result stays under eventlog.MAX_EVENT_BYTES.
MIN_RESULT_BYTES, MAX_RESULT_BYTES = 16, 512 * 1024
RECONCILE_BATCH_RANGE = (1, 10_000)
#: The values of ``ssl_cert_reqs`` both kombu (broker) and Celery's Redis backend accept.
SSL_CERT_REQS = {"required", "optional", "none", "CERT_REQUIRED", "CERT_OPTIONAL", "CERT_NONE"}


class ConfigError(PushserverError):
    """A setting that cannot work; the message is one line meant for the person starting the server."""


def split_list(value: str | None) -> list[str]:
    """Split a comma list from an environment variable or flag, dropping blanks."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def none_if_empty(value: str | None) -> str | None:
    """An environment variable set to the empty string means: not set."""
    return value or None


def json_object(value: str | None) -> dict[str, Any]:
    """A JSON object from a flag or environment variable (unset or blank: ``{}``); ConfigError otherwise."""
    if value is None or not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"not a JSON object ({exc})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"not a JSON object (got a {type(parsed).__name__})")
    return parsed


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs (each ``;``-separated URL)."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None and "password=" not in parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}"
    query = "&".join("password=***" if item.startswith("password=") else item for item in parts.query.split("&"))
    return parts._replace(netloc=netloc, query=query).geturl()


@dataclass(frozen=True)
class Option:
    """How one setting is given: its flag, environment variable(s) and ``--help`` line, and how its text is read.

    ``flag`` is ``--name``, or ``--name/--no-name`` for an on/off pair; a
    boolean setting with a single flag is a switch that is off by default.
    """

    flag: str
    env: tuple[str, ...]
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    case_sensitive: bool = True
    range: tuple[float, float] | None = None  # inclusive bounds, checked by click
    convert: Callable[[Any], Any] | None = None  # the flag's parsed value -> the setting's value

    @property
    def param(self) -> str:
        """The name click gives the flag's value (``--max-backlog``: ``max_backlog``)."""
        return self.flag.split("/")[0].removeprefix("--").replace("-", "_")


def option(flag: str, env: str | tuple[str, ...], help: str, **details: Any) -> dict[str, Option]:
    """The metadata of a Settings field: ``field(default=..., metadata=option("--x", "PUSHSERVER_X", "..."))``."""
    return {"option": Option(flag, (env,) if isinstance(env, str) else env, help, **details)}


def option_of(setting: Field[Any]) -> Option:
    """The ``Option`` declared on a Settings field."""
    found = setting.metadata.get("option")
    if not isinstance(found, Option):
        raise TypeError(f"Settings.{setting.name} declares no option")
    return found


@dataclass
class Settings:
    """Everything ``pushserver serve`` needs to run; the fields are in ``--help`` order."""

    broker_url: str = field(
        default=DEFAULT_BROKER,
        metadata=option(
            "--broker",
            ("PUSHSERVER_BROKER_URL", "CELERY_BROKER_URL"),
            "Celery broker whose event exchange to consume; use the same Redis DB number as the workers.",
            metavar="URL",
        ),
    )
    result_backend: str = field(
        default=DEFAULT_BACKEND,
        metadata=option(
            "--backend",
            ("PUSHSERVER_RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
            "Celery result backend, read for snapshots of tasks not in memory.",
            metavar="URL",
        ),
    )
    broker_transport_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=option(
            "--broker-transport-options",
            ("PUSHSERVER_BROKER_TRANSPORT_OPTIONS", "CELERY_BROKER_TRANSPORT_OPTIONS"),
            'Celery\'s broker_transport_options as a JSON object, e.g. {"master_name": "mymaster"} for a'
            " sentinel:// broker.",
            metavar="JSON",
            convert=json_object,
        ),
    )
    backend_transport_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=option(
            "--backend-transport-options",
            ("PUSHSERVER_BACKEND_TRANSPORT_OPTIONS", "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"),
            'Celery\'s result_backend_transport_options as a JSON object, e.g. {"master_name": "mymaster"} for'
            " a sentinel:// backend.",
            metavar="JSON",
            convert=json_object,
        ),
    )
    mongo_url: str | None = field(
        default=None,
        metadata=option(
            "--mongo",
            "PUSHSERVER_MONGO_URL",
            "MongoDB for the event log (unset: no log).",
            metavar="URL",
            convert=none_if_empty,
        ),
    )
    mongo_db: str = field(
        default="pushserver", metadata=option("--mongo-db", "PUSHSERVER_MONGO_DB", "MongoDB database name.")
    )
    retention_days: float = field(
        default=7.0,
        metadata=option(
            "--retention-days", "PUSHSERVER_RETENTION_DAYS", "Days the event log keeps events (a MongoDB TTL index)."
        ),
    )
    event_log_queue_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=option(
            "--event-log-queue-bytes",
            "PUSHSERVER_EVENT_LOG_QUEUE_BYTES",
            "Most bytes of events held for MongoDB while it is slow or away (at least 4 MiB); past it the oldest"
            " progress, then the oldest transitions, are dropped (counted).",
        ),
    )
    host: str = field(default="127.0.0.1", metadata=option("--host", "PUSHSERVER_HOST", "Address to listen on."))
    port: int = field(
        default=8000, metadata=option("--port", "PUSHSERVER_PORT", "Port to listen on; 0 picks a free one.")
    )
    secrets: list[str] = field(
        default_factory=list,
        metadata=option(
            "--secret",
            "PUSHSERVER_SECRET",
            "Shared HS256 secret(s) tokens are signed with, each at least 32 bytes; a comma list accepts each, for"
            " rotation.",
            metavar="S[,S...]",
            convert=split_list,
        ),
    )
    insecure: bool = field(
        default=False,
        metadata=option(
            "--insecure", "PUSHSERVER_INSECURE", "Allow every subscription without a token (local development only)."
        ),
    )
    cors_origins: list[str] = field(
        default_factory=list,
        metadata=option(
            "--cors",
            "PUSHSERVER_CORS_ORIGINS",
            "Comma list of browser origins allowed to connect; default same origin only.",
            metavar="ORIGINS",
            convert=split_list,
        ),
    )
    max_tasks: int = field(
        default=100_000,
        metadata=option(
            "--max-tasks", "PUSHSERVER_MAX_TASKS", "Tasks kept in memory; the least recently updated are evicted."
        ),
    )
    max_workflow_size: int = field(
        default=10_000,
        metadata=option(
            "--max-workflow-size",
            "PUSHSERVER_MAX_WORKFLOW_SIZE",
            "Most member tasks of a workflow (group, chord or chain) a client may subscribe to; a larger one is"
            " refused with too_many.",
            range=(1, 1_000_000),
        ),
    )
    metrics_task_names: int = field(
        default=200,
        metadata=option(
            "--metrics-task-names",
            "PUSHSERVER_METRICS_TASK_NAMES",
            "Distinct task names (and worker hostnames) the task-level metrics label; events of any further ones"
            " are counted under 'other'.",
            range=(1, 100_000),
        ),
    )
    progress_hz: float = field(
        default=10.0,
        metadata=option(
            "--progress-hz",
            "PUSHSERVER_PROGRESS_HZ",
            "Most progress updates per second sent for one task, and count-only updates for one workflow"
            " (the newest wins).",
        ),
    )
    token_audience: str | None = field(
        default=None,
        metadata=option(
            "--token-audience", "PUSHSERVER_TOKEN_AUDIENCE", "Require this 'aud' claim in tokens.", metavar="AUD"
        ),
    )
    token_issuer: str | None = field(
        default=None,
        metadata=option(
            "--token-issuer", "PUSHSERVER_TOKEN_ISSUER", "Require this 'iss' claim in tokens.", metavar="ISS"
        ),
    )
    token_leeway: float = field(
        default=5.0,
        metadata=option("--token-leeway", "PUSHSERVER_TOKEN_LEEWAY", "Seconds of clock skew allowed on 'exp' (0-300)."),
    )
    forward_results: str = field(
        default="json",
        metadata=option(
            "--forward-results",
            "PUSHSERVER_FORWARD_RESULTS",
            "What clients get of a task's result: the JSON value it returned, read from the result backend (json);"
            " Celery's repr from the event (repr; at most 4 096 characters); or nothing (none).",
            choices=("json", "repr", "none"),
        ),
    )
    max_result_bytes: int = field(
        default=64 * 1024,
        metadata=option(
            "--max-result-bytes",
            "PUSHSERVER_MAX_RESULT_BYTES",
            "Largest JSON result sent as a value (its encoded size, 16 B to 512 KiB); a larger one is sent as"
            " result null with result_format too_large. Memory holds up to this much per finished task.",
        ),
    )
    forward_tracebacks: bool = field(
        default=False,
        metadata=option(
            "--forward-tracebacks/--no-forward-tracebacks",
            "PUSHSERVER_FORWARD_TRACEBACKS",
            "Send tracebacks to clients (off: exception type and message only).",
        ),
    )
    forward_args: bool = field(
        default=False,
        metadata=option(
            "--forward-args/--no-forward-args", "PUSHSERVER_FORWARD_ARGS", "Send task args/kwargs (reprs) to clients."
        ),
    )
    max_message_bytes: int = field(
        default=64 * 1024,
        metadata=option("--max-message-bytes", "PUSHSERVER_MAX_MESSAGE_BYTES", "Largest message a client may send."),
    )
    subscribe_rate: float = field(
        default=10.0,
        metadata=option(
            "--subscribe-rate",
            "PUSHSERVER_SUBSCRIBE_RATE",
            "Subscribe calls per second per connection, after a burst of max(100, 5 x rate) (a reconnect"
            " re-subscribes every task at once).",
        ),
    )
    max_connections: int = field(
        default=0,
        metadata=option(
            "--max-connections",
            "PUSHSERVER_MAX_CONNECTIONS",
            "Connections (WebSocket or long-polling sessions, counted at the Engine.IO handshake) this server holds"
            " at once; 0 is no limit but the process's open-files limit, which the server raises to its hard limit"
            " at start and logs.",
        ),
    )
    max_connections_per_ip: int = field(
        default=0,
        metadata=option(
            "--max-connections-per-ip",
            "PUSHSERVER_MAX_CONNECTIONS_PER_IP",
            "Connections (WebSocket or long-polling sessions, counted at the Engine.IO handshake) per client address;"
            " 0 is no limit.",
        ),
    )
    message_rate: float = field(
        default=50.0,
        metadata=option(
            "--message-rate",
            "PUSHSERVER_MESSAGE_RATE",
            "Messages per second one connection may send, after a burst of max(250, 5 x rate); over it calls get"
            " too_many, and a client that sends 100 more within 10 s is disconnected.",
        ),
    )
    max_connection_bytes: int = field(
        default=1024 * 1024,
        metadata=option(
            "--max-connection-bytes",
            "PUSHSERVER_MAX_CONNECTION_BYTES",
            "Bytes of one connection's messages the server handles at once (each counted at its size + 1 KiB);"
            " more calls get too_many until acks go out.",
        ),
    )
    transports: str = field(
        default="polling,websocket",
        metadata=option(
            "--transports",
            "PUSHSERVER_TRANSPORTS",
            "Engine.IO transports accepted: 'websocket' refuses long-polling (clients must connect with"
            " transports: ['websocket']).",
            choices=("polling,websocket", "websocket"),
        ),
    )
    hard_backlog: int = field(
        default=1024,
        metadata=option(
            "--max-backlog",
            "PUSHSERVER_MAX_BACKLOG",
            "Updates a client may leave unread before it is disconnected (progress is shed from 1/16 of that).",
            range=BACKLOG_RANGE,
        ),
    )
    trust_proxy: bool = field(
        default=False,
        metadata=option(
            "--trust-proxy",
            "PUSHSERVER_TRUST_PROXY",
            "Take the client address from X-Forwarded-For (only behind a proxy you run).",
        ),
    )
    event_queue: str | None = field(
        default=None,
        metadata=option(
            "--event-queue",
            "PUSHSERVER_EVENT_QUEUE",
            "RabbitMQ: consume events from this durable queue, one name per replica, so a restarted replica"
            " catches up on what it missed (default: Celery's temporary queue; no effect on Redis).",
            metavar="NAME",
            convert=none_if_empty,
        ),
    )
    event_queue_ttl: float = field(
        default=3600.0,
        metadata=option(
            "--event-queue-ttl",
            "PUSHSERVER_EVENT_QUEUE_TTL",
            "Seconds an event waits in the --event-queue before RabbitMQ drops it.",
        ),
    )
    event_queue_expires: float = field(
        default=86400.0,
        metadata=option(
            "--event-queue-expires",
            "PUSHSERVER_EVENT_QUEUE_EXPIRES",
            "Seconds the --event-queue outlives its last consumer before RabbitMQ deletes it.",
        ),
    )
    reconcile_after: float = field(
        default=5.0,
        metadata=option(
            "--reconcile-after",
            "PUSHSERVER_RECONCILE_AFTER",
            "Seconds a watched unfinished task may go without an event before the result backend is read for it"
            " (again each time its silence doubles); 0 turns this off.",
            range=(0, 86400),
        ),
    )
    reconcile_max_interval: float = field(
        default=60.0,
        metadata=option(
            "--reconcile-max-interval",
            "PUSHSERVER_RECONCILE_MAX_INTERVAL",
            "Longest wait between two result-backend reads of a quiet task: a finished task whose events were"
            " lost is delivered within this (plus two seconds).",
            range=(1, 86400),
        ),
    )
    reconcile_batch: int = field(
        default=1000,
        metadata=option(
            "--reconcile-batch",
            "PUSHSERVER_RECONCILE_BATCH",
            "Most quiet tasks read per second, in one round trip on Redis (MGET); other backends read task by task.",
            range=RECONCILE_BATCH_RANGE,
        ),
    )
    receiver: str = field(
        default="process",
        metadata=option(
            "--receiver",
            "PUSHSERVER_RECEIVER",
            "Where Celery's event receiver decodes: a child process (a core of its own; about twice the ingest"
            " rate) or a thread of the server (one process, for small hosts).",
            choices=("process", "thread"),
        ),
    )
    shutdown_timeout: float = field(
        default=15.0,
        metadata=option(
            "--shutdown-timeout",
            "PUSHSERVER_SHUTDOWN_TIMEOUT",
            "Seconds SIGTERM may take: clients are dropped (they reconnect elsewhere) and the event log is written"
            " out; keep it below your orchestrator's kill timeout.",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=option(
            "--log-level",
            "PUSHSERVER_LOG_LEVEL",
            "How much the server logs.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
            case_sensitive=False,
            convert=str.upper,
        ),
    )

    #: Fixed by the protocol (docs/protocol.md), not settings.
    max_subscriptions: ClassVar[int] = 1000
    max_ids_per_call: ClassVar[int] = 100

    @property
    def subscribe_burst(self) -> float:
        """Subscribe calls a connection may make at once: a reconnecting page re-subscribes each watched task
        with its own token at once, and the burst lets 100 of them through."""
        return max(100.0, 5 * self.subscribe_rate)

    @property
    def message_burst(self) -> float:
        """Messages a connection may send at once, before ``--message-rate`` applies."""
        return max(250.0, 5 * self.message_rate)

    @property
    def soft_backlog(self) -> int:
        """Unread updates from which a client's progress updates are shed (1/16 of ``--max-backlog``)."""
        return max(8, self.hard_backlog // 16)

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from the flags' values as click parsed them (keyed by ``Option.param``), each converted
        (ConfigError for a value that does not convert)."""
        kwargs = {}
        for setting in fields(cls):
            opt = option_of(setting)
            value = values[opt.param]
            try:
                kwargs[setting.name] = opt.convert(value) if opt.convert is not None else value
            except ConfigError as exc:
                raise ConfigError(f"{opt.flag}: {exc}") from None
        return cls(**kwargs)

    def validate(self) -> Settings:
        """Raise ConfigError for the first setting that cannot work; return self otherwise."""
        check_url("--broker", self.broker_url, BROKER_SCHEMES)
        check_url("--backend", self.result_backend, BACKEND_SCHEMES, allow_plus=True)
        check_redis_tls("--broker", self.broker_url)
        check_redis_tls("--backend", self.result_backend)
        check_sentinel("--broker", self.broker_url, self.broker_transport_options, "--broker-transport-options")
        check_sentinel("--backend", self.result_backend, self.backend_transport_options, "--backend-transport-options")
        if self.mongo_url:
            check_url("--mongo", self.mongo_url, {"mongodb", "mongodb+srv"})
        if self.reconcile_after and self.reconcile_max_interval < self.reconcile_after:
            raise ConfigError("--reconcile-max-interval must be at least --reconcile-after")
        if not self.secrets and not self.insecure:
            raise ConfigError(
                "no secret: set PUSHSERVER_SECRET (or --secret) to the key Express signs tokens with,"
                " or pass --insecure for local development"
            )
        if self.secrets:
            problem = secret_problem(self.secrets)
            if problem is not None:
                raise ConfigError(f"--secret: {problem}")
        if not 0 <= self.token_leeway <= MAX_LEEWAY:
            raise ConfigError(f"--token-leeway must be between 0 and {MAX_LEEWAY:g} seconds")
        if not self.retention_days > 0:
            raise ConfigError("--retention-days must be greater than 0")
        if self.event_log_queue_bytes < MIN_EVENT_LOG_QUEUE_BYTES:
            raise ConfigError(
                "--event-log-queue-bytes must be at least 4194304 (4 MiB: an event is kept whole up to 1 MiB)"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: {self.port} is not a TCP port (0-65535)")
        if self.max_tasks < 1:
            raise ConfigError("--max-tasks must be at least 1")
        if not 1 <= self.max_workflow_size <= 1_000_000:
            raise ConfigError("--max-workflow-size must be 1 to 1000000")
        if not 1 <= self.metrics_task_names <= 100_000:
            raise ConfigError("--metrics-task-names must be 1 to 100000")
        if not self.progress_hz > 0:
            raise ConfigError("--progress-hz must be greater than 0")
        if self.forward_results not in ("json", "repr", "none"):
            raise ConfigError("--forward-results must be 'json', 'repr' or 'none'")
        if not MIN_RESULT_BYTES <= self.max_result_bytes <= MAX_RESULT_BYTES:
            raise ConfigError(
                f"--max-result-bytes must be {MIN_RESULT_BYTES} to {MAX_RESULT_BYTES} (512 KiB: a"
                " result event must fit the event log whole)"
            )
        if self.max_message_bytes < 1024:
            raise ConfigError("--max-message-bytes must be at least 1024")
        if not self.subscribe_rate > 0:
            raise ConfigError("--subscribe-rate must be greater than 0")
        if not self.message_rate > 0:
            raise ConfigError("--message-rate must be greater than 0")
        if self.max_connection_bytes < self.max_message_bytes + 1024:
            raise ConfigError(
                "--max-connection-bytes must be at least --max-message-bytes + 1024 (one message and its handler)"
            )
        if self.transports not in ("polling,websocket", "websocket"):
            raise ConfigError("--transports must be 'websocket' or 'polling,websocket'")
        if self.max_connections < 0:
            raise ConfigError("--max-connections must be 0 (no limit) or more")
        if self.max_connections_per_ip < 0:
            raise ConfigError("--max-connections-per-ip must be 0 (no limit) or more")
        if not BACKLOG_RANGE[0] <= self.hard_backlog <= BACKLOG_RANGE[1]:
            raise ConfigError(f"--max-backlog must be {BACKLOG_RANGE[0]} to {BACKLOG_RANGE[1]}")
        if self.event_queue is not None and (not self.event_queue.strip() or len(self.event_queue.encode()) > 255):
            raise ConfigError("--event-queue: a queue name of 1 to 255 bytes, one per replica")
        if not self.event_queue_ttl > 0 or not self.event_queue_expires > 0:
            raise ConfigError("--event-queue-ttl and --event-queue-expires must be greater than 0")
        if self.receiver not in ("process", "thread"):
            raise ConfigError("--receiver must be 'process' or 'thread'")
        if not self.shutdown_timeout > 0:
            raise ConfigError("--shutdown-timeout must be greater than 0")
        for origin in self.cors_origins:
            if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
                raise ConfigError(f"--cors: {origin!r} is not an origin like https://app.example.com")
        return self


def check_url(flag: str, url: str, schemes: set[str], allow_plus: bool = False) -> None:
    """Raise ConfigError unless ``url`` parses and uses one of ``schemes`` (passwords never in the message).

    A ``sentinel://`` URL may list several sentinels, separated by ``;``, as Celery and kombu take them.
    """
    for one in url.split(";") if url.startswith("sentinel://") else [url]:
        try:
            parts = urlsplit(one)
            _ = parts.port  # raises ValueError for a non-numeric port
        except ValueError as exc:
            raise ConfigError(f"{flag}: {redact_url(one)!r} is not a valid URL ({exc})") from None
        scheme = parts.scheme.split("+")[0] if allow_plus else parts.scheme
        if scheme not in schemes:
            raise ConfigError(
                f"{flag}: unsupported URL scheme {parts.scheme!r} in {redact_url(one)!r}"
                f" (expected one of {', '.join(sorted(schemes))})"
            )


def check_redis_tls(flag: str, url: str) -> None:
    """Refuse a ``rediss://`` URL without ``ssl_cert_reqs``.

    Celery's backend would fail on its first read (and answer PENDING for
    every finished task), kombu's broker would connect without checking the
    certificate: neither is what someone writing ``rediss://`` meant.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return
    reqs = parse_qs(parts.query).get("ssl_cert_reqs")
    if not reqs:
        raise ConfigError(
            f"{flag}: a rediss:// URL needs ssl_cert_reqs: add"
            " ?ssl_cert_reqs=required&ssl_ca_certs=/path/to/ca.pem (or ssl_cert_reqs=none"
            " to skip certificate verification)"
        )
    if reqs[-1] not in SSL_CERT_REQS:
        raise ConfigError(f"{flag}: ssl_cert_reqs={reqs[-1]!r}: use required, optional or none")


def check_sentinel(flag: str, url: str, options: Mapping[str, Any], options_flag: str) -> None:
    """Refuse a ``sentinel://`` URL whose transport options do not name the master."""
    if url.startswith("sentinel://") and not options.get("master_name"):
        raise ConfigError(
            f'{flag}: a sentinel:// URL needs the master\'s name: pass {options_flag} \'{{"master_name": "mymaster"}}\''
        )
