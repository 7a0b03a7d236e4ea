"""The latent cascade, its execution, its prompt (a nested program) and its reference trace.

A :class:`Cascade` is the hidden task: ``((r_1, s_1), …, (r_L, s_L))``.  A :class:`Problem` is a
cascade with concrete inputs; it renders

* the **prompt** ``<bos> X=abc : Rev(Sort(X+X)) |`` — the program as nested calls, so the cascade
  is recoverable (:func:`parse_prompt`) but the steps are never listed in execution order;
* the **reference trace** in one of :data:`TRACE_FORMATS`:

  - ``values`` (default): ``z_1 ; z_2 ; … ; z_L <eos>`` — intermediates then the answer ``z_L``;
    the modules stay latent;
  - ``tagged``: ``R_1 S_1 : z_1 ; … ; R_L S_L : z_L <eos>`` — each step tagged with its routing and
    skill, for diagnostics;
  - ``answer``: ``z_L <eos>`` — no reasoning trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from composition_gym import tokens as T
from composition_gym.modules import ROUTINGS, SKILLS

TRACE_FORMATS = ("values", "tagged", "answer")


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

    def program(self) -> list[str]:
        """The nested-call program as a list of tokens, e.g. ``Rev ( Sort ( X + X ) )``."""
        expr = [T.VAR_X]
        for r, s in self.steps:
            expr = _render_step(r, s, expr)
        return expr

    def to_dict(self) -> dict:
        """A JSON-friendly form: ``{"routings": [...], "skills": [...]}``."""
        return {"routings": list(self.routings), "skills": list(self.skills)}


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


def parse_program(toks: Sequence[str]) -> Cascade:
    """Recover the cascade from :meth:`Cascade.program` tokens (proves the prompt determines it)."""
    return Cascade(tuple(_ProgramParser(toks).parse()))


@dataclass(frozen=True)
class Problem:
    """A cascade with concrete inputs and its intermediates (``values[-1]`` is the answer)."""

    cascade: Cascade
    x: str
    y: str
    values: tuple[str, ...]

    @property
    def answer(self) -> str:
        return self.values[-1]

    def prompt(self, uses_y: bool) -> list[str]:
        """Prompt tokens: ``<bos> X = … [, Y = …] : program |``."""
        toks = [T.BOS, T.VAR_X, T.EQ, *self.x]
        if uses_y:
            toks += [T.COMMA, T.VAR_Y, T.EQ, *self.y]
        return toks + [T.TAG, *self.cascade.program(), T.SEP]

    def trace(self, trace_format: str = "values") -> list[str]:
        """Reference trace tokens in ``trace_format`` (see :data:`TRACE_FORMATS`)."""
        if trace_format == "answer":
            return [*self.answer, T.EOS]
        out: list[str] = []
        for t, ((r, s), z) in enumerate(zip(self.cascade.steps, self.values)):
            if t:
                out.append(T.STEP)
            if trace_format == "tagged":
                out += [r, s, T.TAG]
            out += list(z)
        return out + [T.EOS]


def parse_prompt(ids: Sequence[int], alphabet: str) -> Problem:
    """The :class:`Problem` whose prompt starts ``ids`` (padding and trace after ``|`` are ignored)."""
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
    cascade = parse_program(program)
    values = cascade.execute(inputs["X"], inputs["Y"], alphabet)
    return Problem(cascade, inputs["X"], inputs["Y"], tuple(values))


def parse_trace(ids: Sequence[int], trace_format: str = "values") -> list[tuple[tuple[str, ...], str]]:
    """Split a generated trace (ids after ``|``, up to ``<eos>``) into ``(tags, value)`` segments."""
    segments: list[tuple[tuple[str, ...], str]] = []
    tags: list[str] = []
    value: list[str] = []
    for i in ids:
        tok = T.TOKENS[int(i)]
        if tok in (T.EOS, T.PAD):
            break
        if tok == T.STEP:
            segments.append((tuple(tags), "".join(value)))
            tags, value = [], []
        elif tok in T.LETTER_IDS:
            value.append(tok)
        elif tok != T.TAG:
            tags.append(tok)
    segments.append((tuple(tags), "".join(value)))
    return segments
