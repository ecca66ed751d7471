"""Webhook deliveries reach public addresses only, unless a network is allowed explicitly; no redirects followed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from workers import tasks
from workers.webhooks import (
    WebhookAddressError,
    allowed_networks,
    check_address,
    post_json,
)

LOOPBACK_ONLY = allowed_networks("127.0.0.1/32")


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        redirect = self.server.redirect_to  # type: ignore[attr-defined]
        if redirect:
            self.send_response(307)
            self.send_header("Location", redirect)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _serve(host: str, redirect_to: str | None = None) -> Iterator[http.server.HTTPServer]:
    server = http.server.ThreadingHTTPServer((host, 0), _Receiver)
    server.hits = []  # type: ignore[attr-defined]
    server.redirect_to = redirect_to  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def target() -> Iterator[http.server.HTTPServer]:
    # 127.0.0.2 is loopback too, but outside the 127.0.0.1/32 the tests allow.
    yield from _serve("127.0.0.2")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.5.5.5",
        "::1",
        "::ffff:127.0.0.1",  # loopback
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "fd00::1",
        "100.64.0.1",  # private / shared
        "169.254.169.254",
        "fe80::1%eth0",  # link-local (the cloud metadata address among them)
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "240.0.0.1",  # unspecified, multicast, reserved
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(WebhookAddressError, match="not allowed"):
        check_address(address)


def test_public_addresses_pass_and_allowed_networks_open_exactly_themselves() -> None:
    assert str(check_address("93.184.215.14")) == "93.184.215.14"
    assert str(check_address("2606:4700::1")) == "2606:4700::1"
    assert str(check_address("127.0.0.1", LOOPBACK_ONLY)) == "127.0.0.1"
    assert str(check_address("::ffff:127.0.0.1", LOOPBACK_ONLY)) == "127.0.0.1"
    with pytest.raises(WebhookAddressError):
        check_address("127.0.0.2", LOOPBACK_ONLY)
    assert allowed_networks("") == ()
    assert allowed_networks(" 10.0.0.0/8, ::1 ") == allowed_networks("10.0.0.0/8,::1/128")
    with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_NETWORKS: 'nonsense'"):
        allowed_networks("nonsense")


def test_loopback_receiver_is_refused_by_default_and_reached_when_allowed(
    target: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_ALLOWED_NETWORKS", raising=False)
    url = f"http://127.0.0.2:{target.server_address[1]}/hook"
    with pytest.raises(WebhookAddressError):
        post_json(url, b"{}")
    assert target.hits == []  # type: ignore[attr-defined]
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.2/32")
    assert post_json(url, b"{}") == 204
    assert target.hits == ["/hook"]  # type: ignore[attr-defined]


def test_a_host_name_is_checked_by_the_address_it_resolves_to(target: http.server.HTTPServer) -> None:
    # "localhost" is not an IP literal: the refusal comes from the resolved address.
    with pytest.raises(WebhookAddressError):
        post_json(f"http://localhost:{target.server_address[1]}/", b"{}", allowed=())


def test_a_redirect_to_a_private_address_is_not_followed(target: http.server.HTTPServer) -> None:
    private_url = f"http://127.0.0.2:{target.server_address[1]}/internal"
    for redirector in _serve("127.0.0.1", redirect_to=private_url):
        url = f"http://127.0.0.1:{redirector.server_address[1]}/hook"
        assert post_json(url, b"{}", allowed=LOOPBACK_ONLY) == 307, "the redirect is the answer"
        assert redirector.hits == ["/hook"]  # type: ignore[attr-defined]
    assert target.hits == [], "nothing reached the private address"  # type: ignore[attr-defined]


def test_the_task_fails_without_retrying_on_a_refused_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOK_ALLOWED_NETWORKS", raising=False)
    with pytest.raises(WebhookAddressError):
        tasks.deliver_webhook("http://169.254.169.254/latest/meta-data/", {})
