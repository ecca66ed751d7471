"""Flower as an ingest consumer: ``celery flower`` on the private Redis, its processed count from /metrics.

ingest.py measures it beside the bare Receiver and pushserver, on the same
recorded stream, in the same run (``python -m bench.run --only ingest``). Flower is
not a dependency of the project; the ``bench`` extra installs it
(``pip install -e '.[bench]'``, which ``make bench`` does).

The count is ``flower_events_total``, incremented on Flower's IO loop when it
applies an event to its state (processed, not merely received).
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
from pathlib import Path

from bench.common import BIN, ConsumerProcess, PrivateRedis, wait_for
from dev.metrics import metric_sum, parse
from dev.stack import free_port


class FlowerProcess(ConsumerProcess):
    """``celery flower`` against the private Redis, counting events on its /metrics."""

    def __init__(self, redis_server: PrivateRedis) -> None:
        self.redis = redis_server
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> FlowerProcess:
        celery = shutil.which("celery", path=str(BIN)) or str(BIN / "celery")
        since = self.redis.last_client_id()
        self.log_path = Path(f"/tmp/flower-bench-{self.port}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                celery,
                f"--broker={self.redis.url}",
                "flower",
                f"--port={self.port}",
                "--address=127.0.0.1",
                "--logging=warning",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: self.get("/healthcheck")[0] == 200, 30, "Flower's HTTP port")
            wait_for(lambda: self.redis.pattern_subscribed_since(since), 30, "Flower's event subscription")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"flower exited with {self.proc.returncode}; see {self.log_path}")
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self._conn.request("GET", path)
            resp = self._conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise

    def processed(self) -> float:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"Flower /metrics answered {status}")
        return metric_sum(parse(body.decode()), "flower_events_total")
