"""Unit tests of pushserver.client's pure parts: which states a watcher passes on, and its errors.

The client against a real server is tests/integration/test_client.py.
"""

from __future__ import annotations

import pytest

from pushserver.client import (
    TERMINAL_STATES,
    ConnectFailed,
    PushserverClientError,
    SubscribeRefused,
    WaitTimeout,
    WatcherClosed,
    _is_stale,
    is_terminal,
)


def state(name: str, updated_at: float | None = None, **extra: object) -> dict[str, object]:
    return {"task_id": "t", "state": name, "updated_at": updated_at, **extra}


def test_terminal_states_are_the_four_final_ones() -> None:
    assert TERMINAL_STATES == {"SUCCESS", "FAILURE", "REVOKED", "REJECTED"}
    assert is_terminal(state("FAILURE")) and not is_terminal(state("RETRY")) and not is_terminal({})


@pytest.mark.parametrize(
    ("new", "latest", "stale"),
    [
        (state("PENDING"), None, False),  # the first one always counts
        (state("STARTED", 2.0), state("STARTED", 2.0), True),  # a repeat (ack and update of one change)
        (state("PROGRESS", 3.0), state("STARTED", 2.0), False),
        (state("STARTED", 2.0), state("PROGRESS", 3.0), True),  # an ack's older snapshot after a newer update
        (state("PROGRESS", 5.0), state("SUCCESS", 4.0), True),  # nothing after a terminal state but another
        (state("SUCCESS", 4.0), state("PROGRESS", 4.0), False),
        (state("RETRY", 6.0), state("PROGRESS", 5.0), False),
        (state("STARTED", None), state("PENDING", None), False),  # no timestamps: not judged by time
    ],
)
def test_which_states_a_watcher_passes_on(new: dict, latest: dict | None, stale: bool) -> None:
    assert _is_stale(new, latest) is stale


def test_errors_are_one_family_and_say_what_happened() -> None:
    for error in (
        ConnectFailed("x"),
        SubscribeRefused("t", "forbidden", "no"),
        WaitTimeout("t", 1.5, None),
        WatcherClosed("x"),
    ):
        assert isinstance(error, PushserverClientError)
    assert isinstance(ConnectFailed("x"), ConnectionError)
    refused = SubscribeRefused("t1", "forbidden", "the token does not name task t1")
    assert refused.code == "forbidden" and "t1" in str(refused)
    timeout = WaitTimeout("t1", 1.5, state("PROGRESS"))
    assert isinstance(timeout, TimeoutError) and "1.5s" in str(timeout) and "PROGRESS" in str(timeout)
