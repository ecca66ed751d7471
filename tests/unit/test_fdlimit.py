"""The open-files limit: raised to the hard limit at start, and one log line saying what it leaves room for."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from pushserver.fdlimit import RESERVED_FDS, OpenFilesLimit, log_open_files_limit, raise_open_files_limit


@pytest.fixture
def lowered_soft_limit() -> Iterator[tuple[int, int]]:
    """The soft limit lowered below the hard one for the test (any process may raise it back), then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 512 if hard == resource.RLIM_INFINITY else min(512, hard - 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        yield low, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one(lowered_soft_limit: tuple[int, int]) -> None:
    low, hard = lowered_soft_limit
    limit = raise_open_files_limit()
    assert limit.before == low
    assert limit.soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0] > low
    if hard != resource.RLIM_INFINITY:
        assert limit.soft == hard
    assert limit.connections == limit.soft - RESERVED_FDS


def test_one_info_line_says_the_room_for_connections(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushserver")
    log_open_files_limit(OpenFilesLimit(before=1024, soft=20_000, hard=20_000), max_connections=0)
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert (
        record.getMessage() == "open files limit 20,000 (raised from 1,024): room for about 19,900 client connections"
    )


def test_max_connections_beyond_the_limit_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushserver")
    log_open_files_limit(OpenFilesLimit(before=1024, soft=4096, hard=4096), max_connections=50_000)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "--max-connections 50000 is more than the open files limit allows: open files limit 4,096 (raised from"
        " 1,024): room for about 3,996 client connections; raise the hard limit"
    )
