"""Event load for the fault suite, from the benchmarks' own tools (bench/stream.py, bench/publish.py).

A stream of task lifecycles is *recorded* through Celery's real Dispatcher
(bench/stream.py: the bytes kombu would PUBLISH), then replayed by
bench/publish.py in a process of its own, paced (``rate``) or as fast as the
consumer drains (``max_backlog``). Every event is a task event with a unique
task id, so what the server ingests, logs and delivers can be counted exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import stream as bench_stream
from dev.stack import ROOT

#: sent, received, started, 3 x progress, succeeded
EVENTS_PER_TASK = 7


@dataclass
class RecordedStream:
    path: Path
    events: int
    messages: int
    task_ids: list[str]


def record_stream(
    broker_url: str, events: int, path: Path, shape: str = "unbatched", concurrency: int = 64, seed: int = 7
) -> RecordedStream:
    """Record about ``events`` task events (whole lifecycles) for ``broker_url``'s event channel."""
    n_tasks = max(1, events // EVENTS_PER_TASK)
    specs = list(bench_stream.lifecycles(n_tasks, progress_steps=3, concurrency=concurrency, seed=seed))
    recorded = bench_stream.record(specs, broker_url, shape)
    recorded.save(path)
    task_ids = [fields["uuid"] for _, kind, fields in specs if kind == "task-sent"]
    return RecordedStream(path, recorded.events, len(recorded.messages), task_ids)


class Publisher:
    """bench/publish.py replaying a recorded stream onto the broker, in its own process."""

    def __init__(
        self, broker_url: str, stream: RecordedStream, log_dir: Path, *, rate: float = 0.0, max_backlog: int = 0
    ) -> None:
        args = [sys.executable, "-m", "bench.publish", "--redis", broker_url, "--stream", str(stream.path)]
        if rate:
            args += ["--rate", str(rate)]
        if max_backlog:
            args += ["--max-backlog", str(max_backlog)]
        self._stderr = open(log_dir / f"publisher-{os.getpid()}-{id(self)}.log", "ab")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        line = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if line != "READY":
            self.stop()
            raise RuntimeError(f"publisher did not start: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the run to end; its figures (events, seconds, messages_unheard, ...)."""
        out, _ = self.proc.communicate(timeout=timeout)
        self._stderr.close()
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        if not self._stderr.closed:
            self._stderr.close()
