"""``CompositionEvalCallback``: ID / OOD success during SB3 training, each set under its own prefix.

SB3's ``EvalCallback`` writes ``eval/mean_reward`` and friends; two of them (one per eval set)
overwrite each other.  This callback evaluates named sets of env ids and records, for each set
``name``::

    eval_<name>/success            mean success over the set's episodes
    eval_<name>/<short id>         per env id: ``registration.short_name`` (namespace dropped,
                                   version kept), the same rule as ``bc/heldout_success/<short id>``
    eval_<name>/depth_<L>          per cascade depth
    eval_<name>/skill_<Skill>      per skill (episodes whose cascade uses it)
    eval_<name>/routing_<Routing>  per routing mechanism
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from composition_gym.agents.evaluation import EvalReport, evaluate
from composition_gym.registration import short_name


def report_scalars(report: EvalReport, prefix: str, per_module: bool = True) -> dict[str, float]:
    """The scalars this callback records for one report, keyed by TensorBoard tag."""
    out = {f"{prefix}/success": report.success}
    out.update({f"{prefix}/{short_name(k)}": v for k, v in report.success_by_env.items()})
    out.update({f"{prefix}/depth_{k}": v for k, v in report.by_depth.items()})
    if per_module:
        out.update({f"{prefix}/skill_{k}": v for k, v in report.by_skill.items()})
        out.update({f"{prefix}/routing_{k}": v for k, v in report.by_routing.items()})
    return out


class CompositionEvalCallback(BaseCallback):
    """Every ``eval_freq`` environment steps, evaluate the model on named sets of env ids.

    Args:
        eval_env_ids: ``{"id": [...], "ood": [...]}``; each set is logged under ``eval_<name>/``.
        eval_freq: environment steps between evaluations (counted over all parallel envs).
        episodes: episodes per env id per evaluation (episode ``i`` resets with ``seed + i``, so
            every evaluation meets the same problems and curves compare like with like).
        seed: base seed of the evaluation episodes.
        per_module: also log per-skill and per-routing success.
        at_start: evaluate once before the first update (the starting point of every curve).
        verbose: 1 prints each evaluation's success rates.

    After training, ``history`` holds one dict of scalars per evaluation (with ``"timesteps"``).
    """

    def __init__(self, eval_env_ids: dict[str, list[str]], eval_freq: int = 5_000, episodes: int = 50,
                 seed: int = 0, per_module: bool = True, at_start: bool = True, verbose: int = 0):
        super().__init__(verbose)
        if not isinstance(eval_env_ids, dict) or not eval_env_ids:
            raise ValueError("eval_env_ids must be a non-empty dict like {'id': [...], 'ood': [...]}")
        for name, ids in eval_env_ids.items():
            if not ids or isinstance(ids, str):
                raise ValueError(f"eval set {name!r} must be a non-empty list of env ids, got {ids!r}")
        if eval_freq < 1 or episodes < 1:
            raise ValueError(f"eval_freq and episodes must be >= 1, got {eval_freq}, {episodes}")
        self.eval_env_ids = {k: list(v) for k, v in eval_env_ids.items()}
        self.eval_freq, self.episodes, self.seed = eval_freq, episodes, seed
        self.per_module, self.at_start = per_module, at_start
        self.history: list[dict[str, Any]] = []
        self._next = eval_freq

    def _evaluate(self) -> None:
        row: dict[str, Any] = {"timesteps": self.num_timesteps}
        for name, ids in self.eval_env_ids.items():
            report = evaluate(self.model, ids, self.episodes, seed=self.seed)
            scalars = report_scalars(report, f"eval_{name}", self.per_module)
            for tag, value in scalars.items():
                self.logger.record(tag, value)
            row.update(scalars)
            if self.verbose:
                print(f"[{self.num_timesteps} steps] eval_{name}: success {report.success:.1%} "
                      + " ".join(f"{short_name(k)}={v:.0%}" for k, v in report.success_by_env.items()))
        self.history.append(row)
        # Dump now so the points land at this step rather than at the next rollout's dump.
        self.logger.dump(self.num_timesteps)

    def _on_training_start(self) -> None:
        self._next = self.num_timesteps + self.eval_freq
        if self.at_start:
            self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq * max(1, (self.num_timesteps - self._next) // self.eval_freq + 1)
            self._evaluate()
        return True


__all__ = ["CompositionEvalCallback", "report_scalars"]
