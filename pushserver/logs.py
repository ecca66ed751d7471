"""Where pushserver logs: the log format, quieter Celery and kombu, and the filter for clients' malformed packets.

python-socketio and python-engineio log every packet they cannot parse with
``logger.exception`` (python-engineio on its own stream handler *and* the
root logger): anyone able to open a WebSocket could fill the server's log
with tracebacks. ``library_loggers`` gives the libraries loggers that keep
their warnings and errors, but turn an exception raised inside their packet
parsing into one warning line, repeated only every ``every`` occurrences. An
exception raised in pushserver's handlers keeps its traceback: that is a bug
of ours, and must be seen.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from types import TracebackType


def configure_logging(level: str) -> None:
    """One line per state change, with a timestamp, on stderr."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # kombu and celery log every reconnect attempt themselves; ours says it once.
    logging.getLogger("kombu").setLevel(logging.ERROR)
    logging.getLogger("celery").setLevel(logging.WARNING)


class MalformedPacketFilter(logging.Filter):
    """Turns the libraries' tracebacks for unparseable client packets into one counted warning line."""

    def __init__(self, every: int = 1000) -> None:
        super().__init__()
        self.every = every
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass every record, except that a client's bad packet becomes a counted warning (or nothing)."""
        if not record.exc_info or record.exc_info[1] is None or not _raised_parsing(record.exc_info[2]):
            return True
        exc = record.exc_info[1]
        self.count += 1
        if self.count != 1 and self.count % self.every:
            return False
        record.msg = "dropped a malformed packet from a client (%s: %.100s; %d so far)"
        record.args = (type(exc).__name__, exc, self.count)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@functools.cache
def _parsing_code() -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The libraries' packet parsers (files); the one place engineio indexes by a client-sent packet type and
    our JSON codec for Socket.IO payloads (functions). An exception raised there is a client's bad packet."""
    # Imported here, not at the top: the receiver's child process configures
    # logging too, and has no use for the Socket.IO libraries.
    import engineio
    import socketio

    from . import protocol

    files = frozenset(
        os.path.join(os.path.dirname(m.__file__ or ""), name)
        for m, names in ((engineio, ("packet.py", "payload.py")), (socketio, ("packet.py", "msgpack_packet.py")))
        for name in names
    )
    functions = frozenset(
        {
            (os.path.join(os.path.dirname(engineio.__file__ or ""), "async_socket.py"), "receive"),
            (protocol.__file__, "loads"),
        }
    )
    return files, functions


def _raised_parsing(tb: TracebackType | None) -> bool:
    """Whether a traceback ends in the libraries' parsing of a client's packet (never in our handlers)."""
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    files, functions = _parsing_code()
    return code.co_filename in files or (code.co_filename, code.co_name) in functions


def library_loggers() -> tuple[logging.Logger, logging.Logger]:
    """The loggers to hand to ``socketio.AsyncServer(logger=..., engineio_logger=...)``.

    aiohttp's request logger gets the same filter: stock python-engineio
    parses a WebSocket's first packet outside its own error handling.
    """
    packets = MalformedPacketFilter()
    loggers = logging.getLogger("pushserver.socketio"), logging.getLogger("pushserver.engineio")
    for logger in loggers:
        # Both libraries log each packet at INFO; warnings and errors only.
        logger.setLevel(logging.WARNING)
    for logger in (*loggers, logging.getLogger("aiohttp.server")):
        if not any(isinstance(f, MalformedPacketFilter) for f in logger.filters):
            logger.addFilter(packets)
    return loggers
