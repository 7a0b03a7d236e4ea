"""How runs execute: the engine's settings, shared by ``compgym reproduce`` and ``compgym sweep``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from composition_gym.benchmarks.engine.backends import BACKENDS
from composition_gym.benchmarks.engine.ray_backend import RayOptions
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

__all__ = ["EngineConfig"]
