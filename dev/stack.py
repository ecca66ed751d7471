"""A local stack of real processes (Redis, Celery workers, pushserver, nx-27017), for the demo, tests and benchmarks.

Every process is started in its own session and stopped by its PID (process
group), so stopping the stack never touches anything it did not start.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def restartable_port() -> int:
    """A free TCP port below the kernel's ephemeral range, for a server stopped and started again on it.

    A ``free_port()`` comes from the ephemeral range, which the kernel also hands
    out as the local port of outgoing connections: while its server is down, any
    client on the machine may take it, and the restart fails (``address in use``).
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below the ephemeral range ({low})")


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child process with its output in a log file; ``stop()`` ends it (and only it) by PID."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        full_env = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the process group we started and wait; SIGKILL it if it lingers."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def start_redis(log_dir: Path, port: int | None = None) -> tuple[Proc, int]:
    """A private redis-server on a free port, keeping nothing on disk."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "redis-server is not installed: `make demo` and `make test` install Debian's"
            " redis-server; or point CELERY_BROKER_URL at a running Redis"
        )
    port = port or free_port()
    proc = Proc(
        "redis",
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(log_dir)],
        log_dir,
    )
    wait_until(lambda: redis_ping(port), 10, "redis-server to answer PING")
    return proc, port


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_worker(
    name: str,
    broker: str,
    backend: str,
    log_dir: Path,
    *,
    pool: str = "threads",
    concurrency: int = 4,
    queues: str = "celery",
    log_level: str = "info",
    extra_env: dict[str, str] | None = None,
) -> Proc:
    """``celery -A workers worker -E`` with the given pool, consuming ``queues``."""
    env = {
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": backend,
        "OUTBOX_DIR": str(log_dir / "outbox"),
        "MEDIA_DIR": str(log_dir / "media"),
        **(extra_env or {}),
    }
    return Proc(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "workers",
            "worker",
            "-E",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            log_level,
        ],
        log_dir,
        env,
    )


def start_pushserver(
    name: str,
    broker: str,
    backend: str,
    log_dir: Path,
    *,
    secret: str | None,
    extra: list[str] | None = None,
    port: int | None = None,
    log_level: str = "DEBUG",
    ready: float = 0.0,
) -> tuple[Proc, str]:
    """``pushserver serve`` on a free port; returns the process and its base URL once /healthz answers.

    With ``ready`` (seconds), also wait that long for /readyz to answer 200 (the receiver connected).
    """
    port = port or free_port()
    args = [
        str(BIN / "pushserver"),
        "serve",
        "--broker",
        broker,
        "--backend",
        backend,
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]
    args += ["--secret", secret] if secret else ["--insecure"]
    proc = Proc(name, args + (extra or []), log_dir, env={"PUSHSERVER_SECRET": "", "PUSHSERVER_MONGO_URL": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(url + "/healthz") == 200 or not proc.alive(), 20, f"{name} to answer /healthz")
        if not proc.alive():
            raise RuntimeError(f"{name} exited early:\n{proc.log()}")
        if ready:
            wait_until(lambda: is_ready(url) or not proc.alive(), ready, f"{name} /readyz")
            if not proc.alive():
                raise RuntimeError(f"{name} exited before it was ready:\n{proc.log()}")
    except BaseException:
        proc.stop()  # a server that never became usable is not left running
        raise
    return proc, url


def is_ready(url: str) -> bool:
    """Whether the server at ``url`` answers /readyz with 200 (its receiver is connected to the broker)."""
    return http_status(url + "/readyz") == 200


def readyz(url: str) -> dict[str, Any]:
    """The JSON a server's /readyz answers (whatever its status)."""
    return json.loads(http_get(url + "/readyz")[1])


def http_status(url: str, headers: dict[str, str] | None = None) -> int | None:
    """The status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body of a GET (HTTP errors included)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def proc_status(pid: int, key: str) -> int:
    """A number from a process's Linux /proc status (``VmRSS``, ``Threads``, ...), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), 0 when it is gone."""
    return proc_status(pid, "VmRSS") * 1024


def thread_count(pid: int) -> int:
    """Threads of a process (Linux /proc), 0 when it is gone."""
    return proc_status(pid, "Threads")


def start_mongo(log_dir: Path, port: int | None = None) -> tuple[Proc, str]:
    """nx-27017 (a MongoDB wire-protocol server over SQLite, in memory) on a free port; returns it and its URL."""
    exe = BIN / "nx-27017"
    if not exe.exists():
        raise RuntimeError("nx-27017 is not installed: `pip install nx-27017` (make test does)")
    port = port or free_port()
    name = f"mongo-{port}"
    proc = Proc(
        name,
        [
            str(exe),
            "--db",
            "memory",
            "-p",
            str(port),
            "--host",
            "127.0.0.1",
            "--pid-file",
            str(log_dir / f"{name}.pid"),
            "--log-file",
            str(log_dir / f"{name}.nx.log"),
        ],
        log_dir,
    )
    url = f"mongodb://127.0.0.1:{port}"
    wait_until(lambda: mongo_ping(url) or not proc.alive(), 20, "nx-27017 to answer ping")
    if not proc.alive():
        raise RuntimeError(f"nx-27017 exited early:\n{proc.log()}")
    return proc, url


def mongo_ping(url: str) -> bool:
    """Tell whether a MongoDB server answers ``ping`` at ``url``."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()
