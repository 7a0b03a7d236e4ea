"""The trace grammar: which token may come next, as a tiny state machine with cached masks.

A trace is ``segment (; segment)* <eos>`` with exactly one segment per step (one in the ``answer``
format).  A segment is ``[routing skill :] letter+``, the tags only in the ``tagged`` format, with
at most ``max_result_len`` letters.  The environment, its vector form and the expert share this
module, so "grammatical" means one thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from composition_gym import tokens as T
from composition_gym.profiles import Profile

# Phases inside one segment.
ROUTING, SKILL, COLON, VALUE = 0, 1, 2, 3
# What a grammatical token did (returned by the advance methods): wrote a routing or skill tag,
# the tag's colon, a letter, or closed the segment with ``;`` (STEP) or ``<eos>`` (EOS).
TAG_EVENT, COLON_EVENT, LETTER_EVENT, STEP_EVENT, EOS_EVENT = 0, 1, 2, 3, 4
_STEP_ID, _EOS_ID = T.STEP_ID, T.EOS_ID  # plain globals: advance() runs once per env step


@dataclass
class TraceState:
    """Where a partial trace stands: segment index, phase in it, letters written in it."""

    segment: int = 0
    phase: int = VALUE
    letters: int = 0
    done: bool = False


@dataclass
class TraceStates:
    """The :class:`TraceState` of ``n`` traces, as arrays (for batched stepping)."""

    segment: np.ndarray
    phase: np.ndarray
    letters: np.ndarray
    done: np.ndarray

    @classmethod
    def empty(cls, n: int) -> TraceStates:
        z = np.zeros(n, dtype=np.int64)
        return cls(z.copy(), z.copy(), z.copy(), np.zeros(n, dtype=bool))


def mask_index(phase: int | np.ndarray, empty: bool | np.ndarray, full: bool | np.ndarray, last: bool | np.ndarray,
               done: bool | np.ndarray) -> int | np.ndarray:
    """The row of :meth:`TraceGrammar.mask_table` for a state (ints, bools or numpy arrays of them).

    ``empty``: no letter yet in the segment; ``full``: ``max_result_len`` letters; ``last``: the
    last segment of the trace; ``done``: ``<eos>`` written.
    """
    return (((phase * 2 + empty) * 2 + full) * 2 + last) * 2 + done


class TraceGrammar:
    """Masks and transitions of the trace grammar for one profile and trace format."""

    def __init__(self, profile: Profile, trace_format: str):
        self.tagged = trace_format == "tagged"
        self.answer_only = trace_format == "answer"
        self.cap = profile.max_result_len
        v = T.VOCAB_SIZE
        self.letter_mask = np.zeros(v, dtype=bool)
        self.letter_mask[[T.LETTER_IDS[c] for c in profile.alphabet]] = True
        self.routing_mask = np.zeros(v, dtype=bool)
        self.routing_mask[[T.ROUTING_IDS[r] for r in profile.routings]] = True
        self.skill_mask = np.zeros(v, dtype=bool)
        self.skill_mask[[T.SKILL_IDS[s] for s in profile.skills]] = True
        self.colon_mask = np.zeros(v, dtype=bool)
        self.colon_mask[T.TAG_ID] = True
        self._cache: dict[tuple, np.ndarray] = {}
        self._table = self.mask_table()

    def start(self) -> TraceState:
        """The state before the first trace token."""
        return TraceState(phase=ROUTING if self.tagged else VALUE)

    def start_batch(self, states: TraceStates, rows: np.ndarray) -> None:
        """Put ``states[rows]`` before the first trace token."""
        states.segment[rows] = 0
        states.letters[rows] = 0
        states.done[rows] = False
        states.phase[rows] = ROUTING if self.tagged else VALUE

    def start_mask(self) -> np.ndarray:
        """The mask before a trace's first token (the same for every depth)."""
        return self.mask(self.start(), 1)

    def segments(self, depth: int) -> int:
        """How many segments a complete trace of a depth-``depth`` cascade has."""
        return 1 if self.answer_only else depth

    def mask(self, state: TraceState, depth: int) -> np.ndarray:
        """Boolean mask of the grammatical next tokens (read-only; shared between calls)."""
        last = state.segment == self.segments(depth) - 1
        key = (state.phase, state.letters == 0, state.letters >= self.cap, last, state.done)
        m = self._cache.get(key)
        if m is None:
            m = self._build(*key)
            m.flags.writeable = False
            self._cache[key] = m
        return m

    def mask_table(self) -> np.ndarray:
        """Every mask at once, ``(64, V)``: row :func:`mask_index` of a state (for batched stepping)."""
        keys = [(p, e, f, la, d) for p in range(4) for e in (0, 1) for f in (0, 1) for la in (0, 1) for d in (0, 1)]
        table = np.stack([self._build(*key) for key in keys])  # keys in mask_index order
        table.flags.writeable = False
        return table

    def mask_batch(self, states: TraceStates, rows: np.ndarray, last: np.ndarray) -> np.ndarray:
        """``(len(rows), V)`` masks of ``states[rows]``; ``last``: each row is in its last segment."""
        letters = states.letters[rows]
        return self._table[mask_index(states.phase[rows], letters == 0, letters >= self.cap, last, states.done[rows])]

    def _build(self, phase: int, empty: bool, full: bool, last: bool, done: bool) -> np.ndarray:
        if done:
            return np.zeros(T.VOCAB_SIZE, dtype=bool)
        if phase == ROUTING:
            return self.routing_mask.copy()
        if phase == SKILL:
            return self.skill_mask.copy()
        if phase == COLON:
            return self.colon_mask.copy()
        m = np.zeros(T.VOCAB_SIZE, dtype=bool) if full else self.letter_mask.copy()
        if not empty:
            m[T.EOS_ID if last else T.STEP_ID] = True
        return m

    def advance(self, state: TraceState, token: int) -> int:
        """Move ``state`` past a grammatical ``token`` (the caller checked the mask); the event."""
        if state.phase == VALUE:
            if token == _STEP_ID:
                state.segment += 1
                state.letters = 0
                state.phase = ROUTING if self.tagged else VALUE
                return STEP_EVENT
            if token == _EOS_ID:
                state.done = True
                return EOS_EVENT
            state.letters += 1
            return LETTER_EVENT
        state.phase += 1
        return COLON_EVENT if state.phase == VALUE else TAG_EVENT

    def advance_batch(self, states: TraceStates, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """:meth:`advance` for ``states[rows]`` (distinct rows), each past its grammatical token; the events."""
        phase = states.phase[rows]
        in_value = phase == VALUE
        events = np.where(
            in_value,
            np.where(tokens == T.STEP_ID, STEP_EVENT, np.where(tokens == T.EOS_ID, EOS_EVENT, LETTER_EVENT)),
            np.where(phase == COLON, COLON_EVENT, TAG_EVENT),
        )
        states.phase[rows[~in_value]] += 1
        nxt = rows[events == STEP_EVENT]
        states.segment[nxt] += 1
        states.letters[nxt] = 0
        states.phase[nxt] = ROUTING if self.tagged else VALUE
        states.letters[rows[events == LETTER_EVENT]] += 1
        states.done[rows[events == EOS_EVENT]] = True
        return events

    def walk(self, tokens) -> TraceState:
        """The state after the grammatical trace ``tokens`` (e.g. read back from an observation)."""
        state = self.start()
        for tok in tokens:
            self.advance(state, int(tok))
        return state
