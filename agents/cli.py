"""``compgym train``, ``compgym eval`` and ``compgym demo``: their settings and what runs them.

Each command is a settings dataclass (the options, derived by tyro: see :mod:`composition_gym.cli`)
and a ``run_*`` function.  The settings are declared here and in :mod:`~.settings`, torch-free, so
``--help`` builds without loading torch; the functions import the trainers when they run (for
start-up speed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import tyro

from composition_gym.agents import seeds
from composition_gym.agents.settings import (ADVANTAGES, BC_PRESETS, DEMO_BUDGETS, PPO_PRESETS, SB3_ALGOS, BCConfig,
                                             DemoBudget, GRPOConfig, PPOConfig, resolve_threads)
from composition_gym.atomic import atomic_write
from composition_gym.cli import render_table
from composition_gym.config import Config, bounded
from composition_gym.profiles import PROFILES
from composition_gym.registration import SUITES, VERSIONS, env_id, resolve_env_id, short_name, suite

#: ``--algo`` of ``compgym train``: SB3's algorithms, or the project's group-relative trainer.
TRAIN_ALGOS = SB3_ALGOS + ADVANTAGES


@dataclass(frozen=True)
class CommonOptions:
    """Options every agents command has."""

    seed: int = 0
    """Seeds the model, the data and the episodes."""
    threads: int | None = bounded(None, ge=1)
    """Torch threads (default: 2 if two cores are idle, else 1; or COMPGYM_THREADS)."""
    progress: bool = True
    """Progress bars."""


@dataclass(frozen=True)
class SuiteOptions:
    """Which ID / OOD suites evaluate a model."""

    profile: Literal[tuple(PROFILES)] = "small"
    """The suites' profile."""
    version: Literal[VERSIONS] = VERSIONS[-1]
    """The suites' environment version (default: the newest)."""


# ---------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainConfig(CommonOptions, SuiteOptions, Config):
    """Train a model: behavior cloning, then SB3 PPO / MaskablePPO / RecurrentPPO or group-relative RL."""

    PRESET_FIELDS = ("bc_preset", "init")

    env: tuple[str, ...] = ("Compose-L1to3",)
    """Env id(s) of behavior cloning (and of RL unless --rl-env)."""
    rl_env: tuple[str, ...] = ()
    """Env id(s) of the RL phase (default: --env; group-relative RL trains on the first)."""
    algo: Literal[TRAIN_ALGOS] = "maskable_ppo"
    """SB3 baselines, or group-relative RL (grpo, drgrpo, rloo: the advantage)."""
    init: str = "bc"
    """Where RL starts: bc (behavior cloning on --env first), scratch (no BC; recurrent_ppo needs it), or a
    model: pretrained[:NAME] or a TransformerLM .pt."""
    bc_preset: Literal[tuple(BC_PRESETS)] = "demo"
    """BC preset the --bc.* settings start from."""
    bc: BCConfig = BC_PRESETS["demo"]
    """Behavior cloning."""
    ppo_steps: int = bounded(20_000, ge=1)
    """PPO environment steps (tokens)."""
    ppo: PPOConfig = PPO_PRESETS["finetune"]
    """SB3 PPO settings (the finetune preset from a model, the scratch preset with --init scratch)."""
    grpo: GRPOConfig = GRPOConfig()
    """Group-relative RL settings (--algo grpo|drgrpo|rloo)."""
    max_minutes: float | None = bounded(None, gt=0)
    """Group-relative RL: stop (with a checkpoint) after the iteration that passes this wall-clock budget."""
    eval_every: int = bounded(10, ge=0)
    """Group-relative RL: iterations between ID/OOD evaluations (0: none)."""
    eval_freq: int = bounded(5_000, ge=1)
    """PPO: environment steps between ID/OOD evaluations."""
    eval_episodes: int = bounded(50, ge=1)
    """Episodes per id of each evaluation."""
    tensorboard: str = "runs"
    """TensorBoard root directory."""
    run_dir: str | None = None
    """Group-relative RL: TensorBoard + checkpoint directory (default: next TENSORBOARD/ALGO_k); an existing one resumes."""
    out: str | None = None
    """Where the model goes (default: model.zip for SB3, model.pt for group-relative RL)."""
    device: str = "cpu"
    """Torch device (cpu, cuda)."""

    @classmethod
    def from_presets(cls, bc_preset: str = "demo", init: str = "bc") -> TrainConfig:
        """The defaults for ``--bc-preset`` and ``--init``."""
        if bc_preset not in BC_PRESETS:
            raise ValueError(f"unknown BC preset {bc_preset!r}; known: {sorted(BC_PRESETS)}")
        return cls(bc_preset=bc_preset, bc=BC_PRESETS[bc_preset], init=init,
                   ppo=PPO_PRESETS["scratch" if init == "scratch" else "finetune"])


def run_train(cfg: TrainConfig) -> int:
    """``compgym train``."""
    from composition_gym.agents.loading import load_agent
    from composition_gym.agents.bc import behavior_cloning
    from composition_gym.agents.settings import check_device
    from composition_gym.agents.transformer import TransformerLM

    check_device(cfg.device)
    env_ids = [resolve_env_id(e) for e in cfg.env]
    rl_ids = [resolve_env_id(e) for e in cfg.rl_env] or env_ids
    eval_ids = {"id": suite("id", cfg.profile, cfg.version), "ood": suite("ood", cfg.profile, cfg.version)}
    if cfg.algo == "recurrent_ppo" and cfg.init != "scratch":
        raise ValueError("recurrent_ppo trains its own LSTM policy from scratch: add --init scratch")
    t0 = time.perf_counter()
    lm = None
    if cfg.init not in ("bc", "scratch"):
        lm = load_agent(cfg.init)
        if not isinstance(lm, TransformerLM):
            raise ValueError(f"--init needs a TransformerLM checkpoint (.pt) or 'pretrained', got {cfg.init!r}")
    if cfg.algo in ADVANTAGES:
        if cfg.init == "scratch":
            raise ValueError("group-relative RL fine-tunes a model: --init bc, pretrained or a .pt, not scratch")
        if cfg.init == "bc":
            lm, _ = behavior_cloning(env_ids, settings=cfg.bc, seed=cfg.seed, progress=cfg.progress,
                                     threads=cfg.threads, device=cfg.device)
        return _train_group_relative(cfg, lm, rl_ids[0], eval_ids, t0)
    from composition_gym.agents.ppo import bc_then_ppo, train_ppo

    common: dict[str, Any] = dict(algo=cfg.algo, settings=cfg.ppo, seed=cfg.seed, eval_env_ids=eval_ids,
                                  eval_freq=cfg.eval_freq, eval_episodes=cfg.eval_episodes, progress=cfg.progress,
                                  threads=resolve_threads(cfg.threads), device=cfg.device)
    if cfg.init == "bc":  # one TensorBoard run for both stages
        model, _ = bc_then_ppo(env_ids, ppo_steps=cfg.ppo_steps, rl_env_id=rl_ids, tensorboard_log=cfg.tensorboard,
                               bc_kwargs={"settings": cfg.bc}, **common)
    else:
        model = train_ppo(rl_ids, lm, cfg.ppo_steps, tensorboard_log=cfg.tensorboard, **common)
    out = cfg.out or "model.zip"
    atomic_write(out, model.save)
    print(f"saved {type(model).__name__} to {out} ({time.perf_counter() - t0:.0f} s); "
          f"curves: tensorboard --logdir {cfg.tensorboard}")
    return 0


def _train_group_relative(cfg: TrainConfig, lm: Any, rl_id: str, eval_ids: dict[str, list[str]], t0: float) -> int:
    from composition_gym.agents.grpo import train_grpo
    from composition_gym.agents.ppo import next_run_dir
    from composition_gym.agents.settings import torch_threads

    grpo = cfg.grpo
    if cfg.algo != "grpo":  # the algorithm names the advantage
        if grpo.advantage not in ("grpo", cfg.algo):
            raise ValueError(f"--algo {cfg.algo} and --grpo.advantage {grpo.advantage} disagree; give one of them")
        grpo = grpo.replace(advantage=cfg.algo)
    run_dir = cfg.run_dir or next_run_dir(cfg.tensorboard, cfg.algo.upper())
    with torch_threads(cfg.threads):
        lm, _ = train_grpo(rl_id, lm, grpo, seed=cfg.seed, run_dir=run_dir,
                           eval_env_ids=eval_ids if cfg.eval_every > 0 else None, eval_every=max(cfg.eval_every, 1),
                           eval_episodes=cfg.eval_episodes, progress=cfg.progress, device=cfg.device,
                           time_limit_s=None if cfg.max_minutes is None else 60 * cfg.max_minutes)
    out = cfg.out or "model.pt"
    if not out.endswith(".pt"):
        raise ValueError(f"group-relative RL saves a TransformerLM checkpoint: --out must end in .pt, got {out!r}")
    lm.save(out)  # atomic
    print(f"saved TransformerLM to {out} ({time.perf_counter() - t0:.0f} s); curves: tensorboard --logdir {run_dir}")
    return 0


# ---------------------------------------------------------------------------- eval
@dataclass(frozen=True)
class EvalConfig(CommonOptions, SuiteOptions, Config):
    """Evaluate a saved model on an ID / OOD suite or on given ids: success by set, depth, skill and routing."""

    model: tyro.conf.Positional[str] = "pretrained"
    """An SB3 .zip, a TransformerLM checkpoint (.pt), or pretrained[:NAME]."""
    suite: Literal[SUITES] = "all"
    """The suite of ids (unless --env)."""
    env: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Explicit env ids instead of a suite, one per option: --env A --env B."""
    episodes: int = bounded(100, ge=1)
    """Episodes per id; episode i resets with seed + i."""
    samples: int = bounded(0, ge=0)
    """Also sample K completions per problem (TransformerLM): sampled success, pass@K, headroom."""
    temperature: float = bounded(1.0, gt=0)
    """Sampling temperature (with --samples)."""
    baseline: str | None = None
    """Also evaluate this model on the same problems and print the paired differences (model - baseline)."""
    json: str | None = None
    """Also write the report as JSON here."""
    device: str = "cpu"
    """Torch device of a TransformerLM (cpu, cuda)."""


def run_eval(cfg: EvalConfig) -> int:
    """``compgym eval``."""
    from composition_gym.agents.loading import load_agent
    from composition_gym.agents.evaluation import evaluate, paired_differences
    from composition_gym.agents.settings import check_device, torch_threads
    from composition_gym.agents.transformer import TransformerLM

    check_device(cfg.device)

    def load(path: str) -> Any:
        agent = load_agent(path, device=cfg.device)  # every kind of model on --device
        if cfg.samples and not isinstance(agent, TransformerLM):
            raise ValueError(f"--samples needs TransformerLM checkpoints (.pt or 'pretrained'), got {path!r}")
        return agent

    agent = load(cfg.model)
    env_ids = [resolve_env_id(e) for e in cfg.env] or suite(cfg.suite, cfg.profile, cfg.version)
    with torch_threads(cfg.threads):
        report = evaluate(agent, env_ids, cfg.episodes, seed=cfg.seed, samples=cfg.samples,
                          temperature=cfg.temperature)
    print(report.table(f"{cfg.model}: {cfg.episodes} episodes per env, seed {cfg.seed}"))
    doc = report.to_dict()
    if cfg.baseline:
        base = load(cfg.baseline)
        with torch_threads(cfg.threads):
            before = evaluate(base, env_ids, cfg.episodes, seed=cfg.seed, samples=cfg.samples,
                              temperature=cfg.temperature)
        doc["paired_vs_baseline"] = diffs = paired_differences(before, report)
        print(f"\n{cfg.model} - {cfg.baseline}, paired over the same problems (points, ± standard error):")
        for env, row in diffs.items():
            cells = "  ".join(f"{m} {100 * v['before']:.1f} -> {100 * v['after']:.1f} "
                              f"({100 * v['diff']:+.1f} ± {100 * v['se']:.1f})" for m, v in row.items())
            print(f"  {short_name(env)}: {cells}")
    if cfg.json:
        atomic_write(cfg.json, json.dumps(doc, indent=1))
        print(f"wrote {cfg.json}")
    return 0


# ---------------------------------------------------------------------------- demo
@dataclass(frozen=True)
class DemoConfig(CommonOptions, DemoBudget):
    """Behavior cloning then PPO on the small profile, an ID / OOD table, the TensorBoard command."""

    PRESET_FIELDS = ("quick",)

    quick: bool = False
    """A tiny budget that checks the pipeline (its numbers mean nothing)."""
    algo: Literal["ppo", "maskable_ppo"] = "maskable_ppo"
    """The SB3 algorithm after behavior cloning."""
    tensorboard: str = "runs"
    """TensorBoard root directory."""

    @classmethod
    def from_presets(cls, quick: bool = False) -> DemoConfig:
        """The full demo's budget, or the quick one's."""
        budget = DEMO_BUDGETS["quick" if quick else "full"]
        return cls(**{f.name: getattr(budget, f.name) for f in dataclasses.fields(DemoBudget)}, quick=quick)


def comparison_table(reports: dict[str, Any], groups: dict[str, list[str]]) -> str:
    """Success per env id (rows, grouped as ID / OOD) for several agents (columns), then per depth."""
    from rich import box
    from rich.table import Table

    names = list(reports)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("")
    table.add_column("env id")
    for n in names:
        table.add_column(n, justify="right")
    for group, ids in groups.items():
        for e in ids:
            table.add_row(group, short_name(e), *(f"{reports[n].success_by_env[e]:.1%}" for n in names))
    table.add_section()
    depths = sorted({d for r in reports.values() for d in r.by_depth}, key=int)
    for d in depths:
        table.add_row("depth", f"L={d}", *(f"{reports[n].by_depth.get(d, float('nan')):.1%}" for n in names))
    return render_table(table)


def run_demo(cfg: DemoConfig) -> int:
    """``compgym demo``."""
    from composition_gym.agents.bc import DEFAULT_CONFIG, behavior_cloning
    from composition_gym.agents.evaluation import evaluate
    from composition_gym.agents.ppo import next_run_dir, train_ppo

    threads = resolve_threads(cfg.threads)
    sft, rl = env_id("Compose-L1to3"), env_id("Compose-RL-L3")
    groups = {"ID": suite("id"), "OOD": suite("ood")}
    run_dir = next_run_dir(cfg.tensorboard, "demo")
    print(f"compgym demo: behavior cloning on {sft} ({cfg.bc.episodes} expert episodes), then "
          f"{cfg.algo} on {rl} ({cfg.ppo_steps} steps); {threads} torch threads")
    t0 = time.perf_counter()
    lm, stats = behavior_cloning(sft, settings=cfg.bc, config=DEFAULT_CONFIG, seed=cfg.seed, tensorboard_log=run_dir,
                                 progress=cfg.progress, threads=threads)
    t_bc = time.perf_counter() - t0
    print(f"BC: {t_bc:.0f} s, held-out token accuracy {stats['token_acc']:.1%}, "
          f"greedy success {stats['heldout_success']:.1%}")
    model = train_ppo(rl, lm, cfg.ppo_steps, algo=cfg.algo, seed=cfg.seed, run_dir=run_dir,
                      eval_env_ids={"id": groups["ID"], "ood": groups["OOD"]},
                      eval_freq=max(cfg.ppo_steps // 3, 1), eval_episodes=max(cfg.eval_episodes // 4, 1),
                      progress=cfg.progress, threads=threads)
    t_ppo = time.perf_counter() - t0 - t_bc
    all_ids = groups["ID"] + groups["OOD"]
    reports = {}
    for name, agent in (("BC", lm), ("BC+PPO", model)):
        t = time.perf_counter()
        print(f"evaluating {name}: {len(all_ids)} env ids x {cfg.eval_episodes} episodes ...", end=" ", flush=True)
        reports[name] = evaluate(agent, all_ids, cfg.eval_episodes, seed=seeds.EVAL + cfg.seed)
        print(f"{time.perf_counter() - t:.0f} s", flush=True)
    model_path = os.path.join(run_dir, "model.zip")
    atomic_write(model_path, model.save)
    lm.save(os.path.join(run_dir, "bc_lm.pt"))
    total = time.perf_counter() - t0
    print()
    print(comparison_table(reports, groups))
    print(f"\n{cfg.eval_episodes} episodes per env id (seeds {seeds.EVAL + cfg.seed}+i); "
          f"BC {t_bc:.0f} s, PPO {t_ppo:.0f} s, total {total:.0f} s")
    final = reports["BC+PPO"]
    print("BC+PPO over every evaluated id (every depth together):")
    for name, values in (("skill", final.by_skill), ("routing", final.by_routing)):
        print(f"  by {name:<8}" + "  ".join(f"{k}={v:.0%}" for k, v in values.items()))
    summary = os.path.join(run_dir, "demo.json")
    budget = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DemoBudget)}
    atomic_write(summary, json.dumps({"budget": DemoBudget(**budget).to_dict(), "bc_stats": stats,
                                      "seconds": {"bc": t_bc, "ppo": t_ppo, "total": total},
                                      "reports": {k: {kk: vv for kk, vv in r.to_dict().items() if kk != "episodes"}
                                                  for k, r in reports.items()}}, indent=1))
    again = " ".join(f"--env {short_name(e)}" for e in all_ids)
    print(f"saved {model_path} and {summary}; evaluate again with: compgym eval {model_path} {again} "
          f"--episodes {cfg.eval_episodes} --seed {seeds.EVAL + cfg.seed}")
    print(f"TensorBoard: tensorboard --logdir {cfg.tensorboard}")
    return 0


__all__ = ["DemoConfig", "EvalConfig", "TRAIN_ALGOS", "TrainConfig", "comparison_table", "run_demo", "run_eval",
           "run_train"]
