"""Statistics, verdicts and rendering of the reproduction, on hand-made run records (no training)."""

from __future__ import annotations

import json
import math

import pytest

from composition_gym.benchmarks.experiment import claims, statistics
from composition_gym.benchmarks.experiment.report import figure, markdown


def _runs(table: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Run records with greedy success only (the other measures not reported)."""
    return [{"seed": seed, "condition": cond,
             "metrics": {e: {"greedy": v, "sampled": None, "pass_at_k": None, "all_steps": None} for e, v in succ.items()}}
            for cond, per_seed in table.items() for seed, succ in enumerate(per_seed)]


ENVS = ("id", "rl_set", "ood_unseen", "ood_depth", "atomic")


def _succ(*values: float) -> dict[str, float]:
    return dict(zip(ENVS, values))


RUNS = _runs({
    "sft": [_succ(0.8, 0.5, 0.2, 0.05, 0.9), _succ(0.7, 0.5, 0.3, 0.04, 0.9), _succ(0.9, 0.6, 0.2, 0.06, 0.8)],
    "rl_atomic": [_succ(0.8, 0.5, 0.2, 0.10, 1.0), _succ(0.7, 0.5, 0.3, 0.12, 1.0), _succ(0.9, 0.6, 0.2, 0.15, 1.0)],
    "rl_compound": [_succ(0.9, 0.7, 0.6, 0.40, 0.9), _succ(0.8, 0.7, 0.7, 0.45, 0.9), _succ(0.95, 0.8, 0.6, 0.42, 0.8)],
    "rl_disjoint": [_succ(0.9, 0.7, 0.6, 0.40, 0.9), _succ(0.8, 0.7, 0.7, 0.35, 0.9), _succ(0.95, 0.8, 0.5, 0.45, 0.8)],
})


def test_mean_se_matches_hand_computation():
    stat = statistics.mean_se([0.1, 0.2, 0.3])
    assert stat["n"] == 3 and stat["mean"] == pytest.approx(0.2)
    assert stat["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert statistics.mean_se([0.5])["se"] is None
    with pytest.raises(ValueError, match="at least one"):
        statistics.mean_se([])


def test_duplicate_run_is_an_error():
    with pytest.raises(ValueError, match="two runs"):
        statistics.summarize(RUNS + RUNS[:1])


def test_verdicts_follow_paired_differences():
    by_text = {(v["claim"], v["metric"], v["better"], v["worse"]): v for v in statistics.verdicts(RUNS)}
    # Claim 1: gain on unseen (0.4, 0.4, 0.4) minus gain on ID (0.1, 0.1, 0.05) > 0 with small spread.
    gain = by_text[("claim1", "gain:ood_unseen-id", "rl_compound", "sft")]
    assert gain["diff"]["mean"] == pytest.approx((0.3 + 0.3 + 0.35) / 3)
    assert gain["verdict"] == "supported"
    # Claim 2: compound beats atomic at L=4 on every seed.
    assert by_text[("claim2", "ood_depth", "rl_compound", "rl_atomic")]["verdict"] == "supported"
    # Claim 3: disjoint vs overlapping differ by (0, -0.1, +0.03) at L=4: no clear sign.
    assert by_text[("claim3", "ood_depth", "rl_disjoint", "rl_compound")]["verdict"] == "inconclusive"


def test_verdict_can_contradict():
    flipped = [dict(r, condition={"rl_atomic": "rl_compound", "rl_compound": "rl_atomic"}.get(r["condition"],
                                                                                             r["condition"]))
               for r in RUNS]
    v = next(v for v in statistics.verdicts(flipped) if v["metric"] == "ood_depth" and v["worse"] == "rl_atomic")
    assert v["verdict"] == "contradicted"


def test_gains_are_paired_by_seed():
    g = statistics.gains(RUNS)
    assert g["ood_depth"]["mean"] == pytest.approx((0.35 + 0.41 + 0.36) / 3)


def test_premise_checks_small_profile_are_exhaustive():
    from composition_gym.benchmarks.experiment.cells import Cell
    from composition_gym.benchmarks.experiment.checks import premise_checks

    checks = premise_checks(Cell(), "small")
    assert checks["exhaustive"] and checks["sft_cascades_checked"] > 1000
    assert checks["sft_covers_every_routing_skill_step"]
    assert checks["sft_disjoint_from"] == ["ood_unseen", "ood_unseen_l4", "ood_unseen_l5"]
    assert checks["beyond_share_outside_sft"] == 1.0  # the L=3 RL split shares nothing with SFT
    # The L=4 target: depths 3 and 4 of the RL split, outside the SFT support by hash and by depth.
    assert premise_checks(Cell(rl_target="L4"), "small")["beyond_share_outside_sft"] == 1.0


@pytest.mark.parametrize("exposure", [0.0, 0.05])
def test_premise_checks_routing_skill_family(exposure):
    from composition_gym.benchmarks.experiment.cells import Cell
    from composition_gym.benchmarks.experiment.checks import premise_checks

    checks = premise_checks(Cell(family="routing_skill", exposure=exposure), "small")
    assert checks["sft_covers_every_skill_and_routing"] and checks["sft_disjoint_from"] == ["ood_rs", "ood_rs_l4"]
    # Held-out pairs are absent at exposure 0; exposure > 0 lets their exposable half in.
    assert checks["sft_covers_every_routing_skill_step"] == (exposure > 0)
    assert checks["beyond_share_outside_sft"] is None  # no L=3 beyond set in this family


def test_every_family_names_registered_presets_and_known_eval_keys():
    from composition_gym.registration import env_id

    for fam in claims.FAMILIES.values():
        sets = [fam.sft, *fam.rl.values(), *(p for p, _ in fam.beyond.values()), *(p for p, _ in fam.evals.values())]
        for preset in sets:
            env_id(preset, "small", claims.ENV_VERSION)  # raises on an unknown preset
        assert set(fam.evals) <= set(claims.EVAL_LABELS) and set(fam.exposure) <= set(sets)
        assert set(fam.beyond) <= set(claims.RL_TARGETS)
    for cond in claims.CONDITIONS.values():
        assert (cond.trainer is None) == (cond.rl_set is None)


def test_forgetting_and_leakage_tables():
    runs = _runs({"sft": [_succ(0.8, 0.5, 0.20, 0.05, 0.9)] * 3,
                  "rl_disjoint": [_succ(0.7, 0.5, 0.21, 0.30, 0.9)] * 3})
    for run in runs:
        run["leakage"] = {"ood_depth": {"sft": 0, "arm": 7 if run["condition"] == "rl_disjoint" else 0},
                          "ood_unseen": {"sft": 0, "arm": 0}}
    rows = {(r["condition"], r["set"]): r for r in statistics.forgetting(runs, episodes=200)}
    assert rows["rl_disjoint", "id"]["forgets"] and not rows["rl_disjoint", "ood_unseen"]["forgets"]
    assert statistics.leakage_table(runs)["rl_disjoint"]["ood_depth"] == {"sft": 0, "arm": 21}
    text = markdown({"meta": {"date": "d", "commit": "c", "command": "x", "profile": "small", "budget_name": "b",
                              "budget": {"eval_episodes": 200}, "seeds": [0, 1, 2], "workers": 1, "wall_time_s": 1.0},
                     "runs": runs, **statistics.statistics(runs, 200)})
    assert "✗" in text and "| SFT + RL compound, beyond the SFT support | L=4, all splits | arm: 21 |" in text


def test_first_failing_step_table_shows_the_unsolved_sets_only():
    runs = _runs({"sft": [_succ(0.8, 0.5, 0.20, 0.05, 0.9)] * 2, "rl_disjoint": [_succ(0.8, 0.5, 0.2, 0.3, 0.9)] * 2})
    for run, step1 in zip(runs, (0.6, 0.4, 0.1, 0.1)):
        run["metrics"]["ood_depth"]["first_fail"] = {"1": step1, "2": 0.9 - step1, "none": 0.1}
        run["metrics"]["id"]["first_fail"] = {"3": 0.05, "none": 0.95}  # solved: not shown
    ff = statistics.statistics(runs, 200)["first_fail"]
    assert ff["ood_depth"]["sft"]["1"] == pytest.approx(0.5)
    assert ff["ood_depth"]["rl_disjoint"]["2"] == pytest.approx(0.8)
    text = markdown({"meta": {"date": "d", "commit": "c", "command": "x", "profile": "small", "budget_name": "b",
                              "budget": {"eval_episodes": 200}, "seeds": [0, 1], "workers": 1, "wall_time_s": 1.0},
                     "runs": runs, **statistics.statistics(runs, 200)})
    section = text.split("## Which step fails first")[1].split("##")[0]
    assert "| SFT | 10.0 | 50.0 | 40.0 |" in section and "| step 1 | step 2 |" in section
    assert "ID (SFT set)" not in section


def _v2(cond: str, seed: int, greedy: float, pass_k: float) -> dict:
    m = {"greedy": greedy, "sampled": greedy, "pass_at_k": pass_k, "all_steps": None}
    return {"seed": seed, "condition": cond, "metrics": {"ood_rs": m, "id": dict(m, greedy=0.9)}}


def test_measures_of_v2_records_and_pass_at_k_verdicts():
    runs = [_v2("sft", s, 0.30, 0.60) for s in range(3)] + \
           [_v2("rl_compound", s, g, p) for s, (g, p) in enumerate([(0.52, 0.61), (0.55, 0.60), (0.50, 0.62)])]
    assert statistics.run_scores(runs[0], "pass_at_k") == {"ood_rs": 0.60, "id": 0.60}
    assert statistics.run_scores(runs[0], "all_steps") == {}  # not reported by the env: left out
    assert statistics.run_scores(RUNS[0], "sampled") == {}  # not reported: left out
    with pytest.raises(ValueError, match="unknown measure"):
        statistics.run_scores(runs[0], "best")
    greedy = statistics.paired_difference(runs, "rl_compound", "sft", "ood_rs", episodes=200)
    assert greedy["mean"] == pytest.approx((0.22 + 0.25 + 0.20) / 3) and statistics.verdict_of(greedy) == "supported"
    sharpened = statistics.paired_difference(runs, "rl_compound", "sft", "ood_rs", episodes=200, measure="pass_at_k")
    assert statistics.verdict_of(sharpened) == "inconclusive"  # RL sharpened what SFT could already sample
    stats = statistics.statistics(runs, 200)
    rs = [v for v in stats["verdicts"] if v["metric"] == "ood_rs"]
    assert rs and rs[0]["verdict"] == "supported" and stats["verdicts_pass_at_k"][0]["measure"] == "pass_at_k"
    # Comparisons on sets (or conditions) these runs lack are left out, not errors.
    assert {v["metric"] for v in stats["verdicts"]} == {"ood_rs", "gain:ood_rs-id"}


def test_markdown_and_figure_render(tmp_path):
    doc = {
        "meta": {"date": "2026-01-01T00:00:00+00:00", "commit": "abc1234", "dirty": False, "command": "compgym reproduce",
                 "profile": "small", "budget_name": "default", "budget": {"eval_episodes": 10, "ppo_steps": 5},
                 "seeds": [0, 1, 2], "workers": 1, "wall_time_s": 60.0},
        "runs": RUNS, "summary": statistics.summarize(RUNS), "gains": statistics.gains(RUNS),
        "verdicts": statistics.verdicts(RUNS), "checks": {"ok": True},
    }
    json.dumps(doc)  # the document is JSON as it stands
    text = markdown(doc)
    assert "| SFT + RL atomic (L=1) | 12.3 ± 1.5 |" in text  # OOD L=4 column first in claim 2
    assert "42.6" in text and "`abc1234`" in text and "compgym reproduce" in text
    png = figure(doc, tmp_path / "f.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_noise_keeps_a_one_episode_difference_inconclusive():
    # +1 episode in 200 on every seed: zero spread over seeds, but far inside evaluation noise.
    runs = _runs({"sft": [_succ(0.8, 0.8, 0.7, 0.020, 0.2)] * 3,
                  "rl_atomic": [_succ(0.8, 0.8, 0.7, 0.025, 0.3)] * 3})
    row = next(v for v in statistics.verdicts(runs, episodes=200) if v["better"] == "rl_atomic")
    assert row["diff"]["mean"] == pytest.approx(0.005) and row["verdict"] == "inconclusive"
    assert row["diff"]["se"] > row["diff"]["se_seeds"] == 0.0
    assert next(v for v in statistics.verdicts(runs) if v["better"] == "rl_atomic")["verdict"] == "supported"
    with pytest.raises(ValueError, match="episodes"):
        statistics.verdicts(runs, episodes=0)


def test_report_main_recomputes_and_renders(tmp_path):
    from composition_gym.benchmarks.experiment.report import main

    doc = {"meta": {"date": "2026-01-01T00:00:00+00:00", "commit": "abc", "command": "c", "profile": "small",
                    "budget_name": "default", "budget": {"eval_episodes": 200}, "seeds": [0, 1, 2], "workers": 2,
                    "wall_time_s": 1.0},
           "runs": RUNS, "summary": {}, "gains": {}, "verdicts": []}
    path = tmp_path / "reproduce.json"
    path.write_text(json.dumps(doc))
    assert main([str(path)]) == 0
    again = json.loads(path.read_text())
    assert again["verdicts"] and set(again["summary"]) == {r["condition"] for r in RUNS}
    assert (tmp_path / "reproduce.md").read_text().startswith("# Reproducing")
    assert (tmp_path / "reproduce.png").read_bytes()[:4] == b"\x89PNG"
