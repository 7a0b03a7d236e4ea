"""The batch engine (``play``): one draw per distinct seed, ended rows restarted without drawing,
the sampling log-probabilities, and the same episodes as playing each seed alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from composition_gym.agents.sampling import AgentChooser, LMChooser, make_vec, play

ENV = "composition_gym/Compose-L3-v0"


def test_play_draws_each_distinct_problem_once(small_lm, monkeypatch):
    venv = make_vec(ENV, 12)
    sampler = venv.unwrapped._sampler
    draws = []
    real = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda rng: draws.append(1) or real(rng))
    played = play(venv, [s for s in (1, 2, 3) for _ in range(4)], LMChooser(small_lm, 1.0, torch.Generator()))
    assert len(draws) == 3  # no draw for the copies, none for rows that ended before the others
    assert len(set(played.steps.tolist())) > 1  # rows did end at different steps


def test_rows_play_the_episodes_of_a_single_env(small_lm):
    """Rows that ended were restarted while others played on: no row's episode is affected."""
    seeds = [5, 6, 7, 5]
    played = play(make_vec(ENV, 4), seeds, LMChooser(small_lm))
    for i, seed in enumerate(seeds):
        env = gym.make(ENV)
        obs, info = env.reset(seed=seed)
        reward = 0.0
        for k in range(played.steps[i]):
            obs, r, term, trunc, info = env.step(int(played.actions[i, k]))
            reward += r
        assert term or trunc
        np.testing.assert_array_equal(obs, played.obs[i])
        assert reward == played.reward[i] and info["is_success"] == played.infos[i]["is_success"]


def test_log_probs_need_a_sampling_lm(small_lm):
    venv = make_vec(ENV, 2)
    played = play(venv, [1, 2], LMChooser(small_lm, 0.7, torch.Generator().manual_seed(0)), record_log_probs=True)
    written = np.arange(played.actions.shape[1])[None] < played.steps[:, None]
    assert (played.log_probs[written] <= 0).all() and (played.log_probs[~written] == 0).all()
    for chooser in (LMChooser(small_lm), AgentChooser(object())):
        with pytest.raises(ValueError, match="record_log_probs"):
            play(venv, [1, 2], chooser, record_log_probs=True)
