"""The benchmarks (``make bench``, ``python -m bench.run``); results and method in docs/benchmarks.md."""
