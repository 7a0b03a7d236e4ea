"""Plug-in agents and evaluate(): determinism, per-module tables, the text agent, a custom agent."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import composition_gym

from composition_gym import agents
from composition_gym.agents import Agent, EvalReport, LMAgent, RandomAgent, TextAgent, evaluate
from composition_gym.agents.agent import trace_so_far
from composition_gym.registration import suite as suite_env_ids
from composition_gym import PROFILES, ExpertPolicy, parse_prompt
from composition_gym import tokens as T
from tests.agents.conftest import DEPTH4_ENV, SFT_ENV

OOD_UNSEEN = "composition_gym/OOD-Unseen-L3-v0"


# The README's custom agent, verbatim: a scripted solver in ten lines.
class ScriptedSolver:
    """Reads the program from the prompt, runs it, and writes the reference trace."""

    def act(self, obs, info):
        problem = parse_prompt(obs, alphabet="abcdef")                # the small profile's letters
        trace = T.encode(";".join(problem.values)) + [T.EOS_ID]       # z1;z2;...;answer<eos>
        return trace[len(trace_so_far(obs))]                          # next token not yet written


def test_custom_agent_example_plugs_in():
    assert isinstance(ScriptedSolver(), Agent)
    report = evaluate(ScriptedSolver(), [SFT_ENV, OOD_UNSEEN, DEPTH4_ENV], episodes=10)
    assert report.success == 1.0
    assert set(report.by_depth) == {"3", "4"}


def test_expert_agent_solves_every_small_profile_id():
    ids = suite_env_ids("all")
    report = evaluate(ExpertPolicy(), ids, episodes=5)
    assert report.success_by_env == {i: 1.0 for i in ids}


def test_random_agent_is_legal_seeded_and_mostly_wrong():
    report = evaluate(RandomAgent(seed=3), [SFT_ENV], episodes=40)
    assert not any(e.malformed for e in report.episodes)  # only grammatical tokens
    assert report.success < 0.2
    other = evaluate(RandomAgent(seed=4), [SFT_ENV], episodes=40)
    assert [e.tokens for e in report.episodes] != [e.tokens for e in other.episodes]


@pytest.mark.parametrize("make_agent", [lambda: RandomAgent(seed=1), lambda: ExpertPolicy()])
def test_evaluate_is_deterministic_under_a_seed(make_agent):
    a = evaluate(make_agent(), [SFT_ENV, DEPTH4_ENV], episodes=12, seed=5).to_dict()
    b = evaluate(make_agent(), [SFT_ENV, DEPTH4_ENV], episodes=12, seed=5).to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    c = evaluate(make_agent(), [SFT_ENV], episodes=12, seed=6)
    assert [e["cascade"] for e in a["episodes"][:12]] != [e.cascade for e in c.episodes]


def test_lm_agent_is_deterministic_and_batching_does_not_change_results(small_lm):
    batched = evaluate(small_lm, [SFT_ENV], episodes=10, seed=2)
    again = evaluate(LMAgent(small_lm), [SFT_ENV], episodes=10, seed=2)

    class OneAtATime:  # no act_batch: evaluate plays episodes sequentially
        def __init__(self, lm):
            self.inner = LMAgent(lm)

        def act(self, obs, info):
            return self.inner.act(obs, info)

    sequential = evaluate(OneAtATime(small_lm), [SFT_ENV], episodes=10, seed=2)
    tokens = [e.tokens for e in batched.episodes]
    assert tokens == [e.tokens for e in again.episodes] == [e.tokens for e in sequential.episodes]


def test_episode_i_resets_with_seed_plus_i():
    report = evaluate(ExpertPolicy(), [SFT_ENV], episodes=3, seed=7)
    env = gym.make(SFT_ENV)
    for i, ep in enumerate(report.episodes):
        _, info = env.reset(seed=7 + i)
        assert ep.cascade == info["cascade"].key() and ep.seed == 7 + i


def _solve(prompt: str) -> str:
    problem = parse_prompt(T.encode(prompt), PROFILES["small"].alphabet)
    return " ; ".join(problem.values)  # spaces are fine; <eos> is appended by the agent


def test_text_agent_round_trips_prompt_and_trace():
    prompts = []

    def fn(prompt: str) -> str:
        prompts.append(prompt)
        return _solve(prompt)

    report = evaluate(TextAgent(fn), [SFT_ENV, DEPTH4_ENV], episodes=8)
    assert report.success == 1.0
    env = gym.make(SFT_ENV)
    _, info = env.reset(seed=0)
    assert prompts[0] == info["prompt"]  # the agent saw exactly the env's prompt text
    with_eos = evaluate(TextAgent(lambda p: _solve(p) + "<eos>"), [SFT_ENV], episodes=4)
    assert with_eos.success == 1.0


def test_text_agent_wrong_or_unreadable_answers_fail_cleanly():
    wrong = evaluate(TextAgent(lambda p: "ab;ab;ab"), [SFT_ENV], episodes=6)
    assert wrong.success < 1.0
    agent = TextAgent(lambda p: "this is not a trace!")
    garbage = evaluate(agent, [SFT_ENV], episodes=3)
    assert garbage.success == 0.0 and isinstance(agent.last_error, ValueError)
    with pytest.raises(ValueError, match="cannot encode"):
        evaluate(TextAgent(lambda p: "not a trace!", strict=True), [SFT_ENV], episodes=1)
    with pytest.raises(TypeError, match="callable"):
        TextAgent("not callable")


def test_report_summaries_table_and_json(tmp_path):
    report = evaluate(ExpertPolicy(), [SFT_ENV, DEPTH4_ENV], episodes=6, seed=1)
    assert isinstance(report, EvalReport)
    small = PROFILES["small"]
    assert set(report.by_skill) <= set(small.skills) and set(report.by_routing) <= set(small.routings)
    assert report.step_accuracy == {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}
    table = report.table()
    assert "Compose-L3-v0" in table and "OOD-Depth-L4-v0" in table and "by skill" in table
    path = tmp_path / "r.json"
    report.save_json(path)
    data = json.loads(path.read_text())
    assert data["success_by_env"][SFT_ENV] == 1.0 and len(data["episodes"]) == 12


def test_per_module_success_counts_episodes_that_use_the_module():
    class FailOnRev:  # the expert, except that it answers wrongly whenever the cascade uses Rev
        expert = ExpertPolicy()

        def act(self, obs, info):
            problem = parse_prompt(obs, "abcdef")
            written = trace_so_far(obs).tolist()
            last_segment_starts = written.count(T.STEP_ID) == problem.cascade.depth - 1 and \
                (not written or written[-1] == T.STEP_ID)
            if "Rev" in problem.cascade.skills and last_segment_starts:  # a wrong first letter of the answer
                return T.LETTER_IDS["a"] if problem.answer[0] != "a" else T.LETTER_IDS["b"]
            return self.expert.act(obs, info)

    report = evaluate(FailOnRev(), [SFT_ENV], episodes=60)
    assert report.by_skill["Rev"] == 0.0
    uses_rev = [e for e in report.episodes if "Rev" in e.skills]
    assert 0 < len(uses_rev) < 60
    others = [e.success for e in report.episodes if "Rev" not in e.skills]
    assert np.mean(others) == 1.0


def test_evaluate_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown env id"):
        evaluate(ExpertPolicy(), ["composition_gym/Nope-v0"], episodes=1)
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate(ExpertPolicy(), [SFT_ENV], episodes=0)
    with pytest.raises(TypeError, match="not an agent"):
        evaluate(object(), [SFT_ENV], episodes=1)

    class WrongSpace(ExpertPolicy):
        observation_space = gym.spaces.Box(0, 73, (12,), np.int64)

    with pytest.raises(ValueError, match="does not match"):
        evaluate(WrongSpace(), [SFT_ENV], episodes=1)


def test_suites():
    assert suite_env_ids("id", version="v0") == ["composition_gym/Compose-L3-v0", "composition_gym/Compose-RL-L3-v0"]
    assert suite_env_ids("ood") == ["composition_gym/OOD-Unseen-L3-v1", "composition_gym/OOD-Depth-L4-v1"]  # newest
    assert all(i.startswith("composition_gym/Paper-") for i in suite_env_ids("ood", "paper"))
    assert len(suite_env_ids("all")) == len([r for r in composition_gym.list_envs() if r["profile"] == "small" and r["version"] == "v1"])
    with pytest.raises(ValueError, match="unknown suite"):
        suite_env_ids("odd")


def test_evaluate_with_samples_reports_pass_at_k_and_headroom(small_lm):
    report = evaluate(small_lm, [SFT_ENV, DEPTH4_ENV], episodes=5, seed=2, samples=4, temperature=1.0)
    assert report.samples == 4 and all(len(e.samples) == 4 for e in report.episodes)
    m = report.metrics()
    assert set(m) >= {"greedy", "sampled", "pass@4", "headroom"}
    assert m["pass@4"] == pytest.approx(np.mean([any(e.samples) for e in report.episodes]))
    assert m["pass@4"] >= m["sampled"] and m["headroom"] == pytest.approx(m["pass@4"] - m["greedy"])
    assert set(report.breakdown("depth")) == {"3", "4"} and "pass@4" in report.breakdown("skill")[
        next(iter(report.by_skill))]
    again = evaluate(small_lm, [SFT_ENV, DEPTH4_ENV], episodes=5, seed=2, samples=4, temperature=1.0)
    assert [e.samples for e in again.episodes] == [e.samples for e in report.episodes]  # seeded
    table = report.table()
    assert "pass@4" in table and "headroom" in table and "by routing" in table
    assert json.loads(json.dumps(report.to_dict()))["metrics"]["pass@4"] == m["pass@4"]
    with pytest.raises(TypeError, match="TransformerLM"):
        evaluate(ExpertPolicy(), [SFT_ENV], episodes=1, samples=2)
    with pytest.raises(ValueError, match="temperature"):
        evaluate(small_lm, [SFT_ENV], episodes=1, samples=2, temperature=0.0)


def test_sampling_at_a_tiny_temperature_is_greedy(small_lm):
    import torch

    from composition_gym.agents.sampling import LMChooser, make_vec, play

    venv = make_vec(SFT_ENV, 8)
    greedy = play(venv, list(range(8)), LMChooser(small_lm))
    cold = play(venv, list(range(8)), LMChooser(small_lm, 1e-4, torch.Generator().manual_seed(0)))
    assert np.array_equal(greedy.obs, cold.obs)
    hot = play(venv, list(range(8)), LMChooser(small_lm, 1.0, torch.Generator().manual_seed(0)))
    assert not np.array_equal(greedy.obs, hot.obs)


def test_all_steps_correct_is_reported_where_the_env_gives_it():
    from dataclasses import replace

    from composition_gym.agents.evaluation import Episode

    base = Episode(SFT_ENV, 0, "c", 3, ("r",), ("s",), True, 1.0, (True, True, True), False)
    assert "all_steps_correct" not in EvalReport([base], [SFT_ENV], 0, 1).metrics()  # not reported: not shown
    eps = [replace(base, all_steps_correct=True), replace(base, seed=1, all_steps_correct=False)]
    assert EvalReport(eps, [SFT_ENV], 0, 2).metrics()["all_steps_correct"] == 0.5
    report = evaluate(ExpertPolicy(), ["composition_gym/Compose-L3-v1"], episodes=4)
    reported = [e.all_steps_correct for e in report.episodes if e.all_steps_correct is not None]
    assert reported == [] or all(reported)  # where a v1 env reports it, the expert gets every step right


def test_paired_differences_pair_the_same_problems(small_lm):
    from composition_gym.agents.evaluation import paired_differences

    env = "composition_gym/Compose-L3-v1"
    a = evaluate(small_lm, [env], episodes=8, seed=5, samples=2)
    b = evaluate(composition_gym.ExpertPolicy(), [env], episodes=8, seed=5)
    with pytest.raises(ValueError, match="same env ids, episodes, seed and samples"):
        paired_differences(a, b)
    expert = evaluate(composition_gym.ExpertPolicy(), [env], episodes=8, seed=5)
    d = paired_differences(evaluate(small_lm, [env], episodes=8, seed=5), expert)[env]["greedy"]
    assert d["after"] == 1.0 and d["diff"] == pytest.approx(1.0 - d["before"])
    same = paired_differences(a, a)[env]
    assert all(v["diff"] == 0.0 and v["se"] == 0.0 for v in same.values())
