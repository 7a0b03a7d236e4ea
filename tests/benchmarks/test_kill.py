"""Workers never outlive the driver: SIGINT, SIGTERM and SIGKILL of a driver running the local
backend leave no process behind, and a second Ctrl-C exits at once.

Processes are found by a marker in their environment (the driver's, which spawned workers and
multiprocessing's resource tracker inherit), not by name: this test process does not carry it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from composition_gym.benchmarks.engine.backends import STOP_GRACE_S
from composition_gym.benchmarks.engine.config import run
from composition_gym.benchmarks.engine.store import RunStore
from tests.benchmarks.toy_runs import toy_specs

ROOT = Path(__file__).resolve().parents[2]
MARK = "COMPGYM_KILL_TEST"
pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/<pid>/environ")


def marked(marker: str) -> list[int]:
    """Pids of the live processes whose environment holds ``MARK=marker``."""
    needle = f"{MARK}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return pids


def start_driver(tmp_path: Path, marker: str, **extra) -> tuple[subprocess.Popen, Path]:
    """A driver running two long toy runs on two spawned workers; returns once both have started,
    with the file its stderr goes to (a file, not a pipe: the workers inherit it, and a pipe would
    stay open until the last of them is gone, whenever the driver itself exits)."""
    log, err = tmp_path / "started.log", tmp_path / "stderr.txt"
    env = {**os.environ, MARK: marker, "PYTHONPATH": str(ROOT), "TOY_RUN_LOG": str(log)}
    code = ("import sys; from tests.benchmarks.toy_runs import main; "
            f"main(sys.argv[1], 2, 2, 120.0, **{extra!r})")
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "store")], cwd=ROOT, env=env, stderr=f)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().split()) >= 2:
            return proc, err
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the toy runs never started: {err.read_text()[-2000:]}")


def wait_until_gone(marker: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def marker():
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):  # never leave a stray process, whatever the test's outcome
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_worker_outlives_its_driver(tmp_path, marker, sig):
    proc, err = start_driver(tmp_path, marker)
    assert len(marked(marker)) >= 3  # the driver and its two workers (the check can see them)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    # Stopped within the workers' grace period (the runs had two minutes left), not by finishing.
    assert wait_until_gone(marker, timeout=STOP_GRACE_S + 20) == []
    if sig != signal.SIGKILL:
        text = err.read_text()
        assert proc.returncode != 0 and "stopped 2 worker(s)" in text and "the same command resumes" in text
    assert not list((tmp_path / "store" / "records").glob("*.json"))  # no run finished


def test_second_interrupt_exits_at_once(tmp_path, marker):
    # The runs ignore SIGTERM, so after the first Ctrl-C the driver waits STOP_GRACE_S for them.
    proc, err = start_driver(tmp_path, marker, ignore_sigterm=True)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # still waiting for its stubborn workers
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=STOP_GRACE_S - 3)
    assert proc.returncode == 130 and "second interrupt" in err.read_text()
    # Their driver gone, the stubborn workers end themselves after the grace period.
    assert wait_until_gone(marker, timeout=2 * STOP_GRACE_S + 20) == []


def test_a_rerun_says_what_it_resumed(tmp_path, capsys):
    store = RunStore(tmp_path / "store")
    specs = toy_specs(2)
    run(specs[:3], store)
    assert "resuming" not in capsys.readouterr().err
    run(specs, store)
    assert f"resuming: 3 of 4 runs already finished in {store.root}" in capsys.readouterr().err


def test_ctrl_c_in_a_one_worker_sweep_stops_it(tmp_path, monkeypatch):
    """workers=1 runs in this process: Ctrl-C must reach the caller, not count as one failed run."""
    store = RunStore(tmp_path / "store")
    calls = []

    def interrupted(spec, root, specs, threads):
        calls.append(spec.key)
        raise KeyboardInterrupt

    monkeypatch.setattr("composition_gym.benchmarks.engine.backends._execute_inline", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(toy_specs(2, children=False), store)
    assert len(calls) == 1


def test_bench_worker_exits_when_its_driver_is_killed(tmp_path, marker):
    """``compgym bench`` runs each measurement in a fresh interpreter; SIGKILL of the driver must not
    leave that interpreter measuring on (it watches a pipe from the driver)."""
    env = {**os.environ, MARK: marker, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "composition_gym.benchmarks.throughput", "--parts", "ppo", "--json",
           str(tmp_path / "t.json")]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while len(marked(marker)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert len(marked(marker)) >= 2, "the benchmark worker never started"
    proc.kill()
    proc.wait(timeout=30)
    assert wait_until_gone(marker, timeout=STOP_GRACE_S + 20) == []
