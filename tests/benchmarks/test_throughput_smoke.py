"""``compgym bench --quick``: every part runs and the JSON is complete (plumbing only, no timing asserts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from composition_gym.benchmarks import throughput
from composition_gym import cli


# The quick benchmark still runs every part in its own subprocess (about 35 s).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "throughput.json"
    assert throughput.main(["--quick", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def positive(x) -> bool:
    return isinstance(x, float) and np.isfinite(x) and x > 0


def test_every_part_is_measured(quick_run):
    r = quick_run["results"]
    assert quick_run["quick"] is True
    assert set(r) == {"env", "reset", "vector", "ppo", "bc", "grpo"}
    assert len(r["reset"]["pairs"]) == len(throughput.RESET_PAIRS)
    for pair in r["reset"]["pairs"].values():
        assert all(positive(v) for v in pair["resets_per_s"].values()) and positive(pair["ratio"])
    assert quick_run["goals"]["v1_reset_vs_v0"]["ratio"] == r["reset"]["pairs"]["Compose-L1to3-v1 / Compose-L3-v0"]["ratio"]
    assert set(r["grpo"]) == {"group", "bc", "decode", "maskable"}
    assert all(positive(v["tokens_per_s"]) for v in r["grpo"].values())
    assert all(r["grpo"][side]["torch_threads"] == 1 for side in r["grpo"])  # same threads on every side
    goals = quick_run["goals"]
    assert goals["grpo_vs_bc"]["ratio"] == pytest.approx(r["grpo"]["group"]["tokens_per_s"] / r["grpo"]["bc"]["tokens_per_s"])
    assert goals["decode_vs_bc"]["ratio"] == pytest.approx(r["grpo"]["decode"]["tokens_per_s"] / r["grpo"]["bc"]["tokens_per_s"])
    assert 0 < goals["grpo_env_share"]["ratio"] < 1 and positive(r["grpo"]["decode"]["sampling_tokens_per_s"])
    assert goals["l4_identifiable_reset_vs_v0"]["ratio"] == r["reset"]["pairs"]["OOD-Depth-L4-v1 / OOD-Depth-L4-v0"]["ratio"]
    assert all(positive(v) for v in r["env"]["steps_per_s"].values())
    assert set(r["env"]["steps_per_s"]) == {throughput.ENV_ID, throughput.REFERENCE_ID}
    assert positive(r["env"]["gymnasium_benchmark_step"]["ratio"])
    assert set(r["vector"]["steps_per_s"]) == {"SyncVectorEnv", "CompositionVectorEnv"}
    assert r["vector"]["num_envs"] == throughput.N_ENVS
    assert set(r["ppo"]) == {"mlp", "transformer", "naive"}
    for p in r["ppo"].values():
        assert positive(p["steps_per_s"]) and p["steps"] >= 64
    assert set(r["bc"]) == {"trimmed", "padded"}
    assert all(positive(b["tokens_per_s"]) and b["trace_tokens"] > 0 for b in r["bc"].values())


def test_memory_is_reported_for_each(quick_run):
    r = quick_run["results"]
    for part in ("env", "vector"):
        assert all(isinstance(v, float) and v > 0 for v in r[part]["peak_mb"].values())
    for part in ("ppo", "bc", "grpo"):
        assert all(v["peak_rss_growth_mb"] >= 0 for v in r[part].values())
    assert quick_run["goals"]["grpo_iteration_rss_mb"]["ratio"] == r["grpo"]["group"]["peak_rss_growth_mb"]


def test_goals_and_table_follow_the_numbers(quick_run):
    goals = quick_run["goals"]
    assert set(goals) == set(throughput.GOALS)
    r = quick_run["results"]
    assert goals["vector_vs_sync"]["ratio"] == pytest.approx(
        r["vector"]["steps_per_s"]["CompositionVectorEnv"] / r["vector"]["steps_per_s"]["SyncVectorEnv"])
    for key, g in goals.items():
        assert g["met"] == (g["ratio"] <= g["goal"] if key in throughput.MAX_GOALS else g["ratio"] >= g["goal"])
    assert "CartPole-v1" in quick_run["table"] and "goal vector_vs_sync" in quick_run["table"]
    assert quick_run["machine"]["cpu_count"] >= 1 and quick_run["wall_time_s"] > 0


def test_bench_options_are_its_settings():
    cfg = cli.parse(["bench", "--quick", "--json", "x.json", "--parts", "env"])
    assert cfg == throughput.BenchConfig(quick=True, json="x.json", parts=("env",))
    with pytest.raises(cli.UsageError, match="invalid choice 'gpu'"):
        cli.parse(["bench", "--parts", "gpu"])


def test_unknown_part_is_rejected():
    with pytest.raises(ValueError, match="unknown part"):
        throughput.run(quick=True, parts=("env", "gpu"))
