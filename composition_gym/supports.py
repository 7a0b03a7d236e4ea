"""Supports and splits: deterministic sets of allowed cascades, and sampling over them.

A *split* is a named predicate on cascades; together with a depth range it defines a *support*.
Splits come in *families* whose members are disjoint by construction (they partition the cascades
by one deterministic function of the cascade), so an ID and an OOD split of one family can never
share a cascade:

==================  =====================================================================
family              splits
==================  =====================================================================
(none)              ``all``: every cascade of the depth range
``hash``            ``sft`` / ``rl`` / ``unseen``: a seeded hash of the whole cascade falls in
                    ``[0, .5)`` / ``[.5, .75)`` / ``[.75, 1)`` — SFT compositions, a disjoint RL
                    composition set, and compositions never trained on
``pairs``           ``pairs_id`` / ``pairs_ood``: no / at least one consecutive skill pair
                    ``(s_t, s_{t+1})`` from a seeded held-out set
``routing_skill``   ``routing_skill_id`` / ``routing_skill_ood``: no / at least one step whose
                    ``(routing, skill)`` is in a seeded held-out set
==================  =====================================================================

Depth is a family too: the depth-4 OOD ids share no cascade with depth-3 training ids.  Held-out
sets keep every module in the ID split (each skill and routing keeps an allowed partner), so OOD
tasks are new *compositions* of familiar modules.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np

from composition_gym.cascade import Cascade, Problem
from composition_gym.profiles import Profile

HASH_BUCKETS = {"sft": (0.0, 0.5), "rl": (0.5, 0.75), "unseen": (0.75, 1.0)}
HELD_OUT_FRACTION = 0.25
FAMILIES: dict[str, tuple[str, ...]] = {
    "hash": ("sft", "rl", "unseen"),
    "pairs": ("pairs_id", "pairs_ood"),
    "routing_skill": ("routing_skill_id", "routing_skill_ood"),
}
SPLITS: tuple[str, ...] = ("all",) + tuple(itertools.chain(*FAMILIES.values()))
ENUMERATION_LIMIT = 2_000_000  # cascades; above this a support is only ever sampled


def unit_hash(*parts: object) -> float:
    """A deterministic, platform-independent hash of ``parts`` into ``[0, 1)``."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _held_out(pairs: list[tuple[str, str]], seed: int, tag: str) -> frozenset[tuple[str, str]]:
    """About a quarter of ``pairs``, chosen by hash, never the last allowed partner of a module."""
    target = round(HELD_OUT_FRACTION * len(pairs))
    left_count = {a: sum(p[0] == a for p in pairs) for a, _ in pairs}
    right_count = {b: sum(p[1] == b for p in pairs) for _, b in pairs}
    chosen: set[tuple[str, str]] = set()
    for a, b in sorted(pairs, key=lambda p: unit_hash(seed, tag, *p)):
        if len(chosen) == target:
            break
        if left_count[a] > 1 and right_count[b] > 1:
            chosen.add((a, b))
            left_count[a] -= 1
            right_count[b] -= 1
    return frozenset(chosen)


@dataclass(frozen=True)
class Support:
    """The cascades of ``profile`` at ``depths`` that ``split`` allows.

    Args:
        profile: which modules exist.
        split: one of :data:`SPLITS`.
        depths: the allowed depths L (each >= 1).
        split_seed: seeds the hash partition and the held-out sets.
    """

    profile: Profile
    split: str = "all"
    depths: tuple[int, ...] = (3,)
    split_seed: int = 0
    held_out_skill_pairs: frozenset = field(init=False, repr=False)
    held_out_routing_skill: frozenset = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; known: {list(SPLITS)}")
        if not self.depths or any(not isinstance(d, int) or d < 1 for d in self.depths):
            raise ValueError(f"depths must be integers >= 1, got {self.depths!r}")
        skills, routings = self.profile.skills, self.profile.routings
        pairs = _held_out(list(itertools.product(skills, skills)), self.split_seed, "pairs")
        rs = _held_out(list(itertools.product(routings, skills)), self.split_seed, "routing_skill")
        object.__setattr__(self, "held_out_skill_pairs", pairs)
        object.__setattr__(self, "held_out_routing_skill", rs)

    @property
    def family(self) -> str | None:
        """The family :attr:`split` belongs to (``None`` for ``all``)."""
        return next((f for f, members in FAMILIES.items() if self.split in members), None)

    def size(self) -> int:
        """How many cascades the depth range holds before the split's predicate."""
        n = len(self.profile.skills) * len(self.profile.routings)
        return sum(n**d for d in self.depths)

    def contains(self, cascade: Cascade) -> bool:
        """Whether ``cascade`` is in this support."""
        if cascade.depth not in self.depths:
            return False
        if any(r not in self.profile.routings or s not in self.profile.skills for r, s in cascade.steps):
            return False
        split = self.split
        if split == "all":
            return True
        if split in HASH_BUCKETS:
            lo, hi = HASH_BUCKETS[split]
            return lo <= unit_hash(self.split_seed, cascade.key()) < hi
        if split.startswith("pairs"):
            sk = cascade.skills
            hit = any((a, b) in self.held_out_skill_pairs for a, b in zip(sk, sk[1:]))
        else:
            hit = any(step in self.held_out_routing_skill for step in cascade.steps)
        return hit == split.endswith("_ood")

    def enumerate(self):
        """Every cascade of the support, depth by depth (only where :meth:`size` is small)."""
        if self.size() > ENUMERATION_LIMIT:
            raise ValueError(f"support has {self.size()} candidate cascades; too many to enumerate")
        steps = list(itertools.product(self.profile.routings, self.profile.skills))
        for d in self.depths:
            for combo in itertools.product(steps, repeat=d):
                c = Cascade(combo)
                if self.contains(c):
                    yield c


class CascadeSampler:
    """Samples :class:`Problem` instances from a :class:`Support`, hierarchically.

    First the depth and the routing skeleton, then a skill per step, then the input strings;
    a draw outside the support, or whose results are empty or longer than
    ``profile.max_result_len``, is rejected and drawn again (never truncated).

    Raises:
        ValueError: at construction, when the support holds no cascade that fits.
    """

    MAX_CASCADE_TRIES = 2000
    MAX_INPUT_TRIES = 20
    MEMO_LIMIT = 1 << 16  # drawn (routing, skill) indices -> (cascade, in support); cleared when full

    def __init__(self, support: Support):
        self.support = support
        self.profile = support.profile
        self._pool: list[Cascade] | None = None
        self._memo: dict[tuple, tuple[Cascade, bool]] = {}
        probe = np.random.default_rng(0)
        try:
            self.sample(probe)
        except RuntimeError:
            # Rejection found nothing: settle it exhaustively where we can.
            if support.size() > ENUMERATION_LIMIT:
                raise ValueError(f"split {support.split!r} at depths {support.depths} of profile "
                                 f"{self.profile.name!r} appears empty: no cascade found by sampling") from None
            self._pool = list(support.enumerate())
            if not self._pool:
                raise ValueError(f"split {support.split!r} at depths {support.depths} leaves no cascades "
                                 f"for profile {self.profile.name!r}") from None
            try:
                self.sample(probe)
            except RuntimeError:
                raise ValueError(f"no cascade of split {support.split!r} at depths {support.depths} yields "
                                 f"results within max_result_len={self.profile.max_result_len}") from None

    def sample_cascade(self, rng: np.random.Generator) -> Cascade:
        """One cascade of the support (``RuntimeError`` if rejection keeps failing)."""
        if self._pool is not None:
            return self._pool[int(rng.random() * len(self._pool))]
        p, depths = self.profile, self.support.depths
        n_r, n_s, memo = len(p.routings), len(p.skills), self._memo
        deepest = max(depths)
        for _ in range(self.MAX_CASCADE_TRIES):
            # One generator call per attempt: numpy's per-call overhead dwarfs the draws themselves.
            u = rng.random(1 + 2 * deepest).tolist()
            d = depths[int(u[0] * len(depths))]
            key = (tuple(int(v * n_r) for v in u[1 : 1 + d]), tuple(int(v * n_s) for v in u[1 + deepest : 1 + deepest + d]))
            hit = memo.get(key)
            if hit is None:
                # Building and hashing a cascade costs more than drawing it: remember the verdict.
                c = Cascade(tuple((p.routings[r], p.skills[s]) for r, s in zip(*key)))
                hit = memo[key] = (c, self.support.contains(c))
                if len(memo) > self.MEMO_LIMIT:
                    memo.clear()
            if hit[1]:
                return hit[0]
        raise RuntimeError("no cascade of the support found by rejection sampling")

    def _string(self, rng: np.random.Generator) -> str:
        lo, hi = self.profile.input_len
        alphabet = self.profile.alphabet
        u = rng.random(1 + hi).tolist()
        n = lo + int(u[0] * (hi - lo + 1))
        return "".join(alphabet[int(v * len(alphabet))] for v in u[1 : 1 + n])

    def sample(self, rng: np.random.Generator) -> Problem:
        """One problem: a cascade of the support with inputs whose every result fits."""
        p = self.profile
        for _ in range(self.MAX_CASCADE_TRIES):
            cascade = self.sample_cascade(rng)
            for _ in range(self.MAX_INPUT_TRIES):
                x = self._string(rng)
                y = self._string(rng) if p.uses_y else ""
                values = cascade.execute(x, y, p.alphabet)
                if all(1 <= len(v) <= p.max_result_len for v in values):
                    return Problem(cascade, x, y, tuple(values))
        raise RuntimeError("no problem with results within max_result_len found")
