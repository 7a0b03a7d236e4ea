"""``compgym train`` / ``eval`` / ``demo`` through an argparse parser built with agents.cli.register."""

from __future__ import annotations

import argparse
import json
import os

from composition_gym.agents import cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compgym")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_eval_command_on_an_lm_checkpoint_writes_json(tmp_path, small_lm, capsys):
    path = tmp_path / "lm.pt"
    small_lm.save(path)
    out = tmp_path / "r.json"
    assert _run(["eval", str(path), "--suite", "ood", "--episodes", "3", "--json", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "OOD-Unseen-L3-v0" in text and "OOD-Depth-L4-v0" in text
    assert set(json.loads(out.read_text())["success_by_env"]) == {
        "composition_gym/OOD-Unseen-L3-v0", "composition_gym/OOD-Depth-L4-v0"}


def test_train_then_eval_the_saved_zip(tmp_path, capsys):
    model = tmp_path / "m.zip"
    assert _run(["train", "--env", "Compose-L3-v0", "--bc-episodes", "32", "--bc-epochs", "1", "--ppo-steps", "128",
                 "--algo", "ppo", "--n-envs", "2", "--tensorboard", str(tmp_path / "runs"), "--out", str(model),
                 "--eval-freq", "64", "--eval-episodes", "2", "--no-progress", "--threads", "1"]) == 0
    assert model.exists() and os.listdir(tmp_path / "runs") == ["bc_ppo_1"]
    assert _run(["eval", str(model), "--env", "Compose-L3-v0", "--episodes", "2"]) == 0
    assert "Compose-L3-v0" in capsys.readouterr().out


def test_demo_quick_prints_the_id_ood_table_and_tensorboard_command(tmp_path, capsys):
    assert _run(["demo", "--quick", "--tensorboard", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("Compose-L3-v0", "Compose-RL-L3-v0", "OOD-Unseen-L3-v0", "OOD-Depth-L4-v0", "BC+PPO"):
        assert name in out
    assert f"tensorboard --logdir {tmp_path}" in out
    run = tmp_path / "demo_1"
    assert (run / "model.zip").exists() and (run / "demo.json").exists()


def test_eval_of_a_missing_or_corrupt_model_fails_clearly(tmp_path, capsys):
    assert _run(["eval", str(tmp_path / "missing.zip")]) == 2
    assert "no model file" in capsys.readouterr().err
    bad = tmp_path / "bad.zip"
    bad.write_text("nope")
    assert _run(["eval", str(bad)]) == 2
    assert "not an SB3 model" in capsys.readouterr().err
    garbage = tmp_path / "bad.pt"
    garbage.write_text("nope")
    assert _run(["eval", str(garbage)]) == 2
    assert "not a readable TransformerLM checkpoint" in capsys.readouterr().err
