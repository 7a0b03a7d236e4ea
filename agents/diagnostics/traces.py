"""Token sequences (prompt + trace) with their hidden cascade, for the probes and the attention read-out.

Two sources: the reference trace of each problem (teacher forcing, the expert's own tokens) and
an agent's own rollouts.  Either way the labels come from the prompt's cascade, and each trace
segment ``t`` is located by its *opener*: the token right before ``z_t``'s first letter (``|``
ending the prompt for ``t = 1``, the ``t-1``-th ``;`` after it).  The model's hidden state at the
opener is the one that writes ``z_t``'s first letter, i.e. where step ``t``'s module must be selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from composition_gym import tokens as T
import gymnasium as gym

from composition_gym.cascade import Problem, parse_prompt
from composition_gym.registration import resolve_env_id
from composition_gym.agents.evaluation import rollout


@dataclass(frozen=True)
class TraceSample:
    """One prompt + trace and where its segments start.

    Attributes:
        env_id, seed: the episode.
        problem: its problem (hidden cascade, inputs, reference values).
        ids: token ids, prompt then trace, no padding.
        prompt_len: number of prompt tokens (``ids[prompt_len - 1]`` is ``|``).
        openers: ``openers[t-1]`` is the position opening segment ``t``; only the segments the
            trace reached (at most the cascade's depth).
        prompt_format: how the prompt writes the program (:data:`~composition_gym.cascade.PROMPT_FORMATS`).
    """

    env_id: str
    seed: int
    problem: Problem
    ids: tuple[int, ...]
    prompt_len: int
    openers: tuple[int, ...]
    prompt_format: str = "nested"

    @property
    def depth(self) -> int:
        return self.problem.cascade.depth

    def segment(self, t: int) -> range:
        """Positions whose next token is a letter of ``z_t`` (the opener up to the last letter but one)."""
        start = self.openers[t - 1]
        end = start + 1
        while end < len(self.ids) and self.ids[end] in _LETTERS:
            end += 1
        return range(start, max(end - 1, start + 1))


_LETTERS = frozenset(T.LETTER_IDS.values())


def _sample(env_id: str, seed: int, ids: Sequence[int], alphabet: str, prompt_format: str) -> TraceSample:
    ids = tuple(int(i) for i in ids if int(i) != T.PAD_ID)
    problem = parse_prompt(ids, alphabet, prompt_format)
    sep = ids.index(T.SEP_ID)
    openers = [sep] + [i for i in range(sep + 1, len(ids)) if ids[i] == T.STEP_ID]
    return TraceSample(env_id, seed, problem, ids, sep + 1, tuple(openers[: problem.cascade.depth]), prompt_format)


def expert_traces(env_id: str, episodes: int, seed: int = 0) -> list[TraceSample]:
    """The reference traces of episodes ``seed, seed + 1, …`` of ``env_id`` (teacher forcing)."""
    env_id = resolve_env_id(env_id)
    env = gym.make(env_id)
    base = env.unwrapped
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        prompt = [int(t) for t in obs if t != T.PAD_ID]
        trace = [T.TOKEN_ID[t] for t in base.problem.trace(base.trace_format)]
        out.append(_sample(env_id, seed + i, prompt + trace, base.profile.alphabet, base.prompt_format))
    env.close()
    return out


def agent_traces(agent: Any, env_id: str, episodes: int, seed: int = 0) -> list[TraceSample]:
    """The traces ``agent`` writes on episodes ``seed, seed + 1, …`` of ``env_id`` (greedy for an LM)."""
    env_id = resolve_env_id(env_id)
    base = gym.make(env_id).unwrapped
    records = rollout(agent, env_id, [seed + i for i in range(episodes)])
    return [_sample(env_id, r.seed, r.tokens, base.profile.alphabet, base.prompt_format) for r in records]


__all__ = ["TraceSample", "agent_traces", "expert_traces"]
