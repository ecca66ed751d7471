"""A user's own Celery project, written by a test into a temporary folder: nothing of this repository's but
``pushserver.worker``, as a team that installs celery-pushserver would have."""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path

from dev.stack import BIN, Proc

SECRET = secrets.token_hex(32)

#: A user's task module, nothing from this repository but ``pushserver.worker``.
USER_APP = """
    import os
    import time

    from celery import Celery
    from pushserver.worker import enable_events, report_progress

    app = Celery("acme_jobs", broker=os.environ["ACME_BROKER"], backend=os.environ["ACME_BACKEND"])
    app.conf.broker_connection_retry_on_startup = True
    enable_events(app)


    @app.task(bind=True)
    def crunch(self, steps, delay):
        for i in range(1, steps + 1):
            time.sleep(delay)
            report_progress(self, i, steps, f"chunk {i} of {steps}", chunk=i)
        return steps


    @app.task
    def quick(n):
        return n
"""


def write_user_project(folder: Path) -> Path:
    """Write the user's project (one module, ``acme_jobs``) into ``folder``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "acme_jobs.py").write_text(textwrap.dedent(USER_APP))
    return folder


def start_user_worker(
    name: str, project: Path, broker: str, backend: str, log_dir: Path, *, pool: str, queue: str, bin_dir: Path = BIN
) -> Proc:
    """``celery -A acme_jobs worker`` from the project's folder, as its team would run it (no ``-E``)."""
    return Proc(
        name,
        [
            str(bin_dir / "celery"),
            "-A",
            "acme_jobs",
            "worker",
            "-P",
            pool,
            "-c",
            "4",
            "-Q",
            queue,
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ],
        log_dir,
        env={"ACME_BROKER": broker, "ACME_BACKEND": backend},
        cwd=project,
    )
