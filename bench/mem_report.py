"""What a server's connections hold, from two tracemalloc snapshots (bench/mem_probe.py, probe ``tracemalloc``).

    .venv/bin/python bench/mem_report.py BEFORE.pickle AFTER.pickle N [--top 40]

N is the number of connections opened between the two snapshots. Each
allocation is charged to the innermost frame outside the standard library
(an asyncio Future made by engineio's code counts as engineio's); prints the
bytes per connection by package, then by source line.
"""

from __future__ import annotations

import argparse
import collections
import tracemalloc

STDLIB = "/lib/python3."


def owner(traceback: tracemalloc.Traceback) -> str:
    for frame in reversed(list(traceback)):
        name = frame.filename
        if STDLIB in name and "site-packages" not in name:
            continue
        if "site-packages/" in name:
            name = name.split("site-packages/")[-1]
        elif "/pushserver/" in name:
            name = "pushserver/" + name.split("/pushserver/")[-1]
        return f"{name}:{frame.lineno}"
    return "stdlib"


def totals(snapshot: tracemalloc.Snapshot) -> tuple[collections.Counter, collections.Counter]:
    size: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for trace in snapshot.traces:
        key = owner(trace.traceback)
        size[key] += trace.size
        count[key] += 1
    return size, count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("n", type=int)
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    size0, count0 = totals(tracemalloc.Snapshot.load(args.before))
    size1, count1 = totals(tracemalloc.Snapshot.load(args.after))
    diff = {k: size1[k] - size0.get(k, 0) for k in size1}
    n = args.n
    print(f"Python allocations: {sum(diff.values()) / n / 1024:.2f} KB per connection")
    packages: collections.Counter = collections.Counter()
    for key, value in diff.items():
        packages[key.split("/")[0].split(":")[0]] += value
    for package, value in packages.most_common():
        if abs(value) / n >= 20:
            print(f"  {package:32s} {value / n:7.0f} B")
    print()
    for key, value in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{value / n:7.0f} B  {(count1[key] - count0.get(key, 0)) / n:5.1f} blocks  {key}")


if __name__ == "__main__":
    main()
