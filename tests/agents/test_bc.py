"""Behavior cloning: the acceptance run (>= 90 % greedy success), data, DAgger, TensorBoard."""

from __future__ import annotations

import glob
import os
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from composition_gym.agents import LMAgent, TransformerConfig, behavior_cloning, evaluate
from composition_gym.agents.bc import IGNORE, dagger_sequences, expert_sequences, token_accuracy
from composition_gym.agents.settings import BC_PRESETS, BCConfig, bc_config
from composition_gym import tokens as T
from tests.agents.conftest import BC_TEST, SFT_ENV

TINY = TransformerConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2)


@pytest.mark.slow
def test_bc_reaches_90_percent_greedy_success_on_the_sft_id():
    """The acceptance run: behavior cloning from scratch (about 9 minutes on one thread; the only
    test that trains a model to competence, scheduled first: LONG_TESTS in tests/conftest.py)."""
    t0 = time.perf_counter()
    lm, stats = behavior_cloning(SFT_ENV, settings=BC_TEST, seed=0, progress=False, threads=1)
    seconds = time.perf_counter() - t0
    # Fresh problems (not the held-out seeds BC reported on), grammar-masked greedy decoding.
    report = evaluate(LMAgent(lm), [SFT_ENV], episodes=300, seed=123_456)
    print(f"\nBC: {seconds:.0f} s, stats {stats}, fresh greedy success {report.success:.1%}")
    assert report.success >= 0.90
    assert stats["heldout_success"] >= 0.90 and stats["token_acc"] > 0.97


def test_expert_sequences_put_loss_on_trace_tokens_only():
    data = expert_sequences([SFT_ENV], 5, seed=0)
    env = gym.make(SFT_ENV)
    for i in range(5):
        _, info = env.reset(seed=i)
        prompt = T.encode(info["prompt"])
        trace = T.encode(";".join(env.unwrapped.problem.values)) + [T.EOS_ID]
        x, y = data.inputs[i], data.targets[i]
        n = len(prompt) + len(trace) - 1
        assert x[:n].tolist() == (prompt + trace)[:-1] and (x[n:] == T.PAD_ID).all()
        # Position t predicts token t+1; only the trace's tokens are targets.
        assert (y[: len(prompt) - 1] == IGNORE).all()
        assert y[len(prompt) - 1 : n].tolist() == trace
        assert (y[n:] == IGNORE).all()


def test_dagger_labels_visited_states_with_the_expert(small_lm):
    data, success = dagger_sequences(small_lm, [SFT_ENV], 4, seed=0)
    assert 0.0 <= success <= 1.0
    expert_env = gym.make(SFT_ENV)
    from composition_gym import ExpertPolicy

    expert = ExpertPolicy.for_env(expert_env)
    for x, y in zip(data.inputs, data.targets):
        for t in np.flatnonzero((y != IGNORE).numpy()):
            state = np.zeros(80, dtype=np.int64)
            state[: t + 1] = x[: t + 1].numpy()
            assert expert.act(state) == int(y[t])  # the label is the expert's token for that prefix


def test_dagger_rounds_run_and_log(tmp_path):
    lm, stats = behavior_cloning(SFT_ENV, 64, config=TINY, epochs=1, dagger_rounds=1, dagger_episodes=16,
                                 eval_episodes=8, tensorboard_log=str(tmp_path), progress=False)
    assert "dagger_1_rollout_success" in stats
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"bc/loss", "bc/lr", "bc/heldout_token_acc", "bc/heldout_success", "bc/dagger_rollout_success"} <= tags


def test_bc_is_reproducible_under_a_seed():
    a, sa = behavior_cloning(SFT_ENV, 32, config=TINY, epochs=1, eval_episodes=4, progress=False, seed=3)
    b, sb = behavior_cloning(SFT_ENV, 32, config=TINY, epochs=1, eval_episodes=4, progress=False, seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert sa["loss"] == sb["loss"]


def test_token_accuracy_of_an_untrained_model_is_low(small_lm):
    data = expert_sequences([SFT_ENV], 4, seed=0)
    loss, acc = token_accuracy(small_lm, data)
    assert 0.0 <= acc < 0.5 and loss > 0  # an untrained model is far from the expert


def test_bc_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown env id"):
        behavior_cloning("composition_gym/Nope-v0", 10, progress=False)
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        behavior_cloning(SFT_ENV, 0, progress=False)
    with pytest.raises(ValueError, match="dagger_rounds"):
        behavior_cloning(SFT_ENV, 4, dagger_rounds=-1, progress=False)
    with pytest.raises(ValueError, match="unknown BC preset 'huge'"):
        behavior_cloning(SFT_ENV, settings="huge", progress=False)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        behavior_cloning(SFT_ENV, 4, threads=0, progress=False)


def test_bc_settings_have_one_home_with_named_presets():
    assert set(BC_PRESETS) == {"tiny", "demo", "reproduce", "default"}
    for cfg in BC_PRESETS.values():
        assert cfg.validate() is cfg
    assert bc_config() == BC_PRESETS["default"] == BCConfig()
    cfg = bc_config("demo", epochs=2.0, episodes=None)  # None leaves a field alone
    assert cfg.epochs == 2.0 and cfg.episodes == BC_PRESETS["demo"].episodes
    for bad, message in [({"epochs": 0}, "epochs must be > 0"),
                         ({"lr": float("nan")}, "lr must be a finite number"),
                         ({"batch_size": 1.5}, "batch_size must be an integer"),
                         ({"eval_every": -1}, "eval_every must be >= 0")]:
        with pytest.raises(ValueError, match=message):
            BCConfig(**bad).validate()
    with pytest.raises(TypeError, match="unknown BCConfig setting"):
        bc_config("tiny", epoch=3)
    # The demo, the reproduction and the tests read their BC budgets from here.
    from composition_gym.agents.settings import DEMO_BUDGETS
    from composition_gym.benchmarks.experiment.protocol import PRESETS

    assert DEMO_BUDGETS["full"].bc == BC_PRESETS["demo"] and DEMO_BUDGETS["quick"].bc == BC_PRESETS["tiny"]
    default = PRESETS["small"]["default"]
    assert (default.cell.sft_episodes, default.budget.sft_epochs) == (BC_PRESETS["reproduce"].episodes,
                                                                      BC_PRESETS["reproduce"].epochs)
    assert BC_TEST == BC_PRESETS["default"].replace(eval_episodes=400)


def test_a_preset_with_overrides_trains_what_it_says(tmp_path):
    lm, stats = behavior_cloning(SFT_ENV, settings="tiny", config=TINY, epochs=2, progress=False, threads=1)
    # 64 episodes / 128 per batch = 1 step per epoch, 2 epochs
    assert stats["steps"] == 2 and stats["threads"] == 1


def test_heldout_curves_are_logged_during_training(tmp_path):
    behavior_cloning(SFT_ENV, 64, config=TINY, epochs=2, batch_size=16, eval_episodes=4, eval_every=3,
                     tensorboard_log=str(tmp_path), progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))[0])
    acc.Reload()
    # 64 / 16 = 4 steps per epoch, 8 in all: evaluations at steps 3 and 6, then the final one at 8
    for tag in ("bc/heldout_success", "bc/heldout_token_acc", "bc/heldout_success/Compose-L3-v0"):
        assert [e.step for e in acc.Scalars(tag)] == [3, 6, 8]


def test_one_thread_policy_for_cli_and_api(monkeypatch):
    from composition_gym.agents import settings

    monkeypatch.setenv("COMPGYM_THREADS", "3")
    assert settings.default_threads() == 3 and settings.resolve_threads(None) == 3 and settings.resolve_threads(2) == 2
    monkeypatch.setenv("COMPGYM_THREADS", "many")
    with pytest.raises(ValueError, match="COMPGYM_THREADS must be a positive integer"):
        settings.default_threads()
    monkeypatch.delenv("COMPGYM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert settings.default_threads() == 2  # idle: both cores
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert settings.default_threads() == 1  # one competing process: one thread


def test_progress_bars_refresh_rarely_when_not_a_terminal():
    from composition_gym.agents.settings import progress_kwargs

    assert progress_kwargs()["mininterval"] >= 30  # pytest's captured stderr is not a terminal


def test_device_option_is_checked_before_training():
    from composition_gym.agents.settings import check_device

    check_device("cpu")
    with pytest.raises(ValueError, match="unknown torch device"):
        behavior_cloning(SFT_ENV, 4, settings="tiny", device="gpu9", progress=False)
    with pytest.raises(TypeError, match="device must be a string"):
        check_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            behavior_cloning(SFT_ENV, 4, settings="tiny", device="cuda", progress=False)
    lm, _ = behavior_cloning(SFT_ENV, 4, settings="tiny", device="cpu", progress=False)
    assert lm.head.weight.device.type == "cpu"
