"""Reproduce the paper's three claims: the protocol of :mod:`.protocol` in one cell, several seeds.

One command (``compgym reproduce``, ``make reproduce`` or
``python -m composition_gym.benchmarks.experiment.reproduce``) runs, for every seed:

1. SFT: behaviour cloning on the family's depth-mixed coverage set (v1 ids); this checkpoint is
   the ``sft`` condition and the common start of every RL arm of that seed;
2. RL arms from it with one equal budget in episodes: the group-relative trainer on atomic
   problems, on the SFT compositions and beyond the SFT support, and SB3 MaskablePPO on the SFT
   compositions (the baseline);
3. evaluation of every condition on the same problems (seen, unseen L=3 or held-out routing x
   skill, L=4, atomic): greedy, sampled, pass@k, all-steps-correct.

Runs go through the sweep engine (:mod:`.backends`): resumable (a killed command started again
redoes only unfinished runs), local process pool by default, Ray Tune with ``--backend ray``.
It writes ``reproduce.{json,md,png}`` (every run, mean ± SE over seeds, paired differences and
verdicts at ±2 SE) to ``--out`` — by default the untracked run store under ``runs/reproduce/``;
``--out benchmarks/results`` refreshes the committed results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from composition_gym.agents.settings import check_device
from composition_gym.benchmarks.engine import backends
from composition_gym.benchmarks.experiment import claims, protocol
from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES, MEASURES
from composition_gym.benchmarks.engine.ray_backend import RayOptions
from composition_gym.benchmarks.engine.store import RunStore, atomic_write_text
from composition_gym.benchmarks.engine.provenance import provenance
from composition_gym.benchmarks.experiment.sweep import add_engine_arguments, engine_options

#: The cell ``make reproduce`` runs unless told otherwise (its SFT budget is the budget's): the
#: compose family, on which all three claims are stated, with ``values`` traces.  Why this cell and
#: not another of the sweep's map: docs/results/headroom-map.md.
DEFAULT_CELL: dict[str, Any] = {"family": "compose", "trace_format": "values", "exposure": None, "d_model": None}


def reproduce(
    profile: str = "small",
    seeds: int = 3,
    budget: str | protocol.Budget = "default",
    overrides: Mapping[str, Any] | None = None,
    cell: Mapping[str, Any] | None = None,
    conditions: Sequence[str] = tuple(CONDITIONS),
    device: str = "cpu",
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    backend: str = "local",
    workers: int = 1,
    ray_options: RayOptions | None = None,
    progress: bool = True,
    command: str | None = None,
    version: str = claims.VERSION,
) -> dict[str, Any]:
    """Run (or resume) the suite and write ``reproduce.{json,md,png}`` to ``out``; return the document.

    Args:
        profile: ``"small"`` or ``"paper"`` (the ``Paper-`` ids).
        seeds: how many seeds (``0 … seeds-1``); the protocol asks for at least 3.
        budget: a name of :data:`~.protocol.BUDGETS` for ``profile``, or a :class:`~.protocol.Budget`.
        overrides: :class:`~.protocol.Budget` fields replacing the preset's (e.g. ``{"rl_episodes": 512}``).
        cell: keys of :data:`DEFAULT_CELL` to change (``family``, ``trace_format``, ``exposure``,
            ``d_model``); the SFT budget comes from ``budget``.
        conditions: which of :data:`~.claims.CONDITIONS` to run (``sft`` always runs).
        device: torch device for training and evaluation.
        out: directory of the outputs (default: the run store).
        runs_dir: the run store (default ``runs/reproduce/<profile>-<budget>``): finished runs in
            it are reused, so the same command resumes a killed one.
        backend, workers, ray_options: how runs execute (:func:`.backends.run`).
        progress: live progress view on stderr.
        command: the command line recorded in the outputs (default: this process's ``argv``).
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition(s) {sorted(unknown)}; known: {list(CONDITIONS)}")
    resolved = protocol.resolve_budget(profile, budget, overrides)
    if backend == "local":  # a Ray cluster's nodes may have the GPU its driver lacks
        check_device(device)
    budget_name = (budget if isinstance(budget, str) else "custom") + ("+overrides" if overrides else "")
    the_cell = {**DEFAULT_CELL, **(cell or {}), "sft_episodes": resolved.sft_episodes}
    unknown = set(the_cell) - {*DEFAULT_CELL, "sft_episodes"}
    if unknown:
        raise ValueError(f"unknown cell key(s) {sorted(unknown)}; known: {sorted(DEFAULT_CELL)}")
    if the_cell["family"] not in FAMILIES:
        raise ValueError(f"unknown family {the_cell['family']!r}; choose from {list(FAMILIES)}")
    if FAMILIES[the_cell["family"]].exposure and the_cell["exposure"] is None:
        the_cell["exposure"] = 0.0
    store = RunStore(runs_dir or Path("runs") / "reproduce" / f"{profile}-{budget_name}")
    out = Path(out) if out is not None else store.root
    specs = protocol.cell_specs(the_cell, range(seeds), resolved, list(conditions), profile=profile,
                                version=version, device=device)
    checks = claims.support_checks(profile, the_cell["family"], version, exposure=the_cell["exposure"])

    from composition_gym.benchmarks.engine.progress import SweepProgress

    with SweepProgress(specs, store, parallel=workers, enabled=progress, title="reproduce") as view:
        records = backends.run(specs, store, backend=backend, workers=workers, ray_options=ray_options,
                               progress=view, name="reproduce")
    order = list(CONDITIONS)
    runs = sorted(claims.run_rows(records), key=lambda r: (r["seed"], order.index(r["condition"])))
    doc = {
        "meta": provenance(command) | {
            "profile": profile, "version": version, "device": device, "cell": the_cell, "budget_name": budget_name,
            "budget": dataclasses.asdict(resolved), "agents_defaults": _agents_defaults(),
            "seeds": list(range(seeds)), "backend": backend, "workers": workers, "runs_dir": str(store.root),
            "eval_envs": dict(FAMILIES[the_cell["family"]].evals),
            # Summed over runs, so it does not depend on how many of them this session resumed.
            "run_seconds_total": round(sum(r["seconds"] for r in records), 1),
            "wall_time_s": round(view.elapsed(), 1),
        },
        "checks": checks,
        "runs": runs,
        **claims.statistics(runs, resolved.eval_episodes),
    }
    write_outputs(doc, out)
    return doc


def _agents_defaults() -> dict[str, Any]:
    """The agents' settings a run used where the budget left them unset (they may change over time)."""
    from composition_gym.agents.bc import DEFAULT_CONFIG
    from composition_gym.agents.ppo import FINETUNE_KWARGS

    return {"transformer": DEFAULT_CONFIG.to_dict(), "ppo_finetune_kwargs": dict(FINETUNE_KWARGS)}


def write_outputs(doc: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``reproduce.json``, ``reproduce.md`` and ``reproduce.png`` into ``out``."""
    from composition_gym.benchmarks.experiment.report import figure, markdown

    out = Path(out)
    paths = {"json": out / "reproduce.json", "markdown": out / "reproduce.md", "figure": out / "reproduce.png"}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1) + "\n")
    atomic_write_text(paths["markdown"], markdown(doc))
    figure(doc, paths["figure"])
    return paths


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``compgym reproduce`` (also ``python -m composition_gym.benchmarks.experiment.reproduce``)."""
    add_engine_arguments(parser)
    parser.add_argument("--family", choices=list(FAMILIES), default=DEFAULT_CELL["family"],
                        help="split family of the cell (default %(default)s)")
    parser.add_argument("--trace-format", choices=protocol.TRACE_FORMATS, default=DEFAULT_CELL["trace_format"])
    parser.add_argument("--exposure", type=float, help="exposure of held-out pairs (routing_skill family; default 0)")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS),
                        help="subset of conditions to run (sft always runs: it is every RL run's start)")
    parser.add_argument("--runs-dir", help="run store (default runs/reproduce/<profile>-<budget>)")
    parser.add_argument("--out", help="directory of reproduce.{json,md,png} (default: the run store; "
                                      "benchmarks/results refreshes the committed results)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run :func:`reproduce` from parsed :func:`add_arguments` options; print where outputs went."""
    cell = {"family": args.family, "trace_format": args.trace_format, "exposure": args.exposure}
    conditions = tuple(dict.fromkeys(("sft", *args.conditions)))
    doc = reproduce(cell=cell, conditions=conditions, out=args.out, runs_dir=args.runs_dir, **engine_options(args))
    out = Path(args.out) if args.out else Path(doc["meta"]["runs_dir"])
    print(out / "reproduce.md", f"({doc['meta']['wall_time_s'] / 60:.1f} min)")
    for v in doc["verdicts"]:
        print(f"  claim {v['claim'][-1]}: {v['verdict']:12s} {v['comparison']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m composition_gym.benchmarks.experiment.reproduce [options]``."""
    parser = argparse.ArgumentParser(prog="python -m composition_gym.benchmarks.experiment.reproduce",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
