"""The module library: skills (local string operations) and routing mechanisms.

A *skill* is a deterministic function ``str -> str`` over the profile's alphabet, with its
parameters fixed (``Rot2`` always rotates by two).  A *routing mechanism* decides which memory
entries a step reads (the previous result ``E``, the input ``X``, the second input ``Y``) and how
the skill's output is composed back.  Every routing reads the previous result, so the nested
program in the prompt contains each step exactly once and the cascade can be recovered from it
(see :mod:`composition_gym.cascade`).

Both tables are plain dicts keyed by the module's name; docs/environment.md renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

VOWELS = frozenset("aeiou")

SkillFn = Callable[[str, str], str]  # (string, alphabet) -> string


@dataclass(frozen=True)
class Skill:
    """A skill: a local, deterministic string operation.

    Attributes:
        name: the token and surface name (CamelCase, e.g. ``"Rev"``).
        fn: ``fn(s, alphabet) -> str``; ``alphabet`` matters only to letter-shifting skills.
        doc: one line saying what it does.
        example: ``(input, output)`` over the alphabet ``"abcdef"``.
    """

    name: str
    fn: SkillFn
    doc: str
    example: tuple[str, str]

    def __call__(self, s: str, alphabet: str) -> str:
        return self.fn(s, alphabet)


def _shift(s: str, alphabet: str, k: int) -> str:
    # Shifting wraps inside the profile's alphabet so every skill stays closed over it.
    n = len(alphabet)
    return "".join(alphabet[(alphabet.index(c) + k) % n] for c in s)


def _flip(s: str, alphabet: str) -> str:
    n = len(alphabet)
    return "".join(alphabet[n - 1 - alphabet.index(c)] for c in s)


def _vowel_shift(s: str, alphabet: str) -> str:
    return "".join(_shift(c, alphabet, 1) if c in VOWELS else c for c in s)


def _dedup(s: str, alphabet: str) -> str:
    return "".join(c for i, c in enumerate(s) if i == 0 or s[i - 1] != c)


def _uniq(s: str, alphabet: str) -> str:
    return "".join(dict.fromkeys(s))


def _swap_pairs(s: str, alphabet: str) -> str:
    out = list(s)
    for i in range(0, len(s) - 1, 2):
        out[i], out[i + 1] = out[i + 1], out[i]
    return "".join(out)


def _swap_ends(s: str, alphabet: str) -> str:
    return s if len(s) < 2 else s[-1] + s[1:-1] + s[0]


def _riffle(s: str, alphabet: str) -> str:
    h = (len(s) + 1) // 2
    return interleave(s[:h], s[h:])


def _rotate(s: str, k: int) -> str:
    if not s:
        return s
    k %= len(s)
    return s[k:] + s[:k]


def interleave(a: str, b: str) -> str:
    """Alternate the characters of ``a`` and ``b``; the longer one's tail is appended."""
    n = min(len(a), len(b))
    return "".join(a[i] + b[i] for i in range(n)) + a[n:] + b[n:]


def _rev(s: str, a: str) -> str:
    return s[::-1]


def _sort(s: str, a: str) -> str:
    return "".join(sorted(s))


def _sort_desc(s: str, a: str) -> str:
    return "".join(sorted(s, reverse=True))


def _rot_l(s: str, a: str) -> str:
    return _rotate(s, 1)


def _rot_2(s: str, a: str) -> str:
    return _rotate(s, 2)


def _rot_r(s: str, a: str) -> str:
    return _rotate(s, -1)


def _shift_up(s: str, a: str) -> str:
    return _shift(s, a, 1)


def _shift_down(s: str, a: str) -> str:
    return _shift(s, a, -1)


def _dup(s: str, a: str) -> str:
    return "".join(c + c for c in s)


def _no_vowel(s: str, a: str) -> str:
    return "".join(c for c in s if c not in VOWELS)


def _mirror(s: str, a: str) -> str:
    return s + s[::-1]


def _evens(s: str, a: str) -> str:
    return s[0::2]


def _odds(s: str, a: str) -> str:
    return s[1::2]


def _double(s: str, a: str) -> str:
    return s + s


def _unzip(s: str, a: str) -> str:
    return s[0::2] + s[1::2]


def _half_swap(s: str, a: str) -> str:
    return s[len(s) // 2 :] + s[: len(s) // 2]


def _drop(s: str, a: str) -> str:
    return s[1:]


_SKILL_LIST = [
    Skill("Rev", _rev, "reverse", ("abcd", "dcba")),
    Skill("Sort", _sort, "sort ascending", ("cadb", "abcd")),
    Skill("SortDesc", _sort_desc, "sort descending", ("cadb", "dcba")),
    Skill("RotL", _rot_l, "rotate left by 1", ("abcd", "bcda")),
    Skill("Rot2", _rot_2, "rotate left by 2", ("abcde", "cdeab")),
    Skill("RotR", _rot_r, "rotate right by 1", ("abcd", "dabc")),
    Skill("Shift", _shift_up, "each letter +1 in the alphabet (wraps)", ("abf", "bca")),
    Skill("Unshift", _shift_down, "each letter -1 in the alphabet (wraps)", ("abf", "fae")),
    Skill("Flip", _flip, "mirror each letter in the alphabet (first<->last)", ("abf", "fea")),
    Skill("Dup", _dup, "duplicate each character", ("abc", "aabbcc")),
    Skill("NoVowel", _no_vowel, "remove vowels", ("abecd", "bcd")),
    Skill("Mirror", _mirror, "append the reverse", ("abc", "abccba")),
    Skill("Dedup", _dedup, "compress runs of a repeated character", ("aabbba", "aba")),
    Skill("Evens", _evens, "keep characters at even positions", ("abcde", "ace")),
    Skill("Odds", _odds, "keep characters at odd positions", ("abcde", "bd")),
    Skill("Swap", _swap_pairs, "swap adjacent pairs", ("abcde", "badce")),
    Skill("Ends", _swap_ends, "swap first and last character", ("abcd", "dbca")),
    Skill("Uniq", _uniq, "keep the first occurrence of each letter", ("abacb", "abc")),
    Skill("Double", _double, "repeat the string twice", ("abc", "abcabc")),
    Skill("VShift", _vowel_shift, "vowels +1 in the alphabet, other letters kept", ("abec", "bbfc")),
    Skill("Unzip", _unzip, "even positions then odd positions", ("abcdef", "acebdf")),
    Skill("Riffle", _riffle, "interleave first half with second half", ("abcdef", "adbecf")),
    Skill("HalfSwap", _half_swap, "swap the two halves", ("abcdef", "defabc")),
    Skill("Drop", _drop, "drop the first character", ("abcd", "bcd")),
]

#: Every skill, by name, in a fixed order (the order of the vocabulary).
SKILLS: dict[str, Skill] = {s.name: s for s in _SKILL_LIST}
_SKILL_FNS: dict[str, SkillFn] = {s.name: s.fn for s in _SKILL_LIST}


@dataclass(frozen=True)
class Routing:
    """A routing mechanism: which memory entries a step reads and how it composes the output.

    Attributes:
        name: the token name used in tagged traces (e.g. ``"CatX"``).
        syntax: the surface form in the prompt, with ``f`` the skill and ``E`` the previous
            result's expression (e.g. ``"f(E+X)"``).
        doc: one line saying what it does.
        reads_y: whether the routing reads the second input ``Y``.
    """

    name: str
    syntax: str
    doc: str
    reads_y: bool = False

    def apply(self, skill: Skill, prev: str, x: str, y: str, alphabet: str) -> str:
        """``z_t = route(skill, memory)`` with memory ``(prev=z_{t-1}, x, y)``."""
        return _ROUTE_FNS[self.name](skill.fn, alphabet, prev, x, y)


def apply_step(routing: str, skill: str, prev: str, x: str, y: str, alphabet: str) -> str:
    """One cascade step by name: ``ROUTINGS[routing].apply(SKILLS[skill], …)`` without the lookups
    of the objects (the samplers run millions of steps)."""
    return _ROUTE_FNS[routing](_SKILL_FNS[skill], alphabet, prev, x, y)


def _chain(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return f(e, a)


def _cat_x(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return f(e + x, a)


def _prefix_x(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return x + f(e, a)


def _zip_x(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return f(interleave(e, x), a)


def _cat_y(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return f(e + y, a)


def _zip_y(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return f(interleave(e, y), a)


def _left(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    h = len(e) // 2
    return f(e[:h], a) + e[h:]


def _right(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    h = len(e) // 2
    return e[:h] + f(e[h:], a)


def _if_even(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return f(e, a) if len(e) % 2 == 0 else e


def _keep(f: SkillFn, a: str, e: str, x: str, y: str) -> str:
    return e + f(e, a)


_ROUTE_FNS: dict[str, Callable[[SkillFn, str, str, str, str], str]] = {
    "Chain": _chain,
    "CatX": _cat_x,
    "PrefixX": _prefix_x,
    "ZipX": _zip_x,
    "CatY": _cat_y,
    "ZipY": _zip_y,
    "Left": _left,
    "Right": _right,
    "IfEven": _if_even,
    "Keep": _keep,
}

_ROUTING_LIST = [
    Routing("Chain", "f(E)", "continue from the last result"),
    Routing("CatX", "f(E+X)", "concatenate the last result with the input, then apply"),
    Routing("PrefixX", "X+f(E)", "apply to the last result, then put the input in front"),
    Routing("ZipX", "f(E~X)", "interleave the last result with the input, then apply"),
    Routing("CatY", "f(E+Y)", "concatenate the last result with the second input Y, then apply", True),
    Routing("ZipY", "f(E~Y)", "interleave the last result with the second input Y, then apply", True),
    Routing("Left", "Left(f,E)", "apply to the first half only (length // 2), keep the rest"),
    Routing("Right", "Right(f,E)", "apply to the second half only, keep the first half"),
    Routing("IfEven", "IfEven(f,E)", "apply only if the last result has even length, else pass it through"),
    Routing("Keep", "Keep(f,E)", "keep the last result and append the skill's output to it"),
]

#: Every routing mechanism, by name, in a fixed order (the order of the vocabulary).
ROUTINGS: dict[str, Routing] = {r.name: r for r in _ROUTING_LIST}


def module_table() -> str:
    """The module library as a markdown table (name, kind, what it does, example)."""
    rows = ["| name | kind | what it does | example |", "|---|---|---|---|"]
    for s in SKILLS.values():
        rows.append(f"| `{s.name}` | skill | {s.doc} | `{s.example[0]}` -> `{s.example[1]}` |")
    for r in ROUTINGS.values():
        rows.append(f"| `{r.name}` | routing | {r.doc} | `{r.syntax}` with f=Rev, E=abcd, X=ef, Y=fa: `{_route_demo(r)}` |")
    return "\n".join(rows)


def _route_demo(r: Routing) -> str:
    return r.apply(SKILLS["Rev"], "abcd", "ef", "fa", "abcdef")
