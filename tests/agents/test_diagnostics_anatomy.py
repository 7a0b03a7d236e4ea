"""Error anatomy on constructed cases: the expert, an agent that swaps one skill, hand-made values."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import composition_gym  # noqa: F401
from composition_gym import tokens as T
from composition_gym import ExpertPolicy
from composition_gym.agents import RandomAgent, trace_so_far
from composition_gym.agents.diagnostics.anatomy import (
    EpisodeSteps, analyse, anatomy_of_episodes, classify_step, edit_distance, error_anatomy)
from composition_gym.agents.evaluation import rollout
from composition_gym.cascade import Cascade, Problem, parse_prompt
from composition_gym.profiles import get_profile

SMALL = get_profile("small")


class WrongSkillAt2:
    """Writes the reference trace, except that step 2 uses the first other skill (profile order)
    that changes ``z_2``; later steps run on that wrong value.  ``swapped`` records, per prompt,
    the module it used at step 2 (``None`` when no skill changes ``z_2``)."""

    def __init__(self):
        self.swapped: dict[tuple[int, ...], str | None] = {}
        self._plans: dict[tuple[int, ...], list[int]] = {}

    def act(self, obs, info):
        ids = [int(i) for i in obs if i != T.PAD_ID]
        prompt = tuple(ids[: ids.index(T.SEP_ID) + 1])
        if prompt not in self._plans:
            self._plans[prompt] = self._plan(prompt)
        return self._plans[prompt][len(trace_so_far(obs))]

    def _plan(self, prompt):
        p = parse_prompt(prompt, SMALL.alphabet)
        steps = list(p.cascade.steps)
        self.swapped[prompt] = None
        if len(steps) >= 2:
            r, s = steps[1]
            for s2 in SMALL.skills:
                alt = Cascade(tuple(steps[:1] + [(r, s2)] + steps[2:]))
                values = alt.execute(p.x, p.y, SMALL.alphabet)
                if s2 != s and values[1] != p.values[1]:
                    p = Problem(alt, p.x, p.y, tuple(values))
                    self.swapped[prompt] = f"{r}.{s2}"
                    break
        return [T.TOKEN_ID[t] for t in p.trace("values")]


def test_expert_has_no_errors():
    an = error_anatomy(ExpertPolicy(), ["Compose-L3-v0", "OOD-Depth-L4-v0"], 25, seed=3)
    assert an.errors == []
    assert an.total == 50 and an.depths == {3: 25, 4: 25}
    assert an.first_step_error(4)["rate"] == 0.0


def test_wrong_skill_at_step_2_is_a_wrong_module_at_step_2():
    agent = WrongSkillAt2()
    records = rollout(agent, "composition_gym/Compose-L3-v0", list(range(40)))
    an = anatomy_of_episodes(records)
    used = [u for u in agent.swapped.values() if u is not None]
    assert len(used) >= 30  # the swap happened in most problems
    assert len(an.errors) == len(used)
    for e in an.errors:
        assert (e.step, e.category) == (2, "wrong_module") and "skill" in e.kinds
        assert e.kind in ("call", "skill")  # "call" when another call of the program uses that skill too
    skill_hits = [e.used for e in an.errors if e.kind == "skill"]
    assert len(skill_hits) >= len(used) // 2 and set(skill_hits) <= set(used)
    assert an.by_step(3)["2"]["wrong_module"] == pytest.approx(len(used) / 40)
    assert sum(an.kinds().values()) == len(used)


def _problem():
    c = Cascade((("Chain", "Rev"), ("CatX", "Sort"), ("Chain", "Shift")))
    return Problem(c, "cab", "", tuple(c.execute("cab", "", SMALL.alphabet)))  # bac, aabbcc, bbccdd


@pytest.mark.parametrize("step, generated, want", [
    (2, "baccab", ("wrong_module", ("skill",), "CatX.Rev")),            # Rev instead of Sort
    (2, "abc", ("wrong_module", ("routing", "both"), "Chain.Sort")),     # forgot the +X
    (2, "bac", ("wrong_module", ("routing", "skip", "both"), "Left.Sort")),  # copied z1
    (3, "cbd", ("wrong_module", ("operand",), "Chain.Shift(z1)")),     # Shift on z1, not z2
    (3, "dbc", ("wrong_module", ("operand",), "Chain.Shift(X)")),      # Shift on X
    (2, "cab", ("wrong_module", ("call", "both"), "Chain.Rev(step 1)")),  # step 1's module again
    (2, "aabbcd", ("wrong_execution", (), "")),                         # one letter off
    (2, "ffffff", ("unexplained", (), "")),
    (2, None, ("missing", (), "")),
])
def test_classify_step_cases(step, generated, want):
    c = classify_step(_problem(), step, generated, SMALL)
    assert c[:3] == want
    assert c.read_step == (1 if c.kinds[:1] == ("call",) else 0)


def test_classify_rejects_a_correct_step():
    with pytest.raises(ValueError, match="correct"):
        classify_step(_problem(), 1, "bac", SMALL)


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0


def test_tokens_and_info_diagnosis_agree_and_aggregates_add_up():
    env = gym.make("composition_gym/Compose-L3-v0")
    agent, from_info, from_tokens = RandomAgent(1), [], []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(agent.act(obs, info))
            done = term or trunc
        u = env.unwrapped
        from_info.append(EpisodeSteps.from_info("composition_gym/Compose-L3-v0", seed, info, u.problem, u.profile))
        from_tokens.append(EpisodeSteps.from_tokens("composition_gym/Compose-L3-v0", seed, obs, u.profile))
    for a, b in zip(from_info, from_tokens):
        assert (a.judged, a.generated) == (b.judged, b.generated)
    an = analyse(from_info)
    assert an.to_dict()["errors"] == analyse(from_tokens).to_dict()["errors"]
    row = an.by_env()["Compose-L3-v0"]
    assert row["n"] == 30 and row["errors"] == len(an.errors)
    assert sum(row[c] for c in ("wrong_module", "wrong_execution", "unexplained", "missing")) == pytest.approx(
        len(an.errors) / 30)
    assert sum(v["errors"] for v in an.by_module().values()) == len(an.errors)
    assert np.isclose(sum(v["errors"] for v in an.by_step(3).values()), len(an.errors))


def test_bad_episode_count():
    with pytest.raises(ValueError, match="episodes"):
        error_anatomy(ExpertPolicy(), "Compose-L3-v0", 0)


def test_call_offsets_count_which_call_was_read():
    p = _problem()
    ep = EpisodeSteps("composition_gym/Compose-L3-v0", 0, p, [1, 2, 3], ["bac", "cab", None], SMALL)
    an = analyse([ep])
    (e,) = an.errors
    assert (e.step, e.kind, e.read_step) == (2, "call", 1)
    assert an.call_offsets() == {"3": {"-1": 1}}
    assert an.to_dict()["call_offsets"] == {"3": {"-1": 1}}
