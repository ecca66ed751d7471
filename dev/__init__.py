"""The developer harness: the local stack behind ``make demo``, the tests and the benchmarks.

It assumes a source checkout (the ``workers`` app, ``examples/``), so it is
not part of the installed package: pyproject.toml packages ``pushserver``
(and the example ``workers``) only.
"""
