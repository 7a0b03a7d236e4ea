"""The KV cache of batched incremental decoding (:meth:`TransformerLM.prefill` / :meth:`TransformerLM.decode`).

Decoding here is lockstep: every row of the cache receives one token per
:meth:`TransformerLM.decode` call, so every row's generated part has the same length.  A row holds
its prompt in columns ``0 … P-1`` (right-padded to the longest prompt ``P``; ``bias`` is ``-inf``
on the padding, built once) and its generated tokens from column ``P`` on, preallocated and
written in place at column ``P + written``: no concatenation, no mask rebuilt per step.  Rotary
positions are relative, so a row's tokens need not sit at their own positions; each new token is
rotated by its true position ``prompt_len + written``.

Rows are *histories*, not episodes: :class:`~composition_gym.agents.sampling.LMChooser` keeps one
row per distinct prompt + tokens so far, and :meth:`KVCache.fork` copies a row when samples of
one history diverge (group-relative RL draws ``G`` samples of each problem from a confident model:
at L=3 only about 15 % of its row-steps have a history no other row shares).

``tests/agents/test_kv_cache.py`` checks the logits against the full forward, forks included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class KVCache:
    """Keys and values of every layer for ``R`` rows decoded in lockstep.

    Row ``r`` holds ``prompt_len[r]`` prompt tokens (columns ``0 …``, padded to ``prompt_width``)
    and ``written`` generated tokens (columns ``prompt_width …``); the next token's position is
    ``prompt_len[r] + written``.  ``segment`` and ``run`` carry each row's last segment index and
    its index inside a run of letters, so the rotary and string-position inputs of the next token
    need no look back.  Built by :meth:`TransformerLM.prefill`, advanced by
    :meth:`TransformerLM.decode`, rows chosen by :meth:`fork`.
    """

    keys: list[torch.Tensor]  # per layer [>= R, H, capacity, head_dim] (rotated); rows [:R] in use
    values: list[torch.Tensor]  # per layer [>= R, H, head_dim, capacity]: transposed, see attend
    bias: torch.Tensor  # [>= R, 1, 1, capacity]: -inf on each prompt's padding, else 0
    prompt_len: torch.Tensor  # [R]
    prompt_width: int
    written: int
    segment: torch.Tensor  # [R]
    run: torch.Tensor  # [R]

    @property
    def rows(self) -> int:
        """``R``, the rows being decoded."""
        return int(self.prompt_len.shape[0])

    @property
    def length(self) -> torch.Tensor:
        """``[R]`` tokens held per row (prompt + generated): the position of the next token."""
        return self.prompt_len + self.written

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store the new token's rotated ``key`` and ``value`` ``[R, H, 1, hd]`` of ``layer`` in place."""
        column, r = self.prompt_width + self.written, self.rows
        if column == self.keys[layer].shape[2]:
            self._resize(self.keys[0].shape[0], 2 * column)
        self.keys[layer][:r, :, column] = key[:, :, 0]
        self.values[layer][:r, :, :, column] = value[:, :, 0]

    def _resize(self, rows: int, columns: int, take: torch.Tensor | None = None) -> None:
        """New storage of ``rows`` x ``columns`` holding the used columns of rows ``take`` (default:
        the rows in use, in order).  Prefill sizes the room for a typical trace; a caller that goes
        further (any length works: positions are relative) pays one copy per doubling."""
        take = torch.arange(self.rows, device=self.bias.device) if take is None else take
        used, n = self.prompt_width + self.written, len(take)
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            self.keys[i] = k.new_empty(rows, k.shape[1], columns, k.shape[3])
            self.keys[i][:n, :, :used] = k[take, :, :used]
            self.values[i] = v.new_empty(rows, v.shape[1], v.shape[2], columns)
            self.values[i][:n, ..., :used] = v[take, ..., :used]
        bias = self.bias.new_zeros(rows, 1, 1, columns)
        bias[:n, ..., : min(columns, self.bias.shape[3])] = self.bias[take, ..., :columns]
        self.bias = bias

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """Attention output ``[R, H, 1, hd]`` of queries ``q`` ``[R, H, 1, hd]`` over each row's prompt
        and generated tokens (the new one included: call :meth:`write` first)."""
        r, hd = q.shape[0], q.shape[-1]
        used = self.prompt_width + self.written + 1
        scores = torch.matmul(q * (1.0 / math.sqrt(hd)), self.keys[layer][:r, :, :used].transpose(-1, -2))
        weights = torch.softmax(scores + self.bias[:r, ..., :used], dim=-1)  # [R, H, 1, used]
        # One query per row: [hd, used] @ [used, 1] on the transposed values is the fast form of
        # this product on CPU (a [1, used] @ [used, hd] per row reads a strided slice, ~3x slower).
        return torch.matmul(self.values[layer][:r, ..., :used], weights.transpose(-1, -2)).transpose(-1, -2)

    #: Rows no history continues are decoded (their output ignored) until they are this share of
    #: the cache, then it is compacted: a copy of the cache costs about one step's attention.
    DEAD_SHARE = 1 / 8

    def fork(self, parents: np.ndarray) -> np.ndarray:
        """Continue row ``parents[i]`` (sorted) as history ``i``; returns each history's row.

        A parent's first history keeps its row; further ones (samples of one history that
        diverge) get copies appended; rows no history continues (ended episodes) stay, ignored,
        until they are :data:`DEAD_SHARE` of the cache, which is then compacted.  Only the new or
        kept rows are copied, never the whole cache at every step.
        """
        r, n = self.rows, len(parents)
        first = np.ones(n, dtype=bool)
        first[1:] = parents[1:] != parents[:-1]
        extra = parents[~first]
        dead = r - int(first.sum())
        device = self.bias.device
        if dead >= max(1, self.DEAD_SHARE * (r + len(extra))):
            take = torch.as_tensor(parents, device=device)
            self._resize(n + n // 2, self.keys[0].shape[2], take)
            self._index(take)
            return np.arange(n)
        if extra.size:
            if r + extra.size > self.keys[0].shape[0]:
                self._resize(2 * (r + extra.size), self.keys[0].shape[2])
            used, add = self.prompt_width + self.written, torch.as_tensor(extra, device=device)
            for k, v in zip(self.keys, self.values):
                k[r : r + extra.size, :, :used] = k[add, :, :used]
                v[r : r + extra.size, ..., :used] = v[add, ..., :used]
            self.bias[r : r + extra.size] = self.bias[add]
            self._index(torch.cat([torch.arange(r, device=device), add]))
        rows = np.empty(n, dtype=np.int64)
        rows[first], rows[~first] = parents[first], r + np.arange(extra.size)
        return rows

    def _index(self, take: torch.Tensor) -> None:
        self.prompt_len, self.segment, self.run = self.prompt_len[take], self.segment[take], self.run[take]


__all__ = ["KVCache"]
