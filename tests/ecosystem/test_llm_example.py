"""examples/llm_grpo.py end to end, offline: SFT and GRPO (TRL) on a tiny random model, evaluate via TextAgent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the optional extra [llm]")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sft_then_grpo_then_evaluate_on_a_tiny_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPGYM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "llm_grpo.py"), "--output-dir", str(tmp_path),
                          "--problems", "128", "--sft-steps", "40", "--grpo-steps", "2", "--eval-episodes", "10"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    loss = summary["sft_loss"]
    assert len(loss) == 40 and loss[-1] < 0.7 * loss[0]  # SFT on the reference completions learns
    assert len(summary["grpo_reward"]) == 2  # GRPO ran and logged the env's reward each step
    assert summary["eval_episodes"] == 20 and set(summary["eval"]) == {
        "composition_gym/Compose-L3-v1", "composition_gym/OOD-Unseen-L3-v1"}
    assert f"summary: {tmp_path / 'summary.json'}" in out.stdout
