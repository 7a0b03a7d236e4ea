"""The headroom sweep: where does RL after SFT help?  A grid over the knobs that set SFT's headroom.

Whether RL can improve on SFT depends on how much *reachable* headroom SFT leaves (problems it
sometimes samples right but does not answer greedily).  This sweep crosses the knobs that set it
— see :class:`Grid` for every axis and its range — runs the protocol of
:mod:`composition_gym.benchmarks.experiment.protocol` in every cell (SFT, then each RL arm, per seed) and
reports the **whole grid**: per cell, SFT's headroom (pass@k − greedy) on each OOD set and each
RL arm's gain over SFT there, as a markdown table and a heatmap.  No cell is selected after the
fact: every cell the command line asked for is in both.

Runs are resumable (see :mod:`composition_gym.benchmarks.engine.store`): ``compgym sweep`` killed at any
point and started again with the same options redoes only unfinished runs and writes the same
table.  ``--backend ray`` runs each run as a Ray Tune trial (``--address`` joins a cluster).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composition_gym.agents.settings import check_device
from composition_gym.benchmarks.engine import backends
from composition_gym.benchmarks.experiment import claims, protocol
from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES
from composition_gym.benchmarks.engine.ray_backend import RayOptions
from composition_gym.benchmarks.engine.provenance import provenance
from composition_gym.benchmarks.engine.store import RunStore, atomic_write_text


@dataclass(frozen=True)
class Grid:
    """The sweep's axes.  Each tuple is the values swept; the defaults are the documented grid.

    Attributes:
        families: split families (:data:`~composition_gym.benchmarks.experiment.claims.FAMILIES`): which
            compositions are held out from SFT — whole cascades (``compose``) or routing x skill
            pairs (``routing_skill``).
        sft_episodes: SFT budget, expert episodes of the depth-mixed coverage set (any positive
            integer).  The default spans the range where SFT leaves headroom at L=3: below 10k
            (12.8 epochs) SFT solves under 10 % of L=3 problems even with 8 samples, and by 20k it
            solves most of them greedily (docs/results/probes.md).
        exposures: rate at which held-out routing x skill pairs appear in SFT data, in [0, 1]:
            0 = fully held out (SFT never samples the answer), larger = closer to "already
            solved".  Only the ``routing_skill`` family has this knob; its cells repeat per value.
        trace_formats: ``values`` (modules stay latent: only intermediates are written) or
            ``tagged`` (each latent selection is a token the policy writes, so RL can explore it).
        d_models: transformer width (``None`` = BC's default); room for a model-size axis.
        arms: conditions run in every cell (``sft`` always runs: every arm starts from it).
    """

    families: tuple[str, ...] = ("compose", "routing_skill")
    sft_episodes: tuple[int, ...] = (10_000, 14_000, 20_000)
    exposures: tuple[float, ...] = (0.0, 0.01, 0.05)
    trace_formats: tuple[str, ...] = ("values", "tagged")
    d_models: tuple[int | None, ...] = (None,)
    arms: tuple[str, ...] = tuple(CONDITIONS)

    def validate(self) -> None:
        """``ValueError`` naming the first impossible axis value."""
        for name in ("families", "sft_episodes", "exposures", "trace_formats", "d_models", "arms"):
            if not getattr(self, name):
                raise ValueError(f"grid axis {name} is empty")
        for value, known, what in ((self.families, FAMILIES, "family"), (self.arms, CONDITIONS, "arm"),
                                   (self.trace_formats, protocol.TRACE_FORMATS, "trace format")):
            bad = [v for v in value if v not in known]
            if bad:
                raise ValueError(f"unknown {what} {bad[0]!r}; choose from {list(known)}")
        if any(not isinstance(n, int) or n < 1 for n in self.sft_episodes):
            raise ValueError(f"sft_episodes must be positive integers, got {self.sft_episodes}")
        if any(not 0.0 <= e <= 1.0 for e in self.exposures):
            raise ValueError(f"exposures must lie in [0, 1], got {self.exposures}")
        if any(d is not None and (not isinstance(d, int) or d < 8) for d in self.d_models):
            raise ValueError(f"d_models must be integers >= 8 (or None), got {self.d_models}")

    def cells(self) -> list[dict[str, Any]]:
        """Every cell of the grid, in a fixed order (families, SFT budget, exposure, format, width)."""
        out = []
        for fam, n, fmt, d in itertools.product(self.families, self.sft_episodes, self.trace_formats, self.d_models):
            exposures = self.exposures if FAMILIES[fam].exposure else (None,)
            for e in exposures:
                out.append({"family": fam, "sft_episodes": n, "exposure": e, "trace_format": fmt, "d_model": d})
        return out


def sweep_specs(grid: Grid, seeds: Sequence[int], budget: protocol.Budget, *, profile: str = "small",
                version: str = claims.VERSION, device: str = "cpu") -> list[tuple[dict, list[backends.RunSpec]]]:
    """``[(cell, its runs)]`` for every cell of ``grid``."""
    grid.validate()
    return [(cell, protocol.cell_specs(cell, seeds, budget, grid.arms, profile=profile, version=version,
                                       device=device)) for cell in grid.cells()]


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
    stat = claims.mean_se(diffs)
    if stat["se"] is not None:
        stat["se"] = (stat["se"] ** 2 + sum(binom) / len(binom) / len(binom)) ** 0.5
    return stat


def cell_table(cell: Mapping, records: Sequence[Mapping], episodes: int, arms: Sequence[str]) -> dict[str, Any]:
    """One cell's row: SFT greedy and headroom per OOD set, each RL arm's greedy gain with a verdict."""
    runs = claims.run_rows(records)
    fam = FAMILIES[cell["family"]]
    row: dict[str, Any] = {"cell": dict(cell), "tag": protocol.cell_tag(cell), "sets": {}}
    for env in [k for k in fam.evals if k.startswith("ood_")]:
        sft = claims.summarize([r for r in runs if r["condition"] == "sft"]).get("sft", {}).get(env)
        entry: dict[str, Any] = {"sft_greedy": sft, "sft_headroom": headroom(runs, env, episodes), "gains": {}}
        for arm in arms:
            if arm == "sft":
                continue
            stat = claims.paired_difference(runs, arm, "sft", env, episodes)
            if stat is not None:
                entry["gains"][arm] = {**stat, "verdict": claims.verdict_of(stat)}
        row["sets"][env] = entry
    return row


def run_sweep(grid: Grid = Grid(), *, seeds: int = 3, profile: str = "small", budget: str | protocol.Budget = "default",
              overrides: Mapping[str, Any] | None = None, device: str = "cpu", sweep_dir: str | Path | None = None,
              out: str | Path | None = None, backend: str = "local", workers: int = 1,
              ray_options: RayOptions | None = None, progress: bool = True,
              command: str | None = None, version: str = claims.VERSION) -> dict[str, Any]:
    """Run (or resume) the sweep and write ``sweep.{json,md,png}`` to ``out``; return the document.

    Args:
        grid: the axes (:class:`Grid`).
        seeds: seeds ``0 … seeds-1`` per cell.
        profile, budget, overrides, device: as :func:`composition_gym.benchmarks.experiment.reproduce.reproduce`.
        sweep_dir: the run store (default ``runs/sweep/<profile>-<budget>``): finished runs are kept
            here and skipped by the next invocation with the same settings.
        out: where the table, heatmap and JSON go (default: ``sweep_dir``; ``benchmarks/results``
            refreshes the committed results).
        backend, workers, ray_options: :func:`composition_gym.benchmarks.engine.backends.run`.
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    budget_name = budget if isinstance(budget, str) else "custom"
    resolved = protocol.resolve_budget(profile, budget, overrides)
    if backend == "local":  # a Ray cluster's nodes may have the GPU its driver lacks
        check_device(device)
    if overrides:
        budget_name += "+overrides"
    store = RunStore(sweep_dir or Path("runs") / "sweep" / f"{profile}-{budget_name}")
    out = Path(out) if out is not None else store.root
    cells = sweep_specs(grid, range(seeds), resolved, profile=profile, version=version, device=device)
    specs = [s for _, cell_specs in cells for s in cell_specs]
    # The protocol's premises, once per SFT support (family and exposure), before any training.
    checks = [claims.support_checks(profile, fam, version, exposure=exp)
              for fam, exp in dict.fromkeys((c["family"], c["exposure"]) for c, _ in cells)]
    t0 = time.perf_counter()
    from composition_gym.benchmarks.engine.progress import SweepProgress

    parallel = workers if backend == "local" else (ray_options.max_concurrent if ray_options else None) or workers
    with SweepProgress(specs, store, parallel=parallel, enabled=progress, title=f"sweep {store.root.name}") as view:
        backends.run(specs, store, backend=backend, workers=workers, ray_options=ray_options, progress=view,
                     name="sweep")
    table = [cell_table(cell, [store.load(s.key) for s in cell_specs], resolved.eval_episodes, grid.arms)
             for cell, cell_specs in cells]
    doc = {
        "meta": provenance(command) | {
            "profile": profile, "version": version, "device": device, "budget_name": budget_name,
            "budget": dataclasses.asdict(resolved), "grid": dataclasses.asdict(grid), "seeds": list(range(seeds)),
            "backend": backend, "workers": workers, "store": str(store.root), "runs": len(specs),
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
    """Write ``sweep.json``, ``sweep.md`` and ``sweep.png`` (the heatmap) into ``out``, atomically."""
    from composition_gym.benchmarks.experiment.report import sweep_heatmap, sweep_markdown

    out = Path(out)
    paths = {"json": out / "sweep.json", "markdown": out / "sweep.md", "figure": out / "sweep.png"}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1, sort_keys=True) + "\n")
    atomic_write_text(paths["markdown"], sweep_markdown(doc))
    sweep_heatmap(doc, paths["figure"])
    return paths


# ---------------------------------------------------------------------------- command line
def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``compgym sweep`` and ``compgym reproduce``: budget, seeds, backend."""
    parser.add_argument("--profile", choices=sorted(protocol.BUDGETS), default="small",
                        help="environment profile: small (CPU) or paper (the Paper- ids, bigger hardware)")
    parser.add_argument("--budget", choices=("tiny", "default"), default="default",
                        help="training budget preset: tiny (plumbing only) or default (the experiment)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device of training and evaluation (e.g. cuda)")
    parser.add_argument("--sft-episodes", type=int, help="override the budget's SFT episodes")
    parser.add_argument("--rl-episodes", type=int, help="override the budget's RL episodes per arm")
    parser.add_argument("--eval-episodes", type=int, help="override the budget's problems per evaluation set")
    parser.add_argument("--grpo", nargs="+", metavar="KEY=VALUE", default=[],
                        help="group-relative trainer settings replacing the budget's, e.g. lr=5e-5 "
                             "problems_per_iter=128 (fields of GRPOConfig; iterations follow from --rl-episodes)")
    parser.add_argument("--backend", choices=backends.BACKENDS, default="local",
                        help="local process pool (default, no Ray) or Ray Tune")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="local runs side by side, one process and one torch thread each (default: up to 2)")
    parser.add_argument("--address", help="Ray: join this cluster (e.g. auto); default starts a local Ray")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray: CPUs each trial reserves")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="Ray: GPUs each trial reserves")
    parser.add_argument("--max-concurrent", type=int, help="Ray: trials at once (default: as resources allow)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``compgym sweep`` (also ``python -m composition_gym.benchmarks.experiment.sweep``)."""
    add_engine_arguments(parser)
    g = Grid()
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(g.families))
    parser.add_argument("--sft-budgets", nargs="+", type=int, default=list(g.sft_episodes),
                        help="SFT episodes axis (default %(default)s)")
    parser.add_argument("--exposures", nargs="+", type=float, default=list(g.exposures),
                        help="exposure axis of the routing_skill family (default %(default)s)")
    parser.add_argument("--trace-formats", nargs="+", choices=protocol.TRACE_FORMATS, default=list(g.trace_formats))
    parser.add_argument("--d-models", nargs="+", type=int, help="transformer width axis (default: BC's default)")
    parser.add_argument("--arms", nargs="+", choices=list(CONDITIONS), default=list(g.arms))
    parser.add_argument("--sweep-dir", help="run store (default runs/sweep/<profile>-<budget>)")
    parser.add_argument("--out", help="where sweep.{json,md,png} go (default: the sweep dir; "
                                      "benchmarks/results refreshes the committed results)")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_sweep` / ``reproduce`` keyword arguments from :func:`add_engine_arguments` options."""
    overrides: dict[str, Any] = {k: getattr(args, k) for k in ("sft_episodes", "rl_episodes", "eval_episodes")
                                 if getattr(args, k, None) is not None}
    if getattr(args, "grpo", None):
        overrides["grpo"] = parse_grpo_settings(args.grpo)
    ray_options = RayOptions(address=args.address, cpus_per_trial=args.cpus_per_trial,
                                      gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent)
    return {"seeds": args.seeds, "profile": args.profile, "budget": args.budget, "overrides": overrides,
            "device": args.device, "backend": args.backend, "workers": args.workers, "ray_options": ray_options,
            "progress": not args.no_progress}


def parse_grpo_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=5e-5", "advantage=rloo"]`` -> GRPOConfig fields, typed like the field's default;
    ``ValueError`` (one line) for a malformed item, an unknown field or a value of the wrong type."""
    from composition_gym.agents.grpo import GRPOConfig

    defaults = GRPOConfig()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or not text:
            raise ValueError(f"--grpo expects KEY=VALUE, got {item!r}")
        if not hasattr(defaults, key):
            raise ValueError(f"--grpo: unknown GRPOConfig field {key!r}; known: {sorted(defaults.to_dict())}")
        kind = type(getattr(defaults, key))
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = text.lower() in ("true", "1")
            else:
                out[key] = kind(text)
        except ValueError:
            raise ValueError(f"--grpo {key}: expected {kind.__name__}, got {text!r}") from None
    return out


def run_from_args(args: argparse.Namespace) -> int:
    """Run :func:`run_sweep` from parsed :func:`add_arguments` options; print where outputs went."""
    grid = Grid(families=tuple(args.families), sft_episodes=tuple(args.sft_budgets), exposures=tuple(args.exposures),
                trace_formats=tuple(args.trace_formats), d_models=tuple(args.d_models or (None,)),
                arms=tuple(args.arms))
    doc = run_sweep(grid, sweep_dir=args.sweep_dir, out=args.out, **engine_options(args))
    out = Path(args.out) if args.out else Path(doc["meta"]["store"])
    print(out / "sweep.md", f"({doc['meta']['runs']} runs, {doc['meta']['wall_time_s'] / 60:.1f} min this session)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m composition_gym.benchmarks.experiment.sweep [options]``."""
    parser = argparse.ArgumentParser(prog="python -m composition_gym.benchmarks.experiment.sweep",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
