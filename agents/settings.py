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

from dataclasses import dataclass
from typing import Any, Literal

from composition_gym.config import Config, bounded

# The thread policy lives in composition_gym.threads (torch-free and cheap to import, so the run
# engine's workers use it without loading the agents); it is part of the run settings' API here.
from composition_gym.threads import default_threads, resolve_threads, thread_scope, torch_threads


@dataclass(frozen=True)
class BCConfig(Config):
    """One behavior-cloning run's budget and optimizer settings (the model's shape is separate)."""

    episodes: int = bounded(20_000, ge=1)
    """Expert episodes (training traces)."""
    epochs: float = bounded(25.6, gt=0)
    """Passes over the data (fractions allowed); each DAgger round trains as many again."""
    batch_size: int = bounded(128, ge=1)
    """Sequences per AdamW step."""
    lr: float = bounded(3e-3, gt=0)
    """Peak learning rate (linear warm-up, then cosine decay)."""
    weight_decay: float = bounded(0.01, ge=0)
    """AdamW weight decay."""
    dagger_rounds: int = bounded(0, ge=0)
    """DAgger rounds after the first fit (0: plain behavior cloning)."""
    dagger_episodes: int | None = bounded(None, ge=1)
    """Rollouts per DAgger round (None: episodes // 2)."""
    eval_episodes: int = bounded(200, ge=0)
    """Held-out episodes for token accuracy and greedy success (0 skips them)."""
    eval_every: int = bounded(1000, ge=0)
    """Gradient steps between held-out evaluations logged to TensorBoard (0: at the end only)."""
    checkpoint_every: int = bounded(500, ge=1)
    """Gradient steps between checkpoints of a run with a run_dir (one is also written at each DAgger
    round, at the end and when interrupted); not part of what the run computes: a resumed run may
    change it."""

    def replace(self, **changes: Any) -> BCConfig:
        """A checked copy with ``changes`` applied; ``None`` values are ignored (an unset option)."""
        return super().replace(**{k: v for k, v in changes.items() if v is not None})


#: The named BC budgets (see the module docstring for what each is for).
BC_PRESETS: dict[str, BCConfig] = {
    "tiny": BCConfig(episodes=64, epochs=1.0, eval_episodes=8, eval_every=0),
    "demo": BCConfig(episodes=20_000, epochs=19.2, eval_episodes=200),
    "reproduce": BCConfig(episodes=14_000, epochs=12.8, eval_episodes=200),
    "default": BCConfig(),
}


@dataclass(frozen=True)
class DemoBudget(Config):
    """The budget of ``compgym demo``: BC settings, PPO environment steps, evaluation episodes per id."""

    bc: BCConfig = BC_PRESETS["demo"]
    """Behavior cloning (--bc.episodes, --bc.epochs, …)."""
    ppo_steps: int = bounded(20_000, ge=1)
    """MaskablePPO environment steps (tokens) after behavior cloning."""
    eval_episodes: int = bounded(200, ge=1)
    """Episodes per evaluated id."""


#: ``compgym demo`` (``full``) and ``compgym demo --quick`` (plumbing only).
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


#: The Stable-Baselines3 / sb3-contrib algorithms :func:`~composition_gym.agents.ppo.train_ppo` trains.
SB3_ALGOS = ("ppo", "maskable_ppo", "recurrent_ppo")


# ---------------------------------------------------------------------------- group-relative RL
#: Group baselines of :class:`GRPOConfig` (``advantage``) and its loss aggregations (``loss_agg``).
ADVANTAGES = ("grpo", "drgrpo", "rloo")
LOSS_AGGREGATIONS = ("token", "sequence")


@dataclass(frozen=True)
class GRPOConfig(Config):
    """Hyper-parameters of :func:`~composition_gym.agents.grpo.train_grpo`; the budget in episodes is
    ``iterations * problems_per_iter * group_size``.

    The defaults moved the shipped BC checkpoint in 15 CPU minutes (docs/results/grpo-15min.md);
    lr 1e-3 collapsed within 15 updates and 1e-5 barely moved in our sweeps.  (The reproduction's
    budget sets its own rate and batch: :data:`composition_gym.benchmarks.experiment.protocol.PRESETS`.)
    """

    iterations: int = bounded(30, ge=1)
    """Sampling + update rounds."""
    problems_per_iter: int = bounded(256, ge=1)
    """B, distinct problems per iteration."""
    group_size: int = bounded(8, ge=2)
    """G, sampled completions per problem (>= 2: the baseline needs company)."""
    temperature: float = bounded(1.0, gt=0)
    """Sampling temperature; the ratio uses the same tempered distribution."""
    lr: float = bounded(2e-4, gt=0)
    """AdamW learning rate (after warm-up, constant)."""
    warmup: int = bounded(3, ge=0)
    """Optimizer steps of linear warm-up."""
    weight_decay: float = bounded(0.0, ge=0)
    """AdamW weight decay."""
    advantage: Literal[ADVANTAGES] = "grpo"
    """grpo: (r - mean) / std per group; drgrpo: r - mean; rloo: r - mean of the others."""
    clip_eps: float = bounded(0.2, gt=0)
    """PPO ratio clipping."""
    epochs: int = bounded(1, ge=1)
    """Passes over each iteration's completions."""
    minibatch_size: int = bounded(2048, ge=1)
    """Completions per optimizer step."""
    kl_coef: float = bounded(0.0, ge=0)
    """Weight of the KL to the reference (starting) model, k3 estimator.  At 0 the reference pass
    is skipped and kl_ref is estimated on kl_sample sampled completions."""
    loss_agg: Literal[LOSS_AGGREGATIONS] = "token"
    """token: mean over all tokens of a minibatch; sequence: mean of per-sequence token means."""
    grad_clip: float = bounded(1.0, gt=0)
    """Max gradient norm."""
    drop_zero_variance: bool = True
    """Skip groups whose rewards all agree (advantage 0 everywhere)."""
    checkpoint_every: int = bounded(5, ge=1)
    """Iterations between checkpoints (with a run_dir)."""
    process_reward: float = bounded(0.0, ge=0)
    """The env's reward per correct intermediate (0: outcome reward only)."""
    replay_coef: float = bounded(0.0, ge=0)
    """Weight of a teacher-forced loss on expert traces of a replay set (train_grpo's replay_env_id, e.g. the
    SFT set) added to every optimizer step, so that RL elsewhere keeps what SFT taught (0: none)."""
    replay_episodes: int = bounded(4096, ge=1)
    """Expert episodes in the replay pool."""
    replay_batch: int = bounded(128, ge=1)
    """Replayed sequences per optimizer step."""
    kl_sample: int = bounded(256, ge=0)
    """Completions per iteration on which kl_ref is estimated when kl_coef is 0 (a strided
    subsample, no random draw; 0 reports NaN)."""
    compile: bool = False
    """torch.compile the model body for the update: off by default, as on two CPU cores it gains about
    9 % per iteration after some 18 s of compilation (docs/performance.md); not part of what the
    run computes: a resumed run may change it."""


@dataclass(frozen=True)
class PPOConfig(Config):
    """Settings of SB3 ``PPO`` / sb3-contrib ``MaskablePPO`` (:func:`~composition_gym.agents.ppo.train_ppo`).

    :data:`PPO_PRESETS` holds the two regimes: ``finetune`` (from a behavior-cloned model: a
    small rate, no entropy bonus, a tight clip and a KL early stop keep PPO from undoing BC; from a
    BC model at ~95 % success, 20k steps at 1e-5 kept every set within a point, 3e-5 cost 1-3
    points, 1e-4 cost 6-8) and ``scratch`` (larger steps and some entropy to explore).  Rollouts
    of 8 envs x 64 steps reused for 2 epochs of 2 mini-batches: on CPU the transformer's backward
    pass dominates, so fewer, larger gradient steps buy the most environment steps per second.
    """

    learning_rate: float = bounded(1e-5, gt=0)
    """Adam learning rate."""
    n_envs: int = bounded(8, ge=1)
    """Environments stepped side by side (a DummyVecEnv, ids round-robin)."""
    n_steps: int = bounded(64, ge=1)
    """Steps per environment and rollout."""
    batch_size: int = bounded(256, ge=2)
    """Mini-batch size (capped at one rollout, n_steps * n_envs)."""
    n_epochs: int = bounded(2, ge=1)
    """Passes over each rollout."""
    gamma: float = bounded(1.0, ge=0, le=1)
    """Discount (1: the only reward comes at the end of a short episode)."""
    gae_lambda: float = bounded(0.95, ge=0, le=1)
    """GAE lambda."""
    clip_range: float = bounded(0.1, gt=0)
    """PPO ratio clipping."""
    ent_coef: float = bounded(0.0, ge=0)
    """Entropy bonus."""
    vf_coef: float = bounded(0.5, ge=0)
    """Value loss weight."""
    max_grad_norm: float = bounded(0.5, gt=0)
    """Max gradient norm."""
    target_kl: float | None = bounded(0.03, gt=0)
    """Stop an update's epochs early past this KL (None: never)."""

    def sb3_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the SB3 algorithm's constructor (everything but ``n_envs``)."""
        return {k: v for k, v in self.to_dict().items() if k != "n_envs"}


#: PPO from a behavior-cloned model (``finetune``) and from scratch (``scratch``; also RecurrentPPO).
PPO_PRESETS: dict[str, PPOConfig] = {
    "finetune": PPOConfig(),
    "scratch": PPOConfig(learning_rate=3e-4, batch_size=128, n_epochs=4, clip_range=0.2, ent_coef=0.01,
                         max_grad_norm=0.5, target_kl=None),
}


# ---------------------------------------------------------------------------- devices
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
#: Seconds between two lines of a progress bar written to a log (stderr not a terminal).
LOG_INTERVAL_S = 30.0


def progress_kwargs(file: Any = None) -> dict[str, Any]:
    """tqdm options that keep logs readable: when ``file`` (default stderr) is not a terminal, a
    bar refreshes at most every :data:`LOG_INTERVAL_S` seconds instead of every 0.1 s (a BC run
    wrote 3,320 carriage-return updates, 240 KB, to a redirected log)."""
    tty = _is_tty(file)
    return {"mininterval": 0.1 if tty else LOG_INTERVAL_S, "maxinterval": 10.0 if tty else 4 * LOG_INTERVAL_S}


def _is_tty(file: Any = None) -> bool:
    import sys

    file = sys.stderr if file is None else file
    return bool(getattr(file, "isatty", None) and file.isatty())


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """The project's progress bar (every bar goes through here): a tqdm bar on a terminal; in a
    log, :class:`LogBar`, which writes a whole line only when the count has changed, at most every
    :data:`LOG_INTERVAL_S` seconds, and the final count when it closes.  ``kwargs`` go to tqdm."""
    from tqdm.auto import tqdm

    kwargs = {**progress_kwargs(kwargs.get("file")), **kwargs}
    cls = tqdm if _is_tty(kwargs.get("file")) else _log_bar_class()
    return cls(iterable, **kwargs)


def _log_bar_class() -> type:
    global _LOG_BAR
    if _LOG_BAR is None:
        from tqdm import tqdm

        class LogBar(tqdm):
            """A tqdm bar for logs: one ``\\n``-terminated line per change of the count.

            A plain tqdm bar in a file rewrites its line with ``\\r`` on every ``set_postfix``
            (BC: 318 rewrites in 394 s while the count changed 13 times), and between two updates
            it shows the count of the last update (tqdm's iterator syncs ``n`` lazily), so a log
            showed a stale count for 30 s at a time.  Here a line is written only when the count
            moved since the last line, and no sooner than ``mininterval`` after it.
            """

            monitor_interval = 0  # no monitor thread forcing refreshes of an unchanged count

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._logged: tuple[float, float] | None = None  # (count, time) of the last line
                super().__init__(*args, **kwargs)

            def display(self, msg: str | None = None, pos: int | None = None) -> bool:
                if msg is not None:  # tqdm clearing its line: a log keeps its lines
                    return False
                now = self._time()
                if self._logged is not None and (self.n == self._logged[0] or now - self._logged[1] < self.mininterval):
                    return False
                return self._line(now)

            def _line(self, now: float) -> bool:
                self.fp.write(self.__str__() + "\n")
                getattr(self.fp, "flush", lambda: None)()
                self._logged = (self.n, now)
                return True

            def close(self) -> None:
                if not self.disable and (self._logged is None or self._logged[0] != self.n):
                    self._line(self._time())  # the final count, whatever the interval
                self.leave = False  # nothing to clear, no extra newline
                super().close()

        _LOG_BAR = LogBar
    return _LOG_BAR


_LOG_BAR: type | None = None


__all__ = ["ADVANTAGES", "BCConfig", "BC_PRESETS", "GRPOConfig", "LOSS_AGGREGATIONS", "PPOConfig", "PPO_PRESETS", "SB3_ALGOS", "DEMO_BUDGETS", "DemoBudget", "bc_config", "check_device", "default_threads",
           "progress_bar", "progress_kwargs", "resolve_threads", "thread_scope", "torch_threads"]
