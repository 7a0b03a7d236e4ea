"""The paper's protocol as runs: SFT on a family's coverage set, then RL arms from that checkpoint.

One *cell* is a setting of the knobs that shape SFT's reachable headroom (split family, SFT
budget, exposure of held-out compositions, trace format, model size); per cell and seed:

- an **SFT run** (:func:`sft_run`): behaviour cloning on the family's depth-mixed coverage set,
  evaluated — it is the ``sft`` condition and leaves its checkpoint for the RL arms;
- one **RL run** per arm (:func:`rl_run`), all from that checkpoint with the same budget in
  *episodes*: the group-relative trainer on atomic problems, on the SFT compositions or beyond
  the SFT support, and SB3 MaskablePPO on the SFT compositions as the baseline.

Every run is evaluated on the family's sets (the same problems for every condition of a seed):
greedy, sampled and pass@k success and all-steps-correct, per set.  :func:`cell_specs` turns a
cell into :class:`~composition_gym.benchmarks.engine.backends.RunSpec` objects for any backend; the run
functions are the only code here that trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from composition_gym.benchmarks.engine.backends import RunContext, RunSpec
from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES, VERSION
from composition_gym.benchmarks.engine.store import run_key

SFT_FN = "composition_gym.benchmarks.experiment.protocol:sft_run"
RL_FN = "composition_gym.benchmarks.experiment.protocol:rl_run"
EVAL_SEED_OFFSET = 100_000  # evaluation problems never coincide with a training seed's
TRACE_FORMATS = ("values", "tagged")


@dataclass(frozen=True)
class Budget:
    """How much training and evaluation each run gets (one home for every budget number).

    Attributes:
        sft_episodes: expert episodes behaviour cloning trains on (the SFT data set).
        sft_epochs: passes over them (fractions allowed).
        rl_episodes: episodes of RL per arm, equal for every arm and trainer.
        eval_episodes: problems per evaluation set and run.
        samples: samples per problem for sampled success and pass@k (k = ``samples``).
        temperature: sampling temperature of the evaluation.
        diag_episodes: episodes per evaluation set for the module diagnostics of each run
            (:mod:`composition_gym.agents.diagnostics`: error anatomy, probes, attention to the
            call); 0 skips them.
        bc: further keyword arguments of :func:`composition_gym.agents.behavior_cloning`.
        grpo: :class:`composition_gym.agents.grpo.GRPOConfig` fields (``iterations`` is derived
            from ``rl_episodes``).
        ppo: further keyword arguments of :func:`composition_gym.agents.train_ppo`.
        model: :class:`composition_gym.agents.TransformerConfig` fields replacing BC's default.
    """

    sft_episodes: int
    sft_epochs: float
    rl_episodes: int
    eval_episodes: int
    samples: int = 8
    temperature: float = 1.0
    diag_episodes: int = 100
    bc: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    ppo: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible field."""
        for name in ("sft_episodes", "rl_episodes", "eval_episodes", "samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"budget.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.diag_episodes, int) or isinstance(self.diag_episodes, bool) or self.diag_episodes < 0:
            raise ValueError(f"budget.diag_episodes must be an integer >= 0, got {self.diag_episodes!r}")
        for name in ("sft_epochs", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"budget.{name} must be a positive number, got {value!r}")
        if self.grpo:  # a bad trainer setting fails here, not minutes later inside a worker
            from composition_gym.agents.grpo import GRPOConfig

            if "iterations" in self.grpo:
                raise ValueError("budget.grpo cannot set iterations: they follow from rl_episodes / "
                                 "(problems_per_iter x group_size), equal for every arm")

            try:
                GRPOConfig(**self.grpo).validate()
            except TypeError:
                known = sorted(GRPOConfig().to_dict())
                raise ValueError(f"budget.grpo has unknown field(s) {sorted(set(self.grpo) - set(known))}; "
                                 f"known: {known}") from None


def _bc_budget(preset: str, **bc: Any) -> dict[str, Any]:
    """SFT fields of a :class:`Budget` from the agents' named BC preset (one home for BC budgets)."""
    from composition_gym.agents.settings import BC_PRESETS

    return {"sft_episodes": BC_PRESETS[preset].episodes, "sft_epochs": BC_PRESETS[preset].epochs,
            "bc": {"settings": preset, **bc}}


_TINY = Budget(**_bc_budget("tiny", eval_episodes=0), rl_episodes=32, eval_episodes=4, samples=4, diag_episodes=2,
               grpo={"problems_per_iter": 4, "group_size": 4},
               ppo={"n_steps": 16, "batch_size": 32, "n_epochs": 1, "n_envs": 2})
#: Budgets by profile and name.  ``tiny`` is plumbing only (seconds per run).  ``small/default``
#: is the regime of ``make reproduce`` (chosen from the measurements in docs/results/probes.md):
#: the agents' ``reproduce`` BC preset's 12.8 epochs over 14,000 expert episodes of the depth-mixed
#: set, where SFT leaves the most reachable headroom at L=3 we measured (pass@8 - greedy of
#: 15-18 points; 10k episodes solve almost nothing at L=3, 20k leave less); 8,192 RL episodes per
#: arm (16 group-relative iterations of 64 problems x 8 samples at lr 1e-4, one update of 512
#: completions each: lr 2e-4 lowered greedy success by 6-10 points from a 20k-episode SFT, and
#: larger rates or more updates per batch collapsed it); MaskablePPO gets as many episodes, which is what bounds the budget: on 2
#: cores its arm is the slowest run.  200 problems per evaluation set with 8 samples each.
#: ``paper/default`` is a starting point for a GPU, not a tuned budget.
BUDGETS: dict[str, dict[str, Budget]] = {
    "small": {
        "tiny": _TINY,
        "default": Budget(**_bc_budget("reproduce"), rl_episodes=8_192, eval_episodes=200,
                          grpo={"problems_per_iter": 64, "group_size": 8, "lr": 1e-4, "minibatch_size": 512}),
    },
    "paper": {
        "tiny": _TINY,
        "default": Budget(sft_episodes=100_000, sft_epochs=20, rl_episodes=262_144, eval_episodes=500,
                          bc={"settings": "reproduce"}, grpo={"problems_per_iter": 256, "group_size": 8},
                          ppo={"n_envs": 16}),
    },
}


def resolve_budget(profile: str, budget: str | Budget, overrides: Mapping[str, Any] | None = None) -> Budget:
    """The :class:`Budget` named ``budget`` for ``profile`` (or ``budget`` itself), with ``overrides``.

    An override of a dict field (``bc``, ``grpo``, ``ppo``, ``model``) updates the preset's dict key by
    key, so ``{"grpo": {"lr": 5e-5}}`` keeps the preset's group size; other fields are replaced.
    """
    if profile not in BUDGETS:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(BUDGETS)}")
    if isinstance(budget, str):
        if budget not in BUDGETS[profile]:
            raise ValueError(f"unknown budget {budget!r}; known: {sorted(BUDGETS[profile])}")
        budget = BUDGETS[profile][budget]
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(Budget)}
        if unknown:
            raise ValueError(f"unknown budget field(s) {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(Budget)]}")
        merged = {k: ({**getattr(budget, k), **v} if isinstance(getattr(budget, k), dict) else v)
                  for k, v in overrides.items()}
        budget = dataclasses.replace(budget, **merged)
    budget.validate()
    return budget


# ---------------------------------------------------------------------------- cells -> runs
def cell_specs(cell: Mapping[str, Any], seeds: Sequence[int], budget: Budget, conditions: Sequence[str],
               *, profile: str = "small", version: str = VERSION, device: str = "cpu") -> list[RunSpec]:
    """The runs of one cell: an SFT run per seed and, after it, one RL run per RL condition.

    ``cell`` holds ``family``, ``trace_format``, ``exposure`` (``None`` where the family has no
    exposure knob), ``sft_episodes`` and ``d_model`` (``None``: BC's default); conditions the
    family has no training set for are left out.
    """
    fam = FAMILIES[cell["family"]]
    if cell["trace_format"] not in TRACE_FORMATS:
        raise ValueError(f"unknown trace_format {cell['trace_format']!r}; choose from {TRACE_FORMATS}")
    model = dict(budget.model)
    if cell.get("d_model") is not None:
        model["d_model"] = int(cell["d_model"])
    evaluation = {"episodes": budget.eval_episodes, "samples": budget.samples, "temperature": budget.temperature,
                  "diag_episodes": budget.diag_episodes}
    tag = cell_tag(cell)
    specs = []
    for seed in seeds:
        sft = {"profile": profile, "version": version, "family": fam.key, "trace_format": cell["trace_format"],
               "exposure": cell.get("exposure"), "seed": int(seed), "sft_episodes": int(cell["sft_episodes"]),
               "sft_epochs": budget.sft_epochs, "bc": dict(budget.bc), "model": model, "eval": evaluation,
               "device": device}
        specs.append(RunSpec(SFT_FN, sft, name=f"{tag} seed{seed} sft"))
        for cond in conditions:
            c = CONDITIONS[cond]
            if c.trainer is None or c.rl_set not in fam.rl:
                continue
            trainer_kwargs = budget.grpo if c.trainer == "grpo" else budget.ppo
            rl = {"condition": cond, "rl_episodes": budget.rl_episodes, "trainer": dict(trainer_kwargs),
                  "eval": evaluation, "sft": sft}
            specs.append(RunSpec(RL_FN, rl, deps=(run_key(SFT_FN, sft),), name=f"{tag} seed{seed} {cond}"))
    return specs


def cell_tag(cell: Mapping[str, Any]) -> str:
    """A short readable name of a cell for logs and TensorBoard directories."""
    parts = [cell["family"], cell["trace_format"], f"sft{cell['sft_episodes']}"]
    if cell.get("exposure") is not None:
        parts.append(f"exp{cell['exposure']:g}")
    if cell.get("d_model") is not None:
        parts.append(f"d{cell['d_model']}")
    return "-".join(parts)


def _ids(config: Mapping[str, Any], presets: Sequence[str]) -> list[str]:
    """Registered ids of ``presets`` with the run's env kwargs (``exposure`` where the family has it)."""
    from composition_gym.registration import env_id, variant_id

    fam = FAMILIES[config["family"]]
    ids = []
    for preset in presets:
        kwargs: dict[str, Any] = {"trace_format": config["trace_format"]}
        if config.get("exposure") is not None and preset in fam.exposure:
            kwargs["exposure"] = config["exposure"]
        ids.append(variant_id(env_id(preset, config["profile"], config["version"]), **kwargs))
    return ids


# ---------------------------------------------------------------------------- the run functions
def sft_run(config: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Behaviour cloning on the family's coverage set; saves ``sft.pt``; evaluates the checkpoint."""
    from composition_gym.agents import behavior_cloning
    from composition_gym.agents.bc import DEFAULT_CONFIG

    fam = FAMILIES[config["family"]]
    model = dataclasses.replace(DEFAULT_CONFIG, **config["model"]) if config["model"] else None
    lm, stats = behavior_cloning(_ids(config, fam.sft), config["sft_episodes"],
                                 epochs=config["sft_epochs"], seed=config["seed"], config=model,
                                 tensorboard_log=str(ctx.log_dir), progress=False, threads=1,
                                 device=config["device"], **config["bc"])
    ctx.report(stage="sft_trained", **{f"bc/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
    _save_atomic(lm, ctx.artifact_dir / "sft.pt")
    return {"condition": "sft", "seed": config["seed"], "metrics": evaluate_sets(lm, config, ctx),
            "diagnostics": diagnostics(lm, config), **_split(stats)}


def rl_run(config: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """One RL arm from the SFT checkpoint, ``rl_episodes`` episodes, then the same evaluation."""
    from composition_gym.agents import TransformerLM

    sft = config["sft"]
    cond = CONDITIONS[config["condition"]]
    _, sft_dir = ctx.dependency(ctx.spec.deps[0])
    lm = TransformerLM.load(sft_dir / "sft.pt", map_location=sft["device"])
    rl_id = _ids(sft, [FAMILIES[sft["family"]].rl[cond.rl_set]])[0]
    if cond.trainer == "grpo":
        lm, stats = _train_grpo(rl_id, lm, config, ctx)
    else:
        lm, stats = _train_ppo(rl_id, lm, config, ctx)
    ctx.report(stage="rl_trained", **{f"rl/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
    return {"condition": cond.key, "seed": sft["seed"], "metrics": evaluate_sets(lm, sft, ctx),
            "diagnostics": diagnostics(lm, sft), **_split(stats)}


#: Trainer statistics that measure speed, not learning: they differ between two runs of the same
#: config, so they are kept apart from the (deterministic) training statistics.
TIMING_KEYS = frozenset({"seconds", "tokens_per_s", "sample_share"})


def _split(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"train": deterministic numbers, "timing": speed numbers}`` of a trainer's ``stats``."""
    plain = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    return {"train": {k: v for k, v in plain.items() if k not in TIMING_KEYS},
            "timing": {k: v for k, v in plain.items() if k in TIMING_KEYS}}


def _train_grpo(env_id: str, lm: Any, config: Mapping[str, Any], ctx: RunContext) -> tuple[Any, dict]:
    from composition_gym.agents.grpo import GRPOConfig, train_grpo

    cfg = GRPOConfig(**config["trainer"])
    per_iter = cfg.problems_per_iter * cfg.group_size
    if config["rl_episodes"] % per_iter:
        raise ValueError(f"rl_episodes={config['rl_episodes']} is not a multiple of problems_per_iter x group_size "
                         f"= {per_iter}: arms would get unequal budgets")
    cfg = dataclasses.replace(cfg, iterations=config["rl_episodes"] // per_iter)
    # resume=True: a run killed midway continues from the trainer's own checkpoint in its log
    # directory (keyed by the run's config hash, so never another config's).
    lm, stats = train_grpo(env_id, lm, cfg, seed=config["sft"]["seed"], run_dir=str(ctx.log_dir), progress=False,
                           device=config["sft"]["device"], resume=True)
    numbers = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return lm, {**numbers, "episodes": config["rl_episodes"], "iterations": cfg.iterations}


def _train_ppo(env_id: str, lm: Any, config: Mapping[str, Any], ctx: RunContext) -> tuple[Any, dict]:
    """MaskablePPO for about ``rl_episodes`` episodes: SB3 counts tokens, so the budget is
    ``rl_episodes`` x the mean length of the expert's episodes on ``env_id`` (recorded)."""
    from composition_gym.agents import lm_from_policy, train_ppo

    kwargs = dict(config["trainer"])
    n_envs = kwargs.pop("n_envs", 8)
    mean_len = _mean_episode_tokens(env_id, config["sft"]["seed"])
    steps = max(1, round(config["rl_episodes"] * mean_len))
    model = train_ppo(env_id, lm, steps, seed=config["sft"]["seed"], n_envs=n_envs, run_dir=str(ctx.log_dir),
                      progress=False, threads=1, device=config["sft"]["device"], **kwargs)
    return lm_from_policy(model.policy), {"episodes": config["rl_episodes"], "timesteps": steps,
                                          "mean_expert_episode_tokens": mean_len}


def _mean_episode_tokens(env_id: str, seed: int, episodes: int = 64) -> float:
    """Mean length (tokens) of the expert's episodes on ``env_id``."""
    import gymnasium as gym

    env = gym.make(env_id)
    total = 0
    for i in range(episodes):
        env.reset(seed=seed + 7_777_777 + i)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
            total += 1
            done = terminated or truncated
    env.close()
    return total / episodes


def evaluate_sets(lm: Any, config: Mapping[str, Any], ctx: RunContext) -> dict[str, dict[str, float | None]]:
    """``{eval_key: {measure: value}}`` on the family's evaluation sets; the same problems for every
    condition of a seed (evaluation seed ``EVAL_SEED_OFFSET + seed``)."""
    from composition_gym.agents import evaluate

    fam = FAMILIES[config["family"]]
    ev = config["eval"]
    keys = list(fam.evals)
    ids = _ids(config, [fam.evals[k] for k in keys])
    report = evaluate(lm, ids, ev["episodes"], seed=EVAL_SEED_OFFSET + config["seed"], samples=ev["samples"],
                      temperature=ev["temperature"])
    by_env = report.breakdown("env")
    metrics = {key: _measures(by_env[i], ev["samples"]) for key, i in zip(keys, ids)}
    for key, m in metrics.items():
        ctx.report(stage="evaluated", **{f"{key}/{k}": v for k, v in m.items() if v is not None})
    return metrics


def diagnostics(lm: Any, config: Mapping[str, Any]) -> dict[str, str] | None:
    """The module diagnostics of one run's model (``None`` when ``diag_episodes`` is 0): error anatomy
    on the family's evaluation sets, probes fit on the first of them (seen compositions), attention
    to the call; as the rows of ``compgym diagnose``'s comparison table, so the report can set
    conditions side by side."""
    n = config["eval"].get("diag_episodes", 0)
    if not n:
        return None
    from composition_gym.agents.diagnostics.report import DiagnoseConfig, comparison_rows, diagnose

    fam = FAMILIES[config["family"]]
    ids = _ids(config, list(fam.evals.values()))
    cfg = DiagnoseConfig(env_ids=ids, fit_env=ids[0], episodes=n, probe_episodes=2 * n, probe_test_episodes=n,
                         attention_episodes=max(1, n // 2), seed=EVAL_SEED_OFFSET + config["seed"])
    return comparison_rows(diagnose(lm, cfg))


def _measures(m: Mapping[str, float], k: int) -> dict[str, float | None]:
    """The four :data:`~.claims.MEASURES` from an evaluation's metrics (``None`` where the env has none)."""
    return {"greedy": m["greedy"], "sampled": m.get("sampled"), "pass_at_k": m.get(f"pass@{k}"),
            "all_steps": m.get("all_steps_correct")}


def _save_atomic(lm: Any, path: Any) -> None:
    """``lm.save`` to a temporary name, then rename: a killed run never leaves half a checkpoint."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    lm.save(tmp)
    os.replace(tmp, path)
