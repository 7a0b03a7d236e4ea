"""Trainers by name: one signature for every way a model is trained further from a checkpoint.

``TRAINERS[name].train(env_id, lm, config, episodes=…, seed=…, run_dir=…, device=…)`` returns
``(lm, stats)``.  The reproduction's arms (:mod:`composition_gym.benchmarks.experiment.protocol`)
look their trainer up here instead of branching on it, so a new trainer is one entry:

* ``sft``: behavior cloning continued on expert traces (:class:`~.settings.BCConfig`);
* ``grpo`` / ``drgrpo`` / ``rloo``: group-relative RL (:class:`~.settings.GRPOConfig`; ``grpo``
  keeps the config's ``advantage``, the other two names set theirs);
* ``maskable_ppo``: SB3 MaskablePPO on the transformer policy (:class:`~.settings.PPOConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from composition_gym.agents import seeds
from composition_gym.agents.settings import BCConfig, GRPOConfig, PPOConfig
from composition_gym.config import Config
from composition_gym.agents.policy import lm_from_policy
from composition_gym.agents.ppo import train_ppo
from composition_gym.agents.bc import behavior_cloning, expert_sequences
from composition_gym.agents.grpo import train_grpo


@dataclass(frozen=True)
class ReplayPool:
    """Expert traces of another set (e.g. the SFT set) mixed into training so that it is not
    forgotten: ``episodes`` problems of ``env_id``, problem ``i`` from seed ``seed + i``."""

    env_id: str
    episodes: int
    seed: int


@dataclass(frozen=True)
class Trainer:
    """A named trainer: its config class and ``train(env_id, lm, config, **run) -> (lm, stats)``.

    ``run`` is ``episodes`` (the arm's budget), ``seed``, ``run_dir``, ``device`` and ``replay`` (a
    :class:`ReplayPool` or ``None``; a trainer that cannot replay refuses one).
    """

    name: str
    config: type[Config]
    train: Callable[..., tuple[Any, dict[str, Any]]]


def _sft(env_id: str, lm: Any, config: BCConfig, *, episodes: int, seed: int, run_dir: str | None, device: str,
         replay: ReplayPool | None = None) -> tuple[Any, dict[str, Any]]:
    """Behavior cloning from ``lm`` on ``config.episodes`` expert traces of ``env_id`` (``episodes``
    unused), the replay pool's traces appended to them."""
    extra = None if replay is None else expert_sequences([replay.env_id], replay.episodes, replay.seed)
    return behavior_cloning(env_id, settings=config, lm=lm, seed=seed, tensorboard_log=run_dir, run_dir=run_dir,
                            progress=False, threads=1, device=device, extra=extra)


def _group_relative(advantage: str | None) -> Callable[..., tuple[Any, dict[str, Any]]]:
    def train(env_id: str, lm: Any, config: GRPOConfig, *, episodes: int, seed: int, run_dir: str | None,
              device: str, replay: ReplayPool | None = None) -> tuple[Any, dict[str, Any]]:
        """Group-relative RL for ``config.iterations`` iterations (resumes from ``run_dir``'s checkpoint);
        with a replay pool, ``config.replay_coef`` x its teacher-forced loss joins every step."""
        cfg = config if advantage is None else dataclasses.replace(config, advantage=advantage)
        if replay is not None and (replay.episodes, replay.seed) != (cfg.replay_episodes, seed + seeds.REPLAY):
            raise ValueError("group-relative RL draws its replay pool itself: replay_episodes problems from "
                             "seed + seeds.REPLAY")
        lm, stats = train_grpo(env_id, lm, cfg, seed=seed, run_dir=run_dir, progress=False, device=device, resume=True,
                               replay_env_id=None if replay is None else replay.env_id)
        numbers = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return lm, {**numbers, "episodes": episodes, "iterations": cfg.iterations}

    return train


def _maskable_ppo(env_id: str, lm: Any, config: PPOConfig, *, episodes: int, seed: int, run_dir: str | None,
                  device: str, replay: ReplayPool | None = None) -> tuple[Any, dict[str, Any]]:
    """MaskablePPO for about ``episodes`` episodes: SB3 counts tokens, so the budget is ``episodes``
    x the mean length of the expert's episodes on ``env_id`` (recorded)."""
    if replay is not None:
        raise ValueError("SB3 MaskablePPO has no replay of a set; run it in a cell without replay")

    mean_len = mean_episode_tokens(env_id, seed)
    steps = max(1, round(episodes * mean_len))
    model = train_ppo(env_id, lm, steps, settings=config, seed=seed, run_dir=run_dir, progress=False, threads=1,
                      device=device)
    return lm_from_policy(model.policy), {"episodes": episodes, "timesteps": steps, "mean_expert_episode_tokens": mean_len}


def mean_episode_tokens(env_id: str, seed: int, episodes: int = 64) -> float:
    """Mean length (tokens) of the expert's episodes on ``env_id``."""
    env = gym.make(env_id)
    total = 0
    for i in range(episodes):
        env.reset(seed=seed + seeds.EPISODE_LENGTH + i)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
            total += 1
            done = terminated or truncated
    env.close()
    return total / episodes


TRAINERS: dict[str, Trainer] = {
    t.name: t
    for t in (
        Trainer("sft", BCConfig, _sft),
        # "grpo" trains with the config's own advantage; the other two names fix theirs.
        Trainer("grpo", GRPOConfig, _group_relative(None)),
        *(Trainer(name, GRPOConfig, _group_relative(name)) for name in ("drgrpo", "rloo")),
        Trainer("maskable_ppo", PPOConfig, _maskable_ppo),
    )
}

__all__ = ["ReplayPool", "TRAINERS", "Trainer", "mean_episode_tokens"]
