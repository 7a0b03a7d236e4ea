"""Benchmarks of composition-gym: the paper's three claims reproduced, and throughput.

* :mod:`benchmarks.reproduce` — ``compgym reproduce``: BC then PPO under each claim's conditions,
  several seeds, a JSON/markdown/PNG report (:mod:`benchmarks.claims`, :mod:`benchmarks.report`).
* :mod:`benchmarks.cli` — the ``compgym`` subcommands of this package (``register(subparsers)``).
"""
