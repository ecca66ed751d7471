"""`make demo` runs ``python -m dev.demo``: it must start its own Redis when none answers and finish a round."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dev.stack import ROOT, free_port, redis_ping

pytestmark = pytest.mark.integration


def run_demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m dev.demo --once ARGS`` on free ports, from the project root, without the event log."""
    ports = ["--port", str(free_port()), "--web-port", str(free_port())]
    return subprocess.run(
        [sys.executable, "-m", "dev.demo", "--once", *ports, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PUSHSERVER_MONGO_URL": ""},
        cwd=ROOT,
    )


def test_demo_starts_redis_runs_a_round_and_stops_what_it_started():
    redis_port = free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    done = run_demo("--broker", broker, "--backend", f"redis://127.0.0.1:{redis_port}/1")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"started redis-server on 127.0.0.1:{redis_port}" in out
    assert "started nx-27017" in out and "started Celery Beat" in out
    assert "6 tasks finished" in out and "(5 succeeded)" in out
    assert "card declined" in out  # the failing task's error was pushed too
    assert not redis_ping(redis_port), "the demo left its redis-server running"


def test_demo_runs_on_redis_with_tls_and_a_password(tmp_path: Path):
    from urllib.parse import quote

    from tests.support.redis_servers import make_certificates, start_tls_redis

    password = "demo-" + os.urandom(8).hex()
    certs = make_certificates(tmp_path / "certs")
    redis, port = start_tls_redis(tmp_path, certs, "--requirepass", password, password=password)
    query = f"ssl_cert_reqs=required&ssl_ca_certs={quote(str(certs.ca))}"
    try:
        bare = run_demo("--broker", f"rediss://:{password}@127.0.0.1:{port}/0", timeout=60)
        assert bare.returncode == 2 and "a rediss:// URL needs ssl_cert_reqs" in bare.stderr, bare.stderr
        done = run_demo(
            "--broker",
            f"rediss://:{password}@127.0.0.1:{port}/0?{query}",
            "--backend",
            f"rediss://:{password}@127.0.0.1:{port}/1?{query}",
        )
    finally:
        redis.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"using the Redis already running at 127.0.0.1:{port} (TLS)" in done.stdout
    assert "6 tasks finished" in done.stdout and "(5 succeeded)" in done.stdout
    assert password not in done.stdout + done.stderr + bare.stdout + bare.stderr
