"""``compgym train`` / ``eval`` / ``demo`` through ``compgym``'s own entry point."""

from __future__ import annotations

import json
import os

import pytest

from composition_gym import cli


def _run(argv: list[str]) -> int:
    return cli.main(argv)


def _one_line_error(capsys, rc: int) -> str:
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return err


def test_eval_command_on_an_lm_checkpoint_writes_json(tmp_path, small_lm, capsys):
    path = tmp_path / "lm.pt"
    small_lm.save(path)
    out = tmp_path / "r.json"
    assert _run(["eval", str(path), "--suite", "ood", "--episodes", "3", "--json", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "OOD-Unseen-L3-v1" in text and "OOD-Depth-L4-v1" in text  # the suites' default: the newest ids
    assert set(json.loads(out.read_text())["success_by_env"]) == {
        "composition_gym/OOD-Unseen-L3-v1", "composition_gym/OOD-Depth-L4-v1"}


def test_eval_against_a_baseline_prints_and_saves_paired_differences(tmp_path, small_lm, capsys):
    import torch

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    small_lm.save(a)
    with torch.no_grad():
        small_lm.head.bias[:] = 0.0  # another model: a different head
    small_lm.save(b)
    out = tmp_path / "r.json"
    argv = ["eval", str(b), "--baseline", str(a), "--env", "Compose-L3-v1", "--episodes", "6", "--samples", "2",
            "--json", str(out), "--threads", "1"]
    assert _run(argv) == 0
    assert "paired over the same problems" in capsys.readouterr().out
    diffs = json.loads(out.read_text())["paired_vs_baseline"]["composition_gym/Compose-L3-v1"]
    assert set(diffs) == {"greedy", "sampled", "pass@2"}
    for v in diffs.values():
        assert v["diff"] == pytest.approx(v["after"] - v["before"])


def test_train_then_eval_the_saved_zip(tmp_path, capsys):
    model = tmp_path / "m.zip"
    assert _run(["train", "--env", "Compose-L3-v0", "--bc-preset", "tiny", "--bc.episodes", "32", "--ppo-steps", "128",
                 "--algo", "ppo", "--ppo.n-envs", "2", "--tensorboard", str(tmp_path / "runs"), "--out", str(model),
                 "--eval-freq", "64", "--eval-episodes", "2", "--no-progress", "--threads", "1"]) == 0
    assert model.exists() and os.listdir(tmp_path / "runs") == ["bc_ppo_1"]
    assert _run(["eval", str(model), "--env", "Compose-L3-v0", "--episodes", "2"]) == 0
    assert "Compose-L3-v0" in capsys.readouterr().out
    # A small-profile model on the paper suite: its observations do not fit; one line says so.
    err = _one_line_error(capsys, _run(["eval", str(model), "--profile", "paper", "--suite", "ood", "--episodes", "1"]))
    assert "observation" in err


def test_demo_quick_prints_the_id_ood_table_and_tensorboard_command(tmp_path, capsys):
    assert _run(["demo", "--quick", "--tensorboard", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("Compose-L1to3-v1", "Compose-RL-L3-v1", "Atomic-L1-v1", "OOD-Unseen-L3-v1", "OOD-Depth-L4-v1",
                 "BC+PPO"):
        assert name in out
    assert f"tensorboard --logdir {tmp_path}" in out
    assert "evaluating BC+PPO: 5 env ids x 8 episodes" in out  # progress during the final evaluation
    assert "every depth together" in out
    run = tmp_path / "demo_1"
    assert (run / "model.zip").exists() and (run / "demo.json").exists()
    doc = json.loads((run / "demo.json").read_text())
    assert doc["budget"]["bc"]["episodes"] == 64 and doc["budget"]["ppo_steps"] == 512


def test_eval_of_a_missing_or_corrupt_model_fails_clearly(tmp_path, capsys):
    assert "no model file" in _one_line_error(capsys, _run(["eval", str(tmp_path / "missing.zip")]))
    bad = tmp_path / "bad.zip"
    bad.write_text("nope")
    assert "not an SB3 model" in _one_line_error(capsys, _run(["eval", str(bad)]))
    garbage = tmp_path / "bad.pt"
    garbage.write_text("nope")
    err = _one_line_error(capsys, _run(["eval", str(garbage)]))
    assert "not a readable TransformerLM checkpoint" in err and "weights_only" not in err


@pytest.mark.parametrize("argv,needle", [
    (["eval", "--env", "NoSuchEnv", "model.zip"], "no model file"),  # --env does not swallow the path
    (["eval", "--episodes", "0", "model.zip"], "EvalConfig.episodes must be >= 1, got 0"),
    (["eval", "--profile", "huge", "model.zip"], "invalid choice 'huge' for argument '--profile'"),
    (["train", "--env", "NoSuchEnv"], "unknown env id 'NoSuchEnv'"),
    (["train", "--ppo-steps", "0"], "TrainConfig.ppo_steps must be >= 1, got 0"),
    (["train", "--bc.epochs", "nan"], "BCConfig.epochs must be a finite number, got nan"),
    (["train", "--algo", "recurrent_ppo"], "recurrent_ppo trains its own LSTM policy from scratch: add --init scratch"),
    (["train", "--threads", "0"], "TrainConfig.threads must be >= 1"),
    (["train", "--max-minutes", "0"], "TrainConfig.max_minutes must be > 0"),
    (["train", "--bc-preset", "huge"], "unknown BC preset 'huge'"),
    (["train", "--algo", "rloo", "--grpo.advantage", "drgrpo", "--init", "pretrained"], "disagree"),
    (["demo", "--bc.episodes", "-3"], "BCConfig.episodes must be >= 1"),
])
def test_agent_command_errors_are_one_line(capsys, argv, needle):
    assert needle in _one_line_error(capsys, _run(argv))


def test_eval_env_names_an_unknown_id_in_one_line(tmp_path, small_lm, capsys):
    path = tmp_path / "lm.pt"
    small_lm.save(path)
    err = _one_line_error(capsys, _run(["eval", "--env", "NoSuchEnv", str(path)]))
    assert "unknown env id 'NoSuchEnv'" in err
