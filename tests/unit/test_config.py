"""Server settings: what ``Settings.validate`` refuses before anything starts."""

from __future__ import annotations

from typing import Any

import pytest

from pushserver.config import DEFAULT_BACKEND, DEFAULT_BROKER, ConfigError, Settings, split_list

SECRET = "a-secret-of-at-least-32-bytes-for-hs256"


def settings(**overrides: Any) -> Settings:
    return Settings(**{"secrets": [SECRET], **overrides})


def refused(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(**overrides).validate()
    return str(caught.value)


def test_defaults_with_a_secret_are_valid() -> None:
    valid = settings()
    assert valid.validate() is valid
    assert (valid.broker_url, valid.result_backend) == (DEFAULT_BROKER, DEFAULT_BACKEND)
    assert (valid.host, valid.port) == ("127.0.0.1", 8000)


def test_a_full_production_setup_is_valid() -> None:
    settings(
        broker_url="amqps://user:pw@rabbit.internal:5671/vhost",
        result_backend="db+postgresql://user:pw@db/celery",
        mongo_url="mongodb+srv://cluster.example.net/",
        host="0.0.0.0",
        port=443,
        secrets=["new-secret-" + "n" * 32, "old-secret-" + "o" * 32],
        cors_origins=["https://app.example.com", "http://localhost:5173"],
    ).validate()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "", "sqs://"])
def test_bad_broker_scheme(url: str) -> None:
    message = refused(broker_url=url)
    assert message.startswith("--broker: unsupported URL scheme")
    assert "redis" in message and "amqp" in message  # says what would work


def test_broker_url_with_a_bad_port() -> None:
    assert refused(broker_url="redis://127.0.0.1:notaport/0").startswith(
        "--broker: 'redis://127.0.0.1:notaport/0' is not a valid URL"
    )


def test_backend_may_use_a_plus_scheme_but_broker_may_not() -> None:
    settings(result_backend="db+sqlite:///results.db").validate()
    assert refused(result_backend="ftp://x").startswith("--backend:")
    assert refused(broker_url="redis+sentinel://x").startswith("--broker:")


def test_bad_mongo_url() -> None:
    assert refused(mongo_url="postgres://db/events").startswith("--mongo:")


@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_bad_port(port: int) -> None:
    assert refused(port=port) == f"--port: {port} is not a TCP port (0-65535)"


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_edges_are_valid(port: int) -> None:
    settings(port=port).validate()


def test_missing_secret_without_insecure() -> None:
    message = refused(secrets=[])
    assert "no secret" in message and "PUSHSERVER_SECRET" in message and "--insecure" in message


def test_insecure_needs_no_secret() -> None:
    Settings(insecure=True).validate()


def test_empty_secret_in_the_list() -> None:
    assert "empty secret" in refused(secrets=["good", ""])


@pytest.mark.parametrize("origin", ["app.example.com", "ftp://app.example.com", "localhost:5173", ""])
def test_bad_cors_origin(origin: str) -> None:
    assert refused(cors_origins=["https://ok.example.com", origin]).startswith(f"--cors: {origin!r}")


@pytest.mark.parametrize("origin", ["*", "https://app.example.com", "http://localhost:5173"])
def test_good_cors_origin(origin: str) -> None:
    settings(cors_origins=[origin]).validate()


def test_other_limits() -> None:
    assert "--max-tasks" in refused(max_tasks=0)
    assert "--progress-hz" in refused(progress_hz=0)
    assert "--progress-hz" in refused(progress_hz=float("nan"))


def test_client_message_limits_and_transports() -> None:
    assert "--message-rate" in refused(message_rate=0)
    assert "--message-rate" in refused(message_rate=float("nan"))
    assert "--max-connection-bytes" in refused(max_connection_bytes=64 * 1024)
    settings(max_connection_bytes=65 * 1024).validate()
    assert "--transports" in refused(transports="polling")
    assert "--transports" in refused(transports="")
    settings(transports="websocket").validate()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://a.example.com,https://b.example.com", ["https://a.example.com", "https://b.example.com"]),
        (" a , ,b ,, ", ["a", "b"]),
        ("single", ["single"]),
        ("", []),
        (" , ", []),
        (None, []),
    ],
)
def test_split_list(value: str | None, expected: list[str]) -> None:
    assert split_list(value) == expected


@pytest.mark.parametrize(
    "secrets, says",
    [
        (["change-me"], "--secret: the secret is 9 bytes; HS256 needs at least 32"),
        ([SECRET, "short"], "--secret: secret 2 of 2 is 5 bytes"),
        ([SECRET, ""], "--secret: empty secret in the list"),
    ],
)
def test_short_secrets_are_refused(secrets: list[str], says: str) -> None:
    message = refused(secrets=secrets)
    assert message.startswith(says) and "\n" not in message
    if "bytes" in says:
        assert "openssl rand -hex 32" in message  # says how to make a good one


@pytest.mark.parametrize("leeway", [-0.5, 300.01, 3600])
def test_token_leeway_must_be_0_to_300_seconds(leeway: float) -> None:
    assert refused(token_leeway=leeway) == "--token-leeway must be between 0 and 300 seconds"


@pytest.mark.parametrize("leeway", [0, 5, 300])
def test_token_leeway_edges_are_valid(leeway: float) -> None:
    settings(token_leeway=leeway).validate()


def test_the_event_log_queue_needs_room_for_a_few_whole_events() -> None:
    assert refused(event_log_queue_bytes=4 * 1024 * 1024 - 1).startswith("--event-log-queue-bytes must be at least")
    settings(event_log_queue_bytes=4 * 1024 * 1024).validate()
    assert Settings().event_log_queue_bytes == 64 * 1024 * 1024
