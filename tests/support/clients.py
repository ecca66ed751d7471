"""A real python-socketio client that records every ``task:update`` and lets tests wait on them."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import socketio


class Watcher:
    """One Socket.IO connection to pushserver, with its updates grouped by task id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                                        reconnection_delay_max=1)
        self.updates: dict[str, list[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self.sio.on("task:update", self._on_update)

    async def _on_update(self, state: dict[str, Any]) -> None:
        self.updates.setdefault(state["task_id"], []).append(state)
        async with self._changed:
            self._changed.notify_all()

    async def connect(self, token: str | None = None) -> "Watcher":
        await self.sio.connect(self.url, auth={"token": token} if token else None,
                               transports=["websocket"], wait_timeout=10)
        return self

    async def call(self, event: str, payload: Any, timeout: float = 15) -> Any:
        return await self.sio.call(event, payload, timeout=timeout)

    async def subscribe(self, task_ids: list[str] | str, token: str | None = None) -> dict[str, Any]:
        """Send ``subscribe`` and return the ack; its snapshots count as updates, as in a browser's store."""
        payload: dict[str, Any] = (
            {"task_id": task_ids} if isinstance(task_ids, str) else {"task_ids": list(task_ids)}
        )
        if token is not None:
            payload["token"] = token
        ack = await self.call("subscribe", payload)
        for state in ack.get("tasks", []) if isinstance(ack, dict) else []:
            await self._on_update(state)
        return ack

    async def wait_for(self, task_id: str, predicate: Callable[[dict[str, Any]], bool],
                       timeout: float = 30) -> dict[str, Any]:
        """Wait until an update of ``task_id`` satisfies ``predicate``; return that update."""
        async def seen() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for state in self.updates.get(task_id, []):
                        if predicate(state):
                            return state
                    await self._changed.wait()
        try:
            return await asyncio.wait_for(seen(), timeout)
        except asyncio.TimeoutError:
            got = [u["state"] for u in self.updates.get(task_id, [])]
            raise AssertionError(f"task {task_id}: no matching update in {timeout}s; got {got}") from None

    async def wait_state(self, task_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_for(task_id, lambda s: s["state"] == state, timeout)

    async def close(self) -> None:
        await self.sio.disconnect()
