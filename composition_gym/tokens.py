"""The fixed token vocabulary shared by every environment, and text encode/decode.

One vocabulary for all profiles, so that a policy trained on one environment reads every other
one (a profile only *masks* the tokens it does not use).  Layout (ids are stable; a change is a
version bump of every environment):

=========  ======================================================================
ids        tokens
=========  ======================================================================
0-3        ``<pad>`` ``<bos>`` ``<eos>`` ``|`` (end of prompt)
4-11       ``;`` (step separator) ``:`` (tag end) ``(`` ``)`` ``,`` ``+`` (concat)
           ``~`` (interleave) ``=``
12-13      ``X`` ``Y`` (the inputs)
14-39      the letters ``a`` … ``z``
40-63      the 24 skills (``Rev``, ``Sort``, …) in :data:`~composition_gym.modules.SKILLS` order
64-73      the 10 routing mechanisms in :data:`~composition_gym.modules.ROUTINGS` order
=========  ======================================================================

In text, letters are lower case and every module or input is a capitalised word, so text
round-trips exactly: ``decode(encode(t)) == t`` for any ``t`` that :func:`decode` produced.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence

from composition_gym.modules import ROUTINGS, SKILLS

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "|"
STEP, TAG, LPAR, RPAR, COMMA, CONCAT, ZIP, EQ = ";", ":", "(", ")", ",", "+", "~", "="
VAR_X, VAR_Y = "X", "Y"
LETTERS = string.ascii_lowercase

TOKENS: tuple[str, ...] = (
    (PAD, BOS, EOS, SEP, STEP, TAG, LPAR, RPAR, COMMA, CONCAT, ZIP, EQ, VAR_X, VAR_Y)
    + tuple(LETTERS)
    + tuple(SKILLS)
    + tuple(ROUTINGS)
)
TOKEN_ID: dict[str, int] = {t: i for i, t in enumerate(TOKENS)}
VOCAB_SIZE = len(TOKENS)

PAD_ID, BOS_ID, EOS_ID, SEP_ID = (TOKEN_ID[t] for t in (PAD, BOS, EOS, SEP))
STEP_ID, TAG_ID = TOKEN_ID[STEP], TOKEN_ID[TAG]
LETTER_IDS: dict[str, int] = {c: TOKEN_ID[c] for c in LETTERS}
SKILL_IDS: dict[str, int] = {s: TOKEN_ID[s] for s in SKILLS}
ROUTING_IDS: dict[str, int] = {r: TOKEN_ID[r] for r in ROUTINGS}

_WORDS = frozenset(TOKENS[12:14]) | frozenset(SKILLS) | frozenset(ROUTINGS)
_LEXER = re.compile(r"\s*(<pad>|<bos>|<eos>|[A-Z][A-Za-z0-9]*|[a-z]|[|;:(),+~=])")


def encode(text: str) -> list[int]:
    """Token ids of ``text``.  Whitespace separates tokens and is otherwise ignored.

    Raises:
        ValueError: on a character or word that is not in the vocabulary.
    """
    ids: list[int] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _LEXER.match(text, pos)
        if m is None:
            raise ValueError(f"cannot encode {text[pos:pos + 10]!r} at offset {pos}: not a token of the vocabulary")
        tok = m.group(1)
        if tok not in TOKEN_ID:
            raise ValueError(f"unknown word {tok!r} at offset {pos}; modules are {sorted(_WORDS)}")
        ids.append(TOKEN_ID[tok])
        pos = m.end()
    return ids


def decode(ids: Iterable[int], skip_pad: bool = True) -> str:
    """Text of token ids; capitalised words are set apart by spaces so :func:`encode` reads them back.

    Raises:
        ValueError: on an id outside ``[0, VOCAB_SIZE)``.
    """
    out: list[str] = []
    prev_word = False
    for i in ids:
        i = int(i)
        if not 0 <= i < VOCAB_SIZE:
            raise ValueError(f"token id {i} is outside the vocabulary [0, {VOCAB_SIZE})")
        if skip_pad and i == PAD_ID:
            continue
        tok = TOKENS[i]
        word = tok in _WORDS
        # A word followed by a letter or another word needs a space, or the lexer would merge them.
        if prev_word and tok[0].isalpha():
            out.append(" ")
        out.append(tok)
        prev_word = word
    return "".join(out)


def letter_ids(s: str) -> list[int]:
    """Token ids of a string of letters."""
    return [LETTER_IDS[c] for c in s]


def letters_of(ids: Sequence[int]) -> str:
    """The letters spelled by ``ids`` (all of which must be letter tokens)."""
    return "".join(TOKENS[i] for i in ids)
