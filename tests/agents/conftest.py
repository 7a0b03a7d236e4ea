"""Shared fixtures: the shipped trained model, small random models, expert episodes.

No fixture trains a model: tests that need a trained one use the checkpoint that ships with the
package (``pretrained("small")``, :func:`shipped_lm`); only the behavior-cloning acceptance test
(tests/agents/test_bc.py, ``slow``) trains from scratch.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import composition_gym  # noqa: F401
from composition_gym.agents import TransformerConfig, TransformerLM, pretrained
from composition_gym.agents.settings import BC_PRESETS

SFT_ENV = "composition_gym/Compose-L3-v0"
DEPTH4_ENV = "composition_gym/OOD-Depth-L4-v0"

#: The BC run of the acceptance test: the ``default`` preset (sized to reach >= 90 % greedy
#: success on SFT_ENV), with more held-out episodes for a tighter estimate.
BC_TEST = BC_PRESETS["default"].replace(eval_episodes=400)


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """One torch thread for these tests: the models are tiny, and on a shared machine a second
    thread that competes for a busy core spin-waits and can make each op ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shipped_lm() -> TransformerLM:
    """The behavior-cloned model that ships with the package (a fresh copy per test: tests may train it)."""
    return pretrained("small").eval()


@pytest.fixture
def small_lm() -> TransformerLM:
    """An untrained small model with non-trivial weights (random init, seeded)."""
    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2, segment_dims=4))
    with torch.no_grad():  # larger than the init scale, so logits differ visibly between positions
        for p in lm.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return lm.eval()


def expert_episode(env_id: str, seed: int) -> np.ndarray:
    """Observations ``[steps, max_len]`` before each expert action of one episode."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    seen = []
    while True:
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
        if terminated or truncated:
            return np.stack(seen)
