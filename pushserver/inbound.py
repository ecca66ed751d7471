"""What one client may send: the events meant for clients, as JSON text, at a bounded rate and size in flight.

The Socket.IO server (eioserver.SocketIOServer) asks an ``Inbound`` about every
Engine.IO session it opens and every Socket.IO packet a client sends, before
python-socketio decodes or buffers it:

- **sessions**: each Engine.IO session (a WebSocket or a long-polling
  handshake, before any Socket.IO connect) takes one of the server's slots
  (``--max-connections``) and one of its address's
  (``--max-connections-per-ip``), given back when the session ends;
- **rate**: every packet takes a token from its connection's bucket
  (``--message-rate`` a second, bursts of ``message_burst``); over it, an
  event that asked for an ack is answered ``too_many`` and anything else is
  dropped, counted. A client that sends more than ``FLOOD_STRIKES`` packets
  over its limit within ``FLOOD_WINDOW`` seconds is disconnected;
- **binary**: the protocol is JSON text only. Binary events and acks, and
  binary frames (their attachments), are refused before python-socketio
  would buffer them: an ack-asking event gets ``bad_request``, the rest is
  dropped, counted;
- **bytes in flight**: the client messages whose handlers are still running
  (each counted at its size plus ``HANDLER_OVERHEAD``) may not exceed
  ``--max-connection-bytes`` per connection;
- **event names**: only ``CLIENT_EVENTS`` reach a handler (see SocketIOServer);
- **packet types**: a text packet that is no Socket.IO type a client sends
  (CONNECT_ERROR, or no type at all) is dropped, counted as ``malformed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .limits import ConnectionCounter, TokenBucket

#: The only events a client may send; everything else (``connect``, ``disconnect``, any other name) is refused.
CLIENT_EVENTS = frozenset({"subscribe", "unsubscribe"})
#: Packets over the rate limit, within FLOOD_WINDOW seconds, after which a client is disconnected.
FLOOD_STRIKES = 100
FLOOD_WINDOW = 10.0
#: What a running handler costs beyond its message: its asyncio task and frames (measured order of magnitude).
HANDLER_OVERHEAD = 1024

# Socket.IO v5 packet types (socketio.packet), as the first character of a text packet.
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = "0123456"
#: The packet types a client may send as text (CONNECT_ERROR is the server's; binary ones are refused).
CLIENT_PACKET_TYPES = frozenset({CONNECT, DISCONNECT, EVENT, ACK})


@dataclass(frozen=True)
class PacketHeader:
    """What precedes a Socket.IO packet's JSON: its type, namespace and ack id (read without decoding the JSON)."""

    kind: str
    namespace: str
    ack_id: int | None


def peek_packet(data: str) -> PacketHeader:
    """Read a text Socket.IO packet's header: ``<type>[<attachments>-][<namespace>,][<ack id>]<json>``."""
    kind = data[:1]
    i = 1
    if kind in (BINARY_EVENT, BINARY_ACK):
        dash = data.find("-", 1, 12)
        i = dash + 1 if dash > 0 else 1
    namespace = "/"
    if data[i : i + 1] == "/":
        comma = data.find(",", i)
        end = comma if comma >= 0 else len(data)
        namespace = data[i:end][:256]
        i = end + 1
    start = i
    while i < len(data) and i - start < 16 and data[i].isdigit() and data[i].isascii():
        i += 1
    ack_id = int(data[start:i]) if i > start else None
    return PacketHeader(kind, namespace, ack_id)


@dataclass(slots=True)
class Allowance:
    """One connection's state: its rate bucket, its recent over-limit packets, and its bytes in flight."""

    bucket: TokenBucket
    address: str
    strikes: int = 0
    window_start: float = field(default_factory=time.monotonic)
    in_flight: int = 0


class Inbound:
    """The per-session and per-address limits on what clients send (see the module doc)."""

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_in_flight_bytes: int,
        max_per_address: int = 0,
        max_sessions: int = 0,
        address_of: Callable[[dict], str] = lambda environ: environ.get("REMOTE_ADDR") or "unknown",
        on_refused: Callable[[str], None] = lambda reason: None,
        flood_strikes: int = FLOOD_STRIKES,
        flood_window: float = FLOOD_WINDOW,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_in_flight_bytes = max_in_flight_bytes
        self.per_address = ConnectionCounter(max_per_address)
        self.max_sessions = max_sessions  # 0: no limit
        self.address_of = address_of
        self.on_refused = on_refused
        self.flood_strikes = flood_strikes
        self.flood_window = flood_window
        self._sessions: dict[str, Allowance] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, eio_sid: str, environ: dict) -> str | None:
        """Admit a new Engine.IO session; return why not (the server or its address has no slot left), else None."""
        if eio_sid in self._sessions:
            return None
        if self.max_sessions and len(self._sessions) >= self.max_sessions:
            self.on_refused("connections")
            return f"server full (at most {self.max_sessions} connections)"
        address = self.address_of(environ)
        if not self.per_address.acquire(address):
            self.on_refused("connections_per_address")
            return f"too many connections from your address (at most {self.per_address.limit})"
        self._sessions[eio_sid] = Allowance(TokenBucket(self.rate, self.burst), address)
        return None

    def is_open(self, eio_sid: str) -> bool:
        """Tell whether a session was admitted and has not ended."""
        return eio_sid in self._sessions

    def close(self, eio_sid: str) -> None:
        """Forget an ended session and give its address slot back; harmless when repeated."""
        allowance = self._sessions.pop(eio_sid, None)
        if allowance is not None:
            self.per_address.release(allowance.address)

    def take(self, eio_sid: str, now: float | None = None) -> bool:
        """Spend one of the session's message tokens; False when it is over its rate."""
        allowance = self._sessions.get(eio_sid)
        if allowance is None:
            return True  # not a session this server opened (cannot happen): limits nothing
        return allowance.bucket.take(now)

    def strike(self, eio_sid: str, now: float | None = None) -> bool:
        """Count a packet over the rate; True once the session is flooding and must be disconnected."""
        allowance = self._sessions.get(eio_sid)
        if allowance is None:
            return False
        now = time.monotonic() if now is None else now
        if now - allowance.window_start > self.flood_window:
            allowance.window_start, allowance.strikes = now, 0
        allowance.strikes += 1
        return allowance.strikes > self.flood_strikes

    def reserve(self, eio_sid: str, size: int) -> int | None:
        """Count a message whose handler starts; its cost to release later, or None when over the bytes bound."""
        allowance = self._sessions.get(eio_sid)
        cost = size + HANDLER_OVERHEAD
        if allowance is None:
            return cost
        if allowance.in_flight + cost > self.max_in_flight_bytes:
            return None
        allowance.in_flight += cost
        return cost

    def release(self, eio_sid: str, cost: int) -> None:
        """A handler counted by ``reserve`` has finished."""
        allowance = self._sessions.get(eio_sid)
        if allowance is not None:
            allowance.in_flight = max(0, allowance.in_flight - cost)
