"""How runs execute: the engine's settings (shared by ``compgym reproduce`` and ``compgym sweep``)
and :func:`run`, which hands the runs to the backend they name (local process pool or Ray Tune)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import sys
from collections.abc import Sequence
from typing import Any

from composition_gym.benchmarks.engine.backends import BACKENDS, RunSpec, already_done, run_local
from composition_gym.benchmarks.engine.ray_backend import RayOptions, run_ray
from composition_gym.benchmarks.engine.store import RunStore
from composition_gym.config import Config, bounded


def _default_workers() -> int:
    return min(2, os.cpu_count() or 1)

@dataclass(frozen=True)
class EngineConfig(Config):
    """Where and how many runs execute at once; finished runs in the store are never redone."""

    backend: Literal[BACKENDS] = "local"
    """local: a process pool on this machine (no Ray); ray: one Ray Tune trial per run."""
    workers: int = bounded(default_factory=_default_workers, ge=1)
    """Local runs side by side, one process and one torch thread each (default: up to 2)."""
    ray: RayOptions = RayOptions()
    """The Ray backend's cluster and resources."""
    progress: bool = True
    """A live progress display on stderr."""

    def engine(self) -> EngineConfig:
        """These settings alone (from a command's config that extends them)."""
        return EngineConfig(self.backend, self.workers, self.ray, self.progress)

def run(specs: Sequence[RunSpec], store: RunStore, *, backend: str = "local", workers: int = 1,
        ray_options: Any = None, progress: Any = None, name: str = "sweep",
        threads: int | None = None) -> list[dict[str, Any]]:
    """Run ``specs`` on ``backend`` (skipping finished ones) and return every record, in ``specs`` order.

    When some runs are already finished (a re-run of a killed command), it says so on stderr:
    ``resuming: K of N runs already finished in STORE``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    finished = already_done(specs, store)
    if finished:
        print(f"resuming: {len(finished)} of {len(specs)} runs already finished in {store.root}",
              file=sys.stderr, flush=True)
    if backend == "local":
        run_local(specs, store, workers=workers, progress=progress, threads=threads)
    else:
        run_ray(specs, store, options=ray_options, progress=progress, name=name)
    return [store.load(s.key) for s in specs]


__all__ = ["EngineConfig", "run"]
