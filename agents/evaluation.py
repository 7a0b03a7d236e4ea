"""Evaluate any agent on any set of env ids: success by env, depth, skill and routing mechanism.

``evaluate(agent, env_ids, episodes, seed)`` plays ``episodes`` episodes of each id; episode ``i``
of every id is reset with seed ``seed + i``, so two agents meet the same problems and a
deterministic agent gets the same report every time.  Every episode is played on the native
vector env (:func:`composition_gym.agents.sampling.play`): a :class:`TransformerLM` decodes with
its KV cache, agents with ``act_batch`` play ``batch_size`` rows in lockstep, others one at a time.

With ``samples=k`` a language model also *samples* ``k`` completions of every problem at
``temperature``: the report then gives greedy success, sampled success (mean over samples),
pass@k (at least one of the k samples right) and the headroom pass@k - greedy, which bounds what
RL that sharpens the sampled distribution can gain.  Where the env reports
``info["all_steps_correct"]`` (every intermediate right, v1 ids) it is reported beside success.

Per-module numbers follow the paper's reading: for a skill (or routing mechanism) ``m``, the
success rate over the episodes whose hidden cascade uses ``m`` at least once.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

import composition_gym  # noqa: F401  (registers the env ids)
from composition_gym.agents import seeds as seed_offsets
from composition_gym.agents.agent import LMAgent, as_agent
from composition_gym.agents.coverage import check_profile
from composition_gym.agents.sampling import AgentChooser, LMChooser, Played, make_vec, play
from composition_gym.agents.settings import check_device, torch_threads
from composition_gym.atomic import atomic_write
from composition_gym.registration import resolve_env_ids, short_name


@dataclass
class Episode:
    """One evaluated episode: its problem's cascade, outcome and per-step diagnosis.

    ``samples`` holds the success of each sampled completion of the same problem (empty unless
    :func:`evaluate` ran with ``samples > 0``); ``all_steps_correct`` is ``None`` where the env
    does not report it.
    """

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
    all_steps_correct: bool | None = None
    samples: tuple[bool, ...] = ()
    tokens: list[int] = field(default_factory=list, repr=False)
    expert_labels: list[int] | None = field(default=None, repr=False)


def _check_spaces(agent: Any, venv: Any, env_id: str) -> None:
    space = getattr(agent, "observation_space", None)
    if space is not None and getattr(space, "shape", None) != venv.single_observation_space.shape:
        raise ValueError(f"the agent's observation space {space} does not match {env_id}'s "
                         f"{venv.single_observation_space}: the model was trained on another profile or max_len")


def _to_device(agent: Any, device: str) -> Any:
    """``agent`` with its torch model on ``device`` (checked); agents without one are returned as is."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    check_device(device)
    if isinstance(agent, BaseAlgorithm):
        agent.policy.to(device)
        agent.device = torch.device(device)
    elif isinstance(agent, (torch.nn.Module, LMAgent)):
        (agent.lm if isinstance(agent, LMAgent) else agent).to(device)
    elif hasattr(agent, "model") and isinstance(getattr(agent, "model"), BaseAlgorithm):
        _to_device(agent.model, device)
    return agent


def _chooser(agent: Any, temperature: float, generator: torch.Generator | None) -> Any:
    if isinstance(agent, LMAgent):
        return LMChooser(agent.lm, temperature, generator, masked=agent.masked)
    return AgentChooser(agent)


def rollout(agent: Any, env_id: str, seeds: Sequence[int], *, batch_size: int = 64, record_expert: bool = False,
            temperature: float = 0.0, generator: torch.Generator | None = None) -> list[Episode]:
    """Play one episode per seed of ``env_id`` (episode ``k`` reset with ``seeds[k]``), in order.

    Args:
        agent: an agent (see :mod:`composition_gym.agents.agent`), SB3 model or :class:`TransformerLM`.
        batch_size: episodes played in lockstep (agents without ``act_batch`` play one at a time).
        record_expert: also record the env expert's token at every visited state (for DAgger).
        temperature, generator: a language model samples at ``temperature`` (0: greedy).
    """
    agent = as_agent(agent)
    chooser = _chooser(agent, temperature, generator)
    stateless = isinstance(chooser, LMChooser) or chooser.batched
    width = max(1, min(batch_size if stateless else 1, len(seeds)))
    venv = make_vec(env_id, width)
    _check_spaces(agent, venv, env_id)
    check_profile(agent, venv, env_id)
    out: list[Episode] = []
    for start in range(0, len(seeds), width):
        chunk = [int(s) for s in seeds[start:start + width]]
        out += _episodes(env_id, chunk, play(venv, chunk, chooser, record_expert=record_expert))
    venv.close()
    return out


def _episodes(env_id: str, seeds: list[int], played: Played) -> list[Episode]:
    out = []
    for i, seed in enumerate(seeds):
        info = played.infos[i]
        cascade, obs = info["cascade"], played.obs[i]
        labels = played.expert[i, : played.steps[i]].tolist() if played.expert is not None else None
        all_steps = info.get("all_steps_correct")
        out.append(Episode(
            env_id=env_id, seed=seed, cascade=cascade.key(), depth=cascade.depth, routings=cascade.routings,
            skills=cascade.skills, success=bool(info["is_success"]), reward=float(played.reward[i]),
            step_correct=tuple(bool(d["correct"]) for d in info["diagnosis"]), malformed=bool(info["malformed"]),
            all_steps_correct=None if all_steps is None else bool(all_steps),
            tokens=obs[obs != 0].tolist(), expert_labels=labels,
        ))
    return out


def sample_successes(lm: Any, env_id: str, seeds: Sequence[int], samples: int, temperature: float, *,
                     seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """``[len(seeds), samples]`` bool: success of ``samples`` sampled completions of each problem."""
    agent = as_agent(lm)
    if not isinstance(agent, LMAgent):
        raise TypeError(f"sampling needs a TransformerLM (or LMAgent), got {type(agent).__name__}")
    if temperature <= 0:
        raise ValueError(f"sampling needs temperature > 0, got {temperature}")
    chooser = LMChooser(agent.lm, temperature, torch.Generator().manual_seed(seed), masked=agent.masked)
    per = max(1, batch_size // samples)  # problems per batch; each fills `samples` rows
    venv = make_vec(env_id, per * samples)
    check_profile(agent, venv, env_id)
    out = []
    for start in range(0, len(seeds), per):
        chunk = [int(s) for s in seeds[start:start + per]]
        played = play(venv, [s for s in chunk for _ in range(samples)], chooser)
        out.append(played.success.reshape(len(chunk), samples))
    venv.close()
    return np.concatenate(out)


def _rate(groups: dict[str, list[bool]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


#: How :meth:`EvalReport.breakdown` groups episodes: a key function returning the group names.
_GROUPS: dict[str, Callable[[Episode], Sequence[str]]] = {
    "env": lambda e: (e.env_id,),
    "depth": lambda e: (str(e.depth),),
    "skill": lambda e: tuple(sorted(set(e.skills))),
    "routing": lambda e: tuple(sorted(set(e.routings))),
}


@dataclass
class EvalReport:
    """Outcome of :func:`evaluate`: per-episode records and their summaries."""

    episodes: list[Episode]
    env_ids: list[str]
    seed: int
    episodes_per_env: int
    seconds: float = 0.0
    samples: int = 0
    temperature: float = 1.0

    @property
    def success(self) -> float:
        """Mean greedy (or the agent's own) success over all episodes (every env weighs by its episode count)."""
        return float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0

    def metrics(self, episodes: Sequence[Episode] | None = None) -> dict[str, float]:
        """``greedy`` success, and with samples ``sampled``, ``pass@k``, ``headroom`` (pass@k - greedy);
        ``all_steps_correct`` where the env reports it."""
        eps = self.episodes if episodes is None else episodes
        if not eps:
            return {}
        out = {"greedy": float(np.mean([e.success for e in eps]))}
        if self.samples:
            out["sampled"] = float(np.mean([np.mean(e.samples) for e in eps]))
            out[f"pass@{self.samples}"] = float(np.mean([any(e.samples) for e in eps]))
            out["headroom"] = out[f"pass@{self.samples}"] - out["greedy"]
        steps = [e.all_steps_correct for e in eps if e.all_steps_correct is not None]
        if steps:
            out["all_steps_correct"] = float(np.mean(steps))
        return out

    def breakdown(self, by: str) -> dict[str, dict[str, float]]:
        """:meth:`metrics` per env id, depth, skill or routing (``by``); a module's group holds the
        episodes whose cascade uses it."""
        if by not in _GROUPS:
            raise ValueError(f"unknown breakdown {by!r}; choose from {sorted(_GROUPS)}")
        groups: dict[str, list[Episode]] = defaultdict(list)
        for e in self.episodes:
            for g in _GROUPS[by](e):
                groups[g].append(e)
        keys = [k for k in self.env_ids if k in groups] if by == "env" else \
            sorted(groups, key=lambda k: int(k) if by == "depth" else k)
        return {k: self.metrics(groups[k]) for k in keys}

    @property
    def success_by_env(self) -> dict[str, float]:
        """Success rate per env id, in the order evaluated."""
        return {k: v["greedy"] for k, v in self.breakdown("env").items()}

    @property
    def by_depth(self) -> dict[str, float]:
        """Success rate per cascade depth (keys ``"1"``, ``"3"``, …)."""
        return {k: v["greedy"] for k, v in self.breakdown("depth").items()}

    @property
    def by_skill(self) -> dict[str, float]:
        """Success rate over the episodes whose cascade uses each skill."""
        return {k: v["greedy"] for k, v in self.breakdown("skill").items()}

    @property
    def by_routing(self) -> dict[str, float]:
        """Success rate over the episodes whose cascade uses each routing mechanism."""
        return {k: v["greedy"] for k, v in self.breakdown("routing").items()}

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
            "samples": self.samples,
            "temperature": self.temperature,
            "success": self.success,
            "metrics": self.metrics(),
            "success_by_env": self.success_by_env,
            "by_env": self.breakdown("env"),
            "by_depth": self.by_depth,
            "by_skill": self.by_skill,
            "by_routing": self.by_routing,
            "breakdown": {by: self.breakdown(by) for by in ("depth", "skill", "routing")},
            "step_accuracy": self.step_accuracy,
            "seconds": self.seconds,
            "episodes": [{k: v for k, v in asdict(e).items() if k not in ("tokens", "expert_labels")}
                         for e in self.episodes],
        }

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` (atomically: a killed write leaves the old file)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1))

    def table(self, title: str | None = None) -> str:
        """Tables rendered by ``rich``: metrics by env id (with the headroom pass@k - greedy when
        sampled), then by depth, skill and routing, and step accuracy."""
        from rich.console import Console
        from rich.table import Table

        names = list(self.metrics())
        buffer = io.StringIO()
        console = Console(file=buffer, width=160, force_terminal=False, color_system=None)

        def render(heading: str, rows: dict[str, dict[str, float]], total: bool) -> None:
            t = Table(title=heading, title_justify="left")
            t.add_column(heading.split()[-1] if heading.startswith("by") else "env id")
            t.add_column("episodes", justify="right")
            for n in names:
                t.add_column(n, justify="right")
            counts = defaultdict(int)
            for e in self.episodes:
                for by in ("env",) if not heading.startswith("by") else (heading.split()[-1],):
                    for g in _GROUPS[by](e):
                        counts[g] += 1
            for k, m in rows.items():
                label = short_name(k) if k in self.env_ids else k
                t.add_row(label, str(counts[k]), *(f"{m.get(n, float('nan')):.1%}" for n in names))
            if total:
                t.add_row("all", str(len(self.episodes)), *(f"{v:.1%}" for v in self.metrics().values()),
                          end_section=True)
            console.print(t)

        if title:
            console.print(title)
        render("success", self.breakdown("env"), True)
        for by in ("depth", "skill", "routing"):
            render(f"by {by}", self.breakdown(by), False)
        console.print("by step    " + "  ".join(f"{k}={v:.0%}" for k, v in self.step_accuracy.items()))
        return buffer.getvalue().rstrip()


def evaluate(agent: Any, env_ids: str | Sequence[str], episodes: int, seed: int = 0, *, samples: int = 0,
             temperature: float = 1.0, batch_size: int = 64, sample_batch_size: int = 512,
             threads: int | None = None, device: str | None = None) -> EvalReport:
    """Play ``episodes`` episodes of each env id and summarise success.

    Args:
        agent: an agent (``act(obs, info) -> int``), an SB3 model or a :class:`TransformerLM`.
        env_ids: registered ids (one or several).
        episodes: episodes per env id; episode ``i`` resets with seed ``seed + i``.
        seed: base seed (also seeds the sampling).
        samples: ``k > 0`` also samples ``k`` completions of every problem at ``temperature``
            (a language model only) for sampled success, pass@k and headroom.
        temperature: sampling temperature (> 0).
        batch_size: lockstep width of the greedy episodes; ``sample_batch_size``: of the sampled ones.
        threads: torch threads (``None``: the project's policy,
            :func:`~composition_gym.agents.settings.resolve_threads`); restored afterwards.
        device: move the agent's torch model (a :class:`TransformerLM` or an SB3 policy) to this
            device first, after checking that this machine has it (``None``: leave it where it is).

    Raises:
        ValueError: on an unknown env id, ``episodes < 1``, ``samples < 0``, ``temperature <= 0``
            with samples, a device this machine lacks, an agent whose observation space does not
            match the env's, or a language model trained on another profile than the env's
            (modules or letters it never saw).
        TypeError: ``samples > 0`` with an agent that is not a language model.
    """
    ids = resolve_env_ids(env_ids)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be >= 1 (an int), got {episodes!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples must be an int >= 0, got {samples!r}")
    if device is not None:
        agent = _to_device(agent, device)
    agent = as_agent(agent)
    if samples and not isinstance(agent, LMAgent):
        raise TypeError(f"samples={samples} needs a TransformerLM agent (it samples its distribution), "
                        f"got {type(agent).__name__}")
    if samples and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    t0 = time.perf_counter()
    records: list[Episode] = []
    with torch_threads(threads):
        for k, env_id in enumerate(ids):
            seeds = [seed + i for i in range(episodes)]
            eps = rollout(agent, env_id, seeds, batch_size=batch_size)
            if samples:
                wins = sample_successes(agent, env_id, seeds, samples, temperature, seed=seed + seed_offsets.SAMPLING * k,
                                        batch_size=sample_batch_size)
                for e, w in zip(eps, wins):
                    e.samples = tuple(bool(x) for x in w)
            records += eps
    return EvalReport(records, ids, seed, episodes, time.perf_counter() - t0, samples, float(temperature))


def paired_differences(before: EvalReport, after: EvalReport) -> dict[str, dict[str, dict[str, float]]]:
    """``after - before`` on the same problems, per env id and measure, with its standard error.

    Both reports must come from :func:`evaluate` with the same env ids, episodes, seed and
    ``samples``, so episode ``i`` of an env is the same problem in both.  Measures: ``greedy``
    success and, with samples, ``sampled`` (mean over the samples) and ``pass@k``.  Returns
    ``{env id: {measure: {"before", "after", "diff", "se"}}}``; ``se`` is the standard error of the
    mean per-problem difference (the pairing removes the problems' own difficulty from it).

    Raises:
        ValueError: when the reports did not play the same problems.
    """
    same = (before.env_ids == after.env_ids and before.seed == after.seed
            and before.episodes_per_env == after.episodes_per_env and before.samples == after.samples)
    if not same:
        raise ValueError("paired differences need two evaluations of the same env ids, episodes, seed and samples")
    measures = {"greedy": lambda e: float(e.success)}
    if before.samples:
        measures["sampled"] = lambda e: float(np.mean(e.samples))
        measures[f"pass@{before.samples}"] = lambda e: float(any(e.samples))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for env in before.env_ids:
        pairs = [(a, b) for a, b in zip(before.episodes, after.episodes) if a.env_id == env]
        if any(a.seed != b.seed for a, b in pairs):
            raise ValueError(f"paired differences: the reports played different problems on {env}")
        row = {}
        for name, f in measures.items():
            x = np.array([f(a) for a, _ in pairs])
            y = np.array([f(b) for _, b in pairs])
            d = y - x
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            row[name] = {"before": float(x.mean()), "after": float(y.mean()), "diff": float(d.mean()), "se": se}
        out[env] = row
    return out


__all__ = ["Episode", "EvalReport", "evaluate", "paired_differences", "rollout", "sample_successes"]
