"""The who-watches-what index the server keeps beside Socket.IO's rooms (pushserver/subscriptions.py)."""

from __future__ import annotations

import random

import pytest

from pushserver.protocol import ProtocolError
from pushserver.subscriptions import Subscriptions


def test_add_and_query() -> None:
    subs = Subscriptions()
    assert subs.add("sid-1", ["a", "b"]) == ["a", "b"]
    assert subs.add("sid-2", ["b"]) == ["b"]
    assert subs.tasks_of("sid-1") == {"a", "b"}
    assert subs.is_watched("a") and subs.is_watched("b")
    assert not subs.is_watched("c")
    assert sorted(subs.watched()) == ["a", "b"]
    assert len(subs) == 3


def test_adding_again_returns_only_what_is_new() -> None:
    subs = Subscriptions()
    subs.add("sid", ["a"])
    assert subs.add("sid", ["a", "b"]) == ["b"]
    assert subs.add("sid", ["a", "b"]) == []
    assert len(subs) == 2


def test_remove_returns_tasks_nobody_watches_any_more() -> None:
    subs = Subscriptions()
    subs.add("sid-1", ["a", "b"])
    subs.add("sid-2", ["b"])

    assert subs.remove("sid-1", ["a", "b"]) == ["a"]  # "b" still has sid-2
    assert not subs.is_watched("a")
    assert subs.is_watched("b")
    assert subs.tasks_of("sid-1") == frozenset()

    assert subs.remove("sid-2", ["b"]) == ["b"]
    assert subs.watched() == []
    assert len(subs) == 0


def test_remove_of_unknown_things_is_harmless() -> None:
    subs = Subscriptions()
    assert subs.remove("nobody", ["a"]) == []
    subs.add("sid", ["a"])
    assert subs.remove("sid", ["not-watched"]) == []
    assert subs.remove("other", ["a"]) == []
    assert subs.is_watched("a")


def test_drop_forgets_a_disconnected_connection() -> None:
    subs = Subscriptions()
    subs.add("sid-1", ["a", "b", "c"])
    subs.add("sid-2", ["c"])

    assert sorted(subs.drop("sid-1")) == ["a", "b"]
    assert subs.tasks_of("sid-1") == frozenset()
    assert subs.watched() == ["c"]
    assert subs.drop("sid-1") == []  # twice is fine
    assert subs.drop("sid-2") == ["c"]
    assert len(subs) == 0


def test_limit_refuses_the_whole_request_and_adds_nothing() -> None:
    subs = Subscriptions(max_per_connection=3)
    subs.add("sid", ["a", "b"])

    with pytest.raises(ProtocolError) as caught:
        subs.add("sid", ["c", "d"])

    assert caught.value.code == "too_many"
    assert "at most 3 subscriptions per connection" in caught.value.message
    assert subs.tasks_of("sid") == {"a", "b"}
    assert not subs.is_watched("c") and not subs.is_watched("d")
    assert len(subs) == 2


def test_limit_counts_only_new_tasks() -> None:
    subs = Subscriptions(max_per_connection=2)
    subs.add("sid", ["a", "b"])
    assert subs.add("sid", ["a", "b"]) == []  # already there: not over the limit
    assert subs.add("other", ["a", "b"]) == ["a", "b"]  # the limit is per connection


def test_a_refused_first_request_leaves_no_trace() -> None:
    subs = Subscriptions(max_per_connection=1)
    with pytest.raises(ProtocolError):
        subs.add("sid", ["a", "b"])
    assert subs.tasks_of("sid") == frozenset()
    assert subs.watched() == []
    assert subs.drop("sid") == []


def test_the_count_follows_every_add_remove_and_drop() -> None:
    # len() is kept as a count, not summed over the connections: it must match the index after any mix.
    rng = random.Random(19)
    subs = Subscriptions(max_per_connection=5)
    sids = [f"s{i}" for i in range(6)]
    tasks = [f"t{i}" for i in range(8)]
    for _ in range(2000):
        sid = rng.choice(sids)
        op = rng.random()
        if op < 0.5:
            try:
                subs.add(sid, rng.sample(tasks, rng.randint(1, 3)))
            except ProtocolError:
                pass  # over the limit: nothing added
        elif op < 0.9:
            subs.remove(sid, rng.sample(tasks, rng.randint(1, 3)))
        else:
            subs.drop(sid)
        assert len(subs) == sum(len(subs.tasks_of(s)) for s in sids)
