"""Supports and splits: deterministic sets of allowed cascades (sampling them: :mod:`composition_gym.sampler`).

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

Options (the ``-v1`` ids use the first two):

* ``identifiable``: only problems where replacing any single step by the identity (``z_t =
  z_{t-1}``, later steps unchanged on the same inputs) changes the answer (:func:`removable_steps`).
  A cascade with no identifiable input among :data:`WITNESS_PROBES` fixed probe inputs
  (:func:`can_be_identifiable`) is outside the support, so split membership stays a deterministic
  function of the cascade.
* ``share_atomic``: depth-1 cascades (single modules, not compositions) belong to every ``hash``
  split, so a depth-mixed SFT set covers every atomic module.
* ``exposure`` (``pairs`` / ``routing_skill`` only): the held-out cascades are split by a seeded
  hash into an *exposable* half and an *evaluation* half.  With ``exposure = e > 0`` the ``_id``
  split also holds the exposable half and draws from it with probability ``e``; the ``_ood`` split
  holds the evaluation half only.  Both sides must use ``e > 0`` for that guarantee; ``e = 0`` is
  the plain family (the ``_ood`` split is every held-out cascade).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from composition_gym.cascade import Cascade, Problem
from composition_gym.identifiability import can_be_identifiable
from composition_gym.modules import apply_step
from composition_gym.profiles import Profile

HASH_BUCKETS = {"sft": (0.0, 0.5), "rl": (0.5, 0.75), "unseen": (0.75, 1.0)}
HELD_OUT_FRACTION = 0.25
EXPOSABLE_FRACTION = 0.5  # of the held-out cascades: the part that ``exposure`` may show in training
#: The split families and their splits (an experiment's family, e.g. the reproduction's ``compose``,
#: names the split family it uses: :attr:`composition_gym.benchmarks.experiment.claims.Family.splits`).
SPLIT_FAMILIES: dict[str, tuple[str, ...]] = {
    "hash": ("sft", "rl", "unseen"),
    "pairs": ("pairs_id", "pairs_ood"),
    "routing_skill": ("routing_skill_id", "routing_skill_ood"),
}
SPLITS: tuple[str, ...] = ("all",) + tuple(itertools.chain(*SPLIT_FAMILIES.values()))
EXPOSURE_SPLITS = SPLIT_FAMILIES["pairs"] + SPLIT_FAMILIES["routing_skill"]
ENUMERATION_LIMIT = 2_000_000  # cascades; above this a support is only ever sampled
POOL_LIMIT = 50_000  # a support that rejection sampling cannot find is enumerated up to this size
MAX_DEPTH = 32  # never sampled beyond; default profiles stop fitting max_result_len at depth 13 (small), 15 (paper)
BASE, EXPOSED = "base", "exposed"  # the parts of a support (see Support.part)


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


def fitting_values(cascade: Cascade, x: str, y: str, profile: Profile) -> tuple[str, ...] | None:
    """:meth:`Cascade.execute`, or ``None`` as soon as a result is empty or longer than
    ``max_result_len`` (stopping early keeps deep, overflowing draws cheap)."""
    cap, alphabet = profile.max_result_len, profile.alphabet
    values, prev = [], x
    for r, s in cascade.steps:
        prev = apply_step(r, s, prev, x, y, alphabet)
        if not 1 <= len(prev) <= cap:
            return None
        values.append(prev)
    return tuple(values)


@dataclass(frozen=True)
class Support:
    """The cascades of ``profile`` at ``depths`` that ``split`` allows.

    Args:
        profile: which modules exist.
        split: one of :data:`SPLITS`.
        depths: the allowed depths L (each in ``1..MAX_DEPTH``).
        split_seed: an int; seeds the hash partition and the held-out sets.
        identifiable: keep only cascades that can be identifiable (see the module docstring).
        share_atomic: depth-1 cascades belong to every ``hash`` split.
        exposure: in ``[0, 1]``; for the ``pairs`` and ``routing_skill`` families only.
        depth_weights: one weight per depth (``None``: uniform), used by :class:`~composition_gym.sampler.CascadeSampler`.
    """

    profile: Profile
    split: str = "all"
    depths: tuple[int, ...] = (3,)
    split_seed: int = 0
    identifiable: bool = False
    share_atomic: bool = False
    exposure: float = 0.0
    depth_weights: tuple[float, ...] | None = None
    held_out_skill_pairs: frozenset = field(init=False, repr=False)
    held_out_routing_skill: frozenset = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; known: {list(SPLITS)}")
        if not self.depths or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in self.depths):
            raise ValueError(f"depths must be integers >= 1, got {self.depths!r}")
        if max(self.depths) > MAX_DEPTH:
            raise ValueError(f"depth {max(self.depths)} exceeds MAX_DEPTH={MAX_DEPTH}, the deepest cascade "
                             f"this package samples")
        if isinstance(self.split_seed, np.integer):
            object.__setattr__(self, "split_seed", int(self.split_seed))
        if not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool):
            raise TypeError(f"split_seed must be an int, got {self.split_seed!r} of type {type(self.split_seed).__name__}")
        for name in ("identifiable", "share_atomic"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        e = self.exposure
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= e <= 1.0:
            raise ValueError(f"exposure must be a number in [0, 1], got {e!r}")
        if e and self.split not in EXPOSURE_SPLITS:
            raise ValueError(f"exposure applies to the splits {list(EXPOSURE_SPLITS)} only, not {self.split!r}")
        object.__setattr__(self, "exposure", float(e))
        if self.depth_weights is not None:
            w = tuple(self.depth_weights)
            if (len(w) != len(self.depths) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in w)
                    or not all(math.isfinite(v) and v >= 0 for v in w) or not sum(w) > 0):
                raise ValueError(f"depth_weights must be {len(self.depths)} finite weights >= 0 (one per depth "
                                 f"{list(self.depths)}) with a positive sum, got {self.depth_weights!r}")
            object.__setattr__(self, "depth_weights", tuple(float(v) for v in w))
        skills, routings = self.profile.skills, self.profile.routings
        pairs = _held_out(list(itertools.product(skills, skills)), self.split_seed, "pairs")
        rs = _held_out(list(itertools.product(routings, skills)), self.split_seed, "routing_skill")
        object.__setattr__(self, "held_out_skill_pairs", pairs)
        object.__setattr__(self, "held_out_routing_skill", rs)

    @property
    def mixes_exposure(self) -> bool:
        """Whether training draws held-out (exposable) cascades at rate :attr:`exposure`."""
        return self.exposure > 0 and self.split.endswith("_id") and self.split in EXPOSURE_SPLITS

    def size(self) -> int:
        """How many cascades the depth range holds before the split's predicate."""
        n = len(self.profile.skills) * len(self.profile.routings)
        return sum(n**d for d in self.depths)

    def part(self, cascade: Cascade) -> str | None:
        """Which part of the split's predicate ``cascade`` falls in: :data:`BASE`, :data:`EXPOSED` (an
        exposable held-out cascade that an ``_id`` split shows at rate :attr:`exposure`) or ``None``
        (outside).  Ignores :attr:`identifiable`; see :meth:`contains`."""
        if cascade.depth not in self.depths:
            return None
        if any(r not in self.profile.routings or s not in self.profile.skills for r, s in cascade.steps):
            return None
        split = self.split
        if split == "all":
            return BASE
        if split in HASH_BUCKETS:
            if self.share_atomic and cascade.depth == 1:
                return BASE
            lo, hi = HASH_BUCKETS[split]
            return BASE if lo <= unit_hash(self.split_seed, cascade.key()) < hi else None
        ood = split.endswith("_ood")
        if split.startswith("pairs"):
            sk = cascade.skills
            hit = any((a, b) in self.held_out_skill_pairs for a, b in zip(sk, sk[1:]))
        else:
            hit = any(step in self.held_out_routing_skill for step in cascade.steps)
        if not hit:
            return None if ood else BASE
        if not self.exposure:
            return BASE if ood else None
        exposable = unit_hash(self.split_seed, "exposable", cascade.key()) < EXPOSABLE_FRACTION
        if ood:
            return None if exposable else BASE
        return EXPOSED if exposable else None

    def contains(self, cascade: Cascade) -> bool:
        """Whether ``cascade`` is in this support."""
        if self.part(cascade) is None:
            return False
        return not self.identifiable or can_be_identifiable(self.profile, cascade)

    def enumerate(self):
        """Every cascade of the support, depth by depth (only where :meth:`size` is small)."""
        if self.size() > ENUMERATION_LIMIT:
            raise ValueError(f"support has {self.size()} candidate cascades; too many to enumerate "
                             f"(limit {ENUMERATION_LIMIT})")
        steps = list(itertools.product(self.profile.routings, self.profile.skills))
        for d in self.depths:
            for combo in itertools.product(steps, repeat=d):
                c = Cascade(combo)
                if self.contains(c):
                    yield c
