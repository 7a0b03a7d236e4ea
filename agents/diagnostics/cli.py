"""``compgym diagnose MODEL [--compare MODEL2 …]``: error anatomy, probes and attention, side by side.

:func:`register` adds the subcommand to ``compgym``'s parser; ``python -m
composition_gym.agents.diagnostics`` runs it alone.  Heavy imports (torch, matplotlib) happen in
the handler, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from composition_gym.agents.settings import resolve_threads
    from composition_gym.agents.diagnostics.report import (
        DiagnoseConfig, comparison_table, diagnose, save_figure, save_json)
    from composition_gym.agents.agent import load_agent

    threads = resolve_threads(args.threads)  # before any model loads: --threads 0 is refused at once
    config = DiagnoseConfig(seed=args.seed, episodes=args.episodes, probe_episodes=args.probe_episodes,
                            probe_test_episodes=args.probe_test_episodes, attention_episodes=args.attention_episodes,
                            source=args.source, probes=not args.no_probes, attention=not args.no_attention)
    if args.env:
        config.env_ids = args.env
    if args.fit_env:
        config.fit_env = args.fit_env
    config.validate()
    paths = [args.model, *(args.compare or [])]
    names = _names(paths)
    results = {}
    for name, path in zip(names, paths):
        try:
            model = load_agent(path)
        except (FileNotFoundError, ValueError) as err:
            print(f"compgym diagnose: {err}", file=sys.stderr)
            return 2
        results[name] = diagnose(model, config, threads=threads)
    from rich.console import Console

    Console().print(comparison_table(results))
    if args.json:
        save_json(results, args.json)
        print(f"wrote {args.json}")
    if args.figures:
        print(f"wrote {save_figure(results, os.path.join(args.figures, 'diagnostics.png'))}")
    return 0


def _names(paths: list[str]) -> list[str]:
    """Column names: file stems; ``folder/stem`` where stems collide; ``stem#k`` where that still does."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = [s if stems.count(s) == 1 else os.path.join(os.path.basename(os.path.dirname(p)), s)
             for s, p in zip(stems, paths)]
    return [n if names.count(n) == 1 else f"{s}#{i + 1}" for i, (n, s) in enumerate(zip(names, stems))]


def register(subparsers) -> None:
    """Add ``diagnose`` to ``compgym``'s subparsers."""
    p = subparsers.add_parser("diagnose", help="why a model fails: error anatomy, linear probes, attention to the call")
    p.add_argument("model", help="a TransformerLM checkpoint (.pt) or an SB3 .zip")
    p.add_argument("--compare", nargs="+", metavar="MODEL", help="more checkpoints, diagnosed side by side")
    p.add_argument("--env", nargs="+", help="env ids (default: the ID then OOD suites)")
    p.add_argument("--fit-env", help="ID env whose traces train the probes (default Compose-L3)")
    p.add_argument("--episodes", type=int, default=200, help="anatomy episodes per env")
    p.add_argument("--probe-episodes", type=int, default=300, help="probe training traces")
    p.add_argument("--probe-test-episodes", type=int, default=200, help="probe test traces per env")
    p.add_argument("--attention-episodes", type=int, default=100, help="traces per env for attention")
    p.add_argument("--source", choices=("expert", "model"), default="expert",
                   help="traces for probes/attention: teacher-forced reference or the model's rollouts")
    p.add_argument("--no-probes", action="store_true")
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int,
                   help="torch threads (default: 2 if two cores are idle, else 1; env COMPGYM_THREADS)")
    p.add_argument("--json", help="write every number (per layer, head, module) here")
    p.add_argument("--figures", help="write diagnostics.png into this folder")
    p.set_defaults(func=_cmd_diagnose)


def main(argv: list[str] | None = None) -> int:
    """Run ``diagnose`` alone (``python -m composition_gym.agents.diagnostics MODEL …``)."""
    parser = argparse.ArgumentParser(prog="python -m composition_gym.agents.diagnostics")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["diagnose", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args))
    except ValueError as err:
        print(f"compgym diagnose: {err}", file=sys.stderr)
        return 2


__all__ = ["main", "register"]
