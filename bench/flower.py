"""Ingest against Flower: pushserver and Flower on the same recorded stream, in the same run.

    .venv/bin/python bench/flower.py                 # 3 runs, 4 000 / 8 000 tasks
    .venv/bin/python bench/flower.py --runs 5 --tasks 6000

Flower is not a dependency of the project: ``pip install flower`` into the
venv first. Per stream shape (unbatched: one message per event; batched:
``task.multi``) and per run, each consumer is started fresh on a private Redis
and drains the stream alone, replayed at max speed by publish.py, saturating
(the publisher holds while the consumer has ``ingest.MAX_BACKLOG`` bytes
queued, so Redis never cuts it off):

- ``pushserver``: ingest.measure() itself, counting
  ``pushserver_events_ingested_total``;
- ``flower``: ``celery --broker=<private redis> flower --port=P``, counting
  ``flower_events_total`` on its /metrics (incremented on Flower's IO loop when
  it applies an event to its state, i.e. processed, not merely received).

Events/s use ingest.steady_rate (90% of the final count over the time between
reaching 5% and 95% of it), samples every ``ingest.SAMPLE_S``. The ratio
pushserver/flower is taken per run (both consumers in the same run on the
same stream) and reported as median (min–max). Prints markdown tables and
writes bench/results/flower-latest.json.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402
from common import (BIN, BENCH_DIR, ConsumerProcess, ForeignLoad, PrivateRedis, cpu_seconds, dump_json, free_port, log,  # noqa: E402
                    machine_info, metric_sum, parse_metrics, server_code, spread, stop_process, versions,
                    wait_for, wait_quiet)
from ingest import MAX_BACKLOG, SAMPLE_S, IDLE_S, Publisher, cpu_percent, max_backlog_bytes, steady_rate  # noqa: E402
from stream import build_streams  # noqa: E402

TARGET_RATIO = 3.0


class FlowerProcess(ConsumerProcess):
    """``celery flower`` against the private Redis, counting events on its /metrics."""

    def __init__(self, redis_server: PrivateRedis) -> None:
        self.redis = redis_server
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> "FlowerProcess":
        celery = shutil.which("celery", path=str(BIN)) or str(BIN / "celery")
        before = self.redis.pattern_subscribers()
        self.log_path = Path(f"/tmp/flower-bench-{self.port}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [celery, f"--broker={self.redis.url}", "flower", f"--port={self.port}", "--address=127.0.0.1",
             "--logging=warning"],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/healthcheck")[0] == 200, 30, "Flower's HTTP port")
        wait_for(lambda: self.redis.pattern_subscribers() > before, 30, "Flower's event subscription")
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
        return metric_sum(parse_metrics(body.decode()), "flower_events_total")


def measure_flower(redis_server: PrivateRedis, stream: Path, expected: int,
                   timeout: float = 120.0) -> dict[str, Any]:
    """ingest.measure() for Flower: same publisher, same sampling, same estimator."""
    wait_quiet()
    with FlowerProcess(redis_server) as flower:
        publisher = Publisher(redis_server, stream, max_backlog=MAX_BACKLOG)
        samples: list[tuple[float, float]] = []
        cpu_samples: list[tuple[float, float]] = []
        peak_backlog = 0
        base = flower.processed()  # Flower's own start-up events, if any
        foreign = ForeignLoad()
        publisher.go()
        t_start = last_change = time.monotonic()
        count = 0.0
        timed_out = False
        while True:
            time.sleep(SAMPLE_S)
            now = time.time()
            peak_backlog = max(peak_backlog, max_backlog_bytes(redis_server))
            new = flower.processed() - base
            cpu_samples.append((now, cpu_seconds(flower.pid)))
            samples.append((now, new))
            if new != count:
                count, last_change = new, time.monotonic()
            if publisher.done() and (count >= expected or time.monotonic() - last_change > IDLE_S):
                break
            if time.monotonic() - t_start > timeout:
                timed_out = True
                log(f"flower: timed out after {timeout:.0f}s")
                break
        foreign_cores = foreign.cores()
        if timed_out and not publisher.done():
            stop_process(publisher.proc)
            pub = {"events": expected, "events_per_s": 0.0, "messages_unheard": 0, "backlog_holds": 0}
        else:
            pub = publisher.result()
        disconnects = redis_server.outbuf_disconnections()
    events_per_s, window = steady_rate(samples, count)
    return {
        "consumer": "flower",
        "sent": pub["events"], "received": int(count), "lost": int(pub["events"] - count),
        "lost_pct": 100.0 * (pub["events"] - count) / pub["events"] if pub["events"] else 0.0,
        "events_per_s": events_per_s, "cpu_pct": cpu_percent(cpu_samples, window),
        "published_per_s": pub["events_per_s"], "messages_unheard": pub["messages_unheard"],
        "backlog_holds": pub["backlog_holds"], "peak_backlog_mb": peak_backlog / 1e6,
        "foreign_cores": foreign_cores, "redis_outbuf_disconnections_total": disconnects,
        "error": "timed out" if timed_out else None,
    }


def run(runs: int, tasks: int) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs, "max_backlog": MAX_BACKLOG, "sample_s": SAMPLE_S, "saturating": {}}
    with PrivateRedis() as redis_server:
        vers = versions(redis_server.version())
        try:
            vers["flower"] = metadata.version("flower")
            vers["tornado"] = metadata.version("tornado")
        except metadata.PackageNotFoundError:
            raise SystemExit("bench/flower.py: Flower is not installed (.venv/bin/pip install flower)")
        out["meta"] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "machine": machine_info(), "versions": vers, "server_code": server_code(),
                       "command": " ".join(sys.argv)}
        workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-flower-"))
        streams = build_streams({"unbatched": tasks, "batched": 2 * tasks}, redis_server.url,
                                redis_server.client, workdir)
        out["streams"] = streams
        for shape, stream in streams.items():
            path, expected = Path(stream["path"]), stream["events"]
            sat = out["saturating"][shape] = {"pushserver": [], "flower": []}
            for i in range(runs):
                r = ingest.measure("pushserver", redis_server, path, expected, max_backlog=MAX_BACKLOG)
                sat["pushserver"].append(r)
                log(f"flower bench {shape} run {i + 1}/{runs}: {ingest.describe(r)}")
                r = measure_flower(redis_server, path, expected)
                sat["flower"].append(r)
                log(f"flower bench {shape} run {i + 1}/{runs}: {ingest.describe(r)}")
    return out


def ratios(push: list[dict], flower: list[dict]) -> list[float]:
    return [p["events_per_s"] / f["events_per_s"] for p, f in zip(push, flower)
            if p["events_per_s"] and f["events_per_s"]]


def table(out: dict[str, Any]) -> str:
    lines = ["| stream | events | pushserver ev/s | pushserver CPU | Flower ev/s | Flower CPU | "
             "Flower lost | pushserver / Flower | target ≥ 3× |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for shape, sat in out["saturating"].items():
        push, flower = sat["pushserver"], sat["flower"]
        r = spread(ratios(push, flower))
        lost = spread(f["lost_pct"] for f in flower)
        ok = "met" if r.values and r.median >= TARGET_RATIO else "**missed**"
        lines.append(
            f"| {shape} | {out['streams'][shape]['events']:,} | {spread(p['events_per_s'] for p in push).fmt()} | "
            f"{spread(p['cpu_pct'] for p in push).fmt(0, '%')} | {spread(f['events_per_s'] for f in flower).fmt()} | "
            f"{spread(f['cpu_pct'] for f in flower).fmt(0, '%')} | {lost.fmt(1, '%')} | {r.fmt(2, '×')} | {ok} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tasks", type=int, default=4000,
                   help="tasks in the unbatched stream, 7 events each; the batched one has twice as many")
    args = p.parse_args()
    t0 = time.time()
    out = run(args.runs, args.tasks)
    out["seconds"] = time.time() - t0
    dump_json(BENCH_DIR / "results" / "flower-latest.json", out)
    print(table(out))
    print(f"\n{args.runs} runs, median (min–max); {out['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
