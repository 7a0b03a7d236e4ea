"""The recipes with other libraries, run as a user runs them: TorchRL, a CleanRL-style PPO file, rl-zoo3."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import composition_gym

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COMPGYM_THREADS": "1"}


def _run(args, cwd, timeout=600):
    out = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_torchrl_collects_vectorised_masked_episodes(tmp_path):
    pytest.importorskip("torchrl", reason="the optional extra [torchrl]")
    out = _run([str(ROOT / "examples" / "torchrl_collect.py"), "--env-id", "Compose-L1to3-v1", "--num-envs", "4",
                "--frames", "1024", "--frames-per-batch", "256"], tmp_path)
    stats = dict(kv.split("=", 1) for kv in out.strip().splitlines()[-1].split())
    assert int(stats["frames"]) == 1024
    assert int(stats["episodes"]) >= 20  # the SameStep autoreset of 4 sub-environments kept going
    assert int(stats["ungrammatical_actions"]) == 0 and int(stats["malformed"]) == 0  # ActionMask masked


@pytest.mark.slow
def test_cleanrl_style_ppo_runs_on_make_vec_with_masks(tmp_path):
    log = tmp_path / "log.jsonl"
    _run([str(ROOT / "examples" / "cleanrl_ppo.py"), "--env-id", "Compose-L1to3-v1", "--total-timesteps", "2048",
          "--num-envs", "4", "--num-steps", "64", "--json-out", str(log)], tmp_path)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, 9))
    assert sum(r["episodes"] for r in rows) >= 50
    assert all(r["malformed_rate"] == 0.0 for r in rows)  # masked logits: every sampled token is grammatical
    assert all(math.isfinite(r[k]) for r in rows for k in ("policy_loss", "value_loss", "entropy", "approx_kl"))
    assert rows[-1]["entropy"] < rows[0]["entropy"] + 0.5


def test_the_zoo_file_covers_every_registered_id():
    yaml = pytest.importorskip("yaml", reason="rl-zoo3 reads YAML (the optional extra [zoo])")
    config = yaml.safe_load((ROOT / "hyperparams" / "ppo.yml").read_text())
    assert "default" in config  # rl-zoo3 falls back to it for an id without its own entry
    assert all(k == "default" or k in {r["id"] for r in composition_gym.list_envs()} for k in config)
    default = config["default"]
    for row in composition_gym.list_envs():  # the default's env kwargs are valid for every id
        composition_gym.CompositionEnv(**{**row["kwargs"], **default["env_kwargs"]})


@pytest.mark.slow
def test_zoo_trains_and_enjoys_a_v1_id_and_n_counts_timesteps(tmp_path):
    pytest.importorskip("rl_zoo3", reason="the optional extra [zoo]")
    env_id = "composition_gym/Compose-L1to3-v1"
    zoo = ["--algo", "ppo", "--env", env_id, "--gym-packages", "composition_gym"]
    logs = tmp_path / "logs"
    out = _run(["-m", "rl_zoo3.train", *zoo, "--conf-file", str(ROOT / "hyperparams" / "ppo.yml"), "-f", str(logs),
                "--seed", "0", "--eval-freq", "-1", "-n", "128", "--hyperparams", "n_envs:2", "n_steps:32",
                "batch_size:64"], tmp_path)
    assert "Using 'default' hyperparameters" in out
    assert (logs / "ppo" / "composition_gym-Compose-L1to3-v1_1" / "composition_gym-Compose-L1to3-v1.zip").exists()
    out = _run(["-m", "rl_zoo3.enjoy", *zoo, "-f", str(logs), "-n", "40"], tmp_path)
    lengths = [int(n) for n in re.findall(r"Episode Length (\d+)", out)]
    assert "<bos>" in out  # the frames of render_mode="human"
    # -n is a number of timesteps (env steps), not of episodes: the episodes of 40 steps fit in them.
    # (This barely trained model writes an ungrammatical token first, so most episodes last one step.)
    assert 1 <= len(lengths) and sum(lengths) <= 40
