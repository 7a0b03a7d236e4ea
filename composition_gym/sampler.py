"""Sampling problems from a support: hierarchical draws with bounded rejection (:class:`CascadeSampler`).

The support (:mod:`composition_gym.supports`) says which cascades are allowed; the sampler draws
from it the way every environment does — depth, routing skeleton, skills, then inputs — and
refuses at construction a setting it could not sample, so a reset never hangs.
"""

from __future__ import annotations

import bisect
import itertools

import numpy as np

from composition_gym.cascade import Cascade, Problem
from composition_gym.identifiability import can_be_identifiable, removable_steps
from composition_gym.supports import BASE, EXPOSED, POOL_LIMIT, Support, fitting_values


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


__all__ = ["CascadeSampler"]
