"""``compgym diagnose MODEL [--compare MODEL2 …]``: error anatomy, probes and attention, side by side.

The options are :class:`DiagnoseCommand`'s fields (the diagnosis's own :class:`DiagnoseConfig` and
what the command adds); ``python -m composition_gym.agents.diagnostics`` runs it alone.  Heavy
imports (torch, matplotlib) happen in :func:`run_diagnose`, for start-up speed: ``--help`` builds
without them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

import tyro

from composition_gym.agents.diagnostics.report import DiagnoseConfig
from composition_gym.config import bounded


@dataclass(frozen=True)
class DiagnoseCommand(DiagnoseConfig):
    """Why a model fails: error anatomy, linear probes and attention to the call, side by side."""

    model: tyro.conf.Positional[str] = "pretrained"
    """A TransformerLM checkpoint (.pt), an SB3 .zip, or pretrained[:NAME]."""
    compare: tuple[str, ...] = ()
    """More models, diagnosed side by side on the same problems."""
    threads: int | None = bounded(None, ge=1)
    """Torch threads (default: 2 if two cores are idle, else 1; or COMPGYM_THREADS)."""
    json: str | None = None
    """Write every number (per layer, head, module) here."""
    figures: str | None = None
    """Write diagnostics.png into this folder."""


def run_diagnose(cfg: DiagnoseCommand) -> int:
    """``compgym diagnose``."""
    from composition_gym.agents.loading import load_agent
    from composition_gym.agents.diagnostics.report import comparison_table, diagnose, save_figure, save_json

    config = DiagnoseConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(DiagnoseConfig)}).resolved()
    paths = [cfg.model, *cfg.compare]
    models = {name: load_agent(path) for name, path in zip(_names(paths), paths)}  # every file checked first
    results = {name: diagnose(model, config, threads=cfg.threads) for name, model in models.items()}
    from rich.console import Console

    Console().print(comparison_table(results))
    if cfg.json:
        save_json(results, cfg.json)
        print(f"wrote {cfg.json}")
    if cfg.figures:
        print(f"wrote {save_figure(results, os.path.join(cfg.figures, 'diagnostics.png'))}")
    return 0


def _names(paths: list[str]) -> list[str]:
    """Column names: file stems; ``folder/stem`` where stems collide; ``stem#k`` where that still does."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = [s if stems.count(s) == 1 else os.path.join(os.path.basename(os.path.dirname(p)), s)
             for s, p in zip(stems, paths)]
    return [n if names.count(n) == 1 else f"{s}#{i + 1}" for i, (n, s) in enumerate(zip(names, stems))]


def main(argv: list[str] | None = None) -> int:
    """Run ``diagnose`` alone (``python -m composition_gym.agents.diagnostics MODEL …``)."""
    from composition_gym import cli

    return cli.main(["diagnose", *(argv if argv is not None else sys.argv[1:])])


__all__ = ["DiagnoseCommand", "main", "run_diagnose"]
