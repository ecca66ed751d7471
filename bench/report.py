"""Turn a results dict into the markdown of docs/benchmarks.md and a stdout summary.

docs/benchmarks.md keeps its hand-written text; the script owns only the
block between ``<!-- bench:<mode>:begin -->`` and ``<!-- bench:<mode>:end -->``
(one block for ``full``, one for ``quick``, so a quick run never replaces
the numbers of a full one). A missing block is appended.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.common import spread

TARGET_INGEST_RATIO = 0.8  # pushserver / bare Celery Receiver (was 0.6 before issue 19)
TARGET_FLOWER_RATIO = 3.0  # pushserver / Flower
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
TARGET_RATE = 1000.0
TARGET_KB_PER_CONNECTION = 25.0  # at TARGET_CONNECTIONS idle connections (was 30 KB at 10 000 before issue 19)
TARGET_CONNECTIONS = 50_000
TARGET_HEALTHZ_MS = 100.0  # slowest /healthz of the connections suite's 20, with the crowd connected ("promptly")
TARGET_CROWD_P99_RATIO = 2.0  # p99 at 1 000 events/s with the crowd / the same without it
TARGET_NOTICE_RATIO = 100.0  # mean notice latency, polling / push
TARGET_LOAD_RATIO = 0.1  # Redis commands/s imposed, push / polling
TARGET_STORM_RATIO = 2.0  # reconnect storm settle time / the same clients on a fresh server
TARGET_LOAD_RATE = 5000.0  # events/s at which latency is held to a ratio to the bare Receiver
TARGET_LOAD_P99_RATIO = 5.0  # p99 pushserver / the bare Receiver's, at TARGET_LOAD_RATE
TARGET_LOAD_CLIENTS = 1_000  # subscribed clients the TARGET_LOAD_RATE target is set with
# The server's CPU per delivered update at TARGET_LOAD_RATE when issue 19 set out to halve it (4770410,
# docs/benchmarks.md "Delivery under load"). CPU time moves less than latency from machine to machine.
LOAD_CPU_BEFORE_US = 185.0

CONSUMER_NAMES = {"bare": "bare Receiver", "pushserver": "pushserver", "flower": "Flower"}


def _ratios(base: list[dict], push: list[dict]) -> list[float]:
    """pushserver / the other consumer, per run (each pair measured in the same run, on the same stream)."""
    return [
        p["events_per_s"] / b["events_per_s"] for b, p in zip(base, push) if b["events_per_s"] and p["events_per_s"]
    ]


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def per_connection_kb(run: dict[str, Any]) -> float:
    """A connections run's figure: KB per connection at its last step, after the hold when there was one."""
    return (run.get("after_hold") or run["steps"][-1])["kb_per_connection"]


def reached(connections: dict[str, Any]) -> int:
    """The idle sockets a connections suite held at its largest step in every run (its open-files limit may
    have cut the step asked for)."""
    return min(r.get("reached", connections["steps"][-1]) for r in connections["runs"])


def fd_capped(connections: dict[str, Any]) -> str:
    """ ", capped by the open-files limit N" when that limit cut the largest step, else ""."""
    capped = [r for r in connections["runs"] if r.get("capped_by_fd_limit")]
    if not capped:
        return ""
    return f": the server's open-files limit is {capped[0]['server_nofile'].split('/')[0]}"


def polling_ratios(polling: dict[str, Any]) -> tuple[Any, Any]:
    """Per run: mean notice latency polling / push, and Redis load imposed push / polling."""
    runs = polling["runs"]
    latency = spread(
        r["poll"]["mean_ms"] / r["push"]["mean_ms"] for r in runs if r["poll"]["mean_ms"] and r["push"]["mean_ms"]
    )
    # A push load at or below the baseline's noise counts as 0.
    load = spread(
        max(0.0, r["push"]["redis_imposed_per_s"]) / r["poll"]["redis_imposed_per_s"]
        for r in runs
        if r["poll"]["redis_imposed_per_s"] > 0
    )
    return latency, load


def _lost(results: list[dict]) -> str:
    lost = [r["lost"] for r in results]
    if not any(lost):
        return "0"
    pct = [r["lost_pct"] for r in results]
    return f"**{sum(1 for x in lost if x)}/{len(lost)} runs lost events**: {spread(pct).fmt(1, '%')}"


def _within(runs: list[dict]) -> str:
    """From the server's own event->emit histogram: % of emits within 2 ms and 10 ms of the event."""
    shares = [r.get("server_emit_within_ms_pct") or {} for r in runs]
    two = spread(s.get("2") for s in shares)
    ten = spread(s.get("10") for s in shares)
    if not two.values:
        return "–"
    return f"{two.fmt(1, '%')} / {ten.fmt(1, '%')}"


def _sent(runs: list[dict]) -> str:
    """The rate the latency publisher actually kept (a Celery Dispatcher tops out at a few thousand/s)."""
    return spread(r["publisher"]["events_per_s"] for r in runs if r.get("publisher")).fmt(0)


def _gc(runs: list[dict]) -> str:
    gcs = [r.get("server_gc") for r in runs if r.get("server_gc")]
    if not gcs:
        return "–"
    return (
        f"{sum(g['gen2'] for g in gcs)} in {len(gcs)} runs, "
        f"{max(g['gen2_max_ms'] for g in gcs):.0f} ms (any generation: {max(g['max_ms'] for g in gcs):.0f} ms)"
    )


def headline(results: dict[str, Any]) -> list[dict[str, str]]:
    """The figures the issues set targets for, one row each."""
    rows = []

    def row(figure: str, push: str, other: str = "", ratio: str = "", target: str = "", met: str = "") -> None:
        rows.append(
            {"figure": figure, "pushserver": push, "other": other, "ratio": ratio, "target": target, "met": met}
        )

    ingest = results.get("ingest")
    if ingest:
        for shape, sat in ingest["saturating"].items():
            push = spread(r["events_per_s"] for r in sat["pushserver"])
            for kind, target in (("bare", TARGET_INGEST_RATIO), ("flower", TARGET_FLOWER_RATIO)):
                if kind not in sat:
                    continue
                ratio = spread(_ratios(sat[kind], sat["pushserver"]))
                row(
                    f"ingest, {shape} (events/s)",
                    push.fmt(0),
                    f"{CONSUMER_NAMES[kind]} {spread(r['events_per_s'] for r in sat[kind]).fmt(0)}",
                    ratio.fmt(2, "×"),
                    f"≥ {target:g}×",
                    _met(ratio.median >= target),
                )
        for shape, b in ingest["burst"].items():
            runs = b.get("pushserver")
            if not runs:
                continue
            st = ingest.get("burst_streams", ingest["streams"])[shape]
            base = b.get("bare")
            row(
                f"events lost in bursts, {shape}: {st['events']:,} events ({st['bytes'] / 1e6:.0f} MB) "
                f"at {b['offered_per_s']:,.0f} ev/s, {len(runs)} runs",
                f"{_lost(runs)}, peak Redis backlog {spread(r['peak_backlog_mb'] for r in runs).fmt(0, ' MB')}",
                f"bare Receiver {_lost(base)}" if base else "",
                "",
                "0 lost in every run",
                _met(not any(r["lost"] for r in runs)),
            )
    latency = results.get("latency")
    if latency:
        for rate, runs in latency["runs"].items():
            base = latency["baseline"].get(rate) or []
            if float(rate) == TARGET_LOAD_RATE and base:
                # Held to a ratio to the bare Receiver measured in the same run, not to milliseconds.
                ratio = spread(p99_ratios(base, runs))
                n = latency["clients"]
                row(
                    f"latency p99 at {float(rate):,.0f} ev/s, {n:,} clients (ms): pushserver / bare ratio",
                    spread(r["p99_ms"] for r in runs).fmt(2),
                    f"bare Receiver {spread(r['p99_ms'] for r in base).fmt(2)}",
                    ratio.fmt(1, "×"),
                    f"≤ {TARGET_LOAD_P99_RATIO:g}× at {TARGET_LOAD_CLIENTS:,} clients",
                    _met(bool(ratio.values) and ratio.median <= TARGET_LOAD_P99_RATIO)
                    + ("" if n >= TARGET_LOAD_CLIENTS else f" (at {n:,})"),
                )
                cpu = spread(r.get("server_cpu_us_per_update") for r in runs)
                if cpu.values:
                    # Beside the bare Receiver's own CPU per event at the same rate: what Celery alone costs.
                    bare_cpu = spread(r.get("cpu_us_per_event") for r in base)
                    row(
                        f"server CPU per update at {float(rate):,.0f} ev/s (µs): pushserver / bare Receiver per event",
                        cpu.fmt(0),
                        f"bare Receiver {bare_cpu.fmt(0)}" if bare_cpu.values else "",
                        spread(cpu_ratios(base, runs)).fmt(2, "×"),
                        f"≤ {LOAD_CPU_BEFORE_US / 2:g} µs (half of {LOAD_CPU_BEFORE_US:g})",
                        _met(cpu.median <= LOAD_CPU_BEFORE_US / 2),
                    )
            is_target = float(rate) == TARGET_RATE
            for label, limit in (("p50", TARGET_P50_MS), ("p99", TARGET_P99_MS)):
                if label == "p99" and float(rate) == TARGET_LOAD_RATE and base:
                    continue  # the ratio row above
                fig = spread(r[f"{label}_ms"] for r in runs)
                row(
                    f"latency {label} at {float(rate):,.0f} ev/s (ms)",
                    fig.fmt(2),
                    f"bare Receiver {spread(r[f'{label}_ms'] for r in base).fmt(2)}" if base else "",
                    "",
                    f"≤ {limit:g} ms" if is_target else "",
                    _met(fig.median <= limit) if is_target else "",
                )
    connections = results.get("connections")
    if connections:
        runs = connections["runs"]
        kb = spread(per_connection_kb(r) for r in runs)
        n = reached(connections)
        at = "" if n >= TARGET_CONNECTIONS else f" (at {n:,}{fd_capped(connections)})"
        row(
            f"RSS per idle connection at {n:,} (KB)",
            kb.fmt(1),
            "",
            "",
            f"≤ {TARGET_KB_PER_CONNECTION:g} KB at {TARGET_CONNECTIONS:,}",
            _met(kb.median <= TARGET_KB_PER_CONNECTION) + at,
        )
        with_crowd = [r["healthz_with"] for r in runs if r.get("healthz_with")]
        if with_crowd:
            worst = spread(h["max_ms"] for h in with_crowd)
            row(
                f"/healthz with {n:,} idle sockets (ms): median; slowest of {connections['healthz_requests']}",
                f"{spread(h['median_ms'] for h in with_crowd).fmt(2)}; {worst.fmt(1)}",
                f"no client {spread(r['healthz_without']['median_ms'] for r in runs).fmt(2)}; "
                f"{spread(r['healthz_without']['max_ms'] for r in runs).fmt(1)}",
                "",
                f"slowest ≤ {TARGET_HEALTHZ_MS:g} ms",
                _met(worst.median <= TARGET_HEALTHZ_MS) + at,
            )
        probe = connections.get("probe") or {}
        figure = (
            f"latency p99 at {probe.get('rate', TARGET_RATE):,.0f} ev/s, {probe.get('clients') or TARGET_LOAD_CLIENTS:,} "
            f"clients, with {n:,} idle sockets (ms)"
        )
        target = f"≤ {TARGET_CROWD_P99_RATIO:g}× without them"
        measured = [r for r in runs if r.get("p99_ratio") is not None]
        if measured:
            ratio = spread(r["p99_ratio"] for r in measured)
            row(
                figure,
                spread(r["latency_with"]["p99_ms"] for r in measured).fmt(2),
                f"without them {spread(r['latency_without']['p99_ms'] for r in measured).fmt(2)}",
                ratio.fmt(2, "×"),
                target,
                _met(ratio.median <= TARGET_CROWD_P99_RATIO) + at,
            )
        elif with_crowd:
            row(figure, "not measured (--quick)", "", "", target, "–")
    polling = results.get("polling")
    if polling:
        runs = polling["runs"]
        lat, load = polling_ratios(polling)
        polls = f"polling every {polling['interval_s']:g} s"
        row(
            f"mean notice latency, {polling['clients']:,} clients (ms)",
            spread(r["push"]["mean_ms"] for r in runs).fmt(1),
            f"{polls} {spread(r['poll']['mean_ms'] for r in runs).fmt(1)}",
            lat.fmt(0, "× lower"),
            f"≥ {TARGET_NOTICE_RATIO:g}× lower",
            _met(lat.median >= TARGET_NOTICE_RATIO),
        )
        row(
            "Redis commands/s imposed",
            spread(r["push"]["redis_imposed_per_s"] for r in runs).fmt(0),
            f"{polls} {spread(r['poll']['redis_imposed_per_s'] for r in runs).fmt(0)}",
            load.fmt(3),
            f"≤ {TARGET_LOAD_RATIO:g}",
            _met(load.median <= TARGET_LOAD_RATIO),
        )
    storm = results.get("storm")
    if storm:
        runs = storm["runs"]
        ratio = spread(r["ratio"] for r in runs)
        bad = sum(storm_faults(r) for r in runs)
        row(
            f"reconnect storm, {storm['clients']:,} clients: settle (s)",
            spread(r["b"]["settle_s"] for r in runs).fmt(2),
            f"fresh server {spread(r['a']['settle_s'] for r in runs).fmt(2)}",
            ratio.fmt(2, "×"),
            f"≤ {TARGET_STORM_RATIO:g}×, 0 failed/refused/wrong",
            _met(ratio.median <= TARGET_STORM_RATIO and bad == 0) + (f" ({bad:.0f} faults)" if bad else ""),
        )
    return rows


def p99_ratios(base: list[dict[str, Any]], push: list[dict[str, Any]]) -> list[float]:
    """Latency p99 pushserver / bare Receiver per run (the two measured in the same run, at the same rate)."""
    return [p["p99_ms"] / b["p99_ms"] for b, p in zip(base, push) if b["p99_ms"] and p["p99_ms"] is not None]


def cpu_ratios(base: list[dict[str, Any]], push: list[dict[str, Any]]) -> list[float]:
    """Each run's server CPU per update over the bare Receiver's CPU per event (runs lacking either left out)."""
    return [
        p["server_cpu_us_per_update"] / b["cpu_us_per_event"]
        for b, p in zip(base, push)
        if b.get("cpu_us_per_event") and p.get("server_cpu_us_per_update")
    ]


def storm_faults(run: dict[str, Any]) -> float:
    """Clients of one storm run that failed, were refused (by their ack or the server's count) or got a wrong
    snapshot, in either phase."""
    return sum(
        run[p]["failed"] + run[p]["refused"] + run[p]["server_refused"] + run[f"{p}_wrong_count"] for p in ("a", "b")
    )


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out: list[str] = []
    w = out.append
    w(f"### {'Quick' if meta['quick'] else 'Full'} run — {meta['date']}")
    w("")
    w(
        f"Command: `{meta['command']}` ({meta['runs']} runs per figure; figures are "
        f"**median (min–max)** over the runs; total time {meta['seconds'] / 60:.1f} min)."
    )
    w("")
    for rerun in meta.get("reruns", []):
        w(
            f"Re-measured on {rerun['date']}: **{', '.join(rerun['suites'])}**, with `{rerun['command']}` "
            f"({rerun['runs']} runs; pushserver from the {rerun['server_code']}); the rest is from the run above."
        )
        w("")
    m = meta["machine"]
    w(
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}. "
        f"Everything on loopback: a private `redis-server` started for the run "
        f"(`client-output-buffer-limit {meta['redis_pubsub_limit']}`), the consumers, the publishers and "
        f"the clients share these {m['cores']} cores."
    )
    w("")
    w(f"Code under test: pushserver from the {meta['server_code']}.")
    w("")
    w("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    w("")
    w("#### Headline")
    w("")
    w("| figure | pushserver | compared with | pushserver / that | target | met |")
    w("|---|---|---|---|---|---|")
    for row in headline(results):
        w(
            f"| {row['figure']} | {row['pushserver']} | {row['other']} | {row['ratio']} | {row['target']} "
            f"| {row['met']} |"
        )
    w("")
    for suite, section in (
        ("ingest", ingest_section),
        ("latency", latency_section),
        ("connections", connections_section),
        ("polling", polling_section),
        ("storm", storm_section),
    ):
        if results.get(suite):
            w(section(results[suite]))
    return "\n".join(out)


def ingest_section(ingest: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    w("#### Ingest")
    w("")
    w(
        "| stream | events in messages | consumer | events/s | CPU % of one core | lost | peak Redis backlog "
        "| other processes' load (cores) |"
    )
    w("|---|---|---|---|---|---|---|---|")

    def row(run_kind: str, messages: str, kind: str, runs: list[dict[str, Any]]) -> None:
        w(
            f"| {run_kind} | {messages} | {CONSUMER_NAMES.get(kind, kind)} | "
            f"{spread(r['events_per_s'] for r in runs).fmt(0)} | "
            f"{spread(r['cpu_pct'] for r in runs).fmt(0)} | {_lost(runs)} | "
            f"{spread(r['peak_backlog_mb'] for r in runs).fmt(1, ' MB')} | "
            f"{spread(r.get('foreign_cores') for r in runs).fmt(2)} |"
        )

    for shape, sat in ingest["saturating"].items():
        st = ingest["streams"][shape]
        for kind, runs in sat.items():
            row(
                f"{shape}, saturating",
                f"{st['events']:,} in {st['messages']:,} ({st['mean_message_bytes']:,} B each)",
                kind,
                runs,
            )
    for shape, b in ingest["burst"].items():
        st = ingest.get("burst_streams", ingest["streams"])[shape]
        for kind, runs in b.items():
            if kind != "offered_per_s":
                row(
                    f"{shape}, burst at {b['offered_per_s']:,.0f} ev/s",
                    f"{st['events']:,} in {st['messages']:,}",
                    kind,
                    runs,
                )
    w("")
    errors = sorted(
        {
            f"{kind}: {r['error']}"
            for mode in ("saturating", "burst")
            for shape in ingest[mode].values()
            for kind, runs in shape.items()
            if kind != "offered_per_s"
            for r in runs
            if r.get("error")
        }
    )
    if errors:
        w("Consumer errors seen: " + "; ".join(f"`{e}`" for e in errors) + ".")
        w("")
    return "\n".join(out)


def latency_section(latency: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    w("#### Latency (event timestamp → client handler)")
    w("")
    setup = latency["setup"]
    if latency.get("prefill_tasks"):
        w(f"The server's store was first filled with {latency['prefill_tasks']:,} finished tasks.")
        w("")
    w(
        f"{latency['clients']:,} python-socketio clients in one process, one watcher per task; "
        f"{latency['duration_s']:g} s per rate per run; connect + subscribe took "
        f"{spread(s['connect_seconds'] for s in setup).fmt(1, ' s')}; server RSS after subscribe "
        f"{spread(s['server_rss_mb'] for s in setup).fmt(0, ' MB')}."
    )
    w("")
    w(
        "| rate (events/s) | sent at (events/s) | path | p50 ms | p95 ms | p99 ms | max ms | "
        "updates received / sent | "
        "coalesced | client CPU % | server CPU % | server: emitted within 2 / 10 ms of the event | "
        "server full GC passes, longest | other processes' load (cores) | CPU µs per event (bare) or update |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate, runs in latency["runs"].items():
        base = latency["baseline"].get(rate) or []
        if base:
            w(
                f"| {float(rate):,.0f} | {_sent(base)} | bare Celery Receiver (baseline) | "
                + " | ".join(spread(r[k] for r in base).fmt(2) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
                + f" | {sum(r['received'] for r in base):,} / {sum(r['events'] for r in base):,} | – | "
                f"{spread(r['cpu_pct'] for r in base).fmt(0)} (receiver) | – | – | – | "
                f"{spread(r.get('foreign_cores') for r in base).fmt(2)} | "
                f"{spread(r.get('cpu_us_per_event') for r in base).fmt(0)} |"
            )
        w(
            f"| {float(rate):,.0f} | {_sent(runs)} | pushserver → Socket.IO client | "
            + " | ".join(spread(r[k] for r in runs).fmt(2) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
            + f" | {sum(r['received'] for r in runs):,} / {sum(r['expected_updates'] for r in runs):,} | "
            f"{sum(r['coalesced'] for r in runs)} | {spread(r['cpu_pct'] for r in runs).fmt(0)} | "
            f"{spread(r['server_cpu_pct'] for r in runs).fmt(0)} | {_within(runs)} | {_gc(runs)} | "
            f"{spread(r.get('foreign_cores') for r in runs).fmt(2)} | "
            f"{spread(r.get('server_cpu_us_per_update') for r in runs).fmt(0)} (server) |"
        )
    w("")
    for rate, runs in latency["runs"].items():
        cells = [
            f"{r['p99_ms']:.0f} ms / {(r.get('server_gc') or {}).get('gen2_max_ms', 0):.0f} ms / "
            f"{r.get('foreign_cores', 0):.2f}"
            for r in runs
        ]
        w(
            f"Each run at {float(rate):,.0f} events/s — p99 / the server's longest full GC pass (0: none) / "
            f"other processes' load in cores: " + "; ".join(cells) + "."
        )
        w("")
    return "\n".join(out)


def connections_section(conn: dict[str, Any]) -> str:
    runs = conn["runs"]
    hold = conn.get("hold_s") or 0
    n = reached(conn)
    lines = [
        "#### Idle connections (server RSS)",
        "",
        f"One fresh server per run; raw Engine.IO websocket clients in {conn['procs']} processes per step"
        + (
            ", each process connecting from a loopback address of its own (127.0.0.2, .3, ...)"
            if "room" in runs[0]
            else ""
        )
        + ", each client connected and subscribed to one task of its own and answering the server's pings; RSS read "
        f"{conn['settle_s']:g} s after each step"
        + (
            f", and again after holding the last step {hold:g} s (a ping round): that is the figure per connection"
            if hold
            else ""
        )
        + ". Server RSS is its whole process tree; RSS added is counted from the base row"
        + (" (with the latency probe's clients, connected first)" if (conn.get("probe") or {}).get("clients") else "")
        + ".",
        "",
    ]
    capped = [r for r in runs if r.get("capped_by_fd_limit")]
    if capped:
        r = capped[0]
        lines += [
            f"**{n:,} idle sockets, not the {r['requested']:,} asked for**: the server's open-files limit "
            f"(RLIMIT_NOFILE, soft/hard {r['server_nofile']} once it has raised its soft limit to the hard one; "
            f"the harness's `resource.getrlimit` gave {r['harness_nofile'][0]}/{r['harness_nofile'][1]}) caps "
            f"the sockets one process can hold: the largest step was cut to the limit minus the "
            f"{r['server_fds_at_start']} descriptors the server had open at start, the probe's "
            f"{conn.get('probe', {}).get('clients', 0):,} clients and a margin of {conn['fd_margin']}.",
            "",
        ]
    lines += [
        "| idle subscribed sockets | server RSS | RSS added | per connection | marginal per connection | "
        "connected on server | failed to connect | client disconnects |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| 0 | {spread(r['rss_idle_mb'] for r in runs).fmt(1, ' MB')} | – | – | – | 0 | – | – |",
    ]
    probe_n = (conn.get("probe") or {}).get("clients") or 0
    if probe_n and all("rss_base_mb" in r for r in runs):
        # The idle sockets' memory is counted from here (the probe's clients and tasks in the base).
        lines.append(
            f"| 0, with the probe's {probe_n:,} clients (the base) | "
            f"{spread(r['rss_base_mb'] for r in runs).fmt(1, ' MB')} | – | – | – | {probe_n:,} | – | – |"
        )
    for i in range(min(len(r["steps"]) for r in runs)):
        rows = [r["steps"][i] for r in runs]
        marginal = spread(row.get("marginal_kb_per_connection") for row in rows)
        lines.append(
            f"| {rows[0]['clients']:,} | {spread(x['rss_mb'] for x in rows).fmt(1, ' MB')} | "
            f"{spread(x['delta_mb'] for x in rows).fmt(1, ' MB')} | "
            f"{spread(x['kb_per_connection'] for x in rows).fmt(1, ' KB')} | "
            f"{marginal.fmt(1, ' KB') if marginal.values else '–'} | "
            f"{spread(x['server_clients_metric'] for x in rows).fmt(0)} | "
            f"{sum(x['failures'] for x in rows)} | – |"
        )
    held = [r["after_hold"] for r in runs if r.get("after_hold")]
    if held:
        lines.append(
            f"| {n:,}, after {hold:g} s | {spread(h['rss_mb'] for h in held).fmt(1, ' MB')} | "
            f"{spread(h['delta_mb'] for h in held).fmt(1, ' MB')} | "
            f"{spread(h['kb_per_connection'] for h in held).fmt(1, ' KB')} | – | "
            f"{spread(h['server_clients_metric'] for h in held).fmt(0)} | – | "
            f"{sum(r['client_disconnects'] for r in runs)} |"
        )
    lines.append("")
    if any(r.get("healthz_with") for r in runs):
        lines += [
            f"/healthz, {conn['healthz_requests']} requests each on a new connection, 50 ms apart (ms):",
            "",
            "| server holding | median | slowest |",
            "|---|---:|---:|",
        ]
        for key, label in (("healthz_without", "no client"), ("healthz_with", f"{n:,} idle sockets")):
            got = [r[key] for r in runs if r.get(key)]
            lines.append(
                f"| {label} | {spread(h['median_ms'] for h in got).fmt(2)} | {spread(h['max_ms'] for h in got).fmt(1)} |"
            )
        lines.append("")
    measured = [r for r in runs if r.get("p99_ratio") is not None]
    if measured:
        probe = conn["probe"]
        lines += [
            f"Delivery with and without the crowd: {probe['clients']:,} python-socketio clients (as the latency "
            f"suite's) subscribe before the crowd; events at {probe['rate']:,.0f}/s for {probe['duration']:g} s "
            "(after a warm-up) without it, then, once the crowd has connected and been held, again with it (the "
            "same server and clients); p99 with / without per run (ms):",
            "",
            "| idle sockets | p50 | p99 | max | missing updates | server CPU | clients' CPU | server's longest GC pass |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (("latency_with", f"{n:,}"), ("latency_without", "none")):
            got = [r[key] for r in measured]
            lines.append(
                f"| {label} | {spread(x['p50_ms'] for x in got).fmt(2)} | {spread(x['p99_ms'] for x in got).fmt(2)} | "
                f"{spread(x['max_ms'] for x in got).fmt(1)} | {sum(x['missing_updates'] for x in got)} | "
                f"{spread(x['server_cpu_pct'] for x in got).fmt(0, '%')} | {spread(x['cpu_pct'] for x in got).fmt(0, '%')} | "
                f"{spread((x.get('server_gc') or {}).get('max_ms') for x in got).fmt(1, ' ms')} |"
            )
        lines += [
            "",
            "p99 with / without, per run: " + ", ".join(f"{r['p99_ratio']:.2f}×" for r in measured) + ".",
            "",
        ]
    elif any(r.get("healthz_with") for r in runs):
        lines += ["Delivery with and without the crowd: not measured in a quick run.", ""]
    return "\n".join(lines)


def polling_section(polling: dict[str, Any]) -> str:
    runs = polling["runs"]

    def col(mode: str, key: str) -> Any:
        return spread(r[mode].get(key) for r in runs)

    n, every = polling["clients"], polling["interval_s"]
    lines = [
        "#### Push vs polling",
        "",
        f"One fresh server per run; {n:,} clients in {polling['procs']} processes; each phase completes "
        f"every client's current task once per round, {polling['rounds']} rounds of {polling['round_s']:g} s "
        "(a result-backend record, then a `task-succeeded` event; no worker). Notice = the client knows the "
        "task finished: a `task:update` received, or the first poll answering SUCCESS. Redis load imposed = "
        "the phase's commands minus those of the phase with no client (the same completions), "
        "per second.",
        "",
        "| clients | HTTP req/s | Redis cmd/s (all) | Redis cmd/s imposed | notice mean | p50 | p99 | max | "
        "not noticed | server CPU % | clients' CPU % | other processes' load (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "none": "none (completions only)",
        "push": f"{n:,} subscribed",
        "poll": f"{n:,} polling every {every:g} s",
    }
    for mode in ("none", "push", "poll"):
        imposed = col(mode, "redis_imposed_per_s").fmt(0) if mode != "none" else "(baseline)"
        if mode == "none":
            lat = "– | – | – | – | –"
            client_cpu = "–"
        else:
            lat = " | ".join(col(mode, k).fmt(1, " ms") for k in ("mean_ms", "p50_ms", "p99_ms", "max_ms"))
            lat += f" | {sum(r[mode]['missing'] for r in runs)}"
            client_cpu = spread(sum(r[mode]["client_cpu_pct"]) for r in runs).fmt(0)
        lines.append(
            f"| {labels[mode]} | {col(mode, 'http_requests_per_s').fmt(0)} | "
            f"{col(mode, 'redis_commands_per_s').fmt(0)} | {imposed} | {lat} | "
            f"{col(mode, 'server_cpu_pct').fmt(0)} | {client_cpu} | {col(mode, 'foreign_cores').fmt(2)} |"
        )
    lat, load = polling_ratios(polling)
    lines += [
        "",
        f"Per run: mean notice latency polling / push {lat.fmt(0, '×')}; Redis load imposed "
        f"push / polling {load.fmt(3)}.",
        "",
    ]
    return "\n".join(lines)


def storm_section(storm: dict[str, Any]) -> str:
    """The reconnect storm's table: settle times, faults, the server's cost and the backend round trips."""
    runs = storm["runs"]
    out = [
        f"#### Reconnect storm ({storm['clients']:,} clients, {storm['procs']} client processes)",
        "",
        "Phase A: every client connects and subscribes, with its own token, to a freshly started server "
        "(nothing recorded for the tasks: every ack PENDING). Phase B: the server restarted while half the "
        "tasks finished (SUCCESS and a result in the backend) and half started (STARTED or PROGRESS records); "
        "every client reconnects and subscribes again at one instant. Settle: from that instant to the last ack.",
        "",
        "| | phase A (fresh server) | phase B (storm) |",
        "|---|---|---|",
    ]

    def line(label: str, key: str, digits: int, unit: str = "") -> None:
        a = spread(r["a"][key] for r in runs).fmt(digits, unit)
        b = spread(r["b"][key] for r in runs).fmt(digits, unit)
        out.append(f"| {label} | {a} | {b} |")

    line("settle time (s)", "settle_s", 2)
    out.append(f"| ratio B/A | | {spread(r['ratio'] for r in runs).fmt(2, '×')} |")
    for label, key in (
        ("clients failed", "failed"),
        ("acks refused", "refused"),
        ("refusals counted", "server_refused"),
    ):
        out.append(f"| {label} | {sum(r['a'][key] for r in runs):.0f} | {sum(r['b'][key] for r in runs):.0f} |")
    out.append(
        f"| wrong snapshots | {sum(r['a_wrong_count'] for r in runs)} | {sum(r['b_wrong_count'] for r in runs)} |"
    )
    if all("listen_overflows" in r["a"] for r in runs):
        line("handshakes dropped from a full listen queue (machine-wide)", "listen_overflows", 0)
    line("server peak RSS, sampled (MB)", "server_peak_rss_mb", 0)
    line("server CPU (s)", "server_cpu_s", 2)
    line("server CPU (% of a core)", "server_cpu_pct", 0, "%")
    out.append(
        "| backend round trips, server's count (`snapshot` MGETs) | "
        f"{spread(r['a']['backend_reads']['snapshot'] for r in runs).fmt(0)} | "
        f"{spread(r['b']['backend_reads']['snapshot'] for r in runs).fmt(0)} |"
    )
    out.append(
        "| Redis `GET` / `MGET` calls (INFO commandstats) | | "
        f"{spread(r['b']['redis_calls']['get'] for r in runs).fmt(0)} / "
        f"{spread(r['b']['redis_calls']['mget'] for r in runs).fmt(0)} |"
    )
    out.append("")
    return "\n".join(out)


def write_doc(path: Path, mode: str, block: str) -> None:
    begin, end = f"<!-- bench:{mode}:begin -->", f"<!-- bench:{mode}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{begin}\n<!-- generated by bench/run.py; edits inside this block are overwritten -->\n{block}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def stdout_summary(results: dict[str, Any]) -> str:
    """The headline as a plain table, and anything that makes a figure doubtful."""
    rows = headline(results)
    cols = ["figure", "pushserver", "other", "ratio", "target", "met"]
    names = {"other": "compared with", "ratio": "push/that"}
    table = [[names.get(c, c) for c in cols]] + [[r[c].replace("**", "") for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    latency = results.get("latency")
    if latency:
        for rate, runs in latency["runs"].items():
            lines.append(
                f"clients at {float(rate):,.0f} ev/s: CPU {spread(r['cpu_pct'] for r in runs).fmt(0, '%')}, "
                f"missing updates {sum(r['missing_updates'] for r in runs)}, "
                f"coalesced {sum(r['coalesced'] for r in runs)}; publisher sent {_sent(runs)} ev/s"
            )
    ingest = results.get("ingest")
    if ingest:
        for mode in ("saturating", "burst"):
            for shape, per in ingest[mode].items():
                for kind in ("bare", "pushserver"):
                    lost = [r["lost"] for r in per.get(kind, [])]
                    if any(lost):
                        lines.append(f"LOST EVENTS: {kind}, {shape} {mode}: {lost} of {per[kind][0]['sent']:,}")
    connections = results.get("connections")
    if connections:
        failed = sum(row["failures"] for r in connections["runs"] for row in r["steps"])
        dropped = sum(r["client_disconnects"] for r in connections["runs"])
        if failed or dropped:
            lines.append(f"CONNECTIONS: {failed} failed to connect, {dropped} dropped")
        capped = [r for r in connections["runs"] if r.get("capped_by_fd_limit")]
        if capped:
            lines.append(
                f"CONNECTIONS: {reached(connections):,} idle sockets, not {capped[0]['requested']:,}: the server's "
                f"open-files limit is {capped[0]['server_nofile']} (soft/hard)"
            )
        missing = sum(
            r[k]["missing_updates"]
            for r in connections["runs"]
            if r.get("p99_ratio") is not None
            for k in ("latency_with", "latency_without")
        )
        if missing:
            lines.append(f"CONNECTIONS: {missing} updates missing in the latency probe")
    storm = results.get("storm")
    if storm:
        bad = sum(storm_faults(r) for r in storm["runs"])
        if bad:
            lines.append(f"STORM: {bad:.0f} clients failed, refused or with a wrong snapshot")
    polling = results.get("polling")
    if polling:
        missed = sum(r[m]["missing"] or 0 for r in polling["runs"] for m in ("push", "poll"))
        if missed:
            lines.append(f"POLLING: {missed} completions never noticed")
    return "\n".join(lines)
