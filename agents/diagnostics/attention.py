"""Attention to the call: does the token writing step ``t`` look at the nested call that implements it?

The prompt's program renders the cascade as nested calls (:meth:`Cascade.program`): step ``t``'s
call is the ``t``-th innermost, and its own tokens are those it adds around the inner expression
(``Sort ( … + X )`` for ``CatX.Sort``).  Every prompt token gets an *owner*: the step whose call
it belongs to (``1 … L``), ``0`` for the innermost ``X``, :data:`HEAD` for ``<bos> X=… [,Y=…] :``
and :data:`TRACE` for ``|`` and the trace.

Attention weights are recomputed from each block's input (a forward hook) with the block's own
``ln1``/``qkv`` and the body's rotary tables, so the model file needs no change.  For each step
the queries are the positions that write ``z_t`` (its opener up to its last letter but one); their
attention mass, averaged over queries, splits into ``call`` (the step's own call), ``other_calls``,
``input`` (the head and the innermost ``X``) and ``trace``; the four sum to 1 per head.  ``share``
is ``call / (call + other_calls)``; ``chance_share`` is the own call's fraction of all call tokens
(the share of a head that spreads evenly over the program).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from composition_gym import tokens as T
from composition_gym.cascade import Cascade
from composition_gym.agents.diagnostics.hooks import pad
from composition_gym.agents.diagnostics.hooks import residual_stream
from composition_gym.agents.transformer import Rotary

HEAD, TRACE = -1, -2
BUCKETS = ("call", "other_calls", "input", "trace")


def call_owners(cascade: Cascade, prompt_format: str = "nested") -> list[int]:
    """The owning step (``1 … L``; ``0`` for the innermost ``X``) of each token of ``cascade.program()``."""
    return [owner for _, owner in cascade.program_owners(prompt_format)]


def token_owners(sample: Any) -> np.ndarray:
    """Owner of every position of a :class:`~composition_gym.agents.diagnostics.traces.TraceSample`."""
    ids = list(sample.ids)
    colon = ids.index(T.TAG_ID)
    program = call_owners(sample.problem.cascade, sample.prompt_format)
    if colon + 1 + len(program) != sample.prompt_len - 1:
        raise ValueError("the prompt's program does not match its cascade")
    owners = np.full(len(ids), TRACE, dtype=np.int64)
    owners[: colon + 1] = HEAD
    owners[colon + 1 : colon + 1 + len(program)] = program
    return owners


def call_masses(attn: np.ndarray, owners: np.ndarray, step: int, queries: Sequence[int]) -> dict[str, np.ndarray]:
    """Mean attention mass per head from ``queries`` to each bucket, for ``step``'s call.

    Args:
        attn: ``[H, T, T]`` attention weights (rows: queries, each summing to 1 over keys).
        owners: ``[T]`` owners from :func:`token_owners`.
        step: the step (1-based) whose call is "own".
        queries: query positions.

    Returns ``{bucket: [H]}`` for each of :data:`BUCKETS`.
    """
    rows = attn[:, list(queries), : len(owners)]  # [H, Q, T]
    is_call = owners >= 1
    sel = {"call": owners == step, "other_calls": is_call & (owners != step),
           "input": (owners == 0) | (owners == HEAD), "trace": owners == TRACE}
    return {k: rows[:, :, m].sum(-1).mean(-1) for k, m in sel.items()}


def attention_weights(lm: Any, ids: Any) -> list[Any]:
    """Per block, the attention weights ``[B, H, T, T]`` of the model on ``ids`` (recomputed, causal)."""
    import torch


    inputs = residual_stream(lm, ids)
    cos, sin = lm.body.rotary.tables(ids)
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    out = []
    with torch.no_grad():
        for block, x in zip(lm.body.blocks, inputs):
            q, k, _ = block._heads(x)
            q, k = Rotary.rotate(q, cos, sin), Rotary.rotate(k, cos, sin)
            scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
            out.append(scores.masked_fill(~causal, float("-inf")).softmax(-1))
    return out


def attention_to_calls(lm: Any, samples: Sequence[Any], batch_size: int = 128) -> dict[str, Any]:
    """Attention-to-the-call summary of ``lm`` over ``samples`` (all steps each trace reached).

    Returns ``{bucket: [layer][head]}`` means, ``share`` ``[layer][head]`` (mean over steps of
    ``call / (call + other_calls)``), ``share_by_step`` ``{t: [layer][head]}``, ``to_call``
    ``{t: [layer][head][c - 1]}`` (mass from step ``t`` to call ``c``: which call a step reads
    instead of its own), ``chance_share`` and ``n`` (steps averaged).
    """

    lm.eval()
    sums: dict[str, Any] = {}
    by_step: dict[int, list] = {}
    to_call: dict[int, list] = {}
    chance, n = [], 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        layers = [a.numpy() for a in attention_weights(lm, pad([s.ids for s in chunk]))]
        for b, s in enumerate(chunk):
            owners = token_owners(s)
            for t in range(1, len(s.openers) + 1):
                queries = s.segment(t)
                masses = [call_masses(layer[b], owners, t, queries) for layer in layers]
                m = {k: np.stack([x[k] for x in masses]) for k in BUCKETS}  # [layers, H]
                m["share"] = m["call"] / np.maximum(m["call"] + m["other_calls"], 1e-12)
                for k, v in m.items():
                    sums[k] = sums.get(k, 0) + v
                by_step.setdefault(t, []).append(m["share"])
                rows = np.stack([layer[b][:, list(queries), : len(owners)] for layer in layers])  # [layers, H, Q, T]
                calls = np.stack([rows[..., owners == c].sum(-1).mean(-1) for c in range(1, s.depth + 1)], -1)
                to_call.setdefault(t, []).append(calls)  # [layers, H, L]: where step t's queries look
                chance.append(np.sum(owners == t) / max(np.sum(owners >= 1), 1))
                n += 1
    if not n:
        raise ValueError("no trace step to read attention from")
    out = {k: (v / n).tolist() for k, v in sums.items()}
    out["share_by_step"] = {str(t): np.mean(v, axis=0).tolist() for t, v in sorted(by_step.items())}
    # Samples of one env share a depth, so the per-call vectors stack; mixed depths are padded with 0.
    width = max(v.shape[-1] for vs in to_call.values() for v in vs)
    out["to_call"] = {str(t): np.mean([np.pad(v, ((0, 0), (0, 0), (0, width - v.shape[-1]))) for v in vs], axis=0).tolist()
                      for t, vs in sorted(to_call.items())}
    out["chance_share"] = float(np.mean(chance))
    out["n"] = n
    return out


def summarise(result: dict[str, Any]) -> dict[str, list[float]]:
    """Per layer: the share averaged over heads and the best head's share."""
    share = np.asarray(result["share"])
    return {"mean_head": share.mean(1).tolist(), "best_head": share.max(1).tolist()}


__all__ = ["BUCKETS", "HEAD", "TRACE", "attention_to_calls", "attention_weights", "call_masses", "call_owners",
           "summarise", "token_owners"]
