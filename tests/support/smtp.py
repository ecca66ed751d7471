"""A minimal SMTP server for tests: accepts messages on a loopback port and keeps them in memory."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _SmtpSink(socketserver.StreamRequestHandler):
    """Just enough of an SMTP server to accept one message."""

    def handle(self) -> None:
        self.wfile.write(b"220 sink ready\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                self.server.messages.append(data)  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@contextmanager
def smtp_sink() -> Iterator[socketserver.TCPServer]:
    """An SMTP sink on 127.0.0.1; the messages it accepted are in its ``messages`` list."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink)
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
