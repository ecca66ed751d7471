"""FanoutManager keeps python-socketio's rooms exactly as python-socketio does, and finds a connection's rooms
without scanning the namespace's room table (which made n connections leaving at once cost O(n²))."""

from __future__ import annotations

import random
from typing import Any

import socketio

from pushserver.fanout import NAMESPACE, FanoutManager
from pushserver.metrics import Metrics


class _Server:
    """What the managers ask of their server here: fresh session ids."""

    def __init__(self) -> None:
        self.eio = self
        self._next = 0

    def generate_id(self) -> str:
        self._next += 1
        return f"sid-{self._next}"


def managers() -> tuple[FanoutManager, socketio.AsyncManager]:
    ours, theirs = FanoutManager(Metrics(), lambda task_id: None), socketio.AsyncManager()
    for manager in (ours, theirs):
        manager.server = _Server()
    return ours, theirs


def table(manager: Any) -> dict[Any, dict[str, str]]:
    return {room: dict(members) for room, members in manager.rooms.get(NAMESPACE, {}).items()}


async def test_rooms_stay_as_python_socketio_keeps_them_through_connects_subscribes_and_disconnects() -> None:
    ours, theirs = managers()
    rng = random.Random(7)
    connected: list[str] = []
    for step in range(3_000):
        action = rng.random()
        if action < 0.3 or not connected:
            eio_sid = f"eio-{step}"
            sids = [await m.connect(eio_sid, NAMESPACE) for m in (ours, theirs)]
            assert sids[0] == sids[1]
            connected.append(sids[0])
        elif action < 0.7:
            sid, room = rng.choice(connected), f"task:{rng.randrange(50)}"
            for m in (ours, theirs):
                await m.enter_room(sid, NAMESPACE, room)
        elif action < 0.85:
            sid, room = rng.choice(connected), f"task:{rng.randrange(50)}"
            for m in (ours, theirs):
                await m.leave_room(sid, NAMESPACE, room)
        else:
            sid = connected.pop(rng.randrange(len(connected)))
            for m in (ours, theirs):
                m.pre_disconnect(sid, NAMESPACE)
                await m.disconnect(sid, NAMESPACE)
        if step % 100 == 0:
            assert table(ours) == table(theirs)
            for sid in connected:
                assert sorted(ours.get_rooms(sid, NAMESPACE)) == sorted(theirs.get_rooms(sid, NAMESPACE))
    assert table(ours) == table(theirs)
    assert ours.pending_disconnect == theirs.pending_disconnect and ours.pending_connect == theirs.pending_connect
    for sid in list(connected):
        for m in (ours, theirs):
            await m.disconnect(sid, NAMESPACE)
    assert table(ours) == table(theirs) == {} and not ours._rooms_of


class _NoScan(dict):  # type: ignore[type-arg]
    """A namespace's room table that fails any walk over all its rooms."""

    def copy(self) -> Any:
        raise AssertionError("the whole room table was copied")

    def items(self) -> Any:
        raise AssertionError("every room was walked")


async def test_a_connection_leaves_without_its_rooms_being_searched_for() -> None:
    ours, _ = managers()
    sids = [await ours.connect(f"eio-{i}", NAMESPACE) for i in range(2_000)]
    for i, sid in enumerate(sids):
        await ours.enter_room(sid, NAMESPACE, f"task:{i}")
    ours.rooms[NAMESPACE] = _NoScan(ours.rooms[NAMESPACE])
    assert sorted(ours.get_rooms(sids[5], NAMESPACE)) == sorted([sids[5], "task:5"])
    for sid in sids:
        await ours.disconnect(sid, NAMESPACE)
    assert NAMESPACE not in ours.rooms and not ours._rooms_of
