"""The reproduction on the real protocol at a tiny budget: plumbing, not science."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES, MEASURES
from composition_gym.benchmarks.cli import register
from composition_gym.benchmarks.experiment.protocol import BUDGETS
from composition_gym.benchmarks.experiment.reproduce import add_arguments, reproduce
from composition_gym.benchmarks.engine.store import RunStore


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    doc = reproduce(seeds=1, budget="tiny", conditions=("sft", "rl_compound"), out=root / "results",
                    runs_dir=root / "store", workers=1, progress=False, command="pytest smoke")
    return doc, root


def test_runs_carry_every_measure_on_every_eval_set(tiny_run):
    doc, _ = tiny_run
    assert [(r["seed"], r["condition"]) for r in doc["runs"]] == [(0, "sft"), (0, "rl_compound")]
    for run in doc["runs"]:
        assert set(run["metrics"]) == set(FAMILIES["compose"].evals)
        for m in run["metrics"].values():
            assert set(m) == set(MEASURES) and 0.0 <= m["greedy"] <= m["pass_at_k"] <= 1.0
        # the module diagnostics of each arm's model, as compgym diagnose's comparison rows
        rows = run["diagnostics"]
        assert any(k.startswith("probe skill by layer") for k in rows)
        assert any(k.startswith("own-call share by layer") for k in rows)
        assert any(k.startswith("all steps right") for k in rows)
    assert doc["checks"]["sft_covers_every_skill_and_routing"]
    assert {v["measure"] for v in doc["verdicts_pass_at_k"]} == {"pass_at_k"}


def test_outputs_are_written_and_well_formed(tiny_run):
    doc, root = tiny_run
    saved = json.loads((root / "results" / "reproduce.json").read_text())
    assert saved["meta"]["command"] == "pytest smoke" and saved["meta"]["version"] == "v1"
    assert saved["meta"]["budget"]["rl_episodes"] == BUDGETS["small"]["tiny"].rl_episodes
    text = (root / "results" / "reproduce.md").read_text()
    for title in ("Claim 1", "Claim 2", "Claim 3", "Every measure", "Verdicts", "Module diagnostics per condition"):
        assert f"## {title}" in text
    for block in (b for b in text.split("\n\n") if b.startswith("|")):
        rows = block.splitlines()  # every row of a table has as many cells as its header
        assert len(rows) >= 3 and {row.count("|") for row in rows} == {rows[0].count("|")}
    assert (root / "results" / "reproduce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((root / "store" / "tensorboard").glob("*rl_compound*/events.out.tfevents.*"))


def test_same_command_again_reuses_every_run(tiny_run, tmp_path, capsys):
    doc, root = tiny_run
    store = RunStore(root / "store")
    before = {r["key"]: r["finished"] for r in store.records()}
    again = reproduce(seeds=1, budget="tiny", conditions=("sft", "rl_compound"), out=tmp_path,
                      runs_dir=root / "store", progress=False, command="pytest smoke")
    assert f"resuming: 2 of 2 runs already finished in {store.root}" in capsys.readouterr().err
    assert {r["key"]: r["finished"] for r in store.records()} == before  # nothing re-ran
    assert again["runs"] == doc["runs"] and again["verdicts"] == doc["verdicts"]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        reproduce(profile="huge", out=tmp_path)
    with pytest.raises(ValueError, match="unknown budget"):
        reproduce(budget="enormous", out=tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        reproduce(seeds=0, out=tmp_path)
    with pytest.raises(ValueError, match="unknown condition"):
        reproduce(conditions=("sft", "rl_magic"), out=tmp_path)
    with pytest.raises(ValueError, match="rl_episodes"):
        reproduce(overrides={"rl_episodes": 0}, out=tmp_path)
    with pytest.raises(ValueError, match="unknown budget field"):
        reproduce(overrides={"ppo_steps": 10}, out=tmp_path)
    with pytest.raises(ValueError, match="unknown family"):
        reproduce(cell={"family": "nope"}, out=tmp_path)
    with pytest.raises(ValueError, match="unknown torch device"):
        reproduce(device="gpu9", out=tmp_path, runs_dir=tmp_path / "store")
    if not torch.cuda.is_available():  # refused before any run starts, not inside each worker
        with pytest.raises(ValueError, match="no CUDA GPU"):
            reproduce(budget="tiny", device="cuda", out=tmp_path, runs_dir=tmp_path / "store")
    assert not (tmp_path / "store" / "records").exists() or not any((tmp_path / "store" / "records").iterdir())


def test_cli_options():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["reproduce", "--profile", "paper", "--seeds", "4", "--budget", "tiny", "--out", "x"])
    assert (args.profile, args.seeds, args.budget, args.out) == ("paper", 4, "tiny", "x")
    assert callable(args.func)
    own = argparse.ArgumentParser()
    add_arguments(own)
    args = own.parse_args(["--backend", "ray", "--address", "auto", "--gpus-per-trial", "0.5", "--device", "cuda",
                           "--family", "routing_skill", "--exposure", "0.05", "--trace-format", "tagged"])
    assert (args.backend, args.address, args.gpus_per_trial, args.device) == ("ray", "auto", 0.5, "cuda")


@pytest.mark.slow
def test_every_arm_and_two_workers(tmp_path):
    doc = reproduce(seeds=2, budget="tiny", out=tmp_path, runs_dir=tmp_path, workers=2, progress=False)
    assert [(r["seed"], r["condition"]) for r in doc["runs"]] == [(s, c) for s in (0, 1) for c in CONDITIONS]
    assert {v["claim"] for v in doc["verdicts"]} == {"claim1", "claim2", "claim3"}
