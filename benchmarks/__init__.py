"""Benchmarks of composition-gym: the paper's three claims reproduced, and throughput.

* :mod:`composition_gym.benchmarks.experiment.reproduce` — ``compgym reproduce``: BC then PPO under each claim's conditions,
  several seeds, a JSON/markdown/PNG report (:mod:`composition_gym.benchmarks.experiment.claims`, :mod:`composition_gym.benchmarks.experiment.report`).
* :mod:`composition_gym.benchmarks.cli` — the ``compgym`` subcommands of this package (``register(subparsers)``).
"""
