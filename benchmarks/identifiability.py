"""What the identifiability filter removes, per profile and depth (docs/environment.md's table).

``python -m composition_gym.benchmarks.identifiability`` prints, for both profiles at depths 1-4,
the share of cascades outside every identifiable support and the share of problems, drawn as the
v0 ids draw them, that have a removable step.
"""

from __future__ import annotations

import itertools

import numpy as np

from composition_gym.cascade import Cascade
from composition_gym.identifiability import can_be_identifiable, removable_steps
from composition_gym.profiles import PROFILES, Profile
from composition_gym.sampler import CascadeSampler
from composition_gym.supports import Support


def removal_shares(profile: Profile, depth: int, cascades: int = 20_000, problems: int = 4_000) -> dict:
    """The share of cascades of ``depth`` outside identifiable supports (exhaustive when there are at
    most ``cascades`` of them, else that many uniform draws) and the share of problems with a
    removable step among ``problems`` drawn as the v0 ids draw them (split ``all``)."""
    steps = list(itertools.product(profile.routings, profile.skills))
    total = len(steps) ** depth
    rng = np.random.default_rng(depth)
    if total <= cascades:
        drawn = [Cascade(c) for c in itertools.product(steps, repeat=depth)]
    else:
        drawn = [Cascade(tuple(steps[i] for i in rng.integers(len(steps), size=depth))) for _ in range(cascades)]
    sampler = CascadeSampler(Support(profile, "all", (depth,)))
    removed = 0
    for _ in range(problems):
        p = sampler.sample(rng)
        removed += bool(removable_steps(p.cascade, p.x, p.y, profile.alphabet, p.values, first_only=True))
    return {"profile": profile.name, "depth": depth, "cascades": total, "exhaustive": total <= cascades,
            "cascades_removed": 1 - float(np.mean([can_be_identifiable(profile, c) for c in drawn])),
            "problems_removed": removed / problems}


def main() -> None:
    """Print :func:`removal_shares` for both profiles at depths 1-4 as a markdown table."""
    print("| profile | L | cascades removed | problems removed (of v0-style draws) |")
    print("|---|---|---|---|")
    for profile in PROFILES.values():
        for depth in (1, 2, 3, 4):
            r = removal_shares(profile, depth)
            how = "all" if r["exhaustive"] else "20k of"
            print(f"| {r['profile']} | {depth} | {100 * r['cascades_removed']:.1f} % ({how} {r['cascades']:,}) "
                  f"| {100 * r['problems_removed']:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
