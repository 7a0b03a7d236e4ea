"""The argparse ``compgym`` subcommand of the benchmarks layer (``bench``).

(``reproduce`` and ``sweep`` are derived from their config dataclasses:
:data:`composition_gym.cli.COMMANDS`.)

:func:`register` is named in :data:`composition_gym.cli.LAZY_COMMANDS` and imported only when one
of these commands runs.  Each subcommand's handler is ``func(args) -> int``.  Results go to an
untracked folder under ``runs/`` by default; refreshing the committed ``benchmarks/results/`` is
an explicit ``--json`` / ``--out``.
"""

from __future__ import annotations

import argparse
import importlib

from composition_gym.cli import LAZY_COMMANDS


#: command -> (module under composition_gym.benchmarks, the command's description)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("throughput", "measures steps/s and tokens/s as ratios against references run side by side; "
                            "prints a table and writes JSON (--json)"),
}


def _runner(module: str):
    """A handler that runs ``composition_gym.benchmarks.<module>.run_from_args``."""

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"composition_gym.benchmarks.{module}").run_from_args(args)

    return run


def register(subparsers) -> None:
    """Add the benchmark subcommands (:data:`COMMANDS`) to ``compgym``'s subparsers."""
    for name, (module, description) in COMMANDS.items():
        p = subparsers.add_parser(name, help=LAZY_COMMANDS[name][1], description=description)
        importlib.import_module(f"composition_gym.benchmarks.{module}").add_arguments(p)
        p.set_defaults(func=_runner(module))
