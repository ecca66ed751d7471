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

from common import spread

TARGET_INGEST_RATIO = 0.6
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
TARGET_RATE = 1000.0


def _ratios(bare: list[dict], push: list[dict]) -> list[float]:
    """pushserver / bare per run (each pair measured in the same run, on the same stream)."""
    return [p["events_per_s"] / b["events_per_s"] for b, p in zip(bare, push)
            if b["events_per_s"] and p["events_per_s"]]


def _lost(results: list[dict]) -> str:
    lost = [r["lost"] for r in results]
    if not any(lost):
        return "0"
    pct = [r["lost_pct"] for r in results]
    return (f"**{sum(1 for x in lost if x)}/{len(lost)} runs lost events**: "
            f"{spread(pct).fmt(1, '%')}")


def _within(runs: list[dict]) -> str:
    """From the server's own event->emit histogram: % of emits within 2 ms and 10 ms of the event."""
    shares = [r.get("server_emit_within_ms_pct") or {} for r in runs]
    two = spread(s.get("2") for s in shares)
    ten = spread(s.get("10") for s in shares)
    if not two.values:
        return "–"
    return f"{two.fmt(1, '%')} / {ten.fmt(1, '%')}"


def _gc(runs: list[dict]) -> str:
    gcs = [r.get("server_gc") for r in runs if r.get("server_gc")]
    if not gcs:
        return "–"
    return (f"{sum(g['gen2'] for g in gcs)} in {len(gcs)} runs, "
            f"{max(g['gen2_max_ms'] for g in gcs):.0f} ms (any generation: {max(g['max_ms'] for g in gcs):.0f} ms)")


def headline(results: dict[str, Any]) -> list[dict[str, str]]:
    """The figures the issues set targets for, one row each."""
    rows = []
    ingest = results.get("ingest")
    if ingest:
        for shape, sat in ingest["saturating"].items():
            ratio = spread(_ratios(sat["bare"], sat["pushserver"]))
            rows.append({
                "figure": f"ingest, {shape} (events/s)",
                "bare": spread(r["events_per_s"] for r in sat["bare"]).fmt(0),
                "pushserver": spread(r["events_per_s"] for r in sat["pushserver"]).fmt(0),
                "ratio": ratio.fmt(2) + "×",
                "target": f"≥ {TARGET_INGEST_RATIO}×",
                "met": "yes" if ratio.median >= TARGET_INGEST_RATIO else "**no**",
            })
    latency = results.get("latency")
    if latency:
        for rate, runs in latency["runs"].items():
            base = latency["baseline"].get(rate) or []
            p50, p99 = spread(r["p50_ms"] for r in runs), spread(r["p99_ms"] for r in runs)
            is_target = float(rate) == TARGET_RATE
            for label, fig, bfig, limit in (("p50", p50, spread(r["p50_ms"] for r in base), TARGET_P50_MS),
                                            ("p99", p99, spread(r["p99_ms"] for r in base), TARGET_P99_MS)):
                rows.append({
                    "figure": f"latency {label} at {float(rate):,.0f} ev/s (ms)",
                    "bare": bfig.fmt(2) if base else "–",
                    "pushserver": fig.fmt(2),
                    "ratio": "",
                    "target": f"≤ {limit:g} ms" if is_target else "",
                    "met": ("yes" if fig.median <= limit else "**no**") if is_target else "",
                })
    return rows


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out: list[str] = []
    w = out.append
    w(f"### {'Quick' if meta['quick'] else 'Full'} run — {meta['date']}")
    w("")
    w(f"Command: `{meta['command']}` ({meta['runs']} runs per figure; figures are "
      f"**median (min–max)** over the runs; total time {meta['seconds'] / 60:.1f} min).")
    w("")
    for rerun in meta.get("reruns", []):
        w(f"Re-measured on {rerun['date']}: **{', '.join(rerun['suites'])}**, with `{rerun['command']}` "
          f"({rerun['runs']} runs; pushserver from the {rerun['server_code']}); the rest is from the run above.")
        w("")
    m = meta["machine"]
    w(f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}. "
      f"Everything on loopback: a private `redis-server` started for the run "
      f"(`client-output-buffer-limit {meta['redis_pubsub_limit']}`), the consumers, the publishers and "
      f"the clients share these {m['cores']} cores.")
    w("")
    w(f"Code under test: pushserver from the {meta['server_code']}.")
    w("")
    w("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    w("")
    w("#### Headline")
    w("")
    w("| figure | bare Celery Receiver | pushserver | pushserver / bare | target | met |")
    w("|---|---|---|---|---|---|")
    for row in headline(results):
        w(f"| {row['figure']} | {row['bare']} | {row['pushserver']} | {row['ratio']} | {row['target']} | {row['met']} |")
    w("")
    ingest = results.get("ingest")
    if ingest:
        w("#### Ingest")
        w("")
        w("| stream | events in messages | consumer | events/s | CPU % of one core | lost | peak Redis backlog "
          "| other processes' load (cores) |")
        w("|---|---|---|---|---|---|---|---|")
        for shape, sat in ingest["saturating"].items():
            st = ingest["streams"][shape]
            for kind, runs in sat.items():
                w(f"| {shape}, saturating | {st['events']:,} in {st['messages']:,} "
                  f"({st['mean_message_bytes']:,} B each) | {kind} | "
                  f"{spread(r['events_per_s'] for r in runs).fmt(0)} | "
                  f"{spread(r['cpu_pct'] for r in runs).fmt(0)} | {_lost(runs)} | "
                  f"{spread(r['peak_backlog_mb'] for r in runs).fmt(1, ' MB')} | "
                  f"{spread(r.get('foreign_cores') for r in runs).fmt(2)} |")
        for shape, b in ingest["burst"].items():
            st = ingest["streams"][shape]
            for kind in ("bare", "pushserver"):
                runs = b[kind]
                w(f"| {shape}, burst at {b['offered_per_s']:,.0f} ev/s | {st['events']:,} in "
                  f"{st['messages']:,} | {kind} | {spread(r['events_per_s'] for r in runs).fmt(0)} | "
                  f"{spread(r['cpu_pct'] for r in runs).fmt(0)} | {_lost(runs)} | "
                  f"{spread(r['peak_backlog_mb'] for r in runs).fmt(1, ' MB')} | "
                  f"{spread(r.get('foreign_cores') for r in runs).fmt(2)} |")
        w("")
        errors = sorted({f"{kind}: {r['error']}" for mode in ("saturating", "burst")
                         for shape in ingest[mode].values() for kind in ("bare", "pushserver")
                         for r in shape.get(kind, []) if r.get("error")})
        if errors:
            w("Consumer errors seen: " + "; ".join(f"`{e}`" for e in errors) + ".")
            w("")
    latency = results.get("latency")
    if latency:
        w("#### Latency (event timestamp → client handler)")
        w("")
        setup = latency["setup"]
        if latency.get("prefill_tasks"):
            w(f"The server's store was first filled with {latency['prefill_tasks']:,} finished tasks.")
            w("")
        w(f"{latency['clients']:,} python-socketio clients in one process, one watcher per task; "
          f"{latency['duration_s']:g} s per rate per run; connect + subscribe took "
          f"{spread(s['connect_seconds'] for s in setup).fmt(1, ' s')}; server RSS after subscribe "
          f"{spread(s['server_rss_mb'] for s in setup).fmt(0, ' MB')}.")
        w("")
        w("| rate (events/s) | path | p50 ms | p95 ms | p99 ms | max ms | updates received / sent | "
          "coalesced | client CPU % | server CPU % | server: emitted within 2 / 10 ms of the event | "
          "server full GC passes, longest | other processes' load (cores) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rate, runs in latency["runs"].items():
            base = latency["baseline"].get(rate) or []
            if base:
                w(f"| {float(rate):,.0f} | bare Celery Receiver (baseline) | "
                  + " | ".join(spread(r[k] for r in base).fmt(2) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
                  + f" | {sum(r['received'] for r in base):,} / {sum(r['events'] for r in base):,} | – | "
                  f"{spread(r['cpu_pct'] for r in base).fmt(0)} (receiver) | – | – | – | "
                  f"{spread(r.get('foreign_cores') for r in base).fmt(2)} |")
            w(f"| {float(rate):,.0f} | pushserver → Socket.IO client | "
              + " | ".join(spread(r[k] for r in runs).fmt(2) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
              + f" | {sum(r['received'] for r in runs):,} / {sum(r['expected_updates'] for r in runs):,} | "
              f"{sum(r['coalesced'] for r in runs)} | {spread(r['cpu_pct'] for r in runs).fmt(0)} | "
              f"{spread(r['server_cpu_pct'] for r in runs).fmt(0)} | {_within(runs)} | {_gc(runs)} | "
              f"{spread(r.get('foreign_cores') for r in runs).fmt(2)} |")
        w("")
        for rate, runs in latency["runs"].items():
            cells = [f"{r['p99_ms']:.0f} ms / {(r.get('server_gc') or {}).get('gen2_max_ms', 0):.0f} ms / "
                     f"{r.get('foreign_cores', 0):.2f}" for r in runs]
            w(f"Each run at {float(rate):,.0f} events/s — p99 / the server's longest full GC pass (0: none) / "
              f"other processes' load in cores: " + "; ".join(cells) + ".")
            w("")
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
    rows = headline(results)
    cols = ["figure", "bare", "pushserver", "ratio", "target", "met"]
    names = {"bare": "bare Receiver", "ratio": "push/bare"}
    table = [[names.get(c, c) for c in cols]] + [[r[c].replace("**", "") for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in table]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    latency = results.get("latency")
    if latency:
        for rate, runs in latency["runs"].items():
            lines.append(f"clients at {float(rate):,.0f} ev/s: CPU {spread(r['cpu_pct'] for r in runs).fmt(0, '%')}, "
                         f"missing updates {sum(r['missing_updates'] for r in runs)}, "
                         f"coalesced {sum(r['coalesced'] for r in runs)}")
    ingest = results.get("ingest")
    if ingest:
        for mode in ("saturating", "burst"):
            for shape, per in ingest[mode].items():
                for kind in ("bare", "pushserver"):
                    lost = [r["lost"] for r in per.get(kind, [])]
                    if any(lost):
                        lines.append(f"LOST EVENTS: {kind}, {shape} {mode}: {lost} of {per[kind][0]['sent']:,}")
    return "\n".join(lines)
