"""Cascade execution, the prompt program, reference traces, their parsers and the scorer."""

import itertools

import gymnasium as gym
import numpy as np
import pytest

import composition_gym  # noqa: F401  (registers the ids)

from composition_gym import tokens as T
from composition_gym.cascade import PROMPT_FORMATS, Cascade, Problem, Scorer, parse_program, parse_prompt
from composition_gym.modules import ROUTINGS, SKILLS
from composition_gym.profiles import PAPER, SMALL


def test_execute_by_hand():
    c = Cascade((("CatX", "RotL"), ("Left", "Shift"), ("CatX", "Shift")))
    assert c.execute("af", "", "abcdef") == ["fafa", "abfa", "bcabba"]
    assert c.depth == 3 and c.routings == ("CatX", "Left", "CatX") and c.skills == ("RotL", "Shift", "Shift")
    assert c.key() == "CatX.RotL|Left.Shift|CatX.Shift"


def test_program_is_nested_not_step_listed():
    c = Cascade((("Chain", "Sort"), ("PrefixX", "Rev"), ("Keep", "Flip")))
    assert "".join(c.program()) == "Keep(Flip,X+Rev(Sort(X)))"
    # The first step is innermost: the program does not list the steps in execution order.
    assert c.program().index("Flip") < c.program().index("Sort")


def test_program_round_trips_for_every_small_cascade():
    steps = list(itertools.product(SMALL.routings, SMALL.skills))
    for combo in itertools.product(steps, repeat=3):
        c = Cascade(combo)
        assert parse_program(c.program()) == c


@pytest.mark.parametrize("fmt", ["pipeline", "reversed"])
def test_step_listing_prompt_formats_round_trip_for_every_small_cascade(fmt):
    steps = list(itertools.product(SMALL.routings, SMALL.skills))
    for combo in itertools.product(steps, repeat=3):
        c = Cascade(combo)
        assert parse_program(c.program(fmt), fmt) == c


def test_prompt_formats_list_the_same_steps_in_their_orders():
    c = Cascade((("Chain", "Sort"), ("PrefixX", "Rev"), ("Keep", "Flip")))
    assert " ".join(c.program("pipeline")) == "Chain Sort ; PrefixX Rev ; Keep Flip"
    assert " ".join(c.program("reversed")) == "Keep Flip ; PrefixX Rev ; Chain Sort"
    # Every token has its writer: the nested X is step 0's, a separator the step after it.
    assert c.program_owners("reversed") == [("Keep", 3), ("Flip", 3), (";", 2), ("PrefixX", 2), ("Rev", 2),
                                            (";", 1), ("Chain", 1), ("Sort", 1)]
    assert [o for _, o in c.program_owners()] == [3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="prompt_format"):
        c.program("sideways")
    with pytest.raises(ValueError, match="expected a routing and a skill"):
        parse_program(["Chain", "Sort", ";", "Rev"], "pipeline")
    with pytest.raises(ValueError, match="expected ';'"):
        parse_program(["Chain", "Sort", "Chain", "Rev"], "pipeline")


@pytest.mark.parametrize("fmt", PROMPT_FORMATS)
def test_every_prompt_format_is_played_by_the_expert_and_parsed_back(fmt):
    from composition_gym import ExpertPolicy

    env = gym.make("composition_gym/OOD-Depth-L4-v1", prompt_format=fmt)
    expert = ExpertPolicy.for_env(env)
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        problem = env.unwrapped.problem
        assert parse_prompt(obs, SMALL.alphabet, fmt) == problem
        assert info["prompt"] == T.decode(problem.encode_prompt(False, fmt)[0])
        done, total = False, 0.0
        while not done:
            action = int(expert.act(obs))
            assert action == env.unwrapped.expert_action()
            obs, reward, term, trunc, info = env.step(action)
            total += reward
            done = term or trunc
        assert total == 1.0 and info["is_success"]
    with pytest.raises(ValueError, match="prompt_format"):
        gym.make("composition_gym/Compose-L3-v1", prompt_format="sideways")


def test_program_round_trips_for_every_routing_pair_of_paper_profile():
    steps = list(itertools.product(PAPER.routings, ["Rev", "Dup"]))
    for combo in itertools.product(steps, repeat=2):
        c = Cascade(combo)
        assert parse_program(c.program()) == c


def test_distinct_cascades_have_distinct_prompts():
    steps = list(itertools.product(ROUTINGS, ["Rev"]))
    programs = {tuple(Cascade(combo).program()) for combo in itertools.product(steps, repeat=2)}
    assert len(programs) == len(steps) ** 2


@pytest.mark.parametrize("bad", [(), (("Nope", "Rev"),), (("Chain", "Nope"),), (("Chain",),)])
def test_bad_cascade_rejected(bad):
    with pytest.raises(ValueError):
        Cascade(bad)


def test_parse_program_errors():
    with pytest.raises(ValueError, match="trailing"):
        parse_program(["X", ")"])
    with pytest.raises(ValueError, match="ended early"):
        parse_program(["Rev", "(", "X"])


def _problem():
    c = Cascade((("Chain", "Rev"), ("CatY", "Sort")))
    return Problem(c, "abc", "fe", tuple(c.execute("abc", "fe", "abcdef")))


def test_trace_formats():
    p = _problem()
    assert p.values == ("cba", "abcef")
    assert "".join(p.trace("values")) == "cba;abcef<eos>"
    assert p.trace("tagged") == ["Chain", "Rev", ":", "c", "b", "a", ";", "CatY", "Sort", ":", *"abcef", "<eos>"]
    assert p.trace("answer") == [*"abcef", "<eos>"]


def test_prompt_and_parse_prompt_round_trip():
    p = _problem()
    ids = [T.TOKEN_ID[t] for t in p.prompt(uses_y=True)]
    assert T.decode(ids) == "<bos>X=abc,Y=fe:Sort(Rev(X)+Y)|"
    assert parse_prompt(ids + [T.PAD_ID] * 5, "abcdef") == p
    with pytest.raises(ValueError, match="not a prompt"):
        parse_prompt([T.PAD_ID], "abcdef")


def test_skills_closed_over_alphabet():
    for s in SKILLS.values():
        out = s("abcdefabc", "abcdef")
        assert set(out) <= set("abcdef"), s.name


# ---------------------------------------------------------------------------- the reference
def _sampled_problems():
    """Problems of both profiles (one without Y, one with), as environments draw them."""
    for env_id in ("composition_gym/OOD-Depth-L4-v0", "composition_gym/Paper-Compose-L3-v0"):
        env = gym.make(env_id).unwrapped
        uses_y = env.profile.uses_y
        for seed in range(60):
            env.reset(seed=seed)
            yield env.problem, uses_y


def test_encode_prompt_equals_the_token_form_written_out():
    seen_y = set()
    for p, uses_y in _sampled_problems():
        seen_y.add(uses_y)
        head = [T.BOS, "X", "=", *p.x] + ([",", "Y", "=", *p.y] if uses_y else [])
        tokens = [*head, ":", *p.cascade.program(), "|"]
        ids, text = p.encode_prompt(uses_y)
        assert ids == [T.TOKEN_ID[t] for t in tokens] and p.prompt(uses_y) == tokens
        assert text == T.decode(ids) and T.encode(text) == ids
        assert parse_prompt(ids, "abcdefghijklmnopqrstuvwxyz").cascade == p.cascade
    assert seen_y == {False, True}


def test_expected_segments_follow_the_trace_format():
    p = _problem()
    values = p.expected_segments("values")
    assert [T.letters_of(letters) for _, letters in values] == list(p.values)
    assert values[1][0] == (T.ROUTING_IDS["CatY"], T.SKILL_IDS["Sort"])
    assert p.expected_segments("answer") == values[-1:]


def test_score_of_the_reference_trace():
    p = _problem()
    for fmt in ("values", "tagged", "answer"):
        score = p.score(p.expected_segments(fmt), trace_format=fmt, process_reward=0.25)
        assert score.is_success and score.all_steps_correct and not score.malformed
        assert score.reward == (1.25 if fmt != "answer" else 1.0)
        assert all(d["correct"] for d in score.diagnosis)
    tagged = p.score(p.expected_segments("tagged"), trace_format="tagged").diagnosis
    assert [d["tags_correct"] for d in tagged] == [True, True]
    assert p.score(p.expected_segments("answer"), trace_format="answer").diagnosis[0]["step"] == 2


def test_score_separates_outcome_from_process():
    p = _problem()
    (tags1, _), (tags2, answer) = p.expected_segments("values")
    wrong_step = p.score([(tags1, tuple(T.letter_ids("abc"))), (tags2, answer)], process_reward=0.5)
    assert wrong_step.is_success and not wrong_step.all_steps_correct and wrong_step.reward == 1.0
    assert [d["correct"] for d in wrong_step.diagnosis] == [False, True]
    assert wrong_step.diagnosis[0]["generated"] == "abc" and wrong_step.diagnosis[0]["expected"] == "cba"
    skipped = p.score([(tags2, answer)])  # the answer written as the first segment: incomplete
    assert not skipped.is_success and not skipped.all_steps_correct
    assert skipped.diagnosis[1]["generated"] is None
    malformed = p.score(p.expected_segments("values"), malformed=True, format_penalty=2.0)
    assert not malformed.is_success and malformed.malformed and malformed.reward == -2.0
    wrong_tags = p.score([((0, 0), letters) for _, letters in p.expected_segments("tagged")], trace_format="tagged")
    assert wrong_tags.all_steps_correct and not any(d["tags_correct"] for d in wrong_tags.diagnosis)


def test_step_reward_is_one_rule_for_scalars_and_batches():
    scorer = Scorer("values", process_reward=0.25, format_penalty=0.5)
    cases = [(c, m, s) for c in (False, True) for m in (False, True) for s in (False, True)]
    batch = scorer.step_reward(*(np.array(col) for col in zip(*cases)))
    assert batch.dtype == np.float64
    assert batch.tolist() == [float(scorer.step_reward(*case)) for case in cases]
    assert scorer.step_reward(False, False, True) == 1.0 and scorer.step_reward(True, True, False) == -0.25


@pytest.mark.parametrize("kwargs,match", [
    ({"trace_format": "prose"}, "trace_format"),
    ({"process_reward": float("nan")}, "process_reward"),
    ({"format_penalty": True}, "format_penalty"),
    ({"format_penalty": "1"}, "format_penalty"),
])
def test_scorer_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Scorer(**kwargs)
