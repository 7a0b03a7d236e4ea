"""KV-cached incremental decoding equals the full forward, token by token."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import composition_gym  # noqa: F401
from composition_gym.agents.kv_cache import contiguous_block
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


def _grouped_sequences(group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows in blocks of ``group`` sharing a prompt, each block's rows continuing with a different
    trace (the traces of other problems: the model need not like them).  Returns ``(full,
    prompts, prompt_len)``, right-padded."""
    obs = torch.as_tensor(expert_batch("composition_gym/Compose-L3-v0", list(range(4))))
    sep = (obs == composition_gym.tokens.SEP_ID).int().argmax(dim=1)
    lengths = (obs != 0).sum(dim=1)
    rows = []
    for j in range(4):
        for r in range(group):
            k = (j + r) % 4
            rows.append(torch.cat([obs[j, : sep[j] + 1], obs[k, sep[k] + 1 : lengths[k]]]))
    full = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    prompt_len = (sep + 1).repeat_interleave(group)
    prompts = torch.where(torch.arange(full.shape[1])[None] < prompt_len[:, None], full, 0)
    return full, prompts, prompt_len


@pytest.mark.parametrize("group", [1, 3])
def test_grouped_prompts_are_prefilled_once_and_decode_like_the_full_forward(small_lm, group):
    full, prompts, prompt_len = _grouped_sequences(group)
    expected = small_lm(full)
    lengths = (full != 0).sum(dim=1)
    rows = torch.arange(len(full))
    with torch.no_grad():
        logits, cache = small_lm.prefill(prompts, capacity=full.shape[1])
        assert cache.block == group and cache.prompt_keys[0].shape[0] == 4  # one prompt per block
        worst = float((logits - expected[rows, prompt_len - 1]).abs().max())
        kept = rows
        for step in range(int((lengths - prompt_len).max())):
            if step == 4:  # drop the second and fourth blocks, keep decoding the others
                cache = cache.select_blocks(torch.tensor([0, 2]))
                kept = torch.cat([rows[:group], rows[2 * group : 3 * group]])
            pos = (prompt_len[kept] + step).clamp(max=full.shape[1] - 1)
            logits = small_lm.decode(full[kept, pos], cache)
            live = prompt_len[kept] + step < lengths[kept]  # rows whose trace has this token
            worst = max(worst, float(((logits - expected[kept, pos]) * live[:, None]).abs().max()))
    assert worst <= 1e-5, f"grouped cached logits differ from the full forward by {worst:.2e}"


def test_contiguous_block_finds_equal_runs_only():
    a, b = [1, 2, 0], [1, 3, 0]
    assert contiguous_block(torch.tensor([a, a, b, b])) == 2
    assert contiguous_block(torch.tensor([a, a, b])) == 1
    assert contiguous_block(torch.tensor([a, b, a])) == 1
    assert contiguous_block(torch.tensor([a])) == 1


def test_cache_grows_past_its_capacity(small_lm):
    ids = torch.as_tensor(expert_batch("composition_gym/Compose-L3-v0", [0, 1]))
    sep = int((ids == composition_gym.tokens.SEP_ID).int().argmax(dim=1).max())
    with torch.no_grad():
        _, cache = small_lm.prefill(ids[:, : sep + 1], capacity=sep + 2)
        for _ in range(5):  # the trace part was sized for ~1 token; decoding further still works
            small_lm.decode(torch.full((2,), composition_gym.tokens.LETTER_IDS["a"]), cache)
    assert cache.written == 5 and cache.trace_keys[0].shape[2] >= 5


def test_the_shipped_checkpoint_decodes_the_episodes_it_decoded_before():
    """Greedy evaluation of ``pretrained("small")`` (KV-cached decoding): the same 200 episodes, token
    for token, as on main at 6f7cf5f, before the two-part cache."""
    import hashlib
    import json

    from composition_gym.agents import LMAgent, evaluate, pretrained

    report = evaluate(LMAgent(pretrained("small")), ["composition_gym/Compose-L3-v1"], episodes=200, seed=123)
    tokens = json.dumps([e.tokens for e in report.episodes]).encode()
    assert report.success == 0.84
    assert hashlib.sha256(tokens).hexdigest() == "350e7977ccc5b718b4b607b86024177318ad29209625e4b5dda1c09d114bfe99"
