"""What every benchmark shares: a private Redis, the server under test, process CPU, statistics, versions.

Everything runs on loopback against a Redis started for the benchmark alone
(no persistence, a free port), so nothing else on the machine publishes into
the event exchange or competes for the broker.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from dev.metrics import Sample, metric_sum, parse
from dev.stack import Proc, free_port, is_ready, rss_bytes, start_redis, wait_until

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BIN = Path(sys.executable).parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress lines go to stderr, so stdout keeps only the summary."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """``dev.stack.wait_until``, taking an exception from ``predicate`` for "not yet" (a process still starting)."""

    def attempt() -> object:
        try:
            return predicate()
        except Exception:  # noqa: BLE001 - not up yet
            return False

    wait_until(attempt, timeout, what, interval)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the one process we started (by its PID), then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


_stopping: list[threading.Thread] = []


def stop_soon(proc: subprocess.Popen) -> None:
    """stop_process() in the background, so the next measurement can set up meanwhile.

    Measurements call wait_stopped() (wait_quiet() does) before their window
    opens, so a consumer shutting down never overlaps one being measured.
    """
    thread = threading.Thread(target=stop_process, args=(proc,), daemon=True)
    thread.start()
    _stopping.append(thread)


def wait_stopped() -> None:
    """Wait until every process handed to stop_soon() has exited."""
    while _stopping:
        _stopping.pop().join()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a server may run parts of itself in child processes)."""
    tree, i = [pid], 0
    while i < len(tree):
        try:
            threads = os.listdir(f"/proc/{tree[i]}/task")
        except OSError:
            threads = []
        for tid in threads:
            try:
                with open(f"/proc/{tree[i]}/task/{tid}/children") as f:
                    tree.extend(int(c) for c in f.read().split())
            except OSError:
                continue
        i += 1
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process (all its threads) and its live descendants."""
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                raise
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its live descendants, added up."""
    return sum(rss_bytes(p) for p in process_tree(pid))


class CpuMeter:
    """CPU% of a process over a window (100% = one core)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = cpu_seconds(self.pid)

    def percent(self) -> float:
        dt = time.monotonic() - self.t0
        return 100.0 * (cpu_seconds(self.pid) - self.c0) / dt if dt > 0 else 0.0


# -- Redis ---------------------------------------------------------------------


class PrivateRedis:
    """A redis-server subprocess on a free port, with Redis's default limits, stopped on exit."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def backend_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def __enter__(self) -> PrivateRedis:
        if shutil.which("redis-server") is None:
            raise SystemExit("bench: redis-server not found (apt-get install redis-server)")
        self.proc, _ = start_redis(Path(tempfile.mkdtemp(prefix="pushserver-bench-redis-")), port=self.port)
        self.client = redis.Redis(port=self.port)
        log(f"private redis-server pid {self.proc.pid} on port {self.port}")
        return self

    def __exit__(self, *exc: Any) -> None:
        wait_stopped()
        if self.proc is not None:
            self.proc.stop()

    def version(self) -> str:
        return self.client.info("server")["redis_version"]

    def last_client_id(self) -> int:
        """The newest connection's id (Redis numbers its connections in order)."""
        return max(int(c["id"]) for c in self.client.client_list())

    def pattern_subscribed_since(self, client_id: int) -> bool:
        """Whether a connection newer than ``client_id`` holds a pattern subscription (the event receivers').

        Unlike counting subscribers, this holds while an earlier consumer is still shutting down.
        """
        return any(
            int(c["id"]) > client_id and int(c.get("psub", 0)) > 0 for c in self.client.client_list(_type="pubsub")
        )

    def outbuf_disconnections(self) -> int | None:
        """Subscribers Redis cut off for exceeding their output buffer limit (Redis >= 7)."""
        return self.client.info("stats").get("client_output_buffer_limit_disconnections")


# -- the server under test -----------------------------------------------------


#: A directory holding a ``pushserver`` package to run instead of the installed (editable) one;
#: set by ``use_server_snapshot`` so that every run measures the same code.
SERVER_SOURCE: Path | None = None
SERVER_REV: str | None = None


def use_server_snapshot(rev: str) -> str:
    """Export ``pushserver/`` at git revision ``rev`` to a temporary directory and run the server from it."""
    global SERVER_SOURCE, SERVER_REV
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"], check=True, capture_output=True, text=True
    ).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"pushserver-{sha[:10]}-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha, "pushserver"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    SERVER_SOURCE, SERVER_REV = target, sha
    return sha


def server_code() -> str:
    """Which pushserver code the benchmark runs: a commit, or the working tree (and whether it differs)."""
    if SERVER_REV:
        return f"commit {SERVER_REV[:10]} (exported with git archive)"
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "pushserver"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "working tree (not a git checkout)"
    return f"working tree at {sha[:10]}" + (" with uncommitted changes to pushserver/" if dirty else "")


def server_command(args: Sequence[str], wrapper: Sequence[str] = ()) -> tuple[list[str], dict[str, str], str | None]:
    """The command line, environment and cwd that start ``pushserver <args>`` from the code under test.

    ``wrapper`` is a script (and its arguments) that runs the pushserver CLI itself with something
    switched on around it, such as bench/gc_probe.py LOG.
    """
    env = dict(os.environ)
    cwd = None
    if wrapper:
        cmd = [PYTHON, *wrapper, *args]
    elif SERVER_SOURCE is not None:
        cmd = [PYTHON, "-m", "pushserver", *args]
    else:
        cmd = [str(BIN / "pushserver"), *args]
    if SERVER_SOURCE is not None:
        env["PYTHONPATH"] = str(SERVER_SOURCE)
        cwd = str(SERVER_SOURCE)
    return cmd, env, cwd


class ConsumerProcess:
    """An event consumer with an HTTP port (pushserver, Flower), run as a context manager and stopped by PID."""

    proc: subprocess.Popen | None
    _conn: http.client.HTTPConnection | None
    #: Leaving the ``with`` block stops the process in the background (stop_soon): for a
    #: run's server, whose shutdown may overlap the next run's setup but no measurement.
    background_stop = False

    def __exit__(self, *exc: Any) -> None:
        self.stop(wait=not self.background_stop)

    def stop(self, wait: bool = True) -> None:
        """Stop the process; with ``wait=False`` in the background (see stop_soon)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is not None:
            (stop_process if wait else stop_soon)(self.proc)
        self._log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processed(self) -> float:
        """Events the consumer has applied to its state so far."""
        raise NotImplementedError


class PushServerProcess(ConsumerProcess):
    """``pushserver serve --insecure`` (or, ``secure``, with the ``--secret`` in ``extra_args``) against the
    private Redis, as users start it."""

    def __init__(
        self,
        redis_server: PrivateRedis,
        extra_args: Sequence[str] = (),
        gc_log: Path | None = None,
        extra_env: dict[str, str] | None = None,
        background_stop: bool = False,
        wrapper: Sequence[str] = (),
        secure: bool = False,
    ) -> None:
        self.redis = redis_server
        self.secure = secure  # tokens required: ``extra_args`` holds --secret, and --insecure is left out
        self.background_stop = background_stop
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.gc_log = gc_log
        # With a GC log, the server runs under bench/gc_probe.py, which writes it.
        self.wrapper = [str(BENCH_DIR / "gc_probe.py"), str(gc_log)] if gc_log is not None else list(wrapper)
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> PushServerProcess:
        cmd, env, cwd = server_command(
            [
                "serve",
                *([] if self.secure else ["--insecure"]),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--broker",
                self.redis.url,
                "--backend",
                self.redis.backend_url,
                "--log-level",
                "WARNING",
                *self.extra_args,
            ],
            self.wrapper,
        )
        env.update(self.extra_env)
        self.log_path = Path(f"/tmp/pushserver-bench-{self.port}.log")
        self._log = open(self.log_path, "wb")
        since = self.redis.last_client_id()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            wait_until(lambda: self.proc.poll() is not None or is_ready(self.url), 30, "pushserver /readyz")
        except AssertionError:
            stop_process(self.proc)
            raise TimeoutError(f"pushserver not ready after 30s; see {self.log_path}") from None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"pushserver exited with {self.proc.returncode} at start: " + " / ".join(tail))
        wait_for(lambda: self.redis.pattern_subscribed_since(since), 10, "pushserver's event subscription")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"pushserver exited with {self.proc.returncode}; see {self.log_path}")
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                self._conn.request("GET", path)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def metrics(self) -> list[Sample]:
        """The samples of /metrics (read them with ``dev.metrics.metric_sum``)."""
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse(body.decode())

    def processed(self) -> float:
        """Events merged into the store by the event loop, not merely decoded."""
        return metric_sum(self.metrics(), "pushserver_events_ingested_total")


# -- statistics ------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


@dataclass
class Spread:
    """A figure measured over several runs: median and min-max."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def fmt(self, digits: int = 0, unit: str = "") -> str:
        if not self.values:
            return "n/a"
        f = f"{{:,.{digits}f}}"
        if len(self.values) == 1:
            return f.format(self.median) + unit
        return f"{f.format(self.median)}{unit} ({f.format(self.low)}–{f.format(self.high)})"


def spread(values: Iterable[float | None]) -> Spread:
    return Spread([float(v) for v in values if v is not None])


# -- the machine and the versions ------------------------------------------------


def machine_info() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
    }


def versions(redis_version: str) -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for dist, label in [
        ("celery", "Celery"),
        ("kombu", "kombu"),
        ("redis", "redis-py"),
        ("hiredis", "hiredis"),
        ("python-socketio", "python-socketio"),
        ("python-engineio", "python-engineio"),
        ("aiohttp", "aiohttp"),
        ("orjson", "orjson"),
        ("flower", "Flower"),
        ("celery-pushserver", "celery-pushserver"),
    ]:
        try:
            out[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[label] = "not installed"
    out["Redis server"] = redis_version
    return out


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


# -- other people's load ------------------------------------------------------------


def _system_busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def _our_tree() -> dict[int, float]:
    """CPU seconds of every live descendant of this process."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    me = os.getpid()
    ours: dict[int, float] = {}
    for pid in cpu:
        p, hops = pid, 0
        while p not in (0, 1, me) and hops < 50:
            p, hops = parents.get(p, 0), hops + 1
        if p == me:
            ours[pid] = cpu[pid]
    return ours


class ForeignLoad:
    """How many cores processes *not* started by the benchmark used during a window.

    System busy time (/proc/stat) minus the benchmark's own: this process,
    its live descendants, and the children it reaped meanwhile. On a shared
    2-core machine this tells a clean run from one that competed with, say,
    a test suite.
    """

    def __init__(self) -> None:
        import resource

        self._resource = resource
        self.t0 = time.monotonic()
        self.busy0 = _system_busy_seconds()
        self.tree0 = _our_tree()
        self.self0 = self._rusage()

    def _rusage(self) -> float:
        r = self._resource
        a, b = r.getrusage(r.RUSAGE_SELF), r.getrusage(r.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def cores(self) -> float:
        dt = time.monotonic() - self.t0
        busy = _system_busy_seconds() - self.busy0
        tree = _our_tree()
        ours = self._rusage() - self.self0
        for pid, c in tree.items():
            ours += c - self.tree0.get(pid, 0.0)
        for pid, c in self.tree0.items():
            if pid not in tree:  # reaped meanwhile: RUSAGE_CHILDREN holds its whole life
                ours -= c
        return max(0.0, (busy - ours) / dt) if dt > 0 else 0.0


#: Before each measurement, wait up to this many seconds for other processes to quiet down (0: never);
#: run.py's --wait-quiet sets it through set_wait_quiet().
_wait_quiet_s = 0.0


def set_wait_quiet(seconds: float) -> None:
    """Make wait_quiet() wait up to ``seconds`` for the machine to quiet down (0: never)."""
    global _wait_quiet_s
    _wait_quiet_s = seconds


def wait_quiet(threshold: float = 0.15, window: float = 0.5) -> None:
    """Wait until the processes the benchmark is stopping are gone, then (at most set_wait_quiet()'s seconds)
    until processes outside the benchmark use under ``threshold`` cores."""
    wait_stopped()
    if _wait_quiet_s <= 0:
        return
    deadline = time.monotonic() + _wait_quiet_s
    load = 0.0
    while time.monotonic() < deadline:
        meter = ForeignLoad()
        time.sleep(window)
        load = meter.cores()
        if load < threshold:
            return
    log(f"machine still busy ({load:.2f} cores used by other processes) after {_wait_quiet_s:.0f}s; measuring anyway")


#: Client process k connects from 127.0.0.(FIRST_SOURCE + k): one address each, so many processes can hold many
#: connections to one server port without running out of local ports, as browsers from many hosts would.
FIRST_SOURCE = 2


def loopback_source(k: int) -> str:
    """The loopback address client process ``k`` (from 0) connects from."""
    return f"127.0.0.{FIRST_SOURCE + k}"


def shares(n: int, parts: int) -> list[int]:
    """``n`` split into ``parts`` counts as even as can be, the larger first."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class ClientFleet:
    """Client processes driven over stdin: each answers a JSON line when ready and one per command; ``quit``
    ends them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str]) -> None:
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, command: str) -> None:
        """Send ``command`` to every process, not waiting for the answers."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()

    def answers(self) -> list[dict[str, Any]]:
        """Each process's next JSON line, in order."""
        out = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"client process {proc.pid} exited ({proc.poll()})")
            out.append(json.loads(line))
        return out

    def ask(self, command: str) -> list[dict[str, Any]]:
        """Send ``command`` to every process and return their answers."""
        self.send(command)
        return self.answers()

    def close(self) -> None:
        """``quit``, then up to 30 s each, then killed."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
                    proc.wait(30)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
