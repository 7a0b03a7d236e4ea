"""The latent cascade, its execution, its prompt (a nested program) and its reference trace.

A :class:`Cascade` is the hidden task: ``((r_1, s_1), …, (r_L, s_L))``.  A :class:`Problem` is a
cascade with concrete inputs; it renders

* the **prompt** ``<bos> X=abc : Rev(Sort(X+X)) |`` — the program in one of :data:`PROMPT_FORMATS`,
  from which the cascade is recoverable (:func:`parse_prompt`):

  - ``nested`` (default): nested calls; the steps are never listed in execution order (the
    first step is innermost);
  - ``pipeline``: the steps in execution order, each as its routing and skill tokens
    (``Chain Sort ; PrefixX Rev``);
  - ``reversed``: the same list last step first (the first step just before ``|``);

* the **reference trace** in one of :data:`TRACE_FORMATS`:

  - ``values`` (default): ``z_1 ; z_2 ; … ; z_L <eos>`` — intermediates then the answer ``z_L``;
    the modules stay latent;
  - ``tagged``: ``R_1 S_1 : z_1 ; … ; R_L S_L : z_L <eos>`` — each step tagged with its routing and
    skill, for diagnostics;
  - ``answer``: ``z_L <eos>`` — no reasoning trace;

* and the **score** of a written trace (:class:`Scorer`): reward, success, process-level success
  and the per-step diagnosis, the one definition of "correct" every environment uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from composition_gym import tokens as T
from composition_gym.modules import ROUTINGS, SKILLS

TRACE_FORMATS = ("values", "tagged", "answer")
#: How the prompt writes the program (see the module docstring); ``nested`` is every registered id's.
PROMPT_FORMATS = ("nested", "pipeline", "reversed")


@dataclass(frozen=True, order=True)
class Cascade:
    """A hidden cascade of latent selections ``((routing, skill), …)``, first step first."""

    steps: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a cascade needs at least one step")
        for step in self.steps:
            if len(step) != 2 or step[0] not in ROUTINGS or step[1] not in SKILLS:
                raise ValueError(f"bad cascade step {step!r}: want (routing, skill) from the module library")

    @property
    def depth(self) -> int:
        """L, the number of steps."""
        return len(self.steps)

    @property
    def routings(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.steps)

    @property
    def skills(self) -> tuple[str, ...]:
        return tuple(s for _, s in self.steps)

    def key(self) -> str:
        """A canonical string, e.g. ``"Chain.Rev|CatX.Sort"`` (used for hashing and display)."""
        return "|".join(f"{r}.{s}" for r, s in self.steps)

    def execute(self, x: str, y: str, alphabet: str) -> list[str]:
        """All intermediates ``[z_1, …, z_L]`` on inputs ``x, y``; ``z_L`` is the answer."""
        values, prev = [], x
        for r, s in self.steps:
            prev = ROUTINGS[r].apply(SKILLS[s], prev, x, y, alphabet)
            values.append(prev)
        return values

    def program(self, prompt_format: str = "nested") -> list[str]:
        """The program as a list of tokens, e.g. ``Rev ( Sort ( X + X ) )`` (``nested``) or
        ``Chain Sort ; Chain Rev`` (``pipeline``); see :data:`PROMPT_FORMATS`."""
        return [tok for tok, _ in self.program_owners(prompt_format)]

    def program_owners(self, prompt_format: str = "nested") -> list[tuple[str, int]]:
        """Each token of :meth:`program` with the step that wrote it (``1 … L``; ``0`` for the
        innermost ``X`` of a nested program)."""
        if prompt_format == "nested":
            # The renderer splices the inner expression in unchanged, so owned inner tokens come
            # back owned and every plain string is a token the current step added.
            expr: list = [(T.VAR_X, 0)]
            for t, (r, s) in enumerate(self.steps, 1):
                expr = [tok if isinstance(tok, tuple) else (tok, t) for tok in _render_step(r, s, expr)]
            return expr
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt_format {prompt_format!r}; choose from {PROMPT_FORMATS}")
        order = list(enumerate(self.steps, 1))
        if prompt_format == "reversed":
            order.reverse()
        out: list[tuple[str, int]] = []
        for k, (t, (r, s)) in enumerate(order):
            if k:
                out.append((T.STEP, t))
            out += [(r, t), (s, t)]
        return out


def _render_step(routing: str, skill: str, e: list[str]) -> list[str]:
    """One step's surface form, following :attr:`Routing.syntax`."""
    syntax = ROUTINGS[routing].syntax
    if syntax == "f(E)":
        return [skill, "(", *e, ")"]
    if syntax.startswith("f(E") and len(syntax) == 6:  # f(E+X), f(E~Y), …
        return [skill, "(", *e, syntax[3], syntax[4], ")"]
    if syntax == "X+f(E)":
        return ["X", "+", skill, "(", *e, ")"]
    # Word(f,E): the routing's own token names the mechanism.
    return [routing, "(", skill, ",", *e, ")"]


# (operator, input) -> routing, for the routings written f(E+X), f(E~Y), …
_BINARY_ROUTINGS = {
    (r.syntax[3], r.syntax[4]): name
    for name, r in ROUTINGS.items()
    if r.syntax.startswith("f(E") and len(r.syntax) == 6
}


class _ProgramParser:
    """Recursive-descent parser of :meth:`Cascade.program` back into steps."""

    _BINARY = _BINARY_ROUTINGS

    def __init__(self, toks: Sequence[str]):
        self.toks, self.i = list(toks), 0

    def _eat(self, want: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise ValueError(f"program ended early; expected {want or 'a token'}")
        tok = self.toks[self.i]
        if want is not None and tok != want:
            raise ValueError(f"program token {self.i} is {tok!r}, expected {want!r}")
        self.i += 1
        return tok

    def _peek(self, k: int = 0) -> str | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def parse(self) -> list[tuple[str, str]]:
        steps = self.expr()
        if self.i != len(self.toks):
            raise ValueError(f"trailing tokens in program after position {self.i}: {self.toks[self.i:]}")
        return steps

    def expr(self) -> list[tuple[str, str]]:
        tok = self._peek()
        if tok == "X":
            if self._peek(1) == "+" and self._peek(2) in SKILLS:
                self._eat("X"), self._eat("+")
                skill = self._eat()
                self._eat("(")
                inner = self.expr()
                self._eat(")")
                return [*inner, ("PrefixX", skill)]
            self._eat("X")
            return []
        if tok in SKILLS:
            skill = self._eat()
            self._eat("(")
            inner = self.expr()
            if self._peek() in ("+", "~"):
                op, var = self._eat(), self._eat()
                if (op, var) not in self._BINARY:
                    raise ValueError(f"unknown composition {op}{var}")
                routing = self._BINARY[(op, var)]
            else:
                routing = "Chain"
            self._eat(")")
            return [*inner, (routing, skill)]
        if tok in ROUTINGS:
            routing = self._eat()
            self._eat("(")
            skill = self._eat()
            if skill not in SKILLS:
                raise ValueError(f"{routing}( expects a skill, got {skill!r}")
            self._eat(",")
            inner = self.expr()
            self._eat(")")
            return [*inner, (routing, skill)]
        raise ValueError(f"unexpected program token {tok!r} at position {self.i}")


def parse_program(toks: Sequence[str], prompt_format: str = "nested") -> Cascade:
    """Recover the cascade from :meth:`Cascade.program` tokens (proves the prompt determines it)."""
    if prompt_format == "nested":
        return Cascade(tuple(_ProgramParser(toks).parse()))
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt_format {prompt_format!r}; choose from {PROMPT_FORMATS}")
    toks = list(toks)
    steps = []
    for k in range(0, len(toks) + 1, 3):
        part = toks[k : k + 2]
        if len(part) != 2 or part[0] not in ROUTINGS or part[1] not in SKILLS:
            raise ValueError(f"{prompt_format} program step {k // 3 + 1} is {part!r}: expected a routing and a skill")
        if k + 2 < len(toks) and toks[k + 2] != T.STEP:
            raise ValueError(f"{prompt_format} program token {k + 2} is {toks[k + 2]!r}, expected {T.STEP!r}")
        steps.append((part[0], part[1]))
    return Cascade(tuple(steps[::-1] if prompt_format == "reversed" else steps))


Segment = tuple[tuple[int, ...], tuple[int, ...]]
"""One trace segment as token ids: ``(tags, letters)``; ``tags`` is ``(routing, skill)`` or empty."""


@dataclass(frozen=True)
class Problem:
    """A cascade with concrete inputs and its intermediates (``values[-1]`` is the answer).

    The problem is the reference: its prompt (:meth:`encode_prompt`), its expected trace
    (:meth:`trace`, :meth:`expected_segments`) and what a written trace scores (:meth:`score`).
    """

    cascade: Cascade
    x: str
    y: str
    values: tuple[str, ...]

    @property
    def answer(self) -> str:
        return self.values[-1]

    def encode_prompt(self, uses_y: bool, prompt_format: str = "nested") -> tuple[list[int], str]:
        """The prompt ``<bos> X=… [,Y=…] : program |`` as token ids and as ``tokens.decode`` text.

        The head holds no capitalised word before a letter, so its text needs no spacing rule and
        is written directly; the program part is memoised per cascade (environments call this at
        every reset).
        """
        ids = [T.BOS_ID, _X_ID, _EQ_ID, *[T.LETTER_IDS[c] for c in self.x]]
        text = f"{T.BOS}{T.VAR_X}{T.EQ}{self.x}"
        if uses_y:
            ids += [_COMMA_ID, _Y_ID, _EQ_ID, *[T.LETTER_IDS[c] for c in self.y]]
            text += f"{T.COMMA}{T.VAR_Y}{T.EQ}{self.y}"
        ids.append(T.TAG_ID)
        prog_ids, prog_text = _program_encoding(self.cascade, prompt_format)
        ids += prog_ids
        return ids, f"{text}{T.TAG}{prog_text}"

    def prompt(self, uses_y: bool, prompt_format: str = "nested") -> list[str]:
        """Prompt tokens: ``<bos> X = … [, Y = …] : program |`` (the tokens of :meth:`encode_prompt`)."""
        return [T.TOKENS[i] for i in self.encode_prompt(uses_y, prompt_format)[0]]

    def trace(self, trace_format: str = "values") -> list[str]:
        """Reference trace tokens in ``trace_format`` (see :data:`TRACE_FORMATS`)."""
        out: list[str] = []
        for k, (tags, letters) in enumerate(self.expected_segments(trace_format)):
            if k:
                out.append(T.STEP)
            if trace_format == "tagged":
                out += [T.TOKENS[tags[0]], T.TOKENS[tags[1]], T.TAG]
            out += [T.TOKENS[i] for i in letters]
        return out + [T.EOS]

    def trace_steps(self, trace_format: str) -> list[tuple[int, tuple[str, str], str]]:
        """The steps a trace in ``trace_format`` writes: ``(step number, (routing, skill), z_t)``.

        Every step, except in the ``answer`` format, which writes only the last one.
        """
        steps = [(t + 1, rs, z) for t, (rs, z) in enumerate(zip(self.cascade.steps, self.values))]
        return steps[-1:] if trace_format == "answer" else steps

    def expected_segments(self, trace_format: str) -> list[Segment]:
        """The reference trace as ``((routing id, skill id), letter ids)``, one per segment."""
        return [((T.ROUTING_IDS[r], T.SKILL_IDS[s]), tuple(T.letter_ids(z)))
                for _, (r, s), z in self.trace_steps(trace_format)]

    def score(self, written: Sequence[Segment], malformed: bool = False, trace_format: str = "values",
              process_reward: float = 0.0, format_penalty: float = 0.0) -> Score:
        """Score a written trace; shorthand for ``Scorer(trace_format, …).score(self, written, malformed)``."""
        return Scorer(trace_format, process_reward, format_penalty).score(self, written, malformed)


@dataclass(frozen=True)
class Score:
    """What a finished trace earned (:meth:`Scorer.score`).

    Attributes:
        reward: the episode's return, the sum of its step rewards under the scorer's rule.
        is_success: grammatical, complete, and the last segment equals the answer.
        all_steps_correct: ``is_success`` and every written segment equals its reference value
            (process-level success: no step skipped or wrong; in the ``answer`` format, where no
            intermediate is written, it equals ``is_success``).
        malformed: the trace broke the grammar or did not fit the observation.
        diagnosis: per step, ``{"step", "routing", "skill", "expected", "generated", "correct"}``
            (``"tags_correct"`` too in the ``tagged`` format; ``"generated"`` is ``None`` for a
            segment never closed).
    """

    reward: float
    is_success: bool
    all_steps_correct: bool
    malformed: bool
    diagnosis: list[dict[str, Any]] = field(repr=False)


@dataclass(frozen=True)
class Scorer:
    """The one rule for what a trace earns: every environment (single and vector) calls it.

    Rewards of one step (:meth:`step_reward`): ``process_reward`` when the step closes an
    intermediate segment equal to its reference value, ``-format_penalty`` when it makes the trace
    malformed (ungrammatical token, or observation full), ``+1`` when it ends a successful trace.

    Args:
        trace_format: one of :data:`TRACE_FORMATS`.
        process_reward: reward per correct intermediate segment.
        format_penalty: penalty for a malformed trace.
    """

    trace_format: str = "values"
    process_reward: float = 0.0
    format_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.trace_format not in TRACE_FORMATS:
            raise ValueError(f"unknown trace_format {self.trace_format!r}; choose from {TRACE_FORMATS}")
        for name in ("process_reward", "format_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))

    def step_reward(self, intermediate_correct, malformed, success):
        """The reward of one step; the arguments are bools, or numpy bool arrays for a batch.

        Args:
            intermediate_correct: the step closed an intermediate segment equal to its reference
                (a count of such segments gives the rewards of several steps at once).
            malformed: the step made the trace malformed.
            success: the step ended a successful trace (``Score.is_success``).
        """
        reward = self.process_reward * intermediate_correct
        reward -= self.format_penalty * malformed
        return reward + success

    def score(self, problem: Problem, written: Sequence[Segment], malformed: bool) -> Score:
        """Score the segments ``written`` (closed ones only, in order) of a trace of ``problem``."""
        tagged = self.trace_format == "tagged"
        steps = problem.trace_steps(self.trace_format)
        diagnosis, correct = [], []
        for k, (step, (r, s), z) in enumerate(steps):
            generated = T.letters_of(written[k][1]) if k < len(written) else None
            correct.append(generated == z)
            item = {"step": step, "routing": r, "skill": s, "expected": z, "generated": generated,
                    "correct": generated == z}
            if tagged:
                item["tags_correct"] = generated is not None and \
                    tuple(written[k][0]) == (T.ROUTING_IDS[r], T.SKILL_IDS[s])
            diagnosis.append(item)
        success = not malformed and len(written) == len(steps) and correct[-1]
        reward = self.step_reward(sum(correct[:-1]), malformed, success)  # all steps' rewards at once
        return Score(float(reward), bool(success), bool(success and all(correct)), bool(malformed), diagnosis)


@lru_cache(maxsize=1 << 16)
def _program_encoding(cascade: Cascade, prompt_format: str = "nested") -> tuple[tuple[int, ...], str]:
    # Programs repeat across episodes (a split holds a bounded set of cascades), so their ids and
    # text are rendered once; the bound keeps the paper profile's huge supports in check.
    ids = tuple(T.TOKEN_ID[t] for t in cascade.program(prompt_format)) + (T.SEP_ID,)
    return ids, T.decode(ids)


_X_ID, _Y_ID, _EQ_ID, _COMMA_ID = (T.TOKEN_ID[t] for t in (T.VAR_X, T.VAR_Y, T.EQ, T.COMMA))


def parse_prompt(ids: Sequence[int], alphabet: str, prompt_format: str = "nested") -> Problem:
    """The :class:`Problem` whose prompt (in ``prompt_format``) starts ``ids`` (padding and the
    trace after ``|`` are ignored)."""
    toks = [T.TOKENS[int(i)] for i in ids]
    if not toks or toks[0] != T.BOS or T.SEP not in toks:
        raise ValueError("not a prompt: expected <bos> … |")
    toks = toks[1 : toks.index(T.SEP)]
    colon = toks.index(T.TAG)
    head, program = toks[:colon], toks[colon + 1 :]
    inputs = {"X": "", "Y": ""}
    for part in " ".join(head).split(" , "):
        name, _, *chars = part.split(" ")
        inputs[name] = "".join(chars)
    cascade = parse_program(program, prompt_format)
    values = cascade.execute(inputs["X"], inputs["Y"], alphabet)
    return Problem(cascade, inputs["X"], inputs["Y"], tuple(values))
