"""The expert (oracle) as a policy over observations alone.

It reads the prompt in the observation, recovers the cascade from the program
(:func:`~composition_gym.cascade.parse_prompt`), executes it, and continues the trace written so far
exactly as :meth:`CompositionEnv.expert_action` does.  Because it needs only the observation, it
labels any state — single or batched, from a vector env, a replay buffer or a DAgger rollout.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from composition_gym import tokens as T
from composition_gym.cascade import parse_prompt
from composition_gym.env import expected_segments, next_expert_token
from composition_gym.grammar import VALUE, TraceGrammar
from composition_gym.profiles import Profile, get_profile


class ExpertPolicy:
    """The oracle for one profile and trace format: ``act(obs) -> token``.

    Args:
        profile: a :class:`Profile` or its name (the alphabet matters to letter-shifting skills).
        trace_format: the environment's trace format.
    """

    def __init__(self, profile: Profile | str = "small", trace_format: str = "values"):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.trace_format = trace_format
        self.grammar = TraceGrammar(self.profile, trace_format)
        self._expected = lru_cache(maxsize=4096)(self._expected_segments)

    @classmethod
    def for_env(cls, env) -> ExpertPolicy:
        """The expert matching ``env`` (a :class:`CompositionEnv`, possibly wrapped)."""
        base = env.unwrapped
        return cls(base.profile, base.trace_format)

    def _expected_segments(self, prompt: tuple[int, ...]):
        problem = parse_prompt(prompt, self.profile.alphabet)
        return expected_segments(problem, self.trace_format), problem.cascade.depth

    def act(self, obs: np.ndarray, info: dict | None = None) -> int | np.ndarray:
        """The expert token for one observation, or an array of them for a batch."""
        obs = np.asarray(obs)
        if obs.ndim == 2:
            return np.array([self.act(o) for o in obs], dtype=np.int64)
        ids = [int(i) for i in obs if i != T.PAD_ID]
        sep = ids.index(T.SEP_ID)
        expected, depth = self._expected(tuple(ids[: sep + 1]))
        state = self.grammar.start()
        letters: list[int] = []
        for tok in ids[sep + 1 :]:
            if state.phase == VALUE and tok == T.STEP_ID:
                letters = []
            elif state.phase == VALUE:
                letters.append(tok)
            self.grammar.advance(state, tok)
        return next_expert_token(state, expected, letters, self.grammar, depth)

    __call__ = act
