"""The shared keep-alive schedule of pushserver/keepalive.py (real sessions: tests/unit/test_eioserver.py)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from engineio import packet as eio_packet

from pushserver.eioserver import SendQueue
from pushserver.keepalive import PingSchedule
from tests.support.waits import until


def sock(sid: str, **flags: Any) -> SimpleNamespace:
    """What the schedule reads and writes of an engineio socket."""
    return SimpleNamespace(
        **{"sid": sid, "closing": False, "closed": False, "last_ping": None, "queue": SendQueue(), **flags}
    )


def pings(s: SimpleNamespace) -> list[int]:
    return [p.packet_type for p in s.queue._items]


async def test_each_socket_is_pinged_once_an_interval_after_it_was_added() -> None:
    schedule = PingSchedule(interval=0.2, slack=0.01)
    loop = asyncio.get_running_loop()
    first, second = sock("a"), sock("b")
    added = loop.time()
    schedule.add(first)
    await asyncio.sleep(0.1)
    schedule.add(second)
    await until(lambda: pings(first), 2, "the first ping")
    assert loop.time() - added >= 0.2 - 0.01 and pings(second) == []  # not early by more than the slack
    assert first.last_ping is not None and second.last_ping is None
    await until(lambda: pings(second), 2, "the second ping")
    assert pings(first) == pings(second) == [eio_packet.PING]  # once each: added again only on its PONG
    assert len(schedule) == 0 and schedule._timer is None


async def test_pings_due_within_the_slack_go_out_with_one_timer() -> None:
    schedule = PingSchedule(interval=0.05, slack=0.5)
    sockets = [sock(str(i)) for i in range(3)]
    for s in sockets:
        schedule.add(s)
        await asyncio.sleep(0.02)
    await until(lambda: pings(sockets[0]), 2, "the first ping")
    assert all(pings(s) == [eio_packet.PING] for s in sockets)


async def test_closing_or_closed_sockets_are_not_pinged() -> None:
    schedule = PingSchedule(interval=0.05, slack=0.01)
    gone, leaving, open_ = sock("gone", closed=True), sock("leaving"), sock("open")
    for s in (gone, leaving, open_):
        schedule.add(s)
    leaving.closing = True
    await until(lambda: pings(open_), 2, "the open socket's ping")
    assert pings(gone) == pings(leaving) == []


async def test_a_failing_socket_is_logged_and_the_others_keep_their_pings(caplog: pytest.LogCaptureFixture) -> None:
    schedule = PingSchedule(interval=0.05, slack=0.01)
    broken = sock("broken")
    broken.queue = None  # put_nowait raises AttributeError
    fine = sock("fine")
    with caplog.at_level(logging.ERROR, logger="pushserver.keepalive"):
        schedule.add(broken)
        schedule.add(fine)
        await until(lambda: pings(fine), 2, "the ping after the broken socket's")
        later = sock("later")
        schedule.add(later)
        await until(lambda: pings(later), 2, "a ping scheduled after the failure")
    assert "keep-alive ping for Engine.IO session broken failed" in caplog.text


async def test_close_stops_the_timer_and_forgets_the_sockets() -> None:
    schedule = PingSchedule(interval=0.05, slack=0.01)
    s = sock("a")
    schedule.add(s)
    schedule.close()
    assert len(schedule) == 0
    after = sock("after")
    schedule.add(after)  # due later than ``s`` was
    await until(lambda: pings(after), 2, "the ping of a socket added after close")
    assert pings(s) == []
