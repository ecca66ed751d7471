"""Profile a running pushserver with py-spy while the benchmark loads it, and print where the time goes.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile ingest --shape batched
    .venv/bin/python -m bench.profile latency --rate 1000 --clients 1000
    .venv/bin/python -m bench.profile workflow   # bench/workflow.py's phase with the group watched
    .venv/bin/python -m bench.profile --server-rev HEAD ingest   # a committed version, not the working tree

py-spy attaches to the server (by PID) for the whole load, sampling every
thread, idle ones included (``--idle``); the collapsed stacks go to
bench/results/profile-<what>.txt (speedscope.app reads them). The summary
prints, per thread, the share of samples by top-of-stack frame (own time)
and by frame anywhere on the stack (inclusive time), restricted to samples
where the thread was running (py-spy marks idle samples).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, ingest, latency, workflow
from bench.common import BIN, ROOT, PrivateRedis, PushServerProcess, log, stop_process
from bench.stream import build_streams
from dev.metrics import metric_sum

RESULTS = Path(__file__).resolve().parent / "results"


def py_spy() -> str:
    exe = BIN / "py-spy"
    if exe.exists():
        return str(exe)
    found = shutil.which("py-spy")
    if not found:
        raise SystemExit("profile: py-spy not found; .venv/bin/pip install py-spy")
    return found


def start_spy(pid: int, out: Path, fmt: str, rate: int, gil: bool = False) -> subprocess.Popen:
    cmd = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        fmt,
        "-o",
        str(out),
        "--threads",
        "--idle",
        "--nonblocking",
        "--subprocesses",
    ]  # the receiver process too (--receiver process, the default)
    if gil:
        cmd.append("--gil")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attach
    return proc


def stop_spy(proc: subprocess.Popen) -> None:
    proc.send_signal(2)  # py-spy writes its output on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        stop_process(proc)


_SEARCH = [ROOT, Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])]


def source_line(frame: str) -> str:
    """The code at a py-spy frame ``func (path/file.py:123)``, read now (the profile is of this code)."""
    m = re.search(r"\((.+):(\d+)\)$", frame)
    if not m:
        return ""
    rel, line = m.group(1), int(m.group(2))
    for base in ([common.SERVER_SOURCE] if common.SERVER_SOURCE else []) + _SEARCH:
        path = base / rel
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            if 0 < line <= len(lines):
                return lines[line - 1].strip()[:90]
    return ""


IDLE_HINTS = (
    "select (selectors.py",
    "poll (selectors.py",
    "wait (threading.py",
    "_eintr_retry",
    "epoll",
    "_run_once (asyncio/base_events.py",
    "sleep",
    # The server's helper threads, blocked in the kernel (py-spy --idle keeps them).
    "_worker (concurrent/futures/thread.py",
    "_do_waitpid (asyncio/unix_events.py",
    "stop_at_eof (pushserver/receiver_process.py",
    "_drain (pushserver/drain.py",
)


def summarize(raw: Path, top: int = 25) -> str:
    """Own and inclusive time per thread from py-spy's collapsed stacks."""
    own: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    incl: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    active: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0]
        frames = frames[1:]
        if thread.startswith("process "):  # --subprocesses: "process …;[process …;]thread …;frames"
            while frames and frames[0].startswith("process "):
                thread, frames = frames[0], frames[1:]
            if frames:
                thread, frames = f"{thread.split(':', 1)[0]} {frames[0]}", frames[1:]
        totals[thread] += n
        leaf = frames[-1] if frames else "(none)"
        # py-spy --idle keeps samples of threads waiting in the kernel; their leaf is a wait.
        if any(h in leaf for h in IDLE_HINTS):
            continue
        active[thread] += n
        own[thread][leaf] += n
        for f in set(frames):
            incl[thread][f] += n
    lines = []
    for thread, total in totals.most_common():
        if not active[thread]:
            continue
        lines.append(
            f"\n== {thread}: {total} samples, running in {active[thread]} ({100 * active[thread] / total:.0f}%) =="
        )
        lines.append("  own time (top of stack), % of running samples:")
        for frame, n in own[thread].most_common(top):
            code = source_line(frame)
            lines.append(f"    {100 * n / active[thread]:5.1f}%  {frame}" + (f"   | {code}" if code else ""))
        lines.append("  inclusive time, % of running samples (frames on nearly every stack left out):")
        shown = [(f, n) for f, n in incl[thread].most_common() if n < 0.9 * active[thread]]
        for frame, n in shown[:top]:
            lines.append(f"    {100 * n / active[thread]:5.1f}%  {frame}")
    return "\n".join(lines)


def profile_ingest(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-profile-"))
    with PrivateRedis() as redis_server:
        factor = 2 if args.shape == "batched" else 1
        streams = build_streams({args.shape: args.tasks * factor}, redis_server.url, redis_server.client, workdir)
        path, expected = Path(streams[args.shape]["path"]), streams[args.shape]["events"]
        with PushServerProcess(redis_server) as server:
            raw = RESULTS / f"profile-ingest-{args.shape}.txt"
            if args.gil:
                raw = raw.with_name(raw.stem + "-gil.txt")
            spy = start_spy(server.pid, raw, "raw", args.rate, gil=args.gil)
            publisher = ingest.Publisher(redis_server, path, max_backlog=ingest.MAX_BACKLOG)
            t0 = time.time()
            publisher.go()
            count = 0.0
            while count < expected and time.time() - t0 < 300:
                time.sleep(0.1)
                count = metric_sum(server.metrics(), "pushserver_events_ingested_total")
            elapsed = time.time() - t0
            publisher.result()
            stop_spy(spy)
        log(f"{count:,.0f} events in {elapsed:.1f}s ({count / elapsed:,.0f} ev/s incl. start-up, under py-spy)")
    log(f"collapsed stacks in {raw} (speedscope.app and flamegraph.pl read them)")
    print(summarize(raw, args.top))


def profile_latency(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-profile-"))
    with PrivateRedis() as redis_server:
        plan = latency.phase_plan(args.rate, args.duration)
        ids = workdir / "ids.json"
        ids.write_text(json.dumps(plan["task_ids"]))
        with PushServerProcess(redis_server) as server:
            clients = latency.ClientProcess(server.url, args.clients, ids)
            try:
                ready = clients.read()
                log(f"{ready['connected']} clients connected")
                raw = RESULTS / f"profile-latency-{args.rate:g}.txt"
                spy = start_spy(server.pid, raw, "raw", args.rate_hz)
                stats = latency.run_phase(redis_server, server, clients, plan, workdir)
                stop_spy(spy)
            finally:
                clients.close()
        log(f"p50 {stats['p50_ms']:.2f} p99 {stats['p99_ms']:.2f} max {stats['max_ms']:.1f} ms under py-spy")
    log(f"collapsed stacks in {raw} (speedscope.app and flamegraph.pl read them)")
    print(summarize(raw, args.top))


def profile_workflow(args: argparse.Namespace) -> None:
    """bench/workflow.py's run, py-spy attached to the server for each phase: nobody subscribed, then the group."""
    RESULTS.mkdir(exist_ok=True)
    raws = {None: RESULTS / "profile-workflow-baseline.txt", "watched": RESULTS / "profile-workflow.txt"}
    phase = workflow.watch_and_publish

    async def spied(url: str, workflow_id: str | None, *rest: Any) -> dict[str, Any]:
        server_pid = rest[-1]
        spy = start_spy(server_pid, raws["watched" if workflow_id else None], "raw", args.rate_hz)
        try:
            return await phase(url, workflow_id, *rest)
        finally:
            stop_spy(spy)

    workflow.watch_and_publish = spied  # type: ignore[assignment]
    try:
        run = workflow.one_run(args.members, args.rate, args.slots)
    finally:
        workflow.watch_and_publish = phase  # type: ignore[assignment]
    log(
        f"server CPU {run['baseline']['cpu_s']:.2f} s -> {run['workflow']['cpu_s']:.2f} s,"
        f" {run['workflow']['updates']} updates, under py-spy"
    )
    for name, raw in raws.items():
        log(f"collapsed stacks of the {name or 'baseline'} phase in {raw}")
    print(summarize(raws["watched"], args.top))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("ingest")
    i.add_argument("--shape", choices=("unbatched", "batched"), default="batched")
    i.add_argument("--tasks", type=int, default=25_000)
    i.add_argument("--rate", type=int, default=250, help="py-spy samples/s")
    i.add_argument("--top", type=int, default=25)
    i.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=1000.0, help="events/s")
    lat.add_argument("--clients", type=int, default=1000)
    lat.add_argument("--duration", type=float, default=10.0)
    lat.add_argument("--rate-hz", type=int, default=250, help="py-spy samples/s")
    lat.add_argument("--top", type=int, default=25)
    wf = sub.add_parser("workflow")
    wf.add_argument("--members", type=int, default=1000)
    wf.add_argument("--rate", type=float, default=1000.0, help="member events/s")
    wf.add_argument("--slots", type=int, default=50)
    wf.add_argument("--rate-hz", type=int, default=500, help="py-spy samples/s")
    wf.add_argument("--top", type=int, default=25)
    p.add_argument("--server-rev", metavar="REV", help="profile pushserver/ as of this git revision")
    args = p.parse_args()
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    {"ingest": profile_ingest, "latency": profile_latency, "workflow": profile_workflow}[args.what](args)


if __name__ == "__main__":
    main()
