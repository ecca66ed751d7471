"""Webhook delivery: URL validation and one JSON POST with urllib, to public addresses only.

A webhook URL comes from a user, so a worker must not become their way into
its own network: every address a host name resolves to must be public, unless
it falls in ``WEBHOOK_ALLOWED_NETWORKS`` (comma-separated CIDRs, for a local
receiver in a demo or test). The check runs on the address actually connected
to, so DNS answers that change between checks change nothing, and redirects
are not followed at all.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_TIMEOUT = 5.0
USER_AGENT = "celery-pushserver-webhooks/0.1"
ALLOWED_NETWORKS_ENV = "WEBHOOK_ALLOWED_NETWORKS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookAddressError(ValueError):
    """A webhook host resolves to an address deliveries may not reach (loopback, private, link-local, ...)."""


def allowed_networks(raw: str | None = None) -> tuple[IPNetwork, ...]:
    """Parse ``raw`` (default: ``WEBHOOK_ALLOWED_NETWORKS``) into networks; raise ValueError naming a bad entry."""
    text = os.environ.get(ALLOWED_NETWORKS_ENV, "") if raw is None else raw
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{ALLOWED_NETWORKS_ENV}: {entry!r} is not an IP network (e.g. 127.0.0.1/32)") from None
    return tuple(networks)


def check_address(address: str, allowed: Sequence[IPNetwork] = ()) -> IPAddress:
    """Return ``address`` parsed if deliveries may reach it: a global address, or one in ``allowed``."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in network for network in allowed):
        return ip
    if not ip.is_global or ip.is_multicast:
        # is_global is False for loopback, private, link-local, shared (100.64/10), reserved, unspecified.
        raise WebhookAddressError(
            f"webhook address {ip} is not allowed (loopback, private, link-local or reserved); "
            f"set {ALLOWED_NETWORKS_ENV} to allow a network explicitly"
        )
    return ip


def _guarded_create_connection(allowed: Sequence[IPNetwork]) -> Callable[..., socket.socket]:
    """A ``socket.create_connection`` that resolves once, refuses a host if any address is not allowed, and connects."""

    def create_connection(
        address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT, source_address: Any = None
    ) -> socket.socket:
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # A name with one public and one private address is refused as a whole.
        addresses = [check_address(str(info[4][0]), allowed) for info in infos]
        last_error: OSError | None = None
        for ip in dict.fromkeys(addresses):
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as exc:
                last_error = exc
        raise last_error or OSError(f"no address for {host}")

    return create_connection


def _connection_class(base: type[http.client.HTTPConnection], allowed: Sequence[IPNetwork]) -> Any:
    class GuardedConnection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # http.client opens every socket through this attribute (TLS wraps it after).
            self._create_connection = _guarded_create_connection(allowed)

    return GuardedConnection


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the receiver's answer: returned as the status, never followed to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(allowed: Sequence[IPNetwork]) -> urllib.request.OpenerDirector:
    http_conn = _connection_class(http.client.HTTPConnection, allowed)
    https_conn = _connection_class(http.client.HTTPSConnection, allowed)

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(http_conn, req)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(https_conn, req)

    # No proxies from the environment: the guarded address must be the one reached.
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), GuardedHTTPHandler, GuardedHTTPSHandler, _NoRedirects
    )


def validate_url(url: Any) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host; raise ValueError otherwise."""
    if not isinstance(url, str):
        raise ValueError(f"webhook URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http(s)://host/..., got {url!r}")
    return url


def validate_urls(urls: Any) -> list[str]:
    """Return ``urls`` if it is a non-empty list of valid URLs; the error names every bad one."""
    if not isinstance(urls, (list, tuple)) or not urls:
        raise ValueError("urls must be a non-empty list of http(s) URLs")
    bad = []
    for url in urls:
        try:
            validate_url(url)
        except ValueError:
            bad.append(url)
    if bad:
        raise ValueError(f"not http(s) URLs: {bad!r}")
    return list(urls)


def encode_payload(payload: Any) -> bytes:
    """Return ``payload`` as JSON bytes; raise ValueError if it is not a JSON object."""
    if not isinstance(payload, dict):
        raise ValueError(f"payload must be a JSON object (dict), got {type(payload).__name__}")
    try:
        return json.dumps(payload, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON serialisable: {exc}") from None


def post_json(
    url: str, body: bytes, timeout: float = WEBHOOK_TIMEOUT, allowed: Sequence[IPNetwork] | None = None
) -> int:
    """POST ``body`` as JSON to ``url`` and return the HTTP status code.

    An HTTP error status (and a redirect, which is not followed) is a delivered
    answer and is returned, not raised; a connection failure or timeout raises
    ``OSError`` (``URLError`` is one); an address that is not allowed raises
    ``WebhookAddressError`` before anything is sent. ``allowed`` defaults to
    ``WEBHOOK_ALLOWED_NETWORKS``.
    """
    networks = allowed_networks() if allowed is None else tuple(allowed)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        with _opener(networks).open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        # HTTPError is a URLError (an OSError): catch it first so the caller's
        # retry-on-connection-error logic does not retry a receiver's answer.
        exc.close()
        return int(exc.code)
