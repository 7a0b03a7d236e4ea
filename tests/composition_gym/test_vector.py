"""The native vector env: identical episodes to SyncVectorEnv, make_vec for every id, autoreset, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import composition_gym
from composition_gym import tokens as T
from composition_gym.cascade import Cascade
from composition_gym.vector import CompositionVectorEnv

SMALL_IDS = [row["id"] for row in composition_gym.list_envs() if row["profile"] == "small"]
COMPOSE = "composition_gym/Compose-L3-v0"


def canonical(value):
    """A comparable form of an info value: arrays keep dtype and shape, cascades become keys."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ["object", [canonical(v) for v in value.tolist()]]
        return ["array", str(value.dtype), value.shape, value.tolist()]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, Cascade):
        return ["cascade", value.key()]
    return [type(value).__name__, value]


def make_pair(env_id: str, n: int, mode: AutoresetMode = AutoresetMode.NEXT_STEP, **kwargs):
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs)
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs)
    return sync, native


def mixed_actions(rng, mask, expert):
    """Per row: mostly the expert or a random valid token, sometimes any token (ungrammatical)."""
    out = np.empty(len(mask), dtype=np.int64)
    for j, row in enumerate(mask):
        valid = np.flatnonzero(row)
        r = rng.random()
        if r < 0.03 or valid.size == 0:
            out[j] = rng.integers(T.VOCAB_SIZE)
        elif r < 0.5:
            out[j] = expert[j]
        else:
            out[j] = valid[rng.integers(valid.size)]
    return out


def assert_same_run(env_id, n, steps, mode=AutoresetMode.NEXT_STEP, seed=0, **kwargs):
    sync, native = make_pair(env_id, n, mode, **kwargs)
    assert native.metadata["autoreset_mode"] == mode
    obs_s, info_s = sync.reset(seed=seed)
    obs_n, info_n = native.reset(seed=seed)
    np.testing.assert_array_equal(obs_s, obs_n)
    assert canonical(info_s) == canonical(info_n)
    rng = np.random.default_rng(seed)
    ended = 0
    for t in range(steps):
        expert = native.unwrapped.expert_actions()
        for j, env in enumerate(sync.envs):  # the batched oracle is the single env's
            if not sync._autoreset_envs[j] and not env.unwrapped._done:
                assert expert[j] == env.unwrapped.expert_action(), (t, j)
        actions = mixed_actions(rng, info_n["action_mask"], expert)
        out_s, out_n = sync.step(actions), native.step(actions)
        for a, b in zip(out_s[:4], out_n[:4]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        done = out_s[2] | out_s[3]
        if mode == AutoresetMode.NEXT_STEP:
            # The one documented difference: a row that just ended gets the first-token mask (its
            # next action is ignored), where the single env's final mask is its last state's
            # (empty after <eos>).
            out_s[4]["action_mask"][done] = native.unwrapped.grammar.start_mask()
        assert out_n[4]["action_mask"].any(axis=1).all() or mode == AutoresetMode.DISABLED
        assert canonical(out_s[4]) == canonical(out_n[4]), f"infos differ at step {t}"
        if done.any():
            final = out_n[4]["final_info"] if mode == AutoresetMode.SAME_STEP else out_n[4]
            assert (final["_all_steps_correct"] == done).all()
            assert not (final["all_steps_correct"] & ~final["is_success"]).any()
        np.testing.assert_array_equal(native.unwrapped.action_masks(), out_n[4]["action_mask"])
        info_s, info_n = out_s[4], out_n[4]
        ended += int(done.sum())
        if mode == AutoresetMode.DISABLED and done.any():
            obs_s, info_s = sync.reset(options={"reset_mask": done.copy()})
            obs_n, info_n = native.reset(options={"reset_mask": done.copy()})
            np.testing.assert_array_equal(obs_s, obs_n)
            assert canonical(info_s) == canonical(info_n)
    assert ended > n  # several episodes per sub-environment were compared
    return sync, native


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_same_episodes_as_sync_vector_env(mode):
    assert_same_run(COMPOSE, 6, 250, mode)


@pytest.mark.parametrize("kwargs", [
    {"trace_format": "tagged", "process_reward": 0.25, "format_penalty": 0.5},
    {"trace_format": "answer", "format_penalty": 1.0},
    {"depth": [1, 4]},
    {"trace_format": "tagged", "max_len": 40},  # short: many truncations
    {"prompt_format": "pipeline"},
    {"prompt_format": "reversed", "trace_format": "tagged"},
])
def test_same_episodes_with_env_kwargs(kwargs):
    assert_same_run(COMPOSE, 5, 200, seed=3, **kwargs)


def test_same_episodes_on_the_paper_profile():
    assert_same_run("composition_gym/Paper-Pairs-OOD-L3-v0", 4, 150, AutoresetMode.SAME_STEP, seed=7)


def test_truncation_is_reproduced():
    sync, native = make_pair(COMPOSE, 4, trace_format="tagged", max_len=40)
    native.reset(seed=0)
    sync.reset(seed=0)
    truncated = False
    for _ in range(60):  # only letters: segments never close, so the observation fills up
        mask = native.unwrapped.action_masks()
        letters = np.where(mask[:, T.LETTER_IDS["a"]], T.LETTER_IDS["a"], np.argmax(mask, axis=1))
        out_s, out_n = sync.step(letters), native.step(letters)
        np.testing.assert_array_equal(out_s[3], out_n[3])
        truncated |= bool(out_n[3].any())
    assert truncated


@pytest.mark.parametrize("env_id", SMALL_IDS)
def test_make_vec_uses_the_native_env_for_every_small_id(env_id):
    env = gym.make_vec(env_id, num_envs=3)
    assert isinstance(env.unwrapped, CompositionVectorEnv)
    single = gym.make(env_id)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    assert env.observation_space.shape == (3, *single.observation_space.shape)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert info["action_mask"].shape == (3, T.VOCAB_SIZE)
    obs, reward, term, trunc, info = env.step(env.unwrapped.expert_actions())
    assert obs.shape == (3, single.observation_space.shape[0]) and reward.shape == term.shape == trunc.shape == (3,)
    assert env.spec.id == env_id and env.spec.kwargs["num_envs"] == 3


def test_env_kwargs_reach_the_vector_env():
    env = gym.make_vec(COMPOSE, num_envs=2, trace_format="tagged", max_len=64)
    assert env.unwrapped.trace_format == "tagged" and env.single_observation_space.shape == (64,)


def test_expert_solves_every_episode_and_autoresets_next_step():
    env = gym.make_vec(COMPOSE, num_envs=8)
    env.reset(seed=0)
    successes, pending = 0, np.zeros(8, dtype=bool)
    for _ in range(120):
        obs, reward, term, trunc, info = env.step(env.unwrapped.expert_actions())
        # A sub-env that ended last step was reset now: reward 0, not done, fresh reset info.
        assert not (term | trunc)[pending].any() and (reward[pending] == 0).all()
        if pending.any():
            assert info["_prompt"][pending].all() and info["_cascade"][pending].all()
        done = term | trunc
        assert not trunc.any() and (reward[done] == 1.0).all()
        if done.any():
            assert info["is_success"][done].all() and info["_is_success"][done].all()
            assert not info["_is_success"][~done].any()
        else:
            assert "is_success" not in info
        successes += int(done.sum())
        pending = done
    assert successes >= 40


def test_same_step_autoreset_returns_the_final_observation():
    env = gym.make_vec(COMPOSE, num_envs=4, autoreset_mode="SameStep")
    env.reset(seed=0)
    for _ in range(80):
        obs, reward, term, trunc, info = env.step(env.unwrapped.expert_actions())
        done = term | trunc
        if done.any():
            i = int(np.flatnonzero(done)[0])
            final = info["final_obs"][i]
            assert final[np.flatnonzero(final)[-1]] == T.EOS_ID  # the ended trace ...
            assert not (obs[i] == T.EOS_ID).any()  # ... while obs is the next episode's prompt
            assert info["final_info"]["is_success"][i] and info["_final_info"][i]
            return
    pytest.fail("no episode ended")


def test_disabled_autoreset_requires_an_explicit_reset():
    env = gym.make_vec(COMPOSE, num_envs=2, autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    for _ in range(80):
        _, _, term, trunc, _ = env.step(env.unwrapped.expert_actions())
        if (term | trunc).any():
            break
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(env.unwrapped.expert_actions())
    env.reset(options={"reset_mask": term | trunc})
    env.step(env.unwrapped.expert_actions())


def test_seeding_matches_single_envs_and_is_deterministic():
    native = gym.make_vec(COMPOSE, num_envs=3)
    obs, _ = native.reset(seed=10)
    for i in range(3):
        single_obs, _ = gym.make(COMPOSE).reset(seed=10 + i)
        np.testing.assert_array_equal(obs[i], single_obs)
    again, _ = gym.make_vec(COMPOSE, num_envs=3).reset(seed=[10, 11, 12])
    np.testing.assert_array_equal(obs, again)
    other, _ = native.reset(seed=99)
    assert not np.array_equal(obs, other)


def test_bad_actions_are_rejected_without_changing_state():
    env = gym.make_vec(COMPOSE, num_envs=3)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step(np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="sub-environment 1 is outside Discrete"):
        env.step(np.array([14, 74, 14]))
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(np.array([-1, 14, 14]))
    with pytest.raises(TypeError, match="integer"):
        env.step(np.array([14.0, 14.0, 14.0]))
    # Nothing was written: the expert's step still plays as from the reset state.
    obs2, *_ = env.step(env.unwrapped.expert_actions())
    assert ((obs2 != obs).sum(axis=1) == 1).all()


def test_bad_construction_and_reset_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        CompositionVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        CompositionVectorEnv(num_envs=2, autoreset_mode="Sometimes")
    with pytest.raises(ValueError, match="max_episode_steps"):
        CompositionVectorEnv(num_envs=2, max_episode_steps=10)
    with pytest.raises(ValueError, match="unknown split"):
        CompositionVectorEnv(num_envs=2, split="nope")
    env = CompositionVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="list of 2 seeds"):
        env.reset(seed=[1, 2, 3])
    env.reset(seed=0)
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(3, dtype=bool)})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"colour": "red"})


def test_problem_option_replays_a_problem_everywhere():
    single = gym.make(COMPOSE)
    _, info = single.reset(seed=5)
    problem = single.unwrapped.problem
    env = gym.make_vec(COMPOSE, num_envs=3)
    obs, info_v = env.reset(seed=0, options={"problem": problem})
    assert all(p == problem for p in env.unwrapped.problems)
    assert list(info_v["prompt"]) == [info["prompt"]] * 3


def test_render_ansi_per_sub_env():
    env = gym.make_vec(COMPOSE, num_envs=2, render_mode="ansi")
    env.reset(seed=0)
    env.step(env.unwrapped.expert_actions())
    frames = env.render()
    assert len(frames) == 2 and all("trace:" in f and "cascade:" in f for f in frames)


def test_every_row_can_sample_from_its_mask_under_next_step_autoreset():
    env = gym.make_vec(COMPOSE, num_envs=6)
    _, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = env.unwrapped.grammar.start_mask()
    ended_rows = 0
    for _ in range(120):
        actions = np.array([rng.choice(np.flatnonzero(row)) for row in info["action_mask"]])  # never empty
        _, _, term, trunc, info = env.step(actions)
        done = term | trunc
        ended_rows += int(done.sum())
        assert (info["action_mask"][done] == start).all()
        np.testing.assert_array_equal(env.unwrapped.action_masks(), info["action_mask"])
        assert (env.unwrapped.expert_actions()[done] == T.PAD_ID).all()
    assert ended_rows > 6


def test_call_get_attr_and_set_attr_like_sync_vector_env():
    sync = gym.make_vec(COMPOSE, num_envs=3, vectorization_mode="sync")
    native = gym.make_vec(COMPOSE, num_envs=3)
    sync.reset(seed=2)
    native.reset(seed=2)
    for name in ("max_len", "trace_format", "problem", "process_reward"):
        assert native.get_attr(name) == sync.get_attr(name), name
    assert native.call("expert_action") == sync.call("expert_action")
    for a, b in zip(native.call("action_masks"), sync.call("action_masks")):
        np.testing.assert_array_equal(a, b)
    assert native.call("render") == (None, None, None)
    native.set_attr("process_reward", 0.5)
    sync.set_attr("process_reward", [0.5] * 3)
    assert native.get_attr("process_reward") == sync.get_attr("process_reward") == (0.5,) * 3
    assert native.unwrapped.scorer.process_reward == 0.5
    with pytest.raises(ValueError, match="equal values"):
        native.set_attr("format_penalty", [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="3 values"):
        native.set_attr("format_penalty", [0.0, 1.0])
    with pytest.raises(AttributeError, match="settable"):
        native.set_attr("max_len", 99)
    with pytest.raises(AttributeError, match="not supported"):
        native.call("reset")
    with pytest.raises(AttributeError):
        native.get_attr("no_such_attribute")
    with pytest.raises(TypeError, match="no arguments"):
        native.call("action_masks", 1)


def test_set_process_reward_changes_rewards_as_in_the_single_env():
    sync, native = make_pair(COMPOSE, 3)
    for env in (sync, native):
        env.reset(seed=0)
        env.set_attr("process_reward", [0.25] * 3)
    total_n = 0.0
    for _ in range(40):
        actions = native.unwrapped.expert_actions()
        _, r_s, *_ = sync.step(actions)
        _, r_n, *_ = native.step(actions)
        np.testing.assert_array_equal(r_s, r_n)
        total_n += r_n.sum()
    assert total_n > 0 and (total_n % 1) != 0  # process rewards were paid


def test_render_human_prints_every_row(capsys):
    env = gym.make_vec(COMPOSE, num_envs=2, render_mode="human")
    env.reset(seed=0)
    env.step(env.unwrapped.expert_actions())
    assert env.render() is None
    out = capsys.readouterr().out
    assert "[0] <bos>" in out and "[1] <bos>" in out


def test_problem_option_takes_one_problem_per_reset_row():
    single = gym.make(COMPOSE)
    single.reset(seed=1)
    a = single.unwrapped.problem
    single.reset(seed=2)
    b = single.unwrapped.problem
    env = gym.make_vec(COMPOSE, num_envs=4)
    _, info = env.reset(seed=0, options={"problem": [a, a, b, b]})  # two groups of two rows
    assert env.unwrapped.problems == [a, a, b, b] and info["answer"].tolist() == [a.answer] * 2 + [b.answer] * 2
    env.step(env.unwrapped.expert_actions())
    obs, _ = env.reset(seed=0, options={"reset_mask": np.array([False, True, False, True]), "problem": [b, a]})
    assert env.unwrapped.problems == [a, b, b, a]
    with pytest.raises(ValueError, match="lists 3 problems for 4"):
        env.reset(options={"problem": [a, a, b]})
    with pytest.raises(TypeError, match="Problem"):
        env.reset(options={"problem": ["abc"] * 4})
