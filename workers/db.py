"""The workers' MongoDB: one ``MongoClient`` per worker process, from ``MONGO_URL``.

The app's database (``MONGO_APP_DB``, Express's: ``users``, ``tasks``) is read
and updated here; the workers' own database (``MONGO_WORKERS_DB``: ``reports``,
``tasks_archive``) is written only by them.

A ``MongoClient`` holds sockets and monitor threads, which do not survive a
fork: the prefork pool's children each make their own on first use (the client
remembers the PID it was made in) and ``worker_process_init`` drops any client
inherited from the parent.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery.signals import worker_process_init
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

DEFAULT_APP_DB = "app"
DEFAULT_WORKERS_DB = "workers"
DEFAULT_TIMEOUT_MS = 5000


class MongoNotConfigured(RuntimeError):
    """``MONGO_URL`` is not set, so a task that needs MongoDB cannot run."""


_client: MongoClient[dict[str, Any]] | None = None
_client_key: tuple[int, str] | None = None  # (process id, URL) the client was made for
# Threads-pool tasks may ask for the client at the same moment: make one.
_lock = threading.Lock()


def mongo_url() -> str:
    """The connection string from ``MONGO_URL``; raise MongoNotConfigured when it is unset."""
    url = (os.environ.get("MONGO_URL") or "").strip()
    if not url:
        raise MongoNotConfigured("MONGO_URL is not set: the workers need MongoDB (e.g. mongodb://127.0.0.1:27017)")
    return url


def client() -> MongoClient[dict[str, Any]]:
    """This process's ``MongoClient``, made on first use (and again in a forked child or for a new URL)."""
    global _client, _client_key
    url = mongo_url()
    with _lock:
        if _client is None or _client_key != (os.getpid(), url):
            if _client is not None and _client_key is not None and _client_key[0] == os.getpid():
                _client.close()  # MONGO_URL changed in this process (tests do): the old server is done with
            timeout = int(os.environ.get("MONGO_TIMEOUT_MS") or DEFAULT_TIMEOUT_MS)
            # connect=False: no socket or monitor thread until the first operation, so
            # a client made before a fork is never used across it.
            _client = MongoClient(
                url,
                connect=False,
                serverSelectionTimeoutMS=timeout,
                connectTimeoutMS=timeout,
                tz_aware=True,
                appname="celery-pushserver-workers",
            )
            _client_key = (os.getpid(), url)
        return _client


def app_db() -> Database[dict[str, Any]]:
    """The app's database (Express's), named by ``MONGO_APP_DB``."""
    return client()[os.environ.get("MONGO_APP_DB") or DEFAULT_APP_DB]


def workers_db() -> Database[dict[str, Any]]:
    """The workers' own database, named by ``MONGO_WORKERS_DB``."""
    return client()[os.environ.get("MONGO_WORKERS_DB") or DEFAULT_WORKERS_DB]


def users() -> Collection[dict[str, Any]]:
    """Express's ``users`` collection (``_id`` is the user id)."""
    return app_db()["users"]


def tasks() -> Collection[dict[str, Any]]:
    """Express's ``tasks`` collection: one record per dispatched task, ``_id`` is the task id."""
    return app_db()["tasks"]


def reports() -> Collection[dict[str, Any]]:
    """The nightly reports, newest by ``generated_at``."""
    return workers_db()["reports"]


def tasks_archive() -> Collection[dict[str, Any]]:
    """Task records the nightly report moved out of ``tasks``."""
    return workers_db()["tasks_archive"]


@worker_process_init.connect
def _forget_inherited_client(**kwargs: Any) -> None:
    """In a new pool process, drop the parent's client: the next use makes this process's own."""
    global _client, _client_key, _lock
    # The fork may have happened while a parent thread held the lock.
    _lock = threading.Lock()
    _client, _client_key = None, None
