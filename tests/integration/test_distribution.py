"""What `pip install celery-pushserver` gives a team: the wheel's files, and a fresh virtualenv used from outside.

The fresh virtualenv gets only ``pip install <checkout>`` (no extras); a tiny
Celery project in a temporary folder runs as a real worker from it, and its
progress reaches a real Socket.IO client through a real pushserver from it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.stack import ROOT, Proc, free_port, http_status, start_redis, wait_until
from pushserver.auth import mint_token
from tests.support.clients import Watcher
from tests.support.user_project import SECRET, start_user_worker, write_user_project

pytestmark = pytest.mark.integration


def _env_outside_the_checkout() -> dict[str, str]:
    """The environment minus anything that would put the checkout on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env_outside_the_checkout(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's files (tracked and new, never ignored ones), so building writes nothing here."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    copy = tmp_path_factory.mktemp("source") / "celery-pushserver"
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file() and "node_modules" not in src.parts:
            dst = copy / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    return copy


@pytest.fixture(scope="module")
def fresh_venv(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with nothing but ``pip install <checkout>``; returns its bin folder."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    done = _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    assert done.returncode == 0, done.stderr
    done = _run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(source)], cwd=venv.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def test_the_wheel_holds_the_pushserver_package_only(source: Path, tmp_path: Path):
    done = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(source),
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("celery_pushserver-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"pushserver"}, sorted(top)
    assert {"pushserver/worker.py", "pushserver/client.py", "pushserver/cli.py"} <= set(names)
    assert not any(name.startswith(("workers/", "tests/", "examples/", "bench/")) for name in names)


def test_import_workers_fails_outside_the_checkout(fresh_venv: Path, tmp_path: Path):
    done = _run([str(fresh_venv / "python"), "-c", "import workers"], cwd=tmp_path)
    assert done.returncode != 0
    assert "ModuleNotFoundError: No module named 'workers'" in done.stderr


def test_pushserver_worker_imports_without_the_server_dependencies(fresh_venv: Path, tmp_path: Path):
    code = (
        "import sys, pushserver.worker\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'aiohttp', 'socketio', 'engineio', 'pymongo'}))"
    )
    done = _run([str(fresh_venv / "python"), "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture
def fresh_stack(fresh_venv: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Redis, the user's worker and pushserver, both from the fresh virtualenv; yields (broker, url)."""
    procs: list[Proc] = []
    try:
        redis, port = start_redis(tmp_path)
        procs.append(redis)
        broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
        project = write_user_project(tmp_path / "acme")
        procs.append(
            start_user_worker(
                "fresh-worker", project, broker, backend, tmp_path, pool="threads", queue="celery", bin_dir=fresh_venv
            )
        )
        server_port = free_port()
        server = Proc(
            "fresh-pushserver",
            [
                str(fresh_venv / "pushserver"),
                "serve",
                "--broker",
                broker,
                "--backend",
                backend,
                "--port",
                str(server_port),
                "--secret",
                SECRET,
            ],
            tmp_path,
            env={"PUSHSERVER_SECRET": "", "PUSHSERVER_MONGO_URL": ""},
            cwd=tmp_path,
        )
        procs.append(server)
        url = f"http://127.0.0.1:{server_port}"
        wait_until(lambda: http_status(url + "/readyz") == 200 or not server.alive(), 30, "pushserver /readyz")
        assert server.alive(), server.log()
        yield broker, url
    finally:
        for proc in reversed(procs):
            proc.stop()


async def test_a_users_worker_from_a_fresh_install_reports_progress_to_a_socketio_client(
    fresh_venv: Path, fresh_stack: tuple[str, str], tmp_path: Path
):
    broker, url = fresh_stack
    # Dispatched from the fresh virtualenv, by the user's own module, as their web app would.
    code = "import acme_jobs\nr = acme_jobs.crunch.apply_async((5, 0.2))\nprint(r.id)"
    env = {**_env_outside_the_checkout(), "ACME_BROKER": broker, "ACME_BACKEND": broker[:-1] + "1"}
    done = subprocess.run(
        [str(fresh_venv / "python"), "-c", code],
        cwd=tmp_path / "acme",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip().splitlines()[-1]
    watcher = await Watcher(url).connect()
    try:
        await watcher.subscribe(task_id, token=mint_token(SECRET, [task_id], ttl=300))
        final = await watcher.wait_state(task_id, "SUCCESS", timeout=60)
    finally:
        await watcher.close()
    assert final["name"] == "acme_jobs.crunch"
    assert final["progress"]["current"] == 5 and final["progress"]["total"] == 5
    assert final["started_at"] is not None and final["received_at"] is not None
    states = [u["state"] for u in watcher.updates[task_id]]
    assert "PROGRESS" in states, states
