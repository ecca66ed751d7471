"""Scenario 11: Redis as production runs it: TLS with certificate verification, passwords and ACL users.

A real ``redis-server --tls-port`` with a CA and a server certificate made
here with openssl; a real ``redis-server`` with ``requirepass`` and an ACL
user; workers, ``pushserver serve`` and clients on them. Passwords must work
and never show in any log, ``/readyz``, ``/metrics`` or error message.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from dev.stack import BIN, free_port, http_get, http_status, start_pushserver, wait_until
from tests.support.faults import delivered, subscribe_all, until, wait_all
from tests.support.redis_servers import Certificates, make_certificates, start_redis_server, start_tls_redis
from tests.support.stack import SECRET, Stack


def tls_url(port: int, db: int, ca: Path) -> str:
    return f"rediss://127.0.0.1:{port}/{db}?ssl_cert_reqs=required&ssl_ca_certs={quote(str(ca))}"


@pytest.fixture(scope="module")
def certs(fault_dir: Path) -> Certificates:
    return make_certificates(fault_dir / "tls" / "certs")


@pytest.fixture(scope="module")
def tls(fault_dir: Path, certs: Certificates) -> Iterator[Stack]:
    log_dir = fault_dir / "tls"
    redis, port = start_tls_redis(log_dir, certs)
    s = Stack(
        tls_url(port, 0, certs.ca), tls_url(port, 1, certs.ca), log_dir, redis=redis, redis_port=port, name="faults"
    )
    try:
        s.worker("tls-worker", pool="threads", concurrency=4)
        yield s
    finally:
        s.close()


async def test_rediss_broker_and_backend_with_certificate_verification(
    tls: Stack, certs: Certificates, watchers, report
):
    url = tls.server("tls-server").url
    clients = await watchers(url, 2)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    await subscribe_all(clients, ids)
    for t in ids:
        tls.send("demo_progress", 3, 0.1, task_id=t)
    # One more, finished before anyone subscribes: its snapshot comes from the backend, over TLS.
    late = tls.send("demo_progress", 1, 0.0)
    try:
        await wait_all(clients, ids, "SUCCESS", timeout=60)
        assert late.get(timeout=60) == 1
        ack = await clients[0].subscribe([late.id])
    finally:
        report(
            "11a Redis TLS (rediss://, certificate verified; 2 clients x 4 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
        )
    for w in clients:
        for t in ids:
            assert w.updates[t][-1]["result"] == 3
            assert any(u["state"] == "PROGRESS" for u in w.updates[t])  # events came over TLS
    assert ack["tasks"][0]["state"] == "SUCCESS" and ack["tasks"][0]["result"] == 1


async def test_a_certificate_from_another_ca_is_refused(tls: Stack, fault_dir: Path):
    other = make_certificates(fault_dir / "tls" / "other", name="other-ca")
    assert tls.redis_port is not None
    proc, url = start_pushserver(
        "tls-wrong-ca",
        tls_url(tls.redis_port, 0, other.ca),
        tls_url(tls.redis_port, 1, other.ca),
        tls.log_dir,
        secret=SECRET,
        log_level="INFO",
    )
    tls.procs.append(proc)
    await until(lambda: "certificate verify failed" in proc.log(), 30, "the receiver to refuse the certificate")
    assert http_status(url + "/readyz") == 503
    assert proc.alive()


def test_a_rediss_backend_without_ssl_cert_reqs_is_refused_at_start(tls: Stack):
    assert tls.redis_port is not None
    backend = f"rediss://127.0.0.1:{tls.redis_port}/1"
    done = subprocess.run(
        [str(BIN / "pushserver"), "serve", "--broker", tls.broker, "--backend", backend, "--insecure", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "pushserver: error: --backend: a rediss:// URL needs ssl_cert_reqs: add"
        " ?ssl_cert_reqs=required&ssl_ca_certs=/path/to/ca.pem (or ssl_cert_reqs=none to skip"
        " certificate verification)"
    ], done.stderr


async def test_passwords_and_acl_users_work_and_never_show(fault_dir: Path, watchers, report):
    log_dir = fault_dir / "passwords"
    log_dir.mkdir()
    default_pw, acl_pw, wrong_pw, mongo_pw = (
        f"{kind}-{secrets.token_hex(8)}" for kind in ("DefaultPw", "AclPw", "WrongPw", "MongoPw")
    )
    redis, port = start_redis_server(
        log_dir,
        "redis-auth",
        "--requirepass",
        default_pw,
        # An ACL user (redis-server takes a directive's words as separate arguments).
        *("--user", "pushy", "on", f">{acl_pw}", "~*", "&*", "+@all"),
        password=default_pw,
    )
    # nx-27017 has no authentication; a MongoDB with a password that does not answer still shows
    # whether the password leaks from the event log's errors and status.
    mongo_with_password = f"mongodb://app:{mongo_pw}@127.0.0.1:{free_port()}/?authSource=admin"
    # Workers and the dispatching client use the default user's password, pushserver an ACL user.
    s = Stack(
        f"redis://:{default_pw}@127.0.0.1:{port}/0",
        f"redis://:{default_pw}@127.0.0.1:{port}/1",
        log_dir,
        redis=redis,
        redis_port=port,
        name="faults",
    )
    try:
        s.worker("auth-worker", pool="threads", concurrency=4)
        proc, url = start_pushserver(
            "auth-server",
            f"redis://pushy:{acl_pw}@127.0.0.1:{port}/0",
            f"redis://pushy:{acl_pw}@127.0.0.1:{port}/1",
            log_dir,
            secret=SECRET,
            extra=["--mongo", mongo_with_password],
        )
        s.procs.append(proc)
        wait_until(lambda: http_status(url + "/readyz") == 200, 45, "the ACL user's server to be ready")
        wrong, wrong_url = start_pushserver(
            "auth-wrong-password",
            f"redis://pushy:{wrong_pw}@127.0.0.1:{port}/0",
            f"redis://pushy:{wrong_pw}@127.0.0.1:{port}/1",
            log_dir,
            secret=SECRET,
        )
        s.procs.append(wrong)
        clients = await watchers(url, 2)
        ids = [str(uuid.uuid4()) for _ in range(3)]
        await subscribe_all(clients, ids)
        for t in ids:
            s.send("demo_progress", 2, 0.1, task_id=t)
        try:
            await wait_all(clients, ids, "SUCCESS", timeout=60)
        finally:
            report(
                "11b passwords and an ACL user (2 clients x 3 tasks)", len(clients) * len(ids), delivered(clients, ids)
            )
        # The wrong password is refused, says so, and the server stays up and not ready.
        await until(
            lambda: "WRONGPASS" in wrong.log() or "invalid username-password" in wrong.log(),
            30,
            "the wrong password to be refused",
        )
        assert http_status(wrong_url + "/readyz") == 503 and wrong.alive()
        # A server whose start fails on a URL error prints the URL without its password.
        bad = subprocess.run(
            [
                str(BIN / "pushserver"),
                "serve",
                "--insecure",
                "--broker",
                f"redis://pushy:{acl_pw}@127.0.0.1:notaport/0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 2 and "pushy:***@" in bad.stderr, bad.stderr
        outputs = {
            "readyz": http_get(url + "/readyz")[1].decode(),
            "metrics": http_get(url + "/metrics")[1].decode(),
            "wrong readyz": http_get(wrong_url + "/readyz")[1].decode(),
            "bad start": bad.stderr + bad.stdout,
        }
        for p in (proc, wrong, *[p for p in s.procs if p.name == "auth-worker"]):
            outputs[p.name] = p.log()
        json.loads(outputs["readyz"])  # a real answer, not an error page
    finally:
        s.close()
    pushserver_outputs = {k: v for k, v in outputs.items() if k != "auth-worker"}
    for name, text in pushserver_outputs.items():
        for password in (acl_pw, wrong_pw, mongo_pw):
            assert password not in text, f"a password appears in {name}"
    assert default_pw not in outputs["auth-worker"], "Celery's own worker log shows the broker password"
    assert "pushy:**@127.0.0.1" in outputs["auth-server"]  # the connected line names the user, masks the password
