"""The reproduction on the real protocol at a tiny budget: plumbing, not science."""

from __future__ import annotations

import json

import pytest
import torch

from composition_gym.benchmarks.engine.store import RunStore
from composition_gym.benchmarks.experiment.claims import CONDITIONS, FAMILIES, MEASURES
from composition_gym.benchmarks.experiment.protocol import PRESETS
from composition_gym.benchmarks.experiment.reproduce import ReproduceConfig, reproduce
from composition_gym.cli import parse_config


def tiny(**changes) -> ReproduceConfig:
    """The tiny preset with ``changes``, one worker, no progress display."""
    return ReproduceConfig.from_presets("small", "tiny").replace(**{"workers": 1, "progress": False, **changes})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    doc = reproduce(tiny(seeds=1, conditions=("sft", "rl_compound"), out=str(root / "results"),
                         runs_dir=str(root / "store")), command="pytest smoke")
    return doc, root


def test_runs_carry_every_measure_on_every_eval_set(tiny_run):
    doc, _ = tiny_run
    assert [(r["seed"], r["condition"]) for r in doc["runs"]] == [(0, "sft"), (0, "rl_compound")]
    for run in doc["runs"]:
        assert set(run["metrics"]) == set(FAMILIES["compose"].evals)
        for m in run["metrics"].values():
            assert set(m) == {*MEASURES, "first_fail"} and 0.0 <= m["greedy"] <= m["pass_at_k"] <= 1.0
            assert abs(sum(m["first_fail"].values()) - 1.0) < 1e-9
        assert set(run["leakage"]) == set(FAMILIES["compose"].evals)
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
    assert saved["meta"]["budget"]["rl_episodes"] == PRESETS["small"]["tiny"].cell.rl_episodes
    text = (root / "results" / "reproduce.md").read_text()
    for title in ("Claim 1", "Claim 2", "Claim 3", "RL beyond the SFT support", "Every measure", "Verdicts",
                  "Leakage check", "Module diagnostics per condition"):
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
    again = reproduce(tiny(seeds=1, conditions=("sft", "rl_compound"), out=str(tmp_path),
                           runs_dir=str(root / "store")), command="pytest smoke")
    assert f"resuming: 2 of 2 runs already finished in {store.root}" in capsys.readouterr().err
    assert {r["key"]: r["finished"] for r in store.records()} == before  # nothing re-ran
    assert again["runs"] == doc["runs"] and again["verdicts"] == doc["verdicts"]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        ReproduceConfig.from_presets("huge")
    with pytest.raises(ValueError, match="unknown budget"):
        ReproduceConfig.from_presets("small", "enormous")
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        tiny(seeds=0)
    with pytest.raises(ValueError, match="conditions has an element 'rl_magic'"):
        tiny(conditions=("sft", "rl_magic"))
    with pytest.raises(ValueError, match="rl_episodes must be >= 1"):
        tiny(rl_episodes=0)
    with pytest.raises(TypeError, match="unknown ReproduceConfig setting"):
        tiny(ppo_steps=10)
    with pytest.raises(ValueError, match="family must be one of"):
        tiny(family="nope")
    with pytest.raises(ValueError, match="unknown torch device"):
        reproduce(tiny(device="gpu9", out=str(tmp_path), runs_dir=str(tmp_path / "store")))
    if not torch.cuda.is_available():  # refused before any run starts, not inside each worker
        with pytest.raises(ValueError, match="no CUDA GPU"):
            reproduce(tiny(device="cuda", out=str(tmp_path), runs_dir=str(tmp_path / "store")))
    assert not (tmp_path / "store" / "records").exists() or not any((tmp_path / "store" / "records").iterdir())


def test_a_setting_that_does_not_apply_to_the_family_is_refused_not_dropped():
    """The bug of the old command line: ``--family compose --exposure 0.05`` was accepted, the value
    dropped when the ids were built, yet it changed the cell's tag and run keys."""
    with pytest.raises(ValueError, match="exposure applies to the families"):
        tiny(family="compose", exposure=0.05)
    with pytest.raises(ValueError, match="rl_target 'pairs' does not apply to family 'compose'"):
        tiny(rl_target="pairs")
    cfg = tiny(family="routing_skill", exposure=0.05)
    assert cfg.cell().exposure == 0.05 and tiny(family="routing_skill").cell().exposure == 0.0


def test_the_command_line_is_derived_from_the_settings():
    cfg = parse_config(ReproduceConfig, ["--profile", "paper", "--seeds", "4", "--budget", "tiny", "--out", "x",
                                         "--backend", "ray", "--ray.address", "auto", "--ray.gpus-per-trial", "0.5",
                                         "--family", "routing_skill", "--exposure", "0.05", "--trace-format", "tagged",
                                         "--prompt-format", "pipeline", "--grpo.lr", "5e-5", "--rl-episodes", "64"],
                       "compgym reproduce")
    assert (cfg.profile, cfg.seeds, cfg.budget, cfg.out) == ("paper", 4, "tiny", "x")
    assert (cfg.backend, cfg.ray.address, cfg.ray.gpus_per_trial) == ("ray", "auto", 0.5)
    cell = cfg.cell()
    assert (cell.family, cell.exposure, cell.trace_format, cell.prompt_format) == ("routing_skill", 0.05, "tagged",
                                                                                   "pipeline")
    # The preset's settings stay unless an option names them.
    tiny_budget = PRESETS["paper"]["tiny"].budget
    assert cfg.budget_settings() == tiny_budget.replace(grpo=tiny_budget.grpo.replace(lr=5e-5))
    assert cell.rl_episodes == 64 and cell.sft_episodes == PRESETS["paper"]["tiny"].cell.sft_episodes


@pytest.mark.slow
def test_every_arm_and_two_workers(tmp_path):
    doc = reproduce(tiny(seeds=2, out=str(tmp_path), runs_dir=str(tmp_path), workers=2))
    assert [(r["seed"], r["condition"]) for r in doc["runs"]] == [(s, c) for s in (0, 1) for c in CONDITIONS]
    assert {v["claim"] for v in doc["verdicts"]} == {"claim1", "claim2", "claim3", "control"}


def test_beyond_by_pairs_with_a_listed_prompt_runs_leak_free(tmp_path):
    """RL on the exposable half of the held-out pairs, evaluated on the other half, with the
    pipeline prompt: every condition runs, and no evaluated held-out problem was trainable."""
    doc = reproduce(tiny(seeds=1, family="routing_skill", rl_target="pairs", prompt_format="pipeline",
                         conditions=("sft", "rl_disjoint", "sft_matched"), out=str(tmp_path), runs_dir=str(tmp_path)))
    assert {r["condition"] for r in doc["runs"]} == {"sft", "rl_disjoint", "sft_matched"}
    for run in doc["runs"]:
        assert {"ood_rs", "ood_rs_l4"} <= set(run["metrics"])
        assert run["leakage"]["ood_rs"]["sft"] == 0 and not any(run["leakage"]["ood_rs"].values())
        assert not any(run["leakage"]["ood_rs_l4"].values())
