"""The protocol's checks: its premises before any run, and what each run's evaluation could have seen.

:func:`premise_checks` runs once per SFT support before training (SFT covers every module and shares
no composition with the OOD sets; the beyond set lies partly outside the SFT support);
:func:`leakage` runs in every run and records, by cascade key, which evaluated problems a training
stage of that run could have drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from composition_gym.agents import seeds
from composition_gym.benchmarks.experiment.cells import Cell, family_ids, prior_id, run_ids
from composition_gym.benchmarks.experiment.claims import CONDITIONS, ENV_VERSION, FAMILIES
from composition_gym.sampler import CascadeSampler


def leakage(config: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """How many evaluated problems of each set any training stage of this run could have drawn.

    The problems are those :func:`evaluate_sets` plays (same ids, same seeds), taken by cascade key
    from the environments themselves (no model); each is tested against the support of every
    training set of the run: the prior, SFT and, for an arm, its own set.  A set with a nonzero count
    is not out of distribution for this run (e.g. "L=4, all splits" after RL on the RL split at L=4).
    """
    sft = config.get("sft", config)
    keys = list(FAMILIES[sft["family"]].evals)
    train = {"sft": run_ids(config, ["sft"])[0]}
    if sft.get("prior"):
        train["prior"] = prior_id(sft)
    if "condition" in config:
        train["arm"] = run_ids(config, [CONDITIONS[config["condition"]].rl_set])[0]
    supports = {k: _support(i) for k, i in train.items()}
    out: dict[str, dict[str, int]] = {}
    for key, env_id in zip(keys, run_ids(config, keys)):
        env = gym.make(env_id)
        hits = dict.fromkeys(train, 0)
        for i in range(sft["eval"]["episodes"]):
            env.reset(seed=seeds.PROTOCOL_EVAL + sft["seed"] + i)
            cascade = env.unwrapped.problem.cascade
            for k, support in supports.items():
                hits[k] += bool(support.contains(cascade))
        env.close()
        out[key] = hits
    return out


def _support(env_id: str) -> Any:
    env = gym.make(env_id)
    env.close()
    return env.unwrapped.support


def premise_checks(cell: Cell, profile: str, version: str = ENV_VERSION, samples: int = 20_000) -> dict[str, Any]:
    """Check the protocol's premises for ``cell``; return what was checked.

    The SFT set must contain every skill and every routing mechanism (SFT "covers every atomic
    module"), and share no composition (cascade of depth >= 2) with the family's OOD evaluation
    sets or with the set the beyond arm trains on.  Whether it also contains every ``(routing, skill)`` step is reported
    (the routing x skill family holds some out on purpose).  Exhaustive where the SFT support can
    be enumerated, otherwise on ``samples`` sampled cascades.  (Each run also records, by cascade
    key, the evaluated problems its training stages could have drawn: :func:`leakage`.)

    Raises:
        RuntimeError: when a premise fails (the experiment would not test the claims).
    """
    fam = FAMILIES[cell.family]
    sft = _support(family_ids(cell, ["sft"], profile=profile, version=version)[0])
    exhaustive = sft.size() <= 200_000
    if exhaustive:
        cascades = list(sft.enumerate())
    else:
        sampler, rng = CascadeSampler(sft), np.random.default_rng(0)
        cascades = [sampler.sample_cascade(rng) for _ in range(samples)]
    p = sft.profile
    steps = {step for c in cascades for step in c.steps}
    missing = sorted(set(p.routings) - {r for r, _ in steps}) + sorted(set(p.skills) - {s for _, s in steps})
    if missing:
        raise RuntimeError(f"the SFT set of family {cell.family!r}, profile {profile!r} misses modules {missing[:5]}: "
                           "the protocol needs SFT to cover every atomic module")
    others = [k for k in fam.evals if k.startswith("ood_") and k != "ood_depth"]
    for name, env_id in zip(others, family_ids(cell, others, profile=profile, version=version)):
        other = _support(env_id)
        # Atomic (depth-1) cascades belong to every hash split by design (share_atomic).
        shared = next((c for c in cascades if c.depth > 1 and other.contains(c)), None)
        if shared is not None:
            raise RuntimeError(f"the SFT set and {name} ({env_id}) share the composition {shared.key()}")
    beyond_outside = None
    if cell.rl_target in fam.beyond:
        # The beyond set mixes new problems with ones SFT covered (so RL forgets nothing): it must
        # hold some outside the SFT support, and the share is recorded.
        beyond = _support(family_ids(cell, ["beyond"], profile=profile, version=version)[0])
        sampler, rng = CascadeSampler(beyond), np.random.default_rng(1)
        drawn = [sampler.sample_cascade(rng) for _ in range(2_000)]
        beyond_outside = sum(not sft.contains(c) for c in drawn) / len(drawn)
        if not beyond_outside:
            raise RuntimeError(f"the beyond set of rl_target {cell.rl_target!r} lies inside the SFT support")
    return {
        "family": cell.family,
        "sft_cascades_checked": len(cascades),
        "exhaustive": exhaustive,
        "sft_covers_every_skill_and_routing": True,
        "sft_covers_every_routing_skill_step": not ({(r, s) for r in p.routings for s in p.skills} - steps),
        "sft_disjoint_from": sorted(others),
        "beyond_share_outside_sft": beyond_outside,
    }


__all__ = ["leakage", "premise_checks"]
