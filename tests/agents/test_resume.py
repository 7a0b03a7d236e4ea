"""Interrupts lose at most the step in progress, say what they kept, and resume bit-identically.

Interrupts are real signals (SIGINT sent to this process from inside a step, SIGTERM sent to a
child process), and every resumed run is compared, weight for weight, with an uninterrupted run of
the same seed (one torch thread each).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from composition_gym.agents import bc as bc_module
from composition_gym.agents import behavior_cloning, bc_then_ppo, train_ppo
from composition_gym.agents import ppo as ppo_module
from composition_gym.agents import ppo_checkpoint
from composition_gym.agents.settings import progress_bar
from composition_gym.agents.transformer import TransformerConfig, TransformerLM
from composition_gym.atomic import atomic_write

from .conftest import SFT_ENV

ROOT = Path(__file__).resolve().parents[2]
SMALL = TransformerConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2, segment_dims=4)
#: 68 gradient steps over a first fit and one DAgger round, a checkpoint every 5.
BC = dict(episodes=256, batch_size=16, epochs=2.0, eval_episodes=8, checkpoint_every=5, config=SMALL, seed=3,
          progress=False, threads=1, dagger_rounds=1, dagger_episodes=32)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def interrupt_at_call(monkeypatch, module, name: str, n: int) -> None:
    """SIGINT to this process during the ``n``-th call of ``module.name`` (inside a training step)."""
    original, calls = getattr(module, name), [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, hooked)


@pytest.fixture(scope="module")
def bc_reference():
    return behavior_cloning(SFT_ENV, **BC)


@pytest.mark.parametrize("step", [13, 40], ids=["first-fit", "dagger-round"])
def test_bc_resumes_bit_identically(tmp_path, monkeypatch, capsys, bc_reference, step):
    reference, ref_stats = bc_reference
    with monkeypatch.context() as m:
        interrupt_at_call(m, bc_module, "trimmed_batch", step)
        with pytest.raises(KeyboardInterrupt):
            behavior_cloning(SFT_ENV, run_dir=str(tmp_path), **BC)
    # The step the signal arrived in was finished, then checkpointed.
    assert f"BC interrupted (SIGINT): checkpoint at gradient step {step} in {tmp_path}" in capsys.readouterr().err
    lm, stats = behavior_cloning(SFT_ENV, run_dir=str(tmp_path), **BC)
    assert f"resuming BC from gradient step {step} in {tmp_path}" in capsys.readouterr().err
    assert same_weights(lm, reference)
    assert {k: v for k, v in stats.items() if k != "seconds"} == {k: v for k, v in ref_stats.items() if k != "seconds"}
    # Finished: the same call returns the model at once.
    again, _ = behavior_cloning(SFT_ENV, run_dir=str(tmp_path), **BC)
    assert "BC already finished" in capsys.readouterr().err and same_weights(again, reference)


def test_bc_checkpoint_of_another_run_is_refused(tmp_path):
    behavior_cloning(SFT_ENV, run_dir=str(tmp_path), **{**BC, "dagger_rounds": 0, "epochs": 0.5})
    with pytest.raises(ValueError, match="written by another BC run"):
        behavior_cloning(SFT_ENV, run_dir=str(tmp_path), **{**BC, "dagger_rounds": 0, "epochs": 0.5, "seed": 4})
    # Not part of what the run computes: checkpoint_every and eval_every may change on resume.
    behavior_cloning(SFT_ENV, run_dir=str(tmp_path), **{**BC, "dagger_rounds": 0, "epochs": 0.5,
                                                         "checkpoint_every": 7, "eval_every": 3})


#: 480 gradient steps: long enough to be killed midway.
LONG_BC = {**BC, "epochs": 30.0, "dagger_rounds": 0}
BC_SCRIPT = """
import sys, torch
from composition_gym.agents import behavior_cloning
from tests.agents.test_resume import LONG_BC, SFT_ENV
lm, _ = behavior_cloning(SFT_ENV, run_dir=sys.argv[1], **LONG_BC)
lm.save(sys.argv[2])
"""


@pytest.mark.slow
def test_bc_killed_by_sigterm_in_another_process_resumes(tmp_path):
    """What a user sees: a terminated run says where its checkpoint is; the same command resumes."""
    run_dir, out = tmp_path / "run", tmp_path / "final.pt"
    cmd = [sys.executable, "-c", BC_SCRIPT, str(run_dir), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / bc_module.CHECKPOINT).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "BC interrupted (SIGTERM): checkpoint at gradient step" in err, err[-2000:]
    done = torch.load(run_dir / bc_module.CHECKPOINT, weights_only=True)
    assert not done["done"]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resuming BC from gradient step" in again.stderr, again.stderr[-2000:]
    reference, _ = behavior_cloning(SFT_ENV, **LONG_BC)
    assert same_weights(TransformerLM.load(out), reference)


PPO = dict(algo="maskable_ppo", seed=1, n_envs=4, progress=False, threads=1, n_steps=32, checkpoint_every=2)
RL_ENV = "composition_gym/Compose-RL-L3-v0"


@pytest.fixture(scope="module")
def ppo_reference():
    torch.manual_seed(0)
    lm = TransformerLM(SMALL)
    return lm, train_ppo(RL_ENV, lm, 640, **PPO)


@pytest.mark.parametrize(("at", "kept"), [(40, 0), (400, 384)], ids=["first-rollout", "later-rollout"])
def test_ppo_resumes_bit_identically(tmp_path, monkeypatch, capsys, ppo_reference, at, kept):
    lm, reference = ppo_reference
    with monkeypatch.context() as m:
        step = ppo_checkpoint.PPOCheckpoint._on_step

        def interrupt(self):  # mid-rollout, after the snapshot at the start of the rollout
            if self.num_timesteps == at:
                os.kill(os.getpid(), signal.SIGINT)
            return step(self)

        m.setattr(ppo_checkpoint.PPOCheckpoint, "_on_step", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_ppo(RL_ENV, lm, 640, run_dir=str(tmp_path), **PPO)
    assert f"PPO interrupted (SIGINT): checkpoint at step {kept} of 640 in {tmp_path}" in capsys.readouterr().err
    model = train_ppo(RL_ENV, lm, 640, run_dir=str(tmp_path), **PPO)
    assert f"resuming PPO from step {kept} of 640 in {tmp_path}" in capsys.readouterr().err
    assert model.num_timesteps == 640 and same_weights(model.policy, reference.policy)
    again = train_ppo(RL_ENV, lm, 640, run_dir=str(tmp_path), **PPO)
    assert "PPO already finished" in capsys.readouterr().err and same_weights(again.policy, reference.policy)
    with pytest.raises(ValueError, match="written by another PPO run"):
        train_ppo(RL_ENV, lm, 640, run_dir=str(tmp_path), **{**PPO, "seed": 2})


def test_ppo_under_a_tensorboard_root_picks_up_its_unfinished_run(tmp_path, monkeypatch, capsys, small_lm):
    root = tmp_path / "tb"
    with monkeypatch.context() as m:
        step = ppo_checkpoint.PPOCheckpoint._on_step

        def interrupt(self):
            if self.num_timesteps == 200:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(self)

        m.setattr(ppo_checkpoint.PPOCheckpoint, "_on_step", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_ppo(RL_ENV, small_lm, 384, tensorboard_log=str(root), **PPO)
    assert "PPO interrupted (SIGTERM): checkpoint at step 128 of 384" in capsys.readouterr().err
    train_ppo(RL_ENV, small_lm, 384, tensorboard_log=str(root), **PPO)
    err = capsys.readouterr().err
    assert f"resuming maskable_ppo run in {root / 'maskable_ppo_1'}" in err and "resuming PPO from step 128" in err
    train_ppo(RL_ENV, small_lm, 384, tensorboard_log=str(root), **PPO)  # finished: a new run
    assert sorted(p.name for p in root.iterdir()) == ["maskable_ppo_1", "maskable_ppo_2"]


@pytest.mark.parametrize("stage", ["bc", "ppo"])
def test_bc_then_ppo_resumes_the_stage_that_was_running(tmp_path, monkeypatch, capsys, stage):
    kwargs = dict(bc_episodes=128, ppo_steps=256, rl_env_id=RL_ENV, seed=0, progress=False, threads=1, n_envs=4,
                  n_steps=32, bc_kwargs={"settings": "tiny", "config": SMALL, "epochs": 4.0, "batch_size": 16,
                                         "checkpoint_every": 4})
    reference, _ = bc_then_ppo(SFT_ENV, tensorboard_log=str(tmp_path / "ref"), **kwargs)
    root = tmp_path / "runs"
    with monkeypatch.context() as m:
        if stage == "bc":
            interrupt_at_call(m, bc_module, "trimmed_batch", 10)
        else:
            step = ppo_checkpoint.PPOCheckpoint._on_step

            def interrupt(self):
                if self.num_timesteps == 160:
                    os.kill(os.getpid(), signal.SIGINT)
                return step(self)

            m.setattr(ppo_checkpoint.PPOCheckpoint, "_on_step", interrupt)
        with pytest.raises(KeyboardInterrupt):
            bc_then_ppo(SFT_ENV, tensorboard_log=str(root), **kwargs)
    capsys.readouterr()
    model, _ = bc_then_ppo(SFT_ENV, tensorboard_log=str(root), **kwargs)
    err = capsys.readouterr().err
    assert f"resuming bc_maskable_ppo run in {root / 'bc_maskable_ppo_1'}" in err
    assert ("resuming BC from gradient step 10" in err) if stage == "bc" else \
        ("BC already finished" in err and "resuming PPO from step 128 of 256" in err)
    assert same_weights(model.policy, reference.policy)
    assert json.loads((root / "bc_maskable_ppo_1" / ppo_module.RUN_MARKER).read_text())["finished"]
    bc_then_ppo(SFT_ENV, tensorboard_log=str(root), **kwargs)  # finished: a new run, as before
    assert sorted(p.name for p in root.iterdir()) == ["bc_maskable_ppo_1", "bc_maskable_ppo_2"]


def test_a_log_bar_writes_a_line_only_when_the_count_changed():
    log = io.StringIO()  # not a terminal
    bar = progress_bar(range(500), file=log, desc="BC", mininterval=0.0)
    for i in bar:
        bar.set_postfix(loss=f"{i}")  # refreshes: none may repeat a count
    lines = log.getvalue().splitlines()
    counts = [line.split("|")[2].split()[0] for line in lines]
    assert "\r" not in log.getvalue() and len(counts) == len(set(counts)) and counts[-1] == "500/500"
    log = io.StringIO()
    bar = progress_bar(range(500), file=log, desc="BC")  # the default: a line at most every 30 s
    for i in bar:
        bar.set_postfix(loss=f"{i}")
    assert [line.split("|")[2].split()[0] for line in log.getvalue().splitlines()] == ["0/500", "500/500"]


def test_atomic_write_keeps_the_old_file_when_a_writer_fails(tmp_path):
    path = tmp_path / "model.zip"
    atomic_write(path, b"old")

    def half(tmp):
        Path(tmp).write_bytes(b"ne")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    atomic_write(path, lambda tmp: Path(tmp).write_text("new"))  # a writer given a path with the suffix
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) != "0o600"


@pytest.mark.slow
def test_compgym_train_terminated_then_run_again_resumes(tmp_path):
    """``compgym train`` (BC -> MaskablePPO) stopped with SIGTERM: the same command resumes its run."""
    tb = tmp_path / "tb"
    cmd = [str(Path(sys.executable).parent / "compgym"), "train", "--bc.episodes", "256", "--bc.epochs", "20",
           "--bc.batch-size", "16", "--bc.eval-episodes", "4", "--bc.checkpoint-every", "20", "--ppo-steps", "512",
           "--ppo.n-envs", "4", "--ppo.n-steps", "32", "--eval-episodes", "1", "--tensorboard", str(tb), "--out",
           str(tmp_path / "m.zip"), "--no-progress", "--threads", "1"]
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=err)
    checkpoint = tb / "bc_maskable_ppo_1" / bc_module.CHECKPOINT
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    text = (tmp_path / "err.txt").read_text()
    assert "BC interrupted (SIGTERM): checkpoint at gradient step" in text and "compgym train: interrupted" in text
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming bc_maskable_ppo run in {tb / 'bc_maskable_ppo_1'}" in again.stderr
    assert "resuming BC from gradient step" in again.stderr and (tmp_path / "m.zip").exists()
    assert sorted(p.name for p in tb.iterdir()) == ["bc_maskable_ppo_1"]
