"""The headroom sweep: grid, run specs, the whole-grid table and heatmap, the command line."""

from __future__ import annotations

import argparse
import json

import pytest

from composition_gym.benchmarks.experiment import protocol
from composition_gym.benchmarks.experiment.claims import CONDITIONS
from composition_gym.benchmarks.experiment.protocol import RL_FN, SFT_FN
from composition_gym.benchmarks.experiment.report import sweep_heatmap, sweep_markdown
from composition_gym.benchmarks.experiment.sweep import Grid, add_arguments, cell_table, run_sweep, sweep_specs

TINY = protocol.BUDGETS["small"]["tiny"]


def test_grid_cells_cover_every_axis_value_once():
    grid = Grid(sft_episodes=(100, 200), exposures=(0.0, 0.1))
    cells = grid.cells()
    compose = [c for c in cells if c["family"] == "compose"]
    rs = [c for c in cells if c["family"] == "routing_skill"]
    assert len(compose) == 2 * 2 and len(rs) == 2 * 2 * 2  # exposure only where the family has the knob
    assert {c["exposure"] for c in compose} == {None} and {c["exposure"] for c in rs} == {0.0, 0.1}
    assert len({json.dumps(c, sort_keys=True) for c in cells}) == len(cells)


@pytest.mark.parametrize("kwargs, match", [
    ({"families": ("nope",)}, "unknown family"), ({"arms": ("rl_magic",)}, "unknown arm"),
    ({"trace_formats": ("answer",)}, "unknown trace format"), ({"sft_episodes": (0,)}, "sft_episodes"),
    ({"exposures": (1.5,)}, "exposures"), ({"d_models": (4,)}, "d_models"), ({"arms": ()}, "empty"),
])
def test_bad_grids_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Grid(**kwargs).validate()


def test_specs_pair_every_arm_with_its_seed_s_sft_run():
    cells = sweep_specs(Grid(sft_episodes=(100,), exposures=(0.0,), trace_formats=("values",)), range(3), TINY)
    assert len(cells) == 2
    for cell, specs in cells:
        sft = {s.key: s for s in specs if s.fn == SFT_FN}
        rl = [s for s in specs if s.fn == RL_FN]
        assert len(sft) == 3
        arms = 4 if cell["family"] == "compose" else 3  # routing_skill has no "beyond" set
        assert len(rl) == 3 * arms
        for spec in rl:
            (dep,) = spec.deps
            assert sft[dep].config == spec.config["sft"] and sft[dep].config["seed"] == int(spec.name[-len(
                spec.config["condition"]) - 2])
    keys = [s.key for _, specs in cells for s in specs]
    assert len(keys) == len(set(keys))


def _records(cell, gains_by_seed):
    """Store-like records of one cell: SFT at 30 % greedy / 60 % pass@k on its OOD set, arms above it."""
    fam_set = "ood_unseen" if cell["family"] == "compose" else "ood_rs"
    recs = []
    for seed, gains in enumerate(gains_by_seed):
        for cond, gain in {"sft": 0.0, **gains}.items():
            m = {"greedy": 0.3 + gain, "sampled": 0.3, "pass_at_k": 0.6, "all_steps": None}
            recs.append({"result": {"seed": seed, "condition": cond, "metrics": {fam_set: m, "id": m}}})
    return recs


def test_cell_table_reports_headroom_and_gains_with_verdicts():
    cell = {"family": "routing_skill", "sft_episodes": 100, "exposure": 0.05, "trace_format": "tagged", "d_model": None}
    row = cell_table(cell, _records(cell, [{"rl_compound": g, "rl_atomic": 0.0} for g in (0.2, 0.22, 0.25)]),
                     episodes=200, arms=("sft", "rl_atomic", "rl_compound"))
    entry = row["sets"]["ood_rs"]
    assert entry["sft_headroom"]["mean"] == pytest.approx(0.3) and entry["sft_greedy"]["mean"] == pytest.approx(0.3)
    assert entry["gains"]["rl_compound"]["verdict"] == "supported"
    assert entry["gains"]["rl_atomic"]["verdict"] == "inconclusive"
    assert row["tag"] == "routing_skill-tagged-sft100-exp0.05" and set(row["sets"]) == {"ood_rs", "ood_depth"}


def test_whole_grid_renders_as_markdown_and_heatmap(tmp_path):
    cells = Grid(sft_episodes=(100, 200), exposures=(0.0,), trace_formats=("values",)).cells()
    table = [cell_table(c, _records(c, [{"rl_compound": 0.1 * i}] * 2), 200, ("sft", "rl_compound"))
             for i, c in enumerate(cells)]
    doc = {"meta": {"date": "2026-01-01", "commit": "abc", "command": "compgym sweep", "profile": "small",
                    "version": "v1", "budget_name": "tiny", "budget": {"samples": 8, "eval_episodes": 200},
                    "grid": {"arms": ["sft", "rl_compound"]}, "seeds": [0, 1], "runs": 8,
                    "run_seconds_total": 36.0, "wall_time_s": 60.0, "backend": "local", "workers": 2},
            "table": table}
    text = sweep_markdown(doc)
    # Every cell appears in the table of each OOD set of its family (L=4: both families), none left out.
    assert text.count("| compose-values-sft") == 4 and text.count("| routing_skill-values-sft") == 4
    assert "## OOD unseen (L=3)" in text and "## OOD routing x skill (L=3)" in text and "rl_compound gain" in text
    assert "30.0 ± n/a" not in text  # two seeds: every entry has an SE
    png = sweep_heatmap(doc, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_options_build_the_grid():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--families", "routing_skill", "--sft-budgets", "500", "2000", "--exposures", "0",
                              "0.02", "--trace-formats", "tagged", "--arms", "sft", "rl_compound",
                              "--backend", "ray", "--cpus-per-trial", "2", "--sweep-dir", "d"])
    assert (args.families, args.sft_budgets, args.exposures) == (["routing_skill"], [500, 2000], [0.0, 0.02])
    assert (args.backend, args.cpus_per_trial, args.sweep_dir, args.out) == ("ray", 2.0, "d", None)
    assert list(Grid().arms) == list(CONDITIONS)


@pytest.mark.slow
def test_tiny_sweep_resumed_after_losing_a_run_gives_the_same_table(tmp_path):
    grid = Grid(families=("compose",), sft_episodes=(48,), trace_formats=("values", "tagged"),
                arms=("sft", "rl_compound"))
    doc = run_sweep(grid, seeds=2, budget="tiny", sweep_dir=tmp_path / "s", progress=False)
    assert doc["meta"]["runs"] == 2 * 2 * 2 and len(doc["table"]) == 2
    lost = sorted((tmp_path / "s" / "records").glob("*.json"))[0]
    lost.unlink()  # as if the sweep had been killed before this run finished
    again = run_sweep(grid, seeds=2, budget="tiny", sweep_dir=tmp_path / "s", progress=False)
    assert again["table"] == doc["table"]

    def learning(runs):  # everything but the speed numbers, which differ between two executions
        return {k: {f: v for f, v in r.items() if f != "timing"} for k, r in runs.items()}

    assert learning(again["runs"]) == learning(doc["runs"])
    assert (tmp_path / "s" / "sweep.md").exists() and (tmp_path / "s" / "sweep.png").exists()


def test_variant_ids_carry_the_cell_s_env_kwargs():
    import gymnasium as gym

    from composition_gym.registration import env_id, resolve_env_id, variant_id

    base = env_id("RoutingSkill-ID-L1to3", "small", "v1")
    tagged = variant_id(base, trace_format="tagged", exposure=0.05)
    assert tagged == variant_id(base, exposure=0.05, trace_format="tagged") != variant_id(base, trace_format="tagged")
    assert resolve_env_id(tagged) == tagged and variant_id(base) == base
    env = gym.make(tagged)
    assert env.unwrapped.trace_format == "tagged" and env.unwrapped.support.exposure == 0.05
    assert gym.spec(tagged).kwargs["split"] == gym.spec(base).kwargs["split"]
    env.close()


def test_grpo_settings_from_the_command_line_merge_into_the_budget():
    from composition_gym.benchmarks.experiment.sweep import engine_options

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    opts = engine_options(parser.parse_args(["--grpo", "lr=5e-5", "advantage=rloo", "drop_zero_variance=false",
                                             "--rl-episodes", "1024"]))
    assert opts["overrides"] == {"rl_episodes": 1024,
                                 "grpo": {"lr": 5e-5, "advantage": "rloo", "drop_zero_variance": False}}
    budget = protocol.resolve_budget("small", "default", opts["overrides"])
    preset = protocol.BUDGETS["small"]["default"].grpo
    # merged key by key: the preset's group size stays, the learning rate is replaced
    assert budget.grpo == {**preset, "lr": 5e-5, "advantage": "rloo", "drop_zero_variance": False}


@pytest.mark.parametrize("items,match", [
    (["lr"], "KEY=VALUE"),
    (["bogus=1"], "unknown GRPOConfig field 'bogus'"),
    (["lr=fast"], "expected float"),
    (["drop_zero_variance=maybe"], "expected bool"),
])
def test_bad_grpo_settings_are_one_line_errors(items, match):
    from composition_gym.benchmarks.experiment.sweep import parse_grpo_settings

    with pytest.raises(ValueError, match=match):
        parse_grpo_settings(items)


@pytest.mark.parametrize("grpo,match", [({"lr": -1.0}, "lr must be > 0"), ({"iterations": 3}, "cannot set iterations"),
                                        ({"foo": 1}, "unknown field")])
def test_impossible_trainer_settings_fail_before_any_run(grpo, match):
    with pytest.raises(ValueError, match=match):
        protocol.resolve_budget("small", "default", {"grpo": grpo})
