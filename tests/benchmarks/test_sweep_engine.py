"""The sweep engine on toy runs: store, dependencies, failures, progress, kill-and-resume, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composition_gym.benchmarks.engine import backends
from composition_gym.benchmarks.engine.backends import RunSpec, phases, run_local
from composition_gym.benchmarks.engine.config import run
from composition_gym.benchmarks.engine.progress import SweepProgress
from composition_gym.benchmarks.engine.ray_backend import RayOptions
from composition_gym.benchmarks.engine.store import RunStore, atomic_write_text, run_key
from tests.benchmarks.toy_runs import toy_specs

ROOT = Path(__file__).resolve().parents[2]
TOY = "tests.benchmarks.toy_runs:toy"


def _table(store: RunStore) -> dict[str, object]:
    return {r["key"]: r["result"] for r in store.records()}


def test_key_depends_on_config_and_function_only():
    assert run_key(TOY, {"a": 1, "b": [1, 2]}) == run_key(TOY, {"b": [1, 2], "a": 1})
    assert run_key(TOY, {"a": 1}) != run_key(TOY, {"a": 2}) != run_key("m:other", {"a": 2})
    assert RunSpec(TOY, {"a": 1}, name="x").key == RunSpec(TOY, {"a": 1}, name="y").key


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("workers", [1, 2])
def test_local_backend_runs_dependencies_first_and_skips_finished(tmp_path, workers, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("TOY_RUN_LOG", str(log))
    store = RunStore(tmp_path / "store")
    specs = toy_specs(3)
    records = run(specs, store, workers=workers)
    assert [r["result"]["value"] for r in records] == [0, 100, 1, 122, 4, 148]  # child = (10+x)^2 + x^2
    assert len(log.read_text().split()) == 6
    run(specs, store, workers=workers)  # everything finished: nothing runs again
    assert len(log.read_text().split()) == 6


def test_runs_that_others_wait_for_start_first(tmp_path, monkeypatch):
    # parent0, child0, parent1, child1, ...: once parent0 is done, parent1 (which child1 waits
    # for) starts before child0, so no slow child holds a worker while the next parent waits.
    log = tmp_path / "log"
    monkeypatch.setenv("TOY_RUN_LOG", str(log))
    specs = toy_specs(3)
    run(specs, RunStore(tmp_path / "store"), workers=1)
    names = {s.key: s.label for s in specs}
    assert [names[k] for k in log.read_text().split()] == ["parent0", "parent1", "parent2",
                                                            "child0", "child1", "child2"]


def test_failure_skips_dependents_and_keeps_the_rest(tmp_path):
    store = RunStore(tmp_path)
    bad = RunSpec(TOY, {"x": 1, "fail": True}, name="bad")
    specs = [bad, RunSpec(TOY, {"x": 2}, deps=(bad.key,), name="after-bad"), RunSpec(TOY, {"x": 3}, name="ok")]
    with pytest.raises(backends.RunFailed, match="(?s)2 run\\(s\\) failed \\(bad, after-bad\\).*fails on purpose"):
        run_local(specs, store)
    assert [s.name for s in specs if store.done(s.key)] == ["ok"]


def test_bad_graphs_and_arguments_are_clear_errors(tmp_path):
    store = RunStore(tmp_path)
    a = RunSpec(TOY, {"x": 1})
    with pytest.raises(ValueError, match="twice"):
        run_local([a, a], store)
    with pytest.raises(ValueError, match="not in the sweep"):
        run_local([RunSpec(TOY, {"x": 2}, deps=("feedbeef",))], store)
    with pytest.raises(ValueError, match="workers"):
        run_local([a], store, workers=0)
    with pytest.raises(ValueError, match="unknown backend"):
        run([a], store, backend="slurm")
    with pytest.raises(ValueError, match="module:function"):
        backends.resolve_fn("nocolon")
    assert [len(g) for g in phases(toy_specs(2))] == [2, 2]


def test_a_temporary_record_left_by_a_kill_is_not_a_record(tmp_path):
    """A kill between an atomic write's fsync and its rename leaves a complete temporary file that
    ends in .json: neither done() nor records() may count it (the restarted sweep reruns that run)."""
    store = RunStore(tmp_path)
    spec = toy_specs(1, children=False)[0]
    record = backends.execute(spec, store)
    path = store.record_path(spec.key)
    path.rename(path.with_name(f".{path.name}.k3y.tmp.json"))  # what the kill leaves
    assert not store.done(spec.key) and list(store.records()) == []
    assert backends.execute(spec, store)["result"] == record["result"]
    assert [r["key"] for r in store.records()] == [spec.key]


def test_missing_dependency_record_is_recomputed(tmp_path):
    """A cluster node without the shared store re-runs a dependency (deterministically)."""
    specs = toy_specs(1)
    parent, child = specs
    store = RunStore(tmp_path)
    record = backends.execute(child, store, {s.key: s for s in specs})
    assert record["result"]["value"] == 100 + 0 and store.done(parent.key)


def test_progress_counts_and_eta(tmp_path):
    store = RunStore(tmp_path)
    specs = toy_specs(2, children=False)
    run(specs[:1], store)
    view = SweepProgress(specs, store, enabled=False)
    assert (len(view.done), view.left, view.skipped) == (1, 1, 1)
    view.started(specs[1])
    assert view.left == 0 and "1 running" in view.summary()
    view.finished(specs[1], {"seconds": 4.0})
    assert view.eta_seconds() == 0.0 and "2/2 done" in view.summary()


def test_kill_and_resume_redoes_no_finished_run(tmp_path):
    """Kill a sweep after its first finished run; the same command finishes it, the table is the same."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from tests.benchmarks.toy_runs import main; main(sys.argv[1], 2, 4, 0.5)"
    store = RunStore(tmp_path / "killed")
    env["TOY_RUN_LOG"] = str(tmp_path / "first.log")
    proc = subprocess.Popen([sys.executable, "-c", code, str(store.root)], cwd=ROOT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not any(store.records()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    proc.wait()
    # A worker inside a system call (writing a record) ends it before it dies: wait until every
    # process of the group is gone, then read what was stored.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    finished = {r["key"] for r in store.records()}
    assert 1 <= len(finished) < 8, "the sweep must be killed midway"

    env["TOY_RUN_LOG"] = str(tmp_path / "second.log")
    subprocess.run([sys.executable, "-c", code, str(store.root)], cwd=ROOT, env=env, check=True, timeout=120)
    second = set((tmp_path / "second.log").read_text().split())
    assert not second & finished, "a finished run was redone"
    assert len(second) == 8 - len(finished)

    fresh = RunStore(tmp_path / "fresh")
    run_local(toy_specs(4, 0.5), fresh, workers=1)
    # A write cut by the kill may leave a temporary file; it never counts as a record.
    assert _table(store) == _table(fresh) and len(_table(store)) == 8


@pytest.mark.slow
def test_ray_backend_on_a_local_two_cpu_cluster(tmp_path):
    pytest.importorskip("ray", reason="the ray backend is optional: pip install 'composition-gym[ray]'")
    store = RunStore(tmp_path / "store")
    specs = toy_specs(2)
    run(specs[:1], store)  # one run already finished: Ray must skip it
    seen = []

    class Recorder(SweepProgress):  # a real view: it holds locks, which Tune must not need to pickle
        def started(self, spec):
            seen.append(("start", spec.name))
            super().started(spec)

        def finished(self, spec, record):
            seen.append(("done", spec.name))
            super().finished(spec, record)

    view = Recorder(specs, store, enabled=False)
    records = run(specs, store, backend="ray", ray_options=RayOptions(num_cpus=2), progress=view)
    assert [r["result"]["value"] for r in records] == [0, 100, 1, 122]
    assert ("start", "parent0") not in seen and ("done", "child1") in seen and view.left == 0
    # Tune kept each trial's reported results (intermediate and final).
    results = [json.loads(line) for p in (store.root / "ray").rglob("result.json") for line in p.read_text().splitlines()]
    assert {"half", None} <= {r.get("stage") for r in results} and any(r.get("done") for r in results)
