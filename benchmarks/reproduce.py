"""Reproduce the paper's three claims: BC on the SFT set, then PPO under several conditions.

One command (``compgym reproduce``, ``make reproduce`` or ``python -m composition_gym.benchmarks.reproduce``) runs,
for every seed:

1. behavior cloning of the transformer LM on the SFT composition set (``Compose-L3``); this
   checkpoint *is* the ``sft`` condition and the common start of every RL condition of that seed;
2. PPO from that checkpoint, with one equal budget, on atomic traces (``Atomic-L1``), on the SFT
   compositions (``Compose-L3``) and on the disjoint RL compositions (``Compose-RL-L3``);
3. evaluation of every condition on the same problems (ID, RL set, OOD unseen L=3, OOD depth L=4,
   atomic), seed by seed, so that differences between conditions are paired.

It writes ``reproduce.json`` (every run, the summary, the verdicts, date/commit/command),
``reproduce.md`` (ours beside the paper's numbers) and ``reproduce.png`` to ``--out``, and
TensorBoard logs of every run under ``--runs-dir``.  The claims themselves are data in
:mod:`composition_gym.benchmarks.claims`; rendering lives in :mod:`composition_gym.benchmarks.report`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from composition_gym.agents.settings import BC_PRESETS
from composition_gym.benchmarks import claims
from composition_gym.benchmarks.claims import CONDITIONS, EVAL_ENVS, SFT_ENV, env_id


@dataclass(frozen=True)
class Budget:
    """How much training and evaluation each run gets.

    Attributes:
        bc_episodes: expert episodes behavior cloning trains on (the SFT data set).
        bc_epochs: passes over them (fractions allowed).
        ppo_steps: environment steps (tokens) of PPO per RL condition, equal for every condition.
        eval_episodes: evaluation episodes per environment and run.
        n_envs: parallel environments PPO collects with.
        train_eval_freq: steps between ID/OOD evaluations during PPO (TensorBoard curves);
            ``0`` disables them.
        train_eval_episodes: episodes per environment of those evaluations.
        bc_kwargs: further keyword arguments of :func:`composition_gym.agents.behavior_cloning` (``config``, ``lr``…).
        ppo_kwargs: further keyword arguments of :func:`composition_gym.agents.train_ppo` (PPO hyper-parameters;
            unset ones are the agents' fine-tuning defaults, recorded in the results).
    """

    bc_episodes: int
    bc_epochs: float
    ppo_steps: int
    eval_episodes: int
    n_envs: int = 8
    train_eval_freq: int = 0
    train_eval_episodes: int = 0
    bc_kwargs: dict[str, Any] = field(default_factory=dict)
    ppo_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible field."""
        for name in ("bc_episodes", "ppo_steps", "eval_episodes", "n_envs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"budget.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.bc_epochs, (int, float)) or isinstance(self.bc_epochs, bool) or self.bc_epochs <= 0:
            raise ValueError(f"budget.bc_epochs must be a positive number, got {self.bc_epochs!r}")
        for name in ("train_eval_freq", "train_eval_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"budget.{name} must be a non-negative integer, got {value!r}")


_TINY = Budget(bc_episodes=BC_PRESETS["tiny"].episodes, bc_epochs=BC_PRESETS["tiny"].epochs, ppo_steps=256,
               eval_episodes=8, n_envs=4,
               bc_kwargs={"eval_episodes": 0}, ppo_kwargs={"n_steps": 32, "batch_size": 64, "n_epochs": 1})
#: Budgets by profile and name.  ``small/default`` fits the whole suite (3 seeds, 2 workers) in
#: about 19 of the allowed 30 minutes on 2 CPU cores: BC gets 2000 gradient steps (two thirds of
#: the agents' demo; 75-90 % ID success, OOD depth never above 6 %), every RL condition 80k tokens
#: (about 4700 compound or 16000 atomic episodes).  ``paper/default`` is a starting point for
#: bigger hardware, not a tuned budget.
BUDGETS: dict[str, dict[str, Budget]] = {
    "small": {
        "tiny": _TINY,
        "default": Budget(bc_episodes=BC_PRESETS["reproduce"].episodes, bc_epochs=BC_PRESETS["reproduce"].epochs,
                          ppo_steps=80_000, eval_episodes=200, n_envs=8,
                          train_eval_freq=20_000, train_eval_episodes=32, bc_kwargs={"eval_episodes": 100}),
    },
    "paper": {
        "tiny": _TINY,
        "default": Budget(bc_episodes=100_000, bc_epochs=20, ppo_steps=1_000_000, eval_episodes=500, n_envs=16,
                          train_eval_freq=100_000, train_eval_episodes=100),
    },
}
EVAL_SEED_OFFSET = 100_000  # evaluation problems never coincide with a training seed's
RL_CONDITIONS = tuple(k for k, c in CONDITIONS.items() if c.rl_env is not None)


# ---------------------------------------------------------------------------- jobs
def _eval_ids(profile: str) -> dict[str, str]:
    return {key: env_id(preset, profile) for key, preset in EVAL_ENVS.items()}


def _evaluate(agent: Any, profile: str, budget: Budget, seed: int, run_dir: Path) -> tuple[dict, dict]:
    """Success per eval key and the full report; also logged as TensorBoard scalars."""
    from torch.utils.tensorboard import SummaryWriter

    from composition_gym.agents import evaluate

    ids = _eval_ids(profile)
    report = evaluate(agent, list(ids.values()), budget.eval_episodes, seed=EVAL_SEED_OFFSET + seed)
    success = {key: float(report.success_by_env[i]) for key, i in ids.items()}
    writer = SummaryWriter(str(run_dir / "final_eval"))
    for key, value in success.items():
        writer.add_scalar(f"reproduce/success/{key}", value, 0)
    writer.close()
    # Per-episode records would make the JSON megabytes long; the per-module summaries stay.
    summary = {k: v for k, v in report.to_dict().items() if k != "episodes"}
    return success, summary


def _train_eval_ids(profile: str) -> dict[str, list[str]]:
    ids = _eval_ids(profile)
    return {"id": [ids["id"]], "ood": [ids["ood_unseen"], ids["ood_depth"]]}


def bc_job(profile: str, budget: Budget, seed: int, runs_dir: str) -> dict[str, Any]:
    """Behavior cloning on the SFT set for ``seed``, evaluated: the ``sft`` run and the BC start."""
    from composition_gym.agents import behavior_cloning

    _single_thread()
    run_dir = Path(runs_dir) / f"seed{seed}" / "sft"
    t0 = time.perf_counter()
    lm, stats = behavior_cloning(env_id(SFT_ENV, profile), budget.bc_episodes, epochs=budget.bc_epochs, seed=seed,
                                 tensorboard_log=str(run_dir), progress=False, threads=1, **budget.bc_kwargs)
    train_s = time.perf_counter() - t0
    success, report = _evaluate(lm, profile, budget, seed, run_dir)
    record = _record("sft", seed, profile, success, report, train_s, time.perf_counter() - t0 - train_s, run_dir)
    record["bc_stats"] = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    return {"record": record, "lm": lm}


def rl_job(profile: str, budget: Budget, seed: int, condition: str, lm: Any, runs_dir: str) -> dict[str, Any]:
    """PPO from the BC checkpoint ``lm`` under ``condition`` for ``seed``, evaluated."""
    from composition_gym.agents import train_ppo

    _single_thread()
    cond = CONDITIONS[condition]
    run_dir = Path(runs_dir) / f"seed{seed}" / condition
    extra: dict[str, Any] = {}
    if budget.train_eval_freq:
        extra = {"eval_env_ids": _train_eval_ids(profile), "eval_freq": budget.train_eval_freq,
                 "eval_episodes": budget.train_eval_episodes}
    t0 = time.perf_counter()
    # A copy: in-process (workers=1) every condition of a seed receives the same BC object.
    model = train_ppo(env_id(cond.rl_env, profile), copy.deepcopy(lm), budget.ppo_steps, seed=seed, n_envs=budget.n_envs,
                      run_dir=str(run_dir), progress=False, threads=1, **extra, **budget.ppo_kwargs)
    train_s = time.perf_counter() - t0
    success, report = _evaluate(model, profile, budget, seed, run_dir)
    return {"record": _record(condition, seed, profile, success, report, train_s,
                              time.perf_counter() - t0 - train_s, run_dir)}


def _record(condition: str, seed: int, profile: str, success: dict, report: dict, train_s: float,
            eval_s: float, run_dir: Path) -> dict[str, Any]:
    cond = CONDITIONS[condition]
    return {
        "seed": seed,
        "condition": condition,
        "label": cond.label,
        "sft_env": env_id(SFT_ENV, profile),
        "rl_env": env_id(cond.rl_env, profile) if cond.rl_env else None,
        "success": success,
        "train_time_s": round(train_s, 2),
        "eval_time_s": round(eval_s, 2),
        "tensorboard_dir": str(run_dir),
        "report": report,
    }


def _single_thread() -> None:
    """One torch thread per job: jobs run side by side on few cores, and results don't depend on it."""
    import torch

    torch.set_num_threads(1)


class _InlineExecutor:
    """Runs each submitted job at once in this process (``workers=1``), with the Executor API."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        import torch

        fut: Future = Future()
        threads = torch.get_num_threads()  # jobs set one thread; the caller's setting comes back
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # re-raised by fut.result() in the caller
            fut.set_exception(exc)
        finally:
            torch.set_num_threads(threads)
        return fut

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing runs in the background."""


# ---------------------------------------------------------------------------- driver
def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def reproduce(
    profile: str = "small",
    seeds: int = 3,
    budget: str | Budget = "default",
    overrides: dict[str, Any] | None = None,
    out: str | Path = "runs/reproduce",
    runs_dir: str | Path = "runs/reproduce",
    workers: int = 1,
    conditions: tuple[str, ...] = tuple(CONDITIONS),
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the suite and write ``reproduce.{json,md,png}`` to ``out``; return the results document.

    Args:
        profile: ``"small"`` or ``"paper"`` (the ``Paper-`` ids).
        seeds: how many seeds (``0 … seeds-1``); the issue asks for at least 3.
        budget: a name of :data:`BUDGETS` for ``profile``, or a :class:`Budget`.
        overrides: :class:`Budget` fields replacing the preset's (e.g. ``{"ppo_steps": 5000}``).
        out: directory of the JSON, markdown and PNG.
        runs_dir: root of the TensorBoard logs: ``<runs_dir>/<profile>-<budget>-<time>/seed<k>/<condition>``.
        workers: processes running jobs side by side (one torch thread each); 1 runs in-process.
        conditions: which of :data:`~composition_gym.benchmarks.claims.CONDITIONS` to run (``sft`` always runs).
        progress: show a live progress display (rich) on stderr.
        command: the command line recorded in the outputs (default: this process's ``argv``).
    """
    if profile not in BUDGETS:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(BUDGETS)}")
    if isinstance(budget, str):
        if budget not in BUDGETS[profile]:
            raise ValueError(f"unknown budget {budget!r}; known: {sorted(BUDGETS[profile])}")
        budget_name, budget = budget, BUDGETS[profile][budget]
    else:
        budget_name = "custom"
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(Budget)}
        if unknown:
            raise ValueError(f"unknown budget field(s) {sorted(unknown)}")
        budget = dataclasses.replace(budget, **overrides)
        budget_name += "+overrides"
    budget.validate()
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition(s) {sorted(unknown)}; known: {list(CONDITIONS)}")
    rl_conditions = [c for c in RL_CONDITIONS if c in conditions]
    started = datetime.now(timezone.utc)
    # One sub-directory per invocation: TensorBoard would otherwise mix reruns into one curve.
    out, runs_dir = Path(out), Path(runs_dir) / f"{profile}-{budget_name}-{started.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    checks = claims.support_checks(profile)

    executor: Any = _InlineExecutor() if workers == 1 else ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    records: list[dict] = []
    with _Display(progress, total=seeds * (1 + len(rl_conditions))) as display:
        try:
            pending: dict[Future, str] = {}
            for seed in range(seeds):
                display.start(f"seed {seed}: BC")
                pending[executor.submit(bc_job, profile, budget, seed, str(runs_dir))] = f"seed {seed}: BC"
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    name = pending.pop(fut)
                    result = fut.result()
                    records.append(result["record"])
                    display.finished(name, result["record"])
                    if "lm" in result:
                        seed = result["record"]["seed"]
                        for cond in rl_conditions:
                            job = f"seed {seed}: PPO {cond}"
                            display.start(job)
                            pending[executor.submit(rl_job, profile, budget, seed, cond, result["lm"],
                                                    str(runs_dir))] = job
        finally:
            executor.shutdown(cancel_futures=True)

    order = list(CONDITIONS)
    records.sort(key=lambda r: (r["seed"], order.index(r["condition"])))
    doc = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "commit": _git("rev-parse", "HEAD") or "unknown",
            # Uncommitted or untracked code (not results) means the commit alone does not reproduce it.
            "dirty": bool(_git("status", "--porcelain", "--", "composition_gym", "agents", "benchmarks",
                               ":!benchmarks/results")),
            "command": command or " ".join([Path(sys.argv[0]).name, *map(shlex.quote, sys.argv[1:])]),
            "profile": profile,
            "budget_name": budget_name,
            "budget": dataclasses.asdict(budget),
            "agents_defaults": _agents_defaults(),
            "seeds": list(range(seeds)),
            "workers": workers,
            "runs_dir": str(runs_dir),
            "cpu_count": os.cpu_count(),
            "eval_envs": _eval_ids(profile),
            "wall_time_s": round(time.perf_counter() - t0, 1),
        },
        "checks": checks,
        "runs": records,
        "summary": claims.summarize(records),
        "gains": claims.gains(records),
        "verdicts": claims.verdicts(records, budget.eval_episodes),
    }
    write_outputs(doc, out)
    return doc


def _agents_defaults() -> dict[str, Any]:
    """The agents' settings a run used where the budget left them unset (they may change over time)."""
    from composition_gym.agents.bc import DEFAULT_CONFIG
    from composition_gym.agents.ppo import FINETUNE_KWARGS

    return {"transformer": DEFAULT_CONFIG.to_dict(), "ppo_finetune_kwargs": dict(FINETUNE_KWARGS)}


class _Display:
    """A rich progress bar over jobs (when ``enabled``), and one log line per finished job (always)."""

    def __init__(self, enabled: bool, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]reproduce[/]"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=self.console, disable=not enabled)
        self.task = self.progress.add_task("", total=total)
        self.active: list[str] = []

    def __enter__(self) -> _Display:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, name: str) -> None:
        """A job was submitted (it may wait for a free worker)."""
        self.active.append(name)
        self._describe()

    def finished(self, name: str, record: dict) -> None:
        """A job finished: log its successes and advance the bar."""
        self.active.remove(name)
        scores = " ".join(f"{k}={100 * v:.0f}%" for k, v in record["success"].items())
        seconds = record["train_time_s"] + record["eval_time_s"]
        self.progress.console.print(f"{time.strftime('%H:%M:%S')} {name} done in {seconds:.0f}s: {scores}",
                                    soft_wrap=True, highlight=False)
        self.progress.advance(self.task)
        self._describe()

    def _describe(self) -> None:
        shown = ", ".join(self.active[:2]) + (f" (+{len(self.active) - 2})" if len(self.active) > 2 else "")
        self.progress.update(self.task, description=shown)


def write_outputs(doc: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``reproduce.json``, ``reproduce.md`` and ``reproduce.png`` into ``out``."""
    from composition_gym.benchmarks.report import figure, markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "reproduce.json", "markdown": out / "reproduce.md", "figure": out / "reproduce.png"}
    paths["json"].write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    paths["markdown"].write_text(markdown(doc))
    figure(doc, paths["figure"])
    return paths


def _jsonable(obj: Any) -> Any:
    """numpy scalars and other stragglers in agents' reports, as plain JSON values."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``compgym reproduce`` (also used by ``python -m composition_gym.benchmarks.reproduce``)."""
    parser.add_argument("--profile", choices=sorted(BUDGETS), default="small",
                        help="environment profile: small (CPU) or paper (the Paper- ids, bigger hardware)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    parser.add_argument("--budget", choices=("tiny", "default"), default="default",
                        help="training budget preset: tiny (plumbing only) or default (the experiment)")
    parser.add_argument("--out", default="runs/reproduce",
                        help="directory of reproduce.{json,md,png} (default: untracked; the committed results "
                             "are refreshed with --out benchmarks/results)")
    parser.add_argument("--runs-dir", default="runs/reproduce", help="directory of the TensorBoard logs")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="jobs run side by side, one process and one torch thread each (default: up to 2)")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS),
                        help="subset of conditions to run (sft always runs: it is every RL run's start)")
    parser.add_argument("--bc-episodes", type=int, help="override the budget's BC episodes")
    parser.add_argument("--bc-epochs", type=float, help="override the budget's BC epochs")
    parser.add_argument("--ppo-steps", type=int, help="override the budget's PPO steps per RL condition")
    parser.add_argument("--eval-episodes", type=int, help="override the budget's evaluation episodes per env")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def run_from_args(args: argparse.Namespace) -> int:
    """Run :func:`reproduce` from parsed :func:`add_arguments` options; print where outputs went."""
    overrides = {k: getattr(args, k) for k in ("bc_episodes", "bc_epochs", "ppo_steps", "eval_episodes")
                 if getattr(args, k) is not None}
    doc = reproduce(profile=args.profile, seeds=args.seeds, budget=args.budget, overrides=overrides, out=args.out,
                    runs_dir=args.runs_dir, workers=args.workers, conditions=tuple(args.conditions),
                    progress=not args.no_progress)
    print(Path(args.out) / "reproduce.md", f"({doc['meta']['wall_time_s'] / 60:.1f} min)")
    for v in doc["verdicts"]:
        print(f"  claim {v['claim'][-1]}: {v['verdict']:12s} {v['comparison']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m composition_gym.benchmarks.reproduce [options]``."""
    parser = argparse.ArgumentParser(prog="python -m composition_gym.benchmarks.reproduce", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
