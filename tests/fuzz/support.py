"""Plumbing for the fuzzing suite: budgets and case counts, a client event loop, exact Socket.IO frames.

Hypothesis drives synchronous test functions; the real python-socketio and
aiohttp clients live on one asyncio loop in a background thread, and each
example hands its coroutine to that loop. One connection then serves
thousands of examples, and nothing depends on how pytest-asyncio manages its
own loops.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import socketio

from dev.stack import rss_bytes

T = TypeVar("T")

# -- budgets and counts -------------------------------------------------------

#: ``PUSHSERVER_FUZZ_SLOW=1`` (or ``--slow``, when a root conftest registers it)
#: multiplies every budget by this.
SLOW_FACTOR = 10
SLOW_ENV = "PUSHSERVER_FUZZ_SLOW"

_slow = os.environ.get(SLOW_ENV, "").strip().lower() not in ("", "0", "false", "no")
#: ``PUSHSERVER_FUZZ_SCALE=0.1`` for a quick look while working on the suite (any factor; the slow run's
#: factor applies on top).
SCALE = float(os.environ.get("PUSHSERVER_FUZZ_SCALE", "1") or 1)

#: Examples each fuzz test actually ran (its body executed), by label; printed at the end.
CASES: Counter[str] = Counter()


def set_slow(enabled: bool) -> None:
    """Switch the long run on (called by the conftest before test modules are imported)."""
    global _slow
    _slow = _slow or enabled


def is_slow() -> bool:
    return _slow


def budget(examples: int) -> int:
    """The number of Hypothesis examples for a test: ``examples`` in CI, ten times that with --slow."""
    return max(1, round(examples * SCALE * (SLOW_FACTOR if _slow else 1)))


def count_case(label: str) -> None:
    """Record that one generated case of ``label`` ran."""
    CASES[label] += 1


# -- the client loop -----------------------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it and waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="fuzz-client-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_rest(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


# -- Socket.IO frames ----------------------------------------------------------

#: Default Engine.IO max message size of pushserver (--max-message-bytes).
MAX_MESSAGE_BYTES = 64 * 1024
#: aiohttp, which serves python-engineio's WebSocket transport, refuses a
#: message whose size is >= max_msg_size (aiohttp/_websocket/reader_py.py:
#: ``payload_bytes_to_read >= max_msg_size - partial_len``): the largest
#: message accepted is one byte *under* the limit.
LARGEST_ACCEPTED = MAX_MESSAGE_BYTES - 1

# How long to wait for an ack before asking whether the server is simply
# busy: a probe that the server answers at once, then a grace period.
FAST_ACK = 0.3
PROBE_TIMEOUT = 10.0
GRACE = 1.0
CLOSE_WAIT = 3.0


def encode_json(value: Any) -> str:
    """JSON text exactly as python-socketio's client writes it (stdlib json, compact, ASCII)."""
    return json.dumps(value, separators=(",", ":"))


def wire_size(frame: str) -> int:
    """Bytes of the WebSocket message carrying a Socket.IO packet: Engine.IO's ``4`` plus the packet."""
    return len(("4" + frame).encode("utf-8"))


@dataclass
class Outcome:
    """What became of one frame: its ack (the ack's arguments), and whether the server closed the connection."""

    frame_bytes: int
    ack: tuple[Any, ...] | None
    closed: bool
    close_reason: str | None = None

    @property
    def acked(self) -> bool:
        return self.ack is not None


class AckSafeClient(socketio.AsyncClient):
    """python-socketio's client, unharmed by an ack for id 0.

    The client keeps its ack-id counter in its callback table under id 0 and
    hands out ids from 1; socket.io-client (JS) starts at 0. The server
    answers every ack-asking packet, so a raw packet this suite sends with
    ack id 0 comes back as an ack for 0, which would replace the stock
    client's counter and break every later call on the connection.
    """

    async def _handle_ack(self, namespace: str, id: int, data: Any) -> None:
        if id == 0:
            return
        await super()._handle_ack(namespace, id, data)


class SocketClient:
    """One real python-socketio ``AsyncClient`` connection to pushserver, driven from synchronous code.

    Frames are written exactly: the JSON text is produced here and sent as
    the Socket.IO EVENT packet ``2<ack id><json>`` over the client's own
    Engine.IO WebSocket, with the ack id registered through the client (the
    one private call, ``_generate_ack_id``, is what ``emit(callback=...)``
    uses). That lets the tests send JSON the stdlib encoder never writes
    (deep nesting) and know each message's size to the byte.
    """

    def __init__(
        self,
        runner: LoopThread,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.runner = runner
        # python-socketio waits this long for the namespace even when the server has
        # already closed the transport (an oversized CONNECT packet): keep it short there.
        self.connect_timeout = connect_timeout
        self.url = url
        self.token = token
        self.headers = headers or {}
        self.sio: socketio.AsyncClient | None = None
        self.closed_reason: str | None = None
        self.connect_error: Any = None
        self.received: list[tuple[str, Any]] = []
        self._closed: asyncio.Event | None = None
        self.connections = 0

    def __repr__(self) -> str:
        return f"<socket.io client of {self.url}>"

    # -- connection ---------------------------------------------------------

    def connect(self) -> bool:
        """Open the connection; False (with ``connect_error`` set) when the server refuses it."""
        return self.runner.run(self._connect())

    async def _connect(self) -> bool:
        if self.sio is not None:
            # Also when Socket.IO says "not connected": a namespace-level disconnect (the
            # client re-sent CONNECT, say) leaves the Engine.IO transport open.
            await self.sio.disconnect()
        self.sio = sio = AckSafeClient(reconnection=False)
        self._closed = closed = asyncio.Event()
        self.closed_reason = None
        self.connect_error = None
        self.received = []

        @sio.on("disconnect")
        async def on_disconnect(reason: Any = None) -> None:
            self.closed_reason = str(reason)
            closed.set()

        @sio.on("connect_error")
        async def on_connect_error(data: Any = None) -> None:
            self.connect_error = data

        self._arrived = arrived = asyncio.Event()

        @sio.on("*")
        async def on_any(event: str, *args: Any) -> None:
            self.received.append((event, args[0] if len(args) == 1 else args))
            arrived.set()

        try:
            await sio.connect(
                self.url,
                auth={"token": self.token} if self.token is not None else None,
                headers=self.headers,
                transports=["websocket"],
                wait_timeout=self.connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self.connect_error is None:
                self.connect_error = str(exc)
            await sio.disconnect()  # python-engineio keeps its HTTP session after a failed connect
            return False
        self.connections += 1
        return True

    @property
    def connected(self) -> bool:
        return self.sio is not None and self.sio.connected and not (self._closed and self._closed.is_set())

    def ensure_connected(self) -> None:
        if not self.connected:
            assert self.connect(), f"cannot (re)connect to {self.url}: {self.connect_error!r}"

    def close(self) -> None:
        if self.sio is not None:
            self.runner.run(self.sio.disconnect())

    # -- frames --------------------------------------------------------------

    def call(self, event: str, *args: Any) -> Outcome:
        """Send ``event`` with ``args`` (any JSON values) as one frame, expecting an ack."""
        return self.send_json(encode_json([event, *args]))

    def send_json(self, json_text: str | Callable[[int], str]) -> Outcome:
        """Send an EVENT packet whose data is the given JSON text verbatim, expecting an ack.

        ``json_text`` may be a function of the bytes the message spends before
        the JSON (``42<ack id>``), to build a message of an exact size.
        """
        self.ensure_connected()
        return self.runner.run(self._send_json(json_text))

    async def _send_json(self, json_text: str | Callable[[int], str]) -> Outcome:
        sio = self.sio
        assert sio is not None and self._closed is not None
        fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            if not fut.done():
                fut.set_result(args)

        ack_id = sio._generate_ack_id("/", on_ack)
        if callable(json_text):
            json_text = json_text(wire_size(f"2{ack_id}"))
        frame = f"2{ack_id}{json_text}"
        await sio.eio.send(frame)
        return await self._outcome(fut, wire_size(frame))

    def pipeline(self, event: str, payloads: list[Any], timeout: float = 20.0) -> list[tuple[Any, ...] | None]:
        """Send one frame per payload back to back, then collect the acks (None where none came)."""
        self.ensure_connected()
        return self.runner.run(self._pipeline(event, payloads, timeout))

    async def _pipeline(self, event: str, payloads: list[Any], timeout: float) -> list[tuple[Any, ...] | None]:
        sio = self.sio
        assert sio is not None
        loop = asyncio.get_running_loop()
        futures = []
        for payload in payloads:
            fut: asyncio.Future[tuple[Any, ...]] = loop.create_future()
            ack_id = sio._generate_ack_id("/", lambda *a, f=fut: f.done() or f.set_result(a))
            await sio.eio.send(f"2{ack_id}{encode_json([event, payload])}")
            futures.append(fut)
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        return [f.result() if f.done() else None for f in futures]

    def send_packet(self, packet_text: str) -> Outcome:
        """Send any Socket.IO packet text (malformed ones included); report whether the connection survived."""
        self.ensure_connected()
        return self.runner.run(self._send_packet(packet_text))

    async def _send_packet(self, packet_text: str) -> Outcome:
        sio = self.sio
        assert sio is not None and self._closed is not None
        await sio.eio.send(packet_text)
        # No ack is owed; an answered probe proves the server read past our packet.
        try:
            ack = await sio.call("unsubscribe", {"task_id": "probe"}, timeout=PROBE_TIMEOUT)
        except Exception:  # noqa: BLE001 - a dead connection shows as `closed`
            ack = None
        await asyncio.sleep(0)
        return Outcome(
            wire_size(packet_text), None if ack is None else (ack,), self._closed.is_set(), self.closed_reason
        )

    async def _outcome(self, fut: asyncio.Future, size: int, fast: float = FAST_ACK, grace: float = GRACE) -> Outcome:
        closed = self._closed
        assert closed is not None and self.sio is not None
        closing = asyncio.ensure_future(closed.wait())
        try:
            if fast:
                await asyncio.wait({fut, closing}, timeout=fast, return_when=asyncio.FIRST_COMPLETED)
            if not fut.done() and not closed.is_set():
                # Slow or silent? The server answers this probe at once with
                # bad_request; once it has, our frame was read long ago.
                try:
                    await self.sio.call("unsubscribe", None, timeout=PROBE_TIMEOUT)
                except Exception:  # noqa: BLE001 - a dead connection shows as `closed` below
                    pass
                await asyncio.wait({fut, closing}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            if closed.is_set() and not fut.done():
                await asyncio.wait({fut}, timeout=0.05)
        finally:
            closing.cancel()
        return Outcome(size, fut.result() if fut.done() else None, closed.is_set(), self.closed_reason)

    def wait_received(self, predicate: Callable[[str, Any], bool], timeout: float) -> tuple[str, Any] | None:
        """Wait until a server-sent event satisfies ``predicate(event, data)``; return it, or None on timeout."""

        async def wait() -> tuple[str, Any] | None:
            deadline = asyncio.get_running_loop().time() + timeout
            seen = 0
            while True:
                for item in self.received[seen:]:
                    if predicate(*item):
                        return item
                seen = len(self.received)
                self._arrived.clear()
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    pass

        return self.runner.run(wait())

    def wait_closed(self, timeout: float = CLOSE_WAIT) -> bool:
        async def wait() -> bool:
            assert self._closed is not None
            try:
                await asyncio.wait_for(self._closed.wait(), timeout)
            except asyncio.TimeoutError:
                return False
            return True

        return self.runner.run(wait())


# -- the server process --------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    rss = rss_bytes(pid)
    assert rss, f"no VmRSS for pid {pid}"
    return rss / 2**20


# -- Hypothesis settings -----------------------------------------------------------


def fuzz_settings(examples: int, *, shrink: bool = True, **overrides: Any):
    """Settings for a fuzz test against the live server: no deadline, ``budget(examples)`` examples.

    ``shrink=False`` is for tests whose every failing example costs an ack
    timeout: they report the first failure (their explicit ``@example``s
    come first and are minimal already) instead of spending minutes shrinking.
    """
    from hypothesis import HealthCheck, Phase, settings

    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(
        max_examples=budget(examples),
        deadline=None,
        phases=phases,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
        **overrides,
    )


def fill(value: Any, mapping: dict[str, str]) -> Any:
    """Replace placeholders (see strategies.KNOWN) inside every string of a JSON value, keys included."""
    if isinstance(value, str):
        for placeholder, real in mapping.items():
            if placeholder in value:
                value = value.replace(placeholder, real)
        return value
    if isinstance(value, list):
        return [fill(v, mapping) for v in value]
    if isinstance(value, dict):
        return {fill(k, mapping): fill(v, mapping) for k, v in value.items()}
    return value
