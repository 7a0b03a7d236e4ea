"""Benchmarks of composition-gym: the paper's three claims reproduced, and throughput.

* :mod:`composition_gym.benchmarks.experiment` — what is run and how it is judged: SFT by behavior
  cloning, then RL arms from that checkpoint with equal budgets (group-relative RL on atomic
  problems, on the SFT compositions and beyond them; SB3 MaskablePPO as the baseline), several
  seeds, paired verdicts per claim; ``compgym reproduce`` (one cell) and ``compgym sweep`` (a grid
  of cells), with a JSON/markdown/PNG report.
* :mod:`composition_gym.benchmarks.engine` — the run engine under it: the resumable run store and
  the local process-pool and Ray Tune backends; it knows nothing about the experiment.
* :mod:`composition_gym.benchmarks.throughput` — ``compgym bench``: throughput as ratios against
  references run side by side.
* :mod:`composition_gym.benchmarks.cli` — the ``compgym`` subcommands of this package (``register(subparsers)``).
"""
