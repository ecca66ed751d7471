"""Await Celery tasks by push from Python: a small asyncio client of pushserver, on python-socketio.

.. code-block:: python

    async with TaskWatcher("https://push.example.com", token=token) as watcher:
        state = await watcher.wait(task_id, timeout=60)    # the terminal TaskState
        async for state in watcher.updates(other_id):       # every change, until terminal
            print(state["state"], state["progress"])

A TaskState is the JSON object of docs/protocol.md, as a dict. The watcher
re-subscribes after every reconnect (the server forgets a connection's rooms),
and the subscribe ack's snapshot makes a task that finished before the call,
or while the connection was down, come back in its terminal state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import socketio
import socketio.exceptions

from .errors import PushserverError

__all__ = [
    "TERMINAL_STATES",
    "TaskState",
    "TaskWatcher",
    "PushserverClientError",
    "ConnectFailed",
    "SubscribeRefused",
    "WaitTimeout",
    "WatcherClosed",
]

logger = logging.getLogger(__name__)

#: A TaskState as the server sends it (docs/protocol.md).
TaskState = dict[str, Any]

#: States after which a task changes no more.
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED"})

UPDATE_EVENT = "task:update"


class PushserverClientError(PushserverError):
    """Base of every error ``pushserver.client`` raises."""


class ConnectFailed(PushserverClientError, ConnectionError):
    """The watcher could not connect (server unreachable, or the connection token was refused)."""


class SubscribeRefused(PushserverClientError):
    """The server refused a ``subscribe``; ``code`` is the protocol's error code (``forbidden``, …)."""

    def __init__(self, task_id: str, code: str, message: str) -> None:
        super().__init__(f"subscribe to task {task_id} refused: {code}: {message}")
        self.task_id = task_id
        self.code = code
        self.message = message


class WaitTimeout(PushserverClientError, TimeoutError):
    """``wait()`` saw no terminal state within its timeout; ``last`` is the newest state seen, if any."""

    def __init__(self, task_id: str, timeout: float, last: TaskState | None) -> None:
        seen = last["state"] if last else "nothing"
        super().__init__(f"task {task_id}: no terminal state within {timeout}s (last seen: {seen})")
        self.task_id = task_id
        self.last = last


class WatcherClosed(PushserverClientError):
    """The watcher was closed while a call was waiting on it."""


class _Disconnected(Exception):
    """The connection dropped before a subscribe was acknowledged (the next connect retries it)."""


def is_terminal(state: TaskState) -> bool:
    """Tell whether ``state`` is one a task never leaves."""
    return state.get("state") in TERMINAL_STATES


def _is_stale(new: TaskState, latest: TaskState | None) -> bool:
    """Tell whether ``new`` adds nothing to ``latest``: a repeat, or older than it."""
    if latest is None:
        return False
    if new == latest:
        return True
    # An ack's snapshot can be read before an update that reaches us first.
    if is_terminal(latest) and not is_terminal(new):
        return True
    new_at, latest_at = new.get("updated_at"), latest.get("updated_at")
    return isinstance(new_at, (int, float)) and isinstance(latest_at, (int, float)) and new_at < latest_at


@dataclass(eq=False)
class _Watch:
    """One watched task: the newest state seen, and the queues of the calls waiting on it."""

    task_id: str
    token: str | None
    latest: TaskState | None = None
    listeners: set[asyncio.Queue[TaskState | BaseException]] = field(default_factory=set)


class TaskWatcher:
    """One Socket.IO connection to pushserver that awaits tasks; use it as ``async with``.

    ``token`` (a JWT naming the tasks, see docs/protocol.md) is sent when
    connecting; a call's own ``token`` is sent with its subscribe instead.
    ``transports`` defaults to WebSocket only, which needs no sticky sessions.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        transports: Sequence[str] = ("websocket",),
        socketio_path: str = "socket.io",
        headers: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
        ack_timeout: float = 10.0,
        reconnection_delay: float = 0.5,
        reconnection_delay_max: float = 5.0,
    ) -> None:
        self.url = url
        self.token = token
        self.transports = list(transports)
        self.socketio_path = socketio_path
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        #: Connections made so far, the first included: ``connects - 1`` reconnects.
        self.connects = 0
        self._sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_attempts=0,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
        )
        self._sio.on("connect", self._on_connect)
        self._sio.on("disconnect", self._on_disconnect)
        self._sio.on("connect_error", self._on_connect_error)
        self._sio.on(UPDATE_EVENT, self._on_update)
        self._watches: dict[str, _Watch] = {}
        self._pending_acks: set[asyncio.Future[Any]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._closed = False
        self._refusal: str | None = None

    # --- connection ---------------------------------------------------------

    async def __aenter__(self) -> TaskWatcher:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the Socket.IO connection is up right now (it reconnects by itself)."""
        return self._connected.is_set()

    async def connect(self) -> None:
        """Open the connection; raise ConnectFailed if the server cannot be reached or refuses it."""
        if self._closed:
            raise WatcherClosed("this TaskWatcher was closed")
        self._refusal = None
        try:
            await self._sio.connect(
                self.url,
                headers=self.headers,
                auth={"token": self.token} if self.token else None,
                transports=self.transports,
                socketio_path=self.socketio_path,
                wait_timeout=self.connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            # A failed first connect leaves engineio's HTTP session open; this closes it.
            await self._sio.eio.disconnect(abort=True)
            reason = f"the server refused the connection: {self._refusal}" if self._refusal else str(exc)
            raise ConnectFailed(f"could not connect to {self.url}: {reason}") from exc

    async def close(self) -> None:
        """Disconnect, stop reconnecting, and end every call still waiting with WatcherClosed."""
        if self._closed:
            return
        self._closed = True
        await self._sio.shutdown()
        for task in list(self._background):
            task.cancel()
        closed = WatcherClosed("the TaskWatcher was closed")
        for watch in self._watches.values():
            for queue in watch.listeners:
                queue.put_nowait(closed)
        self._fail_pending_acks(closed)

    async def _on_connect(self) -> None:
        self.connects += 1
        self._connected.set()
        if self._watches:
            # Not awaited here: the acks arrive on the connection this handler is part of setting up.
            self._spawn(self._subscribe_all())

    async def _on_connect_error(self, data: Any = None) -> None:
        # The server's refusal (an invalid connect token) says why in its message.
        message = data.get("message") if isinstance(data, dict) else data
        self._refusal = str(message) if message else None

    async def _on_disconnect(self, *reason: Any) -> None:
        self._connected.clear()
        self._fail_pending_acks(_Disconnected())

    def _fail_pending_acks(self, exc: BaseException) -> None:
        for future in self._pending_acks:
            if not future.done():
                future.set_exception(exc)
        self._pending_acks.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- subscriptions --------------------------------------------------------

    async def _subscribe_all(self) -> None:
        for watch in list(self._watches.values()):
            await self._subscribe(watch)

    async def _subscribe(self, watch: _Watch) -> None:
        """Send ``subscribe`` for ``watch`` and deliver the ack's snapshot (or its refusal) to its listeners."""
        payload: dict[str, Any] = {"task_id": watch.task_id}
        if watch.token is not None:
            payload["token"] = watch.token
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending_acks.add(answered)

        def on_ack(*args: Any) -> None:
            if not answered.done():
                answered.set_result(args[0] if args else None)

        try:
            await self._sio.emit("subscribe", payload, callback=on_ack)
            ack = await asyncio.wait_for(answered, self.ack_timeout)
        except (_Disconnected, socketio.exceptions.SocketIOError):
            return  # the next connect subscribes again
        except asyncio.TimeoutError:
            if not self.connected:
                return
            self._broadcast(
                watch,
                PushserverClientError(
                    f"subscribe to task {watch.task_id}: no answer from the server within {self.ack_timeout}s"
                ),
            )
            return
        except WatcherClosed:
            return
        finally:
            self._pending_acks.discard(answered)
        if not isinstance(ack, dict):
            self._broadcast(watch, PushserverClientError(f"subscribe to task {watch.task_id}: bad ack {ack!r}"))
        elif not ack.get("ok"):
            error = ack.get("error") or {}
            self._broadcast(
                watch, SubscribeRefused(watch.task_id, str(error.get("code", "unknown")), str(error.get("message", "")))
            )
        else:
            for state in ack.get("tasks") or []:
                if isinstance(state, dict) and state.get("task_id") == watch.task_id:
                    self._deliver(watch, state)

    async def _on_update(self, state: Any) -> None:
        if not isinstance(state, dict):
            logger.warning("ignoring a %s that is not a TaskState: %r", UPDATE_EVENT, state)
            return
        watch = self._watches.get(state.get("task_id"))  # type: ignore[arg-type]
        if watch is not None:
            self._deliver(watch, state)

    def _deliver(self, watch: _Watch, state: TaskState) -> None:
        if _is_stale(state, watch.latest):
            return
        watch.latest = state
        self._broadcast(watch, state)

    @staticmethod
    def _broadcast(watch: _Watch, item: TaskState | BaseException) -> None:
        for queue in watch.listeners:
            queue.put_nowait(item)

    async def _unsubscribe(self, task_id: str) -> None:
        if self.connected and not self._closed:
            try:
                await self._sio.emit("unsubscribe", {"task_id": task_id})
            except socketio.exceptions.SocketIOError:
                pass  # a later connection has no rooms anyway

    # --- the API --------------------------------------------------------------

    async def updates(self, task_id: str, *, token: str | None = None) -> AsyncGenerator[TaskState, None]:
        """Yield the task's state now and after every change, ending after a terminal state.

        The first state is the server's snapshot (``PENDING`` for a task it
        knows nothing of yet). Raises SubscribeRefused when the token does not
        allow the task, WatcherClosed when the watcher is closed meanwhile.
        """
        if self._closed:
            raise WatcherClosed("this TaskWatcher was closed")
        queue: asyncio.Queue[TaskState | BaseException] = asyncio.Queue()
        watch = self._watches.get(task_id)
        if watch is None:
            watch = self._watches[task_id] = _Watch(task_id, token)
            watch.listeners.add(queue)
            if self.connected:
                self._spawn(self._subscribe(watch))
            # else: the next connect subscribes every watch
        else:
            watch.listeners.add(queue)
            if token is not None and watch.token is None:
                watch.token = token
            if watch.latest is not None:
                queue.put_nowait(watch.latest)
        try:
            last: TaskState | None = None
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if last is not None and _is_stale(item, last):
                    continue
                last = item
                yield item
                if is_terminal(item):
                    return
        finally:
            watch.listeners.discard(queue)
            if not watch.listeners and self._watches.get(task_id) is watch:
                del self._watches[task_id]
                if not self._closed:
                    self._spawn(self._unsubscribe(task_id))

    async def wait(self, task_id: str, timeout: float | None = None, *, token: str | None = None) -> TaskState:
        """Return the task's terminal state (SUCCESS, FAILURE, REVOKED, REJECTED), however long ago it was reached.

        Raises WaitTimeout after ``timeout`` seconds without one (None waits
        for ever), SubscribeRefused when the token does not allow the task.
        """
        last: TaskState | None = None

        async def until_terminal() -> TaskState:
            nonlocal last
            stream = self.updates(task_id, token=token)
            try:
                async for state in stream:
                    last = state
                    if is_terminal(state):
                        return state
            finally:
                await stream.aclose()
            raise AssertionError("updates() ended without a terminal state")  # pragma: no cover

        try:
            return await asyncio.wait_for(until_terminal(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(task_id, timeout or 0.0, last) from None
