"""Replay logic without servers: time filters, what an event is, JSONL errors, pacing, and the command's refusals."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pushserver.cli import main
from pushserver.eventlog import event_id
from pushserver.replay import BadInput, Pacer, Rejects, Tally, due_offset, parse_speed, parse_time, replay
from pushserver.replay_sinks import BrokerSink, JsonlSink, dispatcher_fields
from pushserver.replay_sources import EventFilter, JsonlSource, check_event, to_json_line

NOW = 1_732_430_000.0


# -- --since / --until -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds_ago",
    [
        ("now", 0),
        ("NOW", 0),
        ("-30s", 30),
        ("-15m", 15 * 60),
        ("-30m", 30 * 60),
        ("-2h", 2 * 3600),
        ("-1.5h", 5400),
        ("-7d", 7 * 86400),
        ("-1w", 7 * 86400),
        (" -2h ", 7200),
    ],
)
def test_relative_times_count_back_from_now(text: str, seconds_ago: float) -> None:
    assert parse_time(text, now=NOW) == NOW - seconds_ago


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-11-24T06:33:20Z", datetime(2024, 11, 24, 6, 33, 20, tzinfo=timezone.utc)),
        ("2024-11-24T06:33:20z", datetime(2024, 11, 24, 6, 33, 20, tzinfo=timezone.utc)),
        ("2024-11-24T07:33:20+01:00", datetime(2024, 11, 24, 6, 33, 20, tzinfo=timezone.utc)),
        ("2024-11-24T06:33:20.250+00:00", datetime(2024, 11, 24, 6, 33, 20, 250000, tzinfo=timezone.utc)),
        ("2024-11-24 01:33:20-05:00", datetime(2024, 11, 24, 6, 33, 20, tzinfo=timezone.utc)),
    ],
)
def test_iso_times_with_a_zone_are_exact(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected.timestamp()


def test_iso_times_without_a_zone_are_local_time() -> None:
    assert parse_time("2024-11-24T06:33:20") == datetime(2024, 11, 24, 6, 33, 20).timestamp()
    assert parse_time("2024-11-24") == datetime(2024, 11, 24).timestamp()


@pytest.mark.parametrize("text", ["yesterday", "2h", "+2h", "-2x", "-h", "", "-2 hours", "2024-13-01", "1732430000"])
def test_anything_else_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, now=NOW)


def test_since_after_until_is_refused() -> None:
    with pytest.raises(ValueError, match="--since is later than --until"):
        EventFilter(since=NOW, until=NOW - 1)


# -- --speed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, speed", [("max", None), ("MAX", None), ("1", 1.0), ("10", 10.0), ("0.25", 0.25)])
def test_speed_values(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["abc", "0", "-1", "inf", "nan", "", "fast"])
def test_bad_speeds_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a number > 0 or 'max'"):
        parse_speed(text)


# -- what an event is ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj, problem",
    [
        ({"type": "task-started", "uuid": "t", "timestamp": 1.5}, None),
        ({"type": "task-started", "uuid": "t", "timestamp": 2}, None),
        ({"type": "worker-heartbeat", "hostname": "w@h"}, None),
        ({"type": "worker-heartbeat", "timestamp": 2.0}, None),
        ([1, 2], "a JSON array"),
        ("task-started", "a JSON string"),
        (3, "a JSON number"),
        (None, "a JSON null"),
        ({"uuid": "t", "timestamp": 1.0}, 'no "type"'),
        ({"type": 3, "uuid": "t", "timestamp": 1.0}, '"type" must be a non-empty string'),
        ({"type": "", "uuid": "t", "timestamp": 1.0}, '"type" must be a non-empty string'),
        ({"type": "task-started", "timestamp": 1.0}, 'without a string "uuid"'),
        ({"type": "task-started", "uuid": 7, "timestamp": 1.0}, 'without a string "uuid"'),
        ({"type": "task-started", "uuid": "t"}, 'without a "timestamp"'),
        ({"type": "task-started", "uuid": "t", "timestamp": "1.0"}, '"timestamp" must be a number'),
        ({"type": "task-started", "uuid": "t", "timestamp": True}, '"timestamp" must be a number'),
        ({"type": "worker-online", "timestamp": None}, '"timestamp" must be a number'),
        ({"type": "task-started", "uuid": "t", "timestamp": 10**400}, '"timestamp" must be a number'),
    ],
)
def test_check_event_says_what_is_wrong(obj: Any, problem: str | None) -> None:
    found = check_event(obj)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# -- JSONL input -----------------------------------------------------------------------------------


def received(uuid: str, ts: float, name: str = "workers.tasks.predict") -> dict[str, Any]:
    return {
        "type": "task-received",
        "uuid": uuid,
        "name": name,
        "timestamp": ts,
        "hostname": "w1@h",
        "args": "(1,)",
        "kwargs": "{}",
        "retries": 0,
        "eta": None,
    }


def later(kind: str, uuid: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": uuid, "timestamp": ts, "hostname": "w1@h", **fields}


STREAM = [
    received("a", 100.0),
    later("task-started", "a", 100.5),
    received("b", 101.0, name="workers.tasks.resize_and_watermark"),
    later("task-progress", "b", 101.5, current=1, total=2),
    later("task-succeeded", "a", 102.0, result="{'label': 1}", runtime=2.0),
    later("task-failed", "b", 103.0, exception="ValueError('x')", traceback="Traceback ...\n"),
]


def write_lines(path: Path, lines: list[bytes | dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(line if isinstance(line, bytes) else to_json_line(line) for line in lines))
    return path


def collect(source: JsonlSource, strict: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    messages: list[str] = []
    events = list(source.events(Rejects(messages.append, strict=strict)))
    return events, messages


def test_bad_lines_are_reported_with_file_and_line_and_skipped(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            STREAM[0],
            b"{not json\n",
            b"\n",  # blank lines are not events, nor errors
            b'["task-started", "a"]\n',
            STREAM[1],
            b'{"type": "task-succeeded", "timestamp": 102.0}\n',
            b'{"type": "task-succeeded", "uuid": "a", "timestamp": "later"}\n',
            b"\xff\xfe\n",
            STREAM[4],
        ],
    )
    source = JsonlSource(path)
    events, messages = collect(source)
    assert events == [STREAM[0], STREAM[1], STREAM[4]]
    assert source.count() == 3
    assert [m.split(": ", 1)[0] for m in messages] == [f"{path}:{n}" for n in (2, 4, 6, 7, 8)]
    assert messages[0].startswith(f"{path}:2: not JSON (")
    assert messages[1] == f"{path}:4: not an event: a JSON array, expected an object"
    assert messages[2] == f'{path}:6: not a task event: task-succeeded without a string "uuid"'
    assert messages[3] == f"{path}:7: not an event: \"timestamp\" must be a number, got 'later'"
    assert "not JSON" in messages[4]


def test_strict_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.jsonl", [STREAM[0], STREAM[1], b"oops\n", STREAM[4], b"[]\n"])
    sent: list[dict[str, Any]] = []
    with pytest.raises(BadInput) as caught:
        for event in JsonlSource(path).events(Rejects(lambda m: None, strict=True)):
            sent.append(event)
    assert caught.value.where == f"{path}:3"
    assert str(caught.value).startswith(f"{path}:3: not JSON")
    assert sent == STREAM[:2]


def test_a_file_written_is_read_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink.to_file(path)
    for event in STREAM:
        sink.send(event)
    sink.close()
    assert collect(JsonlSource(path)) == (STREAM, [])
    assert all(orjson.loads(line) for line in path.read_bytes().splitlines())


@pytest.mark.parametrize(
    "event_filter, expected",
    [
        (EventFilter(), STREAM),
        (EventFilter(task_ids=frozenset({"a"})), [STREAM[0], STREAM[1], STREAM[4]]),
        # Only sent/received events carry the name: the other events of the task come along.
        (EventFilter(names=frozenset({"workers.tasks.resize_and_watermark"})), [STREAM[2], STREAM[3], STREAM[5]]),
        (EventFilter(names=frozenset({"nothing.has.this.name"})), []),
        (EventFilter(task_ids=frozenset({"a"}), names=frozenset({"workers.tasks.resize_and_watermark"})), []),
        (EventFilter(since=101.0), STREAM[2:]),
        (EventFilter(until=101.0), STREAM[:3]),
        (EventFilter(names=frozenset({"workers.tasks.predict"}), since=100.4, until=102.0), [STREAM[1], STREAM[4]]),
    ],
)
def test_filters_on_a_file(tmp_path: Path, event_filter: EventFilter, expected: list[dict[str, Any]]) -> None:
    source = JsonlSource(write_lines(tmp_path / "events.jsonl", list(STREAM)), event_filter)
    assert source.count() == len(expected)
    assert collect(source) == (expected, [])


# -- pacing ------------------------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that sleeps by moving forward, overshooting each sleep by ``overshoot``."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 50.0
        self.overshoot = overshoot
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot


def pace(stamps: list[float], speed: float | None, clock: FakeClock, work: float = 0.0) -> list[float]:
    """The clock readings at which each event goes out."""
    pacer = Pacer(speed, clock=clock, sleep=clock.sleep)
    sent = []
    for stamp in stamps:
        pacer.wait(stamp)
        sent.append(clock.now)
        clock.now += work
    return sent


def test_speed_divides_the_recorded_gaps() -> None:
    assert due_offset(100.0, 103.0, 10) == pytest.approx(0.3)
    clock = FakeClock()
    sent = pace([100.0, 100.5, 102.0, 110.0], 10, clock)
    assert [round(t - sent[0], 6) for t in sent] == [0.0, 0.05, 0.2, 1.0]


def test_speed_one_keeps_real_time_and_slower_stretches_it() -> None:
    assert [round(t - 50, 6) for t in pace([10.0, 11.0, 13.0], 1, FakeClock())] == [0, 1, 3]
    assert [round(t - 50, 6) for t in pace([10.0, 11.0, 13.0], 0.5, FakeClock())] == [0, 2, 6]


def test_lateness_does_not_accumulate() -> None:
    """Every deadline counts from the start: overshoot of one sleep shortens the next."""
    clock = FakeClock(overshoot=0.01)
    sent = pace([float(i) for i in range(101)], 10, clock)
    # Each send is at most one overshoot late, however many events came before it.
    assert all(0 <= t - (50 + i * 0.1) <= 0.0100001 for i, t in enumerate(sent))


def test_a_slow_sink_sends_late_events_at_once_without_negative_sleeps() -> None:
    clock = FakeClock()
    pace([0.0, 0.1, 0.2, 5.0], 1, clock, work=0.5)
    assert clock.sleeps == [pytest.approx(5.0 - 1.5)]


def test_max_speed_and_out_of_order_events_never_sleep() -> None:
    clock = FakeClock()
    pace([5.0, 1.0, 200.0], None, clock)
    assert clock.sleeps == []
    pace([5.0, 1.0, 4.0], 1, clock)  # recorded out of order: the earlier ones go at once
    assert clock.sleeps == []


def test_events_without_timestamps_are_not_held() -> None:
    clock = FakeClock()
    pace([None, 10.0, None, 11.0], 1, clock)  # type: ignore[list-item]
    assert clock.sleeps == [pytest.approx(1.0)]


# -- the loop and the broker fields ------------------------------------------------------------------


class ListSource:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.items = events

    def count(self) -> int:
        return len(self.items)

    def events(self, rejects: Any) -> Any:
        return iter(self.items)


class ListSink:
    def __init__(self, stop_after: int | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.stop_after = stop_after

    def send(self, event: dict[str, Any]) -> None:
        if self.stop_after is not None and len(self.sent) == self.stop_after:
            raise KeyboardInterrupt
        self.sent.append(event)

    def close(self) -> None:
        pass


def test_replay_sends_in_order_and_counts() -> None:
    sink, tally = ListSink(), Tally(total=len(STREAM))
    replay(ListSource(STREAM), sink, Pacer(None), Rejects(print), tally)
    assert sink.sent == STREAM and tally.sent == 6


def test_an_interrupt_leaves_the_count_of_what_was_sent() -> None:
    tally = Tally(total=len(STREAM))
    with pytest.raises(KeyboardInterrupt):
        replay(ListSource(STREAM), ListSink(stop_after=4), Pacer(None), Rejects(print), tally)
    assert tally.sent == 4


def test_dispatcher_fields_leave_what_the_dispatcher_sets_itself() -> None:
    recorded = {
        **later("task-succeeded", "a", 102.0, result="3", runtime=0.1),
        "pid": 41,
        "clock": 9,
        "utcoffset": -1,
        "local_received": 102.01,
        "retry": True,
    }
    kind, hostname, fields = dispatcher_fields(recorded)
    assert (kind, hostname) == ("task-succeeded", "w1@h")
    assert fields == {"uuid": "a", "timestamp": 102.0, "result": "3", "runtime": 0.1, "retry": True}
    assert dispatcher_fields({"type": "task-sent", "uuid": "x", "timestamp": 1.0})[1] is None


def test_a_republished_event_arrives_as_recorded_with_the_same_event_id() -> None:
    """Through a real Dispatcher and Receiver (kombu's in-memory transport): worker name, timestamp, id kept."""
    sink = BrokerSink("memory://")
    got: list[dict[str, Any]] = []
    receiver = sink.app.events.Receiver(sink.app.connection_for_read(), handlers={"*": got.append}, routing_key="#")
    thread = threading.Thread(
        target=receiver.capture, kwargs={"limit": None, "timeout": None, "wakeup": False}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:  # probe until the receiver listens
            sink.send({"type": "task-started", "uuid": "probe", "timestamp": time.time(), "hostname": "p@h"})
            time.sleep(0.05)
        got.clear()
        recorded = [
            {**received("r1", 1_732_430_000.125), "pid": 17, "clock": 3, "utcoffset": 0},
            {
                "type": "task-sent",
                "uuid": "r1",
                "timestamp": 1_732_429_999.5,
                "hostname": "gen9@client",
                "pid": 9,
                "clock": 1,
                "utcoffset": 0,
                "name": "n",
                "retry": True,
            },
            {
                **later("task-succeeded", "r1", 1_732_430_001.75, result="3", runtime=1.6),
                "pid": 17,
                "clock": 7,
                "utcoffset": 0,
            },
        ]
        for event in recorded:
            sink.send(event)
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        receiver.should_stop = True
        thread.join(5)
        sink.close()
    assert [(e["type"], e["hostname"], e["timestamp"]) for e in got] == [
        (e["type"], e["hostname"], e["timestamp"]) for e in recorded
    ]
    assert [event_id(e) for e in got] == [event_id(e) for e in recorded]


# -- the command's refusals: one line, exit code 2 ------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    base = {"PUSHSERVER_MONGO_URL": "", "PUSHSERVER_BROKER_URL": "", "CELERY_BROKER_URL": ""}
    return CliRunner().invoke(main, ["replay", *args], env={**base, **(env or {})})


@pytest.fixture
def stream_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "stream.jsonl", list(STREAM))


@pytest.mark.parametrize(
    "args, says",
    [
        ([], "no source: give --mongo URL"),
        (["--mongo", "mongodb://127.0.0.1:1", "--from", "{file}"], "not both"),
        (["--from", "{file}", "--since", "yesterday"], "--since: 'yesterday' is not a time"),
        (["--from", "{file}", "--until", "-2y"], "--until: '-2y' is not a time"),
        (["--from", "{file}", "--since", "-1h", "--until", "-2h"], "--since is later than --until"),
        (["--from", "{file}", "--speed", "abc"], "--speed: expected a number > 0 or 'max', got 'abc'"),
        (["--from", "{file}", "--speed", "0"], "--speed: expected a number > 0"),
        (["--from", "{file}", "--to", "broker", "--broker", "http://x"], "--broker: unsupported URL scheme"),
        (["--from", "{file}", "--to", "{file}"], "that is the --from file"),
        (["--from", "/nonexistent/events.jsonl"], "--from: /nonexistent/events.jsonl: no such file"),
        (["--from", "{file}", "--to", "/nonexistent/dir/out.jsonl"], "--to: cannot write /nonexistent/dir/out.jsonl"),
        (["--mongo", "http://x"], "--mongo: http://x is not a usable MongoDB URL"),
    ],
)
def test_bad_options_exit_2_with_one_line(stream_file: Path, args: list[str], says: str) -> None:
    result = run(*(a.replace("{file}", str(stream_file)) for a in args))
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert result.stderr.startswith("pushserver: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_from_overrides_a_mongo_url_from_the_environment(stream_file: Path) -> None:
    result = run("--from", str(stream_file), env={"PUSHSERVER_MONGO_URL": "mongodb://127.0.0.1:1"})
    assert result.exit_code == 0, result.stderr
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == STREAM


def test_stdout_lines_skip_report_and_summary(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "mixed.jsonl", [STREAM[0], b"{oops\n", STREAM[1], b"42\n"])
    result = run("--from", str(path))
    assert result.exit_code == 0
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == STREAM[:2]
    assert result.stderr.splitlines()[0].startswith(f"{path}:2: not JSON")
    assert result.stderr.splitlines()[1] == f"{path}:4: not an event: a JSON number, expected an object"
    assert result.stderr.splitlines()[-1] == "replayed 2 events (2 skipped)"


def test_strict_exits_2_at_the_first_bad_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "mixed.jsonl", [STREAM[0], b"{oops\n", STREAM[1]])
    result = run("--from", str(path), "--strict")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"pushserver: error: {path}:2: not JSON")
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == STREAM[:1]


def test_filters_and_file_sink_through_the_command(stream_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    result = run("--from", str(stream_file), "--name", "workers.tasks.resize_and_watermark", "--to", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == "replayed 3 events (0 skipped)"
    assert collect(JsonlSource(out)) == ([STREAM[2], STREAM[3], STREAM[5]], [])


def test_explicit_speed_paces_stdout(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [later("task-progress", "p", 10.0 + i * 0.2) for i in range(6)])
    started = time.monotonic()
    result = run("--from", str(path), "--speed", "2")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 6
    assert 0.45 <= elapsed < 3  # 1 s recorded, at speed 2
