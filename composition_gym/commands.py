"""The core commands: ``compgym list``, ``compgym show`` and ``compgym play`` (torch-free).

Each is a settings dataclass (its options) and a ``run_*`` function; :mod:`composition_gym.cli`
parses and dispatches them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import tyro

from composition_gym import tokens as T
from composition_gym.cascade import PROMPT_FORMATS, TRACE_FORMATS
from composition_gym.cli import render_table
from composition_gym.config import Config, bounded
from composition_gym.profiles import PROFILES
from composition_gym.registration import list_envs, resolve_env_id


@dataclass(frozen=True)
class ListConfig(Config):
    """List the registered environment ids with their profile, split, depth, role and purpose."""

    profile: Literal[tuple(PROFILES)] | None = None
    """Only this profile's ids (default: every profile)."""


def run_list(cfg: ListConfig) -> int:
    """``compgym list``: the ids as a table."""
    from rich import box
    from rich.table import Table

    rows = [r for r in list_envs() if not cfg.profile or r["profile"] == cfg.profile]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "profile", "split", "L", "role", "purpose"):
        table.add_column(name, no_wrap=name != "purpose")
    for r in rows:
        table.add_row(r["id"], r["profile"], r["split"], str(r["depth"]), r["role"], r["purpose"])
    print(render_table(table))
    return 0


# ---------------------------------------------------------------------------- show / play
@dataclass(frozen=True)
class ShowConfig(Config):
    """Episodes of one environment: show them (prompt, hidden cascade, reference trace) or play them."""

    env_id: tyro.conf.Positional[str]
    """An id such as Compose-L3-v1 (namespace and version optional: the newest version)."""
    seed: int = 0
    """Episode k resets with seed + k."""
    episodes: int = bounded(1, ge=1)
    """How many episodes."""
    trace_format: Literal[TRACE_FORMATS] = "values"
    """values: intermediates then the answer; tagged: each step tagged with its modules; answer: the answer only."""
    prompt_format: Literal[PROMPT_FORMATS] = "nested"
    """How the prompt writes the program: nested calls, or the steps listed (pipeline, reversed)."""


def _make(cfg: ShowConfig) -> gym.Env:
    return gym.make(resolve_env_id(cfg.env_id), trace_format=cfg.trace_format, prompt_format=cfg.prompt_format)


def run_show(cfg: ShowConfig) -> int:
    """``compgym show``: print episodes."""
    env = _make(cfg)
    for k in range(cfg.episodes):
        _, info = env.reset(seed=cfg.seed + k)
        problem = env.unwrapped.problem
        print(f"== {resolve_env_id(cfg.env_id)}  seed={cfg.seed + k}")
        print(f"prompt : {info['prompt']}")
        print("cascade: " + "  ".join(f"{t + 1}:{r}·{s}" for t, (r, s) in enumerate(problem.cascade.steps)))
        for t, z in enumerate(problem.values):
            print(f"  z{t + 1} = {z}")
        print(f"trace  : {_reference(env)}")
        print(f"answer : {problem.answer}")
    return 0


def _reference(env: gym.Env) -> str:
    """The reference trace of the current episode as text (``cf;cdff;dfffdc<eos>``)."""
    return T.decode(T.TOKEN_ID[t] for t in env.unwrapped.problem.trace(env.unwrapped.trace_format))


def run_play(cfg: ShowConfig) -> int:
    """``compgym play``: type a trace, see the reward and the per-step diagnosis."""
    env = _make(cfg)
    fmt = env.unwrapped.trace_format
    hint = {"values": "z1;z2;...;answer", "tagged": "Chain Rev:z1;...", "answer": "the answer"}[fmt]
    print(f"type the trace ({hint}) and press Enter; <eos> is added for you. Quit: Ctrl-D or Ctrl-C.")
    try:
        for k in range(cfg.episodes):
            _, info = env.reset(seed=cfg.seed + k)
            print(f"\n{info['prompt']}")
            line = sys.stdin.readline()
            if not line:
                return 0
            _play_one(env, line.strip(), info)
    except KeyboardInterrupt:
        print()  # end the prompt's line; no traceback for the way out we announced
        return 130
    return 0


def _play_one(env: gym.Env, text: str, info: dict[str, Any]) -> None:
    """Step the typed trace token by token; report the reward, or the first token the grammar rejects."""
    try:
        ids = T.encode(text)
    except ValueError as err:
        print(f"cannot read that: {err}")
        return
    if not ids or ids[-1] != T.EOS_ID:
        ids.append(T.EOS_ID)
    total = 0.0
    for pos, tok in enumerate(ids):
        mask = info["action_mask"]
        if not mask[tok]:
            _explain_rejection(env, ids[:pos], tok, pos, mask)
            return
        _, reward, term, trunc, info = env.step(tok)
        total += reward
        if term or trunc:
            break
    else:
        print("the trace did not end the episode")
        return
    verdict = "correct" if info["is_success"] else ("malformed" if info["malformed"] else "wrong")
    print(f"reward {total:g} ({verdict}); expected answer {info['answer']}")
    for d in info["diagnosis"]:
        mark = "ok " if d["correct"] else "XX "
        print(f"  {mark} step {d['step']} {d['routing']}·{d['skill']}: expected {d['expected']}, got {d['generated']}")


def _explain_rejection(env: gym.Env, accepted: list[int], tok: int, pos: int, mask: np.ndarray) -> None:
    """Which token was refused and where, what was allowed, and how the accepted prefix compares."""
    typed = T.decode(accepted)
    allowed = " ".join(T.decode([i]) for i in np.flatnonzero(mask))
    print(f"rejected: token {T.decode([tok])!r} at position {pos + 1} of your trace (after {typed!r}); "
          f"the grammar allows here: {allowed}")
    reference = _reference(env)
    same = 0
    while same < min(len(typed), len(reference)) and typed[same] == reference[same]:
        same += 1
    if same == len(typed):
        print(f"your prefix {typed!r} is correct so far; the reference trace is {reference}")
    else:
        print(f"your prefix departs from the reference at character {same + 1}: {typed[:same]!r} then "
              f"{typed[same:]!r} instead of {reference[same:]!r}")
    problem = env.unwrapped.problem
    if env.unwrapped.trace_format == "values" and typed:
        for t, seg in enumerate(typed.split(";")):
            if t >= len(problem.values):
                break
            r, s = problem.cascade.steps[t]
            expected = problem.values[t]
            done = t < typed.count(";")
            if not done and not seg:
                break
            ok = seg == expected if done else expected.startswith(seg)
            state = "" if done else " (unfinished)"
            print(f"  {'ok ' if ok else 'XX '} step {t + 1} {r}·{s}: expected {expected}, got {seg}{state}")


__all__ = ["ListConfig", "ShowConfig", "run_list", "run_play", "run_show"]
