"""The ``compgym`` subcommands of the benchmarks layer.

:func:`register` is found by :mod:`composition_gym.cli` (looked up by name, so the environment
package never imports this one).  Each subcommand's handler is ``func(args) -> int``.
"""

from __future__ import annotations

import argparse


def _cmd_reproduce(args: argparse.Namespace) -> int:
    # Imported here so that `compgym list` does not pay for the benchmark modules.
    from composition_gym.benchmarks.reproduce import run_from_args

    return run_from_args(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from composition_gym.benchmarks.throughput import run_from_args

    return run_from_args(args)


def register(subparsers) -> None:
    """Add the benchmark subcommands (``bench``, ``reproduce``) to ``compgym``'s subparsers."""
    from composition_gym.benchmarks.reproduce import add_arguments
    from composition_gym.benchmarks.throughput import add_arguments as add_bench_arguments

    p = subparsers.add_parser("bench", help="throughput: env vs CartPole, vector env, PPO and BC, peak memory",
                              description="measures steps/s and tokens/s as ratios against references run side "
                                          "by side; prints a table and writes JSON (--json)")
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = subparsers.add_parser("reproduce", help="reproduce the paper's three claims: table, JSON and figure",
                              description="BC on the SFT set, then PPO per condition, several seeds; writes "
                                          "reproduce.{json,md,png} to --out and TensorBoard logs to --runs-dir")
    add_arguments(p)
    p.set_defaults(func=_cmd_reproduce)
