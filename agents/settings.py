"""Run settings in one place: behavior-cloning budgets (named presets), the group-relative RL config and the torch-thread policy.

Every caller (``compgym demo`` / ``train``, :func:`~composition_gym.agents.bc.behavior_cloning`,
:func:`~composition_gym.agents.ppo.train_ppo`, the reproduction, the benchmarks and the tests)
takes its BC budget from :data:`BC_PRESETS` and its thread count from :func:`torch_threads`, so a
default lives here once.

Presets (20,000 expert episodes are 157 batches of 128, so ``epochs`` counts gradient steps in
units of ~157):

=============  ========  ======  ============================================================
name           episodes  epochs  what it is for
=============  ========  ======  ============================================================
``tiny``       64        1       plumbing only (tests, ``--quick``): seconds, learns nothing
``demo``       20,000    19.2    ``compgym demo`` (3,000 steps; measured: docs/results/demo.md)
``reproduce``  14,000    12.8    each seed of ``compgym reproduce`` (1,400 steps: the SFT budget
                                 that left the most reachable headroom at L=3; docs/results/probes.md)
``default``    20,000    25.6    :func:`behavior_cloning`'s default and the acceptance test
                                 (4,000 steps; >= 90 % greedy success on ``Compose-L3-v0``)
=============  ========  ======  ============================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BCConfig:
    """One behavior-cloning run's budget and optimizer settings (the model's shape is separate).

    Attributes:
        episodes: expert episodes (training traces).
        epochs: passes over the data (fractions allowed); each DAgger round trains as many again.
        batch_size, lr, weight_decay: AdamW mini-batches with linear warm-up and cosine decay.
        dagger_rounds: DAgger rounds after the first fit (0 = plain BC).
        dagger_episodes: rollouts per DAgger round (``None``: ``episodes // 2``).
        eval_episodes: held-out episodes for token accuracy and greedy success (0 skips them).
        eval_every: gradient steps between held-out evaluations logged to TensorBoard during
            training (``bc/heldout_*``); 0 logs them at the end only.
    """

    episodes: int = 20_000
    epochs: float = 25.6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    dagger_rounds: int = 0
    dagger_episodes: int | None = None
    eval_episodes: int = 200
    eval_every: int = 1000

    def validate(self) -> BCConfig:
        """Raise ``ValueError`` naming the first field out of range; return ``self`` when all are valid."""
        for name in ("episodes", "batch_size"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("dagger_rounds", "eval_episodes", "eval_every"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.dagger_episodes is not None:
            _check_int("dagger_episodes", self.dagger_episodes, minimum=1)
        for name in ("epochs", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        return self

    def replace(self, **changes: Any) -> BCConfig:
        """A copy with ``changes`` applied (``None`` values are ignored) and validated."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown BC setting(s) {sorted(unknown)}; known: "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes).validate()


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


#: The named BC budgets (see the module docstring for what each is for).
BC_PRESETS: dict[str, BCConfig] = {
    "tiny": BCConfig(episodes=64, epochs=1.0, eval_episodes=8, eval_every=0),
    "demo": BCConfig(episodes=20_000, epochs=19.2, eval_episodes=200),
    "reproduce": BCConfig(episodes=14_000, epochs=12.8, eval_episodes=200),
    "default": BCConfig(),
}


@dataclass(frozen=True)
class DemoBudget:
    """The budget of ``compgym demo``: BC settings, PPO environment steps, evaluation episodes per id."""

    bc: BCConfig
    ppo_steps: int
    eval_episodes: int

    def replace(self, bc_episodes: int | None = None, ppo_steps: int | None = None,
                eval_episodes: int | None = None) -> DemoBudget:
        """A copy with the non-``None`` values changed, validated."""
        out = DemoBudget(self.bc.replace(episodes=bc_episodes), ppo_steps if ppo_steps is not None else self.ppo_steps,
                         eval_episodes if eval_episodes is not None else self.eval_episodes)
        _check_int("ppo_steps", out.ppo_steps, minimum=1)
        _check_int("eval_episodes", out.eval_episodes, minimum=1)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to ``demo.json``)."""
        return dataclasses.asdict(self)


#: ``compgym demo`` (``full``) and ``compgym demo --quick`` (plumbing only, seconds).
DEMO_BUDGETS: dict[str, DemoBudget] = {
    "full": DemoBudget(BC_PRESETS["demo"], ppo_steps=20_000, eval_episodes=200),
    "quick": DemoBudget(BC_PRESETS["tiny"], ppo_steps=512, eval_episodes=8),
}


def bc_config(settings: BCConfig | str | None = None, **overrides: Any) -> BCConfig:
    """Resolve ``settings`` (a :class:`BCConfig`, a name of :data:`BC_PRESETS` or ``None`` for
    ``"default"``), apply the non-``None`` ``overrides`` and validate.

    Raises:
        ValueError: an unknown preset name or a value out of range (the message names it).
        TypeError: an unknown setting.
    """
    if settings is None:
        settings = "default"
    if isinstance(settings, str):
        if settings not in BC_PRESETS:
            raise ValueError(f"unknown BC preset {settings!r}; known: {sorted(BC_PRESETS)}")
        settings = BC_PRESETS[settings]
    if not isinstance(settings, BCConfig):
        raise TypeError(f"settings must be a BCConfig, a preset name or None, got {type(settings).__name__}")
    return settings.replace(**overrides)


# ---------------------------------------------------------------------------- group-relative RL
ADVANTAGES = ("grpo", "drgrpo", "rloo")
LOSS_AGGREGATIONS = ("token", "sequence")


@dataclass
class GRPOConfig:
    """Hyper-parameters of :func:`train_grpo`; the budget in episodes is ``iterations * B * G``.

    The defaults moved the shipped BC checkpoint in 15 CPU minutes (docs/results/grpo-15min.md);
    lr 1e-3 collapsed within 15 updates and 1e-5 barely moved in our sweeps.

    Attributes:
        iterations: sampling + update rounds.
        problems_per_iter: ``B``, distinct problems per iteration.
        group_size: ``G``, sampled completions per problem (>= 2: the baseline needs company).
        temperature: sampling temperature; the ratio uses the same tempered distribution.
        lr, weight_decay: AdamW; ``warmup`` optimizer steps of linear warm-up, then constant.
        advantage: ``"grpo"``, ``"drgrpo"`` or ``"rloo"``.
        clip_eps: PPO ratio clipping.
        epochs: passes over each iteration's completions; ``minibatch_size`` completions per step.
        kl_coef: weight of the KL to the reference model (k3 estimator); 0 still reports it.
        loss_agg: ``"token"`` (mean over all tokens of the minibatch) or ``"sequence"`` (mean of
            per-sequence token means).
        grad_clip: max gradient norm.
        drop_zero_variance: skip groups whose rewards are all equal (advantage 0 everywhere).
        checkpoint_every: iterations between checkpoints (with a ``run_dir``).
        process_reward: the env's reward per correct intermediate (0: outcome reward only).
    """

    iterations: int = 30
    problems_per_iter: int = 256
    group_size: int = 8
    temperature: float = 1.0
    lr: float = 2e-4
    warmup: int = 3
    weight_decay: float = 0.0
    advantage: str = "grpo"
    clip_eps: float = 0.2
    epochs: int = 1
    minibatch_size: int = 2048
    kl_coef: float = 0.0
    loss_agg: str = "token"
    grad_clip: float = 1.0
    drop_zero_variance: bool = True
    checkpoint_every: int = 5
    process_reward: float = 0.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its allowed range."""
        for name in ("iterations", "problems_per_iter", "epochs", "minibatch_size", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GRPOConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(f"GRPOConfig.group_size must be an int >= 2 (a group baseline), got {self.group_size!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"GRPOConfig.warmup must be an int >= 0, got {self.warmup!r}")
        for name in ("temperature", "lr", "clip_eps", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GRPOConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("kl_coef", "weight_decay", "process_reward"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"GRPOConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"GRPOConfig.advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.loss_agg not in LOSS_AGGREGATIONS:
            raise ValueError(f"GRPOConfig.loss_agg must be one of {LOSS_AGGREGATIONS}, got {self.loss_agg!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (stored in checkpoints)."""
        return dataclasses.asdict(self)



# ---------------------------------------------------------------------------- threads
def default_threads() -> int:
    """The torch thread count the project uses when none is given: 2 if two cores are idle, else 1.

    ``COMPGYM_THREADS`` (an integer) overrides it.  Why not torch's default (one thread per
    core): the models are small, so a second thread gains about 1.4x on an idle machine (BC 5.9 s
    with 2 threads vs 8.4 s with 1), but with one competing process a thread that waits for a busy
    core spin-waits and the run gets twice as slow (19.6 s vs 10.0 s).  The load is the 1-minute
    load average.
    """
    env = os.environ.get("COMPGYM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"COMPGYM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"COMPGYM_THREADS must be a positive integer, got {env!r}")
        return n
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cpus)
    return 2 if cpus >= 2 and cpus - load >= 1.5 else 1


def resolve_threads(threads: int | None) -> int:
    """``threads`` checked (a positive integer), or :func:`default_threads` when ``None``."""
    if threads is None:
        return default_threads()
    _check_int("threads", threads, minimum=1)
    return threads


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``resolve_threads(threads)`` torch threads; the caller's count comes back after."""
    import torch  # here, so that importing the settings stays cheap for the CLI

    n = resolve_threads(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def check_device(device: str) -> None:
    """Raise a one-line error for a torch device name this machine cannot use (``"cuda"`` without a GPU)."""
    import torch

    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"unknown torch device {device!r}; use e.g. 'cpu' or 'cuda'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA GPU; use device='cpu'")


# ---------------------------------------------------------------------------- progress
def progress_kwargs() -> dict[str, Any]:
    """tqdm options that keep logs readable: when stderr is not a terminal (a file, CI), a bar
    refreshes at most every 30 s instead of every 0.1 s (a BC run wrote 3,320 carriage-return
    updates, 240 KB, to a redirected log)."""
    import sys

    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return {"mininterval": 0.1 if tty else 30.0, "maxinterval": 10.0 if tty else 120.0}


__all__ = ["ADVANTAGES", "BCConfig", "BC_PRESETS", "GRPOConfig", "LOSS_AGGREGATIONS", "DEMO_BUDGETS", "DemoBudget", "bc_config", "check_device", "default_threads",
           "progress_kwargs", "resolve_threads", "torch_threads"]
