"""The ``compgym`` subcommands of the benchmarks layer (``bench``, ``reproduce``, ``sweep``).

:func:`register` is named in :data:`composition_gym.cli.LAZY_COMMANDS` and imported only when one
of these commands runs.  Each subcommand's handler is ``func(args) -> int``.  Results go to an
untracked folder under ``runs/`` by default; refreshing the committed ``benchmarks/results/`` is
an explicit ``--json`` / ``--out``.
"""

from __future__ import annotations

import argparse

from composition_gym.cli import LAZY_COMMANDS


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from composition_gym.benchmarks.reproduce import run_from_args

    return run_from_args(args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from composition_gym.benchmarks.sweep import run_from_args

    return run_from_args(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from composition_gym.benchmarks.throughput import run_from_args

    return run_from_args(args)


def register(subparsers) -> None:
    """Add the benchmark subcommands (``bench``, ``reproduce``, ``sweep``) to ``compgym``'s subparsers."""
    from composition_gym.benchmarks.reproduce import add_arguments
    from composition_gym.benchmarks.sweep import add_arguments as add_sweep_arguments
    from composition_gym.benchmarks.throughput import add_arguments as add_bench_arguments

    p = subparsers.add_parser("bench", help=LAZY_COMMANDS["bench"][1],
                              description="measures steps/s and tokens/s as ratios against references run side "
                                          "by side; prints a table and writes JSON (--json)")
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = subparsers.add_parser("reproduce", help=LAZY_COMMANDS["reproduce"][1],
                              description="behavior cloning on the v1 depth-mixed coverage set, then RL arms "
                                          "(none / atomic / compound on the SFT set / compound beyond it; GRPO, "
                                          "and MaskablePPO as the SB3 baseline) with equal episode budgets, "
                                          "several seeds, paired verdicts; resumable; --backend ray")
    add_arguments(p)
    p.set_defaults(func=_cmd_reproduce)

    p = subparsers.add_parser("sweep", help=LAZY_COMMANDS["sweep"][1],
                              description="every cell of a grid over SFT budget, exposure, trace format, model "
                                          "width and RL arm: SFT headroom (pass@k - greedy) and each arm's gain; "
                                          "markdown table and heatmap; resumable; --backend ray")
    add_sweep_arguments(p)
    p.set_defaults(func=_cmd_sweep)
