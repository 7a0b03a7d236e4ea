"""Profiles: named presets of the module library, alphabet and string lengths.

``small`` is sized so a 2-layer transformer learns it on 2 CPU cores in minutes; ``paper`` is the
paper's setting (24 skills, 10 routing mechanisms, train at depth 3, test at depth 4).  Every field
can be overridden by a ``gym.make`` kwarg of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from composition_gym.modules import ROUTINGS, SKILLS
from composition_gym.tokens import LETTERS


@dataclass(frozen=True)
class Profile:
    """Which modules exist, over which alphabet, with which string lengths.

    Attributes:
        name: the preset's name.
        skills: skill names.
        routings: routing mechanism names.
        alphabet: the letters inputs are drawn from (skills are closed over it).
        input_len: inclusive ``(min, max)`` length of each input string.
        max_result_len: results longer than this are resampled (never truncated).
        train_depth: the depth L of the compound training ids.
        ood_depth: the depth of the OOD-depth ids.
    """

    name: str
    skills: tuple[str, ...]
    routings: tuple[str, ...]
    alphabet: str
    input_len: tuple[int, int]
    max_result_len: int
    train_depth: int = 3
    ood_depth: int = 4

    @property
    def uses_y(self) -> bool:
        """Whether a second input ``Y`` is part of every prompt."""
        return any(ROUTINGS[r].reads_y for r in self.routings)

    def draw_string(self, rng: np.random.Generator) -> str:
        """One input string: a length from ``input_len``, then letters, from one generator call
        (numpy's per-call overhead dwarfs the draws themselves)."""
        lo, hi = self.input_len
        alphabet = self.alphabet
        u = rng.random(1 + hi).tolist()
        n = lo + int(u[0] * (hi - lo + 1))
        return "".join(alphabet[int(v * len(alphabet))] for v in u[1 : 1 + n])

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible field."""
        unknown = [s for s in self.skills if s not in SKILLS]
        if unknown or not self.skills:
            raise ValueError(f"profile {self.name!r}: unknown or no skills {unknown}; known: {list(SKILLS)}")
        unknown = [r for r in self.routings if r not in ROUTINGS]
        if unknown or not self.routings:
            raise ValueError(f"profile {self.name!r}: unknown or no routings {unknown}; known: {list(ROUTINGS)}")
        if len(set(self.skills)) != len(self.skills) or len(set(self.routings)) != len(self.routings):
            raise ValueError(f"profile {self.name!r}: skills and routings must not repeat")
        if len(self.alphabet) < 2 or len(set(self.alphabet)) != len(self.alphabet) or not set(self.alphabet) <= set(LETTERS):
            raise ValueError(f"profile {self.name!r}: alphabet must be >= 2 distinct lower-case letters, got {self.alphabet!r}")
        lo, hi = self.input_len
        if not (1 <= lo <= hi):
            raise ValueError(f"profile {self.name!r}: input_len must satisfy 1 <= min <= max, got {self.input_len}")
        if self.max_result_len < hi:
            raise ValueError(f"profile {self.name!r}: max_result_len {self.max_result_len} < longest input {hi}")
        if not (1 <= self.train_depth and 1 <= self.ood_depth):
            raise ValueError(f"profile {self.name!r}: depths must be >= 1")

    def with_overrides(self, **overrides: Any) -> Profile:
        """A copy with the non-``None`` overrides applied (lists become tuples), validated."""
        known = {f.name for f in fields(self)} - {"name"}
        bad = set(overrides) - known
        if bad:
            raise TypeError(f"unknown profile field(s) {sorted(bad)}; known: {sorted(known)}")
        clean = {k: v for k, v in overrides.items() if v is not None}
        for k in ("skills", "routings", "input_len"):
            # A string is a sequence too: skills="Rev" would become ('R', 'e', 'v').
            if k in clean and (isinstance(clean[k], (str, bytes)) or not isinstance(clean[k], (Sequence, np.ndarray))):
                raise TypeError(f"profile field {k} must be a list or tuple, got {clean[k]!r}"
                                + (f" (did you mean [{clean[k]!r}]?)" if isinstance(clean[k], str) else ""))
            if k in clean:
                clean[k] = tuple(clean[k])
        if "alphabet" in clean and not isinstance(clean["alphabet"], str):
            clean["alphabet"] = "".join(clean["alphabet"])
        out = replace(self, **clean)
        out.validate()
        return out


SMALL = Profile(
    name="small",
    skills=("Rev", "Sort", "RotL", "Shift", "Flip", "Swap"),
    routings=("Chain", "CatX", "PrefixX", "Left"),
    alphabet="abcdef",
    input_len=(2, 4),
    max_result_len=8,
)

PAPER = Profile(
    name="paper",
    skills=tuple(SKILLS),
    routings=tuple(ROUTINGS),
    alphabet="abcdefghijklmnop",
    input_len=(3, 6),
    max_result_len=16,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMALL, PAPER)}


def get_profile(name: str) -> Profile:
    """The preset called ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]
