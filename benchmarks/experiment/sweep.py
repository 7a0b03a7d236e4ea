"""The headroom sweep: where does RL after SFT help?  A grid over the knobs that set SFT's headroom.

Whether RL can improve on SFT depends on what SFT leaves *within sampling reach* (problems it
sometimes samples right but does not answer greedily) and on where RL trains.  This sweep crosses
the knobs of :class:`~.cells.Cell` — the grid is derived from it (:data:`~.cells.Grid`): every
cell field is an axis — runs the protocol of :mod:`composition_gym.benchmarks.experiment.protocol`
in every cell (SFT, then each arm, per seed) and reports the **whole grid**: per cell and OOD set,
SFT's pass@k (is the set within reach?) and headroom (pass@k − greedy), each arm's gain over SFT in
greedy, sampled and pass@k success, and which step fails first, as a markdown table and a heatmap.
No cell is selected after the fact: every cell the command line asked for is in both.

Runs are resumable (see :mod:`composition_gym.benchmarks.engine.store`): ``compgym sweep`` killed at any
point and started again with the same options redoes only unfinished runs and writes the same
table.  ``--backend ray`` runs each run as a Ray Tune trial (``--address`` joins a cluster).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from composition_gym.agents.settings import check_device
from composition_gym.benchmarks.engine.config import EngineConfig
from composition_gym.benchmarks.engine.config import run as engine_run
from composition_gym.benchmarks.engine.progress import SweepProgress
from composition_gym.benchmarks.experiment.report import regime_figure, sweep_heatmap, sweep_markdown
from composition_gym.benchmarks.engine.provenance import provenance
from composition_gym.benchmarks.engine.store import RunStore, atomic_write_text
from composition_gym.benchmarks.experiment import claims, protocol, statistics
from composition_gym.benchmarks.experiment.checks import premise_checks
from composition_gym.benchmarks.experiment.cells import Cell, Grid
from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES
from composition_gym.benchmarks.experiment.protocol import Budget
from composition_gym.benchmarks.experiment.reproduce import RunOptions, budget_name
from composition_gym.config import values_of

#: The documented grid of each preset (axes not named take the preset cell's value): ``default``
#: (``make sweep``), the headroom map over SFT budget, exposure and trace format in the two
#: families; ``widen``, the regime map around the widening regime: SFT budget x where the beyond
#: arm trains x process reward (docs/results/widening.md).
GRIDS: dict[str, dict[str, tuple]] = {
    "default": {"family": ("compose", "routing_skill"), "sft_episodes": (10_000, 14_000, 20_000),
                "exposure": (0.0, 0.01, 0.05), "trace_format": ("values", "tagged")},
    "widen": {"sft_episodes": (10_000, 20_000), "rl_target": ("L3", "L4"), "process_reward": (0.0, 0.5)},
}
DEFAULT_GRID = GRIDS["default"]
MEASURE_GAINS = ("greedy", "sampled", "pass_at_k")


@dataclass(frozen=True)
class SweepConfig(RunOptions, EngineConfig, Budget, Grid):
    """Every cell of a grid over the protocol's knobs: reach, headroom and each arm's gain; resumable."""

    PRESET_FIELDS = ("profile", "budget")

    arms: tuple[Literal[tuple(CONDITIONS)], ...] = tuple(c for c in CONDITIONS if c != "sft_matched")
    """Conditions run in every cell (sft always runs: every arm starts from it)."""
    sweep_dir: str | None = None
    """The run store (default runs/sweep/<profile>-<budget>): finished runs are kept and skipped."""

    @classmethod
    def from_presets(cls, profile: str = "small", budget: str = "default") -> SweepConfig:
        """The documented grid around preset ``budget`` of ``profile`` (every other option overrides it)."""
        p = protocol.preset(profile, budget)
        return cls(**GRIDS.get(budget, {}), **values_of(p.budget), profile=profile, budget=budget)

    def grid(self) -> Any:
        """The grid these settings describe."""
        return Grid(**values_of(self, Grid))

    def budget_settings(self) -> Budget:
        """The budget these settings describe."""
        return Budget(**values_of(self, Budget))


# ---------------------------------------------------------------------------- the table
def headroom(runs: Sequence[Mapping], env: str, episodes: int) -> dict | None:
    """SFT's pass@k − greedy on ``env``: mean ± SE over seeds (binomial error of both included)."""
    diffs, binom = [], []
    for run in runs:
        m = run["metrics"].get(env, {}) if run["condition"] == "sft" else {}
        if m.get("pass_at_k") is None:
            continue
        diffs.append(m["pass_at_k"] - m["greedy"])
        binom.append(sum(p * (1 - p) / episodes for p in (m["pass_at_k"], m["greedy"])))
    if not diffs:
        return None
    stat = statistics.mean_se(diffs)
    if stat["se"] is not None:
        stat["se"] = (stat["se"] ** 2 + sum(binom) / len(binom) / len(binom)) ** 0.5
    return stat


def cell_table(cell: Cell, records: Sequence[Mapping], episodes: int, arms: Sequence[str]) -> dict[str, Any]:
    """One cell's row, per OOD set: SFT greedy, pass@k (reach) and headroom, the first failing step,
    and each arm's gain over SFT in greedy, sampled and pass@k success with a verdict at ±2 SE."""
    runs = statistics.run_rows(records)
    sft_runs = [r for r in runs if r["condition"] == "sft"]
    row: dict[str, Any] = {"cell": dataclasses.asdict(cell), "tag": cell.tag(), "sets": {},
                           "seconds": round(sum(r["seconds"] for r in records), 1)}
    by_measure = {m: statistics.summarize(sft_runs, m).get("sft", {}) for m in ("greedy", "pass_at_k")}
    for env in [k for k in FAMILIES[cell.family].evals if k.startswith("ood_")]:
        entry: dict[str, Any] = {"sft_greedy": by_measure["greedy"].get(env),
                                 "sft_pass_at_k": by_measure["pass_at_k"].get(env),
                                 "sft_headroom": headroom(runs, env, episodes),
                                 "first_fail": statistics.first_fail(runs, env), "gains": {}}
        for arm in arms:
            if arm == "sft":
                continue
            for measure in MEASURE_GAINS:
                stat = statistics.paired_difference(runs, arm, "sft", env, episodes, measure=measure)
                if stat is not None:
                    key = arm if measure == "greedy" else f"{arm}:{measure}"
                    entry["gains"][key] = {**stat, "verdict": statistics.verdict_of(stat)}
        row["sets"][env] = entry
    return row


def run_sweep(cfg: SweepConfig | None = None, *, command: str | None = None,
              version: str = claims.ENV_VERSION) -> dict[str, Any]:
    """Run (or resume) the sweep and write ``sweep.{json,md,png}``; return the document.

    Args:
        cfg: the grid, the budget, the engine (default: the documented grid, ``make sweep``).
        command: the command line recorded in the outputs (default: this process's ``argv``).
        version: the environments' version.
    """
    cfg = cfg or SweepConfig.from_presets()
    preset = protocol.preset(cfg.profile, cfg.budget)
    budget, grid = cfg.budget_settings(), cfg.grid()
    if cfg.backend == "local":  # a Ray cluster's nodes may have the GPU its driver lacks
        check_device(cfg.device)
    name = budget_name(cfg, preset, budget)
    store = RunStore(cfg.sweep_dir or Path("runs") / "sweep" / f"{cfg.profile}-{name}")
    out = Path(cfg.out) if cfg.out is not None else store.root
    arms = tuple(dict.fromkeys(("sft", *cfg.arms)))
    cells = [(cell, protocol.cell_specs(cell, range(cfg.seeds), budget, arms, profile=cfg.profile, version=version,
                                        device=cfg.device)) for cell in grid.cells(preset.cell)]
    specs = list({s.key: s for _, cell_specs in cells for s in cell_specs}.values())  # cells share SFT runs
    # The protocol's premises, once per SFT support, before any training.
    checks = [premise_checks(c, cfg.profile, version)
              for c in {(c.family, c.exposure): c for c, _ in cells}.values()]
    t0 = time.perf_counter()
    parallel = cfg.workers if cfg.backend == "local" else cfg.ray.max_concurrent or cfg.workers
    with SweepProgress(specs, store, parallel=parallel, enabled=cfg.progress, title=f"sweep {store.root.name}") as view:
        engine_run(specs, store, backend=cfg.backend, workers=cfg.workers, ray_options=cfg.ray, progress=view,
                     name="sweep")
    table = [cell_table(cell, [store.load(s.key) for s in cell_specs], budget.eval_episodes, arms)
             for cell, cell_specs in cells]
    doc = {
        "meta": provenance(command) | {
            "profile": cfg.profile, "version": version, "device": cfg.device, "budget_name": name,
            "budget": budget.to_dict(), "grid": dataclasses.asdict(grid), "axes": grid.varying(), "arms": list(arms),
            "base_cell": dataclasses.asdict(preset.cell), "seeds": list(range(cfg.seeds)), "backend": cfg.backend,
            "workers": cfg.workers, "store": str(store.root), "runs": len(specs),
            "run_seconds_total": round(sum(store.load(s.key)["seconds"] for s in specs), 1),
            "wall_time_s": round(time.perf_counter() - t0, 1),
        },
        "checks": checks,
        "table": table,
        "runs": {s.key: store.load(s.key)["result"] for s in specs},
    }
    write_sweep_outputs(doc, out)
    return doc


def write_sweep_outputs(doc: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.md``, ``sweep.png`` (the heatmap) and, where the grid has cells
    with a beyond arm on unseen L=4, ``sweep_regimes.png`` (:func:`~.report.regime_figure`) into ``out``."""
    out = Path(out)
    paths = {"json": out / "sweep.json", "markdown": out / "sweep.md", "figure": out / "sweep.png",
             "regimes": out / "sweep_regimes.png"}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1, sort_keys=True) + "\n")
    atomic_write_text(paths["markdown"], sweep_markdown(doc))
    sweep_heatmap(doc, paths["figure"])
    if regime_figure(doc, paths["regimes"]) is None:
        del paths["regimes"]
    return paths


def run(cfg: SweepConfig) -> int:
    """``compgym sweep``: run :func:`run_sweep`; print where the outputs went."""
    doc = run_sweep(cfg)
    out = Path(cfg.out) if cfg.out else Path(doc["meta"]["store"])
    print(out / "sweep.md", f"({doc['meta']['runs']} runs, {doc['meta']['wall_time_s'] / 60:.1f} min this session)")
    return 0


__all__ = ["DEFAULT_GRID", "GRIDS", "SweepConfig", "cell_table", "headroom", "run", "run_sweep", "write_sweep_outputs"]
