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

import bisect
import hashlib
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from composition_gym.cascade import Cascade, Problem
from composition_gym.identifiability import WITNESS_PROBES, can_be_identifiable, removable_steps  # noqa: F401 (re-exported)
from composition_gym.modules import apply_step
from composition_gym.profiles import Profile

HASH_BUCKETS = {"sft": (0.0, 0.5), "rl": (0.5, 0.75), "unseen": (0.75, 1.0)}
HELD_OUT_FRACTION = 0.25
EXPOSABLE_FRACTION = 0.5  # of the held-out cascades: the part that ``exposure`` may show in training
FAMILIES: dict[str, tuple[str, ...]] = {
    "hash": ("sft", "rl", "unseen"),
    "pairs": ("pairs_id", "pairs_ood"),
    "routing_skill": ("routing_skill_id", "routing_skill_ood"),
}
SPLITS: tuple[str, ...] = ("all",) + tuple(itertools.chain(*FAMILIES.values()))
EXPOSURE_SPLITS = FAMILIES["pairs"] + FAMILIES["routing_skill"]
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
        depth_weights: one weight per depth (``None``: uniform), used by :class:`CascadeSampler`.
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


class CascadeSampler:
    """Samples :class:`Problem` instances from a :class:`Support`, hierarchically.

    First the depth (uniform per draw, or by ``depth_weights`` once per problem) and the routing skeleton, then a skill per
    step, then the input strings; a draw outside the support, whose results are empty or longer
    than ``profile.max_result_len``, or (``identifiable``) with a removable step, is rejected and
    drawn again (never truncated).  With ``exposure = e`` on an ``_id`` split, each problem first
    picks its part: an exposable held-out cascade with probability ``e`` (at the depths that have
    one), else a plain ID cascade.

    Every rejection loop is bounded.  At construction each depth is probed with a fixed generator:
    unless :data:`PROBE_HITS` of at most :data:`PROBE_DRAWS` cascade draws yield a problem, the
    setting is refused with a ``ValueError`` naming the limit (e.g. the deepest depth that fits).
    A probed support then fails a reset with probability below ``(1 - PROBE_HITS/PROBE_DRAWS) **
    MAX_CASCADE_TRIES``, i.e. never in practice.

    Raises:
        ValueError: at construction, when the support holds no cascade, or too few problems fit.
    """

    MAX_CASCADE_TRIES = 20_000
    MAX_INPUT_TRIES = 20
    PROBE_DRAWS = 500
    PROBE_HITS = 5
    MEMO_LIMIT = 1 << 16  # drawn (routing, skill) indices -> (cascade, part); cleared when full

    def __init__(self, support: Support):
        self.support = support
        self.profile = support.profile
        self._pool: dict[tuple[str | None, int | None], list[Cascade]] | None = None
        self._memo: dict[tuple, tuple[Cascade, str | None]] = {}
        depths = support.depths
        weights = support.depth_weights
        live = [d for i, d in enumerate(depths) if weights is None or weights[i] > 0]
        self._targets = (BASE, EXPOSED) if support.mixes_exposure else (None,)
        self._depth_tables: dict[str | None, tuple[tuple[int, ...], list[float] | None]] = {}
        probe = np.random.default_rng(0)
        for target in self._targets:
            found = []
            # Deepest first: an infeasible depth is refused before the cheap ones are probed.
            for d in sorted(live, reverse=True):
                hits, counts = self._probe(probe, d, target)
                if hits >= self.PROBE_HITS:
                    found.append(d)
                elif target != EXPOSED:
                    self._settle(probe, d, target, counts)
                    if self._pool is not None:
                        found = [k for k in live if self._pool[target, k]]
                        if weights is not None and target != EXPOSED and found != live:
                            raise ValueError(f"split {support.split!r} has no cascade at depths "
                                             f"{sorted(set(live) - set(found))}; give them depth weight 0")
                        break
            if not found:
                raise ValueError(f"exposure={support.exposure} but split {support.split!r} at depths {list(depths)} "
                                 f"has no exposable held-out cascade (profile {self.profile.name!r})")
            self._depth_tables[target] = self._table(sorted(found))

    # ----------------------------------------------------------------- construction
    def _table(self, found: list[int]) -> tuple[tuple[int, ...], list[float] | None]:
        """(depths, cumulative weights or ``None`` for the uniform v0 rule) over ``found``."""
        s = self.support
        if s.depth_weights is None and list(found) == list(s.depths):
            return tuple(found), None
        w = [1.0 if s.depth_weights is None else s.depth_weights[s.depths.index(d)] for d in found]
        return tuple(found), list(itertools.accumulate(v / sum(w) for v in w))

    def _probe(self, rng: np.random.Generator, depth: int, target: str | None) -> tuple[int, dict[str, int]]:
        """Problems found at ``depth`` in up to :data:`PROBE_DRAWS` cascade draws (stops at
        :data:`PROBE_HITS`), and how far the draws got (``in_split``, ``fit``)."""
        counts = {"draws": 0, "in_split": 0, "fit": 0}
        hits = 0
        for _ in range(self.PROBE_DRAWS):
            counts["draws"] += 1
            cascade = self._attempt(rng, target, depth)
            if cascade is None:
                continue
            counts["in_split"] += 1
            problem, fit = self._inputs(rng, cascade)
            counts["fit"] += fit
            if problem is not None:
                hits += 1
                if hits >= self.PROBE_HITS:
                    break
        return hits, counts

    def _settle(self, rng: np.random.Generator, depth: int, target: str | None, counts: dict[str, int]) -> None:
        """A probe failed at ``depth``: enumerate a small support, else raise naming the limit."""
        s, p = self.support, self.profile
        if counts["in_split"] < self.PROBE_HITS and s.size() <= POOL_LIMIT:
            # Too sparse for rejection: settle membership exhaustively and sample from the list.
            pool = list(s.enumerate())
            if not pool:
                raise ValueError(f"split {s.split!r} at depths {list(s.depths)} leaves no cascades "
                                 f"for profile {p.name!r}" + (" (identifiable=True)" if s.identifiable else ""))
            self._pool = {(t, d): [c for c in pool if (t is None or s.part(c) == t) and d in (None, c.depth)]
                          for t in self._targets for d in (None, *s.depths)}
            hits = sum(self._inputs(rng, self._attempt(rng, target))[0] is not None for _ in range(self.PROBE_DRAWS))
            if hits:
                return
            raise ValueError(f"no cascade of split {s.split!r} at depths {list(s.depths)} yields results "
                             f"within max_result_len={p.max_result_len}")
        where = f"split {s.split!r} at depth {depth} of profile {p.name!r}"
        if counts["in_split"] < self.PROBE_HITS:
            raise ValueError(f"{where} appears empty: {counts['in_split']} of {counts['draws']} sampled cascades "
                             f"are in it (need {self.PROBE_HITS}); too sparse to sample")
        if counts["fit"] < self.PROBE_HITS:
            best = self._deepest_fitting(rng, depth)
            raise ValueError(f"depth {depth} is too deep for max_result_len={p.max_result_len} ({where}): only "
                             f"{counts['fit']} of {counts['in_split']} sampled cascades had inputs whose every "
                             f"result fits (need {self.PROBE_HITS}); the deepest depth that fits is {best}")
        raise ValueError(f"identifiable=True leaves too few problems in {where}: almost every sampled problem "
                         f"whose results fit has a removable step; lower the depth")

    def _deepest_fitting(self, rng: np.random.Generator, depth: int) -> int:
        """The deepest depth below ``depth`` at which uniformly drawn cascades of the profile (any
        split) have inputs whose every result fits, :data:`PROBE_HITS` times in :data:`PROBE_DRAWS`
        (a bisection: fitting only gets rarer with depth, up to sampling noise)."""
        p = self.profile
        steps = list(itertools.product(p.routings, p.skills))

        def fits(d: int) -> bool:
            hits = 0
            for _ in range(self.PROBE_DRAWS):
                cascade = Cascade(tuple(steps[i] for i in rng.integers(len(steps), size=d)))
                x, y = p.draw_string(rng), p.draw_string(rng) if p.uses_y else ""
                hits += fitting_values(cascade, x, y, p) is not None
                if hits >= self.PROBE_HITS:
                    return True
            return False

        lo, hi = 0, depth  # invariant: lo fits (0 trivially), hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    # ----------------------------------------------------------------- sampling
    def _attempt(self, rng: np.random.Generator, target: str | None, depth: int | None = None) -> Cascade | None:
        """One cascade draw of the ``target`` part (``None``: any part), or ``None`` if rejected."""
        if self._pool is not None:
            pool = self._pool[target, depth]
            return pool[int(rng.random() * len(pool))] if pool else None
        p = self.profile
        n_r, n_s, memo = len(p.routings), len(p.skills), self._memo
        deepest = max(self.support.depths)
        # One generator call per attempt: numpy's per-call overhead dwarfs the draws themselves.
        u = rng.random(1 + 2 * deepest).tolist()
        # v0 rule (no depth_weights): a depth per attempt, so rejection skews a range toward the
        # depths it accepts most.  With weights the depth is fixed per problem (see sample).
        d = self._depth_tables[target][0][int(u[0] * len(self._depth_tables[target][0]))] if depth is None else depth
        key = (tuple(int(v * n_r) for v in u[1 : 1 + d]), tuple(int(v * n_s) for v in u[1 + deepest : 1 + deepest + d]))
        hit = memo.get(key)
        if hit is None:
            # Building and hashing a cascade costs more than drawing it: remember the verdict.
            c = Cascade(tuple((p.routings[r], p.skills[s]) for r, s in zip(*key)))
            hit = memo[key] = (c, self.support.part(c))
            if len(memo) > self.MEMO_LIMIT:
                memo.clear()
        part = hit[1]
        if part is None or (target is not None and part != target):
            return None
        return hit[0]

    def _inputs(self, rng: np.random.Generator, cascade: Cascade | None) -> tuple[Problem | None, bool]:
        """Up to :data:`MAX_INPUT_TRIES` inputs for ``cascade``: the first problem that fits (and is
        identifiable if asked), and whether any input fitted at all."""
        if cascade is None:
            return None, False
        p, identifiable = self.profile, self.support.identifiable
        fitted, uses_y = False, p.uses_y
        for _ in range(self.MAX_INPUT_TRIES):
            x = p.draw_string(rng)
            y = p.draw_string(rng) if uses_y else ""
            values = fitting_values(cascade, x, y, p)
            if values is None:
                continue
            if identifiable:
                # Membership is the cascade's (cached): asked once, at the first input that fits.
                if not fitted and not can_be_identifiable(p, cascade):
                    return None, True  # outside the support: no input will do
                fitted = True
                if removable_steps(cascade, x, y, p.alphabet, values, first_only=True):
                    continue
            return Problem(cascade, x, y, values), True
        return None, fitted

    def sample_cascade(self, rng: np.random.Generator) -> Cascade:
        """One cascade of the support, ignoring inputs (``RuntimeError`` if rejection keeps failing)."""
        target, depth = self._target(rng)
        for _ in range(self.MAX_CASCADE_TRIES):
            c = self._attempt(rng, target, depth)
            if c is not None and (not self.support.identifiable or can_be_identifiable(self.profile, c)):
                return c
        raise RuntimeError(f"no cascade of the support found in {self.MAX_CASCADE_TRIES} draws")

    def _target(self, rng: np.random.Generator) -> tuple[str | None, int | None]:
        """The part and (with ``depth_weights``) the depth of the next problem, fixed before any
        rejection so that the documented rates hold exactly; no generator call in the v0 setting."""
        target = None
        if self.support.mixes_exposure:
            target = EXPOSED if rng.random() < self.support.exposure else BASE
        depths, cum = self._depth_tables[target]
        if cum is None:
            return target, None
        return target, depths[min(bisect.bisect_right(cum, rng.random()), len(depths) - 1)]

    def sample(self, rng: np.random.Generator) -> Problem:
        """One problem: a cascade of the support with inputs whose every result fits."""
        target, depth = self._target(rng)
        for _ in range(self.MAX_CASCADE_TRIES):
            problem, _ = self._inputs(rng, self._attempt(rng, target, depth))
            if problem is not None:
                return problem
        raise RuntimeError(f"no problem found in {self.MAX_CASCADE_TRIES} cascade draws "
                           f"(the construction probe makes this vanishingly rare)")
