"""Evaluate any agent on any set of env ids: success by env, depth, skill and routing mechanism.

``evaluate(agent, env_ids, episodes, seed)`` plays ``episodes`` episodes of each id; episode ``i``
of every id is reset with seed ``seed + i``, so two agents meet the same problems and a
deterministic agent gets the same report every time.  Agents with ``act_batch`` play up to
``batch_size`` episodes in lockstep (one batched forward per step); others play one at a time.

Per-module numbers follow the paper's reading: for a skill (or routing mechanism) ``m``, the
success rate over the episodes whose hidden cascade uses ``m`` at least once.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

import composition_gym  # noqa: F401  (registers the env ids)
from composition_gym.agents.agent import as_agent
from composition_gym.registration import resolve_env_ids, short_name

@dataclass
class Episode:
    """One evaluated episode: its problem's cascade, outcome and per-step diagnosis."""

    env_id: str
    seed: int
    cascade: str
    depth: int
    routings: tuple[str, ...]
    skills: tuple[str, ...]
    success: bool
    reward: float
    step_correct: tuple[bool, ...]
    malformed: bool
    tokens: list[int] = field(default_factory=list, repr=False)
    expert_labels: list[int] | None = field(default=None, repr=False)


def _check_spaces(agent: Any, env: gym.Env, env_id: str) -> None:
    space = getattr(agent, "observation_space", None)
    if space is not None and getattr(space, "shape", None) != env.observation_space.shape:
        raise ValueError(f"the agent's observation space {space} does not match {env_id}'s "
                         f"{env.observation_space}: the model was trained on another profile or max_len")


def rollout(agent: Any, env_id: str, seeds: Sequence[int], *, batch_size: int = 64,
            record_expert: bool = False) -> list[Episode]:
    """Play one episode per seed of ``env_id`` (episode ``k`` reset with ``seeds[k]``), in order.

    Args:
        agent: an agent (see :mod:`composition_gym.agents.agent`), SB3 model or :class:`TransformerLM`.
        batch_size: episodes played in lockstep when the agent has ``act_batch``.
        record_expert: also record the env expert's token at every visited state (for DAgger).
    """
    agent = as_agent(agent)
    batched = callable(getattr(agent, "act_batch", None))
    width = max(1, min(batch_size if batched else 1, len(seeds)))
    envs = [gym.make(env_id) for _ in range(width)]
    _check_spaces(agent, envs[0], env_id)
    results: list[Episode | None] = [None] * len(seeds)
    pending = list(range(len(seeds)))[::-1]  # pop() from the end takes episodes in order

    def start(env: gym.Env) -> dict[str, Any] | None:
        if not pending:
            return None
        k = pending.pop()
        obs, info = env.reset(seed=int(seeds[k]))
        return {"env": env, "k": k, "obs": obs, "info": info, "first": info, "labels": [] if record_expert else None}

    active = [s for s in (start(e) for e in envs) if s is not None]
    while active:
        if batched:
            actions = agent.act_batch(np.stack([s["obs"] for s in active]), [s["info"] for s in active])
        else:
            actions = [agent.act(active[0]["obs"], active[0]["info"])]
        still = []
        for slot, action in zip(active, actions):
            env = slot["env"]
            if record_expert:
                slot["labels"].append(int(env.unwrapped.expert_action()))
            obs, reward, terminated, truncated, info = env.step(int(action))
            if terminated or truncated:
                results[slot["k"]] = _episode(env_id, int(seeds[slot["k"]]), obs, reward, info, slot["labels"])
                slot = start(env)
                if slot is None:
                    continue
            else:
                slot["obs"], slot["info"] = obs, info
            still.append(slot)
        active = still
    for env in envs:
        env.close()
    return results  # type: ignore[return-value]


def _episode(env_id: str, seed: int, obs: np.ndarray, reward: float, info: dict[str, Any],
             labels: list[int] | None) -> Episode:
    cascade = info["cascade"]
    return Episode(
        env_id=env_id, seed=seed, cascade=cascade.key(), depth=cascade.depth, routings=cascade.routings,
        skills=cascade.skills, success=bool(info["is_success"]), reward=float(reward),
        step_correct=tuple(bool(d["correct"]) for d in info["diagnosis"]), malformed=bool(info["malformed"]),
        tokens=obs[obs != 0].tolist(), expert_labels=labels,
    )


def _rate(groups: dict[str, list[bool]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


@dataclass
class EvalReport:
    """Outcome of :func:`evaluate`: per-episode records and their summaries."""

    episodes: list[Episode]
    env_ids: list[str]
    seed: int
    episodes_per_env: int
    seconds: float = 0.0

    @property
    def success(self) -> float:
        """Mean success over all episodes (every env weighs by its episode count)."""
        return float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0

    @property
    def success_by_env(self) -> dict[str, float]:
        """Success rate per env id, in the order evaluated."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for e in self.episodes:
            groups[e.env_id].append(e.success)
        return {k: float(np.mean(groups[k])) for k in self.env_ids if k in groups}

    @property
    def by_depth(self) -> dict[str, float]:
        """Success rate per cascade depth (keys ``"1"``, ``"3"``, …)."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for e in self.episodes:
            groups[str(e.depth)].append(e.success)
        return dict(sorted(_rate(groups).items(), key=lambda kv: int(kv[0])))

    def _by_module(self, attr: str) -> dict[str, float]:
        groups: dict[str, list[bool]] = defaultdict(list)
        for e in self.episodes:
            for m in set(getattr(e, attr)):
                groups[m].append(e.success)
        return _rate(groups)

    @property
    def by_skill(self) -> dict[str, float]:
        """Success rate over the episodes whose cascade uses each skill."""
        return self._by_module("skills")

    @property
    def by_routing(self) -> dict[str, float]:
        """Success rate over the episodes whose cascade uses each routing mechanism."""
        return self._by_module("routings")

    @property
    def step_accuracy(self) -> dict[str, float]:
        """Fraction of correct intermediates per step index (``info["diagnosis"]``)."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for e in self.episodes:
            for k, ok in enumerate(e.step_correct):
                groups[str(k + 1)].append(ok)
        return dict(sorted(_rate(groups).items(), key=lambda kv: int(kv[0])))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (per-episode records under ``"episodes"``)."""
        return {
            "seed": self.seed,
            "episodes_per_env": self.episodes_per_env,
            "success": self.success,
            "success_by_env": self.success_by_env,
            "by_depth": self.by_depth,
            "by_skill": self.by_skill,
            "by_routing": self.by_routing,
            "step_accuracy": self.step_accuracy,
            "seconds": self.seconds,
            "episodes": [{k: v for k, v in asdict(e).items() if k not in ("tokens", "expert_labels")}
                         for e in self.episodes],
        }

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path``."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    def table(self, title: str | None = None) -> str:
        """A plain-text table: success by env id, then by depth, skill, routing and step."""
        lines = [title] if title else []
        n = self.episodes_per_env
        rows: list[tuple[str, str, str]] = [("env id", "episodes", "success")]
        rows += [(short_name(k), str(n), f"{v:6.1%}") for k, v in self.success_by_env.items()]
        rows.append(("all", str(len(self.episodes)), f"{self.success:6.1%}"))
        lines += _format(rows)
        for name, values in (("depth", self.by_depth), ("skill", self.by_skill),
                             ("routing", self.by_routing), ("step", self.step_accuracy)):
            cells = "  ".join(f"{k}={v:.0%}" for k, v in values.items())
            lines.append(f"{'by ' + name:<11}{cells}")
        return "\n".join(lines)


def _format(rows: Iterable[tuple[str, ...]]) -> list[str]:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    out.insert(1, "-" * len(out[0]))
    out.insert(-1, "-" * len(out[0]))
    return out


def evaluate(agent: Any, env_ids: str | Sequence[str], episodes: int, seed: int = 0, *,
             batch_size: int = 64) -> EvalReport:
    """Play ``episodes`` episodes of each env id and summarise success.

    Args:
        agent: an agent (``act(obs, info) -> int``), an SB3 model or a :class:`TransformerLM`.
        env_ids: registered ids (one or several).
        episodes: episodes per env id; episode ``i`` resets with seed ``seed + i``.
        seed: base seed.
        batch_size: lockstep width for agents with ``act_batch``.

    Raises:
        ValueError: on an unknown env id, ``episodes < 1``, or an agent whose observation space
            does not match the env's.
    """
    ids = resolve_env_ids(env_ids)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    agent = as_agent(agent)
    t0 = time.perf_counter()
    records: list[Episode] = []
    for env_id in ids:
        records += rollout(agent, env_id, [seed + i for i in range(episodes)], batch_size=batch_size)
    return EvalReport(records, ids, seed, episodes, time.perf_counter() - t0)


__all__ = ["Episode", "EvalReport", "evaluate", "rollout"]
