"""The oracle: one rule (expert.next_token) behind the env, the vector env and ExpertPolicy."""

import gymnasium as gym
import numpy as np

import composition_gym
from composition_gym import tokens as T
from composition_gym.expert import ExpertPolicy, next_token
from composition_gym.grammar import COLON, ROUTING, SKILL, VALUE

COMPOSE = "composition_gym/Compose-L3-v0"


def test_next_token_on_and_off_the_reference_path():
    seg = ((T.ROUTING_IDS["Chain"], T.SKILL_IDS["Rev"]), tuple(T.letter_ids("cba")))
    assert next_token(ROUTING, False, (), seg) == T.ROUTING_IDS["Chain"]
    assert next_token(SKILL, False, (), seg) == T.SKILL_IDS["Rev"]
    assert next_token(COLON, False, (), seg) == T.TAG_ID
    assert next_token(VALUE, False, T.letter_ids("cb"), seg) == T.LETTER_IDS["a"]
    assert next_token(VALUE, False, T.letter_ids("cba"), seg) == T.STEP_ID
    assert next_token(VALUE, True, T.letter_ids("cba"), seg) == T.EOS_ID
    assert next_token(VALUE, True, T.letter_ids("x"), seg) == T.EOS_ID  # off the path: close it


def test_policy_act_batch_equals_act_and_the_env_along_mixed_trajectories():
    for fmt in ("values", "tagged"):
        env = gym.make(COMPOSE, trace_format=fmt)
        policy = ExpertPolicy.for_env(env)
        rng = np.random.default_rng(0)
        observations, labels = [], []
        for seed in range(20):
            obs, info = env.reset(seed=seed)
            done = False
            while not done:
                a = env.unwrapped.expert_action()
                observations.append(obs)
                labels.append(a)
                if rng.random() < 0.2:  # leave the reference path now and then
                    a = int(rng.choice(np.flatnonzero(info["action_mask"])))
                obs, _, term, trunc, info = env.step(a)
                done = term or trunc
        batch = policy.act_batch(np.stack(observations), [{}] * len(observations))
        assert batch.dtype == np.int64 and batch.tolist() == labels
        assert [policy.act(o, {}) for o in observations[:30]] == labels[:30]


def test_policy_meets_the_agent_protocol_and_labels_ended_traces_with_pad():
    env = gym.make(COMPOSE)
    policy = composition_gym.ExpertPolicy()
    obs, info = env.reset(seed=3)
    done = False
    while not done:
        a = policy.act(obs, info)
        assert isinstance(a, int)
        obs, reward, term, trunc, info = env.step(a)
        done = term or trunc
    assert info["is_success"] and info["all_steps_correct"]
    assert policy.act(obs, info) == T.PAD_ID
    assert policy.act_batch(obs[None]).tolist() == [T.PAD_ID]
