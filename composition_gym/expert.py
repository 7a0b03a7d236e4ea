"""The expert (oracle): the one rule for the next token, and a policy that applies it to observations.

:func:`next_token` continues a trace from wherever it stands.  On the reference path it is the next
reference token.  Off it (after a wrong letter), it closes the wrong segment and writes the remaining
ones correctly, which maximises the return from any state (so DAgger needs no other expert).  Every
caller uses it: :meth:`CompositionEnv.expert_action`, :meth:`CompositionVectorEnv.expert_actions`
and :class:`ExpertPolicy`, which reads the prompt in an observation, recovers the cascade from the
program (:func:`~composition_gym.cascade.parse_prompt`), executes it, and replays the trace written
so far through the grammar.  Because the policy needs only observations, it labels any state:
single or batched, from a vector env, a replay buffer or a DAgger rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from composition_gym import tokens as T
from composition_gym.cascade import Segment, parse_prompt
from composition_gym.grammar import COLON, ROUTING, SKILL, VALUE, TraceGrammar
from composition_gym.profiles import Profile, get_profile


def next_token(phase: int, last: bool, written: Sequence[int], expected: Segment) -> int:
    """The expert's next token in the current segment.

    Args:
        phase: the grammar phase (:data:`~composition_gym.grammar.ROUTING` … ``VALUE``).
        last: the current segment is the trace's last.
        written: the letter ids written so far in the current segment.
        expected: the current segment's reference ``(tags, letters)``.
    """
    tags, letters = expected
    if phase == ROUTING:
        return tags[0]
    if phase == SKILL:
        return tags[1]
    if phase == COLON:
        return T.TAG_ID
    n = len(written)
    if n < len(letters) and letters[:n] == tuple(written):
        return letters[n]
    return T.EOS_ID if last else T.STEP_ID


class ExpertPolicy:
    """The oracle for one profile and trace format, from observations alone.

    Meets the agent protocol: ``act(obs, info) -> token`` and ``act_batch(obs, infos) -> tokens``.
    An observation whose trace has ended (``<eos>`` written) gets ``<pad>`` (0).

    Args:
        profile: a :class:`Profile` or its name (the alphabet matters to letter-shifting skills).
        trace_format: the environment's trace format.
        prompt_format: the environment's prompt format (how the program is written).
    """

    def __init__(self, profile: Profile | str = "small", trace_format: str = "values", prompt_format: str = "nested"):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.trace_format = trace_format
        self.prompt_format = prompt_format
        self.grammar = TraceGrammar(self.profile, trace_format)
        self._expected = lru_cache(maxsize=4096)(self._expected_segments)

    @classmethod
    def for_env(cls, env) -> ExpertPolicy:
        """The expert matching ``env`` (a :class:`CompositionEnv`, possibly wrapped)."""
        base = env.unwrapped
        return cls(base.profile, base.trace_format, base.prompt_format)

    def _expected_segments(self, prompt: tuple[int, ...]) -> list[Segment]:
        return parse_prompt(prompt, self.profile.alphabet, self.prompt_format).expected_segments(self.trace_format)

    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> int | np.ndarray:
        """The expert token for one observation (an array of them for a batch ``[B, T]``)."""
        obs = np.asarray(obs)
        if obs.ndim == 2:
            return self.act_batch(obs)
        ids = [int(i) for i in obs if i != T.PAD_ID]
        sep = ids.index(T.SEP_ID)
        expected = self._expected(tuple(ids[: sep + 1]))
        trace = ids[sep + 1 :]
        state = self.grammar.walk(trace)
        if state.done:
            return T.PAD_ID
        # In the VALUE phase the segment's letters are the trace's last ``state.letters`` tokens.
        written = trace[len(trace) - state.letters :] if state.phase == VALUE else ()
        last = state.segment == len(expected) - 1
        return next_token(state.phase, last, written, expected[state.segment])

    def act_batch(self, obs: np.ndarray, infos: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """Expert tokens for a batch of observations ``[B, T]`` (``infos`` is not needed)."""
        return np.array([self.act(o) for o in np.asarray(obs)], dtype=np.int64)

    __call__ = act
