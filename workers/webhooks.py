"""Webhook delivery: URL validation and one JSON POST with urllib."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_TIMEOUT = 5.0
USER_AGENT = "celery-pushserver-webhooks/0.1"


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


def post_json(url: str, body: bytes, timeout: float = WEBHOOK_TIMEOUT) -> int:
    """POST ``body`` as JSON to ``url`` and return the HTTP status code.

    An HTTP error status is a delivered answer and is returned, not raised;
    a connection failure or timeout raises ``OSError`` (``URLError`` is one).
    """
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        # HTTPError is a URLError (an OSError): catch it first so the caller's
        # retry-on-connection-error logic does not retry a receiver's answer.
        exc.close()
        return int(exc.code)
