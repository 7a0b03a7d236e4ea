"""The agent protocol and adapters: SB3 models, the transformer LM, random, text.

The expert is :class:`composition_gym.ExpertPolicy`, which already meets the protocol.

An agent maps an observation (right-padded token ids) and the step's ``info`` (which always holds
``action_mask``) to a token.  That is all :func:`composition_gym.agents.evaluation.evaluate` needs::

    class FirstLegalToken:
        def act(self, obs, info):
            return int(info["action_mask"].argmax())

An agent may also define ``act_batch(obs [B, T], infos) -> tokens [B]``; evaluation then plays many
episodes in lockstep.  Agents with ``act_batch`` must be stateless (a row can be any episode);
stateful ones (a recurrent policy, a text agent) implement ``act`` only and are played one episode
at a time.  A new episode is recognised from the observation itself: nothing after the prompt's
``|`` yet (:func:`trace_start`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from composition_gym.agents.transformer import TransformerLM
from composition_gym import tokens as T


@runtime_checkable
class Agent(Protocol):
    """Anything with ``act(obs, info) -> token``; ``act_batch(obs, infos) -> tokens`` is optional."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The next token for one observation."""
        ...


def trace_start(obs: np.ndarray) -> int:
    """Index of the first trace token (one past the prompt's ``|``).

    Raises:
        ValueError: if the observation holds no prompt.
    """
    hits = np.flatnonzero(np.asarray(obs) == T.SEP_ID)
    if hits.size == 0:
        raise ValueError("observation has no end-of-prompt token '|'; is it from a composition env?")
    return int(hits[0]) + 1


def trace_so_far(obs: np.ndarray) -> np.ndarray:
    """The trace tokens written so far (after ``|``, before the padding)."""
    obs = np.asarray(obs)
    rest = obs[trace_start(obs):]
    return rest[rest != T.PAD_ID]


def _mask(info: dict[str, Any]) -> np.ndarray:
    try:
        return np.asarray(info["action_mask"], dtype=bool)
    except (KeyError, TypeError) as err:
        raise ValueError("info has no 'action_mask'; pass the info dict that the env returned") from err


class LMAgent:
    """Greedy decoding from a :class:`TransformerLM`, restricted to grammatical tokens.

    Args:
        lm: the model (put in eval mode).
        masked: restrict to ``info["action_mask"]`` (the grammar); ``False`` takes the raw argmax.
    """

    def __init__(self, lm: TransformerLM, masked: bool = True):
        if not isinstance(lm, TransformerLM):
            raise TypeError(f"LMAgent needs a TransformerLM, got {type(lm).__name__}")
        self.lm, self.masked = lm.eval(), masked

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return int(self.act_batch(np.asarray(obs)[None], [info])[0])

    def act_batch(self, obs: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """Greedy tokens for a batch of observations."""
        masks = np.stack([_mask(i) for i in infos]) if self.masked else None
        return self.lm.greedy(obs, masks).cpu().numpy()


class SB3Agent:
    """A Stable-Baselines3 model as an agent: deterministic actions, action masks for maskable models.

    ``PPO`` / ``MaskablePPO`` models play batches (``act_batch``); a ``RecurrentPPO`` model keeps
    its LSTM state and is played one episode at a time.
    """

    def __init__(self, model: Any, deterministic: bool = True):
        from sb3_contrib import MaskablePPO, RecurrentPPO
        from stable_baselines3.common.base_class import BaseAlgorithm

        if not isinstance(model, BaseAlgorithm):
            raise TypeError(f"SB3Agent needs a Stable-Baselines3 model, got {type(model).__name__}")
        self.model, self.deterministic = model, deterministic
        self.maskable = isinstance(model, MaskablePPO)
        self.recurrent = isinstance(model, RecurrentPPO)
        self._state: Any = None
        if self.recurrent:
            self.act_batch = None  # stateful: evaluation plays one episode at a time

    @property
    def observation_space(self):
        """The model's observation space (checked against the env's by evaluation)."""
        return self.model.observation_space

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        obs = np.asarray(obs)
        if self.recurrent:
            start = np.array([len(trace_so_far(obs)) == 0])
            action, self._state = self.model.predict(obs, state=None if start[0] else self._state,
                                                     episode_start=start, deterministic=self.deterministic)
            return int(action)
        return int(self.act_batch(obs[None], [info])[0])

    def act_batch(self, obs: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """Deterministic actions for a batch (masked for ``MaskablePPO``)."""
        if self.maskable:
            masks = np.stack([_mask(i) for i in infos])
            actions, _ = self.model.predict(obs, deterministic=self.deterministic, action_masks=masks)
        else:
            actions, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(actions).reshape(len(obs))


class RandomAgent:
    """Uniform over the grammatical tokens.

    The draw is a function of ``(seed, observation)``, so results do not depend on the order in
    which evaluation visits states (batched or not) and repeat exactly under the same seed.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        legal = np.flatnonzero(_mask(info))
        if legal.size == 0:
            raise ValueError("action_mask allows no token")
        digest = hashlib.blake2b(np.ascontiguousarray(obs, dtype=np.int64).tobytes(), digest_size=8,
                                 key=self.seed.to_bytes(8, "little", signed=True)).digest()
        return int(legal[int.from_bytes(digest, "little") % legal.size])

    def act_batch(self, obs: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """One uniform legal token per row."""
        return np.array([self.act(o, i) for o, i in zip(obs, infos)], dtype=np.int64)


class TextAgent:
    """A function from prompt text to trace text (e.g. a language model), played token by token.

    At the first step of an episode the prompt (``<bos> X=… : program |``, exactly the env's
    ``info["prompt"]``) is decoded from the observation and passed to ``fn``; the returned text is
    encoded with :func:`composition_gym.tokens.encode`, ``<eos>`` is appended if missing, and the
    tokens are played in order (``<eos>`` once they run out).

    Args:
        fn: ``prompt_text -> trace_text``, e.g. ``"ab;abab;abbaba"``.
        strict: raise on text that does not encode; otherwise (default) such an answer is played as
            a bare ``<eos>``, which the env scores as a failure, and the error is kept in
            ``last_error``.
    """

    def __init__(self, fn: Callable[[str], str], strict: bool = False):
        if not callable(fn):
            raise TypeError(f"TextAgent needs a callable prompt_text -> trace_text, got {type(fn).__name__}")
        self.fn, self.strict = fn, strict
        self.plan: list[int] = []
        self.last_error: Exception | None = None

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        obs = np.asarray(obs)
        written = trace_so_far(obs)
        if written.size == 0:
            self.plan = self._plan(T.decode(obs[: trace_start(obs)]))
        k = int(written.size)
        return self.plan[k] if k < len(self.plan) else T.EOS_ID

    def _plan(self, prompt: str) -> list[int]:
        text = self.fn(prompt)
        if not isinstance(text, str):
            raise TypeError(f"the text agent's function returned {type(text).__name__}, not str")
        try:
            ids = T.encode(text)
            self.last_error = None
        except ValueError as err:
            if self.strict:
                raise
            self.last_error, ids = err, []
        if not ids or ids[-1] != T.EOS_ID:
            ids.append(T.EOS_ID)
        return ids


def as_agent(agent: Any) -> Any:
    """An :class:`Agent` for ``agent``: an SB3 model, a :class:`TransformerLM`, or an agent already."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    if isinstance(agent, BaseAlgorithm):
        return SB3Agent(agent)
    if isinstance(agent, TransformerLM):
        return LMAgent(agent)
    if isinstance(agent, torch.nn.Module) or not callable(getattr(agent, "act", None)):
        raise TypeError(f"{type(agent).__name__} is not an agent: need act(obs, info) -> int, "
                        "an SB3 model or a TransformerLM")
    return agent


__all__ = ["Agent", "LMAgent", "RandomAgent", "SB3Agent", "TextAgent", "as_agent",
           "trace_so_far", "trace_start"]
