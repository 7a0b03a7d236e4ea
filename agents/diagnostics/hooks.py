"""Read a :class:`~composition_gym.agents.TransformerLM`'s residual stream with forward hooks.

The model file is not touched: hooks on ``lm.body.blocks[i]`` record each block's input and the
last block's output, which is everything the probes and the attention read-out need.  Sequences
are teacher-forced (prompt + a trace), right-padded with ``<pad>``: causal attention makes the
padding invisible to every real token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composition_gym import tokens as T


def pad(seqs: Sequence[Sequence[int]]) -> Any:
    """Right-pad token id lists with ``<pad>`` into an int64 tensor ``[B, T]``."""
    import torch

    if not seqs:
        raise ValueError("need at least one sequence")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), T.PAD_ID, dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.int64)
    return ids


def residual_stream(lm: Any, ids: Any) -> list[Any]:
    """``[h_0, …, h_n]``: ``h_i`` is the input of block ``i`` (``h_0`` the embeddings), ``h_n`` the
    last block's output (before the final LayerNorm); each ``[B, T, d]``, detached."""
    import torch

    blocks = lm.body.blocks
    seen: list[Any] = [None] * (len(blocks) + 1)
    handles = []
    for i, block in enumerate(blocks):
        def pre(module, args, i=i):
            seen[i] = args[0].detach()
        handles.append(block.register_forward_pre_hook(pre))
    handles.append(blocks[-1].register_forward_hook(lambda m, a, out: seen.__setitem__(len(blocks), out.detach())))
    try:
        with torch.no_grad():
            lm.body(ids)
    finally:
        for h in handles:
            h.remove()
    return seen


def batched_residual(lm: Any, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                     batch_size: int = 256) -> Any:
    """Residual stream at chosen positions: ``[n_layers + 1, N, d]`` numpy, rows in the order of
    ``positions`` flattened (sequence by sequence)."""
    import numpy as np
    import torch

    out = []
    lm.eval()
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        where = positions[start : start + batch_size]
        layers = residual_stream(lm, pad(chunk))
        rows = torch.as_tensor([b for b, ps in enumerate(where) for _ in ps], dtype=torch.int64)
        cols = torch.as_tensor([p for ps in where for p in ps], dtype=torch.int64)
        out.append(torch.stack([h[rows, cols] for h in layers]).float().numpy())
    return np.concatenate(out, axis=1)


__all__ = ["batched_residual", "pad", "residual_stream"]
