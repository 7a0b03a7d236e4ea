"""Group-relative RL: advantages, an end-to-end tiny run, determinism and resume after a kill."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import composition_gym.agents.grpo as grpo
from composition_gym.agents.grpo import GRPOConfig, group_advantages, train_grpo
from composition_gym.agents.transformer import TransformerConfig, TransformerLM

ENV = "composition_gym/Atomic-L1-v0"
#: A random tiny model scores 0, but with a format penalty truncated samples score -1 while
#: samples that close in time score 0: groups have variance, so updates happen.
ENV_KWARGS = {"format_penalty": 1.0, "max_len": 19}
TINY = dict(iterations=4, problems_per_iter=8, group_size=4, minibatch_size=16, checkpoint_every=2, lr=1e-3,
            warmup=1, epochs=2, kl_coef=0.05)


def tiny_lm() -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig(d_model=16, n_heads=2, d_ff=32, n_layers=1, segment_dims=2))


def test_config_validation_names_the_field():
    GRPOConfig().validate()
    for bad, field in [({"group_size": 1}, "group_size"), ({"advantage": "ppo"}, "advantage"),
                       ({"loss_agg": "max"}, "loss_agg"), ({"lr": 0.0}, "lr"), ({"iterations": 0}, "iterations")]:
        with pytest.raises(ValueError, match=field):
            GRPOConfig(**bad).validate()


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(group_advantages(r, "drgrpo"), r - 0.5 * torch.tensor([[1.0], [2.0]]))
    rloo = group_advantages(r, "rloo")
    assert float(rloo[0, 0]) == pytest.approx(1.0 - 1.0 / 3)  # r_i - mean of the three others
    grpo_adv = group_advantages(r, "grpo")
    assert float(grpo_adv[0].std()) == pytest.approx(1.0, abs=1e-4) and float(grpo_adv[1].abs().max()) == 0.0


def test_end_to_end_tiny_run_trains_logs_and_checkpoints(tmp_path):
    lm = tiny_lm()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    lm, stats = train_grpo(ENV, lm, GRPOConfig(**TINY), run_dir=str(tmp_path), progress=False,
                           eval_env_ids={"id": [ENV]}, eval_every=2, eval_episodes=4, env_kwargs=ENV_KWARGS)
    assert len(stats["history"]) == 4 and stats["env_steps"] > 0
    for key in ("reward", "pass_rate", "zero_variance_share", "kl_ref", "entropy", "clip_fraction", "tokens_per_s"):
        assert np.isfinite(stats[key]), key
    assert any(h["zero_variance_share"] < 1 for h in stats["history"])
    assert any(not torch.equal(before[k], v) for k, v in lm.state_dict().items()), "no update happened"
    assert [e["iteration"] for e in stats["evals"]] == [0, 2, 4] and "eval_id/success" in stats["evals"][0]
    assert os.path.isfile(tmp_path / grpo.CHECKPOINT)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, monkeypatch):
    cfg = GRPOConfig(**TINY)
    straight, _ = train_grpo(ENV, tiny_lm(), cfg, seed=3, run_dir=str(tmp_path / "a"), progress=False,
                             env_kwargs=ENV_KWARGS)
    calls = {"n": 0}
    real_play = grpo.play

    def killed_at_fourth_sampling(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the process dies during iteration 4; the last checkpoint is after 2
        return real_play(*args, **kwargs)

    monkeypatch.setattr(grpo, "play", killed_at_fourth_sampling)
    with pytest.raises(KeyboardInterrupt):
        train_grpo(ENV, tiny_lm(), cfg, seed=3, run_dir=str(tmp_path / "b"), progress=False, env_kwargs=ENV_KWARGS)
    monkeypatch.setattr(grpo, "play", real_play)
    resumed, stats = train_grpo(ENV, tiny_lm(), cfg, seed=3, run_dir=str(tmp_path / "b"), progress=False,
                                env_kwargs=ENV_KWARGS)
    assert [h["iteration"] for h in stats["history"]] == [1, 2, 3, 4]
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another run"):
        train_grpo(ENV, tiny_lm(), GRPOConfig(**{**TINY, "lr": 1e-4}), seed=3, run_dir=str(tmp_path / "b"),
                   progress=False, env_kwargs=ENV_KWARGS)


def test_cli_train_grpo_and_eval_with_samples(tmp_path, capsys):
    from composition_gym.cli import main

    init = tmp_path / "init.pt"
    tiny_lm().save(init)
    out = tmp_path / "rl.pt"
    assert main(["train", "--algo", "rloo", "--init", str(init), "--rl-env", "Atomic-L1-v0",
                 "--grpo.problems-per-iter", "4", "--grpo.group-size", "2", "--grpo.iterations", "1", "--eval-every", "0", "--run-dir", str(tmp_path / "run"),
                 "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert TransformerLM.load(out).config == tiny_lm().config
    assert main(["eval", str(out), "--env", "Atomic-L1-v0", "--episodes", "3", "--samples", "2",
                 "--threads", "1"]) == 0
    assert "pass@2" in capsys.readouterr().out
