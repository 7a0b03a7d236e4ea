"""SB3 callbacks that make a run resumable and readable in a log: :class:`PPOCheckpoint` (snapshots
an on-policy run at every rollout start, so an interrupted run resumes bit-identically) and
:class:`ProgressBarCallback` (SB3's progress bar through the project's one bar helper).
"""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from composition_gym.agents.resume import load_checkpoint
from composition_gym.agents.settings import progress_bar
from composition_gym.atomic import atomic_write

class ProgressBarCallback(BaseCallback):
    """SB3's progress bar through :func:`~composition_gym.agents.settings.progress_bar` (a log gets
    one line per change of the count, at most every 30 s, instead of a rich live display)."""

    def __init__(self, total: int, desc: str):
        super().__init__()
        self.total, self.desc, self.bar = total, desc, None

    def _on_training_start(self) -> None:
        # SB3 runs whole rollouts: the steps it will take, not the budget it was asked for.
        per_rollout = getattr(self.model, "n_steps", 1) * self.training_env.num_envs
        total = -(-self.total // per_rollout) * per_rollout
        self.bar = progress_bar(total=total, initial=self.num_timesteps, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


#: The checkpoint :func:`train_ppo` keeps in its ``run_dir``.
PPO_CHECKPOINT = "ppo_checkpoint.pt"


class PPOCheckpoint(BaseCallback):
    """Snapshots of an SB3 on-policy run at the start of each rollout, written every ``every``
    rollouts, on an interrupt (:meth:`write_last`) and at the end (:meth:`write_final`).

    A snapshot is everything the rest of the run depends on: the policy's weights and optimizer
    state, the training envs (pickled: mid-episode state and random generators), the last
    observation, the step counters, and the torch / numpy / Python random states (restored at the
    first rollout of the resumed run, after SB3 and the evaluation callback have run their start
    hooks).  The file is a full pickle (the envs are objects): load only run directories you wrote.
    """

    def __init__(self, path: str, key: str, total: int, every: int):
        super().__init__()
        self.path, self.key, self.total, self.every = path, key, total, every
        self.snapshot: dict[str, Any] | None = None
        self.saved_step: int | None = None
        self.finished = False
        self._rng: dict[str, Any] | None = None  # to restore at the first rollout of a resumed run
        self._rollouts = 0

    def load_into(self, model: BaseAlgorithm) -> bool:
        """Restore ``model`` from the file if there is one (``ValueError`` if another run wrote it)."""
        snap = load_checkpoint(self.path, self.key, "PPO", weights_only=False)  # it holds pickled envs
        if snap is None:
            return False
        model.policy.load_state_dict(snap["policy"])
        model.policy.optimizer.load_state_dict(snap["optimizer"])
        model.set_env(pickle.loads(snap["env"]), force_reset=False)
        for name, value in snap["attributes"].items():
            setattr(model, name, value)
        self._rng, self.finished, self.saved_step = snap["rng"], snap["finished"], model.num_timesteps
        return True

    def _take(self, finished: bool = False) -> dict[str, Any]:
        import torch

        m = self.model
        names = ["_last_obs", "_last_episode_starts", "num_timesteps", "_n_updates", "_episode_num"]
        names += [n for n in ("_last_lstm_states",) if hasattr(m, n)]
        return {"fingerprint": self.key, "finished": finished,
                "policy": {k: v.detach().clone() for k, v in m.policy.state_dict().items()},
                "optimizer": copy.deepcopy(m.policy.optimizer.state_dict()),
                "env": pickle.dumps(m.get_env()),
                "attributes": {n: copy.deepcopy(getattr(m, n)) for n in names},
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}

    def _on_rollout_start(self) -> None:
        import torch

        if self._rng is not None:  # the resumed run's first rollout: the generators as the killed run had them
            torch.set_rng_state(self._rng["torch"])
            np.random.set_state(self._rng["numpy"])
            random.setstate(self._rng["python"])
            self._rng = None
        self.snapshot = self._take()
        self._rollouts += 1
        if self._rollouts % self.every == 0:
            self._write(self.snapshot)

    def _on_step(self) -> bool:
        return True

    def _write(self, snap: dict[str, Any]) -> None:
        import torch

        atomic_write(self.path, lambda tmp: torch.save(snap, tmp))
        self.saved_step = snap["attributes"]["num_timesteps"]

    def write_last(self) -> bool:
        """Write the snapshot of the last rollout start (after an interrupt); ``False`` if none was taken."""
        if self.snapshot is not None:
            self._write(self.snapshot)
        return self.saved_step is not None

    def write_final(self, model: BaseAlgorithm) -> None:
        """Write the finished model: the same call returns it at once."""
        self.model = model
        self._write(self._take(finished=True))


__all__ = ["PPO_CHECKPOINT", "PPOCheckpoint", "ProgressBarCallback"]
