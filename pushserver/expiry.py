"""When subscriptions end: the token expiry of every (connection, task), on one timer wheel per server.

A subscription lives only as long as the token that authorised it (its
``exp`` plus ``--token-leeway``). Deadlines are kept in one-second slots:
a slot is a dict of connection -> task ids, and one asyncio timer is armed
for the earliest slot. Adding, moving and removing a subscription are dict
operations, and at any number of connections there is one timer, not a task
or a timer handle per subscription. A slot fires at the end of its second,
so a subscription ends at most one second after its deadline, never before,
and the tasks of one connection that expire in the same second come out as
one batch.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Iterable

#: Called once per firing with connection sid -> the task ids (sorted) whose subscriptions just ended.
ExpiredCallback = Callable[[dict[str, list[str]]], None]


class ExpiryWheel:
    """Per-(connection, task) deadlines in one-second slots, with a single timer for the earliest."""

    def __init__(self, on_expired: ExpiredCallback, clock: Callable[[], float] = time.time) -> None:
        self.on_expired = on_expired
        self.clock = clock
        self._slots: dict[int, dict[str, set[str]]] = {}
        self._slot_of: dict[str, dict[str, int]] = {}  # sid -> task id -> slot
        self._heap: list[int] = []  # slot seconds, each pushed once while the slot exists
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None

    def __len__(self) -> int:
        """The number of (connection, task) deadlines held."""
        return sum(len(tasks) for tasks in self._slot_of.values())

    def deadline(self, sid: str, task_id: str) -> int | None:
        """The second at which ``sid``'s subscription to ``task_id`` ends, or None."""
        return self._slot_of.get(sid, {}).get(task_id)

    def set(self, sid: str, task_ids: Iterable[str], expires_at: float) -> None:
        """End ``sid``'s subscriptions to ``task_ids`` at ``expires_at`` (a later deadline already held stays)."""
        slot = math.ceil(expires_at)
        mine = self._slot_of.setdefault(sid, {})
        for task_id in task_ids:
            old = mine.get(task_id)
            if old is not None:
                if old >= slot:
                    continue
                self._discard(old, sid, task_id)
            mine[task_id] = slot
            tasks = self._slots.get(slot)
            if tasks is None:
                tasks = self._slots[slot] = {}
                heapq.heappush(self._heap, slot)
            tasks.setdefault(sid, set()).add(task_id)
        if not mine:
            del self._slot_of[sid]
        self._arm()

    def remove(self, sid: str, task_ids: Iterable[str]) -> None:
        """Forget the deadlines of ``sid``'s subscriptions to ``task_ids`` (an unsubscribe)."""
        mine = self._slot_of.get(sid)
        if not mine:
            return
        for task_id in task_ids:
            slot = mine.pop(task_id, None)
            if slot is not None:
                self._discard(slot, sid, task_id)
        if not mine:
            del self._slot_of[sid]

    def drop(self, sid: str) -> None:
        """Forget every deadline of a connection (a disconnect); harmless when repeated."""
        mine = self._slot_of.pop(sid, None)
        for task_id, slot in (mine or {}).items():
            self._discard(slot, sid, task_id)

    def close(self) -> None:
        """Cancel the timer (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed_for = None

    def fire(self, now: float | None = None) -> int:
        """Expire every slot whose second has passed; return how many subscriptions ended."""
        now = self.clock() if now is None else now
        expired: dict[str, set[str]] = {}
        while self._heap and self._heap[0] <= now:
            slot = heapq.heappop(self._heap)
            for sid, tasks in self._slots.pop(slot, {}).items():
                mine = self._slot_of.get(sid)
                if mine is not None:
                    for task_id in tasks:
                        mine.pop(task_id, None)
                    if not mine:
                        del self._slot_of[sid]
                expired.setdefault(sid, set()).update(tasks)
        if expired:
            self.on_expired({sid: sorted(tasks) for sid, tasks in expired.items()})
        return sum(len(tasks) for tasks in expired.values())

    def _discard(self, slot: int, sid: str, task_id: str) -> None:
        tasks = self._slots.get(slot)
        if tasks is None:
            return
        mine = tasks.get(sid)
        if mine is not None:
            mine.discard(task_id)
            if not mine:
                del tasks[sid]
        # An emptied slot stays in the heap until its time: firing it is a no-op.

    def _arm(self) -> None:
        if not self._heap:
            return
        first = self._heap[0]
        if self._armed_for is not None and self._armed_for <= first:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests drive fire() themselves)
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = first
        self._timer = loop.call_later(max(0.0, first - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_for = None
        self.fire()
        self._arm()
