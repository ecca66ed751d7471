"""Batches and ReadBatcher: lookups arriving while a read is in flight share the next, bounded, read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from pushserver.batching import Batches, ReadBatcher


class GatedReader:
    """A ``read_many`` that records each batch and waits for its gate (one per read) before answering."""

    def __init__(self, values: Mapping[str, int], error: Exception | None = None) -> None:
        self.values = values
        self.error = error
        self.reads: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, keys: list[str]) -> dict[str, int]:
        self.reads.append(list(keys))
        answer = {k: self.values[k] for k in keys if k in self.values}  # the record as the read began
        gate = asyncio.Event()
        self.gates.append(gate)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await gate.wait()
        finally:
            self.in_flight -= 1
        if self.error is not None:
            raise self.error
        return answer

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()


async def until(condition: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def open_gates_until_done(reader: GatedReader, tasks: list[asyncio.Future[object]]) -> None:
    """Let every read answer, including the ones started because earlier ones answered."""
    while not all(t.done() for t in tasks):
        reader.open_all()
        await asyncio.sleep(0.001)


async def test_a_lone_lookup_is_read_at_once_in_a_batch_of_one() -> None:
    reader = GatedReader({"a": 1})
    batcher = ReadBatcher(reader, max_batch=10)
    got = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: reader.reads)
    reader.open_all()
    assert await got == 1
    assert reader.reads == [["a"]]


async def test_lookups_arriving_during_a_read_share_the_next_one() -> None:
    reader = GatedReader({f"t{i}": i for i in range(10)})
    batcher = ReadBatcher(reader, max_batch=100, concurrency=1)
    first = asyncio.ensure_future(batcher.get("t0"))
    await until(lambda: reader.reads)
    rest = [asyncio.ensure_future(batcher.get(f"t{i}")) for i in range(1, 10)]
    await asyncio.sleep(0.01)
    assert len(reader.reads) == 1  # the nine wait: one read in flight is all concurrency=1 allows
    await open_gates_until_done(reader, [first, *rest])
    assert reader.reads == [["t0"], [f"t{i}" for i in range(1, 10)]]
    assert [await t for t in rest] == list(range(1, 10))


async def test_lookups_made_in_the_same_turn_of_the_loop_share_the_first_read() -> None:
    reader = GatedReader({"a": 1, "b": 2})
    batcher = ReadBatcher(reader, max_batch=10)
    tasks = [asyncio.ensure_future(batcher.get(k)) for k in ("a", "b", "a", "unknown")]
    await until(lambda: reader.reads)
    await open_gates_until_done(reader, tasks)
    assert reader.reads == [["a", "b", "unknown"]]  # "a" asked twice, read once
    assert [t.result() for t in tasks] == [1, 2, 1, None]


async def test_batches_are_bounded_and_at_most_concurrency_run_at_once() -> None:
    reader = GatedReader({f"t{i}": i for i in range(25)})
    batcher = ReadBatcher(reader, max_batch=10, concurrency=2)
    tasks = [asyncio.ensure_future(batcher.get(f"t{i}")) for i in range(25)]
    await until(lambda: len(reader.reads) == 2)
    await asyncio.sleep(0.01)
    assert [len(r) for r in reader.reads] == [10, 10]  # the last 5 wait for a free slot
    await open_gates_until_done(reader, tasks)
    assert [len(r) for r in reader.reads] == [10, 10, 5]
    assert reader.most_in_flight == 2
    assert [t.result() for t in tasks] == list(range(25))


async def test_a_key_asked_again_during_its_read_is_read_again() -> None:
    values = {"a": 1}
    reader = GatedReader(values)
    batcher = ReadBatcher(reader, max_batch=10, concurrency=1)
    old = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: reader.reads)
    new = asyncio.ensure_future(batcher.get("a"))  # the record may have changed after the read began
    await asyncio.sleep(0.01)
    values["a"] = 2
    await open_gates_until_done(reader, [old, new])
    assert reader.reads == [["a"], ["a"]]
    assert (old.result(), new.result()) == (1, 2)


async def test_a_failed_read_fails_its_callers_and_the_next_read_goes_ahead() -> None:
    reader = GatedReader({"a": 1}, error=ConnectionError("refused"))
    batcher = ReadBatcher(reader, max_batch=10, concurrency=1)
    failing = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: reader.reads)
    reader.open_all()
    with pytest.raises(ConnectionError):
        await failing
    reader.error = None
    got = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: len(reader.reads) == 2)
    reader.open_all()
    assert await got == 1


async def test_a_caller_giving_up_does_not_cancel_the_answer_for_the_others() -> None:
    reader = GatedReader({"a": 1})
    batcher = ReadBatcher(reader, max_batch=10)
    leaving = asyncio.ensure_future(batcher.get("a"))
    staying = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: reader.reads)
    leaving.cancel()
    reader.open_all()
    assert await staying == 1
    assert leaving.cancelled() and reader.reads == [["a"]]


async def test_batches_hand_back_what_no_batch_took_and_survive_a_failing_handler() -> None:
    handled: list[list[int]] = []
    gate = asyncio.Event()

    async def handle(batch: list[int]) -> None:
        handled.append(batch)
        if batch == [1]:
            await gate.wait()
            raise RuntimeError("a bug in the handler")

    batches: Batches[int] = Batches(handle, max_batch=3, concurrency=1)
    batches.add([1])
    await until(lambda: handled)
    batches.add([2, 3, 4, 5])
    assert batches.pending == 4 and len(batches.running) == 1
    gate.set()
    await until(lambda: len(handled) == 3)
    assert handled == [[1], [2, 3, 4], [5]]  # the failure was logged; the queue went on
    batches.add([6])
    assert batches.take_pending() == [6] and batches.pending == 0


def test_bad_bounds_are_refused() -> None:
    async def handle(batch: list[int]) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        Batches(handle, max_batch=0)
