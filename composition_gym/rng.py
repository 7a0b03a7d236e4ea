"""Bounded integer draws that equal ``numpy.random.Generator.integers`` bit for bit, only cheaper.

Sampling a problem makes a dozen tiny ``Generator.integers`` calls, and each call costs a few
microseconds of argument handling: more than a whole environment step.  :class:`IntegerStream`
reads the generator's raw 64-bit words in chunks and reproduces what ``integers`` does with them
(numpy's ``random_bounded_uint64_fill``: a range of zero draws nothing, a full 32-bit range takes
one 32-bit word, any other range below 2**32 uses Lemire's multiply-and-reject on 32-bit words,
which the bit generator serves low half first).  The draws are therefore the very numbers
``integers`` would have returned, so episodes do not change; ``tests/composition_gym/test_rng.py``
checks this against numpy on many seeds and ranges.

Reading ahead advances the generator by whole chunks: what a third party later draws from the same
generator differs from an unbuffered run, but never what this stream returns.
"""

from __future__ import annotations

import numpy as np

# Bit generators whose 32-bit output is the low then the high half of one 64-bit word.
_SPLIT_64 = (np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox)
_MASK32 = 0xFFFFFFFF


class IntegerStream:
    """``integers(low, high=None, size=None)`` of a :class:`numpy.random.Generator`, read ahead.

    Only what composition environments draw is supported: ``int64`` results with
    ``high - low <= 2**32`` (use :meth:`wrap` to fall back to the generator for anything else).

    Args:
        generator: the generator whose stream to continue; its bit generator must be one of
            ``PCG64``, ``PCG64DXSM``, ``SFC64`` or ``Philox`` (gymnasium seeds ``PCG64``).
        chunk: 64-bit words read per refill.

    Raises:
        TypeError: for another bit generator (``MT19937`` draws 32-bit words natively).
    """

    def __init__(self, generator: np.random.Generator, chunk: int = 64):
        bit_generator = generator.bit_generator
        if not isinstance(bit_generator, _SPLIT_64):
            raise TypeError(f"IntegerStream needs one of {[c.__name__ for c in _SPLIT_64]}, "
                            f"got {type(bit_generator).__name__}")
        self.generator = generator
        self._bit_generator = bit_generator
        self._chunk = int(chunk)
        self._words: list[int] = []
        self._next = 0
        state = bit_generator.state
        if state.get("has_uint32"):
            # The generator holds the high half of a word it has already drawn: it comes first.
            self._words = [int(state["uinteger"])]
            state["has_uint32"] = 0
            bit_generator.state = state

    @classmethod
    def wrap(cls, generator: np.random.Generator) -> IntegerStream | np.random.Generator:
        """An :class:`IntegerStream` over ``generator`` where supported, else ``generator`` itself."""
        if isinstance(generator.bit_generator, _SPLIT_64):
            return cls(generator)
        return generator

    def _refill(self) -> None:
        raw = self._bit_generator.random_raw(self._chunk)
        words = np.empty(2 * raw.size, dtype=np.uint64)
        words[0::2] = raw & _MASK32
        words[1::2] = raw >> np.uint64(32)
        self._words = words.tolist()
        self._next = 0

    def _word(self) -> int:
        if self._next >= len(self._words):
            self._refill()
        w = self._words[self._next]
        self._next += 1
        return w

    def _one(self, low: int, span: int) -> int:
        # span = high - low, the number of possible values (numpy's rng + 1).
        if span == 1:
            return low
        if span == 1 << 32:
            return low + self._word()
        m = self._word() * span
        leftover = m & _MASK32
        if leftover < span:
            threshold = ((1 << 32) - span) % span
            while leftover < threshold:
                m = self._word() * span
                leftover = m & _MASK32
        return low + (m >> 32)

    def integers(self, low: int, high: int | None = None, size: int | None = None) -> int | list[int]:
        """What ``generator.integers(low, high, size)`` returns (a list when ``size`` is given).

        Raises:
            ValueError: if ``high <= low`` or the range exceeds ``2**32`` values.
        """
        if high is None:
            low, high = 0, low
        low, high = int(low), int(high)
        span = high - low
        if span < 1:
            raise ValueError(f"low >= high: integers({low}, {high})")
        if span > 1 << 32:
            raise ValueError(f"IntegerStream supports ranges of at most 2**32 values, got {span}")
        words, i = self._words, self._next
        if not 1 < span < 1 << 32:  # a constant or a whole 32-bit word
            if size is None:
                return self._one(low, span)
            return [self._one(low, span) for _ in range(int(size))]
        # Fast path while buffered words last and no leftover falls below span (no rejection
        # possible); anything else continues exactly in _one from where it stopped.
        if size is None:
            if i < len(words):
                m = words[i] * span
                if m & _MASK32 >= span:
                    self._next = i + 1
                    return low + (m >> 32)
            return self._one(low, span)
        count = int(size)
        out = []
        for w in words[i : i + count]:
            m = w * span
            if m & _MASK32 < span:
                break
            out.append(low + (m >> 32))
        self._next = i + len(out)
        while len(out) < count:
            out.append(self._one(low, span))
        return out
