"""The pipe between the receiver process and the server: frames survive any cut, keep order and exact values."""

from __future__ import annotations

import math
import os
import threading
import time

from pushserver.receiver_process import MAX_FRAME_EVENTS, FrameReader, PipeWriter, encode_frame


def test_frames_reassemble_across_every_cut():
    messages = [("status", "connected"), ("events", [{"uuid": "a", "clock": 1}]),
                ("malformed", 3), ("events", [{"uuid": "b", "x": "é" * 50}] * 3)]
    data = b"".join(encode_frame(kind, payload) for kind, payload in messages)
    for cut in range(len(data) + 1):
        reader = FrameReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert got == messages, cut
    # One byte at a time, too.
    reader = FrameReader()
    assert [m for byte in data for m in reader.feed(bytes([byte]))] == messages


def test_values_arrive_exactly_as_celery_decoded_them():
    event = {"clock": 2 ** 70, "runtime": math.inf, "result": "\ud800", "eta": None, "retries": 0}
    (kind, [got]), = FrameReader().feed(encode_frame("events", [event]))
    assert kind == "events" and got == event and got["clock"] == 2 ** 70


def drain(fd: int) -> list:
    """Every message on a pipe until its writer closes it."""
    reader, got = FrameReader(), []
    while chunk := os.read(fd, 65536):
        got += reader.feed(chunk)
    os.close(fd)
    return got


def test_writer_keeps_status_messages_in_their_place_among_events():
    r, w = os.pipe()
    writer = PipeWriter(w)
    writer.send("status", "connected")
    for i in range(2500):
        writer.add_event({"i": i})
        if i == 1200:
            writer.send("status", "reconnecting")
    writer.close()
    got = drain(r)
    kinds = [kind for kind, _ in got]
    assert kinds[0] == "status" and got[0][1] == "connected"
    before, after = kinds.index("status", 1), len(kinds)
    events_before = [e["i"] for _, batch in got[1:before] for e in batch]
    events_after = [e["i"] for _, batch in got[before + 1:after] for e in batch]
    assert events_before == list(range(1201)) and events_after == list(range(1201, 2500))
    assert all(len(batch) <= MAX_FRAME_EVENTS for kind, batch in got if kind == "events")


def test_a_full_pipe_holds_the_capturing_thread_at_max_pending_and_loses_nothing():
    r, w = os.pipe()
    writer = PipeWriter(w, max_pending=100)
    added = []

    def capture() -> None:
        for i in range(20_000):
            writer.add_event({"i": i, "pad": "x" * 200})
            added.append(i)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    # Nobody reads: the pipe fills, the writer blocks, the capturing thread
    # stops at max_pending instead of buffering without bound.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = len(added)
        time.sleep(0.2)
        if len(added) == before:
            break
    assert len(added) < 20_000
    closer = threading.Thread(target=lambda: (thread.join(), writer.close()), daemon=True)
    closer.start()
    got = [e["i"] for kind, batch in drain(r) for e in batch]
    assert got == list(range(20_000))


def test_writer_reports_a_broken_pipe_once_and_never_blocks_the_capturing_thread():
    r, w = os.pipe()
    os.close(r)
    broken = threading.Event()
    writer = PipeWriter(w, max_pending=10)
    writer.on_broken = broken.set
    for i in range(1000):
        writer.add_event({"i": i})
    assert broken.wait(5)
    writer.close()
