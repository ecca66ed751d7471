"""The Engine.IO server of pushserver/eioserver.py: its send queue, and real sessions against it in-process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from pushserver import eioserver
from pushserver.eioserver import EngineIOServer, SendQueue, SocketIOServer, trim_environ
from pushserver.inbound import Inbound, PacketHeader, peek_packet
from tests.support.waits import until

# -- SendQueue -------------------------------------------------------------------


async def test_send_queue_is_fifo_and_join_waits_for_task_done() -> None:
    q = SendQueue()
    for item in (1, 2, 3):
        await q.put(item)
    assert q.qsize() == 3 and not q.empty()
    assert [await q.get(), q.get_nowait(), await q.get()] == [1, 2, 3]
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    joined = asyncio.ensure_future(q.join())
    await asyncio.sleep(0)
    for _ in range(2):
        q.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    q.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        q.task_done()


async def test_send_queue_get_waits_for_a_put_and_times_out() -> None:
    q = SendQueue()
    waiter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("x")
    assert await asyncio.wait_for(waiter, 1) == "x"
    for _ in range(3):  # as engineio's poll() when nothing is sent
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(q.get(), 0.01)
    assert q._getters is not None and len(q._getters) == 1  # timed-out getters do not pile up: one at most
    q.put_nowait("y")
    assert await asyncio.wait_for(q.get(), 0.01) == "y"
    assert q.empty()


async def test_send_queue_skips_a_getter_cancelled_before_the_put() -> None:
    q = SendQueue()
    first, second = q.get(), q.get()
    first.cancel()  # timed out, as engineio's poll() when nothing is sent
    q.put_nowait("item")
    assert await asyncio.wait_for(second, 1) == "item"
    assert first.cancelled() and q.empty()


async def test_send_queue_get_is_a_future_not_a_task() -> None:
    # engineio waits with wait_for(queue.get(), ...) for every packet it sends: a coroutine there would cost a task.
    q = SendQueue()
    q.put_nowait("ready")
    got = q.get()
    assert isinstance(got, asyncio.Future) and got.done() and await got == "ready"


async def test_send_queue_getter_cancelled_as_an_item_arrives_loses_nothing() -> None:
    q = SendQueue()
    consumer = asyncio.ensure_future(asyncio.wait_for(q.get(), 5))
    await asyncio.sleep(0)
    q.put_nowait("item")
    consumer.cancel()
    try:
        got = await consumer
    except asyncio.CancelledError:
        got = q.get_nowait()  # not taken: still queued
    assert got == "item"


def test_trim_environ_keeps_only_what_pushserver_reads() -> None:
    environ = {
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_X_FORWARDED_FOR": "1.2.3.4",
        "HTTP_COOKIE": "secret",
        "aiohttp.request": object(),
        "QUERY_STRING": "EIO=4",
    }
    same = environ
    trim_environ(environ)
    assert same == {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}


def test_connect_handlers_see_the_peer_address_whichever_way_registered() -> None:
    eio = EngineIOServer(async_mode="aiohttp")

    @eio.on("connect")
    def plain(sid: str, environ: dict[str, Any]) -> str:
        return environ["REMOTE_ADDR"]

    environ = {"REMOTE_ADDR": "127.0.0.1", "aiohttp.request": SimpleNamespace(remote="10.1.2.3")}
    assert eio.handlers["connect"]("sid", environ) == "10.1.2.3"

    async def coroutine(sid: str, environ: dict[str, Any]) -> None:
        pass

    eio.on("connect", coroutine)
    # engineio awaits a handler only if it is a coroutine function.
    assert inspect.iscoroutinefunction(eio.handlers["connect"])


def test_an_unvetted_library_is_logged_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(eioserver, "unvetted", lambda: ["python-engineio 4.99.0 is outside the vetted range"])
    with caplog.at_level(logging.WARNING, logger="pushserver.eioserver"):
        SocketIOServer(async_mode="aiohttp")
    assert [r.getMessage() for r in caplog.records] == [
        (
            "python-engineio 4.99.0 is outside the vetted range: pushserver relies on its internals"
            " (pushserver/dependencies.py)"
        )
    ]


# -- sessions against a real server ---------------------------------------------

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.4


class Server:
    def __init__(self, sio: SocketIOServer, url: str) -> None:
        self.sio = sio
        self.url = url
        self.environs: dict[str, dict[str, Any]] = {}
        self.events: list[Any] = []
        self.disconnects: list[Any] = []
        self.release = asyncio.Event()

    def eio_socket(self, sid: str) -> Any:
        return self.sio.eio.sockets[self.sio.manager.eio_sid_from_sid(sid, "/")]


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[Server]:
    options.setdefault("client_events", frozenset({"echo", "slow"}))
    sio = SocketIOServer(
        async_mode="aiohttp",
        cors_allowed_origins="*",
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        **options,
    )
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = Server(sio, f"http://127.0.0.1:{port}")

    @sio.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        server.environs[sid] = dict(environ)
        trim_environ(environ)

    @sio.on("disconnect")
    async def disconnect(sid: str, *args: Any) -> None:
        server.disconnects.append((sid, args))

    @sio.on("echo")
    async def echo(sid: str, data: Any) -> Any:
        server.events.append(data)
        return {"echo": data}

    @sio.on("slow")
    async def slow(sid: str, data: Any) -> Any:
        await server.release.wait()
        return {"slow": len(str(data))}

    try:
        yield server
    finally:
        await sio.shutdown()
        await runner.cleanup()


async def raw_connect(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[Any, str]:
    """An Engine.IO v4 WebSocket session with its Socket.IO connect done; returns (ws, socket.io sid)."""
    ws = await session.ws_connect(url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", **kwargs)
    opened = await ws.receive_str(timeout=2)
    assert opened.startswith("0")
    await ws.send_str("40")
    msg = await ws.receive_str(timeout=2)
    assert msg.startswith("40"), msg
    return ws, json.loads(msg[2:])["sid"]


async def test_websocket_session_pings_events_and_timeout() -> None:
    async with serving() as server, aiohttp.ClientSession() as session:
        ws, sid = await raw_connect(session, server.url)
        sock = server.eio_socket(sid)
        assert type(sock.queue) is SendQueue
        # The environ the handler saw had the request in it; trimmed afterwards.
        assert "HTTP_HOST" in server.environs[sid]
        assert server.sio.environ[sock.sid] == {"REMOTE_ADDR": "127.0.0.1"}

        await ws.send_str('421["echo",{"n":1}]')
        assert await ws.receive_str(timeout=2) == '431[{"echo":{"n":1}}]'
        assert server.events == [{"n": 1}]

        for _ in range(3):  # the server keeps pinging while we answer
            assert await ws.receive_str(timeout=PING_INTERVAL + 1) == "2"
            await ws.send_str("3")
        assert not sock.closed
        # The next ping waits on the server's one keep-alive schedule, not in a task of this connection's.
        await until(lambda: len(server.sio.eio.pings) == 1, 2, "the pong to schedule the next ping")
        assert not [t for t in asyncio.all_tasks() if "_send_ping" in repr(t.get_coro())]

        # Stop answering: the server drops us after ping interval + timeout.
        assert await ws.receive_str(timeout=PING_INTERVAL + 1) == "2"
        msg = await ws.receive(timeout=PING_INTERVAL + PING_TIMEOUT + 2)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        for _ in range(50):
            if sock.closed:
                break
            await asyncio.sleep(0.05)
        assert sock.closed
        await ws.close()


async def test_a_silent_polling_session_is_timed_out() -> None:
    # A long-polling client that vanishes sends no pong and opens no request: only engineio's sweep of
    # the sessions notices, once ping interval + timeout have passed (a sweep round takes a ping timeout).
    async with serving() as server, aiohttp.ClientSession() as session:
        polling = server.url + "/socket.io/?EIO=4&transport=polling"
        async with session.get(polling) as opened:
            eio_sid = json.loads((await opened.text())[1:])["sid"]
        sock = server.sio.eio.sockets[eio_sid]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PING_INTERVAL + 2 * PING_TIMEOUT + 2
        while not sock.closed and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert sock.closed


async def test_unparseable_engineio_packets_are_dropped_not_the_connection() -> None:
    # Stock engineio parses a WebSocket packet outside its error handling: the
    # exception ends the handler and leaves the socket open until a ping
    # timeout. Here it is logged (logs.py counts it) and the reader reads on.
    async with serving() as server, aiohttp.ClientSession() as session:
        ws, sid = await raw_connect(session, server.url)
        for garbage in ("x", "", "9", "\x00"):
            await ws.send_str(garbage)
        await ws.send_str('421["echo","still here"]')
        assert await ws.receive_str(timeout=2) == '431[{"echo":"still here"}]'
        assert not server.eio_socket(sid).closed
        await ws.close()


async def test_server_disconnect_and_client_close_end_the_session() -> None:
    async with serving() as server, aiohttp.ClientSession() as session:
        ws, sid = await raw_connect(session, server.url)
        await server.sio.disconnect(sid)
        msgs = []
        while True:
            msg = await ws.receive(timeout=2)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            msgs.append(msg.data)
        assert "41" in msgs  # Socket.IO disconnect, then the transport closes

        ws, sid = await raw_connect(session, server.url)
        sock = server.eio_socket(sid)
        await ws.close()
        for _ in range(50):
            if sock.closed:
                break
            await asyncio.sleep(0.05)
        assert sock.closed and sock.sid not in server.sio.eio.sockets


async def test_websocket_compression_is_not_negotiated_by_default() -> None:
    async with serving() as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url, compress=15)
        assert ws.compress == 0
        await ws.close()
    async with serving(websocket_compression=True) as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url, compress=15)
        assert ws.compress == 15
        await ws.send_str('421["echo","x"]')
        assert await ws.receive_str(timeout=2) == '431[{"echo":"x"}]'
        await ws.close()


async def test_remote_addr_is_the_peer() -> None:
    # engineio's aiohttp driver says 127.0.0.1 whoever connects.
    async with serving() as server:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            ws, sid = await raw_connect(session, server.url)
            assert server.environs[sid]["REMOTE_ADDR"] == "127.0.0.2"
            await ws.close()

            # Long-polling: the Socket.IO connect rides on the session's second request.
            polling = server.url + "/socket.io/?EIO=4&transport=polling"
            async with session.get(polling) as opened:
                eio_sid = json.loads((await opened.text())[1:])["sid"]
            async with session.post(f"{polling}&sid={eio_sid}", data="40") as posted:
                assert posted.status == 200
            async with session.get(f"{polling}&sid={eio_sid}") as answer:
                sid = json.loads((await answer.text())[2:])["sid"]
            assert server.environs[sid]["REMOTE_ADDR"] == "127.0.0.2"


async def test_polling_then_upgrade_with_python_socketio_client() -> None:
    async with serving() as server:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(server.url, transports=["polling", "websocket"], wait_timeout=5)
        try:
            for _ in range(50):
                if client.transport() == "websocket":
                    break
                await asyncio.sleep(0.05)
            assert client.transport() == "websocket"
            sock = server.eio_socket(client.get_sid())
            assert sock.upgraded and type(sock.queue) is SendQueue
            assert await client.call("echo", [1, 2], timeout=2) == {"echo": [1, 2]}
            await asyncio.sleep(PING_INTERVAL * 3)  # pings are answered across the upgrade
            assert client.connected and not sock.closed
            assert await client.call("echo", "again", timeout=2) == {"echo": "again"}
        finally:
            await client.disconnect()


async def test_polling_only_client() -> None:
    async with serving() as server:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(server.url, transports=["polling"], wait_timeout=5)
        try:
            assert await client.call("echo", "p", timeout=2) == {"echo": "p"}
            await asyncio.sleep(PING_INTERVAL * 3)
            assert client.connected
            assert await client.call("echo", "q", timeout=2) == {"echo": "q"}
        finally:
            await client.disconnect()


# -- packets written straight to an idle WebSocket (SendQueue.deliver) ------------


def message(text: str) -> tuple[Any, bytes]:
    """An Engine.IO MESSAGE packet and its WebSocket frame, as the fanout sends them."""
    from engineio import packet

    pkt = packet.Packet(packet.MESSAGE, text)
    return pkt, eioserver.text_frame(pkt.encode())


async def test_deliver_writes_to_an_idle_websocket_and_queues_behind_a_busy_writer() -> None:
    async with serving() as server, aiohttp.ClientSession() as session:
        ws, sid = await raw_connect(session, server.url)
        queue = server.eio_socket(sid).queue
        assert queue.websocket is not None
        await until(queue.waiting, 2, "the writer to wait", interval=0.005)
        # Frame lengths in each of RFC 6455's three length encodings, the bounds included.
        texts = ["2" + "a" * n for n in (0, 124, 125, 65_534, 65_535, 70_000)]
        for text in texts:
            queue.deliver(*message(text))
            assert queue.waiting()  # written, not handed to engineio's writer
            assert await ws.receive_str(timeout=2) == "4" + text

        # Something queued (here: a packet handed to the idle writer) puts what follows behind it.
        queue.put_nowait(message("2first")[0])
        assert not queue.waiting()
        queue.deliver(*message("2second"))
        assert queue.qsize() == 1
        assert [await ws.receive_str(timeout=2) for _ in range(2)] == ["42first", "42second"]
        await until(queue.waiting, 2, "the writer to wait again", interval=0.005)

        await ws.close()
        await until(lambda: queue.websocket is None, 2, "the handler to end", interval=0.005)
        queue.deliver(*message("2after"))  # a closed session's queue takes it (nobody reads it)
        assert queue.qsize() == 1


async def test_deliver_queues_for_polling_and_writes_once_upgraded() -> None:
    async with serving() as server:
        client = socketio.AsyncClient(reconnection=False)
        got: list[Any] = []
        client.on("note", got.append)
        await client.connect(server.url, transports=["polling"], wait_timeout=5)
        try:
            queue = server.eio_socket(client.get_sid()).queue
            assert queue.websocket is None
            queue.deliver(*message('2["note",1]'))
            await until(lambda: got == [1], 2, "the polled note", interval=0.005)
        finally:
            await client.disconnect()

        client = socketio.AsyncClient(reconnection=False)
        client.on("note", got.append)
        await client.connect(server.url, transports=["polling", "websocket"], wait_timeout=5)
        try:
            await until(lambda: client.transport() == "websocket", 2, "the upgrade", interval=0.005)
            queue = server.eio_socket(client.get_sid()).queue
            await until(queue.waiting, 2, "the writer to wait", interval=0.005)
            queue.deliver(*message('2["note",2]'))
            assert queue.waiting()
            await until(lambda: got == [1, 2], 2, "the written note", interval=0.005)
        finally:
            await client.disconnect()


async def test_deliver_queues_what_a_client_that_stops_reading_cannot_take() -> None:
    # Once the socket's buffers are full, asyncio's transport holds what is written: from then on packets
    # wait in the send queue, where the fanout's backlog limits (fanout.py) count them.
    async with serving() as server, aiohttp.ClientSession() as session:
        ws, sid = await raw_connect(session, server.url)
        queue = server.eio_socket(sid).queue
        await until(queue.waiting, 2, "the writer to wait", interval=0.005)
        pkt, frame = message("2" + "x" * 60_000)
        written = 0
        while queue.qsize() == 0 and written < 10_000:  # nothing read: the kernel's buffers fill up
            queue.deliver(pkt, frame)
            written += 1
        assert queue.qsize() == 1 and written > 1, written
        queue.deliver(pkt, frame)
        assert queue.qsize() == 2  # behind the first, not written past it
        await ws.close()


# -- what clients may send (inbound.py) ------------------------------------------


def limits(**kwargs: Any) -> tuple[Inbound, list[str]]:
    refused: list[str] = []
    options: dict[str, Any] = {"rate": 1000.0, "burst": 1000.0, "max_in_flight_bytes": 1 << 20}
    options.update(kwargs)
    return Inbound(on_refused=refused.append, **options), refused


def test_peek_packet_reads_type_namespace_and_ack_id() -> None:
    assert peek_packet('21["subscribe",{}]') == PacketHeader("2", "/", 1)
    assert peek_packet('2["x"]') == PacketHeader("2", "/", None)
    assert peek_packet('2/admin,7["x"]') == PacketHeader("2", "/admin", 7)
    assert peek_packet('51-12["x",{"_placeholder":true,"num":0}]') == PacketHeader("5", "/", 12)
    assert peek_packet("52-/nsp,3[]") == PacketHeader("5", "/nsp", 3)
    assert peek_packet("") == PacketHeader("", "/", None)
    assert peek_packet("2" + "9" * 40) == PacketHeader("2", "/", int("9" * 16))


async def test_only_client_events_reach_handlers_lifecycle_names_included() -> None:
    inbound, refused = limits()
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url)
        for i, frame in enumerate(
            [
                '["disconnect","io client disconnect"]',
                '["connect",{"REMOTE_ADDR":"x"}]',
                '["message","hi"]',
                '[7,"x"]',
                "[]",
                '["__proto__"]',
            ]
        ):
            await ws.send_str(f"42{i}{frame}")
            reply = json.loads((await ws.receive_str(timeout=2))[2 + len(str(i)) :])
            assert reply[0]["error"]["code"] == "bad_request", frame
        await ws.send_str('42["disconnect","no ack asked"]')
        await ws.send_str('429["echo","still connected"]')
        assert await ws.receive_str(timeout=2) == '439[{"echo":"still connected"}]'
        assert server.disconnects == [] and refused == ["event_name"] * 7
        await ws.close()


async def test_binary_packets_and_frames_are_refused_not_buffered() -> None:
    inbound, refused = limits()
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url)
        await ws.send_str('451-3["echo",{"_placeholder":true,"num":0}]')
        reply = await ws.receive_str(timeout=2)
        assert reply.startswith("433[") and "JSON text only" in reply
        await ws.send_str('461-0[{"_placeholder":true,"num":0}]')
        await ws.send_str('451000000-["echo",{}]')
        for _ in range(20):
            await ws.send_bytes(b"\x04" + b"x" * 4000)  # an attachment frame
        await ws.send_str('424["echo","after"]')
        assert await ws.receive_str(timeout=2) == '434[{"echo":"after"}]'
        assert server.sio._binary_packet == {}
        assert refused.count("binary") == 23 and server.events == ["after"]
        await ws.close()


async def test_rate_limit_answers_too_many_then_disconnects_a_flooder() -> None:
    inbound, refused = limits(rate=1.0, burst=5.0, flood_strikes=10)
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url)  # the connect took one token
        for i in range(30):
            await ws.send_str(f'42{i}["echo",{i}]')
        replies = []
        while True:
            msg = await ws.receive(timeout=2)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            replies.append(msg.data)
        answered = [r for r in replies if r.startswith("43")]
        assert [r for r in answered if '"echo"' in r] == [f'43{i}[{{"echo":{i}}}]' for i in range(4)]
        too_many = [r for r in answered if '"too_many"' in r]
        assert len(too_many) == 10 and "rate limit" in too_many[0]
        assert replies[-1].startswith('42["pushserver:error",{"code":"too_many"')
        assert refused.count("rate") == 11 and refused.count("flood") == 1
        assert len(server.disconnects) == 1 and len(inbound) == 0


async def test_bytes_in_flight_per_connection_are_bounded() -> None:
    inbound, refused = limits(max_in_flight_bytes=3 * (1024 + 1100))
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url)
        for i in range(5):
            await ws.send_str(f'42{i}["slow","{"x" * 1000}"]')
        reply = await ws.receive_str(timeout=2)
        assert reply.startswith("433[") and "too_many" in reply and "bytes" in reply
        assert refused == ["in_flight", "in_flight"]
        server.release.set()
        answers = sorted([await ws.receive_str(timeout=2) for _ in range(4)])
        assert answers[-1].startswith("434[") and "too_many" in answers[-1]
        assert [a[:3] for a in answers[:3]] == ["430", "431", "432"]
        await ws.send_str('425["slow","x"]')
        assert await ws.receive_str(timeout=2) == '435[{"slow":1}]'  # released: room again
        await ws.close()


async def test_sessions_per_address_are_counted_at_the_engineio_handshake() -> None:
    inbound, refused = limits(max_per_address=2)
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        handshake = server.url + "/socket.io/?EIO=4&transport=polling"
        sids = []
        for _ in range(2):  # long-polling sessions that never connect to a namespace
            async with session.get(handshake) as r:
                assert r.status == 200
                sids.append(json.loads((await r.text())[1:])["sid"])
        async with session.get(handshake) as r:
            assert r.status == 401 and "too many connections" in await r.text()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
        async with session.post(f"{handshake}&sid={sids[0]}", data="1") as r:  # an Engine.IO close
            assert r.status == 200
        for _ in range(50):
            if len(inbound) == 1:
                break
            await asyncio.sleep(0.02)
        ws, _ = await raw_connect(session, server.url)  # the slot is free again
        assert refused == ["connections_per_address"] * 2
        await ws.close()


async def test_sessions_past_max_connections_are_refused_at_the_handshake() -> None:
    inbound, refused = limits(max_sessions=2)
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        first, _ = await raw_connect(session, server.url)
        second, _ = await raw_connect(session, server.url)
        async with session.get(server.url + "/socket.io/?EIO=4&transport=polling") as r:
            assert r.status == 401 and "server full (at most 2 connections)" in await r.text()
        await first.close()
        for _ in range(50):
            if len(inbound) == 1:
                break
            await asyncio.sleep(0.02)
        third, _ = await raw_connect(session, server.url)  # a slot is free again
        assert refused == ["connections"]
        await second.close()
        await third.close()


def test_engineio_schedules_its_pings_through_start_background_task() -> None:
    """EngineIOServer.start_background_task recognises python-engineio 4.15's ping task: fail loudly if it moves."""
    from engineio.async_socket import AsyncSocket

    assert "self.server.start_background_task(self._send_ping)" in inspect.getsource(AsyncSocket.schedule_ping)
    assert list(inspect.signature(AsyncSocket._send_ping).parameters) == ["self"]


async def test_a_polling_session_is_pinged_too() -> None:
    async with serving() as server, aiohttp.ClientSession() as session:
        polling = server.url + "/socket.io/?EIO=4&transport=polling"
        async with session.get(polling) as opened:
            eio_sid = json.loads((await opened.text())[1:])["sid"]
        async with session.get(f"{polling}&sid={eio_sid}", timeout=aiohttp.ClientTimeout(PING_INTERVAL + 2)) as polled:
            assert await polled.text() == "2"
        assert not server.sio.eio.sockets[eio_sid].closed


def test_the_python_socketio_hooks_overridden_are_there() -> None:
    """SocketIOServer overrides python-socketio 5.18.1's internal entry points: fail loudly if they move."""
    import inspect

    expected = {
        "_handle_eio_connect": ["self", "eio_sid", "environ"],
        "_handle_eio_disconnect": ["self", "eio_sid", "reason"],
        "_handle_eio_message": ["self", "eio_sid", "data"],
        "_handle_event": ["self", "eio_sid", "namespace", "id", "data"],
        "_handle_event_internal": ["self", "server", "sid", "eio_sid", "data", "namespace", "id"],
        "_send_packet": ["self", "eio_sid", "pkt"],
    }
    for name, params in expected.items():
        method = getattr(socketio.AsyncServer, name)
        assert list(inspect.signature(method).parameters) == params, name
    assert hasattr(socketio.AsyncServer(async_mode="aiohttp"), "_binary_packet")


async def test_a_long_polling_flooder_is_dropped_and_its_session_is_gone() -> None:
    inbound, refused = limits(rate=1.0, burst=5.0, flood_strikes=10)
    async with serving(inbound=inbound) as server, aiohttp.ClientSession() as session:
        base = server.url + "/socket.io/?EIO=4&transport=polling"
        async with session.get(base) as r:
            url = base + "&sid=" + json.loads((await r.text())[1:])["sid"]
        async with session.post(url, data="40") as r:
            assert r.status == 200
        statuses = []
        for k in range(4):  # engineio takes at most 16 packets per long-polling POST
            body = "\x1e".join(f'42{k * 16 + i}["echo",{i}]' for i in range(16))
            async with session.post(url, data=body) as r:
                statuses.append(r.status)
        assert statuses[0] == 200 and statuses[-1] == 400  # "invalid session", not an error 500
        assert refused.count("flood") == 1 and len(inbound) == 0 and len(server.disconnects) == 1


async def test_send_queue_counts_the_bytes_it_holds() -> None:
    from engineio import packet

    q = SendQueue()
    q.put_nowait(packet.Packet(packet.MESSAGE, "x" * 100))
    q.put_nowait(packet.Packet(packet.PING))
    q.put_nowait(None)
    assert q.nbytes == 100
    q.get_nowait()
    assert q.nbytes == 0 and q.qsize() == 2
    await q.get()
    await q.get()
    assert q.nbytes == 0


async def test_a_client_that_sends_but_does_not_read_is_dropped_past_the_unread_bytes() -> None:
    inbound, refused = limits()
    async with serving(inbound=inbound, max_unread_bytes=2_000_000) as server, aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, server.url)
        sent = 0
        try:
            while sent < 2000 and not refused:  # 60 KB answers, none of them read
                await ws.send_str(f'42{sent}["echo","{"x" * 60_000}"]')
                sent += 1
                await asyncio.sleep(0.002)
        except (ConnectionError, aiohttp.ClientError):
            pass
        for _ in range(100):
            if server.disconnects:
                break
            await asyncio.sleep(0.02)
        assert refused == ["unread"] and len(server.disconnects) == 1, (sent, refused)
        assert sent < 200  # 2 MB of answers, plus what the sockets' buffers took
        await ws.close()
