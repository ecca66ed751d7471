"""Who watches which task: the two-way index kept beside Socket.IO's rooms.

python-socketio's rooms say who receives an emit; this index answers what the
rooms cannot cheaply: how many tasks one connection watches (the limit), and
which tasks anyone watches at all (to skip emits nobody hears, and to know
what to reconcile after a receiver reconnect).
"""

from __future__ import annotations

from collections.abc import Iterable

from .protocol import ProtocolError


class Subscriptions:
    """A connection -> tasks and task -> connections index with a per-connection limit."""

    def __init__(self, max_per_connection: int = 1000) -> None:
        self.max_per_connection = max_per_connection
        self._by_sid: dict[str, set[str]] = {}
        self._by_task: dict[str, set[str]] = {}
        # Kept, not summed: the gauge reads it at every subscribe and disconnect, and summing over every
        # connection made a reconnect storm of N clients cost N² (docs/benchmarks.md, reconnect storm).
        self._count = 0

    def __len__(self) -> int:
        """The number of (connection, task) subscriptions."""
        return self._count

    def add(self, sid: str, task_ids: Iterable[str]) -> list[str]:
        """Subscribe ``sid`` to ``task_ids``; raise ProtocolError(too_many) past the limit, adding none."""
        mine = self._by_sid.get(sid, set())
        new = [t for t in task_ids if t not in mine]
        if len(mine) + len(new) > self.max_per_connection:
            raise ProtocolError(
                "too_many",
                f"at most {self.max_per_connection} subscriptions per connection"
                f" (this one has {len(mine)}, asked for {len(new)} more)",
            )
        mine = self._by_sid.setdefault(sid, set())
        for task_id in new:
            mine.add(task_id)
            self._by_task.setdefault(task_id, set()).add(sid)
        self._count += len(new)
        return new

    def remove(self, sid: str, task_ids: Iterable[str]) -> list[str]:
        """Unsubscribe ``sid`` from ``task_ids``; return the tasks nobody watches any more."""
        mine = self._by_sid.get(sid)
        orphaned: list[str] = []
        if not mine:
            return orphaned
        for task_id in task_ids:
            if task_id in mine:
                mine.discard(task_id)
                self._count -= 1
                watchers = self._by_task.get(task_id)
                if watchers is not None:
                    watchers.discard(sid)
                    if not watchers:
                        del self._by_task[task_id]
                        orphaned.append(task_id)
        if not mine:
            del self._by_sid[sid]
        return orphaned

    def drop(self, sid: str) -> list[str]:
        """Forget a disconnected connection; return the tasks nobody watches any more."""
        return self.remove(sid, list(self._by_sid.get(sid, ())))

    def tasks_of(self, sid: str) -> frozenset[str]:
        return frozenset(self._by_sid.get(sid, ()))

    def is_watched(self, task_id: str) -> bool:
        """Tell whether any connection watches the task."""
        return task_id in self._by_task

    def watched(self) -> list[str]:
        """Every task at least one connection watches."""
        return list(self._by_task)
