"""Reproduce the paper's claims: the protocol of :mod:`.protocol` in one cell, several seeds.

One command (``compgym reproduce``, ``make reproduce``) runs, for every seed:

1. SFT: behaviour cloning on the family's depth-mixed coverage set (v1 ids), after the controlled
   prior if the cell asks for it; this checkpoint is the ``sft`` condition and the common start
   of every arm of that seed;
2. arms from it with one equal budget in episodes: the group-relative trainer on atomic problems,
   on the SFT compositions and beyond the SFT support (the cell's ``rl_target``), SB3 MaskablePPO
   on the SFT compositions (the baseline), and behaviour cloning on the beyond arm's problems (the
   matched-data control);
3. evaluation of every condition on the same problems (seen, unseen at L=3, 4 and 5 or held-out
   pairs, atomic): greedy, sampled, pass@k, all-steps-correct, and a record, by cascade key, of
   any evaluated problem a training stage could have drawn.

Runs go through the engine (:mod:`composition_gym.benchmarks.engine`): resumable (a killed command
started again redoes only unfinished runs), a local process pool by default, Ray Tune with
``--backend ray``.  It writes ``reproduce.{json,md,png}`` (every run, mean ± SE over seeds, paired
differences and verdicts at ±2 SE) to ``--out`` — by default the untracked run store under
``runs/reproduce/``; ``--out benchmarks/results`` refreshes the committed results.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from composition_gym.agents.settings import check_device
from composition_gym.benchmarks.engine.config import EngineConfig
from composition_gym.benchmarks.engine.config import run as engine_run
from composition_gym.benchmarks.engine.progress import SweepProgress
from composition_gym.benchmarks.experiment.report import figure, markdown
from composition_gym.benchmarks.engine.provenance import provenance
from composition_gym.benchmarks.engine.store import RunStore, atomic_write_text
from composition_gym.benchmarks.experiment import claims, protocol, statistics
from composition_gym.benchmarks.experiment.checks import premise_checks
from composition_gym.benchmarks.experiment.cells import Cell
from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES
from composition_gym.benchmarks.experiment.protocol import PROFILES, Budget
from composition_gym.config import bounded, values_of


@dataclass(frozen=True)
class RunOptions:
    """Settings every experiment command shares besides the cell, the budget and the engine."""

    profile: Literal[PROFILES] = "small"
    """Environment profile: small (CPU) or paper (the Paper- ids, bigger hardware); picks the preset too."""
    budget: Literal[tuple(protocol.PRESETS["small"])] = "default"
    """Preset every other option starts from: tiny (plumbing), default (the experiment), widen (RL beyond SFT)."""
    seeds: int = bounded(3, ge=1)
    """Number of seeds, 0..N-1."""
    device: str = "cpu"
    """Torch device of training and evaluation (e.g. cuda)."""
    out: str | None = None
    """Where the outputs go (default: the run store; benchmarks/results refreshes the committed results)."""


@dataclass(frozen=True)
class ReproduceConfig(RunOptions, EngineConfig, Budget, Cell):
    """Reproduce the paper's claims: SFT then every arm in one cell, several seeds, paired verdicts."""

    PRESET_FIELDS = ("profile", "budget")

    conditions: tuple[Literal[tuple(CONDITIONS)], ...] = tuple(CONDITIONS)
    """Conditions to run (sft always runs: it is every arm's start)."""
    runs_dir: str | None = None
    """The run store (default runs/reproduce/<profile>-<budget>): finished runs in it are reused."""

    @classmethod
    def from_presets(cls, profile: str = "small", budget: str = "default") -> ReproduceConfig:
        """The defaults of preset ``budget`` of ``profile`` (every other option overrides them)."""
        p = protocol.preset(profile, budget)
        return cls(**values_of(p.cell), **values_of(p.budget), profile=profile, budget=budget)

    def cell(self) -> Cell:
        """The cell these settings describe."""
        return Cell(**values_of(self, Cell))

    def budget_settings(self) -> Budget:
        """The budget these settings describe."""
        return Budget(**values_of(self, Budget))


def budget_name(cfg: RunOptions, preset: protocol.Preset, budget: Budget, cell: Cell | None = None) -> str:
    """The preset's name, ``+overrides`` when the budget (or the cell's budgets) differ from it."""
    changed = budget != preset.budget or (cell is not None and (cell.sft_episodes, cell.rl_episodes)
                                          != (preset.cell.sft_episodes, preset.cell.rl_episodes))
    return cfg.budget + ("+overrides" if changed else "")


def reproduce(cfg: ReproduceConfig | None = None, *, command: str | None = None,
              version: str = claims.ENV_VERSION) -> dict[str, Any]:
    """Run (or resume) the protocol in one cell and write ``reproduce.{json,md,png}``; return the document.

    Args:
        cfg: everything (default: the ``small``/``default`` preset, i.e. ``make reproduce``).
        command: the command line recorded in the outputs (default: this process's ``argv``).
        version: the environments' version.
    """
    cfg = cfg or ReproduceConfig.from_presets()
    cell, budget = cfg.cell(), cfg.budget_settings()
    if cfg.backend == "local":  # a Ray cluster's nodes may have the GPU its driver lacks
        check_device(cfg.device)
    name = budget_name(cfg, protocol.preset(cfg.profile, cfg.budget), budget, cell)
    conditions = tuple(dict.fromkeys(("sft", *cfg.conditions)))
    store = RunStore(cfg.runs_dir or Path("runs") / "reproduce" / f"{cfg.profile}-{name}")
    out = Path(cfg.out) if cfg.out is not None else store.root
    specs = protocol.cell_specs(cell, range(cfg.seeds), budget, conditions, profile=cfg.profile, version=version,
                                device=cfg.device)
    left_out = [c for c in conditions if not protocol.applies(c, cell)]
    checks = premise_checks(cell, cfg.profile, version)

    with SweepProgress(specs, store, parallel=cfg.workers, enabled=cfg.progress, title="reproduce") as view:
        records = engine_run(specs, store, backend=cfg.backend, workers=cfg.workers, ray_options=cfg.ray,
                               progress=view, name="reproduce")
    order = list(CONDITIONS)
    runs = sorted(statistics.run_rows(records), key=lambda r: (r["seed"], order.index(r["condition"])))
    doc = {
        "meta": provenance(command) | {
            "profile": cfg.profile, "version": version, "device": cfg.device, "cell": dataclasses.asdict(cell),
            "budget_name": name, "budget": {**budget.to_dict(), "sft_episodes": cell.sft_episodes,
                                            "rl_episodes": cell.rl_episodes},
            "agents_defaults": _agents_defaults(), "seeds": list(range(cfg.seeds)), "backend": cfg.backend,
            "workers": cfg.workers, "runs_dir": str(store.root), "conditions_left_out": left_out,
            "eval_envs": {k: v[0] for k, v in FAMILIES[cell.family].evals.items()},
            # Summed over runs, so it does not depend on how many of them this session resumed.
            "run_seconds_total": round(sum(r["seconds"] for r in records), 1),
            "wall_time_s": round(view.elapsed(), 1),
        },
        "checks": checks,
        "runs": runs,
        **statistics.statistics(runs, budget.eval_episodes),
    }
    write_outputs(doc, out)
    return doc


def _agents_defaults() -> dict[str, Any]:
    """The agents' settings a run used where the budget left them unset (they may change over time)."""
    from composition_gym.agents.bc import DEFAULT_CONFIG  # here, for start-up speed: the options need no torch

    return {"transformer": DEFAULT_CONFIG.to_dict()}


def write_outputs(doc: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``reproduce.json``, ``reproduce.md`` and ``reproduce.png`` into ``out``."""
    out = Path(out)
    paths = {"json": out / "reproduce.json", "markdown": out / "reproduce.md", "figure": out / "reproduce.png"}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1) + "\n")
    atomic_write_text(paths["markdown"], markdown(doc))
    figure(doc, paths["figure"])
    return paths


def run(cfg: ReproduceConfig) -> int:
    """``compgym reproduce``: run :func:`reproduce`; print where the outputs went and the verdicts."""
    doc = reproduce(cfg)
    out = Path(cfg.out) if cfg.out else Path(doc["meta"]["runs_dir"])
    print(out / "reproduce.md", f"({doc['meta']['wall_time_s'] / 60:.1f} min)")
    if doc["meta"]["conditions_left_out"]:
        print(f"  left out (no training set in this cell): {', '.join(doc['meta']['conditions_left_out'])}")
    for v in doc["verdicts"]:
        print(f"  {v['claim']}: {v['verdict']:12s} {v['comparison']}")
    return 0


__all__ = ["ReproduceConfig", "RunOptions", "reproduce", "run", "write_outputs"]
