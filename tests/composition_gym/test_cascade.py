"""Cascade execution, the prompt program, reference traces and their parsers."""

import itertools

import pytest

from composition_gym import tokens as T
from composition_gym.cascade import Cascade, Problem, parse_program, parse_prompt
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
