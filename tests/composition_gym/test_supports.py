"""Supports and splits: disjointness (exhaustive where enumerable), coverage, sampling, errors."""

import itertools

import numpy as np
import pytest

from composition_gym.cascade import Cascade
from composition_gym.profiles import PAPER, SMALL
from composition_gym.sampler import CascadeSampler
from composition_gym.supports import SPLIT_FAMILIES, Support


def _sets(profile, depths, family):
    return {split: set(Support(profile, split, depths).enumerate()) for split in SPLIT_FAMILIES[family]}


@pytest.mark.parametrize("family", sorted(SPLIT_FAMILIES))
@pytest.mark.parametrize("depth", [3, pytest.param(4, marks=pytest.mark.slow)])
def test_small_families_partition_exhaustively(family, depth):
    parts = _sets(SMALL, (depth,), family)
    for a, b in itertools.combinations(parts.values(), 2):
        assert not a & b
    everything = set(Support(SMALL, "all", (depth,)).enumerate())
    assert set().union(*parts.values()) == everything
    assert all(parts.values())  # no member of a family is empty


@pytest.mark.parametrize("family", sorted(SPLIT_FAMILIES))
def test_paper_families_disjoint_on_samples(family):
    supports = [Support(PAPER, split, (3,)) for split in SPLIT_FAMILIES[family]]
    rng = np.random.default_rng(0)
    steps = list(itertools.product(PAPER.routings, PAPER.skills))
    for _ in range(10_000):
        c = Cascade(tuple(steps[i] for i in rng.integers(len(steps), size=3)))
        assert sum(s.contains(c) for s in supports) == 1
    # and each sampler only ever yields members of its own split
    for s in supports:
        sampler = CascadeSampler(s)
        for _ in range(300):
            c = sampler.sample_cascade(rng)
            assert s.contains(c) and sum(o.contains(c) for o in supports) == 1


def test_depth_family_disjoint():
    train, ood = Support(SMALL, "all", (3,)), Support(SMALL, "all", (4,))
    rng = np.random.default_rng(1)
    for _ in range(500):
        assert not train.contains(CascadeSampler(ood).sample_cascade(rng))


def test_sft_split_covers_every_atomic_module():
    sft = list(Support(SMALL, "sft", (3,)).enumerate())
    assert {step for c in sft for step in c.steps} == set(itertools.product(SMALL.routings, SMALL.skills))


@pytest.mark.parametrize("profile", [SMALL, PAPER])
def test_held_out_sets_keep_every_module(profile):
    s = Support(profile, "pairs_id", (3,))
    pairs = set(itertools.product(profile.skills, profile.skills))
    allowed = pairs - s.held_out_skill_pairs
    assert s.held_out_skill_pairs and {a for a, _ in allowed} == set(profile.skills) == {b for _, b in allowed}
    rs = set(itertools.product(profile.routings, profile.skills)) - s.held_out_routing_skill
    assert s.held_out_routing_skill
    assert {r for r, _ in rs} == set(profile.routings) and {k for _, k in rs} == set(profile.skills)


def test_split_seed_changes_partition_deterministically():
    a = set(Support(SMALL, "unseen", (2,), split_seed=0).enumerate())
    b = set(Support(SMALL, "unseen", (2,), split_seed=1).enumerate())
    assert a != b and a == set(Support(SMALL, "unseen", (2,), split_seed=0).enumerate())


def test_sampling_is_deterministic_and_respects_caps():
    sampler = CascadeSampler(Support(SMALL, "all", (4,)))
    p1 = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    p2 = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    assert p1 == p2
    rng = np.random.default_rng(0)
    for _ in range(500):
        p = sampler.sample(rng)
        assert all(1 <= len(v) <= SMALL.max_result_len for v in p.values)
        assert SMALL.input_len[0] <= len(p.x) <= SMALL.input_len[1]


def test_empty_support_is_a_clear_error():
    # One skill/routing pair: at depth 1 there is a single cascade, so pairs_ood (needs two steps) is empty.
    tiny = SMALL.with_overrides(skills=["Rev", "Sort"], routings=["Chain"])
    with pytest.raises(ValueError, match="leaves no cascades"):
        CascadeSampler(Support(tiny, "pairs_ood", (1,)))


def test_unfittable_support_is_a_clear_error():
    grow = SMALL.with_overrides(skills=["Rev"], routings=["CatX"], max_result_len=4, input_len=[2, 4])
    with pytest.raises(ValueError, match="max_result_len"):
        CascadeSampler(Support(grow, "all", (3,)))


@pytest.mark.parametrize("kwargs,match", [
    ({"split": "nope"}, "unknown split"),
    ({"depths": (0,)}, "depths"),
    ({"depths": ()}, "depths"),
])
def test_bad_support_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Support(SMALL, **kwargs)
