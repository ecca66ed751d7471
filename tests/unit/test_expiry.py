"""The expiry wheel: one-second slots, batching, moves, removal, and its single timer."""

from __future__ import annotations

import asyncio

from pushserver.expiry import ExpiryWheel


def wheel() -> tuple[ExpiryWheel, list[dict[str, list[str]]]]:
    fired: list[dict[str, list[str]]] = []
    return ExpiryWheel(fired.append, clock=lambda: 0.0), fired


def test_deadlines_fire_at_the_end_of_their_second_batched_per_connection():
    w, fired = wheel()
    w.set("s1", ["a", "b"], 10.2)
    w.set("s1", ["c"], 10.9)
    w.set("s2", ["a"], 11.5)
    assert w.fire(10.5) == 0 and not fired  # never early
    assert w.fire(11.0) == 3
    assert fired == [{"s1": ["a", "b", "c"]}]
    assert w.fire(12.0) == 1 and fired[-1] == {"s2": ["a"]}
    assert len(w) == 0


def test_a_later_token_moves_the_deadline_an_earlier_one_does_not():
    w, fired = wheel()
    w.set("s", ["a"], 10)
    w.set("s", ["a"], 20)
    w.set("s", ["a"], 15)
    assert w.deadline("s", "a") == 20
    assert w.fire(19) == 0 and w.fire(20) == 1 and fired == [{"s": ["a"]}]


def test_remove_and_drop_forget_deadlines_and_are_idempotent():
    w, fired = wheel()
    w.set("s", ["a", "b"], 10)
    w.set("t", ["a"], 10)
    w.remove("s", ["a", "zzz"])
    w.drop("t")
    w.drop("t")
    w.remove("nobody", ["a"])
    assert len(w) == 1
    assert w.fire(10) == 1 and fired == [{"s": ["b"]}]


def test_one_timer_for_many_subscriptions():
    async def run() -> list[dict[str, list[str]]]:
        fired: list[dict[str, list[str]]] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        w = ExpiryWheel(fired.append, clock=lambda: 1000.0 + loop.time() - start)
        for i in range(5000):
            w.set(f"s{i}", ["t"], 1000.1)
        assert len(asyncio.all_tasks()) == 1  # this coroutine only: no task per subscription
        timer = w._timer
        w.set("late", ["t"], 1005)
        assert w._timer is timer  # a later deadline does not re-arm
        await asyncio.sleep(1.2)
        w.close()
        return fired

    fired = asyncio.run(run())
    assert len(fired) == 1 and len(fired[0]) == 5000
