"""Server settings: one dataclass, filled from CLI flags and environment variables (flags win)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"

BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "memory"}
BACKEND_SCHEMES = {"redis", "rediss", "rpc", "db", "mongodb", "disabled", "cache", "memory"}


class ConfigError(Exception):
    """A setting that cannot work; the message is one line meant for the person starting the server."""


@dataclass
class Settings:
    """Everything ``pushserver serve`` needs to run (README, Configuration)."""

    broker_url: str = DEFAULT_BROKER
    result_backend: str = DEFAULT_BACKEND
    mongo_url: str | None = None
    mongo_db: str = "pushserver"
    retention_days: float = 7.0
    host: str = "127.0.0.1"
    port: int = 8000
    secrets: list[str] = field(default_factory=list)
    insecure: bool = False
    cors_origins: list[str] = field(default_factory=list)
    max_tasks: int = 100_000
    progress_hz: float = 10.0
    max_subscriptions: int = 1000
    max_ids_per_call: int = 100
    token_leeway: float = 5.0
    token_audience: str | None = None
    token_issuer: str | None = None
    forward_results: str = "repr"
    forward_tracebacks: bool = False
    forward_args: bool = False
    max_message_bytes: int = 64 * 1024
    subscribe_rate: float = 10.0
    subscribe_burst: float = 100.0
    max_connections_per_ip: int = 0
    trust_proxy: bool = False
    soft_backlog: int = 64
    hard_backlog: int = 1024
    event_queue: str | None = None
    event_queue_ttl: float = 3600.0
    event_queue_expires: float = 86400.0
    shutdown_timeout: float = 15.0
    receiver: str = "process"
    log_level: str = "INFO"

    def validate(self) -> "Settings":
        """Raise ConfigError for the first setting that cannot work; return self otherwise."""
        check_url("--broker", self.broker_url, BROKER_SCHEMES)
        check_url("--backend", self.result_backend, BACKEND_SCHEMES, allow_plus=True)
        if self.mongo_url:
            check_url("--mongo", self.mongo_url, {"mongodb", "mongodb+srv"})
        if not self.secrets and not self.insecure:
            raise ConfigError(
                "no secret: set PUSHSERVER_SECRET (or --secret) to the key Express signs tokens with,"
                " or pass --insecure for local development"
            )
        if any(not s for s in self.secrets):
            raise ConfigError("--secret: empty secret in the list")
        if not self.retention_days > 0:
            raise ConfigError("--retention-days must be greater than 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: {self.port} is not a TCP port (0-65535)")
        if self.max_tasks < 1:
            raise ConfigError("--max-tasks must be at least 1")
        if not self.progress_hz > 0:
            raise ConfigError("--progress-hz must be greater than 0")
        if self.forward_results not in ("repr", "none"):
            raise ConfigError("--forward-results must be 'repr' or 'none'")
        if self.max_message_bytes < 1024:
            raise ConfigError("--max-message-bytes must be at least 1024")
        if not self.subscribe_rate > 0:
            raise ConfigError("--subscribe-rate must be greater than 0")
        if self.max_connections_per_ip < 0:
            raise ConfigError("--max-connections-per-ip must be 0 (no limit) or more")
        if not 0 < self.soft_backlog < self.hard_backlog:
            raise ConfigError("the slow-client backlogs need 0 < soft < hard")
        if self.event_queue is not None and (
                not self.event_queue.strip() or len(self.event_queue.encode()) > 255):
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
    """Raise ConfigError unless ``url`` parses and uses one of ``schemes``."""
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"{flag}: {url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.split("+")[0] if allow_plus else parts.scheme
    if scheme not in schemes:
        raise ConfigError(
            f"{flag}: unsupported URL scheme {parts.scheme!r} in {url!r}"
            f" (expected one of {', '.join(sorted(schemes))})"
        )


def split_list(value: str | None) -> list[str]:
    """Split a comma list from an environment variable or flag, dropping blanks."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]
