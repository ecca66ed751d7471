"""Delivery of one update to every connection in a room, with a bounded backlog per connection.

python-engineio gives each connection an unbounded send queue, and
python-socketio's room emit creates one asyncio task per recipient.
``FanoutManager`` is python-socketio's client manager (the ``client_manager=``
extension point, which keeps the rooms) with one more way to send: the packet
and its WebSocket frame are encoded once, and handed to each member's send
queue (``EngineIOServer.send_queue``), which writes the frame at once when the
connection's writer is idle and queues the packet otherwise
(``SendQueue.deliver``). The queue length is checked first: a
connection that stops reading gets no more *progress* (the newest is sent
once it catches up), and one that falls ``hard_backlog`` packets behind is
told why and disconnected, so a single slow browser can neither grow server
memory without bound nor delay anyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet

from .eioserver import text_frame
from .metrics import Metrics
from .protocol import ROOM_PREFIX, UPDATE_EVENT, WORKFLOW_EVENT, WORKFLOW_ROOM_PREFIX, OrjsonCodec

log = logging.getLogger("pushserver.fanout")

NAMESPACE = "/"
#: Sent to a connection just before it is dropped for falling behind.
SLOW_CONSUMER_EVENT = "pushserver:error"


class FanoutManager(socketio.AsyncManager):
    """python-socketio's client manager; ``send`` puts an update on each room member's send queue, with backlog limits.

    Progress is shed for laggards and the hopeless are dropped. Pass it to
    ``SocketIOServer(client_manager=...)``: it sends through that server's
    ``EngineIOServer``.
    """

    def __init__(
        self,
        metrics: Metrics,
        snapshot_of: Callable[[str], dict[str, Any] | None],
        *,
        soft_backlog: int = 64,
        hard_backlog: int = 1024,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.snapshot_of = snapshot_of
        #: A watched workflow's current WorkflowState, for catching laggards up (set by the workflow watch).
        self.workflow_snapshot_of: Callable[[str], dict[str, Any] | None] = lambda workflow_id: None
        self.soft_backlog = soft_backlog
        self.hard_backlog = hard_backlog
        # connection sid -> rooms (a task's, a workflow's) whose newest progress it has not been sent
        self._owed: dict[str, set[str]] = {}
        # (namespace, sid) -> the rooms that connection is in (None: the namespace itself, as python-socketio keeps it)
        self._rooms_of: dict[tuple[str, str], set[str | None]] = {}
        self._dropping: set[str] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    # -- rooms by connection ---------------------------------------------------
    # python-socketio finds a connection's rooms by scanning every room of the
    # namespace (basic_disconnect copies the whole table first, get_rooms walks
    # it): with n connections subscribed, n leaving at once (a restart, a
    # network blip, shutdown) cost O(n²) and held the loop for minutes at
    # 18 000 (docs/benchmarks.md). The rooms each connection is in are indexed
    # here as it enters and leaves them, through the manager's basic_* methods
    # every room change goes through; basic_disconnect repeats the rest of
    # python-socketio 5.18's (ack callbacks, pending lists: dependencies.py).

    def basic_enter_room(self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None) -> None:
        """python-socketio's, and the room recorded under the connection."""
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        """python-socketio's, and the room forgotten under the connection."""
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        """The rooms a connection is in (its own sid room included), from the index."""
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's: the connection leaves its rooms (from the index) and its pending entries."""
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def send(self, task_id: str, payload: dict[str, Any], progress: bool, *, workflow: bool = False) -> int:
        """Queue one ``task:update`` for every member of the task's room; return how many got it.

        With ``workflow``, ``task_id`` is a workflow id and the update a ``workflow:update`` to its room.
        """
        room = (WORKFLOW_ROOM_PREFIX if workflow else ROOM_PREFIX) + task_id
        members = list(self.get_participants(NAMESPACE, room))
        if not members:
            return 0
        pkt, frame = self._encode(payload, WORKFLOW_EVENT if workflow else UPDATE_EVENT)
        eio = self.server.eio
        sent = 0
        for sid, eio_sid in members:
            queue = eio.send_queue(eio_sid)
            if queue is None or sid in self._dropping:
                continue
            backlog = queue.qsize()
            if backlog >= self.hard_backlog:
                self._drop(sid, backlog)
                continue
            if progress and backlog >= self.soft_backlog:
                self._owed.setdefault(sid, set()).add(room)
                self.metrics.progress_shed.inc()
                self._schedule_sweep()
                continue
            queue.deliver(pkt, frame)
            sent += 1
        return sent

    def _encode(self, payload: dict[str, Any], event: str = UPDATE_EVENT) -> tuple[eio_packet.Packet, bytes]:
        # A Socket.IO v5 EVENT for namespace "/" with no ack is "2" + the JSON
        # array; built directly, once per update whatever the number of
        # recipients (python-socketio's Packet rescans the payload for binary
        # data on every encode, a large share of the emit path: docs/benchmarks.md).
        # With it, its WebSocket frame, for the members it is written to directly.
        pkt = eio_packet.Packet(eio_packet.MESSAGE, "2" + OrjsonCodec.dumps([event, payload]))
        return pkt, text_frame(pkt.encode())

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        """python-socketio's hook for a connection leaving the namespace: drop what is kept for it here too."""
        self._owed.pop(sid, None)
        self._dropping.discard(sid)
        return await super().disconnect(sid, namespace, **kwargs)

    # -- catching laggards up -------------------------------------------------

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(0.25, self._sweep)

    def _sweep(self) -> None:
        """Send the newest progress to connections that have drained their backlog."""
        self._sweeper = None
        eio = self.server.eio
        for sid in list(self._owed):
            eio_sid = self.eio_sid_from_sid(sid, NAMESPACE)
            queue = eio.send_queue(eio_sid) if eio_sid else None
            if queue is None:
                self._owed.pop(sid, None)
                continue
            if queue.qsize() >= self.soft_backlog // 2:
                continue
            rooms = set(self.get_rooms(sid, NAMESPACE))
            for room in self._owed.pop(sid):
                if room not in rooms:
                    continue
                if room.startswith(WORKFLOW_ROOM_PREFIX):
                    payload = self.workflow_snapshot_of(room.removeprefix(WORKFLOW_ROOM_PREFIX))
                    event = WORKFLOW_EVENT
                else:
                    payload = self.snapshot_of(room.removeprefix(ROOM_PREFIX))
                    event = UPDATE_EVENT
                if payload is not None:
                    queue.deliver(*self._encode(payload, event))
        if self._owed:
            self._schedule_sweep()

    # -- dropping the hopeless ------------------------------------------------

    def _drop(self, sid: str, backlog: int) -> None:
        self._dropping.add(sid)
        self.metrics.slow_consumers.inc()
        log.warning("disconnecting a slow client: %d updates queued and unread", backlog)
        asyncio.get_running_loop().create_task(self._disconnect(sid))

    async def _disconnect(self, sid: str) -> None:
        try:
            await self.server.emit(
                SLOW_CONSUMER_EVENT,
                {
                    "code": "slow_consumer",
                    "message": f"disconnected: more than {self.hard_backlog} updates were waiting to be read",
                },
                to=sid,
            )
            await asyncio.wait_for(self.server.disconnect(sid), timeout=5)
        except Exception:  # noqa: BLE001 - a client that cannot even be told is closed hard
            eio_sid = self.eio_sid_from_sid(sid, NAMESPACE)
            if eio_sid:
                await self.server.eio.abort(eio_sid)
        finally:
            self._dropping.discard(sid)
