"""``info_mode="arrays"``: fixed-shape infos, the same episodes, the native vector env equal to SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

import composition_gym
from composition_gym import tokens as T
from tests.composition_gym.test_vector import canonical, make_pair, mixed_actions

V1 = "composition_gym/Compose-L1to3-v1"
KEYS = {"action_mask": ((T.VOCAB_SIZE,), np.bool_), "is_success": ((), bool), "all_steps_correct": ((), bool),
        "malformed": ((), bool), "depth": ((), int), "steps_written": ((), int), "step_correct": ((4,), np.bool_),
        "routing_ids": ((4,), np.int64), "skill_ids": ((4,), np.int64)}


def _check(info):
    assert set(info) == set(KEYS)
    for key, (shape, dtype) in KEYS.items():
        assert np.shape(info[key]) == shape and type(info[key]) is dtype or info[key].dtype == dtype, key


def test_every_info_holds_the_same_fixed_shape_keys_and_agrees_with_the_full_info():
    arrays = gym.make(V1, info_mode="arrays")
    full = gym.make(V1)
    rng = np.random.default_rng(0)
    for episode in range(30):
        _, a = arrays.reset(seed=episode)
        _, f = full.reset(seed=episode)
        _check(a)
        cascade = f["cascade"]
        assert a["depth"] == cascade.depth
        assert [T.TOKENS[i] for i in a["routing_ids"][: cascade.depth]] == list(cascade.routings)
        assert [T.TOKENS[i] for i in a["skill_ids"][: cascade.depth]] == list(cascade.skills)
        assert not a["routing_ids"][cascade.depth:].any()
        done = False
        while not done:
            expert = arrays.unwrapped.expert_action()
            valid = np.flatnonzero(a["action_mask"])
            action = int(expert if rng.random() < 0.8 else valid[rng.integers(valid.size)])
            out_a, out_f = arrays.step(action), full.step(action)
            for x, y in zip(out_a[:4], out_f[:4]):  # the episode itself is unchanged
                np.testing.assert_array_equal(x, y)
            a, f, done = out_a[4], out_f[4], out_a[2] or out_a[3]
            _check(a)
            np.testing.assert_array_equal(a["action_mask"], f["action_mask"])
        diagnosis = f["diagnosis"]
        assert a["is_success"] == f["is_success"] and a["all_steps_correct"] == f["all_steps_correct"]
        assert a["malformed"] == f["malformed"]
        written = [d["generated"] is not None for d in diagnosis]
        assert a["steps_written"] == sum(written)
        assert a["step_correct"][: len(diagnosis)].tolist() == [d["correct"] for d in diagnosis]


def assert_same_run(env_id, n, steps, mode, seed=0, **kwargs):
    """Native vs SyncVectorEnv with arrays infos, step for step (tests/composition_gym/test_vector.py
    does the same for the full infos)."""
    sync, native = make_pair(env_id, n, mode, **kwargs)
    assert native.metadata["autoreset_mode"] == mode
    (_, info_s), (_, info_n) = sync.reset(seed=seed), native.reset(seed=seed)
    rng, ended = np.random.default_rng(seed), 0
    for t in range(steps):
        assert canonical(info_s) == canonical(info_n), f"infos differ at step {t}"
        actions = mixed_actions(rng, info_n["action_mask"], native.unwrapped.expert_actions())
        out_s, out_n = sync.step(actions), native.step(actions)
        for a, b in zip(out_s[:4], out_n[:4]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        info_s, info_n = out_s[4], out_n[4]
        done = out_s[2] | out_s[3]
        if mode == AutoresetMode.NEXT_STEP:  # the documented difference (see test_vector.py)
            info_s["action_mask"][done] = native.unwrapped.grammar.start_mask()
        if done.any():
            final = info_n["final_info"] if mode == AutoresetMode.SAME_STEP else info_n
            assert (final["is_success"][done] == (out_n[1][done] == 1.0)).all()
        ended += int(done.sum())
        if mode == AutoresetMode.DISABLED and done.any():
            assert canonical(info_s) == canonical(info_n)
            (_, info_s), (_, info_n) = (env.reset(options={"reset_mask": done.copy()}) for env in (sync, native))
    assert ended > n  # several episodes per sub-environment were compared


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_native_vector_env_equals_sync_vector_env_in_every_autoreset_mode(mode):
    assert_same_run(V1, 5, 200, mode, info_mode="arrays")


def test_arrays_mode_equals_sync_with_tagged_traces_and_truncation():
    assert_same_run(V1, 4, 150, AutoresetMode.SAME_STEP, seed=2, info_mode="arrays", trace_format="tagged",
                    max_len=40)


def test_native_infos_hold_every_key_for_every_row():
    env = gym.make_vec(V1, num_envs=3, info_mode="arrays")
    _, info = env.reset(seed=0)
    for _ in range(30):
        _, _, _, _, info = env.step(env.unwrapped.expert_actions())
        for key in KEYS:
            assert info["_" + key].all() and len(info[key]) == 3
        assert not any(v.dtype == object for v in info.values())


def test_gymnasium_vector_wrappers_work_unchanged():
    env = RecordEpisodeStatistics(gym.make_vec(V1, num_envs=4, info_mode="arrays", autoreset_mode="SameStep"))
    env.reset(seed=0)
    episodes = 0
    for _ in range(40):
        _, _, term, trunc, info = env.step(env.unwrapped.expert_actions())
        if (term | trunc).any():
            episodes += int((term | trunc).sum())
            assert (info["episode"]["r"][term | trunc] == 1.0).all()
    assert episodes >= 4


def test_autoreset_mode_is_a_make_vec_keyword_not_a_vector_kwarg():
    # Gymnasium (since 1.0) refuses vector_kwargs for every vector entry point, ours as CartPole's:
    # they are SyncVectorEnv's/AsyncVectorEnv's arguments.  The keyword reaches the native env.
    with pytest.raises(gym.error.Error, match="only through kwargs"):
        gym.make_vec(V1, num_envs=2, vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    for mode in AutoresetMode:
        assert gym.make_vec(V1, num_envs=2, autoreset_mode=mode).metadata["autoreset_mode"] == mode
        sync = gym.make_vec(V1, num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})
        assert sync.metadata["autoreset_mode"] == mode


def test_bad_info_mode_is_a_one_line_error():
    with pytest.raises(ValueError, match="info_mode"):
        gym.make(V1, info_mode="dicts")
    with pytest.raises(ValueError, match="info_mode"):
        gym.make_vec(V1, num_envs=2, info_mode=1)


def test_info_depth_is_shared_by_the_profile():
    assert {composition_gym.CompositionEnv(**r["kwargs"]).info_depth for r in composition_gym.list_envs()
            if r["profile"] == "small"} == {4}
