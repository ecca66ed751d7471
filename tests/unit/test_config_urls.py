"""Broker and backend URLs that Celery would take but then fail on are refused at start, in one line,
and no password ever appears in a message."""

from __future__ import annotations

import pytest

from pushserver.config import ConfigError, Settings, json_object, redact_url


def settings(**kw: object) -> Settings:
    return Settings(insecure=True, **kw)  # type: ignore[arg-type]


def test_a_rediss_backend_without_ssl_cert_reqs_is_refused_with_what_to_add() -> None:
    with pytest.raises(ConfigError) as exc:
        settings(result_backend="rediss://:s3cret@redis.example:6380/1").validate()
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("--backend: a rediss:// URL needs ssl_cert_reqs: add ?ssl_cert_reqs=required")
    assert "s3cret" not in message


def test_a_rediss_broker_without_ssl_cert_reqs_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="^--broker: a rediss:// URL needs ssl_cert_reqs"):
        settings(broker_url="rediss://redis.example:6380/0").validate()


def test_rediss_urls_with_ssl_cert_reqs_pass() -> None:
    url = "rediss://redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem"
    settings(broker_url=url, result_backend=url.replace("/0?", "/1?")).validate()
    with pytest.raises(ConfigError, match="ssl_cert_reqs='maybe'"):
        settings(broker_url="rediss://h:1/0?ssl_cert_reqs=maybe").validate()


def test_sentinel_urls_need_a_master_name_and_may_list_several_sentinels() -> None:
    url = "sentinel://:pw@10.0.0.1:26379/0;sentinel://:pw@10.0.0.2:26379/0;sentinel://:pw@10.0.0.3:26379/0"
    with pytest.raises(ConfigError) as exc:
        settings(broker_url=url).validate()
    assert '--broker-transport-options \'{"master_name": "mymaster"}\'' in str(exc.value)
    with pytest.raises(ConfigError, match="--backend-transport-options"):
        settings(result_backend=url).validate()
    options = {"master_name": "mymaster"}
    settings(
        broker_url=url, result_backend=url, broker_transport_options=options, backend_transport_options=options
    ).validate()


def test_an_invalid_url_message_holds_no_password() -> None:
    with pytest.raises(ConfigError) as exc:
        settings(broker_url="redis://user:hunter2@host:notaport/0").validate()
    assert "hunter2" not in str(exc.value) and "user:***@host" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        settings(mongo_url="http://app:hunter2@mongo:27017/").validate()
    assert "hunter2" not in str(exc.value)


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://acl-user:pw@h/0") == "redis://acl-user:***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("sentinel://:a@h1:1;sentinel://:b@h2:2") == "sentinel://:***@h1:1;sentinel://:***@h2:2"
    assert redact_url("mongodb://h/?authSource=admin&password=x") == "mongodb://h/?authSource=admin&password=***"


def test_transport_options_are_json_objects() -> None:
    assert json_object(None) == {} and json_object(" ") == {}
    assert json_object('{"master_name": "m", "sentinel_kwargs": {"password": "p"}}')["master_name"] == "m"
    with pytest.raises(ConfigError, match="not a JSON object"):
        json_object("[1]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        json_object("{master_name: m}")


def test_reconcile_intervals_are_consistent() -> None:
    with pytest.raises(ConfigError, match="--reconcile-max-interval"):
        settings(reconcile_after=30, reconcile_max_interval=10).validate()
    settings(reconcile_after=0, reconcile_max_interval=10).validate()  # 0: off
