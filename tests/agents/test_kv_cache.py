"""KV-cached incremental decoding equals the full forward, token by token."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import composition_gym  # noqa: F401
from composition_gym.agents.transformer import trim_to_real


def expert_batch(env_id: str, seeds: list[int], **kwargs) -> np.ndarray:
    """Final observations (prompt + full expert trace) of one episode per seed."""
    venv = gym.make_vec(env_id, num_envs=len(seeds), **kwargs)
    obs, _ = venv.reset(seed=seeds)
    done = np.zeros(len(seeds), dtype=bool)
    final = obs.copy()
    while not done.all():
        obs, _, term, trunc, _ = venv.step(venv.unwrapped.expert_actions())
        ended = (term | trunc) & ~done
        final[ended] = obs[ended]
        done |= ended
    venv.close()
    return final


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_cached_logits_equal_full_forward(small_lm, depth):
    obs = expert_batch("composition_gym/Compose-L3-v0" if depth < 4 else "composition_gym/OOD-Depth-L4-v0",
                       list(range(6)), **({"depth": depth} if depth < 4 else {}))
    ids = torch.as_tensor(obs)
    full = small_lm(trim_to_real(ids)[0])  # [B, T, V]
    sep = (ids == composition_gym.tokens.SEP_ID).int().argmax(dim=1)
    lengths = (ids != 0).sum(dim=1)
    prompts = torch.where(torch.arange(ids.shape[1])[None] <= sep[:, None], ids, 0)
    rows = torch.arange(len(ids))
    with torch.no_grad():
        logits, cache = small_lm.prefill(prompts, capacity=ids.shape[1])
        worst = float((logits - full[rows, sep]).abs().max())
        for step in range(int((lengths - sep - 1).max())):
            pos = (sep + 1 + step).clamp(max=ids.shape[1] - 1)
            logits = small_lm.decode(ids[rows, pos], cache)
            live = sep + 1 + step < lengths  # rows whose trace still has this token
            worst = max(worst, float((logits - full[rows, pos.clamp(max=full.shape[1] - 1)])[live].abs().max()))
    assert worst <= 1e-5, f"cached logits differ from the full forward by {worst:.2e} at depth {depth}"


def test_cache_select_keeps_rows(small_lm):
    obs = expert_batch("composition_gym/Compose-L3-v0", [0, 1, 2])
    ids = torch.as_tensor(obs)
    with torch.no_grad():
        _, cache = small_lm.prefill(ids)
        sub = cache.select(torch.tensor([2, 0]))
    assert sub.keys[0].shape[0] == 2 and int(sub.length[0]) == int(cache.length[2])
