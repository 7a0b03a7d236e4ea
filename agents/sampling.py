"""Batched episodes on the native vector env: the one rollout path of the agents package.

:func:`play` resets a :class:`~composition_gym.vector.CompositionVectorEnv` with one seed per row
(row ``i`` meets exactly the problem ``gym.make(id).reset(seed=seeds[i])`` meets) and steps all
rows in lockstep until every episode has ended, asking a *chooser* for the tokens of the rows
still playing.  Three choosers cover every user:

* :class:`LMChooser`: a :class:`~composition_gym.agents.transformer.TransformerLM` with a KV cache
  (the prompt is prefilled once, then one position per row and step), greedy or sampled at a
  temperature under the grammar mask: RL sampling, evaluation and :class:`LMAgent`;
* :class:`AgentChooser`: any agent with ``act_batch`` (or ``act``, one row at a time);
* the env's own oracle (``chooser=None``): behavior-cloning data.

Rows whose episode has ended are restarted on their own problem (a seeded reset with the problem
given: no new problem is drawn) and fed a legal token (the oracle's when it is asked for anyway,
else the highest legal one) until the last row ends; what they play is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from composition_gym import tokens as T
from composition_gym.agents.transformer import TransformerLM


@dataclass
class Played:
    """Ended episodes of one :func:`play` call, one row per seed.

    Attributes:
        obs: ``[N, max_len]`` final observations (prompt + trace, right-padded).
        prompt_len: ``[N]`` prompt tokens (the trace starts there).
        actions: ``[N, S]`` tokens written (``<pad>`` after a row's end).
        masks: ``[N, S, V]`` grammar masks at each written token (only with ``record_masks``).
        expert: ``[N, S]`` the oracle's token at each visited state (only with ``record_expert``).
        steps: ``[N]`` tokens written per row.
        reward: ``[N]`` episode return.
        infos: the env's final ``info`` per row (``is_success``, ``diagnosis``, ``cascade`` …).
        log_probs: ``[N, S]`` float32 ``log p`` of each written token under the distribution it
            was sampled from (only with ``record_log_probs``; 0 after a row's end).
    """

    obs: np.ndarray
    prompt_len: np.ndarray
    actions: np.ndarray
    masks: np.ndarray | None
    expert: np.ndarray | None
    steps: np.ndarray
    reward: np.ndarray
    infos: list[dict[str, Any]]
    log_probs: np.ndarray | None = None

    @property
    def success(self) -> np.ndarray:
        """``[N]`` bool: the env's ``is_success``."""
        return np.array([bool(i["is_success"]) for i in self.infos])


class LMChooser:
    """Tokens from a :class:`TransformerLM` with a KV cache: greedy (``temperature=0``) or sampled.

    The cache holds one row per distinct *history* (prompt + tokens so far), not per episode:
    rows with the same prompt are prefilled once, and the samples of one history are decoded once
    until they diverge (:meth:`KVCache.fork <composition_gym.agents.kv_cache.KVCache.fork>`);
    histories whose episodes have all ended are dropped.  Group-relative RL's ``G`` samples of a
    problem from a confident model share most of their tokens, so decoding costs follow the
    distinct histories, not the rows.  Every row still samples from its own copy of the logits,
    in row order: the random draws are those of decoding each row on its own.

    Args:
        lm: the model (its device is used).
        temperature: ``0`` takes the masked argmax; ``> 0`` samples ``softmax(logits / T)``
            restricted to the grammar mask.
        generator: the ``torch.Generator`` for sampling (repeatable runs).
        masked: restrict to the grammar mask (``False``: the raw argmax or distribution).

    Attributes:
        log_probs: with ``record_log_probs`` set, after each sampled :meth:`choose`
            (``temperature > 0``), ``log p`` of the chosen tokens under the tempered, masked
            distribution they were drawn from (the behaviour policy's log-probabilities that
            group-relative RL's ratio needs); else ``None``.
    """

    def __init__(self, lm: TransformerLM, temperature: float = 0.0, generator: torch.Generator | None = None,
                 masked: bool = True):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.lm, self.temperature, self.generator, self.masked = lm, float(temperature), generator, masked
        self.device = next(lm.parameters()).device
        self.record_log_probs = False  # set by play(record_log_probs=True)
        self.log_probs: np.ndarray | None = None

    @torch.no_grad()
    def start(self, obs: np.ndarray) -> None:
        """Prefill the cache with every distinct prompt, once."""
        prompts, self.slot = np.unique(obs, axis=0, return_inverse=True)  # env row -> cache row
        self.slot = self.slot.reshape(-1)
        ids = torch.as_tensor(prompts, dtype=torch.int64, device=self.device)
        self.logits, self.cache = self.lm.prefill(ids, capacity=ids.shape[1])
        self.pending: torch.Tensor | None = None

    @torch.no_grad()
    def choose(self, obs: np.ndarray, masks: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Tokens for the env rows ``alive`` (a sorted subset of the rows of the last call)."""
        if self.pending is not None:
            self.logits = self.lm.decode(self.pending, self.cache)
        slot = self.slot[alive]
        logits = self.logits[torch.as_tensor(slot, device=self.device)]  # every row its own copy
        if self.masked:  # one tensor op for the whole batch
            m = masks if len(alive) == len(masks) else masks[alive]
            logits = logits.masked_fill(~torch.as_tensor(m, device=self.device), float("-inf"))
        self.log_probs = None
        if self.temperature == 0:
            tokens = logits.argmax(dim=-1)
        else:
            scaled = logits.float() / self.temperature
            tokens = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=self.generator)[:, 0]
            if self.record_log_probs:
                self.log_probs = torch.log_softmax(scaled, dim=-1).gather(1, tokens[:, None])[:, 0].cpu().numpy()
        chosen = tokens.cpu().numpy()
        # The next histories: one per distinct (history, token); a row no live episode continues
        # is fed <pad> and ignored until the cache compacts.
        vocab = self.logits.shape[1]
        histories, which = np.unique(slot * vocab + chosen, return_inverse=True)
        rows = self.cache.fork(histories // vocab)
        self.slot[alive] = rows[which.reshape(-1)]
        pending = np.full(self.cache.rows, T.PAD_ID, dtype=np.int64)
        pending[rows] = histories % vocab
        self.pending = torch.as_tensor(pending, device=self.device)
        return chosen


class AgentChooser:
    """Tokens from an agent: ``act_batch`` over the live rows, else ``act`` row by row."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.batched = callable(getattr(agent, "act_batch", None))

    def start(self, obs: np.ndarray) -> None:
        """Nothing to prepare: agents read the observation."""

    def choose(self, obs: np.ndarray, masks: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Tokens for the env rows ``alive``."""
        infos = [{"action_mask": masks[i]} for i in alive]
        if self.batched:
            return np.asarray(self.agent.act_batch(obs[alive], infos), dtype=np.int64).reshape(len(alive))
        return np.array([int(self.agent.act(obs[i], info)) for i, info in zip(alive, infos)], dtype=np.int64)


def _final_info(info: dict[str, Any], i: int) -> dict[str, Any]:
    """Row ``i``'s entries of a batched ``info`` (the keys whose ``_key`` flag is set for it)."""
    return {k: v[i] for k, v in info.items() if not k.startswith("_") and info.get("_" + k, np.ones(1, bool))[i]}


def play(venv: gym.vector.VectorEnv, seeds: list[int], chooser: Any | None, *, record_masks: bool = False,
         record_expert: bool = False, record_log_probs: bool = False) -> Played:
    """Play one episode per seed on ``venv`` (rows past ``len(seeds)`` idle) until all have ended.

    Args:
        venv: a composition vector env with ``num_envs >= len(seeds)``.
        seeds: row ``i`` is reset with ``seeds[i]``.
        chooser: :class:`LMChooser`, :class:`AgentChooser`, or ``None`` for the env's oracle.
        record_masks: keep the grammar mask at every written token (RL's masked log-softmax).
        record_expert: keep the oracle's token at every visited state (DAgger labels).
        record_log_probs: keep the sampling log-probability of every written token (a sampling
            :class:`LMChooser` only).
    """
    env = venv.unwrapped
    n, count = venv.num_envs, len(seeds)
    if not 1 <= count <= n:
        raise ValueError(f"need 1..{n} seeds for a vector env of {n} rows, got {count}")
    if record_log_probs and not (isinstance(chooser, LMChooser) and chooser.temperature > 0):
        raise ValueError("record_log_probs needs an LMChooser that samples (temperature > 0)")
    all_seeds = [int(s) for s in seeds] + [int(seeds[-1])] * (n - count)
    obs, info = venv.reset(seed=all_seeds)
    prompt_len = (obs != T.PAD_ID).sum(axis=1)
    width = obs.shape[1]
    actions = np.zeros((count, width), dtype=np.int64)
    masks = np.zeros((count, width, T.VOCAB_SIZE), dtype=bool) if record_masks else None
    expert = np.zeros((count, width), dtype=np.int64) if record_expert else None
    log_probs = np.zeros((count, width), dtype=np.float32) if record_log_probs else None
    steps = np.zeros(count, dtype=np.int64)
    reward = np.zeros(count, dtype=np.float64)
    final_obs = np.zeros((count, width), dtype=np.int64)
    infos: list[dict[str, Any]] = [{} for _ in range(count)]
    alive = np.arange(count)
    if isinstance(chooser, LMChooser):
        chooser.record_log_probs = record_log_probs
    if chooser is not None:
        chooser.start(obs)
    need_oracle = chooser is None or record_expert
    while alive.size:
        mask = info["action_mask"]
        if need_oracle:
            oracle = env.expert_actions()
            step_actions = oracle.copy()
        else:
            # Rows whose episode has ended replay their problem, ignored, until the last row ends:
            # any legal token will do (the highest is a letter or a tag, rarely <eos>), without
            # asking the oracle for every row at every step.
            step_actions = T.VOCAB_SIZE - 1 - np.argmax(mask[:, ::-1], axis=1)
        chosen = oracle[alive] if chooser is None else chooser.choose(obs, mask, alive)
        step_actions[alive] = chosen
        k = steps[alive]
        actions[alive, k] = chosen
        if masks is not None:
            masks[alive, k] = mask[alive]
        if expert is not None:
            expert[alive, k] = oracle[alive]
        if log_probs is not None:
            log_probs[alive, k] = chooser.log_probs
        obs, r, terminated, truncated, info = venv.step(step_actions)
        steps[alive] += 1
        reward[alive] += r[alive]
        ended = alive[(terminated | truncated)[alive]]
        for i in ended.tolist():
            final_obs[i] = obs[i]
            infos[i] = _final_info(info, i)
        alive = alive[~(terminated | truncated)[alive]]
        done = terminated | truncated
        if alive.size and done.any():
            # Restart every ended episode on its own problem, seeded: an autoreset would draw a new
            # problem nobody reads (with a seed and a given problem the env draws nothing).
            problems = env.problems
            obs, restarted = venv.reset(seed=all_seeds, options={"reset_mask": done,
                                                                 "problem": [problems[i] for i in np.flatnonzero(done)]})
            info["action_mask"][done] = restarted["action_mask"][done]
    width_used = max(int(steps.max()), 1)
    return Played(final_obs, prompt_len[:count], actions[:, :width_used],
                  None if masks is None else masks[:, :width_used],
                  None if expert is None else expert[:, :width_used], steps, reward, infos,
                  None if log_probs is None else log_probs[:, :width_used])


def make_vec(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.VectorEnv:
    """The native vector env of ``env_id`` (its ``vector_entry_point``) with ``num_envs`` rows."""
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)


__all__ = ["AgentChooser", "LMChooser", "Played", "make_vec", "play"]
