"""PPO wiring: SB3 ``PPO`` / sb3-contrib ``MaskablePPO`` on the transformer policy, ``RecurrentPPO``
with its own LSTM policy, BC then PPO in one call, and loading saved models back.

Fine-tuning defaults (used when an LM is given) keep PPO from undoing behavior cloning:

* a small learning rate: from a BC model at ~95 % success, 20k steps at 1e-5 kept ID, RL-set and
  unseen-composition success within a point of BC's, 3e-5 cost 1-3 points, 1e-4 cost 6-8;
* no entropy bonus (the BC policy is near-deterministic and the reward a sparse 0/1 outcome), a
  tight clip range and a KL early stop;
* rollouts of 8 envs x 64 steps (about 25 episodes of ~20 tokens) reused for 2 epochs of 2
  mini-batches: on CPU the transformer's backward pass dominates PPO's time, so fewer, larger
  gradient steps buy the most environment steps per second;
* ``gamma=1``: the only reward comes at the end of a short episode.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import get_latest_run_id
from stable_baselines3.common.vec_env import DummyVecEnv

import composition_gym  # noqa: F401  (registers the env ids)
from composition_gym.agents.bc import behavior_cloning
from composition_gym.agents.callbacks import CompositionEvalCallback
from composition_gym.agents.ppo_checkpoint import PPO_CHECKPOINT, PPOCheckpoint, ProgressBarCallback
from composition_gym.agents.resume import Interrupts, fingerprint, mark_run, say, unfinished_run, weights_digest
from composition_gym.agents.settings import PPO_PRESETS, SB3_ALGOS, PPOConfig, check_device, torch_threads
from composition_gym.registration import resolve_env_ids
from composition_gym.agents.policy import (
    MaskableTransformerPolicy,
    TransformerActorCriticPolicy,
    load_lm_into_policy,
    transformer_policy_kwargs,
)
from composition_gym.agents.transformer import TransformerConfig, TransformerLM

ALGOS = SB3_ALGOS

#: Modules that held the policy classes before the agents were installed as ``composition_gym.agents``.
_OLD_PACKAGES = ("agents", "benchmarks")


def make_vec_env(env_id: str | Sequence[str], n_envs: int, seed: int) -> DummyVecEnv:
    """``n_envs`` Monitor-wrapped envs in a ``DummyVecEnv``, ids assigned round-robin, seeded.

    Not SB3's ``make_vec_env``: it builds every sub-env from one id (its callable form gets no
    rank), and we mix ids round-robin (e.g. several RL sets in one run).
    """
    ids = resolve_env_ids(env_id)
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    venv = DummyVecEnv([lambda i=i: Monitor(gym.make(ids[i % len(ids)])) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def next_run_dir(root: str | os.PathLike, name: str) -> str:
    """``root/name_k`` with ``k`` one above the highest existing run (SB3's own numbering)."""
    return os.path.join(os.fspath(root), f"{name}_{get_latest_run_id(os.fspath(root), name) + 1}")


def _pick_run_dir(root: str, name: str, key: str, marker: str, resume: bool) -> str:
    """The unfinished run of ``key`` under ``root`` when resuming (and says so), else a new ``name_k``."""
    run_dir = unfinished_run(root, name, key, marker) if resume else None
    if run_dir is not None:
        say(f"resuming {name} run in {run_dir}")
        return run_dir
    return next_run_dir(root, name)


def train_ppo(
    env_id: str | Sequence[str],
    lm: TransformerLM | None,
    total_timesteps: int,
    *,
    algo: str = "maskable_ppo",
    settings: PPOConfig | None = None,
    seed: int = 0,
    tensorboard_log: str | None = None,
    run_dir: str | None = None,
    eval_env_ids: dict[str, list[str]] | None = None,
    eval_freq: int = 5_000,
    eval_episodes: int = 50,
    progress: bool = True,
    config: TransformerConfig | None = None,
    verbose: int = 0,
    threads: int | None = None,
    device: str | None = None,
    resume: bool = True,
    checkpoint_every: int = 10,
    policy_kwargs: dict[str, Any] | None = None,
    **changes: Any,
) -> BaseAlgorithm:
    """Train PPO, MaskablePPO (transformer policy) or RecurrentPPO (LSTM policy) on ``env_id``.

    Args:
        env_id: registered id(s); several ids are spread round-robin over the ``n_envs`` envs.
        lm: start the transformer policy from these weights (BC); ``None`` starts from scratch
            (with ``config``'s shape).  Must be ``None`` for ``recurrent_ppo``.
        total_timesteps: environment steps (tokens) to train for.
        algo: ``"ppo"``, ``"maskable_ppo"`` or ``"recurrent_ppo"``.
        seed: seeds the model and the envs.
        tensorboard_log: root directory; the run goes to a new ``<root>/<algo>_<k>``, or to the
            newest unfinished run of the same settings there (interrupted: it resumes).
        run_dir: exact run directory instead (what :func:`bc_then_ppo` uses to share one run).
        eval_env_ids: named sets of ids for :class:`CompositionEvalCallback` (``None``: no eval).
        eval_freq, eval_episodes: the callback's period (env steps) and episodes per id.
        progress: SB3's progress bar.
        threads: torch threads for the run (``None``: the project's policy,
            :func:`~composition_gym.agents.settings.default_threads`); restored afterwards.
        device: torch device of the policy, checked (``None``: SB3's ``"auto"``, a GPU if there is one).
        resume: with a ``run_dir``, continue from its checkpoint (``ppo_checkpoint.pt``) when the
            same run (ids, algorithm, settings, seed, starting weights) wrote it.
        checkpoint_every: rollouts between checkpoints of a run with a ``run_dir``; one is also
            written when training is interrupted (Ctrl-C or SIGTERM: the rollout in progress is
            lost) and when it ends.  A resumed run ends with the same weights as an uninterrupted
            one (the checkpoint holds the envs' and the random generators' states).
        settings: the SB3 settings (default: :data:`~composition_gym.agents.settings.PPO_PRESETS`'s
            ``finetune`` with an ``lm``, ``scratch`` without); ``changes`` are
            :class:`~composition_gym.agents.settings.PPOConfig` fields replacing them (``n_envs=2``,
            ``learning_rate=1e-4`` …).  The mini-batch is at most one rollout, ``n_steps * n_envs``.
        policy_kwargs: extra keyword arguments of the policy (the transformer's come from ``lm``/``config``).

    TensorBoard's x-axis for the run is the environment step (SB3's ``num_timesteps``).

    Returns:
        The trained SB3 model (``model.save(path)`` writes a ``.zip`` that :func:`load_model`,
        ``PPO.load`` or ``MaskablePPO.load`` read back after ``import agents``).
    """
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; choose from {ALGOS}")
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps < 1:
        raise ValueError(f"total_timesteps must be an integer >= 1, got {total_timesteps!r}")
    if lm is not None and not isinstance(lm, TransformerLM):
        raise TypeError(f"lm must be a TransformerLM or None, got {type(lm).__name__}")
    if algo == "recurrent_ppo" and lm is not None:
        raise ValueError("recurrent_ppo trains its own LSTM policy; pass lm=None")
    settings = (settings or PPO_PRESETS["finetune" if lm is not None else "scratch"]).replace(**changes)
    n_envs = settings.n_envs
    kwargs: dict[str, Any] = settings.sb3_kwargs()
    kwargs["batch_size"] = min(settings.batch_size, settings.n_steps * n_envs)  # one rollout holds at most that
    if device is not None:
        check_device(device)
        kwargs["device"] = device
    env = make_vec_env(env_id, n_envs, seed)
    if algo == "recurrent_ppo":
        model: BaseAlgorithm = RecurrentPPO("MlpLstmPolicy", env, seed=seed, verbose=verbose, **kwargs)
    else:
        cfg = lm.config if lm is not None else (config or TransformerConfig())
        kwargs["policy_kwargs"] = {**transformer_policy_kwargs(cfg), **(policy_kwargs or {})}
        cls, policy = (PPO, TransformerActorCriticPolicy) if algo == "ppo" else (MaskablePPO, MaskableTransformerPolicy)
        model = cls(policy, env, seed=seed, verbose=verbose, **kwargs)
        if lm is not None:
            load_lm_into_policy(model.policy, lm)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1 (rollouts), got {checkpoint_every!r}")
    checkpoint, resumed = None, False
    key = fingerprint(env=resolve_env_ids(env_id), algo=algo, seed=seed, n_envs=n_envs, steps=total_timesteps,
                      kwargs={k: v for k, v in kwargs.items() if k != "device"}, device=str(model.device),
                      start=None if lm is None else weights_digest(lm))
    if run_dir is None and tensorboard_log is not None:
        run_dir = _pick_run_dir(tensorboard_log, algo, key, PPO_MARKER, resume)
    if run_dir is not None:
        mark_run(run_dir, PPO_MARKER, key, finished=False)
        checkpoint = PPOCheckpoint(os.path.join(run_dir, PPO_CHECKPOINT), key, total_timesteps, checkpoint_every)
        resumed = resume and checkpoint.load_into(model)
        if resumed:
            if checkpoint.finished:
                say(f"PPO already finished in {run_dir} ({model.num_timesteps} steps): returning its model")
                mark_run(run_dir, PPO_MARKER, key, finished=True)
                return model
            say(f"resuming PPO from step {model.num_timesteps} of {total_timesteps} in {run_dir}")
        # Our own logger, so that BC, PPO and eval scalars can share one run directory.
        model.set_logger(configure(run_dir, ["tensorboard"] + (["stdout"] if verbose else [])))
    callbacks: list[BaseCallback] = [c for c in (checkpoint,) if c is not None]
    if eval_env_ids:
        callbacks.append(CompositionEvalCallback(eval_env_ids, eval_freq=eval_freq, episodes=eval_episodes, seed=seed,
                                                 verbose=verbose, at_start=not resumed))
    if progress:
        callbacks.append(ProgressBarCallback(total_timesteps, algo))
    guard = Interrupts()  # SIGTERM too; no step is held back: the checkpoint is the last rollout's start
    try:
        with guard, torch_threads(threads):
            model.learn(total_timesteps - model.num_timesteps, callback=CallbackList(callbacks),
                        reset_num_timesteps=not resumed)
    except KeyboardInterrupt:
        if checkpoint is not None and checkpoint.write_last():
            say(f"PPO interrupted ({guard.name}): checkpoint at step {checkpoint.saved_step} of {total_timesteps} "
                f"in {run_dir}; the same call resumes from it")
        else:
            say(f"PPO interrupted ({guard.name}): nothing saved (no run_dir)")
        raise
    if checkpoint is not None:
        checkpoint.write_final(model)
        mark_run(run_dir, PPO_MARKER, key, finished=True)
    return model


def bc_then_ppo(
    env_id: str | Sequence[str],
    *,
    bc_episodes: int | None = None,
    ppo_steps: int = 20_000,
    algo: str = "maskable_ppo",
    seed: int = 0,
    tensorboard_log: str | None = None,
    run_dir: str | None = None,
    rl_env_id: str | Sequence[str] | None = None,
    bc_kwargs: dict[str, Any] | None = None,
    eval_env_ids: dict[str, list[str]] | None = None,
    progress: bool = True,
    **ppo_kwargs: Any,
) -> tuple[BaseAlgorithm, TransformerLM]:
    """Behavior cloning on ``env_id``, then PPO from those weights, logged to one TensorBoard run.

    The run directory holds both stages' checkpoints, so an interrupted call resumes the stage
    that was running when it is made again: with ``tensorboard_log`` and no ``run_dir``, an
    unfinished run of the same settings under ``tensorboard_log`` is picked up (``resuming
    bc_maskable_ppo run in DIR`` on stderr); a finished one is not repeated, a new
    ``bc_<algo>_<k>`` starts instead.

    Args:
        env_id: id(s) for behavior cloning (and for PPO unless ``rl_env_id`` is given).
        bc_episodes: expert episodes for BC (default: the BC settings' ``episodes``).
        ppo_steps: PPO environment steps.
        algo: ``"ppo"`` or ``"maskable_ppo"``.
        tensorboard_log: root directory of the runs (``bc_<algo>_<k>``).
        run_dir: this run's exact directory instead.
        rl_env_id: id(s) for the PPO phase, e.g. the RL composition set ``Compose-RL-L3``
            (the paper's protocol: RL on compositions beyond the SFT support).
        bc_kwargs: extra :func:`~composition_gym.agents.bc.behavior_cloning` arguments (``settings``,
            ``config``, ``epochs``, ``threads``, …).
        eval_env_ids, ppo_kwargs: passed to :func:`train_ppo`.

    Returns:
        ``(model, bc_lm)``: the PPO model and the behavior-cloned LM it started from (unchanged).
    """
    if algo == "recurrent_ppo":
        raise ValueError("bc_then_ppo needs the transformer policy: algo must be 'ppo' or 'maskable_ppo'")
    bc_kwargs = dict(bc_kwargs or {})
    bc_kwargs.setdefault("threads", ppo_kwargs.get("threads"))
    if ppo_kwargs.get("device") is not None:
        bc_kwargs.setdefault("device", ppo_kwargs["device"])
    quiet = ("threads", "progress", "verbose")
    key = fingerprint(env=resolve_env_ids(env_id), rl=resolve_env_ids(rl_env_id or env_id), bc_episodes=bc_episodes,
                      ppo_steps=ppo_steps, algo=algo, seed=seed, eval=eval_env_ids,
                      bc={k: v for k, v in bc_kwargs.items() if k not in quiet},
                      ppo={k: v for k, v in ppo_kwargs.items() if k not in quiet})
    name = f"bc_{algo}"
    if run_dir is None and tensorboard_log is not None:
        run_dir = _pick_run_dir(tensorboard_log, name, key, RUN_MARKER, resume=True)
    if run_dir is not None:
        mark_run(run_dir, RUN_MARKER, key, finished=False)
    lm, _ = behavior_cloning(env_id, bc_episodes, seed=seed, run_dir=run_dir, progress=progress, **bc_kwargs)
    model = train_ppo(rl_env_id or env_id, lm, ppo_steps, algo=algo, seed=seed, run_dir=run_dir,
                      eval_env_ids=eval_env_ids, progress=progress, **ppo_kwargs)
    if run_dir is not None:
        mark_run(run_dir, RUN_MARKER, key, finished=True)
    return model, lm


#: What :func:`bc_then_ppo` and :func:`train_ppo` write in their run directory (:func:`mark_run`).
RUN_MARKER = "bc_then_ppo.json"
PPO_MARKER = "ppo_run.json"


def load_model(path: str | os.PathLike, env_id: str | None = None, device: str = "cpu") -> BaseAlgorithm:
    """Read a saved ``.zip`` back with the SB3 class it was trained with.

    Args:
        path: the file ``model.save`` wrote.
        env_id: if given, also check that the model's spaces match this env's.
        device: the torch device of the loaded policy (checked: ``ValueError`` for one this
            machine lacks).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not an SB3 model zip, is corrupt, holds a policy this project
            does not know, or does not match ``env_id`` (the message names the problem).
    """
    path = os.fspath(path)
    check_device(device)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not an SB3 model .zip (corrupt or another kind of file)")
    try:
        data, _, _ = load_from_zip_file(path, load_data=True)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in _OLD_PACKAGES:
            raise ValueError(
                f"{path!r} was saved before the agents moved to composition_gym.agents (its policy class "
                f"lives in {err.name!r}); retrain it, or load it with custom_objects={{'policy_class': "
                f"composition_gym.agents.policy.MaskableTransformerPolicy}} (or TransformerActorCriticPolicy "
                f"for PPO)") from err
        raise ValueError(f"{path!r} needs the module {err.name!r}, which is not installed") from err
    except Exception as err:  # SB3 raises several types for damaged archives
        raise ValueError(f"{path!r} is a zip but not a readable SB3 model: {type(err).__name__}: {err}") from err
    if not data or "policy_class" not in data:
        raise ValueError(f"{path!r} has no SB3 model data (missing 'data' entry or policy class)")
    policy_class = data["policy_class"]
    if not isinstance(policy_class, type):
        raise ValueError(f"{path!r} names a policy class that cannot be imported here: {policy_class!r}")
    if issubclass(policy_class, MaskableActorCriticPolicy):
        cls = MaskablePPO
    elif issubclass(policy_class, RecurrentActorCriticPolicy):
        cls = RecurrentPPO
    elif issubclass(policy_class, ActorCriticPolicy):
        cls = PPO
    else:
        raise ValueError(f"{path!r} holds a {policy_class.__name__}, not a PPO-family policy")
    try:
        model = cls.load(path, device=device)
    except Exception as err:
        raise ValueError(f"{path!r} could not be loaded as {cls.__name__} (weights do not match the "
                         f"stored architecture?): {type(err).__name__}: {err}") from err
    if env_id is not None:
        env = gym.make(env_id)
        if model.observation_space.shape != env.observation_space.shape or model.action_space != env.action_space:
            raise ValueError(f"{path!r} was trained on observations {model.observation_space} / actions "
                             f"{model.action_space}, but {env_id} has {env.observation_space} / {env.action_space}")
    return model


__all__ = ["ALGOS", "bc_then_ppo", "load_model",
           "make_vec_env", "next_run_dir", "train_ppo"]
