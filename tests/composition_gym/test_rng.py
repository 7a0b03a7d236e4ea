"""IntegerStream returns what Generator.integers returns, draw for draw."""

from __future__ import annotations

import random

import numpy as np
import pytest

from composition_gym.rng import IntegerStream

SPLIT_64 = [np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox]


@pytest.mark.parametrize("bit_generator", SPLIT_64)
def test_draws_equal_generator_integers(bit_generator):
    for seed in range(40):
        reference = np.random.Generator(bit_generator(seed))
        mine = np.random.Generator(bit_generator(seed))
        reference.integers(1 << 32)  # leave half a 64-bit word buffered in both generators
        mine.integers(1 << 32)
        stream = IntegerStream(mine, chunk=3)  # tiny chunks: refills happen mid-call
        pick = random.Random(seed)
        for _ in range(150):
            low = pick.randrange(0, 5)
            # Small spans, a span with ~50% Lemire rejections, and the 32-bit edge cases.
            high = low + pick.choice([1, 2, 3, 6, 7, 100, 13824, 2**31 + 5, 2**32 - 3, 2**32])
            size = pick.choice([None, 1, 3, 5])
            want = reference.integers(low, high, size=size)
            got = stream.integers(low, high, size=size)
            assert np.asarray(want).tolist() == got


def test_one_argument_form_and_errors():
    stream = IntegerStream(np.random.default_rng(0))
    assert stream.integers(1) == 0  # a single value draws nothing ...
    assert stream.integers(6, size=4) == np.random.default_rng(0).integers(6, size=4).tolist()  # ... as numpy
    with pytest.raises(ValueError, match="low >= high"):
        stream.integers(3, 3)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        stream.integers(0, 2**33)


def test_other_bit_generators_fall_back_to_the_generator():
    gen = np.random.Generator(np.random.MT19937(0))
    assert IntegerStream.wrap(gen) is gen
    with pytest.raises(TypeError, match="MT19937"):
        IntegerStream(gen)


def test_env_episodes_do_not_depend_on_the_stream():
    """The env draws its problems through IntegerStream; a plain Generator gives the same problems."""
    from composition_gym.env import CompositionEnv

    env = CompositionEnv(split="sft")
    env.reset(seed=3)
    problems = [env.problem]
    for _ in range(30):
        env.reset()
        problems.append(env.problem)
    sampler, rng = env.sampler, np.random.Generator(np.random.PCG64(np.random.SeedSequence(3)))
    assert [sampler.sample(rng) for _ in range(31)] == problems
