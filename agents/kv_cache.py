"""The KV cache of batched incremental decoding (:meth:`TransformerLM.prefill` / :meth:`TransformerLM.decode`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences being decoded one token at a time.

    Row ``b`` holds ``length[b]`` tokens at positions ``0 … length[b] - 1``; the next token goes
    at ``length[b]``.  ``segment`` and ``run`` carry the last token's segment index and its index
    inside a run of letters, so the rotary and string-position inputs of the next token need no
    look back.  Built by :meth:`TransformerLM.prefill`, advanced by :meth:`TransformerLM.decode`.
    """

    keys: list[torch.Tensor]  # per layer [B, H, capacity, head_dim] (rotated)
    values: list[torch.Tensor]
    length: torch.Tensor  # [B]
    segment: torch.Tensor  # [B]
    run: torch.Tensor  # [B]

    def select(self, rows: torch.Tensor) -> KVCache:
        """The cache of the rows ``rows`` only (drop finished sequences to save compute)."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values],
                       self.length[rows], self.segment[rows], self.run[rows])


__all__ = ["KVCache"]
