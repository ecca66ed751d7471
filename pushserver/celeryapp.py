"""The Celery app pushserver uses to receive events and read results; it runs no tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery


def make_celery(
    broker_url: str,
    result_backend: str = "disabled",
    broker_transport_options: Mapping[str, Any] | None = None,
    backend_transport_options: Mapping[str, Any] | None = None,
) -> Celery:
    """A Celery app that fails fast on a dead broker, so that our own loops decide when to retry.

    The transport options are Celery's own (``master_name`` for Sentinel, ``sentinel_kwargs``, ...).
    """
    app = Celery("pushserver", broker=broker_url, backend=result_backend, set_as_current=False)
    app.conf.update(
        broker_connection_timeout=4,
        broker_connection_retry_on_startup=False,
        redis_socket_connect_timeout=4,
        redis_socket_timeout=10,
        result_accept_content=["json"],
        accept_content=["json"],
        broker_transport_options=dict(broker_transport_options or {}),
        result_backend_transport_options=dict(backend_transport_options or {}),
    )
    return app
