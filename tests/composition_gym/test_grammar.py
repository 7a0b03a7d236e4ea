"""The trace grammar: the batched transitions and masks equal the single-state ones."""

import itertools

import numpy as np
import pytest

from composition_gym import tokens as T
from composition_gym.grammar import VALUE, TraceGrammar, TraceState, TraceStates
from composition_gym.profiles import SMALL


def _states(grammar: TraceGrammar):
    """Every reachable kind of state: each phase, letter count, segment and done flag."""
    phases = range(4) if grammar.tagged else (VALUE,)
    for phase, letters, segment, done in itertools.product(phases, (0, 1, grammar.cap), (0, 1, 2), (False, True)):
        if phase != VALUE and letters:
            continue
        yield TraceState(segment=segment, phase=phase, letters=letters, done=done)


@pytest.mark.parametrize("fmt", ["values", "tagged", "answer"])
def test_batch_transitions_and_masks_equal_the_single_state_ones(fmt):
    grammar = TraceGrammar(SMALL, fmt)
    depth = 3
    before, tokens = [], []
    for state in _states(grammar):
        for tok in np.flatnonzero(grammar.mask(state, depth)):
            before.append(state)
            tokens.append(int(tok))
    assert len(tokens) > 10
    batch = TraceStates.empty(len(tokens))
    for i, s in enumerate(before):
        batch.segment[i], batch.phase[i], batch.letters[i], batch.done[i] = s.segment, s.phase, s.letters, s.done
    rows = np.arange(len(tokens))
    last = batch.segment == grammar.segments(depth) - 1
    masks = grammar.mask_batch(batch, rows, last)
    events = grammar.advance_batch(batch, rows, np.array(tokens))
    for i, (s, tok) in enumerate(zip(before, tokens)):
        np.testing.assert_array_equal(masks[i], grammar.mask(s, depth))
        moved = TraceState(s.segment, s.phase, s.letters, s.done)
        assert events[i] == grammar.advance(moved, tok), (s, tok)
        assert (batch.segment[i], batch.phase[i], batch.letters[i], batch.done[i]) == \
            (moved.segment, moved.phase, moved.letters, moved.done), (s, tok)


def test_walk_start_and_start_mask():
    grammar = TraceGrammar(SMALL, "tagged")
    trace = [T.ROUTING_IDS["Chain"], T.SKILL_IDS["Rev"], T.TAG_ID, T.LETTER_IDS["a"], T.STEP_ID,
             T.ROUTING_IDS["Keep"]]
    assert grammar.walk(trace) == TraceState(segment=1, phase=1, letters=0, done=False)
    start = grammar.start_mask()
    assert start.any() and set(np.flatnonzero(start)) == {T.ROUTING_IDS[r] for r in SMALL.routings}
    batch = TraceStates.empty(3)
    batch.phase[:] = VALUE
    batch.letters[:] = 4
    grammar.start_batch(batch, np.array([0, 2]))
    assert batch.phase.tolist() == [0, VALUE, 0] and batch.letters.tolist() == [0, 4, 0]
