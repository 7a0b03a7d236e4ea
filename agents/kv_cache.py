"""The KV cache of batched incremental decoding (:meth:`TransformerLM.prefill` / :meth:`TransformerLM.decode`).

Decoding here is lockstep: every row of a batch receives one token per :meth:`TransformerLM.decode`
call (rows whose episode has ended are fed any token and ignored).  That makes the generated part
of every row the same length, so the cache splits in two:

* the **prompt part** holds the keys and values of each *distinct* prompt once.  Group-relative RL
  samples ``G`` completions of each problem, so its ``B * G`` rows come in contiguous blocks of
  ``G`` identical prompts: the prompt is prefilled once per block and each block's queries read its
  keys in one matrix product (``G`` queries per product instead of one).  Prompts have different
  lengths; ``prompt_bias`` (``-inf`` past a prompt's end) is built once at prefill.
* the **trace part** holds every row's generated tokens, preallocated to the longest possible
  trace and written in place at column ``written`` (no concatenation, no per-step mask: every
  row's trace has the same length).

One softmax runs over both parts, so the result equals attention over the concatenated sequence
(:func:`attend`); ``tests/agents/test_kv_cache.py`` checks the logits against the full forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of ``N`` rows being decoded in lockstep.

    Rows come in ``block`` consecutive rows per distinct prompt (``U = N / block`` prompts).  Row
    ``n`` holds its prompt (``prompt_len[n // block]`` tokens at positions ``0 …``) and
    ``written`` generated tokens after it; the next token goes at position
    ``prompt_len + written``.  ``segment`` and ``run`` carry each row's last segment index and its
    index inside a run of letters, so the rotary and string-position inputs of the next token need
    no look back.  Built by :meth:`TransformerLM.prefill`, advanced by :meth:`TransformerLM.decode`.
    """

    prompt_keys: list[torch.Tensor]  # per layer [U, H, P, head_dim] (rotated)
    prompt_values: list[torch.Tensor]
    prompt_bias: torch.Tensor  # [U, 1, 1, P]: 0 at a prompt's tokens, -inf at its right padding
    prompt_len: torch.Tensor  # [U]
    trace_keys: list[torch.Tensor]  # per layer [N, H, capacity, head_dim], positions >= written unused
    trace_values: list[torch.Tensor]  # per layer [N, H, head_dim, capacity]: transposed, see attend
    block: int
    written: int
    segment: torch.Tensor  # [N]
    run: torch.Tensor  # [N]

    @property
    def rows(self) -> int:
        """``N``, the rows being decoded."""
        return int(self.segment.shape[0])

    @property
    def length(self) -> torch.Tensor:
        """``[N]`` tokens held per row (prompt + generated): the position of the next token."""
        return self.prompt_len.repeat_interleave(self.block) + self.written

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store the new token's rotated ``key`` and ``value`` ``[N, H, 1, hd]`` of ``layer`` at position ``written``."""
        if self.written == self.trace_keys[layer].shape[2]:
            self._grow()
        self.trace_keys[layer][:, :, self.written] = key[:, :, 0]
        self.trace_values[layer][:, :, :, self.written] = value[:, :, 0]

    def _grow(self) -> None:
        # Prefill sizes the trace part for a typical trace; a caller that decodes further (any
        # length works: positions are relative) pays one copy per doubling.
        t = self.written
        for i, (k, v) in enumerate(zip(self.trace_keys, self.trace_values)):
            self.trace_keys[i] = k.new_empty(k.shape[0], k.shape[1], 2 * max(t, 1), k.shape[3])
            self.trace_keys[i][:, :, :t] = k[:, :, :t]
            self.trace_values[i] = v.new_empty(v.shape[0], v.shape[1], v.shape[2], 2 * max(t, 1))
            self.trace_values[i][..., :t] = v[..., :t]

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """Attention output ``[N, H, 1, hd]`` of queries ``q`` ``[N, H, 1, hd]`` over each row's prompt
        and its ``written + 1`` trace tokens (the new one included: call :meth:`write` first).

        Scores and weights live in the block layout ``[U, G, H, ·]``, a free view of the rows, so
        that the prompt part's products run per block without reshuffling copies.
        """
        n, h, _, hd = q.shape
        keys, values, bias = self.prompt_keys[layer], self.prompt_values[layer], self.prompt_bias
        u, p, g = keys.shape[0], keys.shape[2], self.block
        t = self.written + 1
        q = q * (1.0 / math.sqrt(hd))
        # Prompt part: the g rows of a block ask their shared prompt in one product.
        prompt_scores = torch.matmul(q.view(u, g, h, hd).transpose(1, 2), keys.transpose(-1, -2)) + bias
        trace_scores = torch.matmul(q, self.trace_keys[layer][:, :, :t].transpose(-1, -2))  # [N, H, 1, t]
        weights = torch.softmax(torch.cat([prompt_scores.transpose(1, 2), trace_scores.view(u, g, h, t)], dim=-1),
                                dim=-1)  # [U, G, H, P + t]
        out = torch.matmul(weights[..., :p].transpose(1, 2), values).transpose(1, 2)  # [U, G, H, hd]
        # One query per row: [hd, t] @ [t, 1] on the transposed values is the fast form of this
        # product on CPU (a [1, t] @ [t, hd] per row reads a strided slice, about 3x slower).
        trace_w = weights[..., p:].reshape(n, h, t, 1)
        out = out + torch.matmul(self.trace_values[layer][..., :t], trace_w).view(u, g, h, hd)
        return out.reshape(n, h, 1, hd)

    def select_blocks(self, blocks: torch.Tensor) -> KVCache:
        """The cache of the prompt blocks ``blocks`` (sorted) only: drop finished groups, so that no
        work is spent on them.

        The trace part is compacted in place (the kept rows move to the front of the same storage,
        so memory never grows): this cache is consumed, use the one returned.
        """
        g = self.block
        rows = (blocks[:, None] * g + torch.arange(g, device=blocks.device)[None, :]).reshape(-1)
        t, k = self.written, len(rows)
        for i, (keys, values) in enumerate(zip(self.trace_keys, self.trace_values)):
            keys[:k, :, :t] = keys[rows, :, :t]  # only the written positions carry data
            values[:k, ..., :t] = values[rows, ..., :t]
            self.trace_keys[i], self.trace_values[i] = keys[:k], values[:k]
        return KVCache([k_[blocks] for k_ in self.prompt_keys], [v[blocks] for v in self.prompt_values],
                       self.prompt_bias[blocks], self.prompt_len[blocks], self.trace_keys, self.trace_values, g, t,
                       self.segment[rows], self.run[rows])


def contiguous_block(ids: torch.Tensor) -> int:
    """The size ``G`` of the runs of identical consecutive rows of ``ids`` when every run has that
    size (group-relative RL's ``G`` samples per problem), else 1."""
    n = ids.shape[0]
    if n < 2:
        return 1
    starts = torch.ones(n, dtype=torch.bool, device=ids.device)
    starts[1:] = (ids[1:] != ids[:-1]).any(dim=1)
    first = torch.nonzero(starts).squeeze(1)
    sizes = torch.diff(first, append=torch.tensor([n], device=ids.device))
    g = int(sizes[0])
    return g if bool((sizes == g).all()) else 1


__all__ = ["KVCache", "contiguous_block"]
