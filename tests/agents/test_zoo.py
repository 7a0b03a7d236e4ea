"""rl-zoo3 end to end: ``rl_zoo3.train`` with the shipped hyperparameters, then ``rl_zoo3.enjoy``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rl_zoo3", reason="rl-zoo3 is the optional extra [zoo] (also in [dev])")
pytest.importorskip("requests", reason="rl_zoo3.enjoy imports requests")

ROOT = Path(__file__).resolve().parents[2]
ENV = "composition_gym/Atomic-L1-v0"
ZOO = ["--algo", "ppo", "--env", ENV, "--gym-packages", "composition_gym"]


def _zoo(module: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPGYM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", module, *ZOO, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_zoo_trains_with_the_shipped_hyperparameters_and_enjoy_renders(tmp_path):
    logs = tmp_path / "logs"
    # The shipped file, with a tiny budget (the file's own budget learns: see its header).
    _zoo("rl_zoo3.train", "--conf-file", str(ROOT / "hyperparams" / "ppo.yml"), "-f", str(logs), "--seed", "0",
         "--eval-freq", "-1", "-n", "64", "--hyperparams", "n_envs:2", "n_steps:32", "batch_size:64", cwd=tmp_path)
    assert (logs / "ppo" / "composition_gym-Atomic-L1-v0_1" / "composition_gym-Atomic-L1-v0.zip").exists()
    out = _zoo("rl_zoo3.enjoy", "-f", str(logs), "-n", "20", cwd=tmp_path)  # rendering on (no --no-render)
    assert "<bos>" in out  # the text frames the human mode prints
