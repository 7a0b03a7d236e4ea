"""The bridge to language models: problems as a dataset, completions scored by the environment.

Language-model trainers (Hugging Face TRL, veRL, …) want two things from a task: a dataset of
prompts and a reward function over text completions.  This module gives both for any registered
id, with no second definition of "correct":

* :func:`problems` draws ``n`` problems of an id exactly as the environment does; problem ``i`` is
  the problem of ``env.reset(seed=seed + i)``, which is also episode ``i`` of
  :func:`composition_gym.agents.evaluation.evaluate` with the same seed.  Each row holds the
  prompt text, the reference completion (the expert's trace), the answer, the hidden cascade, its
  depth, the id's split and role.  Problems of an ID and an OOD id are as disjoint as the ids
  (they come from the ids' own samplers).  :func:`write_jsonl` and :func:`to_dataset` (a Hugging
  Face ``datasets.Dataset``) write them out.
* :class:`CompositionReward` is a reward function with the signature TRL's ``GRPOTrainer`` calls
  (``prompts``, ``completions`` and the dataset's other columns as keyword arguments, a list of
  floats back).  It plays each completion, token by token, in the id's own environment (what
  :class:`~composition_gym.agents.agent.TextAgent` does), so the env's
  :class:`~composition_gym.cascade.Scorer` decides: the outcome reward (1 for a right answer),
  plus ``process_reward`` per right intermediate, minus ``format_penalty`` for a malformed trace.
  Text that does not encode is scored as the env scores a bare ``<eos>`` (a format failure),
  never raised.

A completion is the trace as text without the end token, e.g. ``"cf;cdf;dfffdc"`` (an ``<eos>``
is appended if missing, as ``TextAgent`` does).  The module imports neither torch nor
``datasets`` (``to_dataset`` imports it on use: the optional extra ``[llm]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from composition_gym import tokens as T
from composition_gym.cascade import Cascade, Problem, Score
from composition_gym.env import CompositionEnv
from composition_gym.registration import list_envs, resolve_env_ids

#: The columns of a problem row (:func:`problems`).
COLUMNS = ("prompt", "completion", "answer", "cascade", "depth", "x", "y", "env_id", "split", "role", "seed")


def _env(env_id: str, **kwargs: Any) -> CompositionEnv:
    return gym.make(env_id, **kwargs).unwrapped


def reference_completion(problem: Problem, trace_format: str = "values") -> str:
    """The expert's trace of ``problem`` as completion text (no ``<eos>``), e.g. ``"cf;cdf;dfffdc"``."""
    return T.decode([T.TOKEN_ID[t] for t in problem.trace(trace_format)[:-1]])


def problems(env_ids: str | Sequence[str], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` problems of each id as rows of :data:`COLUMNS` (deterministic in ``seed``).

    Problem ``i`` of an id is that of ``env.reset(seed=seed + i)`` (and of episode ``i`` of
    ``evaluate(agent, id, episodes, seed)``).

    Raises:
        ValueError: an unknown id, or ``n`` not a positive int.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    roles = {r["id"]: r["role"] for r in list_envs()}
    rows = []
    for env_id in resolve_env_ids(env_ids):
        env = _env(env_id)
        for s in range(seed, seed + n):
            _, info = env.reset(seed=s)
            p = env.problem
            rows.append({"prompt": info["prompt"], "completion": reference_completion(p, env.trace_format),
                         "answer": p.answer, "cascade": p.cascade.key(), "depth": p.cascade.depth, "x": p.x, "y": p.y,
                         "env_id": env_id, "split": env.support.split, "role": roles.get(env_id, ""), "seed": s})
    return rows


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows (e.g. :func:`problems`) as JSON lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file written by :func:`write_jsonl`."""
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def to_dataset(env_ids: str | Sequence[str], n: int, seed: int = 0):
    """:func:`problems` as a Hugging Face ``datasets.Dataset`` (needs the extra ``[llm]``)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError("to_dataset needs the Hugging Face `datasets` package: "
                          "pip install 'composition-gym[llm]'") from err
    return datasets.Dataset.from_list(problems(env_ids, n, seed))


def problem_of(row: dict[str, Any], alphabet: str) -> Problem:
    """The :class:`Problem` of a row (its ``cascade``, ``x`` and ``y``), executed on ``alphabet``."""
    steps = tuple(tuple(step.split(".")) for step in row["cascade"].split("|"))
    cascade = Cascade(steps)
    return Problem(cascade, row["x"], row["y"], tuple(cascade.execute(row["x"], row["y"], alphabet)))


def completion_tokens(text: str) -> list[int]:
    """The tokens :class:`~composition_gym.agents.agent.TextAgent` plays for ``text``.

    ``tokens.encode(text)`` with ``<eos>`` appended if missing; text that does not encode plays a
    bare ``<eos>`` (which every trace grammar rejects: a format failure).
    """
    try:
        ids = T.encode(text)
    except ValueError:
        ids = []
    if not ids or ids[-1] != T.EOS_ID:
        ids.append(T.EOS_ID)
    return ids


def _text(completion: Any) -> str | None:
    """A completion's text: a string, or the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else None
    return None


class CompositionReward:
    """A reward function for TRL's ``GRPOTrainer`` (or any trainer that scores text completions).

    ``reward(prompts=None, completions=[...], env_id=[...], cascade=[...], x=[...], y=[...], **_)``
    returns one float per completion: the return the environment pays for that trace.  The
    columns come from a :func:`problems` dataset (TRL passes every column but ``prompt`` and
    ``completion`` as keyword arguments; extra keywords such as ``trainer_state`` are ignored).

    Args:
        process_reward: reward per intermediate equal to its reference (``None``: the id's own).
        format_penalty: penalty for a malformed trace (``None``: the id's own).

    Each completion is played in the id's environment, reset on the row's problem, so the env's
    :class:`~composition_gym.cascade.Scorer` scores it; :meth:`scores` gives the
    :class:`~composition_gym.cascade.Score` (with its per-step diagnosis) instead of the reward.
    """

    def __init__(self, process_reward: float | None = None, format_penalty: float | None = None):
        self.settings = {k: v for k, v in (("process_reward", process_reward), ("format_penalty", format_penalty))
                         if v is not None}
        self._envs: dict[str, CompositionEnv] = {}
        self.__name__ = "composition_reward"  # trainers name the logged reward after it

    def env(self, env_id: str) -> CompositionEnv:
        """The environment (with this reward's settings) that scores completions of ``env_id``."""
        if env_id not in self._envs:
            (full,) = resolve_env_ids(env_id)
            self._envs[env_id] = _env(full, **self.settings)
        return self._envs[env_id]

    def score(self, completion: Any, row: dict[str, Any]) -> tuple[float, Score]:
        """The env's return for one completion of one problem row, and its final :class:`Score`."""
        env = self.env(row["env_id"])
        env.reset(options={"problem": problem_of(row, env.profile.alphabet)})
        text = _text(completion)
        total = 0.0
        for token in completion_tokens(text) if text is not None else [T.EOS_ID]:
            _, reward, terminated, truncated, _ = env.step(token)
            total += reward
            if terminated or truncated:  # at the last token (<eos>) at the latest
                break
        return total, env.score

    def scores(self, completions: Sequence[Any], **columns: Sequence[Any]) -> list[Score]:
        """The :class:`Score` of each completion (columns as for :meth:`__call__`)."""
        return [self.score(c, row)[1] for c, row in zip(completions, _rows(len(completions), columns), strict=True)]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None,
                 **columns: Any) -> list[float]:
        if completions is None:
            raise TypeError("the reward function needs completions=[...]")
        out, success = [], []
        for completion, row in zip(completions, _rows(len(completions), columns), strict=True):
            reward, score = self.score(completion, row)
            out.append(reward)
            success.append(score.all_steps_correct)
        log_metric = columns.get("log_metric")
        if callable(log_metric) and success:  # TRL's hook for extra scalars in its logs
            log_metric("all_steps_correct", sum(success) / len(success))
        return out


def _rows(n: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per completion from the column lists (``env_id``, ``cascade``, ``x``, ``y``)."""
    missing = [k for k in ("env_id", "cascade", "x", "y") if k not in columns]
    if missing:
        raise TypeError(f"the reward function needs the dataset columns {missing} (rows of composition_gym.llm.problems)")
    for key in ("env_id", "cascade", "x", "y"):
        if len(columns[key]) != n:
            raise ValueError(f"column {key!r} has {len(columns[key])} values for {n} completions")
    return [{k: columns[k][i] for k in ("env_id", "cascade", "x", "y")} for i in range(n)]
