"""Work that arrives while a batch is being handled waits for the next batch: one round trip for many requests.

Two users: snapshot lookups (``ResultBackend.lookup``: a reconnect storm's thousands of subscribes become
a few MGETs, not one GET each) and the values of SUCCESS notices (results.py). Neither waits on a timer:
the first item of a quiet moment goes out on the next turn of the event loop, alone; items that arrive
while ``concurrency`` batches are in flight queue up and leave together, at most ``max_batch`` at a time,
as soon as a batch finishes. Under load batches grow by themselves, and an idle server adds no delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

log = logging.getLogger("pushserver.batching")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batches(Generic[T]):
    """Hands queued items to ``handle`` in batches of at most ``max_batch``, ``concurrency`` batches at a time.

    A batch is taken when its asyncio task first runs, not when it is scheduled, so everything added in
    the same turn of the loop shares it. ``handle`` deals with its own failures; one it lets escape is
    logged, and the next batch goes ahead.
    """

    def __init__(self, handle: Callable[[list[T]], Awaitable[None]], *, max_batch: int, concurrency: int = 1) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self.handle = handle
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._pending: list[T] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False  # a batch task exists that has not taken its batch yet

    @property
    def pending(self) -> int:
        """Items waiting for a batch (not those in one under way)."""
        return len(self._pending)

    @property
    def running(self) -> set[asyncio.Task[None]]:
        """The batches under way (a copy)."""
        return set(self._running)

    def add(self, items: Iterable[T]) -> None:
        """Queue items; a batch starts on the next turn of the loop if fewer than ``concurrency`` are running."""
        self._pending.extend(items)
        self._kick()

    def take_pending(self) -> list[T]:
        """Remove and return the items no batch has taken yet (shutting down)."""
        pending, self._pending = self._pending, []
        return pending

    def _kick(self) -> None:
        if self._pending and not self._scheduled and len(self._running) < self.concurrency:
            self._scheduled = True
            task = asyncio.get_running_loop().create_task(self._run())
            self._running.add(task)
            task.add_done_callback(self._done)

    async def _run(self) -> None:
        self._scheduled = False
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._kick()  # more than one batch's worth waiting, and a slot free: the next one starts too
        if batch:
            await self.handle(batch)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled():
            self._scheduled = False  # cancelled before it ran: it will never take its batch
        elif task.exception() is not None:
            log.error("a batch failed", exc_info=task.exception())
        self._kick()


class ReadBatcher(Generic[K, V]):
    """Coalesces single-key reads into calls of ``read_many(keys) -> {key: value}`` (see the module doc).

    ``get(key)`` answers the value ``read_many`` gave for the key, None when it gave none, or raises what
    ``read_many`` raised. A key asked for again while its read is in flight joins the next read, never an
    older one; asked for twice before its read starts, it is read once.
    """

    def __init__(
        self,
        read_many: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        *,
        max_batch: int,
        concurrency: int = 1,
    ) -> None:
        self.read_many = read_many
        self._waiting: dict[K, asyncio.Future[V | None]] = {}
        self._batches: Batches[K] = Batches(self._read, max_batch=max_batch, concurrency=concurrency)

    async def get(self, key: K) -> V | None:
        """The value read for ``key`` in the next batched read."""
        future = self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._waiting[key] = future
            self._batches.add((key,))
        # Shielded: one caller giving up (its client gone) must not cancel the answer for the others.
        return await asyncio.shield(future)

    async def _read(self, keys: list[K]) -> None:
        futures = {key: self._waiting.pop(key) for key in keys}
        try:
            found = await self.read_many(keys)
        except asyncio.CancelledError:
            for future in futures.values():
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in futures.items():
            if not future.done():
                future.set_result(found.get(key))


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Every caller may have given up: mark the exception seen so asyncio does not log it as lost.
    if not future.cancelled():
        future.exception()
