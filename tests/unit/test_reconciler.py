"""The quiet-task reconciler's schedule: adaptive intervals, one batched read per tick, bounded cost."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from typing import Any

from pushserver.reconciler import SCAN_CHUNK, SETTLED, QuietReconciler


class Fake:
    """Watched tasks with markers, a clock, and a backend that counts its reads (pure logic, no I/O)."""

    def __init__(self, n: int) -> None:
        self.now = 0.0
        self.markers: dict[str, Hashable] = {f"t{i}": None for i in range(n)}
        self.finished: dict[str, dict[str, Any]] = {}
        self.reads: list[list[str]] = []
        self.merged: list[dict[str, Any]] = []

    def watched(self) -> list[tuple[str, Hashable]]:
        return list(self.markers.items())

    def marker_of(self, task_id: str) -> Hashable:
        return self.markers.get(task_id, SETTLED)

    async def read(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.reads.append(ids)
        return {t: self.finished[t] for t in ids if t in self.finished}

    def merge(self, events: Iterable[dict[str, Any]]) -> int:
        n = 0
        for event in events:
            self.merged.append(event)
            self.markers.pop(event["uuid"], None)  # finished: no longer an unfinished watched task
            n += 1
        return n

    def reconciler(self, **kw: Any) -> QuietReconciler:
        return QuietReconciler(self.watched, self.marker_of, self.read, self.merge, clock=lambda: self.now, **kw)


async def run_for(fake: Fake, rec: QuietReconciler, seconds: int) -> None:
    for _ in range(seconds):
        await rec.check()
        fake.now += 1.0


async def test_a_quiet_task_is_read_after_the_delay_then_each_time_its_silence_doubles() -> None:
    fake = Fake(1)
    rec = fake.reconciler(after=5, max_interval=60)
    await run_for(fake, rec, 200)
    # Read at 5 s of silence, then 10, 20, 40, 80 and every 60 s after that: 5 reads in 200 s, not 200.
    assert [len(r) for r in fake.reads] == [1] * len(fake.reads)
    assert 5 <= len(fake.reads) <= 6


async def test_an_event_restarts_the_silence_so_a_busy_task_is_never_read() -> None:
    fake = Fake(1)
    rec = fake.reconciler(after=5, max_interval=60)
    for second in range(100):
        fake.markers["t0"] = (float(second), 3, "task-progress")  # progress every second
        await rec.check()
        fake.now += 1.0
    assert fake.reads == []


async def test_a_lost_completion_is_merged_within_the_max_interval() -> None:
    fake = Fake(1)
    rec = fake.reconciler(after=5, max_interval=30)
    await run_for(fake, rec, 300)  # quiet for long: reads are 30 s apart now
    reads_before = len(fake.reads)
    fake.finished["t0"] = {"type": "task-succeeded", "uuid": "t0"}
    finished_at = fake.now
    while not fake.merged:
        await rec.check()
        fake.now += 1.0
    assert fake.now - finished_at <= 31
    assert len(fake.reads) == reads_before + 1
    await run_for(fake, rec, 100)
    assert len(fake.reads) == reads_before + 1  # settled: never read again


async def test_ten_thousand_quiet_tasks_cost_at_most_one_read_per_tick() -> None:
    fake = Fake(10_000)
    rec = fake.reconciler(after=5, max_interval=60, batch=1000)
    await run_for(fake, rec, 300)
    halfway = len(fake.reads)
    await run_for(fake, rec, 300)
    assert len(fake.reads) <= 600  # at most one round trip per second
    assert max(len(r) for r in fake.reads) <= 1000
    # Every task was still read regularly: at least every max_interval once the backlog is spread.
    per_task = {t: 0 for t in fake.markers}
    for ids in fake.reads:
        for t in ids:
            per_task[t] += 1
    assert min(per_task.values()) >= 5
    # Average over the last five minutes: about 10 000 / 60 keys a second, in one read each.
    late = fake.reads[halfway:]
    assert len(late) < 100  # well under one round trip a second once they are all quiet for long
    assert sum(len(r) for r in late) / 300 <= 10_000 / 60 * 1.1


async def test_unwatched_tasks_are_forgotten() -> None:
    fake = Fake(3)
    rec = fake.reconciler(after=1, max_interval=5)
    await run_for(fake, rec, 3)
    fake.markers.clear()
    reads = len(fake.reads)
    await run_for(fake, rec, 20)
    assert len(fake.reads) == reads


async def test_a_tick_over_many_watched_tasks_lets_the_event_loop_run_between_chunks() -> None:
    fake = Fake(4 * SCAN_CHUNK)
    rec = fake.reconciler(after=5, max_interval=60)
    ran_during_scan = 0

    async def other_work() -> None:
        nonlocal ran_during_scan
        while True:
            await asyncio.sleep(0)
            ran_during_scan += 1

    other = asyncio.get_running_loop().create_task(other_work())
    await asyncio.sleep(0)
    ran_during_scan = 0
    fake.now = 10.0  # every task quiet for 10 s: all due
    assert len(await rec.due(fake.now)) == 0  # first seen now: the silence starts
    assert ran_during_scan >= 3  # not one block: the loop ran between the chunks
    fake.now = 20.0
    assert len(await rec.due(fake.now)) == min(4 * SCAN_CHUNK, rec.batch)  # now due, the batch's worth
    other.cancel()


async def test_a_tick_past_the_batch_reads_the_most_overdue_first() -> None:
    fake = Fake(0)
    rec = fake.reconciler(after=5, max_interval=60, batch=3)
    # t4 first seen at 0 s, t3 at 1 s, ... t0 at 4 s: neither the ids' order nor the scan's (newest first).
    for second in range(5):
        fake.markers = {f"t{4 - second}": None, **fake.markers}
        assert await rec.due(fake.now) == []
        fake.now += 1.0
    fake.now = 20.0  # all five due: t4 since 5 s, t0 since 9 s
    assert await rec.due(fake.now) == ["t4", "t3", "t2"]
