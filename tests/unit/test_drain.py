"""The drained socket: bytes in order from a bounded backlog, socket-like reads, a pipe kombu's poller can wait on."""

from __future__ import annotations

import select
import socket
import ssl
import time

import pytest

from pushserver import drain
from pushserver.drain import Drain, DrainedSocket


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    drained = DrainedSocket(ours, limit=1 << 20)
    yield drained, theirs
    drained.close()
    theirs.close()


def test_bytes_come_out_in_order_across_chunks(pair):
    drained, peer = pair
    sent = b"".join(bytes([i % 251]) * (i + 1) for i in range(600))
    for start in range(0, len(sent), 7000):
        peer.sendall(sent[start : start + 7000])
    wait_for(lambda: drained.backlog == len(sent))
    got = bytearray()
    buffer = bytearray(4096)
    while len(got) < len(sent):
        n = drained.recv_into(buffer)
        got += buffer[:n]
    assert bytes(got) == sent
    assert drained.backlog == 0


def test_reads_behave_as_socket_reads_do_for_redis_py(pair):
    drained, peer = pair
    drained.settimeout(0)
    with pytest.raises(BlockingIOError):  # redis-py's can_read(timeout=0): nothing yet
        drained.recv_into(bytearray(10))
    drained.settimeout(0.05)
    with pytest.raises(socket.timeout):
        drained.recv(10)
    drained.settimeout(None)
    peer.sendall(b"+PONG\r\n")
    assert drained.recv(3) == b"+PO"
    assert drained.recv(100) == b"NG\r\n"
    peer.shutdown(socket.SHUT_WR)
    assert drained.recv(100) == b""  # the end of the connection, as redis-py expects it


def test_the_poll_fd_is_readable_exactly_while_there_is_something_to_read(pair):
    drained, peer = pair
    assert not readable(drained.fileno())
    peer.sendall(b"x" * 100)
    wait_for(lambda: readable(drained.fileno()))
    assert drained.recv(60) == b"x" * 60
    assert readable(drained.fileno())
    assert drained.recv(60) == b"x" * 40
    assert not readable(drained.fileno())
    peer.close()
    wait_for(lambda: readable(drained.fileno()))  # the end is news too: the parser must see it


def test_the_drain_pauses_at_its_limit_and_resumes_as_the_parser_reads():
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    drained = DrainedSocket(ours, limit=64 << 10)
    try:
        sent = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # until the kernel's buffers are full too
            try:
                sent += peer.send(b"y" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        assert drained.pauses >= 1
        assert drained.backlog < (64 << 10) + drain.READ_SIZE  # one read past the limit at most
        got = 0
        drained.settimeout(1.0)
        while got < sent:
            got += len(drained.recv(65536))
        assert got == sent  # nothing lost across the pause: the drain resumed as the backlog went down
    finally:
        drained.close()
        peer.close()


def test_close_stops_the_drain_thread_and_closes_the_socket(pair):
    drained, _ = pair
    thread = drained._thread
    drained.close()
    assert not thread.is_alive()
    assert drained.fileno() == -1
    drained.close()  # redis-py may disconnect twice


def test_a_tls_socket_is_read_directly_and_a_plain_one_is_drained(caplog):
    # One thread may not read an SSLSocket while another writes it.
    d = Drain()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with context.wrap_socket(socket.socket(), server_hostname="localhost", do_handshake_on_connect=False) as tls:
        assert d.wrap(tls) is tls
    assert "without a drain thread (the connection is TLS)" in caplog.text
    ours, peer = socket.socketpair()
    wrapped = d.wrap(ours)
    try:
        assert isinstance(wrapped, DrainedSocket)
        assert d.sockets == [wrapped]
    finally:
        wrapped.close()
        peer.close()


def test_behind_compares_the_backlog_with_the_shedding_mark():
    ours, peer = socket.socketpair()
    d = Drain(limit=1 << 20, shed_above=1000)
    drained = d.wrap(ours)
    try:
        assert not d.behind()
        peer.sendall(b"z" * 1001)
        wait_for(lambda: d.backlog() == 1001)
        assert d.behind()
        drained.recv(10)
        assert not d.behind()
    finally:
        drained.close()
        peer.close()


def test_the_installed_kombu_and_redis_are_the_releases_the_drain_was_checked_against():
    # A failure here: read what pushserver/drain.py's module doc lists in the new release, run
    # tests/unit/test_drain.py and tests/integration/test_receiver_drain.py, then widen drain.VETTED.
    assert drain.vetted()


@pytest.mark.parametrize("version", ["5.5.4", "5.7.0", "7.0.0"])
def test_an_unvetted_release_turns_the_drain_off(monkeypatch: pytest.MonkeyPatch, version: str):
    monkeypatch.setattr(drain, "installed", lambda dist: version)
    assert not drain.vetted()
