"""Rendering the welcome email and delivering it by SMTP or into an outbox folder."""

from __future__ import annotations

import html
import os
import re
import smtplib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SENDER = "celery-pushserver <no-reply@example.com>"
SMTP_TIMEOUT = 10.0
MAX_USER_ID_LENGTH = 128

# Deliberately simple: enough to refuse header injection and obvious junk,
# not a full RFC 5322 parser (the SMTP server has the final word).
_EMAIL_RE = re.compile(r"^[^@\s<>\"',;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_UNSAFE_CHARS_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SmtpServer:
    """Where to send mail: host and port parsed from an ``smtp://host:port`` URL."""

    host: str
    port: int


def safe_token(value: str) -> str:
    """Return ``value`` reduced to characters safe in a file name or email local part."""
    return _UNSAFE_CHARS_RE.sub("-", value).strip("-.") or "user"


def validate_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is a usable id; raise ValueError otherwise."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError("user_id must be a non-empty string")
    if len(user_id) > MAX_USER_ID_LENGTH or any(c in user_id for c in "\r\n"):
        raise ValueError(f"user_id must be one line of at most {MAX_USER_ID_LENGTH} characters")
    return user_id


def recipient_for(user_id: str, email: str | None) -> str:
    """Return the address to write to: ``email`` if valid, else a placeholder for the user."""
    if email is None:
        # No address given (the demo dispatches by user id only): use the
        # reserved example.com domain so nothing real is ever mailed.
        return f"user-{safe_token(user_id)}@example.com"
    if not isinstance(email, str) or not _EMAIL_RE.match(email):
        raise ValueError(f"not a valid email address: {email!r}")
    return email


def render_welcome_email(
    user_id: str, email: str | None = None, sender: str = DEFAULT_SENDER, name: str | None = None
) -> EmailMessage:
    """Build the welcome email for ``user_id`` (greeted as ``name``): a plain-text body with an HTML alternative."""
    user_id = validate_user_id(user_id)
    greeting = name if isinstance(name, str) and name.strip() and not any(c in name for c in "\r\n") else user_id
    to = recipient_for(user_id, email)
    msg = EmailMessage()
    msg["Subject"] = "Welcome to celery-pushserver"
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content(
        f"Hello {greeting},\n\n"
        "Welcome aboard! Your account is ready.\n\n"
        "This message was rendered and delivered by a Celery task whose\n"
        "progress you could watch live in the browser.\n\n"
        "-- celery-pushserver\n"
    )
    escaped = html.escape(greeting)
    msg.add_alternative(
        '<!doctype html>\n<html><body style="font-family: sans-serif">\n'
        f"<h1>Hello {escaped},</h1>\n"
        "<p>Welcome aboard! Your account is ready.</p>\n"
        "<p>This message was rendered and delivered by a Celery task whose "
        "progress you could watch live in the browser.</p>\n"
        "<p>&mdash; celery-pushserver</p>\n</body></html>\n",
        subtype="html",
    )
    return msg


def parse_smtp_url(url: str) -> SmtpServer:
    """Parse ``smtp://host[:port]`` (port 25 by default); raise ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "smtp" or not parts.hostname:
        raise ValueError(f"SMTP_URL must look like smtp://host:port, got {url!r}")
    if parts.username or parts.password:
        # Plain SMTP has no TLS here; refusing credentials beats leaking them.
        raise ValueError("SMTP_URL must not carry credentials (no TLS support)")
    try:
        port = parts.port or 25
    except ValueError:
        raise ValueError(f"SMTP_URL has an invalid port: {url!r}") from None
    return SmtpServer(parts.hostname, port)


def send_smtp(msg: EmailMessage, server: SmtpServer, timeout: float = SMTP_TIMEOUT) -> None:
    """Hand ``msg`` to the SMTP server (raises OSError/SMTPException on failure)."""
    with smtplib.SMTP(server.host, server.port, timeout=timeout) as smtp:
        smtp.send_message(msg)


def write_eml(msg: EmailMessage, outbox_dir: Path, stem: str | None = None) -> Path:
    """Write ``msg`` as an ``.eml`` file in ``outbox_dir`` and return its path."""
    outbox_dir.mkdir(parents=True, exist_ok=True)
    path = outbox_dir / f"{safe_token(stem or uuid.uuid4().hex)}.eml"
    # Write then rename so a reader (the nightly report, a human) never sees
    # half a message; a redelivered task simply replaces its own file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(msg.as_bytes())
    os.replace(tmp, path)
    return path
