"""Every skill and routing mechanism on hand-checked examples."""

import pytest

from composition_gym.modules import ROUTINGS, SKILLS, interleave, module_table

AB = "abcdef"

# (skill, input, expected) — worked out by hand, several per skill, edge cases included.
SKILL_CASES = [
    ("Rev", "abc", "cba"), ("Rev", "a", "a"),
    ("Sort", "fbdb", "bbdf"), ("Sort", "", ""),
    ("SortDesc", "fbdb", "fdbb"),
    ("RotL", "abcd", "bcda"), ("RotL", "a", "a"), ("RotL", "", ""),
    ("Rot2", "abcde", "cdeab"), ("Rot2", "ab", "ab"), ("Rot2", "abc", "cab"),
    ("RotR", "abcd", "dabc"),
    ("Shift", "aef", "bfa"),
    ("Unshift", "abf", "fae"),
    ("Flip", "abcdef", "fedcba"), ("Flip", "aa", "ff"),
    ("Dup", "ab", "aabb"),
    ("NoVowel", "abecid", "bcd"), ("NoVowel", "ae", ""),
    ("Mirror", "ab", "abba"),
    ("Dedup", "aaabccb", "abcb"),
    ("Evens", "abcdef", "ace"), ("Odds", "abcdef", "bdf"), ("Odds", "a", ""),
    ("Swap", "abcd", "badc"), ("Swap", "abc", "bac"),
    ("Ends", "abcd", "dbca"), ("Ends", "a", "a"),
    ("Uniq", "abcabd", "abcd"),
    ("Double", "ab", "abab"),
    ("VShift", "aebd", "bfbd"),
    ("Unzip", "abcde", "acebd"),
    ("Riffle", "abcde", "adbec"), ("Riffle", "abcd", "acbd"),
    ("HalfSwap", "abcde", "cdeab"), ("HalfSwap", "abcd", "cdab"),
    ("Drop", "abc", "bc"),
]


@pytest.mark.parametrize("name,inp,out", SKILL_CASES)
def test_skill_examples(name, inp, out):
    assert SKILLS[name](inp, AB) == out


def test_every_skill_is_checked_and_documented():
    assert len(SKILLS) == 24 and len(ROUTINGS) == 10
    assert {c[0] for c in SKILL_CASES} == set(SKILLS)
    for s in SKILLS.values():
        assert s(s.example[0], AB) == s.example[1], s.name
        assert s.doc


def test_shift_uses_profile_alphabet():
    assert SKILLS["Shift"]("ab", "ab") == "ba"
    assert SKILLS["Shift"]("p", "abcdefghijklmnop") == "a"


# (routing, skill, prev E, x, y, expected)
ROUTING_CASES = [
    ("Chain", "Rev", "abc", "de", "f", "cba"),
    ("CatX", "Rev", "abc", "de", "f", "edcba"),
    ("PrefixX", "Rev", "abc", "de", "f", "decba"),
    ("ZipX", "Sort", "abc", "de", "f", "abcde"),
    ("ZipX", "Rev", "abc", "de", "f", "cebda"),
    ("CatY", "Rev", "abc", "de", "f", "fcba"),
    ("ZipY", "Rev", "abc", "de", "f", "cbfa"),
    ("Left", "Rev", "abcde", "x", "", "bacde"),
    ("Right", "Rev", "abcde", "x", "", "abedc"),
    ("IfEven", "Rev", "abcd", "", "", "dcba"),
    ("IfEven", "Rev", "abc", "", "", "abc"),
    ("Keep", "Shift", "ab", "", "", "abbc"),
]


@pytest.mark.parametrize("routing,skill,prev,x,y,out", ROUTING_CASES)
def test_routing_examples(routing, skill, prev, x, y, out):
    assert ROUTINGS[routing].apply(SKILLS[skill], prev, x, y, AB) == out


def test_every_routing_checked():
    assert {c[0] for c in ROUTING_CASES} == set(ROUTINGS)
    assert [r.name for r in ROUTINGS.values() if r.reads_y] == ["CatY", "ZipY"]


def test_interleave():
    assert interleave("abc", "de") == "adbec"
    assert interleave("", "de") == "de"


def test_module_table_lists_every_module():
    table = module_table()
    for name in list(SKILLS) + list(ROUTINGS):
        assert f"`{name}`" in table
