"""Identifiable problems: every latent step must matter to the answer.

A problem is *identifiable* when replacing any single step by the identity (``z_t = z_{t-1}``, the
later steps unchanged on the same inputs) changes the answer (:func:`removable_steps` lists the
steps for which it does not).  Outcome reward then certifies the whole composition: no step can be
skipped, undone (``Sort`` after a permutation) or be a no-op on the inputs (``IfEven`` on an odd
string).  A cascade that is identifiable on none of :data:`WITNESS_PROBES` fixed inputs
(:func:`can_be_identifiable`) is outside every ``identifiable`` support
(:class:`~composition_gym.supports.Support`).

``python -m composition_gym.benchmarks.identifiability`` prints the share of cascades and of
problems that the filter removes per profile and depth (the table in docs/environment.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from composition_gym.cascade import Cascade
from composition_gym.modules import apply_step
from composition_gym.profiles import Profile

WITNESS_PROBES = 32  # fixed inputs on which a cascade must be identifiable at least once
WITNESS_SEED = 9_151  # seeds the probe inputs (independent of split_seed: a property of the cascade)


def removable_steps(cascade: Cascade, x: str, y: str, alphabet: str,
                    values: tuple[str, ...] | list[str] | None = None, first_only: bool = False) -> list[int]:
    """The 0-based steps ``t`` whose replacement by the identity leaves the answer unchanged.

    Step ``t`` replaced by the identity passes ``z_{t-1}`` (``x`` for the first step) on; the later
    steps run unchanged on the same inputs.  A problem is *identifiable* when this list is empty:
    then the answer depends on every latent selection.
    """
    if values is None:
        values = cascade.execute(x, y, alphabet)
    steps, out = cascade.steps, []
    for t in range(len(steps)):
        prev = values[t - 1] if t else x
        removable = prev == values[t]
        # Once the ablated run meets the true one, the rest is identical: stop early.
        for j in range(t + 1, len(steps)):
            if removable:
                break
            r, s = steps[j]
            prev = apply_step(r, s, prev, x, y, alphabet)
            removable = prev == values[j]
        if removable:
            out.append(t)
            if first_only:
                break
    return out


@lru_cache(maxsize=16)
def _probe_inputs(profile: Profile) -> tuple[tuple[str, str], ...]:
    rng = np.random.default_rng(WITNESS_SEED)
    return tuple((profile.draw_string(rng), profile.draw_string(rng) if profile.uses_y else "")
                 for _ in range(WITNESS_PROBES))


#: Verdicts of :func:`can_be_identifiable` kept per process: every cascade of the small profile up
#: to depth 4 fits (24 + 576 + 13,824 + 331,776), so a long run stops paying for membership once it
#: has met a cascade.
VERDICT_CACHE = 1 << 19


@lru_cache(maxsize=VERDICT_CACHE)
def can_be_identifiable(profile: Profile, cascade: Cascade) -> bool:
    """Whether ``cascade`` is identifiable on one of :data:`WITNESS_PROBES` fixed inputs of ``profile``.

    Cascades for which this is false (e.g. ``Sort`` after a permutation, or two ``Sort``) are
    outside every ``identifiable`` support.  Results need not fit ``max_result_len`` here: this is a
    property of the cascade alone, so it is computed once per cascade (:data:`VERDICT_CACHE`).
    """
    for x, y in _probe_inputs(profile):
        if not removable_steps(cascade, x, y, profile.alphabet, first_only=True):
            return True
    return False
