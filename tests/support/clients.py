"""A real python-socketio client that records every ``task:update`` and ``workflow:update`` and lets tests wait on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio


class Watcher:
    """One Socket.IO connection to pushserver, with its updates grouped by task id.

    With ``resubscribe=True`` it behaves like the React hook: after every
    reconnect (a new sid, with no rooms) it sends its subscriptions again,
    and the acks' snapshots count as updates.
    """

    def __init__(self, url: str, *, resubscribe: bool = False) -> None:
        self.url = url
        self.resubscribe = resubscribe
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=1)
        self.updates: dict[str, list[dict[str, Any]]] = {}
        #: Each workflow's states as a client holds them (acks, and updates merged into what was held).
        self.workflow_updates: dict[str, list[dict[str, Any]]] = {}
        #: Each ``workflow:update`` as it came on the wire.
        self.workflow_payloads: dict[str, list[dict[str, Any]]] = {}
        self.connects = 0
        self.disconnects: list[str] = []  # the reason of each disconnect, as the client saw it
        self.resubscribe_acks: list[Any] = []
        self._subscriptions: list[dict[str, Any]] = []
        self._resubscribing: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self.sio.on("task:update", self._on_update)
        self.sio.on("workflow:update", self._on_workflow_update)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_connect(self) -> None:
        self.connects += 1
        async with self._changed:
            self._changed.notify_all()
        if self.resubscribe and self.connects > 1 and self._subscriptions:
            # Not awaited here: the ack arrives on the connection this handler
            # is part of setting up.
            task = asyncio.get_running_loop().create_task(self._subscribe_again())
            self._resubscribing.add(task)
            task.add_done_callback(self._resubscribing.discard)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnects.append(str(reason))
        async with self._changed:
            self._changed.notify_all()

    async def _subscribe_again(self) -> None:
        for payload in list(self._subscriptions):
            try:
                ack = await self.call("subscribe", payload)
            except Exception as exc:  # noqa: BLE001 - the next reconnect tries again
                self.resubscribe_acks.append({"ok": False, "error": repr(exc)})
                return
            self.resubscribe_acks.append(ack)
            for state in ack.get("tasks", []) if isinstance(ack, dict) else []:
                await self._on_update(state)
            for state in ack.get("workflows", []) if isinstance(ack, dict) else []:
                self.workflow_updates.setdefault(state["workflow_id"], []).append(state)
            async with self._changed:
                self._changed.notify_all()

    async def wait_connects(self, count: int, timeout: float = 30) -> None:
        """Wait until the client has connected ``count`` times in all (reconnects included)."""

        async def seen() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.connects >= count)

        try:
            await asyncio.wait_for(seen(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.connects} connects in {timeout}s, wanted {count}") from None

    async def _on_update(self, state: dict[str, Any]) -> None:
        self.updates.setdefault(state["task_id"], []).append(state)
        async with self._changed:
            self._changed.notify_all()

    async def _on_workflow_update(self, state: dict[str, Any]) -> None:
        # As a browser's store: an update without task_ids keeps the ones held (docs/protocol.md, workflow:update).
        self.workflow_payloads.setdefault(state["workflow_id"], []).append(state)
        held = self.workflow_updates.setdefault(state["workflow_id"], [])
        if "task_ids" not in state:
            if not held:
                return  # before the ack, which brings them
            state = {**held[-1], **state}
        held.append(state)
        async with self._changed:
            self._changed.notify_all()

    async def connect(self, token: str | None = None) -> Watcher:
        await self.sio.connect(
            self.url, auth={"token": token} if token else None, transports=["websocket"], wait_timeout=10
        )
        return self

    async def call(self, event: str, payload: Any, timeout: float = 15) -> Any:
        return await self.sio.call(event, payload, timeout=timeout)

    async def subscribe(
        self, task_ids: list[str] | str, token: str | None = None, *, workflows: bool = False
    ) -> dict[str, Any]:
        """Send ``subscribe`` and return the ack; its snapshots count as updates, as in a browser's store.

        With ``workflows``, the ids are workflow ids (``workflow_id``/``workflow_ids``).
        """
        noun = "workflow" if workflows else "task"
        payload: dict[str, Any] = (
            {f"{noun}_id": task_ids} if isinstance(task_ids, str) else {f"{noun}_ids": list(task_ids)}
        )
        if token is not None:
            payload["token"] = token
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(ack: Any = None) -> None:
            # Recorded the moment the ack is read, before any update read after
            # it, exactly as a browser's store would order them.
            for state in ack.get("tasks", []) if isinstance(ack, dict) else []:
                self.updates.setdefault(state["task_id"], []).append(state)
            for state in ack.get("workflows", []) if isinstance(ack, dict) else []:
                self.workflow_updates.setdefault(state["workflow_id"], []).append(state)
            if not answered.done():
                answered.set_result(ack)

        await self.sio.emit("subscribe", payload, callback=on_ack)
        ack = await asyncio.wait_for(answered, 15)
        if isinstance(ack, dict) and ack.get("ok"):
            self._subscriptions.append(payload)
        async with self._changed:
            self._changed.notify_all()
        return ack

    async def wait_for(
        self, task_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Wait until an update of ``task_id`` satisfies ``predicate``; return that update."""
        got = await self._first(self.updates, task_id, predicate, timeout)
        if got is None:
            seen = [u["state"] for u in self.updates.get(task_id, [])]
            raise AssertionError(f"task {task_id}: no matching update in {timeout}s; got {seen}")
        return got

    async def wait_state(self, task_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_for(task_id, lambda s: s["state"] == state, timeout)

    async def wait_workflow(
        self, workflow_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Wait until a WorkflowState of ``workflow_id`` (update or ack) satisfies ``predicate``; return it."""
        got = await self._first(self.workflow_updates, workflow_id, predicate, timeout)
        if got is None:
            seen = [(u["state"], u["total"], u["counts"]) for u in self.workflow_updates.get(workflow_id, [])][-5:]
            raise AssertionError(f"workflow {workflow_id}: no matching update in {timeout}s; last {seen}")
        return got

    async def _first(
        self,
        received: dict[str, list[dict[str, Any]]],
        key: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
    ) -> dict[str, Any] | None:
        """The first of ``received[key]`` that satisfies ``predicate``, waiting up to ``timeout`` s (None then)."""

        async def seen() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for state in received.get(key, []):
                        if predicate(state):
                            return state
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        # shutdown() also ends a reconnect loop, where disconnect() would leave it running.
        await self.sio.shutdown()


async def final_state(url: str, token: str, task_id: str, state: str) -> dict:
    """Subscribe to one task with a fresh client and return its TaskState once it reaches ``state``."""
    w = await Watcher(url).connect(token)
    try:
        await w.subscribe(task_id)
        return await w.wait_state(task_id, state)
    finally:
        await w.close()


async def connect_refused(client: socketio.AsyncClient, url: str, **kwargs: Any) -> None:
    """Connect ``client``, which the server must refuse (ConnectionError); then release what python-engineio
    keeps after a failed connect (its HTTP session), which would otherwise be reported unclosed at exit."""
    try:
        try:
            await client.connect(url, **kwargs)
        except socketio.exceptions.ConnectionError:
            return
        raise AssertionError(f"the server accepted a connection it should refuse ({kwargs})")
    finally:
        await client.disconnect()
