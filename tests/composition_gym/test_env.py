"""The environment: checkers, determinism, expert, errors, rewards, masks, serialisation."""

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import composition_gym
from composition_gym import tokens as T
from composition_gym.env import CompositionEnv

ALL_IDS = [row["id"] for row in composition_gym.list_envs()]
SMALL_IDS = [row["id"] for row in composition_gym.list_envs() if row["profile"] == "small"]


def rollout(env, policy, seed):
    """Observations, rewards and infos of one episode; ``policy(env, obs, info) -> action``."""
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info)]
    done = False
    while not done:
        obs, reward, term, trunc, info = env.step(policy(env, obs, info))
        out.append((obs, reward, info))
        done = term or trunc
    return out


def expert(env, obs, info):
    return env.unwrapped.expert_action()


def random_valid(rng):
    return lambda env, obs, info: int(rng.choice(np.flatnonzero(info["action_mask"])))


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_checkers_pass_with_warnings_as_errors(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_expert_solves_every_registered_id(env_id):
    env = gym.make(env_id)
    wins = [rollout(env, expert, seed)[-1][2]["is_success"] for seed in range(200)]
    assert all(wins)


def test_expert_solves_every_trace_format_and_policy_agrees():
    for fmt in ("values", "tagged", "answer"):
        env = gym.make("composition_gym/OOD-Depth-L4-v0", trace_format=fmt)
        oracle = composition_gym.ExpertPolicy.for_env(env)
        for seed in range(50):
            obs, info = env.reset(seed=seed)
            done = False
            while not done:
                a = env.unwrapped.expert_action()
                assert oracle.act(obs) == a
                obs, r, term, trunc, info = env.step(a)
                done = term or trunc
            assert info["is_success"] and r == 1.0


def test_expert_recovers_off_the_reference_path():
    env = gym.make("composition_gym/Compose-L3-v0", process_reward=0.1)
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        problem = env.unwrapped.problem
        # Write a wrong first letter, then let the expert finish: the answer must still be right.
        first = T.TOKEN_ID[problem.values[0][0]]
        wrong = next(i for i in np.flatnonzero(info["action_mask"]) if i != first)
        obs, *_ = env.step(int(wrong))
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, info = env.step(env.unwrapped.expert_action())
            done, ret = term or trunc, ret + r
        assert info["is_success"] and not info["diagnosis"][0]["correct"] and info["diagnosis"][-1]["correct"]
        assert ret == pytest.approx(1.1)  # second intermediate right (+0.1), answer right (+1)


def test_random_agent_scores_about_zero():
    env = gym.make("composition_gym/Compose-L3-v0")
    rng = np.random.default_rng(0)
    wins = [rollout(env, random_valid(rng), seed)[-1][2]["is_success"] for seed in range(300)]
    assert np.mean(wins) < 0.02


def test_same_seed_same_episode_and_different_seeds_differ():
    env_a, env_b = gym.make("composition_gym/Compose-L3-v0"), gym.make("composition_gym/Compose-L3-v0")
    ra = rollout(env_a, random_valid(np.random.default_rng(3)), seed=11)
    rb = rollout(env_b, random_valid(np.random.default_rng(3)), seed=11)
    assert len(ra) == len(rb)
    for (oa, rwa, ia), (ob, rwb, ib) in zip(ra, rb):
        np.testing.assert_array_equal(oa, ob)
        assert rwa == rwb and ia.keys() == ib.keys()
        for k in ia:
            if isinstance(ia[k], np.ndarray):
                np.testing.assert_array_equal(ia[k], ib[k])
            else:
                assert ia[k] == ib[k]
    prompts = {env_a.reset(seed=s)[1]["prompt"] for s in range(20)}
    assert len(prompts) > 15


def test_reset_info_carries_hidden_cascade_and_final_info_diagnosis():
    env = gym.make("composition_gym/Compose-L3-v0")
    out = rollout(env, expert, seed=0)
    reset_info, final = out[0][2], out[-1][2]
    assert reset_info["cascade"].depth == 3 and reset_info["answer"] == env.unwrapped.problem.answer
    assert "is_success" not in out[1][2]
    assert final["is_success"] and not final["malformed"]
    assert [d["correct"] for d in final["diagnosis"]] == [True] * 3
    assert final["trace"].endswith("<eos>")


def test_action_mask_follows_grammar():
    env = gym.make("composition_gym/Compose-L3-v0")
    obs, info = env.reset(seed=0)
    mask = info["action_mask"]
    letters = [T.LETTER_IDS[c] for c in "abcdef"]
    assert mask[letters].all() and mask.sum() == 6  # a segment cannot start empty
    np.testing.assert_array_equal(env.unwrapped.action_masks(), mask)
    obs, _, _, _, info = env.step(letters[0])
    assert info["action_mask"][T.STEP_ID] and not info["action_mask"][T.EOS_ID]
    for _ in range(7):  # fill the segment to max_result_len
        obs, _, _, _, info = env.step(letters[0])
    assert not info["action_mask"][letters].any() and info["action_mask"][T.STEP_ID]


def test_tagged_format_masks_tags_first():
    env = gym.make("composition_gym/Compose-L3-v0", trace_format="tagged")
    _, info = env.reset(seed=0)
    assert set(np.flatnonzero(info["action_mask"])) == {T.ROUTING_IDS[r] for r in env.unwrapped.profile.routings}


def test_ungrammatical_token_ends_episode_with_format_penalty():
    env = gym.make("composition_gym/Compose-L3-v0", format_penalty=0.5)
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(T.BOS_ID)
    assert term and not trunc and reward == -0.5 and info["malformed"] and not info["is_success"]


def test_truncation_when_observation_is_full():
    env = CompositionEnv(depth=3, max_len=34, format_penalty=1.0)
    obs, info = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        # Letters while allowed, then the step separator: the trace never ends by itself.
        a = T.LETTER_IDS["a"] if info["action_mask"][T.LETTER_IDS["a"]] else T.STEP_ID
        obs, reward, term, trunc, info = env.step(a)
        done, steps = term or trunc, steps + 1
    assert trunc and not term and reward == -1.0 and info["malformed"]
    assert obs[-1] != T.PAD_ID


def test_step_errors_name_the_problem():
    env = gym.make("composition_gym/Compose-L3-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(T.VOCAB_SIZE)
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(-1)
    with pytest.raises(TypeError, match="integer"):
        env.step(1.5)
    with pytest.raises(TypeError, match="integer"):
        env.step("a")
    with pytest.raises(TypeError, match="integer"):
        env.step(np.array([0.5]))
    with pytest.raises(ValueError, match="single token"):
        env.step(np.array([1, 2]))
    env.step(np.int64(T.BOS_ID))  # ungrammatical: ends the episode
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(T.LETTER_IDS["a"])


def test_numpy_scalar_and_0d_actions_accepted():
    env = gym.make("composition_gym/Compose-L3-v0")
    _, info = env.reset(seed=0)
    a = int(np.flatnonzero(info["action_mask"])[0])
    env.step(np.array(a))
    env.step(np.array([T.STEP_ID]))


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"nope": 1}, TypeError, "nope"),
    ({"profile": "huge"}, ValueError, "unknown profile"),
    ({"split": "sometimes"}, ValueError, "unknown split"),
    ({"depth": 0}, ValueError, "depths"),
    ({"depth": [4, 2]}, ValueError, "empty"),
    ({"depth": "3"}, ValueError, "depth"),
    ({"trace_format": "prose"}, ValueError, "trace_format"),
    ({"render_mode": "rgb"}, TypeError, "render_mode"),
    ({"max_len": 10}, ValueError, "too short for the prompt"),
    ({"skills": ["Nope"]}, ValueError, "unknown or no skills"),
    ({"alphabet": "aA"}, ValueError, "alphabet"),
    ({"process_reward": float("nan")}, ValueError, "process_reward"),
    ({"split": "pairs_ood", "depth": 1}, ValueError, "leaves no cascades"),
])
def test_bad_construction_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gym.make("composition_gym/Compose-L3-v0", **kwargs)


def test_every_knob_is_a_make_kwarg():
    env = gym.make("composition_gym/Compose-L3-v0", skills=["Rev", "Dup"], routings=["Chain", "Keep"],
                   alphabet="xyz", input_len=[1, 2], max_result_len=12, depth=[2, 3], split="unseen",
                   split_seed=5, trace_format="tagged", process_reward=0.2)
    depths = set()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        c = info["cascade"]
        depths.add(c.depth)
        assert set(c.skills) <= {"Rev", "Dup"} and set(c.routings) <= {"Chain", "Keep"}
        assert env.unwrapped.support.contains(c)
        assert set(env.unwrapped.problem.x) <= set("xyz")
    assert depths == {2, 3}


def test_spec_json_round_trip():
    for env_id in ALL_IDS:
        env = gym.make(env_id)
        spec = gym.envs.registration.EnvSpec.from_json(env.spec.to_json())
        assert spec == env.spec
        env2 = gym.make(spec)
        np.testing.assert_array_equal(env.reset(seed=4)[0], env2.reset(seed=4)[0])


def test_pickle_and_deepcopy_mid_episode():
    env = gym.make("composition_gym/Compose-L3-v0")
    env.reset(seed=2)
    for _ in range(3):
        env.step(env.unwrapped.expert_action())
    for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        a = [env.unwrapped.expert_action()]
        b = [clone.unwrapped.expert_action()]
        assert a == b
        done = False
        e1, e2 = copy.deepcopy(env), clone
        while not done:
            o1, r1, t1, tr1, i1 = e1.step(e1.unwrapped.expert_action())
            o2, r2, t2, tr2, i2 = e2.step(e2.unwrapped.expert_action())
            np.testing.assert_array_equal(o1, o2)
            assert r1 == r2 and t1 == t2
            done = t1 or tr1
        assert i2["is_success"]


def test_render_ansi():
    env = gym.make("composition_gym/Compose-L3-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(env.unwrapped.expert_action())
    text = env.render()
    assert text.startswith("<bos>X=") and "trace:" in text and "cascade:" in text
    plain = gym.make("composition_gym/Compose-L3-v0")
    plain.reset(seed=0)
    assert plain.render() is None


def test_small_profile_ids_share_one_observation_space():
    spaces = [gym.make(i).observation_space for i in SMALL_IDS]
    assert all(s == spaces[0] for s in spaces)


def test_replay_given_problem():
    env = gym.make("composition_gym/Compose-L3-v0")
    env.reset(seed=1)
    problem = env.unwrapped.problem
    obs, _ = env.reset(seed=99, options={"problem": problem})
    assert env.unwrapped.problem == problem
    with pytest.raises(TypeError, match="Problem"):
        env.reset(options={"problem": "abc"})


def test_sb3_make_vec_env_accepts_our_ids():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("composition_gym/Compose-L3-v0", n_envs=2, seed=0)
    obs = venv.reset()
    assert obs.shape == (2, 80)
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (2, T.VOCAB_SIZE) and masks.any(axis=1).all()


def test_all_steps_correct_separates_skipped_or_wrong_steps_from_success():
    env = gym.make("composition_gym/Compose-L3-v0", process_reward=0.25)
    obs, info = env.reset(seed=4)
    problem = env.unwrapped.problem
    z1 = problem.values[0]
    wrong = "a" * len(z1) if z1 != "a" * len(z1) else "b" * len(z1)
    # A wrong first intermediate, then the right rest: outcome success, not process success.
    plan = T.encode(";".join([wrong, *problem.values[1:]])) + [T.EOS_ID]
    ret = 0.0
    for a in plan:
        obs, r, term, trunc, info = env.step(a)
        ret += r
    assert term and info["is_success"] and not info["all_steps_correct"]
    assert [d["correct"] for d in info["diagnosis"]] == [False, True, True]
    score = problem.score(env.unwrapped._written, trace_format="values", process_reward=0.25)
    assert ret == pytest.approx(score.reward) == pytest.approx(1.25)
    _, info = rollout(env, expert, seed=4)[-1][::2]
    assert info["is_success"] and info["all_steps_correct"]


def test_episode_return_equals_the_scorers_reward():
    env = gym.make("composition_gym/Compose-L3-v0", trace_format="tagged", process_reward=0.3, format_penalty=0.7)
    rng = np.random.default_rng(1)
    for seed in range(40):
        policy = expert if seed % 2 else random_valid(rng)
        steps = rollout(env, policy, seed)
        info = steps[-1][2]
        score = env.unwrapped.scorer.score(env.unwrapped.problem, env.unwrapped._written, info["malformed"])
        assert sum(r for _, r, _ in steps) == pytest.approx(score.reward)
        assert (info["is_success"], info["all_steps_correct"]) == (score.is_success, score.all_steps_correct)


def test_render_human_prints_the_frame(capsys):
    env = gym.make("composition_gym/Compose-L3-v0", render_mode="human")
    assert "human" in env.metadata["render_modes"]
    _, info = env.reset(seed=0)
    env.step(env.unwrapped.expert_action())
    assert env.render() is None
    out = capsys.readouterr().out
    assert out.count(info["prompt"]) == 3 and "trace:" in out and "cascade:" in out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("composition_gym/Compose-L3-v1", render_mode="human").unwrapped)


def test_max_len_floor_and_budget_warning_name_the_minimum():
    with pytest.raises(ValueError, match=r"max_len=20 is too short .*max_len >= \d+"):
        CompositionEnv(depth=3, max_len=20)
    with pytest.warns(UserWarning, match=r"max_len=40 is a token budget.*max_len >= (\d+) fits every trace") as rec:
        CompositionEnv(depth=3, max_len=40)
    fits = int(str(rec[0].message).rsplit(">= ", 1)[1].split()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CompositionEnv(depth=3, max_len=fits)
        gym.make("composition_gym/Paper-OOD-Depth-L4-v1")  # default max_len fits every trace


def test_reward_settings_are_settable_and_validated():
    env = CompositionEnv()
    env.process_reward = 0.5
    assert env.scorer.process_reward == 0.5 and env.format_penalty == 0.0
    with pytest.raises(ValueError, match="format_penalty"):
        env.format_penalty = float("inf")


def test_sb3_vec_env_renders_in_human_mode(capsys):
    # rl_zoo3.enjoy builds its env this way and calls render("human").
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("composition_gym/Compose-L3-v0", n_envs=1, seed=0, env_kwargs={"render_mode": "human"})
    venv.reset()
    venv.step([int(venv.env_method("expert_action")[0])])
    assert venv.render("human") is None
    assert "trace:" in capsys.readouterr().out
