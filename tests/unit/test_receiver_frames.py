"""The pipe between the receiver process and the server: frames survive any cut, keep order and exact values."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import subprocess
import threading
import time
import uuid

import pytest
from celery import Celery
from kombu.utils.json import loads

from pushserver.receiver import CaptureLoop, ReceiverStatus
from pushserver.receiver_process import HEADER, FrameReader, PipeWriter, encode_frame, strip_non_task_events


def test_frames_reassemble_across_every_cut():
    messages = [
        ("status", "connected"),
        ("events", [{"uuid": "a", "clock": 1}]),
        ("malformed", 3),
        ("events", [{"uuid": "b", "x": "é" * 50}] * 3),
    ]
    data = b"".join(encode_frame(kind, payload) for kind, payload in messages)
    for cut in range(len(data) + 1):
        reader = FrameReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert got == messages, cut
    # One byte at a time, too.
    reader = FrameReader()
    assert [m for byte in data for m in reader.feed(bytes([byte]))] == messages


def test_values_arrive_exactly_as_celery_decoded_them():
    event = {"clock": 2**70, "runtime": math.inf, "result": "\ud800", "eta": None, "retries": 0}
    ((kind, [got]),) = FrameReader().feed(encode_frame("events", [event]))
    assert kind == "events" and got == event and got["clock"] == 2**70


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
    for start in range(0, 2500, 100):
        writer.add_batch([{"i": i} for i in range(start, start + 100)])
        if start == 1100:
            writer.send("status", "reconnecting")
    writer.close()
    got = drain(r)
    kinds = [kind for kind, _ in got]
    assert kinds[0] == "status" and got[0][1] == "connected"
    before, after = kinds.index("status", 1), len(kinds)
    events_before = [e["i"] for _, batch in got[1:before] for e in batch]
    events_after = [e["i"] for _, batch in got[before + 1 : after] for e in batch]
    assert events_before == list(range(1200)) and events_after == list(range(1200, 2500))


def test_a_full_pipe_holds_the_capturing_thread_at_max_pending_and_loses_nothing():
    r, w = os.pipe()
    writer = PipeWriter(w, max_pending=100)
    added = []

    def capture() -> None:
        for i in range(20_000):
            writer.add_batch([{"i": i, "pad": "x" * 200}])
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
        writer.add_batch([{"i": i}])
    assert broken.wait(5)
    writer.close()


def test_capture_loop_hands_over_batches_in_order_after_it_reports_connected():
    """Through a real Dispatcher and Celery Receiver on kombu's in-memory transport."""
    app = Celery("t", broker="memory://", set_as_current=False)
    heard: list = []
    capture = CaptureLoop(
        app, lambda batch: heard.append(("batch", list(batch))), lambda status: heard.append(("status", status))
    )
    thread = threading.Thread(target=capture.run, daemon=True)
    thread.start()
    try:
        with app.connection_for_write() as conn:
            dispatcher = app.events.Dispatcher(conn, hostname="w@h")
            deadline = time.monotonic() + 10
            while capture.status is not ReceiverStatus.CONNECTED and time.monotonic() < deadline:
                dispatcher.send("worker-heartbeat")  # until the receiver listens
                time.sleep(0.05)
            for i in range(2500):
                dispatcher.send("task-progress", uuid=f"t{i}", i=i)
            deadline = time.monotonic() + 10
            while (
                time.monotonic() < deadline
                and sum(1 for kind, b in heard if kind == "batch" for e in b if e["type"] == "task-progress") < 2500
            ):
                time.sleep(0.02)
    finally:
        capture.stop()
        thread.join(5)
    assert heard[0] == ("status", ReceiverStatus.CONNECTED)
    assert heard[-1] == ("status", ReceiverStatus.STOPPED)
    batches = [b for kind, b in heard if kind == "batch"]
    assert [e["i"] for b in batches for e in b if e["type"] == "task-progress"] == list(range(2500))
    assert all(len(b) <= CaptureLoop.MAX_BATCH for b in batches)


def test_only_task_events_cross_the_pipe_whole():
    task = {"type": "task-started", "uuid": "t1", "hostname": "w@h", "timestamp": 1.0}
    heartbeat = {"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0, "active": 3, "loadavg": [0.1, 0.2, 0.3]}
    huge_host = {"type": "worker-online", "hostname": "h" * (1 << 20), "freq": "often"}
    huge_id = {"type": "task-started", "uuid": "u" * (1 << 20)}
    forged = {"type": "x" * 1000, "uuid": "t2"}
    other = {"type": "custom-event", "hostname": "w@h", "freq": 2.0}
    # Worker events keep what pushserver_worker_online needs: the hostname (cut) and heartbeat interval.
    assert strip_non_task_events([task, heartbeat, huge_host, huge_id, forged, other]) == [
        task,
        {"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0},
        {"type": "worker-online", "hostname": "h" * 255},
        {"type": "task-started"},
        {"type": None},
        {"type": "custom-event"},
    ]


class _RunsCode:
    """What an attacker would pickle: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_frame_that_would_run_code_is_refused_logged_and_not_executed(tmp_path, caplog):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(("events", [{"uuid": "a", "x": _RunsCode(f"touch {marker}")}]), protocol=5)
    good = [{"type": "task-started", "uuid": "b", "clock": 2**70, "runtime": math.nan}]
    data = HEADER.pack(len(evil)) + evil + encode_frame("events", good)
    reader = FrameReader()
    with caplog.at_level(logging.ERROR, logger="pushserver.receiver"):
        got = reader.feed(data)
    assert not marker.exists()
    assert reader.refused == 1
    # The frame after the refused one still arrives, exact.
    [(kind, [event])] = got
    assert kind == "events" and event["clock"] == 2**70 and math.isnan(event["runtime"])
    [record] = [r for r in caplog.records if "refused a frame" in r.getMessage()]
    assert "posix.system" in record.getMessage() or "os.system" in record.getMessage()


@pytest.mark.parametrize(
    "body",
    [
        pickle.dumps(("events", [{"f": open}]), protocol=5),  # a builtin callable
        pickle.dumps(("status", subprocess.Popen), protocol=2),  # a class from elsewhere, old protocol
        b"\x80\x05not a pickle",
        pickle.dumps(["events", []], protocol=5),  # not a (kind, payload) pair
    ],
    ids=["builtin", "class", "garbage", "shape"],
)
def test_frames_that_are_not_event_data_are_refused(body: bytes):
    reader = FrameReader()
    assert reader.feed(HEADER.pack(len(body)) + body + encode_frame("status", "connected")) == [("status", "connected")]
    assert reader.refused == 1


def test_the_values_kombu_decodes_cross_the_pipe_exactly():
    """kombu's JSON decoder builds UUID, Decimal, dates and bytes from ``{"__type__": ...}`` objects."""
    event = loads(
        json.dumps(
            {
                "type": "task-succeeded",
                "uuid": "t",
                "big": 2**100,
                "neg": -(2**65),
                "nan": math.nan,
                "inf": -math.inf,
                "set": [1, 2],
                "u": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
                "d": {"__type__": "decimal", "__value__": "3.14159265358979323846264338327950288"},
                "dt": {"__type__": "datetime", "__value__": "2026-01-01T10:00:00+05:30"},
                "day": {"__type__": "date", "__value__": "2026-01-01"},
                "at": {"__type__": "time", "__value__": "10:00:00.5"},
                "raw": {"__type__": "base64", "__value__": "AP8="},
            }
        )
    )
    event["set"] = {1, 2}
    [(kind, [got])] = FrameReader().feed(encode_frame("events", [event]))
    assert kind == "events"
    assert math.isnan(got.pop("nan")) and math.isnan(event.pop("nan"))
    assert got == event
    assert isinstance(got["u"], uuid.UUID) and got["raw"] == b"\x00\xff" and got["big"] == 2**100


def test_the_childs_shed_count_reaches_the_server_side_receiver_and_survives_a_restart():
    from pushserver.receiver_process import ReceiverProcess

    batches: list = []
    receiver = ReceiverProcess("redis://127.0.0.1:1/0", batches.append)
    receiver._on_messages([("events", [{"type": "task-started", "uuid": "t"}]), ("shed", 3)])
    assert receiver.shed == 3 and batches == [[{"type": "task-started", "uuid": "t"}]]
    receiver._shed_before = receiver.shed  # as _supervise does when a child exits
    receiver._on_messages([("shed", 2)])
    assert receiver.shed == 5
