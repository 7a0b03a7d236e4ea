"""``python -m composition_gym.benchmarks.profile_grpo``: every part timed, the parts add up, the table prints."""

from __future__ import annotations

import pytest
import torch

from composition_gym.benchmarks import profile_grpo


def test_profile_times_every_part_and_they_add_up(monkeypatch, capsys):
    monkeypatch.setattr(profile_grpo, "SETTINGS", {**profile_grpo.SETTINGS, "problems_per_iter": 8, "group_size": 2,
                                                   "minibatch_size": 8})
    real_backward = torch.Tensor.backward
    out = profile_grpo.profile(iterations=1)
    parts = out["parts"]
    for name in ("env reset", "env step", "prefill", "decode", "forward", "backward", "optimizer", "python overhead"):
        assert name in parts, name
    assert sum(p["wall_s"] for p in parts.values()) == pytest.approx(out["wall_s"], rel=1e-6)
    assert out["tokens"] > 0 and 0 < out["env_share"] < 1 and out["peak_rss_growth_mb"] >= 0
    assert torch.Tensor.backward is real_backward  # the timers are taken off again
    text = profile_grpo.report(out)
    assert "B=8, G=2" in text and "python overhead" in text


def test_profile_command_line(capsys, monkeypatch):
    monkeypatch.setattr(profile_grpo, "SETTINGS", {**profile_grpo.SETTINGS, "problems_per_iter": 4, "group_size": 2})
    assert profile_grpo.main(["--iterations", "1"]) == 0
    assert "tokens/s" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        profile_grpo.main(["--iterations", "0"])
