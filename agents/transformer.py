"""A small causal transformer over the token vocabulary, with rotary positions.

One set of weights serves three uses (see :mod:`composition_gym.agents.policy` for the SB3 side):

* a causal LM: ``TransformerLM(ids) -> logits`` at every position of a whole trace in one forward,
  which is what teacher-forced behavior cloning needs;
* a features extractor: the hidden state at the last real token of an observation;
* a plain agent: greedy decoding under the grammar mask (:class:`composition_gym.agents.agent.LMAgent`).

The file holds the model and its three forward paths (whole sequence, last position only, one
cached token per row), which share the blocks' internals; it runs past 400 lines for that reason.
The decoding cache and its attention are :mod:`composition_gym.agents.kv_cache`.

Positions are *rotary* (RoPE): attention scores depend only on the distance between two tokens,
never on their absolute index, so the OOD-depth environments (traces longer than any seen in
training) do not meet an untrained position embedding.  Observations are right-padded with
``<pad>`` (id 0); with causal attention a real token never attends to the padding after it, so a
batch can be cut to its longest real prefix without changing any result (:func:`trim_to_real`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from composition_gym.agents.kv_cache import KVCache
from composition_gym.atomic import atomic_write
from composition_gym.tokens import LETTER_IDS, PAD_ID, SEP_ID, STEP_ID, VOCAB_SIZE

LETTER_FIRST, LETTER_LAST = LETTER_IDS["a"], LETTER_IDS["z"]

_FORMAT = "composition-gym/transformer-lm"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a :class:`TransformerLM`.

    The defaults learned the small profile fastest per CPU second in our sweeps (behavior cloning
    to >= 90 % greedy success): string positions were by far the largest gain, and three narrow
    layers beat two wide ones.

    Attributes:
        vocab_size: token vocabulary size (74 for every composition env).
        d_model: width of the residual stream.
        n_layers: number of pre-LN causal self-attention blocks.
        n_heads: attention heads per block (``d_model / n_heads`` must be even, for rotary pairs).
        d_ff: hidden width of each block's feed-forward layer.
        max_len: positions whose rotary tables are precomputed; longer inputs still work
            (the tables grow), because positions are relative.
        dropout: dropout on attention weights and residual branches (0 for RL: PPO's ratio needs
            a deterministic policy).
        rope_base: the rotary frequency base.
        string_positions: learned embeddings of a letter's index inside its string (the run of
            letters it belongs to: ``X``'s value, or one intermediate of the trace); indices past
            the last one share it.  ``0`` disables them.  They are bounded by the profile's
            ``max_result_len``, not by the trace length, so deeper traces meet no unseen index.
        segment_dims: dims of each head rotated by segment index rather than token position
            (see :class:`Rotary`); even, at most ``d_model / n_heads - 2``; ``0`` disables.
    """

    vocab_size: int = VOCAB_SIZE
    d_model: int = 64
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 128
    max_len: int = 128
    dropout: float = 0.0
    rope_base: float = 10000.0
    string_positions: int = 16
    segment_dims: int = 8

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible field."""
        if not isinstance(self.string_positions, int) or self.string_positions < 0:
            raise ValueError(f"TransformerConfig.string_positions must be an int >= 0, got {self.string_positions!r}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head size d_model/n_heads={self.d_model // self.n_heads} must be even for rotary positions")
        head_dim = self.d_model // self.n_heads
        if not isinstance(self.segment_dims, int) or self.segment_dims < 0 or self.segment_dims % 2 \
                or self.segment_dims > head_dim - 2:
            raise ValueError(f"segment_dims must be an even int in [0, {head_dim - 2}], got {self.segment_dims!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.rope_base > 1.0:
            raise ValueError(f"rope_base must be > 1, got {self.rope_base!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what checkpoints and SB3 ``policy_kwargs`` store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """The config stored by :meth:`to_dict`; ``ValueError`` on unknown or bad fields."""
        if isinstance(data, TransformerConfig):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a TransformerConfig needs a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TransformerConfig field(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg


def real_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Number of real (non-``<pad>``) tokens of each right-padded row of ``ids`` ``[B, T]``."""
    return (ids != PAD_ID).sum(dim=1)


def string_positions(ids: torch.Tensor, limit: int) -> torch.Tensor:
    """Index of each letter inside its run of letters (``1, 2, 3, …``); ``0`` for non-letters.

    Clamped to ``limit - 1``.  A cumulative max finds the last non-letter at or before each position.
    """
    t = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    letter = (ids >= LETTER_FIRST) & (ids <= LETTER_LAST)
    last_break = torch.where(letter, torch.zeros_like(t), t).cummax(dim=1).values
    return (t - last_break).clamp(max=limit - 1) * letter


def trim_to_real(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids[:, :longest], lengths)``: drop the columns that are padding in every row.

    Causal attention makes this exact: no real token attends to a later position.
    """
    lengths = real_lengths(ids)
    longest = max(int(lengths.max()), 1) if ids.shape[0] else 1
    return ids[:, :longest], lengths


class Rotary(nn.Module):
    """Rotary embedding (Su et al., 2021) of queries and keys over two relative axes.

    Each head's feature pairs are split in two groups: the first is rotated by the token's position
    (ordinary RoPE), the last ``segment_dims / 2`` pairs by its *segment index*, the number of
    segment separators (``|`` ending the prompt, ``;`` between steps) up to and including it.
    Attention scores then depend on the distance in tokens and the distance in segments, never on
    absolute values: "the previous segment" is one relation at every depth, including depths
    longer than any seen in training.

    The position tables are unsaved buffers (a pure function of the config) that grow on demand.
    """

    def __init__(self, head_dim: int, max_len: int, base: float, segment_dims: int = 0, segment_base: float = 10.0):
        super().__init__()
        pairs, seg_pairs = head_dim // 2, segment_dims // 2
        pos_pairs = pairs - seg_pairs
        self.head_dim, self.seg_pairs = head_dim, seg_pairs
        inv_freq = 1.0 / (base ** (torch.arange(pos_pairs, dtype=torch.float64) * 2 / max(2 * pos_pairs, 1)))
        seg_freq = 1.0 / (segment_base ** (torch.arange(seg_pairs, dtype=torch.float64) / max(seg_pairs, 1)))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("seg_freq", seg_freq.float(), persistent=False)
        self._extend(max_len)

    def _extend(self, length: int) -> None:
        t = torch.arange(length, dtype=torch.float64, device=self.inv_freq.device)
        angles = torch.outer(t, self.inv_freq).float()
        self.register_buffer("pos_angles", angles, persistent=False)

    def at(self, position: torch.Tensor, segment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` ``[B, 1, 1, head_dim]`` for one token per row at ``position`` in ``segment``.

        The same angles :meth:`tables` gives that token in a full forward (KV-cached decoding).
        """
        need = int(position.max()) + 1 if position.numel() else 1
        if need > self.pos_angles.shape[0]:
            self._extend(max(need, 2 * self.pos_angles.shape[0]))
        angles = self.pos_angles[position]  # [B, pos_pairs]
        if self.seg_pairs:
            angles = torch.cat([angles, segment.float().unsqueeze(-1) * self.seg_freq], dim=-1)
        angles = torch.cat([angles, angles], dim=-1)[:, None, None, :]
        return angles.cos(), angles.sin()

    def tables(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` for token ids ``[B, T]``: shape ``[1 or B, 1, T, head_dim]`` (broadcast over heads)."""
        length = ids.shape[1]
        if length > self.pos_angles.shape[0]:
            self._extend(max(length, 2 * self.pos_angles.shape[0]))
        angles = self.pos_angles[:length].unsqueeze(0)  # [1, T, pos_pairs]
        if self.seg_pairs:
            segment = ((ids == SEP_ID) | (ids == STEP_ID)).cumsum(dim=1).float()
            seg_angles = segment.unsqueeze(-1) * self.seg_freq  # [B, T, seg_pairs]
            angles = torch.cat([angles.expand(ids.shape[0], -1, -1), seg_angles], dim=-1)
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate feature pairs ``(x_i, x_{i+d/2})`` of ``x`` ``[..., T, d]`` by each token's angles.

        ``cos``/``sin`` hold each pair's angle twice (``[..., d]``, as :meth:`tables` gives them);
        the first half is used.  Half-width products and one concatenation: the same floats as
        ``x * cos + cat(-x2, x1) * sin`` (``a + (-b)`` is ``a - b`` exactly) in half the tensor ops.
        """
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos[..., :half], sin[..., :half]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class Block(nn.Module):
    """Pre-LN block: ``x + attn(LN(x))`` then ``x + ffn(LN(x))``, causal attention with rotary q/k."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.dropout
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _rotated_heads(self, x: torch.Tensor, cos: torch.Tensor,
                       sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` ``[B, H, T, hd]`` with ``q`` and ``k`` rotated together (one set of ops for both)."""
        b, t, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk = Rotary.rotate(qkv[:2], cos, sin)
        return qk[0], qk[1], qkv[2]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._rotated_heads(x, cos, sin)
        if kv_out is not None:  # prefill of a KV cache: keep the rotated keys and the values
            kv_out.append((k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ffn(self.ln2(x)))

    def forward_at(self, x: torch.Tensor, index: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The block's output only at position ``index[b]`` of each row: ``[B, d]``.

        Equal to ``forward(x)[arange(B), index]``, but the queries and the feed-forward run on one
        token per row instead of ``T`` (the last layer of a features extractor needs no more).
        """
        b, t, d = x.shape
        q, k, v = self._heads(x)
        rows = torch.arange(b, device=x.device)
        cos_q = cos.expand(b, -1, -1, -1)[rows, :, index].unsqueeze(2)  # [B, 1, 1, hd]
        sin_q = sin.expand(b, -1, -1, -1)[rows, :, index].unsqueeze(2)
        q = Rotary.rotate(q[rows, :, index].unsqueeze(2), cos_q, sin_q)  # [B, H, 1, hd]
        k = Rotary.rotate(k, cos, sin)
        visible = (torch.arange(t, device=x.device)[None, :] <= index[:, None]).view(b, 1, 1, t)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=visible,
                                           dropout_p=self.dropout if self.training else 0.0)
        h = x[rows, index] + self.drop(self.proj(a.reshape(b, d)))
        return h + self.drop(self.ffn(self.ln2(h)))

    def forward_cached(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache,
                       layer: int) -> torch.Tensor:
        """One new token per row, ``x`` ``[N, 1, d]``, attending to its prompt and trace in ``cache``.

        Writes the token's rotated key and value into the cache's trace part (in place).
        """
        n, _, d = x.shape
        q, k, v = self._rotated_heads(x, cos, sin)  # [N, H, 1, hd]
        cache.write(layer, k, v)
        a = cache.attend(layer, q)
        x = x + self.drop(self.proj(a.reshape(n, 1, d)))
        return x + self.drop(self.ffn(self.ln2(x)))


class TransformerBody(nn.Module):
    """Token embedding, causal blocks and the final LayerNorm: ids ``[B, T]`` -> hidden ``[B, T, d]``."""

    TRACE_ROOM = 32  # generated tokens a new KV cache holds before it first doubles

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.string_pos = nn.Embedding(cfg.string_positions, cfg.d_model) if cfg.string_positions else None
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.max_len, cfg.rope_base, cfg.segment_dims)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(_init_weights)

    def _check(self, ids: torch.Tensor) -> None:
        if ids.dim() != 2:
            raise ValueError(f"token ids must have shape [batch, time], got {tuple(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token ids must be an integer tensor, got {ids.dtype}")

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if self.string_pos is not None:
            x = x + self.string_pos(string_positions(ids, self.config.string_positions))
        return self.drop(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self._check(ids)
        cos, sin = self.rotary.tables(ids)
        x = self._embed(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.ln_f(x)

    def prefill(self, ids: torch.Tensor, capacity: int) -> tuple[torch.Tensor, KVCache]:
        """Hidden state ``[B, d]`` at the last real token of each right-padded prompt row, and the KV cache.

        ``capacity`` bounds the longest prompt; the cache has room for :data:`TRACE_ROOM` generated
        tokens after it and doubles when a caller goes further.
        """
        self._check(ids)
        ids, lengths = trim_to_real(ids)
        if ids.shape[1] > capacity:
            raise ValueError(f"prompt of {ids.shape[1]} tokens does not fit a KV cache of capacity {capacity}")
        cos, sin = self.rotary.tables(ids)
        x = self._embed(ids)
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in self.blocks:
            x = layer(x, cos, sin, kv_out=kv)
        b, p = ids.shape
        rows, last = torch.arange(b, device=ids.device), (lengths - 1).clamp(min=0)
        room = p + self.TRACE_ROOM
        keys, values = [], []
        for k, v in kv:
            keys.append(k.new_empty(b, k.shape[1], room, k.shape[3]))
            keys[-1][:, :, :p] = k
            values.append(v.new_empty(b, v.shape[1], v.shape[3], room))
            values[-1][..., :p] = v.transpose(-1, -2)
        bias = torch.zeros(b, 1, 1, room, device=ids.device)
        bias[..., :p].masked_fill_((torch.arange(p, device=ids.device)[None, :] >= lengths[:, None]).view(b, 1, 1, p),
                                   float("-inf"))
        segment = ((ids == SEP_ID) | (ids == STEP_ID)).cumsum(dim=1)[rows, last]
        run = string_positions(ids, capacity + 1)[rows, last]
        return self.ln_f(x[rows, last]), KVCache(keys, values, bias, lengths.clone(), p, 0, segment, run)

    def decode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Hidden state ``[R, d]`` of one new token per row appended to ``cache``; advances the cache."""
        position = cache.length
        segment = cache.segment + ((tokens == SEP_ID) | (tokens == STEP_ID)).long()
        letter = (tokens >= LETTER_FIRST) & (tokens <= LETTER_LAST)
        run = torch.where(letter, cache.run + 1, torch.zeros_like(cache.run))
        x = self.embed(tokens)
        if self.string_pos is not None:
            x = x + self.string_pos(run.clamp(max=self.config.string_positions - 1))
        x = self.drop(x).unsqueeze(1)
        cos, sin = self.rotary.at(position, segment)
        for i, layer in enumerate(self.blocks):
            x = layer.forward_cached(x, cos, sin, cache, i)
        cache.written, cache.segment, cache.run = cache.written + 1, segment, run
        return self.ln_f(x[:, 0])

    def last_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden state ``[B, d]`` at the last real token of each right-padded row.

        Trims the batch to its longest real prefix and runs the last block at one position per
        row; equal to ``forward(ids)[b, length_b - 1]`` up to float rounding.  (The SB3 features
        extractor, whose mini-batches hold many prefixes of one episode, reads shared rows off
        each other instead: :func:`composition_gym.agents.prefix_sharing.last_hidden`.)
        """
        self._check(ids)
        ids, lengths = trim_to_real(ids)
        return self.last_hidden_trimmed(ids, (lengths - 1).clamp(min=0))

    def last_hidden_trimmed(self, ids: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Hidden state ``[B, d]`` at position ``index[b]`` of each row of trimmed ``ids``."""
        cos, sin = self.rotary.tables(ids)
        x = self._embed(ids)
        for block in self.blocks[:-1]:
            x = block(x, cos, sin)
        return self.ln_f(self.blocks[-1].forward_at(x, index, cos, sin))


def _init_weights(module: nn.Module) -> None:
    # GPT-2's init: small normal weights keep the residual stream's scale stable at depth.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class TransformerLM(nn.Module):
    """A causal language model over composition tokens: ids ``[B, T]`` -> logits ``[B, T, V]``.

    ``body`` (embedding, blocks, final LayerNorm) is exactly what :class:`composition_gym.agents.policy.TransformerExtractor`
    holds and ``head`` is the policy's action head, so weights move between the two unchanged
    (:func:`composition_gym.agents.policy.load_lm_into_policy`, :func:`composition_gym.agents.policy.lm_from_policy`).

    Args:
        config: the model's shape; the default is sized for the small profile on CPU.
    """

    def __init__(self, config: TransformerConfig | None = None):
        super().__init__()
        self.config = config or TransformerConfig()
        self.body = TransformerBody(self.config)
        self.head = nn.Linear(self.config.d_model, self.config.vocab_size)
        _init_weights(self.head)
        #: What training showed the model (``profile``, ``skills``, ``routings``, ``alphabet``; set by
        #: behavior cloning, saved with it): evaluation refuses envs beyond it.  ``None``: unknown.
        self.trained_on: dict[str, Any] | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every position."""
        return self.head(self.body(ids))

    def last_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, V]`` after the last real token of each right-padded row."""
        return self.head(self.body.last_hidden(ids))

    @torch.no_grad()
    def greedy(self, obs: Any, masks: Any | None = None) -> torch.Tensor:
        """Greedy next tokens for a batch of observations, restricted to ``masks`` when given."""
        ids = torch.as_tensor(obs, dtype=torch.int64, device=self.head.weight.device)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        logits = self.last_logits(ids)
        if masks is not None:
            m = torch.as_tensor(masks, dtype=torch.bool, device=logits.device).reshape(logits.shape)
            logits = logits.masked_fill(~m, float("-inf"))
        return logits.argmax(dim=-1)

    def prefill(self, ids: torch.Tensor, capacity: int | None = None) -> tuple[torch.Tensor, KVCache]:
        """Start incremental decoding: next-token logits ``[B, V]`` after each right-padded row, and its cache.

        ``capacity`` (default: ``ids.shape[1]``, an env observation's width) bounds the prompts.
        """
        hidden, cache = self.body.prefill(ids, capacity or ids.shape[1])
        return self.head(hidden), cache

    def decode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append one token to every row of ``cache`` (``tokens`` ``[R]``; rows advance in lockstep);
        next-token logits ``[R, V]``.

        Equal to ``last_logits`` of the whole sequence so far (up to float rounding), at the cost
        of one position per row instead of the whole prefix.
        """
        return self.head(self.body.decode(tokens, cache))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the config and weights to ``path`` (a ``torch.save`` file, written atomically)."""
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            # What training showed it (profile, skills, letters): evaluation refuses envs beyond it.
            "trained_on": getattr(self, "trained_on", None),
        }
        # Atomic: a run killed mid-save leaves the previous checkpoint, never half of one.
        atomic_write(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TransformerLM:
        """Read a model written by :meth:`save`.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a readable checkpoint of this format, or its weights do
                not match its config (the message names the file and the problem).
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no TransformerLM checkpoint at {path!r}")
        try:
            # weights_only: a checkpoint is data, never code to run.
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 (garbage meets torch's unpickler as KeyError, IndexError, struct.error...)
            # Not torch's message: for a damaged file it advises weights_only=False, which is wrong here.
            raise ValueError(f"{path!r} is not a readable TransformerLM checkpoint (corrupt, truncated or not "
                             f"written by TransformerLM.save: {type(err).__name__})") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path!r} is not a TransformerLM checkpoint (missing format tag {_FORMAT!r})")
        if payload.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{path!r} has checkpoint version {payload.get('version')!r}; this code reads {_FORMAT_VERSION}")
        try:
            config = TransformerConfig.from_dict(payload["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path!r} has a bad model config: {err}") from err
        lm = cls(config)
        load_state_checked(lm, payload.get("state_dict"), f"checkpoint {path!r}")
        lm.trained_on = payload.get("trained_on")
        return lm.to(map_location)


def load_state_checked(module: nn.Module, state: Any, what: str) -> None:
    """``module.load_state_dict(state)`` with a ``ValueError`` naming missing, extra or mis-shaped weights."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} holds no weights (state_dict is {type(state).__name__})")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        raise ValueError(f"{what} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}, "
                         f"shape mismatches {shapes[:5]}")
    module.load_state_dict(state)


__all__ = [
    "KVCache",
    "TransformerBody",
    "TransformerConfig",
    "TransformerLM",
    "Rotary",
    "load_state_checked",
    "real_lengths",
    "trim_to_real",
]
