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


@pytest.mark.parametrize("dead_share", [1.0, 0.0])  # rows appended in place; the cache compacted
def test_forked_rows_decode_like_the_full_forward_of_their_histories(small_lm, monkeypatch, dead_share):
    """Rows forked from one history (samples that diverge) and rows left out (ended episodes): every
    kept row's logits are the full forward's over its own prompt + tokens."""
    from composition_gym.agents.kv_cache import KVCache

    monkeypatch.setattr(KVCache, "DEAD_SHARE", dead_share)
    obs = torch.as_tensor(expert_batch("composition_gym/Compose-L3-v0", list(range(4))))
    sep = (obs == composition_gym.tokens.SEP_ID).int().argmax(dim=1)
    trace = [obs[j, sep[j] + 1 : int((obs[j] != 0).sum())] for j in range(4)]
    prompts = torch.where(torch.arange(obs.shape[1])[None] <= sep[:, None], obs, 0)
    parents, k = [0, 0, 1, 3], 3  # after k tokens: row 0 splits in two, row 2 ends
    # the histories after the fork: row 1 continues row 0's first k tokens with problem 1's tail
    seqs = [torch.cat([obs[p, : sep[p] + 1], trace[p][:k], trace[c][k:]]) for p, c in zip(parents, [0, 1, 1, 3])]
    full = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    expected = small_lm(full)
    with torch.no_grad():
        logits, cache = small_lm.prefill(prompts, capacity=obs.shape[1])
        for step in range(k):
            logits = small_lm.decode(torch.stack([trace[j][step] for j in range(4)]), cache)
        rows = torch.as_tensor(cache.fork(np.array(parents)))  # each history's row
        if dead_share:  # row 2 left in place, a copy of row 0 appended
            assert rows.tolist() == [0, 4, 1, 3] and cache.rows == 5
        else:
            assert rows.tolist() == [0, 1, 2, 3] and cache.rows == 4
        logits = logits[parents]
        steps = min(len(x) for x in seqs) - int(sep.max()) - 1 - k
        worst = 0.0
        for step in range(k, k + steps):
            pos = torch.tensor([int(sep[p]) + step for p in parents])  # the logits before token `step`
            worst = max(worst, float((logits - expected[torch.arange(4), pos]).abs().max()))
            tokens = torch.zeros(cache.rows, dtype=torch.int64)  # the ended row gets <pad>
            tokens[rows] = full[torch.arange(4), pos + 1]
            logits = small_lm.decode(tokens, cache)[rows]
        kept = np.sort(rows.numpy())
        assert (cache.fork(kept) == (kept if dead_share else np.arange(4))).all()
    assert steps > 2
    assert worst <= 1e-5, f"forked cached logits differ from the full forward by {worst:.2e}"


def test_the_chooser_decodes_each_distinct_history_once(small_lm):
    """Greedy rows with the same prompt share one cache row all along; the tokens are those of
    playing each problem alone."""
    from composition_gym.agents.sampling import LMChooser, make_vec, play

    chooser = LMChooser(small_lm)
    rows = []
    real_decode = small_lm.decode
    small_lm.decode = lambda tokens, cache: rows.append(cache.rows) or real_decode(tokens, cache)
    try:
        together = play(make_vec("composition_gym/Compose-L3-v0", 5), [1, 1, 2, 1, 2], chooser)
    finally:
        del small_lm.decode
    assert max(rows) == 2  # two problems, greedy: two histories, however many rows
    alone = play(make_vec("composition_gym/Compose-L3-v0", 2), [1, 2], LMChooser(small_lm))
    for i, j in enumerate([0, 0, 1, 0, 1]):
        np.testing.assert_array_equal(together.actions[i, : together.steps[i]], alone.actions[j, : alone.steps[j]])


def test_cache_grows_past_its_room(small_lm, monkeypatch):
    """A cache sized for one generated token doubles as decoding goes on, values intact."""
    from composition_gym.agents.transformer import TransformerBody

    monkeypatch.setattr(TransformerBody, "TRACE_ROOM", 1)
    test_cached_logits_equal_full_forward(small_lm, 3)
    obs = torch.as_tensor(expert_batch("composition_gym/Compose-L3-v0", [0]))
    with torch.no_grad():
        _, cache = small_lm.prefill(obs[:, :4])
        for _ in range(5):
            small_lm.decode(torch.tensor([composition_gym.tokens.LETTER_IDS["a"]]), cache)
    assert cache.written == 5 and cache.keys[0].shape[2] >= 4 + 5 and cache.bias.shape[3] == cache.keys[0].shape[2]


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
