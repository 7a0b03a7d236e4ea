"""The sweep: the grid derived from the cell, run specs, the whole-grid table and heatmap, the command line."""

from __future__ import annotations

import dataclasses

import pytest

from composition_gym.benchmarks.experiment import protocol
from composition_gym.benchmarks.experiment.cells import Cell, Grid, cell_for_grid
from composition_gym.benchmarks.experiment.claims import CONDITIONS
from composition_gym.benchmarks.experiment.protocol import RL_FN, SFT_FN
from composition_gym.benchmarks.experiment.report import regime_figure, sweep_heatmap, sweep_markdown
from composition_gym.benchmarks.experiment.sweep import SweepConfig, cell_table, run_sweep
from composition_gym.cli import UsageError, parse_config

TINY = protocol.PRESETS["small"]["tiny"]


def test_the_grid_has_one_axis_per_cell_field():
    assert [f.name for f in dataclasses.fields(Grid)] == [f.name for f in dataclasses.fields(Cell)]
    assert all(getattr(Grid(), f.name) == () for f in dataclasses.fields(Grid))


def test_grid_cells_cover_every_applicable_combination_once():
    grid = Grid(family=("compose", "routing_skill"), sft_episodes=(100, 200), exposure=(0.0, 0.1),
                rl_target=("L3", "pairs"))
    cells = grid.cells(Cell())
    compose = [c for c in cells if c.family == "compose"]
    rs = [c for c in cells if c.family == "routing_skill"]
    # exposure only where the family has the knob; rl_target "pairs" only where there are pairs
    assert len(compose) == 2 and len(rs) == 2 * 2 * 2
    assert {c.exposure for c in compose} == {None} and {c.exposure for c in rs} == {0.0, 0.1}
    assert {c.rl_target for c in compose} == {"L3"}
    assert len(set(cells)) == len(cells)
    assert grid.varying() == ["family", "sft_episodes", "exposure", "rl_target"]
    assert cell_for_grid(**{**dataclasses.asdict(Cell()), "rl_target": "pairs"}) is None


@pytest.mark.parametrize("kwargs, match", [
    ({"family": "nope"}, "family must be one of"), ({"trace_format": "answer"}, "trace_format must be one of"),
    ({"sft_episodes": 0}, "sft_episodes must be >= 1"), ({"family": "routing_skill", "exposure": 1.5}, "<= 1"),
    ({"d_model": 4}, "d_model must be >= 8"), ({"process_reward": -0.1}, "process_reward must be >= 0"),
])
def test_bad_cells_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Cell(**kwargs)
    with pytest.raises(ValueError, match=match):
        Grid(**{k: (v,) for k, v in kwargs.items()}).cells(Cell(family=kwargs.get("family", "compose")
                                                               if kwargs.get("family") != "nope" else "compose"))


def test_specs_pair_every_arm_with_its_seed_s_sft_run():
    grid = Grid(family=("compose", "routing_skill"), sft_episodes=(100,))
    for cell in grid.cells(TINY.cell):
        specs = protocol.cell_specs(cell, range(3), TINY.budget, list(CONDITIONS))
        sft = {s.key: s for s in specs if s.fn == SFT_FN}
        rl = [s for s in specs if s.fn == RL_FN]
        assert len(sft) == 3
        arms = 5 if cell.family == "compose" else 3  # routing_skill has no L=3 beyond set (nor its control)
        assert len(rl) == 3 * arms
        for spec in rl:
            (dep,) = spec.deps
            assert sft[dep].config == spec.config["sft"]
        keys = [s.key for s in specs]
        assert len(keys) == len(set(keys))


def test_rl_fields_leave_the_sft_run_shared_and_neutral_values_leave_keys_alone():
    a, b = Cell(), Cell(process_reward=0.5, rl_target="L4", rl_episodes=1024)
    specs_a = protocol.cell_specs(a, [0], TINY.budget, ["sft", "rl_disjoint"])
    specs_b = protocol.cell_specs(b, [0], TINY.budget, ["sft", "rl_disjoint"])
    assert specs_a[0].key == specs_b[0].key and specs_a[1].key != specs_b[1].key
    # An axis at its neutral value (the behaviour before it existed) is not in the run's config.
    assert "prompt_format" not in specs_a[0].config and "rl_target" not in specs_a[1].config
    c = protocol.cell_specs(Cell(prompt_format="pipeline"), [0], TINY.budget, ["sft"])[0]
    assert c.config["prompt_format"] == "pipeline" and c.key != specs_a[0].key


def test_the_matched_control_replays_the_beyond_arm_s_problems():
    cell = Cell(rl_target="L4", rl_episodes=64)
    specs = {s.config.get("condition", "sft"): s for s in protocol.cell_specs(cell, [0], TINY.budget, list(CONDITIONS))}
    grpo = specs["rl_disjoint"].config["trainer"]
    matched = specs["sft_matched"].config["trainer"]
    assert grpo["iterations"] * grpo["problems_per_iter"] == matched["episodes"] == 64 // grpo["group_size"]
    assert protocol.arm_id(specs["sft_matched"].config) == protocol.arm_id(
        {**specs["rl_disjoint"].config, "process_reward": 0.0})
    with pytest.raises(ValueError, match="multiple of problems_per_iter"):
        protocol.cell_specs(Cell(rl_episodes=33), [0], TINY.budget, ["sft", "rl_disjoint"])


def _records(cell: Cell, gains_by_seed):
    """Store-like records of one cell: SFT at 30 % greedy / 60 % pass@k on its OOD set, arms above it."""
    fam_set = "ood_unseen" if cell.family == "compose" else "ood_rs"
    recs = []
    for seed, gains in enumerate(gains_by_seed):
        for cond, gain in {"sft": 0.0, **gains}.items():
            m = {"greedy": 0.3 + gain, "sampled": 0.3, "pass_at_k": 0.6, "all_steps": None,
                 "first_fail": {"1": 0.5, "none": 0.5}}
            recs.append({"seconds": 30.0,
                         "result": {"seed": seed, "condition": cond, "metrics": {fam_set: m, "id": m}}})
    return recs


def test_cell_table_reports_reach_headroom_and_gains_with_verdicts():
    cell = Cell(family="routing_skill", sft_episodes=100, exposure=0.05, trace_format="tagged")
    row = cell_table(cell, _records(cell, [{"rl_compound": g, "rl_atomic": 0.0} for g in (0.2, 0.22, 0.25)]),
                     episodes=200, arms=("sft", "rl_atomic", "rl_compound"))
    entry = row["sets"]["ood_rs"]
    assert entry["sft_headroom"]["mean"] == pytest.approx(0.3) and entry["sft_greedy"]["mean"] == pytest.approx(0.3)
    assert entry["sft_pass_at_k"]["mean"] == pytest.approx(0.6)
    assert entry["first_fail"]["sft"] == {"1": 0.5, "none": 0.5}
    assert entry["gains"]["rl_compound"]["verdict"] == "supported"
    assert entry["gains"]["rl_atomic"]["verdict"] == "inconclusive"
    assert entry["gains"]["rl_compound:sampled"]["mean"] == pytest.approx(0.0)
    assert row["tag"] == "routing_skill-tagged-sft100-exp0.05" and row["seconds"] == 30.0 * 9
    assert set(row["sets"]) == {"ood_rs", "ood_rs_l4", "ood_depth"}


def test_whole_grid_renders_as_markdown_and_heatmap(tmp_path):
    grid = Grid(family=("compose", "routing_skill"), sft_episodes=(100, 200))
    cells = grid.cells(Cell())
    table = [cell_table(c, _records(c, [{"rl_compound": 0.1 * i}] * 2), 200, ("sft", "rl_compound"))
             for i, c in enumerate(cells)]
    doc = {"meta": {"date": "2026-01-01", "commit": "abc", "command": "compgym sweep", "profile": "small",
                    "version": "v1", "budget_name": "tiny", "budget": {"samples": 8, "eval_episodes": 200},
                    "grid": dataclasses.asdict(grid), "axes": grid.varying(), "arms": ["sft", "rl_compound"],
                    "base_cell": dataclasses.asdict(Cell()), "seeds": [0, 1], "runs": 8,
                    "run_seconds_total": 36.0, "wall_time_s": 60.0, "backend": "local", "workers": 2},
            "table": table}
    text = sweep_markdown(doc)
    # Every cell appears in the table of each OOD set of its family (L=4: both families), none left out;
    # rows are named by the axes that vary.
    assert text.count("| family=compose, sft_episodes=") == 2 * 4  # unseen L=3, 4, 5 and all-split L=4
    assert text.count("| family=routing_skill, sft_") == 2 * 3  # held-out pairs at L=3 and 4, all-split L=4
    assert "## OOD unseen (L=3)" in text and "## OOD routing x skill (L=3)" in text and "rl_compound greedy" in text
    assert "30.0 ± n/a" not in text  # two seeds: every entry has an SE
    for block in (b for b in text.split("\n\n") if b.startswith("|")):
        rows = block.splitlines()
        assert {row.count("|") for row in rows} == {rows[0].count("|")}
    png = sweep_heatmap(doc, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert regime_figure(doc, tmp_path / "r.png") is None  # no cell has a beyond arm on unseen L=4
    for row in doc["table"]:
        if "ood_unseen" in row["sets"]:
            row["sets"]["ood_unseen_l4"] = row["sets"]["ood_unseen"] | {
                "gains": {"rl_disjoint": {"mean": 0.3, "se": 0.02, "n": 2}}}
    assert regime_figure(doc, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_the_command_line_is_derived_from_the_cell_and_the_budget():
    cfg = parse_config(SweepConfig, ["--family", "routing_skill", "--sft-episodes", "500", "2000", "--exposure", "0",
                                     "0.02", "--trace-format", "tagged", "--arms", "sft", "rl_compound",
                                     "--backend", "ray", "--ray.cpus-per-trial", "2", "--sweep-dir", "d",
                                     "--grpo.lr", "5e-5", "--grpo.advantage", "rloo"], "compgym sweep")
    grid = cfg.grid()
    assert (grid.family, grid.sft_episodes, grid.exposure) == (("routing_skill",), (500, 2000), (0.0, 0.02))
    assert (cfg.backend, cfg.ray.cpus_per_trial, cfg.sweep_dir, cfg.out) == ("ray", 2.0, "d", None)
    # merged field by field: the preset's group size stays, the learning rate and advantage change
    preset = protocol.PRESETS["small"]["default"].budget.grpo
    assert cfg.budget_settings().grpo == preset.replace(lr=5e-5, advantage="rloo")
    # the documented grid is the default
    default = SweepConfig.from_presets()
    assert default.grid().family == ("compose", "routing_skill") and default.grid().prompt_format == ()


@pytest.mark.parametrize("argv,match", [
    (["--grpo.lr", "fast"], "--grpo.lr"),
    (["--grpo.bogus", "1"], "Unrecognized options: --grpo.bogus"),
    (["--grpo.lr", "-1"], "lr must be > 0"),
    (["--grpo.iterations", "3"], "iterations is not settable"),
    (["--grpo.process-reward", "0.5"], "the process reward is the cell's"),
    (["--rl-target", "L9"], "invalid choice 'L9'"),
])
def test_bad_settings_are_one_line_errors_before_any_run(argv, match):
    with pytest.raises(UsageError, match=match) as err:
        parse_config(SweepConfig, argv, "compgym sweep")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_tiny_sweep_resumed_after_losing_a_run_gives_the_same_table(tmp_path):
    cfg = SweepConfig.from_presets("small", "tiny").replace(
        family=("compose",), sft_episodes=(48,), exposure=(), trace_format=("values", "tagged"),
        arms=("sft", "rl_compound"), seeds=2, sweep_dir=str(tmp_path / "s"), progress=False, workers=1)
    doc = run_sweep(cfg)
    assert doc["meta"]["runs"] == 2 * 2 * 2 and len(doc["table"]) == 2
    lost = sorted((tmp_path / "s" / "records").glob("*.json"))[0]
    lost.unlink()  # as if the sweep had been killed before this run finished
    again = run_sweep(cfg)
    assert again["table"] == [{**row, "seconds": again["table"][i]["seconds"]} for i, row in enumerate(doc["table"])]

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


def test_a_replay_cell_gives_every_group_relative_arm_and_the_matched_control_the_same_pool():
    cell = Cell(rl_target="L4", replay=1.0, rl_episodes=32)
    specs = {s.config.get("condition", "sft"): s for s in protocol.cell_specs(cell, [0], TINY.budget, list(CONDITIONS))}
    assert "ppo_compound" not in specs and not protocol.applies("ppo_compound", cell)  # SB3 cannot replay
    for arm in ("rl_atomic", "rl_compound", "rl_disjoint", "sft_matched"):
        assert specs[arm].config["replay_episodes"] == TINY.budget.grpo.replay_episodes
    assert specs["rl_disjoint"].config["trainer"]["replay_coef"] == 1.0
    assert "replay" not in specs["sft"].config  # an RL-stage knob: the SFT run is shared with replay-free cells
    with pytest.raises(ValueError, match="replay_coef is not settable"):
        TINY.budget.replace(grpo=TINY.budget.grpo.replace(replay_coef=1.0))
