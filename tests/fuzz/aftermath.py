"""After the storm: what the fuzz stack's servers must look like once every fuzz test has run.

``check`` runs when the session's fuzz stack is torn down (the fixture's
finalizer in conftest.py), after whichever fuzz tests ran, in whatever order:
the servers are alive and ready, every connection the suite opened is gone
from their books, nothing leaked (tasks, file descriptors, threads, memory
within a bound), and their logs hold no unhandled error from pushserver's
own code. A failed check fails the session (an error at the teardown of the
last fuzz test), with every problem found listed.

The memory bound: a server starts at ~60 MiB RSS. The CI run leaves ~1 700
tasks in its store (per-example pools of injected ids, a sentinel per
example), each a few KiB with text fields capped by the merge (results and
exceptions 4 096 characters, tracebacks 16 384, progress messages 1 024);
measured growth was +16 MiB. The bound, +64 MiB over the baseline (four times
that for the ten-times-longer slow run) and 300 MiB in all, leaves room for
the allocator keeping arenas after the megabyte-sized messages the suite
pushes through, and still catches anything kept per message or per
connection.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from dev.metrics import metric
from dev.stack import thread_count, wait_until

from .stack import FuzzStack, Server
from .support import count_case, is_slow, rss_mib

RSS_GROWTH_MIB = 64 * (4 if is_slow() else 1)
RSS_MAX_MIB = 300


def servers(stack: FuzzStack) -> list[Server]:
    return [stack.main, stack.limits]


def process_figures(server: Server) -> dict[str, Any]:
    """Open file descriptors (prometheus-client's process collector, on /metrics) and threads (Linux /proc)."""
    return {"open_fds": metric(server.url, "process_open_fds"), "threads": thread_count(server.proc.pid)}


def servers_alive_and_ready(fuzz_stack: FuzzStack) -> None:
    count_case("aftermath: checks")
    for server in servers(fuzz_stack):
        assert server.proc.alive(), f"{server.name} exited:\n{server.proc.log()[-3000:]}"
        assert server.get("/healthz")[0] == 200
        ready = server.readyz()
        assert server.is_ready() and ready["ready"], ready


def no_connection_or_subscription_left_behind(fuzz_stack: FuzzStack) -> None:
    """Every client the suite opened has closed: the servers must have forgotten them all."""
    count_case("aftermath: checks")
    for server in servers(fuzz_stack):

        def books() -> tuple[float, int]:
            return metric(server.url, "pushserver_connected_clients"), server.readyz()["subscriptions"]

        try:
            wait_until(lambda: books() == (0, 0), 10, "the books to empty", interval=0.2)
        except AssertionError:
            clients, subscriptions = books()
            raise AssertionError(
                f"{server.name}: {clients:g} clients and {subscriptions} subscriptions left after every client closed"
            ) from None


def process_resources_back_to_baseline(fuzz_stack: FuzzStack) -> None:
    """Threads and file descriptors return to where they started, give or take what is legitimately
    lazy: the result backend's thread pool (4) and asyncio's default executor start on first use."""
    count_case("aftermath: checks")
    before = fuzz_stack.baseline["main_process"]
    after = process_figures(fuzz_stack.main)
    assert after["threads"] <= before["threads"] + 4 + 8, (before, after)
    assert after["open_fds"] <= before["open_fds"] + 16, (before, after)


def memory_within_bound(fuzz_stack: FuzzStack) -> None:
    count_case("aftermath: checks")
    for server, baseline in (
        (fuzz_stack.main, fuzz_stack.baseline["main_rss_mib"]),
        (fuzz_stack.limits, fuzz_stack.baseline["limits_rss_mib"]),
    ):
        rss = rss_mib(server.proc.pid)
        tasks = server.readyz()["tasks_in_memory"]
        print(f"{server.name}: RSS {baseline:.0f} -> {rss:.0f} MiB, {tasks} tasks in memory")
        assert rss <= baseline + RSS_GROWTH_MIB and rss <= RSS_MAX_MIB, (
            f"{server.name}: RSS {baseline:.0f} -> {rss:.0f} MiB ({tasks} tasks in memory)"
        )


#: Exceptions that are handled, or owned by another test, and so not reported here:
#: - aiohttp.http_exceptions.*: aiohttp answered 400 to a request it could not parse (it logs the
#:   traceback, which is log noise any client can cause, but no failure);
#: - a JSONDecodeError in the codec: text that is not JSON is owed no ack; the well-formed JSON it
#:   refuses fails test_json_the_codec_refuses_gets_an_ack;
#: - errors inside python-socketio/engineio on packets that are not Socket.IO events at all (the
#:   connection survives them: test_malformed_packets_keep_the_connection).
HANDLED = ("aiohttp.http_exceptions.", "orjson.JSONDecodeError", "json.decoder.JSONDecodeError")

#: Log lines that mean an exception nobody handled.
UNHANDLED = (
    "Task exception was never retrieved",
    "Exception in callback",
    "Error handling request",
    "Unhandled exception",
)


def unhandled_errors(log: str) -> Counter[str]:
    """Distinct unhandled errors in a server log: the exception, and the innermost pushserver frame."""
    found: Counter[str] = Counter()
    lines = log.splitlines()
    explained: set[int] = set()  # marker lines whose traceback follows
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback (most recent call last):"):
            i += 1
            continue
        context = range(max(0, i - 3), i)
        explained.update(j for j in context if any(m in lines[j] for m in UNHANDLED))
        frames: list[str] = []
        i += 1
        while i < len(lines) and (
            lines[i].startswith((" ", "Traceback", "During handling", "The above exception")) or not lines[i].strip()
        ):
            match = re.match(r'\s+File "([^"]+)", line (\d+), in (\S+)', lines[i])
            if match:
                frames.append(f"{match[1].split('/site-packages/')[-1]}:{match[2]} {match[3]}")
            i += 1
        exception = lines[i] if i < len(lines) else "?"
        ours = [f for f in frames if "/pushserver/" in f]
        if exception.startswith(HANDLED):
            continue
        # An error is ours when it went through our code, or names it (a handler called wrongly).
        if ours or re.search(r"\b(Hub|HttpApi|PushServer|Fanout|TaskStore|TokenVerifier)\.", exception):
            where = ours[-1] if ours else frames[-1] if frames else "?"
            found[f"{exception[:160]}  (at {where.rsplit('/', 1)[-1]})"] += 1
    for j, line in enumerate(lines):
        if j not in explained and any(m in line for m in UNHANDLED):
            found[line.split(": ", 1)[-1][:160]] += 1
    return found


def no_unhandled_errors_in_server_logs(fuzz_stack: FuzzStack) -> None:
    """python-socketio logs (and survives) packets that are not Socket.IO at all; an exception that went
    through pushserver's code, or that nobody retrieved, is a bug even when the server lives on."""
    count_case("aftermath: checks")
    report = []
    for server in servers(fuzz_stack):
        for error, times in unhandled_errors(server.proc.log()).most_common():
            report.append(f"{server.name}: {times}x {error}")
    assert not report, "unhandled errors in the server logs:\n  " + "\n  ".join(report)


#: Every check, in the order they run.
CHECKS: tuple[Callable[[FuzzStack], None], ...] = (
    servers_alive_and_ready,
    no_connection_or_subscription_left_behind,
    process_resources_back_to_baseline,
    memory_within_bound,
    no_unhandled_errors_in_server_logs,
)


def check(fuzz_stack: FuzzStack) -> None:
    """Run every check; raise one AssertionError that lists each one that failed."""
    failed = []
    for one in CHECKS:
        try:
            one(fuzz_stack)
        except AssertionError as exc:
            failed.append(f"{one.__name__}: {exc}")
    if failed:
        raise AssertionError("after the fuzz tests:\n  " + "\n  ".join(failed))
