"""``render_mode="rgb_array"``: the text view of an episode drawn as an RGB image.

A frame shows the prompt, the trace written so far with each closed segment coloured by whether
it equals its reference value (green) or not (red), the hidden cascade and the episode's status.
It is what Gymnasium's ``RecordVideo`` (and SB3's ``VecVideoRecorder``) turn into a video.

Drawing uses Pillow (a dependency of matplotlib, so no new install) with matplotlib's bundled
DejaVu Sans Mono: a monospaced font makes wrapping a matter of counting characters, and drawing
text straight onto an image is ~10x cheaper than a matplotlib figure per frame.  Pillow and
matplotlib are imported on the first frame only, so environments that never render stay light.

Every frame of one environment has the same size (a video needs that): the canvas is sized at
construction for the longest prompt and trace the environment can produce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from composition_gym import tokens as T

COLUMNS = 72  # characters per line
FONT_SIZE = 15
MARGIN = 10
_LONGEST = max(len(t) for t in T.TOKENS)  # the longest token text ("<bos>", a routing's name)

INK, GREY, GREEN, RED, BLUE = (20, 20, 20), (120, 120, 120), (20, 130, 40), (200, 30, 30), (30, 70, 170)
PAPER = (255, 255, 255)


@lru_cache(maxsize=None)
def _font():
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSansMono.ttf", FONT_SIZE)


@lru_cache(maxsize=None)
def _advance() -> float:
    """The width of one character of the monospaced font, in pixels."""
    return _font().getlength("M")


@dataclass(frozen=True)
class TraceView:
    """What one frame shows.

    Attributes:
        prompt: the prompt's text (``tokens.decode``).
        trace: the trace's token ids written so far.
        closed_correct: per closed segment, whether its letters equal the reference value.
        cascade: the hidden cascade's key (``Cascade.key()``).
        status: the last line (e.g. ``"writing step 2 of 3"`` or ``"done: success"``).
        bad_last: the last trace token was ungrammatical (drawn in red).
    """

    prompt: str
    trace: Sequence[int]
    closed_correct: Sequence[bool]
    cascade: str
    status: str
    bad_last: bool = False


class FrameRenderer:
    """Draws :class:`TraceView` frames of one fixed size.

    Args:
        prompt_chars: the most characters a prompt's text can have.
        trace_chars: the most characters a trace's text can have.
    """

    def __init__(self, prompt_chars: int, trace_chars: int):
        # Labels ("prompt ", "trace  ", …) take 8 columns; continuation lines are indented alike.
        width = COLUMNS - 8
        self.rows = {"prompt": math.ceil(prompt_chars / width), "trace": math.ceil(trace_chars / width),
                     "cascade": math.ceil(prompt_chars / width), "status": 1}
        self.line_height = FONT_SIZE + 5
        width = 2 * MARGIN + math.ceil(COLUMNS * _advance())
        height = 2 * MARGIN + self.line_height * sum(self.rows.values())
        # Multiples of 16: video encoders work in 16-pixel macro blocks (imageio-ffmpeg resizes otherwise).
        self.size = (-(-width // 16) * 16, -(-height // 16) * 16)

    @classmethod
    def for_env(cls, profile, depth: int, max_len: int) -> FrameRenderer:
        """A renderer fitting every episode of an environment of ``profile`` up to ``depth`` steps."""
        hi, cap = profile.input_len[1], profile.max_result_len
        words = 2 * depth + 2  # routing and skill names (program, tags) and the inputs X, Y
        prompt = 5 + 3 + 2 * hi + 4 + 5 * depth + words * (_LONGEST + 1)
        trace = min(max_len, depth * (cap + 4) + 1) + words * (_LONGEST + 1)
        return cls(prompt, trace)

    def draw(self, view: TraceView) -> np.ndarray:
        """The frame as an ``(height, width, 3)`` uint8 array."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", self.size, PAPER)
        pen = ImageDraw.Draw(image)
        top = MARGIN
        for label, pieces in (("prompt", [(view.prompt, INK)]), ("trace", self._trace_pieces(view)),
                              ("cascade", [(view.cascade, BLUE)]), ("status", [(view.status, INK)])):
            # Sections follow each other; the rows reserved for the longest case stay blank at the bottom.
            lines = _wrap(pieces, COLUMNS - 8)[: self.rows[label]]
            for k, line in enumerate(lines):
                y = top + k * self.line_height
                if k == 0:
                    pen.text((MARGIN, y), label, fill=GREY, font=_font())
                col = 8
                for text, colour in line:
                    pen.text((MARGIN + round(col * _advance()), y), text, fill=colour, font=_font())
                    col += len(text)
            top += len(lines) * self.line_height
        return np.asarray(image, dtype=np.uint8)

    @staticmethod
    def _trace_pieces(view: TraceView) -> list[tuple[str, tuple[int, int, int]]]:
        """The trace's tokens, each coloured by its segment (closed right / closed wrong / open)."""
        pieces, segment, prev_word = [], 0, False
        for k, i in enumerate(view.trace):
            tok = T.TOKENS[int(i)]
            if k == len(view.trace) - 1 and view.bad_last:
                colour = RED
            elif tok in (T.STEP, T.EOS):
                colour = GREY
            elif segment < len(view.closed_correct):
                colour = GREEN if view.closed_correct[segment] else RED
            else:
                colour = INK
            word = tok[0].isupper()
            text = (" " if prev_word and tok[0].isalpha() else "") + tok
            pieces.append((text, colour))
            prev_word = word
            segment += tok == T.STEP
        return pieces


def _wrap(pieces: list[tuple[str, tuple[int, int, int]]], width: int) -> list[list[tuple[str, tuple]]]:
    """Split coloured pieces into lines of at most ``width`` characters (pieces split where needed)."""
    lines, line, used = [], [], 0
    for text, colour in pieces:
        while text:
            room = width - used
            if room == 0:
                lines.append(line)
                line, used = [], 0
                continue
            line.append((text[:room], colour))
            used += len(text[:room])
            text = text[room:]
    lines.append(line)
    return lines
