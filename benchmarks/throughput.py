"""Throughput of the environments and of training, as ratios against references measured in one run.

``compgym bench`` (or ``python -m composition_gym.benchmarks.throughput``) measures, each part in a fresh
subprocess so that peak memory is its own (each worker imports what it measures inside its
function, for start-up speed and so that its peak memory is its own):

a. **env step**: steps/s of ``Compose-L3-v0`` under ``gym.make`` against Gymnasium's
   ``CartPole-v1`` in the same process with the same loop (:func:`masked_step_rate`: random
   *valid* actions, reset at episode end), and Gymnasium's own
   ``gymnasium.utils.performance.benchmark_step`` (uniform random actions: for a token env most
   of those are ungrammatical and end the episode, so that row mostly times ``reset``);
b. **vector env**: :class:`~composition_gym.vector.CompositionVectorEnv` against
   ``SyncVectorEnv`` over the single env, ``N = 256``, same process, random valid actions;
c. **PPO training**: SB3 ``PPO`` env steps/s with the transformer policy of
   :mod:`composition_gym.agents.policy`, against ``MlpPolicy`` and against a *naive* extractor with the same
   weights (full padded width, every position through every layer);
d. **behavior cloning**: trace tokens/s of teacher-forced training, batches trimmed to their
   longest sequence (as :mod:`composition_gym.agents.bc` does) against padded to the observation length;
e. **reset**: ``reset()`` calls per CPU second of the v1 ids (identifiable problems) against the v0
   ids they refine, including identifiable depth 4 against plain depth 4;
f. **group-relative RL** against its model's own limit (:func:`bench_grpo`, one torch thread on
   every side): the trainer's sampled tokens/s against behavior cloning's teacher-forced tokens/s
   on the same model, decoding tokens/s against the same, the env's share of an iteration and the
   iteration's peak RSS growth; SB3 MaskablePPO on the same model stays as the ecosystem's
   reference row;
g. **peak memory** of each: traced Python/numpy allocations (``tracemalloc``) for the
   environments, growth of the process's peak RSS for the torch parts.

Where one group-relative iteration spends its time is :mod:`composition_gym.benchmarks.profile_grpo`.

Prints a table and writes ``benchmarks/results/throughput.json``.  Timings are noisy on a shared
machine: compare the ratios, which are measured side by side.  (One module for all of
``compgym bench``: the workers, the goals and the table share their keys, so the file runs past
400 lines.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from composition_gym.config import Config

ENV_ID = "composition_gym/Compose-L3-v0"
REFERENCE_ID = "CartPole-v1"
N_ENVS = 256
#: Goals met when the ratio is at least the value; those in MAX_GOALS when it is at most the value.
GOALS = {"env_vs_cartpole": 1.0, "vector_vs_sync": 20.0, "transformer_vs_naive": 4.0, "v1_reset_vs_v0": 0.5,
         "l4_identifiable_reset_vs_v0": 0.5, "grpo_vs_bc": 0.5, "decode_vs_bc": 2.0, "grpo_env_share": 0.10,
         "grpo_iteration_rss_mb": 300.0}
MAX_GOALS = frozenset({"grpo_env_share", "grpo_iteration_rss_mb"})
#: v1 ids (identifiable problems, depth mixing) against the v0 id they refine: reset() throughput.
RESET_PAIRS = (("Compose-L1to3", "Compose-L3"), ("Compose-L3", "Compose-L3"), ("OOD-Depth-L4", "OOD-Depth-L4"))
#: Group-relative RL's row: B problems x G samples per iteration on the shipped model (d=64, 3 layers),
#: every group updated (no zero-variance dropping, so the whole update counts), minibatches of 512.
GRPO_SETTINGS = {"problems_per_iter": 256, "group_size": 8, "iterations": 2, "minibatch_size": 512}
#: Teacher-forced BC batches for the ratio against group-relative RL (BCConfig's default batch size).
GRPO_BC_BATCH = 128
# The transformer of the "naive 2-layer, d = 64" reference.
BENCH_TRANSFORMER = {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 256}
PPO_SETTINGS = {"n_envs": 8, "n_steps": 128, "batch_size": 256, "n_epochs": 4}


# ---------------------------------------------------------------------------- sizes
def _sizes(quick: bool) -> dict[str, Any]:
    """How long each measurement runs: ``quick`` is a smoke run (seconds, numbers meaningless)."""
    if quick:
        return {"seconds": 0.2, "rounds": 1, "mem_steps": 100, "ppo_steps": 64, "ppo_n_steps": 8,
                "ppo_batch_size": 64, "bc_episodes": 16, "bc_batches": 2}
    return {"seconds": 4.0, "rounds": 2, "mem_steps": 3000, "ppo_steps": 4096, "ppo_n_steps": PPO_SETTINGS["n_steps"],
            "ppo_batch_size": PPO_SETTINGS["batch_size"], "bc_episodes": 1000, "bc_batches": 60}


# ---------------------------------------------------------------------------- env stepping
def masked_step_rate(env, seconds: float, seed: int = 0) -> float:
    """Steps/s of ``env`` with uniformly random *valid* actions, resetting at episode end.

    Gymnasium's ``benchmark_step`` loop, except that the action is drawn from
    ``info["action_mask"]`` (all actions where the env gives no mask, as CartPole), through the
    same code for every env so that the loop costs both the same.
    """
    rng = np.random.default_rng(seed)
    everything = np.ones(env.action_space.n, dtype=np.int8)
    _, info = env.reset(seed=seed)
    steps, start = 0, time.perf_counter()
    while True:
        valid = np.flatnonzero(info.get("action_mask", everything))
        _, _, terminated, truncated, info = env.step(int(valid[rng.integers(len(valid))]))
        if terminated or truncated:
            _, info = env.reset()
        steps += 1
        if steps % 64 == 0 and time.perf_counter() - start > seconds:
            return steps / (time.perf_counter() - start)


def _traced_peak_mb(fn) -> float:
    """Peak traced allocations (MB) while ``fn()`` runs (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def bench_env(quick: bool) -> dict[str, Any]:
    """Part a: our env and CartPole in this process, alternating rounds; best round of each."""
    import gymnasium as gym
    from gymnasium.utils.performance import benchmark_step

    import composition_gym  # noqa: F401

    size = _sizes(quick)
    rates: dict[str, list[float]] = {ENV_ID: [], REFERENCE_ID: []}
    gym_rates: dict[str, list[float]] = {ENV_ID: [], REFERENCE_ID: []}
    envs = {name: gym.make(name) for name in rates}
    for r in range(size["rounds"]):
        for name, env in envs.items():
            rates[name].append(masked_step_rate(env, size["seconds"], seed=r))
            gym_rates[name].append(benchmark_step(env, target_duration=size["seconds"] / 2, seed=r))

    def run_steps(name: str) -> None:
        env = gym.make(name)
        rng = np.random.default_rng(0)
        everything = np.ones(env.action_space.n, dtype=np.int8)
        _, info = env.reset(seed=0)
        for _ in range(size["mem_steps"]):
            valid = np.flatnonzero(info.get("action_mask", everything))
            _, _, te, tr, info = env.step(int(valid[rng.integers(len(valid))]))
            if te or tr:
                _, info = env.reset()

    ours, ref = max(rates[ENV_ID]), max(rates[REFERENCE_ID])
    return {
        "env_id": ENV_ID, "reference_id": REFERENCE_ID,
        "method": "masked_step_rate: random valid actions, reset at episode end, best of rounds",
        "steps_per_s": {ENV_ID: ours, REFERENCE_ID: ref},
        "ratio": ours / ref,
        "gymnasium_benchmark_step": {"steps_per_s": {k: max(v) for k, v in gym_rates.items()},
                                     "ratio": max(gym_rates[ENV_ID]) / max(gym_rates[REFERENCE_ID])},
        "peak_mb": {name: _traced_peak_mb(lambda name=name: run_steps(name)) for name in rates},
        "memory_method": f"tracemalloc peak over make + {size['mem_steps']} steps",
    }


# ---------------------------------------------------------------------------- reset
def reset_rate(env, seconds: float, seed: int = 0) -> float:
    """``reset()`` calls per CPU second (each draws and executes a fresh problem)."""
    env.reset(seed=seed)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        for _ in range(50):
            env.reset()
        n += 50
    return n / (time.process_time() - t0)


def bench_reset(quick: bool) -> dict[str, Any]:
    """v1 ids against their v0 counterparts: reset throughput, alternating rounds, best of each."""
    import gymnasium as gym

    from composition_gym.registration import env_id

    size = _sizes(quick)
    out: dict[str, Any] = {"method": "reset_rate: reset() calls per CPU second, alternating rounds, best round",
                           "pairs": {}}
    for new, old in RESET_PAIRS:
        ids = (env_id(new, version="v1"), env_id(old, version="v0"))
        envs = [gym.make(i) for i in ids]
        rates: list[list[float]] = [[], []]
        for r in range(size["rounds"]):
            for k, env in enumerate(envs):
                rates[k].append(reset_rate(env, size["seconds"] / 2, seed=r))
        best = [max(x) for x in rates]
        out["pairs"][f"{new}-v1 / {old}-v0"] = {"resets_per_s": dict(zip(ids, best)), "ratio": best[0] / best[1]}
    return out


# ---------------------------------------------------------------------------- vector env
def vector_step_rate(env, seconds: float, seed: int = 0) -> float:
    """Sub-environment steps/s of a vector env with random valid actions (autoreset steps not counted).

    Counting follows ``gymnasium.utils.performance.benchmark_vector_step`` under ``NEXT_STEP``.
    """
    n = env.num_envs
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    previous_done = np.zeros(n, dtype=bool)
    steps, rounds, start = 0, 0, time.perf_counter()
    while True:
        mask = info["action_mask"]
        count = mask.sum(axis=1)
        pick = (rng.random(n) * count).astype(np.int64)
        # Index of the pick-th valid token per row (row of zeros -> token 0, an ignored autoreset).
        actions = np.argmax(np.cumsum(mask, axis=1) > pick[:, None], axis=1)
        _, _, terminated, truncated, info = env.step(actions)
        steps += n - int(previous_done.sum())
        previous_done = terminated | truncated
        rounds += 1
        if rounds % 8 == 0 and time.perf_counter() - start > seconds:
            return steps / (time.perf_counter() - start)


def bench_vector(quick: bool) -> dict[str, Any]:
    """Part b: native vector env against ``SyncVectorEnv`` at ``N = 256``, same process."""
    import gymnasium as gym

    import composition_gym  # noqa: F401

    size = _sizes(quick)
    modes = {"sync": "sync", "native": "vector_entry_point"}
    rates: dict[str, list[float]] = {k: [] for k in modes}
    envs = {k: gym.make_vec(ENV_ID, num_envs=N_ENVS, vectorization_mode=m) for k, m in modes.items()}
    for r in range(size["rounds"]):
        for k, env in envs.items():
            rates[k].append(vector_step_rate(env, size["seconds"], seed=r))

    def run_steps(mode: str) -> None:
        env = gym.make_vec(ENV_ID, num_envs=N_ENVS, vectorization_mode=mode)
        vector_step_rate(env, 0.0)  # creation, reset and a few steps
        for _ in range(max(1, size["mem_steps"] // 100)):
            env.step(env.unwrapped.expert_actions() if mode != "sync" else np.zeros(N_ENVS, dtype=np.int64))

    sync, native = max(rates["sync"]), max(rates["native"])
    return {
        "env_id": ENV_ID, "num_envs": N_ENVS,
        "method": "vector_step_rate: random valid actions, NEXT_STEP autoreset steps not counted, best of rounds",
        "steps_per_s": {"SyncVectorEnv": sync, "CompositionVectorEnv": native},
        "ratio": native / sync,
        "peak_mb": {"SyncVectorEnv": _traced_peak_mb(lambda: run_steps("sync")),
                    "CompositionVectorEnv": _traced_peak_mb(lambda: run_steps("vector_entry_point"))},
        "memory_method": "tracemalloc peak over make_vec + reset + steps",
    }


# ---------------------------------------------------------------------------- torch parts
def _maxrss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 2**10  # bytes on macOS, KiB on Linux


def _naive_extractor_class():
    """The transformer extractor without its optimisations: the "before" of part c."""
    import torch

    from composition_gym.agents.policy import TransformerExtractor
    from composition_gym.agents.transformer import real_lengths

    class NaiveTransformerExtractor(TransformerExtractor):
        """Same weights; attends over the full padded width and runs every position through every layer."""

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            ids = observations.long()
            hidden = self.body(ids)
            last = (real_lengths(ids) - 1).clamp(min=0)
            return hidden[torch.arange(ids.shape[0]), last]

    return NaiveTransformerExtractor


def bench_ppo(policy: str, quick: bool) -> dict[str, Any]:
    """Part c, one policy (``mlp``, ``transformer`` or ``naive``): PPO env steps/s and peak RSS growth."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    import composition_gym  # noqa: F401

    size = _sizes(quick)
    # SB3 defaults render_mode to "rgb_array", which a text env does not have.
    vec_env = make_vec_env(ENV_ID, n_envs=PPO_SETTINGS["n_envs"], seed=0, env_kwargs={"render_mode": None})
    kwargs = dict(n_steps=size["ppo_n_steps"], batch_size=size["ppo_batch_size"],
                  n_epochs=PPO_SETTINGS["n_epochs"], seed=0, verbose=0, device="cpu")
    if policy == "mlp":
        model = PPO("MlpPolicy", vec_env, **kwargs)
    elif policy in ("transformer", "naive"):
        from composition_gym.agents.policy import TransformerActorCriticPolicy, transformer_policy_kwargs
        from composition_gym.agents.transformer import TransformerConfig

        policy_kwargs = transformer_policy_kwargs(TransformerConfig(**BENCH_TRANSFORMER))
        if policy == "naive":
            policy_kwargs["features_extractor_class"] = _naive_extractor_class()
        model = PPO(TransformerActorCriticPolicy, vec_env, policy_kwargs=policy_kwargs, **kwargs)
    else:
        raise ValueError(f"unknown policy {policy!r}; choose mlp, transformer or naive")
    before = _maxrss_mb()
    model.learn(total_timesteps=model.n_steps * model.n_envs)  # warm-up: one rollout and update, untimed
    warm = model.num_timesteps
    start = time.perf_counter()
    model.learn(total_timesteps=size["ppo_steps"], reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    steps = model.num_timesteps - warm
    return {"policy": policy, "steps": int(steps), "seconds": seconds, "steps_per_s": steps / seconds,
            "peak_rss_growth_mb": _maxrss_mb() - before, "torch_threads": torch.get_num_threads(),
            **{k: v for k, v in kwargs.items() if k in ("n_steps", "batch_size", "n_epochs")},
            "n_envs": PPO_SETTINGS["n_envs"]}


def _bc_step(lm: Any, opt: Any, x: Any, y: Any) -> int:
    """One teacher-forced step of behavior cloning (forward, loss, backward, AdamW); its trace tokens."""
    import torch.nn.functional as F

    from composition_gym.agents.bc import IGNORE

    logits = lm(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return int((y != IGNORE).sum())


def bench_bc(trim: bool, quick: bool) -> dict[str, Any]:
    """Part d: trace tokens/s of teacher-forced training (forward, loss, backward, AdamW step)."""
    import torch
    import torch.nn.functional as F

    from composition_gym.agents.bc import IGNORE, expert_sequences
    from composition_gym.agents.transformer import TransformerConfig, TransformerLM
    from composition_gym.tokens import PAD_ID

    size = _sizes(quick)
    torch.manual_seed(0)
    data = expert_sequences([ENV_ID], size["bc_episodes"], seed=0)
    lm = TransformerLM(TransformerConfig(**BENCH_TRANSFORMER))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    batch, width = 64, data.inputs.shape[1]
    import gymnasium as gym

    padded_width = gym.make(ENV_ID).observation_space.shape[0]
    before = _maxrss_mb()
    tokens, start = 0, time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    for _ in range(size["bc_batches"]):
        idx = torch.randint(len(data), (batch,), generator=gen)
        x, y = data.inputs[idx], data.targets[idx]
        if trim:
            cut = max(int((x != PAD_ID).sum(1).max()), 1)
            x, y = x[:, :cut], y[:, :cut]
        else:  # padded to the observation length, as a policy sees it
            x = F.pad(x, (0, padded_width - width), value=PAD_ID)
            y = F.pad(y, (0, padded_width - width), value=IGNORE)
        tokens += _bc_step(lm, opt, x, y)
    seconds = time.perf_counter() - start
    return {"trim": trim, "trace_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "batch_size": batch, "peak_rss_growth_mb": _maxrss_mb() - before, "torch_threads": torch.get_num_threads()}


def _bench_lm():
    """The model every side of the RL rows trains: the shipped checkpoint when present, else a seeded init."""
    import torch

    from composition_gym.agents.checkpoints import available, pretrained
    from composition_gym.agents.transformer import TransformerLM

    torch.manual_seed(0)
    return pretrained("small") if "small" in available() else TransformerLM()


def bench_grpo(side: str, quick: bool) -> dict[str, Any]:
    """Part f: group-relative RL against its model's own limit, one torch thread on every side.

    ``side``:

    * ``group``: :func:`~composition_gym.agents.grpo.train_grpo` at :data:`GRPO_SETTINGS`, after a
      small warm-up call; sampled (trace) tokens per second of the whole loop (sampling, scoring,
      update, first iteration included), the env's share of it (``reset`` + ``step``, masks
      included) and the peak RSS growth of the measured call;
    * ``bc``: behavior cloning's teacher-forced step (forward, loss, backward, AdamW) on the same
      model, batches of :data:`GRPO_BC_BATCH` expert traces cut to their longest: trace tokens/s;
    * ``decode``: KV-cached sampling alone at B x G rows: tokens/s of decoding (the model's side:
      prefill, one token per live row and step, masked sampling) and of the whole
      :func:`~composition_gym.agents.sampling.play` (env included);
    * ``maskable``: SB3 MaskablePPO with the project's fine-tuning settings, 8 envs (the ecosystem
      reference).
    """
    import torch

    from composition_gym.agents.grpo import GRPOConfig, train_grpo
    from composition_gym.agents.ppo import train_ppo
    from composition_gym.agents.sampling import LMChooser, make_vec, play
    from composition_gym.vector import CompositionVectorEnv

    torch.set_num_threads(1)  # every side alike; a second thread on a busy core only spin-waits
    size = _sizes(quick)
    lm = _bench_lm()
    b, g = (8, 4) if quick else (GRPO_SETTINGS["problems_per_iter"], GRPO_SETTINGS["group_size"])
    if side == "group":
        cfg = GRPOConfig(iterations=1, problems_per_iter=b, group_size=g, drop_zero_variance=False,
                         minibatch_size=GRPO_SETTINGS["minibatch_size"])
        # Warm-up on a few rows (kernels, tables, caches), so that the measured call's RSS growth is
        # the memory of iterations at full size, not of loading libraries.
        train_grpo(ENV_ID, _bench_lm(), GRPOConfig(**{**cfg.to_dict(), "problems_per_iter": 4, "group_size": 2}),
                   progress=False, threads=1)
        env_s = [0.0]

        def timed(fn):
            def run(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    env_s[0] += time.perf_counter() - t0
            return run

        real = CompositionVectorEnv.reset, CompositionVectorEnv.step
        CompositionVectorEnv.reset, CompositionVectorEnv.step = timed(real[0]), timed(real[1])
        before = _maxrss_mb()
        start = time.perf_counter()
        try:
            _, stats = train_grpo(ENV_ID, lm, GRPOConfig(**{**cfg.to_dict(), "iterations": 1 if quick else
                                                              GRPO_SETTINGS["iterations"]}),
                                  progress=False, threads=1)
        finally:
            CompositionVectorEnv.reset, CompositionVectorEnv.step = real
        seconds = time.perf_counter() - start
        hist = stats["history"]
        result = {"tokens_per_s": hist[-1]["env_steps"] / seconds, "tokens": int(hist[-1]["env_steps"]),
                  "seconds": seconds, "env_share": env_s[0] / seconds,
                  "sample_share": float(np.mean([h["sample_share"] for h in hist])),
                  "iterations": len(hist), "problems_per_iter": b, "group_size": g,
                  "minibatch_size": cfg.minibatch_size, "peak_rss_growth_mb": _maxrss_mb() - before}
    elif side == "bc":
        result = _teacher_forcing(lm, size["bc_batches"] if quick else 40)
    elif side == "decode":
        venv = make_vec(ENV_ID, b * g)
        chooser = LMChooser(lm, 1.0, torch.Generator().manual_seed(0))
        play(venv, list(range(b * g)), chooser)  # warm-up
        model_s = [0.0]
        for name in ("start", "choose"):
            fn = getattr(chooser, name)

            def timed(*args, fn=fn, **kwargs):
                t0 = time.perf_counter()
                out = fn(*args, **kwargs)
                model_s[0] += time.perf_counter() - t0
                return out

            setattr(chooser, name, timed)
        before = _maxrss_mb()
        start = time.perf_counter()
        played = play(venv, [1 + i // g for i in range(b * g)], chooser)
        seconds = time.perf_counter() - start
        tokens = float(played.steps.sum())
        result = {"tokens_per_s": tokens / model_s[0], "sampling_tokens_per_s": tokens / seconds,
                  "tokens": int(tokens), "decode_seconds": model_s[0], "seconds": seconds, "rows": b * g,
                  "peak_rss_growth_mb": _maxrss_mb() - before}
    elif side == "maskable":
        before = _maxrss_mb()
        model = train_ppo(ENV_ID, lm, 64 * 8, algo="maskable_ppo", n_envs=8, seed=0, progress=False,
                          threads=1)  # warm-up
        warm, start = model.num_timesteps, time.perf_counter()
        model.learn(total_timesteps=size["ppo_steps"], reset_num_timesteps=False)
        seconds = time.perf_counter() - start
        result = {"tokens_per_s": (model.num_timesteps - warm) / seconds, "tokens": int(model.num_timesteps - warm),
                  "seconds": seconds, "n_envs": 8, "n_steps": model.n_steps, "batch_size": model.batch_size,
                  "peak_rss_growth_mb": _maxrss_mb() - before}
    else:
        raise ValueError(f"unknown side {side!r}; choose group, bc, decode or maskable")
    return {**result, "side": side, "torch_threads": torch.get_num_threads()}


def _teacher_forcing(lm, batches: int) -> dict[str, Any]:
    """BC's training step on ``lm``: trace tokens/s over ``batches`` batches of expert traces (after one untimed)."""
    import torch

    from composition_gym.agents.bc import expert_sequences
    from composition_gym.tokens import PAD_ID

    data = expert_sequences([ENV_ID], 2000, seed=0)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    before = _maxrss_mb()
    tokens, start = 0, 0.0
    for i in range(batches + 1):
        if i == 1:  # the first batch warms up
            tokens, start = 0, time.perf_counter()
        idx = torch.randint(len(data), (GRPO_BC_BATCH,), generator=gen)
        x, y = data.inputs[idx], data.targets[idx]
        cut = max(int((x != PAD_ID).sum(1).max()), 1)
        x, y = x[:, :cut], y[:, :cut]
        tokens += _bc_step(lm, opt, x, y)
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "batch_size": GRPO_BC_BATCH,
            "peak_rss_growth_mb": _maxrss_mb() - before}


WORKERS = {
    "env": lambda quick: bench_env(quick),
    "vector": lambda quick: bench_vector(quick),
    "reset": lambda quick: bench_reset(quick),
    "ppo_mlp": lambda quick: bench_ppo("mlp", quick),
    "ppo_transformer": lambda quick: bench_ppo("transformer", quick),
    "ppo_naive": lambda quick: bench_ppo("naive", quick),
    "bc_trimmed": lambda quick: bench_bc(True, quick),
    "bc_padded": lambda quick: bench_bc(False, quick),
    "grpo_group": lambda quick: bench_grpo("group", quick),
    "grpo_bc": lambda quick: bench_grpo("bc", quick),
    "grpo_decode": lambda quick: bench_grpo("decode", quick),
    "grpo_maskable": lambda quick: bench_grpo("maskable", quick),
}
PARTS = {"env": ("env",), "reset": ("reset",), "vector": ("vector",), "ppo": ("ppo_mlp", "ppo_transformer", "ppo_naive"),
         "bc": ("bc_trimmed", "bc_padded"), "grpo": ("grpo_group", "grpo_bc", "grpo_decode", "grpo_maskable")}


def _run_worker(name: str, quick: bool) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its last stdout line is its JSON result."""
    cmd = [sys.executable, "-m", "composition_gym.benchmarks.throughput", "--worker", name] + (["--quick"] if quick else [])
    # The worker imports this package from where this file is, installed or not.
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    # A lifeline: the worker exits when this end closes (this process died, even by SIGKILL).
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.run(cmd + ["--lifeline", str(read_end)], capture_output=True, text=True, check=False,
                              env=env, pass_fds=(read_end,))
    finally:
        os.close(read_end)
        os.close(write_end)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import gymnasium
    import torch

    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model; elsewhere the architecture will do
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "platform": platform.platform(), "processor": cpu,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__, "gymnasium": gymnasium.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios and whether each goal is met, from the parts that ran."""
    goals: dict[str, Any] = {}
    if "env" in results:
        goals["env_vs_cartpole"] = {"ratio": results["env"]["ratio"]}
    if "reset" in results:
        # The training set's row: the one the issue's goal (v1 resets >= half of v0's) is about.
        pairs = results["reset"]["pairs"]
        goals["v1_reset_vs_v0"] = {"ratio": pairs["Compose-L1to3-v1 / Compose-L3-v0"]["ratio"]}
        goals["l4_identifiable_reset_vs_v0"] = {"ratio": pairs["OOD-Depth-L4-v1 / OOD-Depth-L4-v0"]["ratio"]}
    if "vector" in results:
        goals["vector_vs_sync"] = {"ratio": results["vector"]["ratio"]}
    ppo = results.get("ppo", {})
    if "transformer" in ppo and "naive" in ppo:
        goals["transformer_vs_naive"] = {"ratio": ppo["transformer"]["steps_per_s"] / ppo["naive"]["steps_per_s"]}
    rl = results.get("grpo", {})
    if "group" in rl and "bc" in rl:
        goals["grpo_vs_bc"] = {"ratio": rl["group"]["tokens_per_s"] / rl["bc"]["tokens_per_s"]}
    if "decode" in rl and "bc" in rl:
        goals["decode_vs_bc"] = {"ratio": rl["decode"]["tokens_per_s"] / rl["bc"]["tokens_per_s"]}
    if "group" in rl:
        goals["grpo_env_share"] = {"ratio": rl["group"]["env_share"]}
        goals["grpo_iteration_rss_mb"] = {"ratio": rl["group"]["peak_rss_growth_mb"]}
    for key, g in goals.items():
        g["goal"] = GOALS[key]
        g["met"] = g["ratio"] <= GOALS[key] if key in MAX_GOALS else g["ratio"] >= GOALS[key]
    return goals


def table(doc: dict[str, Any]) -> str:
    """The results as a fixed-width text table."""
    rows: list[tuple[str, str, str, str]] = []
    r = doc["results"]
    if "env" in r:
        e = r["env"]
        rows.append(("env step: Compose-L3 (gym.make)", f"{e['steps_per_s'][ENV_ID]:,.0f} steps/s",
                     f"x{e['ratio']:.2f} vs CartPole-v1", f"{e['peak_mb'][ENV_ID]:.2f} MB"))
        rows.append(("env step: CartPole-v1", f"{e['steps_per_s'][REFERENCE_ID]:,.0f} steps/s", "",
                     f"{e['peak_mb'][REFERENCE_ID]:.2f} MB"))
        g = e["gymnasium_benchmark_step"]
        rows.append(("  gymnasium benchmark_step (uniform actions)", f"{g['steps_per_s'][ENV_ID]:,.0f} steps/s",
                     f"x{g['ratio']:.2f} vs CartPole-v1", ""))
    for name, x in r.get("reset", {}).get("pairs", {}).items():
        new_id, old_id = x["resets_per_s"]
        rows.append((f"reset: {name}", f"{x['resets_per_s'][new_id]:,.0f} resets/s",
                     f"x{x['ratio']:.2f} vs v0 ({x['resets_per_s'][old_id]:,.0f}/s)", ""))
    if "vector" in r:
        v = r["vector"]
        rows.append((f"vector env N={v['num_envs']}: CompositionVectorEnv",
                     f"{v['steps_per_s']['CompositionVectorEnv']:,.0f} steps/s", f"x{v['ratio']:.1f} vs Sync",
                     f"{v['peak_mb']['CompositionVectorEnv']:.1f} MB"))
        rows.append((f"vector env N={v['num_envs']}: SyncVectorEnv", f"{v['steps_per_s']['SyncVectorEnv']:,.0f} steps/s",
                     "", f"{v['peak_mb']['SyncVectorEnv']:.1f} MB"))
    ppo = r.get("ppo", {})
    for name in ("transformer", "naive", "mlp"):
        if name in ppo:
            p = ppo[name]
            rel = []
            if name != "naive" and "naive" in ppo:
                rel.append(f"x{p['steps_per_s'] / ppo['naive']['steps_per_s']:.2f} vs naive")
            if name != "mlp" and "mlp" in ppo:
                rel.append(f"x{p['steps_per_s'] / ppo['mlp']['steps_per_s']:.2f} vs MLP")
            rows.append((f"PPO train: {name} policy", f"{p['steps_per_s']:,.0f} steps/s", ", ".join(rel),
                         f"+{p['peak_rss_growth_mb']:.0f} MB RSS"))
    bc = r.get("bc", {})
    for name in ("trimmed", "padded"):
        if name in bc:
            b = bc[name]
            rel = f"x{b['tokens_per_s'] / bc['padded']['tokens_per_s']:.2f} vs padded" if name == "trimmed" and "padded" in bc else ""
            rows.append((f"BC teacher forcing: {name} batches", f"{b['tokens_per_s']:,.0f} tokens/s", rel,
                         f"+{b['peak_rss_growth_mb']:.0f} MB RSS"))
    rl = r.get("grpo", {})
    if "group" in rl:
        x = rl["group"]
        rel = [f"x{x['tokens_per_s'] / rl['bc']['tokens_per_s']:.2f} vs BC"] if "bc" in rl else []
        rel += [f"x{x['tokens_per_s'] / rl['maskable']['tokens_per_s']:.1f} vs MaskablePPO"] if "maskable" in rl else []
        rel += [f"env {x['env_share']:.1%}"]
        rows.append((f"GRPO train (B={x['problems_per_iter']}, G={x['group_size']}, shipped model, 1 thread)",
                     f"{x['tokens_per_s']:,.0f} tokens/s", ", ".join(rel), f"+{x['peak_rss_growth_mb']:.0f} MB RSS"))
    if "bc" in rl:
        x = rl["bc"]
        rows.append((f"BC teacher forcing, same model and thread (batch {x['batch_size']})",
                     f"{x['tokens_per_s']:,.0f} tokens/s", "", f"+{x['peak_rss_growth_mb']:.0f} MB RSS"))
    if "decode" in rl:
        x = rl["decode"]
        rel = f"x{x['tokens_per_s'] / rl['bc']['tokens_per_s']:.2f} vs BC" if "bc" in rl else ""
        rows.append((f"GRPO decoding (KV cache, {x['rows']} rows)", f"{x['tokens_per_s']:,.0f} tokens/s", rel,
                     f"+{x['peak_rss_growth_mb']:.0f} MB RSS"))
        rows.append(("  sampling with the env (play)", f"{x['sampling_tokens_per_s']:,.0f} tokens/s", "", ""))
    if "maskable" in rl:
        x = rl["maskable"]
        rows.append(("SB3 MaskablePPO train, same model (reference)", f"{x['tokens_per_s']:,.0f} tokens/s", "",
                     f"+{x['peak_rss_growth_mb']:.0f} MB RSS"))
    head = ("measurement", "throughput", "ratio", "peak memory")
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append("")
    for key, g in doc["goals"].items():
        op = "<=" if key in MAX_GOALS else ">="
        lines.append(f"goal {key}: {g['ratio']:.3g} (goal {op} {g['goal']:g}) {'met' if g['met'] else 'NOT met'}")
    return "\n".join(lines)


def run(quick: bool = False, parts: tuple[str, ...] = tuple(PARTS), json_path: str | os.PathLike | None = None,
        log=print) -> dict[str, Any]:
    """Run the benchmark parts, print the table, write the JSON; returns the JSON document."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; known: {list(PARTS)}")
    started = time.perf_counter()
    doc: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": quick,
                           "command": " ".join(sys.argv), "machine": machine(), "results": {}}
    rounds = _sizes(quick)["rounds"]
    for part in parts:
        if part in ("env", "reset", "vector"):  # both sides alternate inside one process
            log(f"[bench] {part} ...", file=sys.stderr)
            doc["results"][part] = _run_worker(part, quick)
            continue
        # One process per measurement (its own peak memory), alternating rounds, best round kept:
        # a transient load on a shared machine then hurts no side more than the others.
        best: dict[str, dict[str, Any]] = {}
        for r in range(rounds):
            for worker in PARTS[part]:
                log(f"[bench] {worker} (round {r + 1}/{rounds}) ...", file=sys.stderr)
                result = _run_worker(worker, quick)
                key = "steps_per_s" if "steps_per_s" in result else "tokens_per_s"
                if worker not in best or result[key] > best[worker][key]:
                    best[worker] = result
        doc["results"][part] = {w.split("_", 1)[1]: best[w] for w in PARTS[part]}
    doc["goals"] = summarize(doc["results"])
    doc["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc["wall_time_s"] = time.perf_counter() - started
    text = table(doc)
    doc["table"] = text
    log(text)
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {path}", file=sys.stderr)
    return doc


# ---------------------------------------------------------------------------- command line
DEFAULT_JSON = "runs/bench/throughput.json"  # untracked; refresh benchmarks/results/ with an explicit --json


@dataclass(frozen=True)
class BenchConfig(Config):
    """Throughput of the environments and of training, as ratios against references measured side by side."""

    quick: bool = False
    """Smoke run: every part, tiny sizes (about 1.5 min on 2 shared cores: 11 fresh interpreters); numbers meaningless."""
    json: str = DEFAULT_JSON
    """Where the results go (benchmarks/results/throughput.json refreshes the committed ones)."""
    parts: tuple[Literal[tuple(PARTS)], ...] = tuple(PARTS)
    """The parts to run."""


def run_bench(cfg: BenchConfig) -> int:
    """``compgym bench``: run :func:`run`."""
    run(quick=cfg.quick, parts=cfg.parts, json_path=cfg.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m composition_gym.benchmarks.throughput [options]`` (= ``compgym bench``); with the
    internal ``--worker NAME`` it is one measuring interpreter, started by :func:`run`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--worker" not in argv:
        from composition_gym import cli

        return cli.main(["bench", *argv])
    parser = argparse.ArgumentParser(prog="python -m composition_gym.benchmarks.throughput --worker")
    parser.add_argument("--worker", choices=sorted(WORKERS), required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lifeline", type=int)
    args = parser.parse_args(argv)
    if args.lifeline is not None:
        from composition_gym.benchmarks.engine.backends import exit_with_parent

        exit_with_parent(args.lifeline)
    print(json.dumps(WORKERS[args.worker](args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
