"""Run a set of dependent, resumable runs: in-process, on a local process pool, or on Ray Tune.

A :class:`RunSpec` is one run: a function named ``"module:function"``, its full config (seed
included) and the keys of the runs it needs first (an RL arm needs its SFT checkpoint).  The
function is called as ``fn(config, ctx)`` with a :class:`RunContext` and returns a JSON-able dict.
:func:`execute` calls it and writes the record atomically into a :class:`~.store.RunStore`; every
backend skips runs whose record exists, so a killed sweep started again with the same command
redoes only the runs that had not finished.

Backends:

- :func:`run_local` (default): ``workers`` spawned processes with one torch thread each (the
  project's thread policy, :func:`composition_gym.threads.resolve_threads`, with a default of 1:
  ``COMPGYM_THREADS`` or ``threads=`` change it), runs submitted as soon as their dependencies
  finish; ``workers=1`` runs in this process.  Workers never outlive the driver: SIGINT or SIGTERM
  of the driver stops them within seconds (a run that checkpoints writes its checkpoint first), a
  second signal exits at once, and a worker whose driver died (SIGKILL) exits by itself.
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
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composition_gym.benchmarks.engine.store import RunStore, host, run_key
from composition_gym.threads import resolve_threads, thread_scope

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


#: A run's torch threads when neither ``threads=`` nor ``COMPGYM_THREADS`` says otherwise: runs
#: share few cores, and a record should not depend on how many were idle when it ran.
RUN_THREADS = 1


def execute(spec: RunSpec, store: RunStore | str | os.PathLike, specs: Mapping[str, RunSpec] | None = None,
            reporter: Callable[[dict[str, Any]], None] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run ``spec`` unless its record exists, write the record atomically, and return it.

    The run gets ``resolve_threads(threads, default=RUN_THREADS)`` torch threads (torch is not
    imported for this: a worker loads it only if its run does), recorded as ``threads``.
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    if store.done(spec.key):
        return store.load(spec.key)
    ctx = RunContext(spec, store, specs or {}, reporter)
    with thread_scope(threads, default=RUN_THREADS) as n:
        t0 = time.perf_counter()
        result = resolve_fn(spec.fn)(dict(spec.config), ctx)
    record = {"key": spec.key, "fn": spec.fn, "name": spec.name, "config": dict(spec.config),
              "deps": list(spec.deps), "result": result, "seconds": round(time.perf_counter() - t0, 3),
              "threads": n, "host": host(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    store.save(record)
    return record


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
        except Exception as exc:  # noqa: BLE001 (re-raised through fut.result()); Ctrl-C goes straight up
            fut.set_exception(exc)
        return fut

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing runs in the background."""


# ---------------------------------------------------------------------------- worker lifetime
#: Seconds a stopped worker gets to finish its step and write its checkpoint before SIGKILL.
STOP_GRACE_S = 10.0

_IN_RUN = False  # in a worker: is a run executing (SIGTERM then interrupts it) or is it idle?


def _worker_init() -> None:
    """Set up a spawned worker: the driver decides when to stop, and the worker dies with it.

    SIGINT is ignored (Ctrl-C reaches the whole process group; the driver then stops the workers
    itself, so a run is not cut twice); SIGTERM interrupts a run (``KeyboardInterrupt``, which a
    trainer turns into a checkpoint) or ends an idle worker at once.  A thread watches the driver
    (:func:`exit_with_parent`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    parent = multiprocessing.parent_process()
    if parent is not None:
        exit_with_parent(parent.sentinel)


def _worker_sigterm(signum: int, frame: Any) -> None:
    if _IN_RUN:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def exit_with_parent(handle: Any) -> None:
    """End this process when ``handle`` becomes readable: a process sentinel (ready when that
    process has died) or the read end of a pipe whose writer is the parent (EOF when it died).

    A driver killed with SIGKILL cannot stop its workers; without this they block forever on a
    pipe read (each holding ~450 MB after a reproduction run).  The process first gets a SIGTERM
    (a run may write its checkpoint), and is ended :data:`STOP_GRACE_S` seconds later regardless.
    """
    import multiprocessing.connection
    import threading

    def watch() -> None:
        multiprocessing.connection.wait([handle])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _execute_in_worker(spec: RunSpec, root: str, specs: Mapping[str, RunSpec], threads: int) -> dict[str, Any]:
    global _IN_RUN
    _IN_RUN = True
    try:
        return execute(spec, root, specs, threads=threads)
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGTERM)  # stopped by the driver: its own checkpoints are written
    finally:
        _IN_RUN = False


def _execute_inline(spec: RunSpec, root: str, specs: Mapping[str, RunSpec], threads: int) -> dict[str, Any]:
    return execute(spec, root, specs, threads=threads)


class _DriverSignals:
    """While the driver waits on its workers: SIGTERM stops it like Ctrl-C (``KeyboardInterrupt``),
    so its workers are stopped too; after a first signal, a second one exits at once."""

    def __init__(self) -> None:
        self.count = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _DriverSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            print("compgym: second interrupt, exiting at once", file=sys.stderr, flush=True)
            os._exit(130)
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def stop_workers(executor: Any) -> int:
    """SIGTERM every live worker of ``executor``, SIGKILL those still alive after
    :data:`STOP_GRACE_S` seconds; return how many were stopped."""
    # ProcessPoolExecutor has no public list of its processes; _processes has held it since 3.2.
    procs = [p for p in (getattr(executor, "_processes", None) or {}).values() if p.is_alive()]
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    return len(procs)


# ---------------------------------------------------------------------------- the local backend
def run_local(specs: Sequence[RunSpec], store: RunStore, *, workers: int = 1, progress: Any = None,
              threads: int | None = None) -> None:
    """Run every unfinished spec on ``workers`` processes, each as soon as its dependencies are done.

    A failing run does not stop the others (runs that depend on it are skipped);
    :class:`RunFailed` is raised at the end.  ``progress`` receives ``started/finished/failed``.
    ``threads``: torch threads per run (default: ``COMPGYM_THREADS``, else :data:`RUN_THREADS`).
    On SIGINT or SIGTERM the workers are stopped (see the module docstring) and
    ``KeyboardInterrupt`` propagates; finished runs stay stored.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    n_threads = resolve_threads(threads, default=RUN_THREADS)
    by_key = check_graph(specs)
    waiting = [s for s in specs if not store.done(s.key)]
    failures: dict[str, str] = {}
    executor: Any = _Inline() if workers == 1 else ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    # In this process a Ctrl-C must reach the caller; a worker turns it into its exit.
    job = _execute_inline if workers == 1 else _execute_in_worker
    pending: dict[Future, RunSpec] = {}
    # Runs that others wait for start first (an SFT run before the RL arms of an earlier seed), so
    # a slow arm never holds a worker while the next seed's SFT, and everything after it, waits.
    dependents = {key: sum(key in s.deps for s in specs) for key in by_key}
    signals = _DriverSignals()
    try:
        signals.__enter__()
        while waiting or pending:
            ready = sorted((s for s in waiting if all(store.done(d) for d in s.deps)), key=lambda s: -dependents[s.key])
            for spec in ready[: max(1, workers - len(pending))]:
                waiting.remove(spec)
                if progress is not None:
                    progress.started(spec)
                pending[executor.submit(job, spec, str(store.root), by_key, n_threads)] = spec
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
    except BaseException:
        stopped = stop_workers(executor)
        if stopped:
            print(f"stopped {stopped} worker(s); finished runs are stored in {store.root}, the same command "
                  "resumes", file=sys.stderr, flush=True)
        raise
    finally:
        executor.shutdown(cancel_futures=True)
        signals.__exit__()
    raise_failures(failures, by_key)


def already_done(specs: Iterable[RunSpec], store: RunStore) -> list[RunSpec]:
    """The specs whose record exists (what a restarted sweep skips)."""
    return [s for s in specs if store.done(s.key)]
