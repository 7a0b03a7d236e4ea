"""Attention to the call: call ownership of prompt tokens, masses on a hand-built pattern, and the
recomputed weights reproduce the model's own blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from composition_gym.agents.diagnostics.attention import (
    HEAD, TRACE, attention_to_calls, attention_weights, call_masses, call_owners, summarise, token_owners)
from composition_gym.agents.diagnostics.hooks import pad, residual_stream
from composition_gym.agents.diagnostics.traces import expert_traces
from composition_gym.cascade import Cascade


def test_call_owners_follow_the_nesting():
    c = Cascade((("CatX", "Flip"), ("Chain", "Swap"), ("Left", "Shift")))
    # Left ( Shift , Swap ( Flip ( X + X ) ) )
    assert c.program() == ["Left", "(", "Shift", ",", "Swap", "(", "Flip", "(", "X", "+", "X", ")", ")", ")"]
    assert call_owners(c) == [3, 3, 3, 3, 2, 2, 1, 1, 0, 1, 1, 1, 2, 3]


def test_token_owners_cover_head_program_and_trace():
    s = expert_traces("Compose-L3-v0", 1, 0)[0]
    owners = token_owners(s)
    assert owners[0] == HEAD and owners[s.prompt_len - 1] == TRACE and (owners[s.prompt_len:] == TRACE).all()
    assert set(owners[(owners != HEAD) & (owners != TRACE)]) == {0, 1, 2, 3}


def test_hand_built_attention_gives_the_expected_call_mass():
    # positions: 0 head, 1-2 call 1, 3 input X, 4-5 call 2, 6 '|', 7-8 trace
    owners = np.array([HEAD, 1, 1, 0, 2, 2, TRACE, TRACE, TRACE])
    attn = np.zeros((2, 9, 9))
    attn[0, 6, [1, 2, 4, 0]] = [0.3, 0.3, 0.1, 0.3]  # head 0: 60 % to call 1, 10 % to call 2, 30 % head
    attn[0, 7, [2, 5, 7]] = [0.8, 0.1, 0.1]
    attn[1, 6, 6] = attn[1, 7, 7] = 1.0              # head 1: only the trace
    m = call_masses(attn, owners, step=1, queries=[6, 7])
    assert m["call"] == pytest.approx([0.7, 0.0])
    assert m["other_calls"] == pytest.approx([0.1, 0.0])
    assert m["input"] == pytest.approx([0.15, 0.0])
    assert m["trace"] == pytest.approx([0.05, 1.0])
    assert sum(m.values()) == pytest.approx([1.0, 1.0])
    m2 = call_masses(attn, owners, step=2, queries=[6, 7])
    assert (m2["call"][0], m2["other_calls"][0]) == pytest.approx((0.1, 0.7))


def test_recomputed_attention_reproduces_each_block(small_lm):
    ids = pad([s.ids for s in expert_traces("OOD-Depth-L4-v0", 3, 0)])
    h = residual_stream(small_lm, ids)
    weights = attention_weights(small_lm, ids)
    with torch.no_grad():
        for i, (block, a) in enumerate(zip(small_lm.body.blocks, weights)):
            assert torch.allclose(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5)
            assert torch.equal(a.triu(1), torch.zeros_like(a))  # causal
            _, _, v = block._heads(h[i])
            b, t, d = h[i].shape
            y = h[i] + block.proj((a @ v).transpose(1, 2).reshape(b, t, d))
            assert torch.allclose(y + block.ffn(block.ln2(y)), h[i + 1], atol=1e-5)


def test_attention_to_calls_masses_sum_to_one(small_lm):
    samples = expert_traces("Compose-L3-v0", 6, 1)
    r = attention_to_calls(small_lm, samples, batch_size=4)
    total = sum(np.asarray(r[k]) for k in ("call", "other_calls", "input", "trace"))
    assert np.allclose(total, 1.0, atol=1e-5)
    assert np.asarray(r["share"]).shape == (small_lm.config.n_layers, small_lm.config.n_heads)
    assert r["n"] == 18 and set(r["share_by_step"]) == {"1", "2", "3"}
    assert 0 < r["chance_share"] < 1
    to_call = np.asarray(r["to_call"]["2"])  # [layers, H, 3 calls]
    assert to_call.shape == (small_lm.config.n_layers, small_lm.config.n_heads, 3)
    own = np.mean([np.asarray(r["to_call"][str(t)])[..., t - 1] for t in (1, 2, 3)], axis=0)
    assert np.allclose(own, r["call"], atol=1e-6)  # every trace has 3 steps: own-call mass, step by step
    assert (to_call >= 0).all() and (to_call.sum(-1) <= 1 + 1e-6).all()
    s = summarise(r)
    assert all(m <= b + 1e-12 for m, b in zip(s["mean_head"], s["best_head"]))
