"""Where python-socketio and python-engineio log: a client's malformed packet is a counted line, not a traceback.

Both libraries log every packet they cannot parse with ``logger.exception``
(python-engineio on its own stream handler *and* the root logger): anyone
able to open a WebSocket could fill the server's log with tracebacks. Our
loggers keep their warnings and errors, but an exception raised inside the
libraries' packet parsing becomes one warning line, repeated only every
``every`` occurrences. An exception raised in pushserver's handlers keeps its
traceback: that is a bug of ours, and must be seen.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

import engineio
import socketio

from . import protocol

# The libraries' packet parsers; the one place engineio indexes by a
# client-sent packet type; our JSON codec for Socket.IO payloads. An
# exception raised there is a client's bad packet.
_PARSERS = frozenset(
    os.path.join(os.path.dirname(m.__file__ or ""), name)
    for m, names in ((engineio, ("packet.py", "payload.py")), (socketio, ("packet.py", "msgpack_packet.py")))
    for name in names
)
_PARSING_FUNCTIONS = frozenset({
    (os.path.join(os.path.dirname(engineio.__file__ or ""), "async_socket.py"), "receive"),
    (protocol.__file__, "loads"),
})


class MalformedPacketFilter(logging.Filter):
    """Turns the libraries' tracebacks for unparseable client packets into one counted warning line."""

    def __init__(self, every: int = 1000) -> None:
        super().__init__()
        self.every = every
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
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


def _raised_parsing(tb: TracebackType | None) -> bool:
    """Whether a traceback ends in the libraries' parsing of a client's packet (never in our handlers)."""
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_filename in _PARSERS or (code.co_filename, code.co_name) in _PARSING_FUNCTIONS


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
