"""``compgym diagnose`` end to end on a tiny random model: table, JSON, figure; TensorBoard scalars."""

from __future__ import annotations

import json
import math

import pytest

from composition_gym.agents.diagnostics.cli import main
from composition_gym.agents.diagnostics.report import (
    DiagnoseConfig, diagnose, log_to_tensorboard, summary_scalars)

TINY = ["--env-ids", "Compose-L3-v0", "OOD-Depth-L4-v0", "--episodes", "6", "--probe-episodes", "12",
        "--probe-test-episodes", "6", "--attention-episodes", "4"]


@pytest.fixture
def tiny_path(small_lm, tmp_path):
    path = tmp_path / "tiny.pt"
    small_lm.save(path)
    return str(path)


def test_cli_writes_json_and_figure(tiny_path, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main([tiny_path, *TINY, "--compare", tiny_path, "--json", str(out), "--figures", str(tmp_path / "fig")]) == 0
    text = capsys.readouterr().out
    assert "L=4 wrong at step 1" in text and "probe skill by layer OOD-Depth-L4-v0" in text
    data = json.loads(out.read_text())
    assert list(data) == ["tiny#1", "tiny#2"]  # the same file twice gets two columns
    r = data["tiny#1"]
    assert r == data["tiny#2"]  # deterministic
    assert r["anatomy"]["episodes"] == {"composition_gym/Compose-L3-v0": 6, "composition_gym/OOD-Depth-L4-v0": 6}
    assert len(r["probes"]["acc"]["skill"]["OOD-Depth-L4-v0"]) == 3  # embeddings + 2 blocks
    assert set(r["attention"]) == {"Compose-L3-v0", "OOD-Depth-L4-v0"}
    png = (tmp_path / "fig" / "diagnostics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pt"), *TINY]) == 2
    assert "no TransformerLM checkpoint" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.pt"), "--env-ids", "Compose-L33-v0"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_the_command_line_is_the_diagnosis_settings_and_the_command_s_own():
    from composition_gym import cli

    cfg = cli.parse(["diagnose", "m.pt", "--compare", "a.pt", "b.pt", "--json", "x.json", "--source", "model"])
    assert (cfg.model, cfg.compare, cfg.json, cfg.episodes, cfg.source) == ("m.pt", ("a.pt", "b.pt"), "x.json", 200,
                                                                             "model")


def test_scalars_for_tensorboard_and_anatomy_only_agents(small_lm):
    class Writer:
        def __init__(self):
            self.rows = []

        def add_scalar(self, tag, value, step):
            self.rows.append((tag, value, step))

    from composition_gym import ExpertPolicy

    config = DiagnoseConfig(env_ids=("Compose-L3-v0",), episodes=5, probe_episodes=8, probe_test_episodes=4,
                            attention_episodes=3)
    expert = diagnose(ExpertPolicy(), config)
    assert expert["probes"] is None and expert["attention"] is None  # no transformer inside
    assert summary_scalars(expert)["all_steps_correct/Compose-L3-v0"] == 1.0
    w = Writer()
    result = log_to_tensorboard(w, small_lm, 7, config)
    assert result["probes"] is not None
    tags = {t for t, _, _ in w.rows}
    assert all(t.startswith("diag/") for t in tags) and all(s == 7 for _, _, s in w.rows)
    assert {"diag/first_step/L3/rate", "diag/probe/skill/Compose-L3-v0/layer2",
            "diag/attention/Compose-L3-v0/layer2/share_best_head"} <= tags
    assert all(isinstance(v, float) and not math.isinf(v) for _, v, _ in w.rows)


def test_config_errors():
    with pytest.raises(ValueError, match="episodes"):
        DiagnoseConfig(episodes=0)
    with pytest.raises(ValueError, match="source"):
        DiagnoseConfig(source="teacher")


def test_package_exports_load_lazily():
    import composition_gym.agents.diagnostics as d

    assert all(callable(getattr(d, name)) for name in d.__all__)
    with pytest.raises(AttributeError, match="no attribute"):
        d.not_a_name  # noqa: B018
