"""The ``compgym`` command line.

The core commands live here (``list``, ``show``, ``play``).  The layers further down the data flow
add their own through a ``register(subparsers)`` function: ``agents.cli`` (``train``, ``eval``,
``demo``) and ``benchmarks.cli`` (``bench``, ``reproduce``).  They are looked up by name, so this
module never imports them at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import gymnasium as gym

from composition_gym import tokens as T
from composition_gym.registration import list_envs, resolve_env_id

PLUGIN_LAYERS = ("composition_gym.agents.cli", "composition_gym.benchmarks.cli")


def _cmd_list(args: argparse.Namespace) -> int:
    rows = list_envs()
    if args.profile:
        rows = [r for r in rows if r["profile"] == args.profile]
    width = max(len(r["id"]) for r in rows)
    print(f"{'id':<{width}}  {'split':<18} L  role   purpose")
    for r in rows:
        print(f"{r['id']:<{width}}  {r['split']:<18} {r['depth']}  {r['role']:<6} {r['purpose']}")
    return 0


def _make(args: argparse.Namespace) -> gym.Env:
    return gym.make(resolve_env_id(args.env_id), trace_format=args.trace_format)


def _cmd_show(args: argparse.Namespace) -> int:
    env = _make(args)
    for k in range(args.episodes):
        _, info = env.reset(seed=args.seed + k)
        problem = env.unwrapped.problem
        print(f"== {resolve_env_id(args.env_id)}  seed={args.seed + k}")
        print(f"prompt : {info['prompt']}")
        print("cascade: " + "  ".join(f"{t + 1}:{r}·{s}" for t, (r, s) in enumerate(problem.cascade.steps)))
        for t, z in enumerate(problem.values):
            print(f"  z{t + 1} = {z}")
        print(f"trace  : {T.decode(T.TOKEN_ID[t] for t in problem.trace(env.unwrapped.trace_format))}")
        print(f"answer : {problem.answer}")
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    env = _make(args)
    stream = sys.stdin
    for k in range(args.episodes):
        _, info = env.reset(seed=args.seed + k)
        print(f"\n{info['prompt']}")
        fmt = env.unwrapped.trace_format
        hint = {"values": "z1;z2;...;answer", "tagged": "Chain Rev:z1;...", "answer": "the answer"}[fmt]
        print(f"type the trace ({hint}), then Enter:")
        line = stream.readline()
        if not line:
            return 0
        try:
            ids = T.encode(line.strip())
        except ValueError as err:
            print(f"cannot read that: {err}")
            continue
        if not ids or ids[-1] != T.EOS_ID:
            ids.append(T.EOS_ID)
        total, done = 0.0, False
        for tok in ids:
            _, reward, term, trunc, info = env.step(tok)
            total += reward
            if term or trunc:
                done = True
                break
        if not done:
            print("the trace did not end the episode")
            continue
        verdict = "correct" if info["is_success"] else ("malformed" if info["malformed"] else "wrong")
        print(f"reward {total:g} ({verdict}); expected answer {info['answer']}")
        for d in info["diagnosis"]:
            mark = "ok " if d["correct"] else "XX "
            print(f"  {mark} step {d['step']} {d['routing']}·{d['skill']}: expected {d['expected']}, got {d['generated']}")
    return 0


def register(subparsers) -> None:
    """Add the core subcommands ``list``, ``show`` and ``play``."""
    p = subparsers.add_parser("list", help="list the registered environment ids")
    p.add_argument("--profile", choices=["small", "paper"], help="only this profile's ids")
    p.set_defaults(func=_cmd_list)
    for name, func, text in (
        ("show", _cmd_show, "print episodes: prompt, hidden cascade, reference trace"),
        ("play", _cmd_play, "type a trace yourself and see the reward"),
    ):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("env_id", help="e.g. Compose-L3-v0 (namespace optional)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--episodes", type=int, default=1)
        p.add_argument("--trace-format", choices=["values", "tagged", "answer"], default="values")
        p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    """The full ``compgym`` parser, with every layer that is installed."""
    parser = argparse.ArgumentParser(prog="compgym", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    for layer in PLUGIN_LAYERS:
        try:
            module = importlib.import_module(layer)
        except ModuleNotFoundError as err:
            if err.name not in (layer, layer.split(".")[0]):
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``compgym`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (gym.error.Error, ValueError) as err:
        print(f"compgym: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
