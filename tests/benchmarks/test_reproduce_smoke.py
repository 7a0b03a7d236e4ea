"""The whole reproduction pipeline at a tiny budget: plumbing, not science."""

from __future__ import annotations

import json

import pytest

from composition_gym.benchmarks.claims import CONDITIONS, EVAL_ENVS
from composition_gym.benchmarks.cli import register
from composition_gym.benchmarks.reproduce import BUDGETS, reproduce


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    doc = reproduce(profile="small", seeds=2, budget="tiny", out=out / "results", runs_dir=out / "runs",
                    workers=1, progress=False, command="pytest smoke")
    return doc, out


def test_every_run_is_recorded_with_every_eval_env(tiny_run):
    doc, _ = tiny_run
    runs = doc["runs"]
    assert [(r["seed"], r["condition"]) for r in runs] == [(s, c) for s in (0, 1) for c in CONDITIONS]
    for run in runs:
        assert set(run["success"]) == set(EVAL_ENVS)
        assert all(0.0 <= v <= 1.0 for v in run["success"].values())
        assert (run["rl_env"] is None) == (run["condition"] == "sft")
    assert set(doc["summary"]) == set(CONDITIONS)
    assert {v["claim"] for v in doc["verdicts"]} == {"claim1", "claim2", "claim3"}
    assert doc["checks"]["sft_covers_every_routing_skill_step"]


def test_outputs_are_written_and_well_formed(tiny_run):
    doc, out = tiny_run
    saved = json.loads((out / "results" / "reproduce.json").read_text())
    assert saved["meta"]["command"] == "pytest smoke"
    assert saved["meta"]["budget"]["ppo_steps"] == BUDGETS["small"]["tiny"].ppo_steps
    assert saved["meta"]["commit"] and saved["meta"]["date"] and saved["meta"]["wall_time_s"] > 0
    assert len(saved["runs"]) == len(doc["runs"])
    text = (out / "results" / "reproduce.md").read_text()
    for title in ("Claim 1", "Claim 2", "Claim 3", "Verdicts"):
        assert f"## {title}" in text
    assert "| SFT |" in text and "42.6" in text and "pytest smoke" in text
    tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]
    assert len(tables) == 4  # three claims and the verdicts
    for rows in tables:  # every row of a table has as many cells as its header
        assert len(rows) >= 3 and {row.count("|") for row in rows} == {rows[0].count("|")}
    png = (out / "results" / "reproduce.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_tensorboard_logs_per_run(tiny_run):
    doc, out = tiny_run
    for run in doc["runs"]:
        events = list((out / "runs").glob(f"*/seed{run['seed']}/{run['condition']}/**/events.out.tfevents.*"))
        assert events, f"no TensorBoard events for {run['condition']} seed {run['seed']}"


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        reproduce(profile="huge", out=tmp_path)
    with pytest.raises(ValueError, match="unknown budget"):
        reproduce(budget="enormous", out=tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        reproduce(seeds=0, out=tmp_path)
    with pytest.raises(ValueError, match="unknown condition"):
        reproduce(conditions=("sft", "rl_magic"), out=tmp_path)
    with pytest.raises(ValueError, match="ppo_steps"):
        reproduce(overrides={"ppo_steps": 0}, out=tmp_path)


def test_cli_registers_reproduce():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["reproduce", "--profile", "paper", "--seeds", "4", "--budget", "tiny", "--out", "x"])
    assert (args.profile, args.seeds, args.budget, args.out) == ("paper", 4, "tiny", "x")
    assert callable(args.func)
