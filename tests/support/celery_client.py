"""Closing the tests' own Celery client before the Redis it talks to is stopped."""

from __future__ import annotations

import gc

from celery import Celery


def close_client(app: Celery) -> None:
    """Close ``app``, its result pub/sub first.

    AsyncResults unsubscribe from Redis when they are collected, even at
    interpreter exit after Redis is gone, where the error lands after pytest's
    summary line: collect them now and close the pub/sub, so that late
    ``__del__`` calls find nothing to unsubscribe from.
    """
    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if getattr(consumer, "_pubsub", None) is not None:
        try:
            consumer._pubsub.close()
        except Exception:  # noqa: BLE001 - the broker may be gone already
            pass
        consumer._pubsub = None
    app.close()
