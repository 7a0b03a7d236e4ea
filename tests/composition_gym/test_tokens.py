"""The vocabulary and text encode/decode."""

import pytest

from composition_gym import tokens as T
from composition_gym.modules import ROUTINGS, SKILLS


def test_layout_is_fixed():
    assert T.VOCAB_SIZE == 74
    assert (T.PAD_ID, T.BOS_ID, T.EOS_ID, T.SEP_ID) == (0, 1, 2, 3)
    assert T.TOKEN_ID["a"] == 14 and T.TOKEN_ID["z"] == 39
    assert T.TOKEN_ID[next(iter(SKILLS))] == 40 and T.TOKEN_ID[next(iter(ROUTINGS))] == 64
    assert len(set(T.TOKENS)) == T.VOCAB_SIZE


@pytest.mark.parametrize("text", [
    "<bos>X=ab,Y=cd:Keep(Rev,Sort(X+Y))|",
    "Chain Rev:abc;IfEven Flip:cba<eos>",
    "abc;def<eos>",
])
def test_round_trip(text):
    ids = T.encode(text)
    assert T.decode(ids) == text
    assert T.encode(T.decode(ids)) == ids


def test_whitespace_and_words():
    assert T.encode("Rev abc") == [T.TOKEN_ID["Rev"]] + T.letter_ids("abc")
    assert T.encode(" a b ") == T.letter_ids("ab")
    assert T.decode(T.encode("Rev abc")) == "Rev abc"


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Nope"):
        T.encode("Nope(X)")
    with pytest.raises(ValueError, match="cannot encode"):
        T.encode("ab#")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        T.decode([999])
