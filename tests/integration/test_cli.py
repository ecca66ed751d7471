"""The command line: config errors are one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pushserver.auth import TokenVerifier

PUSHSERVER = str(Path(sys.executable).parent / "pushserver")
GOOD = "a-secret-of-at-least-32-bytes-for-hs256"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run([PUSHSERVER, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


@pytest.mark.parametrize(
    "args, says",
    [
        (["serve"], "no secret"),
        (["serve", "--secret", GOOD, "--broker", "http://x"], "unsupported URL scheme"),
        (["serve", "--secret", GOOD, "--broker", "redis://host:notaport/0"], "not a valid URL"),
        (["serve", "--secret", GOOD, "--port", "70000"], "not a TCP port"),
        (["serve", "--secret", GOOD, "--cors", "not-an-origin"], "--cors"),
        (["serve", "--secret", GOOD, "--progress-hz", "0"], "--progress-hz"),
        (["serve", "--secret", "change-me"], "--secret: the secret is 9 bytes; HS256 needs at least 32"),
        (["serve", "--secret", f"{GOOD},short"], "--secret: secret 2 of 2 is 5 bytes"),
        (["serve", "--secret", GOOD, "--token-leeway", "301"], "--token-leeway must be between 0 and 300"),
        (["serve", "--secret", GOOD, "--token-leeway", "-1"], "--token-leeway must be between 0 and 300"),
        (["token", "--task", "t", "--secret", "change-me"], "--secret: the secret is 9 bytes"),
        (["token", "--task", "*", "--task", "t", "--secret", GOOD], "'*' grants every task only by itself"),
    ],
)
def test_config_errors_exit_2_with_one_line(args: list[str], says: str):
    done = run(*args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_port_in_use_is_one_clear_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("serve", "--insecure", "--port", str(port), "--broker", "redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert "already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_env_variables_configure_serve():
    done = run("serve", env={"PUSHSERVER_SECRET": GOOD, "PUSHSERVER_BROKER_URL": "ftp://nope"})
    assert done.returncode == 2 and "ftp" in done.stderr


def test_token_command_mints_a_verifiable_token():
    done = run("token", "--task", "a", "--task", "b", "--sub", "u1", "--ttl", "60", "--secret", "k" * 32)
    assert done.returncode == 0, done.stderr
    grant = TokenVerifier(["k" * 32]).verify(done.stdout.strip())
    assert grant.tasks == {"a", "b"} and grant.sub == "u1"


def test_help_lists_the_commands():
    done = run("--help")
    assert done.returncode == 0
    assert "serve" in done.stdout and "token" in done.stdout
