"""The vector env's batched reset: rows sharing a seed share one draw, seeded rows whose draw nobody
reads draw lazily, and every stream stays the single env's (checked against SyncVectorEnv)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from composition_gym.vector import _Pending
from tests.composition_gym.test_vector import canonical, make_pair, mixed_actions

V1_L4 = "composition_gym/OOD-Depth-L4-v1"


def _same_run(sync, native, seeds, steps, options=None):
    obs_s, info_s = sync.reset(seed=seeds, options=options)
    obs_n, info_n = native.reset(seed=seeds, options=options)
    np.testing.assert_array_equal(obs_s, obs_n)
    assert canonical(info_s) == canonical(info_n)
    rng = np.random.default_rng(1)
    ended = 0
    for t in range(steps):
        actions = mixed_actions(rng, info_n["action_mask"], native.unwrapped.expert_actions())
        out_s, out_n = sync.step(actions), native.step(actions)
        for a, b in zip(out_s[:4], out_n[:4]):
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        done = out_s[2] | out_s[3]
        out_s[4]["action_mask"][done] = native.unwrapped.grammar.start_mask()  # the documented difference
        assert canonical(out_s[4]) == canonical(out_n[4]), f"infos differ at step {t}"
        info_n = out_n[4]
        ended += int(done.sum())
    return ended


@pytest.mark.parametrize("env_id", ["composition_gym/Compose-L3-v0", V1_L4])
def test_rows_sharing_a_seed_play_what_single_envs_play(env_id):
    seeds = [3, 3, 3, 8, 8, 1]
    sync, native = make_pair(env_id, len(seeds))
    ended = _same_run(sync, native, seeds, 150)
    assert ended > len(seeds)  # the autoresets after the shared draw are compared too


def test_a_repeated_seed_draws_once_and_its_copies_draw_only_when_needed(monkeypatch):
    native = gym.make_vec("composition_gym/Compose-L3-v0", num_envs=4)
    env = native.unwrapped
    draws = []
    real = env._sampler.sample
    monkeypatch.setattr(env._sampler, "sample", lambda rng: draws.append(1) or real(rng))
    native.reset(seed=[7, 7, 7, 9])
    assert len(draws) == 2 and env.problems[0] == env.problems[1] == env.problems[2] != env.problems[3]
    assert [isinstance(g, _Pending) for g in env._generators] == [False, True, True, False]
    native.reset(seed=[7, 7, 7, 9], options={"problem": env.problems[3]})  # a given problem: nothing drawn
    assert len(draws) == 2 and all(isinstance(g, _Pending) for g in env._generators)
    native.reset(options={"reset_mask": np.array([True, False, False, False])})
    assert len(draws) == 4  # row 0's pending draw, replayed, then its new problem


def test_given_problems_keep_the_seeds_streams():
    single = gym.make("composition_gym/Compose-L3-v0")
    single.reset(seed=11)
    given = single.unwrapped.problem
    sync, native = make_pair("composition_gym/Compose-L3-v0", 3)
    assert _same_run(sync, native, [4, 4, 5], 120, options={"problem": given}) > 3
