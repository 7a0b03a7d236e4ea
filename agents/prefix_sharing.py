"""Prefix sharing for the SB3 features extractor: run each episode once, not once per state.

SB3 treats every token of an episode as its own observation, so a PPO mini-batch of 256 states
holds about 9 prefixes of each of about 30 episodes.  With causal attention the hidden state of a
prefix at its last position equals the longer row's at that position, so :func:`last_hidden` runs
only the rows that extend no other row and reads every other row off them (exact up to float
rounding, values and gradients).  Only :class:`~composition_gym.agents.policy.TransformerExtractor`
uses it; the LM's own paths (teacher forcing, KV-cached decoding) need no sharing.
"""

from __future__ import annotations

import torch

from composition_gym.agents.transformer import TransformerBody, trim_to_real


#: Largest ``B * B * T`` for which :meth:`TransformerBody.last_hidden` looks for shared prefixes
#: (a hash collision makes :func:`prefix_representatives` compare every pair of rows in full:
#: a few tensors of that many booleans; an SB3 mini-batch of 256 states of 100 tokens needs 6.6 M).
PREFIX_SHARING_LIMIT = 16 * 2**20


def prefix_representatives(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """For each right-padded row ``i``, a row ``rep[i]`` of which row ``i`` is a prefix.

    ``rep[i]`` is the longest such row (the lowest index among equals), so the representatives
    are exactly the rows that extend no other row's tokens, each its own representative.  Causal
    attention makes row ``i``'s hidden state at position ``t < lengths[i]`` equal to
    ``rep[i]``'s at ``t``.

    Rows are matched by a hash of each prefix (``B * T + B * B`` work); the chosen rows are then
    checked token by token, and a hash collision falls back to comparing every pair of rows in
    full, so the answer is always exact.
    """
    b, t = ids.shape
    if b == 0:
        return torch.zeros(0, dtype=torch.long, device=ids.device)
    lengths = lengths.clamp(min=1)  # an all-padding row is read at position 0: only its like share it
    last = lengths - 1
    weights = torch.tensor([pow(_HASH_BASE, k, _HASH_MOD) for k in range(t)], dtype=torch.int64, device=ids.device)
    prefix_hash = torch.cumsum((ids.long() + 1) * weights, dim=1) % _HASH_MOD  # [B, T]; terms < 2^38
    own = prefix_hash[torch.arange(b, device=ids.device), last]  # each row's whole-row hash
    extends = prefix_hash[:, last].T == own[:, None]  # [i, j]: row j's first len_i tokens hash like row i
    rep = _longest_extension(extends, lengths)
    inside = torch.arange(t, device=ids.device)[None, :] < lengths[:, None]
    if bool(((ids[rep] == ids) | ~inside).all()):
        return rep
    exact = ((ids[None, :, :] == ids[:, None, :]) | ~inside[:, None, :]).all(dim=2)  # a hash collision: compare all
    return _longest_extension(exact, lengths)


_HASH_BASE, _HASH_MOD = 1_000_003, 2_147_483_629  # a prime below 2^31: products stay far inside int64


def _longest_extension(extends: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per row ``i``, the longest row ``j`` (lowest index among equals) with ``extends[i, j]`` and
    ``lengths[j] >= lengths[i]``."""
    b = len(lengths)
    extends = extends & (lengths[None, :] >= lengths[:, None])
    score = lengths[None, :] * (b + 1) - torch.arange(b, device=lengths.device)[None, :]
    return torch.where(extends, score, torch.full_like(score, -1)).argmax(dim=1)


def last_hidden(body: TransformerBody, ids: torch.Tensor) -> torch.Tensor:
    """``body.last_hidden(ids)``, reading rows that are prefixes of another row off that row's pass.

    Finding shared rows costs ``B * B`` (``B * B * T`` on a hash collision): skipped for one row (an
    agent acting alone), for batches past :data:`PREFIX_SHARING_LIMIT`, and in training with
    dropout (shared rows would share dropout masks).  Shared only when enough rows are: the
    shared path runs every block at every position of ``R`` rows, the plain one all but half a
    block (the last one's keys and values) of ``B``.
    """
    body._check(ids)
    ids, lengths = trim_to_real(ids)
    index = (lengths - 1).clamp(min=0)  # an all-padding row reads position 0 (it never occurs in an env)
    b, t = ids.shape
    if 1 < b and b * b * t <= PREFIX_SHARING_LIMIT and not (body.training and body.config.dropout > 0):
        reps, slot = torch.unique(prefix_representatives(ids, lengths), return_inverse=True)
        n_layers = len(body.blocks)
        if 2 * n_layers * len(reps) <= (2 * n_layers - 1) * b:
            return body(ids[reps])[slot, index]  # [R, T, d] -> each row's own position
    return body.last_hidden_trimmed(ids, index)


__all__ = ["PREFIX_SHARING_LIMIT", "last_hidden", "prefix_representatives"]
