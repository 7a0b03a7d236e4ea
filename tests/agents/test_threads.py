"""One thread policy everywhere: argument > enclosing call > COMPGYM_THREADS > default, restored after.

Each test reads ``torch.get_num_threads()`` *inside* the call (a hook on something the call runs)
and again after it.  The package fixture holds torch at one thread between tests, so any count
other than 1 seen inside a call was set by that call.
"""

from __future__ import annotations

import os

import pytest
import torch

from composition_gym.agents import RandomAgent, behavior_cloning, evaluate, train_ppo
from composition_gym.agents import bc as bc_module
from composition_gym.agents.settings import resolve_threads, torch_threads
from composition_gym.threads import thread_scope

from .conftest import SFT_ENV


class Recorder(RandomAgent):
    """A random agent that notes the torch thread count at every batch it plays."""

    def __init__(self):
        super().__init__(0)
        self.seen: list[int] = []

    def act_batch(self, obs, infos):
        self.seen.append(torch.get_num_threads())
        return super().act_batch(obs, infos)


def test_evaluate_takes_the_argument_then_the_environment_and_restores(monkeypatch):
    agent = Recorder()
    evaluate(agent, SFT_ENV, 2, threads=3)
    assert set(agent.seen) == {3} and torch.get_num_threads() == 1
    monkeypatch.setenv("COMPGYM_THREADS", "2")
    agent.seen.clear()
    evaluate(agent, SFT_ENV, 2)
    assert set(agent.seen) == {2} and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        evaluate(agent, SFT_ENV, 2, threads=0)


def test_a_nested_call_keeps_its_callers_count(monkeypatch):
    monkeypatch.setenv("COMPGYM_THREADS", "2")
    agent = Recorder()
    with torch_threads(3):
        evaluate(agent, SFT_ENV, 2)  # no count of its own: the enclosing block's, not the environment's
        assert resolve_threads() == 3 and resolve_threads(4) == 4
    assert set(agent.seen) == {3} and resolve_threads() == 2


def test_behavior_cloning_and_its_heldout_evaluation(monkeypatch):
    from composition_gym.agents import evaluation

    seen = {"fit": [], "eval": []}
    trimmed, rollout = bc_module.trimmed_batch, evaluation.rollout

    def fit_hook(*args, **kwargs):
        seen["fit"].append(torch.get_num_threads())
        return trimmed(*args, **kwargs)

    def eval_hook(*args, **kwargs):
        seen["eval"].append(torch.get_num_threads())
        return rollout(*args, **kwargs)

    monkeypatch.setattr(bc_module, "trimmed_batch", fit_hook)
    monkeypatch.setattr(evaluation, "rollout", eval_hook)
    monkeypatch.setenv("COMPGYM_THREADS", "2")
    _, stats = behavior_cloning(SFT_ENV, settings="tiny", threads=3, progress=False)
    assert set(seen["fit"]) == {3} and set(seen["eval"]) == {3} and stats["threads"] == 3
    assert torch.get_num_threads() == 1
    seen["fit"].clear()
    behavior_cloning(SFT_ENV, settings="tiny", progress=False)
    assert set(seen["fit"]) == {2} and torch.get_num_threads() == 1


def test_train_ppo(monkeypatch, small_lm):
    from sb3_contrib import MaskablePPO

    seen = []
    original = MaskablePPO.train

    def train(self):
        seen.append(torch.get_num_threads())
        return original(self)

    monkeypatch.setattr(MaskablePPO, "train", train)
    monkeypatch.setenv("COMPGYM_THREADS", "2")
    train_ppo(SFT_ENV, small_lm, 64, n_envs=2, n_steps=32, progress=False)
    assert seen and set(seen) == {2} and torch.get_num_threads() == 1
    seen.clear()
    train_ppo(SFT_ENV, small_lm, 64, n_envs=2, n_steps=32, progress=False, threads=3)
    assert set(seen) == {3} and torch.get_num_threads() == 1


def test_diagnose(monkeypatch, small_lm):
    from composition_gym.agents.diagnostics import anatomy
    from composition_gym.agents.diagnostics.report import DiagnoseConfig, diagnose

    seen = []
    original = anatomy.error_anatomy

    def hook(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(anatomy, "error_anatomy", hook)
    config = DiagnoseConfig(env_ids=(SFT_ENV,), episodes=2, probes=False, attention=False)
    diagnose(small_lm, config, threads=3)
    assert seen == [3] and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        diagnose(small_lm, config, threads=0)


def test_run_engine_workers(tmp_path, monkeypatch):
    """Runs get one thread unless told otherwise, in this process and in spawned workers alike."""
    from composition_gym.benchmarks.engine.backends import RunSpec
    from composition_gym.benchmarks.engine.config import run
    from composition_gym.benchmarks.engine.store import RunStore

    specs = [RunSpec("tests.benchmarks.toy_runs:threads_run", {"x": x}) for x in range(2)]
    monkeypatch.setenv("COMPGYM_THREADS", "2")
    records = run(specs, RunStore(tmp_path / "inline"), threads=1)  # workers=1: in this process
    assert [(r["result"]["threads"], r["result"]["nested"], r["threads"]) for r in records] == [(1, 1, 1)] * 2
    monkeypatch.delenv("COMPGYM_THREADS")
    records = run(specs, RunStore(tmp_path / "default"))
    assert [(r["result"]["threads"], r["result"]["nested"], r["threads"]) for r in records] == [(1, 1, 1)] * 2
    # A worker's torch starts after the count is set (OMP_NUM_THREADS): torch caps that at the
    # machine's cores, so these use 2, which a 2-core machine has.
    if (os.cpu_count() or 1) < 2:
        return
    monkeypatch.setenv("COMPGYM_THREADS", "2")  # spawned workers inherit it
    records = run(specs, RunStore(tmp_path / "env"), workers=2)
    assert [(r["result"]["threads"], r["result"]["nested"]) for r in records] == [(2, 2), (2, 2)]
    assert torch.get_num_threads() == 1


def test_thread_scope_sets_the_count_for_a_torch_imported_later(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with thread_scope(3) as n:
        assert n == 3 and os.environ["OMP_NUM_THREADS"] == "3" and torch.get_num_threads() == 3
    assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == 1
