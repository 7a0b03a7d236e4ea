"""The paper's protocol as runs: SFT on a family's coverage set, then arms from that checkpoint.

One :class:`~.cells.Cell` is a setting of the knobs; per cell and seed:

- an **SFT run** (:func:`sft_run`): optionally the controlled prior first (behavior cloning on
  programs built only from skills held out of every later stage), then behavior cloning on the
  family's depth-mixed coverage set, evaluated — it is the ``sft`` condition and leaves its
  checkpoint for the arms;
- one **arm run** per condition (:func:`rl_run`), all from that checkpoint with the same budget
  in *episodes*: the group-relative trainer on atomic problems, on the SFT compositions or beyond
  the SFT support (:attr:`~.cells.Cell.rl_target`), SB3 MaskablePPO on the SFT compositions as
  the baseline, and behavior cloning continued on exactly the problems the beyond arm saw (the
  matched-data control).  The trainer is looked up in
  :data:`composition_gym.agents.trainers.TRAINERS`.

Every run is evaluated on the family's sets (the same problems for every condition of a seed):
greedy, sampled and pass@k success and all-steps-correct, per set; and it records, by cascade key,
how many evaluated problems any of its training stages could have drawn (:func:`leakage`).
:func:`cell_specs` turns a cell into :class:`~composition_gym.benchmarks.engine.backends.RunSpec`
objects for any backend; the run functions are the only code here that trains.  They import the
agents inside the functions, for start-up speed: building a command line or a grid never loads torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from composition_gym.agents import seeds
from composition_gym.agents.settings import BC_PRESETS, PPO_PRESETS, BCConfig, GRPOConfig, PPOConfig
from composition_gym.benchmarks.engine.backends import RunContext, RunSpec
from composition_gym.benchmarks.engine.store import run_key
from composition_gym.benchmarks.experiment.cells import Cell, cell_of, prior_id, run_ids
from composition_gym.benchmarks.experiment.checks import leakage
from composition_gym.benchmarks.experiment.claims import CONDITIONS, ENV_VERSION, FAMILIES
from composition_gym.config import Config, bounded
from composition_gym.registration import variant_id

SFT_FN = "composition_gym.benchmarks.experiment.protocol:sft_run"
RL_FN = "composition_gym.benchmarks.experiment.protocol:rl_run"


@dataclass(frozen=True)
class Budget(Config):
    """How much training and evaluation each run gets, besides the cell's SFT and RL episodes."""

    sft_epochs: float = bounded(12.8, gt=0)
    """Passes over the SFT data (fractions allowed)."""
    bc_preset: Literal[tuple(BC_PRESETS)] = "reproduce"
    """BC preset whose optimizer settings SFT uses (its episodes and epochs are the cell's and the budget's)."""
    bc_heldout: int | None = bounded(None, ge=0)
    """Held-out episodes behavior cloning checks itself on (None: the preset's)."""
    eval_episodes: int = bounded(200, ge=1)
    """Problems per evaluation set and run."""
    samples: int = bounded(8, ge=1)
    """Samples per problem for sampled success and pass@k (k = samples)."""
    temperature: float = bounded(1.0, gt=0)
    """Sampling temperature of the evaluation."""
    diag_episodes: int = bounded(100, ge=0)
    """Episodes per evaluation set for the module diagnostics of each run (0 skips them)."""
    grpo: GRPOConfig = GRPOConfig(problems_per_iter=64, group_size=8, lr=1e-4, minibatch_size=512)
    """Group-relative arms (iterations follow from the cell's rl_episodes; process reward is the cell's)."""
    ppo: PPOConfig = PPO_PRESETS["finetune"]
    """The MaskablePPO arm."""
    matched_epochs: float = bounded(4.0, gt=0)
    """Passes of the matched-data SFT control over the beyond arm's problems."""
    prior_episodes: int = bounded(20_000, ge=1)
    """Expert episodes of the controlled prior (cells with prior)."""
    prior_epochs: float = bounded(19.2, gt=0)
    """Passes over the prior's data."""
    prior_depth: int = bounded(6, ge=1)
    """The prior's programs have depths 1 to this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        default = GRPOConfig()
        if self.grpo.iterations != default.iterations:
            raise ValueError("budget grpo.iterations is not settable: iterations follow from the cell's rl_episodes / "
                             "(problems_per_iter x group_size), equal for every arm")
        if self.grpo.process_reward != default.process_reward:
            raise ValueError("budget grpo.process_reward is not settable: the process reward is the cell's "
                             "process_reward (a sweep axis)")
        if self.grpo.replay_coef != default.replay_coef:
            raise ValueError("budget grpo.replay_coef is not settable: the replay weight is the cell's replay (a sweep axis)")


@dataclass(frozen=True)
class Preset:
    """A named starting point of ``compgym reproduce`` / ``sweep``: a budget and a cell."""

    budget: Budget
    cell: Cell


_TINY = Preset(Budget(sft_epochs=1.0, bc_preset="tiny", bc_heldout=0, eval_episodes=4, samples=4, diag_episodes=2,
                      grpo=GRPOConfig(problems_per_iter=4, group_size=4, replay_episodes=32, replay_batch=8),
                      ppo=PPOConfig(n_steps=16, batch_size=32, n_epochs=1, n_envs=2),
                      matched_epochs=1.0, prior_episodes=32, prior_epochs=1.0, prior_depth=4),
               Cell(sft_episodes=64, rl_episodes=32))
#: Presets by profile and name.  ``tiny`` is plumbing only (seconds per run).  ``small/default``
#: is the regime of ``make reproduce`` (chosen from the measurements in docs/results/probes.md):
#: the agents' ``reproduce`` BC preset's 12.8 epochs over 14,000 expert episodes of the depth-mixed
#: set, where SFT leaves the most reachable headroom at L=3 we measured (pass@8 - greedy of
#: 15-18 points; 10k episodes solve almost nothing at L=3, 20k leave less); 8,192 RL episodes per
#: arm (16 group-relative iterations of 64 problems x 8 samples at lr 1e-4, one update of 512
#: completions each: lr 2e-4 lowered greedy success by 6-10 points from a 20k-episode SFT, and
#: larger rates or more updates per batch collapsed it); MaskablePPO gets as many episodes, which
#: is what bounds the budget: on 2 cores its arm is the slowest run.  200 problems per evaluation
#: set with 8 samples each.  ``paper/default`` is a starting point for a GPU, not a tuned budget.
#: ``small/widen``: the regime where RL beyond the SFT support widens (docs/results/widening.md): the
#: shipped checkpoint's SFT recipe (BC preset ``demo``: 20,000 episodes x 19.2 epochs), then every arm
#: for 409,600 episodes (400 group-relative iterations of 128 problems x 8 at lr 1e-4), the beyond arm
#: on depths 3-4 of the RL split with process reward 0.5, every group-relative arm replaying the SFT
#: set at weight 2 (and the matched control training on the same traces), 50 diagnostic episodes.
_WIDEN = Preset(Budget(sft_epochs=19.2, bc_preset="demo", diag_episodes=50, matched_epochs=2.0,
                       prior_episodes=14_000, prior_epochs=12.8,
                       grpo=GRPOConfig(problems_per_iter=128, group_size=8, lr=1e-4)),
                Cell(sft_episodes=20_000, rl_target="L4", process_reward=0.5, replay=2.0, rl_episodes=409_600))
PRESETS: dict[str, dict[str, Preset]] = {
    "small": {"tiny": _TINY, "default": Preset(Budget(), Cell()), "widen": _WIDEN},
    "paper": {
        "tiny": _TINY,
        "default": Preset(Budget(sft_epochs=20, eval_episodes=500, grpo=GRPOConfig(problems_per_iter=256, group_size=8),
                                 ppo=PPOConfig(n_envs=16)),
                          Cell(sft_episodes=100_000, rl_episodes=262_144)),
    },
}
PROFILES = tuple(PRESETS)


def preset(profile: str, name: str) -> Preset:
    """The :class:`Preset` ``name`` of ``profile`` (one-line ``ValueError`` for unknown names)."""
    if profile not in PRESETS:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PRESETS)}")
    if name not in PRESETS[profile]:
        raise ValueError(f"unknown budget {name!r}; known: {sorted(PRESETS[profile])}")
    return PRESETS[profile][name]


# ---------------------------------------------------------------------------- cells -> runs
def applies(cond: str, cell: Cell) -> bool:
    """Whether condition ``cond`` has a training set in ``cell`` (its family and RL target)."""
    c = CONDITIONS[cond]
    if c.trainer is None:
        return True
    if c.trainer == "maskable_ppo" and cell.replay:
        return False  # SB3 has no replay
    fam = FAMILIES[cell.family]
    return cell.rl_target in fam.beyond if c.rl_set == "beyond" else c.rl_set in fam.rl


def sft_config(cell: Cell, seed: int, budget: Budget, *, profile: str, version: str, device: str) -> dict[str, Any]:
    """The SFT run's config: what its key hashes and what :func:`sft_run` reads."""
    bc = BC_PRESETS[budget.bc_preset].replace(episodes=cell.sft_episodes, epochs=budget.sft_epochs,
                                              eval_episodes=budget.bc_heldout)
    config = {"profile": profile, "version": version, "device": device, "seed": int(seed), **cell.stage_dict("sft"),
              "bc": bc.to_dict(),
              "eval": {"episodes": budget.eval_episodes, "samples": budget.samples, "temperature": budget.temperature,
                       "diag_episodes": budget.diag_episodes}}
    if cell.rl_target == "pairs":  # every condition of the cell is evaluated on the evaluation half
        config["evaluation_half"] = True
    if cell.prior:
        config["prior_bc"] = bc.replace(episodes=budget.prior_episodes, epochs=budget.prior_epochs).to_dict()
        config["prior_depth"] = budget.prior_depth
    return config


#: The group-relative settings each run takes from its cell, not the budget (reports leave them out
#: of the budget's line).
GRPO_SET_BY_CELL = ("iterations", "process_reward", "replay_coef")


def arm_trainer_config(cond: str, cell: Cell, budget: Budget) -> dict[str, Any]:
    """The trainer settings of condition ``cond``'s run (``ValueError`` when arms would get unequal budgets)."""
    trainer = CONDITIONS[cond].trainer
    per_iter = budget.grpo.problems_per_iter * budget.grpo.group_size
    if trainer in ("grpo", "drgrpo", "rloo", "sft") and cell.rl_episodes % per_iter:
        raise ValueError(f"rl_episodes={cell.rl_episodes} is not a multiple of problems_per_iter x group_size = "
                         f"{per_iter}: arms would get unequal budgets")
    if trainer == "sft":
        # The beyond arm's problems, once each: RL saw each of them group_size times.
        return BCConfig(episodes=cell.rl_episodes // budget.grpo.group_size, epochs=budget.matched_epochs,
                        batch_size=BC_PRESETS[budget.bc_preset].batch_size, lr=BC_PRESETS[budget.bc_preset].lr,
                        eval_episodes=0).to_dict()
    if trainer == "maskable_ppo":
        return budget.ppo.to_dict()
    return budget.grpo.replace(**dict(zip(GRPO_SET_BY_CELL, (cell.rl_episodes // per_iter, cell.process_reward,
                                                            cell.replay)))).to_dict()


def cell_specs(cell: Cell, seeds_: Sequence[int], budget: Budget, conditions: Sequence[str], *, profile: str = "small",
               version: str = ENV_VERSION, device: str = "cpu") -> list[RunSpec]:
    """The runs of one cell: an SFT run per seed and, after it, one run per other condition.

    Conditions that have no training set in the cell (see :func:`applies`) are left out.
    """
    tag = cell.tag()
    specs = []
    for seed in seeds_:
        sft = sft_config(cell, seed, budget, profile=profile, version=version, device=device)
        specs.append(RunSpec(SFT_FN, sft, name=f"{tag} seed{seed} sft"))
        for cond in conditions:
            if CONDITIONS[cond].trainer is None or not applies(cond, cell):
                continue
            rl = {"condition": cond, **cell.stage_dict("rl"), "trainer": arm_trainer_config(cond, cell, budget),
                  "sft": sft}
            if cell.replay:  # the pool every arm of the cell replays
                rl["replay_episodes"] = budget.grpo.replay_episodes
            specs.append(RunSpec(RL_FN, rl, deps=(run_key(SFT_FN, sft),), name=f"{tag} seed{seed} {cond}"))
    return specs


# ---------------------------------------------------------------------------- the run functions
def sft_run(config: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """(The prior, then) behavior cloning on the family's coverage set; saves ``sft.pt``; evaluates it."""
    from composition_gym.agents import TransformerLM, behavior_cloning
    from composition_gym.agents.bc import DEFAULT_CONFIG

    lm = None
    model = DEFAULT_CONFIG if config.get("d_model") is None else dataclasses.replace(DEFAULT_CONFIG,
                                                                                    d_model=config["d_model"])
    prior_stats: dict[str, Any] = {}
    if config.get("prior"):
        lm, prior_stats = behavior_cloning(prior_id(config), settings=BCConfig.from_dict(config["prior_bc"]),
                                           seed=config["seed"], config=model, tensorboard_log=str(ctx.log_dir / "prior"),
                                           run_dir=str(ctx.artifact_dir / "prior"), progress=False, threads=1,
                                           device=config["device"])
        ctx.report(stage="prior_trained", **{f"prior/{k}": v for k, v in prior_stats.items()
                                             if isinstance(v, (int, float))})
    lm, stats = behavior_cloning(run_ids(config, ["sft"]), settings=BCConfig.from_dict(config["bc"]), seed=config["seed"],
                                 config=model, lm=lm, tensorboard_log=str(ctx.log_dir),
                                 run_dir=str(ctx.artifact_dir / "bc"),  # a killed run resumes mid-BC
                                 progress=False, threads=1, device=config["device"])
    assert isinstance(lm, TransformerLM)
    ctx.report(stage="sft_trained", **{f"bc/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
    lm.save(ctx.artifact_dir / "sft.pt")  # atomic: a killed run never leaves half a checkpoint
    out = {"condition": "sft", "seed": config["seed"], "metrics": evaluate_sets(lm, config, ctx),
           "diagnostics": diagnostics(lm, config), "leakage": leakage(config), **_split(stats)}
    if prior_stats:
        out["prior"] = _split(prior_stats)
    return out


def rl_run(config: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """One arm from the SFT checkpoint with the condition's trainer, then the same evaluation."""
    from composition_gym.agents import TransformerLM
    from composition_gym.agents.trainers import TRAINERS

    sft = config["sft"]
    cond = CONDITIONS[config["condition"]]
    _, sft_dir = ctx.dependency(ctx.spec.deps[0])
    lm = TransformerLM.load(sft_dir / "sft.pt", map_location=sft["device"])
    trainer = TRAINERS[cond.trainer]
    cell = cell_of(config)
    env_id = arm_id(config)
    if cond.trainer == "sft":
        # The matched-data control replays the beyond arm's problems: GRPO's run seed s draws from
        # s * PROBLEM_STRIDE on, problem j of iteration i at s * PROBLEM_STRIDE + i * B + j.
        run_seed = sft["seed"] * seeds.PROBLEM_STRIDE
    else:
        run_seed = sft["seed"]
    replay = None
    if cell.replay:  # the SFT set's traces, the same pool for every arm of the seed
        from composition_gym.agents.trainers import ReplayPool

        replay = ReplayPool(run_ids(config, ["sft"])[0], config["replay_episodes"], sft["seed"] + seeds.REPLAY)
    lm, stats = trainer.train(env_id, lm, trainer.config.from_dict(config["trainer"]), episodes=cell.rl_episodes,
                              seed=run_seed, run_dir=str(ctx.log_dir), device=sft["device"], replay=replay)
    ctx.report(stage="rl_trained", **{f"rl/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
    return {"condition": cond.key, "seed": sft["seed"], "metrics": evaluate_sets(lm, sft, ctx),
            "diagnostics": diagnostics(lm, sft), "leakage": leakage(config), **_split(stats)}


def arm_id(config: Mapping[str, Any]) -> str:
    """The registered id an arm trains on (its family's set for the condition, with the cell's kwargs;
    the process reward of the cell for the group-relative and PPO arms)."""
    cond = CONDITIONS[config["condition"]]
    env_id = run_ids(config, [cond.rl_set])[0]
    reward = config.get("process_reward", 0.0)
    if reward and cond.trainer != "sft":
        env_id = variant_id(env_id, process_reward=reward)
    return env_id


#: Trainer statistics that measure speed, not learning: they differ between two runs of the same
#: config, so they are kept apart from the (deterministic) training statistics.
TIMING_KEYS = frozenset({"seconds", "tokens_per_s", "sample_share"})


def _split(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"train": deterministic numbers, "timing": speed numbers}`` of a trainer's ``stats``."""
    plain = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    return {"train": {k: v for k, v in plain.items() if k not in TIMING_KEYS},
            "timing": {k: v for k, v in plain.items() if k in TIMING_KEYS}}


def evaluate_sets(lm: Any, config: Mapping[str, Any], ctx: RunContext) -> dict[str, dict[str, float | None]]:
    """``{eval_key: {measure: value}}`` on the family's evaluation sets; the same problems for every
    condition of a seed (evaluation seed ``PROTOCOL_EVAL + seed``)."""
    from composition_gym.agents import evaluate

    keys = list(FAMILIES[config["family"]].evals)
    ids = run_ids(config, keys)
    ev = config["eval"]
    report = evaluate(lm, ids, ev["episodes"], seed=seeds.PROTOCOL_EVAL + config["seed"], samples=ev["samples"],
                      temperature=ev["temperature"])
    by_env = report.breakdown("env")
    metrics = {key: {**_measures(by_env[i], ev["samples"]),
                     "first_fail": _first_fail([e for e in report.episodes if e.env_id == i])}
               for key, i in zip(keys, ids)}
    for key, m in metrics.items():
        ctx.report(stage="evaluated", **{f"{key}/{k}": v for k, v in m.items() if isinstance(v, float)})
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

    ids = run_ids(config, list(FAMILIES[config["family"]].evals))
    cfg = DiagnoseConfig(env_ids=tuple(ids), fit_env=ids[0], episodes=n, probe_episodes=2 * n, probe_test_episodes=n,
                         attention_episodes=max(1, n // 2), seed=seeds.PROTOCOL_EVAL + config["seed"])
    return comparison_rows(diagnose(lm, cfg))


def _measures(m: Mapping[str, float], k: int) -> dict[str, float | None]:
    """The four :data:`~.claims.MEASURES` from an evaluation's metrics (``None`` where the env has none)."""
    return {"greedy": m["greedy"], "sampled": m.get("sampled"), "pass_at_k": m.get(f"pass@{k}"),
            "all_steps": m.get("all_steps_correct")}


def _first_fail(episodes: Sequence[Any]) -> dict[str, float]:
    """Share of ``episodes`` whose first wrong step is step 1, 2, … (``"none"``: all right)."""
    counts: dict[str, int] = {}
    for e in episodes:
        wrong = [i for i, ok in enumerate(e.step_correct, 1) if not ok]
        key = str(wrong[0]) if wrong else "none"
        counts[key] = counts.get(key, 0) + 1
    return {k: v / max(len(episodes), 1) for k, v in sorted(counts.items())}
