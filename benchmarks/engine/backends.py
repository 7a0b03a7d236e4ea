"""Run a set of dependent, resumable runs: in-process, on a local process pool, or on Ray Tune.

A :class:`RunSpec` is one run: a function named ``"module:function"``, its full config (seed
included) and the keys of the runs it needs first (an RL arm needs its SFT checkpoint).  The
function is called as ``fn(config, ctx)`` with a :class:`RunContext` and returns a JSON-able dict.
:func:`execute` calls it and writes the record atomically into a :class:`~.store.RunStore`; every
backend skips runs whose record exists, so a killed sweep started again with the same command
redoes only the runs that had not finished.

Backends:

- :func:`run_local` (default): ``workers`` spawned processes with one torch thread each, runs
  submitted as soon as their dependencies finish; ``workers=1`` runs in this process.
- :func:`~.ray_backend.run_ray`: one Ray Tune trial per run, in phases by dependency depth (Tune
  has no dependencies between trials); ``address`` joins an existing cluster, CPUs/GPUs per trial
  are settable, each trial reports its metrics as it goes (``ctx.report``) and its final result.
  The bookkeeping is ours (the store), not Tune's restore.  Records come back to the driver with
  each trial's final result; checkpoints do not, so on nodes that do not share the store a run
  that misses its dependency's checkpoint re-runs that dependency first (runs are deterministic,
  so the result is the same; a shared file system avoids the repeated work).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composition_gym.benchmarks.engine.store import RunStore, host, run_key

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RunSpec:
    """One run: ``fn(config, ctx)`` after the runs ``deps`` (their keys) have finished.

    Attributes:
        fn: ``"module:function"``, importable in every worker.
        config: the run's full settings (JSON values only); with ``fn`` it defines the key.
        deps: keys of the runs whose records and artifacts this run reads.
        name: a short label for progress displays and logs (not part of the key).
    """

    fn: str
    config: Mapping[str, Any]
    deps: tuple[str, ...] = ()
    name: str = ""

    @property
    def key(self) -> str:
        """The run's store key: a hash of ``fn`` and ``config``."""
        return run_key(self.fn, self.config)

    @property
    def label(self) -> str:
        """``name`` or, failing that, the key."""
        return self.name or self.key


@dataclass
class RunContext:
    """What a run function gets besides its config: where to write, how to report, its inputs."""

    spec: RunSpec
    store: RunStore
    specs: Mapping[str, RunSpec] = field(default_factory=dict)
    reporter: Callable[[dict[str, Any]], None] | None = None

    @property
    def artifact_dir(self) -> Path:
        """This run's own artifact directory (checkpoints for the runs that depend on it)."""
        return self.store.artifact_dir(self.spec.key)

    @property
    def log_dir(self) -> Path:
        """This run's TensorBoard (and trainer checkpoint) directory: ``<store>/tensorboard/<name>-<key>``."""
        name = self.spec.name.replace(" ", "_").replace("/", "_")
        return self.store.root / "tensorboard" / (f"{name}-{self.spec.key}" if name else self.spec.key)

    def dependency(self, key: str) -> tuple[dict[str, Any], Path]:
        """The record and artifact directory of dependency ``key``.

        When its record is missing here (a cluster node without the shared store), the dependency
        is run again in this process first: runs are deterministic, so it gives the same result.
        """
        if key not in self.spec.deps:
            raise KeyError(f"run {self.spec.label!r} did not declare {key!r} as a dependency")
        if not self.store.done(key):
            if key not in self.specs:
                raise FileNotFoundError(f"dependency {key} of {self.spec.label!r} has no record in {self.store.root}")
            execute(self.specs[key], self.store, self.specs)
        return self.store.load(key), self.store.artifact_dir(key)

    def report(self, **metrics: Any) -> None:
        """Report intermediate metrics (Ray Tune shows them; the local backend ignores them)."""
        if self.reporter is not None:
            self.reporter(metrics)


def resolve_fn(name: str) -> Callable[[Mapping[str, Any], RunContext], dict[str, Any]]:
    """The function ``"module:function"`` names (``ValueError`` with the problem otherwise)."""
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ValueError(f"a run function is named 'module:function', got {name!r}")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"{name!r} is not a function")
    return fn


def execute(spec: RunSpec, store: RunStore | str | os.PathLike, specs: Mapping[str, RunSpec] | None = None,
            reporter: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``spec`` unless its record exists, write the record atomically, and return it."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    if store.done(spec.key):
        return store.load(spec.key)
    _single_thread()
    ctx = RunContext(spec, store, specs or {}, reporter)
    t0 = time.perf_counter()
    result = resolve_fn(spec.fn)(dict(spec.config), ctx)
    record = {"key": spec.key, "fn": spec.fn, "name": spec.name, "config": dict(spec.config),
              "deps": list(spec.deps), "result": result, "seconds": round(time.perf_counter() - t0, 3),
              "host": host(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    store.save(record)
    return record


def _single_thread() -> None:
    """One torch thread per run: runs share few cores, and results must not depend on the thread count.

    Torch is not imported for this (seconds per worker process): where it is not loaded yet, the
    environment variables make it start with one thread when the run imports it.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def check_graph(specs: Sequence[RunSpec]) -> dict[str, RunSpec]:
    """``{key: spec}``; ``ValueError`` on a duplicate run or a dependency that is not in ``specs``."""
    by_key: dict[str, RunSpec] = {}
    for spec in specs:
        if spec.key in by_key:
            raise ValueError(f"the same run appears twice: {spec.label!r} and {by_key[spec.key].label!r}")
        by_key[spec.key] = spec
    for spec in specs:
        missing = [d for d in spec.deps if d not in by_key]
        if missing:
            raise ValueError(f"run {spec.label!r} depends on {missing}, which is not in the sweep")
    return by_key


def phases(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """``specs`` grouped by dependency depth: every run's dependencies lie in earlier groups."""
    by_key = check_graph(specs)
    depth: dict[str, int] = {}

    def level(key: str, trail: tuple[str, ...] = ()) -> int:
        if key in trail:
            raise ValueError(f"dependency cycle through {by_key[key].label!r}")
        if key not in depth:
            depth[key] = 1 + max((level(d, (*trail, key)) for d in by_key[key].deps), default=-1)
        return depth[key]

    groups: list[list[RunSpec]] = [[] for _ in range(1 + max((level(s.key) for s in specs), default=-1))]
    for spec in specs:
        groups[depth[spec.key]].append(spec)
    return groups


class RunFailed(RuntimeError):
    """Some runs raised; the others finished and are stored (run the same command again to retry)."""


def raise_failures(failures: Mapping[str, str], specs: Mapping[str, RunSpec]) -> None:
    """Raise :class:`RunFailed` naming the failed runs; ``failures`` maps a run key to its error
    text (a traceback, or why it was skipped).  Nothing happens when it is empty."""
    if failures:
        names = ", ".join(specs[k].label for k in list(failures)[:3]) + (", ..." if len(failures) > 3 else "")
        first = next(iter(failures.values()))
        raise RunFailed(f"{len(failures)} run(s) failed ({names}); finished runs are stored, the same command "
                        f"retries the rest.  First error:\n{first}")


# ---------------------------------------------------------------------------- local backend
class _Inline:
    """The Executor API, running each job at once in this process (``workers=1``)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 (re-raised through fut.result())
            fut.set_exception(exc)
        return fut

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing runs in the background."""


def _execute_in_worker(spec: RunSpec, root: str, specs: Mapping[str, RunSpec]) -> dict[str, Any]:
    return execute(spec, root, specs)


def run_local(specs: Sequence[RunSpec], store: RunStore, *, workers: int = 1, progress: Any = None) -> None:
    """Run every unfinished spec on ``workers`` processes, each as soon as its dependencies are done.

    A failing run does not stop the others (runs that depend on it are skipped);
    :class:`RunFailed` is raised at the end.  ``progress`` receives ``started/finished/failed``.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    by_key = check_graph(specs)
    waiting = [s for s in specs if not store.done(s.key)]
    failures: dict[str, str] = {}
    torch_threads = _torch_threads()
    executor: Any = _Inline() if workers == 1 else ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    pending: dict[Future, RunSpec] = {}
    # Runs that others wait for start first (an SFT run before the RL arms of an earlier seed), so
    # a slow arm never holds a worker while the next seed's SFT, and everything after it, waits.
    dependents = {key: sum(key in s.deps for s in specs) for key in by_key}
    try:
        while waiting or pending:
            ready = sorted((s for s in waiting if all(store.done(d) for d in s.deps)), key=lambda s: -dependents[s.key])
            for spec in ready[: max(1, workers - len(pending))]:
                waiting.remove(spec)
                if progress is not None:
                    progress.started(spec)
                pending[executor.submit(_execute_in_worker, spec, str(store.root), by_key)] = spec
            blocked = [s for s in waiting if any(d in failures for d in s.deps)]
            for spec in blocked:
                waiting.remove(spec)
                failures[spec.key] = "skipped: a dependency failed"
            if not pending:
                if waiting and not blocked:
                    raise RuntimeError(f"no run can start: {waiting[0].label!r} waits for runs that never finish")
                continue
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                spec = pending.pop(fut)
                exc = fut.exception()
                if exc is None:
                    if progress is not None:
                        progress.finished(spec, fut.result())
                else:
                    failures[spec.key] = "".join(traceback.format_exception(exc))
                    if progress is not None:
                        progress.failed(spec, exc)
    finally:
        executor.shutdown(cancel_futures=True)
        _set_torch_threads(torch_threads)
    raise_failures(failures, by_key)


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


def _set_torch_threads(n: int | None) -> None:
    torch = sys.modules.get("torch")
    if n is not None and torch is not None:
        torch.set_num_threads(n)


def run(specs: Sequence[RunSpec], store: RunStore, *, backend: str = "local", workers: int = 1,
        ray_options: Any = None, progress: Any = None, name: str = "sweep") -> list[dict[str, Any]]:
    """Run ``specs`` on ``backend`` (skipping finished ones) and return every record, in ``specs`` order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if backend == "local":
        run_local(specs, store, workers=workers, progress=progress)
    else:
        from composition_gym.benchmarks.engine.ray_backend import run_ray

        run_ray(specs, store, options=ray_options, progress=progress, name=name)
    return [store.load(s.key) for s in specs]


def already_done(specs: Iterable[RunSpec], store: RunStore) -> list[RunSpec]:
    """The specs whose record exists (what a restarted sweep skips)."""
    return [s for s in specs if store.done(s.key)]
