"""Error anatomy: where an agent's trace first goes wrong, and which module it used instead.

No model internals are read: only the problem (its cascade and inputs), what the agent wrote at
each step, and the module library.  For the first wrong step ``t`` of a failed episode every
earlier intermediate is right, so the agent's working memory equals the reference one
(``x, y, z_1 … z_{t-1}``) and we can ask which *other* module reproduces the value it wrote:

* ``call``: the module of *another call of the same program* (``(r_u, s_u)``, ``u != t``) — the
  agent read the wrong nested call;
* ``skill``: the step's routing with another skill of the profile;
* ``routing``: another routing of the profile with the step's skill;
* ``operand``: the step's own module applied to another memory entry than ``z_{t-1}``
  (``X``, ``Y`` or an earlier result ``z_{t-2}``, …) — a misread nesting;
* ``skip``: the step copied its input ``z_{t-1}`` (the identity module);
* ``both``: another routing *and* another skill.

A match is a **wrong module selected** (kinds tried in that order; every matching kind is kept).
Otherwise the value is a **right module, wrong execution** when it is strictly closer (edit
distance) to the right module's output than to any alternative's and within half its length; else
it is **unexplained**.  A step the trace never closed (ungrammatical or truncated trace) is
**missing**.

An episode counts as an error when any judged step is wrong, even if its final answer happens to be
right (the trace is still wrong): the anatomy's error rate is ``1 - all-steps-correct``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from composition_gym import tokens as T
from composition_gym.cascade import Problem, parse_prompt
from composition_gym.modules import ROUTINGS, SKILLS
from composition_gym.profiles import Profile
from composition_gym.registration import short_name
from composition_gym.agents.evaluation import rollout
from composition_gym.registration import resolve_env_ids

CATEGORIES = ("wrong_module", "wrong_execution", "unexplained", "missing")
KINDS = ("call", "skill", "routing", "operand", "skip", "both")


@dataclass(frozen=True)
class StepError:
    """The first wrong step of one failed episode and its classification.

    Attributes:
        env_id, seed, depth: the episode.
        step: 1-based index of the first wrong intermediate.
        routing, skill: the module the step should have used.
        category: one of :data:`CATEGORIES`.
        kinds: every :data:`KINDS` entry whose alternative reproduces the written value.
        used: the alternative that reproduces it first, e.g. ``"Chain.Sort"`` or ``"Chain.Rev(X)"``
            (``""`` when none does).
        expected, generated: the reference ``z_t`` and what the agent wrote (``None``: missing).
        read_step: for kind ``call``, the step whose module was used (else 0).
    """

    env_id: str
    seed: int
    depth: int
    step: int
    routing: str
    skill: str
    category: str
    kinds: tuple[str, ...]
    used: str
    expected: str
    generated: str | None
    read_step: int = 0

    @property
    def kind(self) -> str:
        """The first matching kind (``""`` unless the category is ``wrong_module``)."""
        return self.kinds[0] if self.kinds else ""


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


class Classification(NamedTuple):
    """What :func:`classify_step` found: the category, every matching kind, the first matching
    alternative's label, and for kind ``call`` the step whose module was used (else 0)."""

    category: str
    kinds: tuple[str, ...]
    used: str = ""
    read_step: int = 0


def alternatives(problem: Problem, step: int, profile: Profile) -> list[tuple[str, str, str, int]]:
    """``(kind, label, value, other step)`` for every other module the agent could have run at
    ``step`` (1-based); ``other step`` is the call whose module it is (kind ``call``), else 0.

    The memory is the reference one: ``prev = z_{step-1}`` (``X`` at step 1).
    """
    r, s = problem.cascade.steps[step - 1]
    x, y, a = problem.x, problem.y, profile.alphabet
    prev = problem.values[step - 2] if step > 1 else x
    out: list[tuple[str, str, str, int]] = []
    for u, (ru, su) in enumerate(problem.cascade.steps, 1):
        if u != step and (ru, su) != (r, s):
            out.append(("call", f"{ru}.{su}(step {u})", ROUTINGS[ru].apply(SKILLS[su], prev, x, y, a), u))
    for s2 in profile.skills:
        if s2 != s:
            out.append(("skill", f"{r}.{s2}", ROUTINGS[r].apply(SKILLS[s2], prev, x, y, a), 0))
    for r2 in profile.routings:
        if r2 != r:
            out.append(("routing", f"{r2}.{s}", ROUTINGS[r2].apply(SKILLS[s], prev, x, y, a), 0))
    operands = {"X": x, **({"Y": y} if profile.uses_y else {}),
                **{f"z{k}": problem.values[k - 1] for k in range(step - 2, 0, -1)}}
    seen = {prev}
    for name, operand in operands.items():
        if operand not in seen:  # the same string as the right operand is no alternative
            seen.add(operand)
            out.append(("operand", f"{r}.{s}({name})", ROUTINGS[r].apply(SKILLS[s], operand, x, y, a), 0))
    out.append(("skip", "copy", prev, 0))
    for r2 in profile.routings:
        for s2 in profile.skills:
            if r2 != r and s2 != s:
                out.append(("both", f"{r2}.{s2}", ROUTINGS[r2].apply(SKILLS[s2], prev, x, y, a), 0))
    return out


def classify_step(problem: Problem, step: int, generated: str | None, profile: Profile) -> Classification:
    """The :class:`Classification` of a wrong value ``generated`` at ``step`` (see the module doc)."""
    expected = problem.values[step - 1]
    if generated is None:
        return Classification("missing", ())
    if generated == expected:
        raise ValueError(f"step {step} is correct ({generated!r}); only wrong steps are classified")
    alts = [a for a in alternatives(problem, step, profile) if a[2] != expected]  # indistinguishable here
    hits = [(kind, label, other) for kind, label, value, other in alts if value == generated]
    if hits:
        kinds = tuple(k for k in KINDS if any(h[0] == k for h in hits))
        _, used, other = next(h for h in hits if h[0] == kinds[0])
        return Classification("wrong_module", kinds, used, other)
    d_right = edit_distance(generated, expected)
    d_alt = min((edit_distance(generated, a[2]) for a in alts), default=len(generated) + len(expected))
    if d_right < d_alt and 2 * d_right <= max(len(expected), 1):
        return Classification("wrong_execution", ())
    return Classification("unexplained", ())


@dataclass
class EpisodeSteps:
    """What :func:`analyse` needs of one episode: its problem and the value written at each judged step.

    ``generated[k]`` is the agent's value for step ``judged[k]`` (1-based), or ``None`` if it never
    closed that segment.  Every step is judged in ``values``/``tagged`` traces; only the last one
    (the answer) in ``answer`` traces.
    """

    env_id: str
    seed: int
    problem: Problem
    judged: list[int]
    generated: list[str | None]
    profile: Profile

    @classmethod
    def from_info(cls, env_id: str, seed: int, info: dict[str, Any], problem: Problem, profile: Profile) -> EpisodeSteps:
        """From the env's final ``info["diagnosis"]`` (``problem``: ``env.unwrapped.problem``)."""
        items = info["diagnosis"]
        return cls(env_id, seed, problem, [d["step"] for d in items], [d["generated"] for d in items], profile)

    @classmethod
    def from_tokens(cls, env_id: str, seed: int, tokens: Sequence[int], profile: Profile,
                    trace_format: str = "values", prompt_format: str = "nested") -> EpisodeSteps:
        """From a finished episode's token ids (prompt + trace, e.g. :attr:`Episode.tokens`).

        A segment counts as written only once closed by ``;`` or ``<eos>``, as in the env's diagnosis.
        """
        ids = [int(i) for i in tokens if int(i) != T.PAD_ID]
        problem = parse_prompt(ids, profile.alphabet, prompt_format)
        trace = ids[ids.index(T.SEP_ID) + 1 :]
        values = _closed_values(trace)
        depth = problem.cascade.depth
        judged = [depth] if trace_format == "answer" else list(range(1, depth + 1))
        generated = [values[k] if k < len(values) else None for k in range(len(judged))]
        return cls(env_id, seed, problem, judged, generated, profile)

    def first_error(self) -> StepError | None:
        """The first wrong judged step, classified; ``None`` when every judged step is right."""
        p = self.problem
        for step, value in zip(self.judged, self.generated):
            want = p.values[step - 1]
            if value != want:
                c = classify_step(p, step, value, self.profile)
                r, s = p.cascade.steps[step - 1]
                return StepError(self.env_id, self.seed, p.cascade.depth, step, r, s, c.category, c.kinds, c.used,
                                 want, value, c.read_step)
        return None


@dataclass
class Anatomy:
    """First errors of a set of episodes, with their aggregates.

    Attributes:
        errors: one :class:`StepError` per episode with a wrong step.
        episodes: number of episodes per env id (failed or not).
        depths: number of episodes per depth.
    """

    errors: list[StepError]
    episodes: dict[str, int]
    depths: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of episodes analysed."""
        return sum(self.episodes.values())

    def _split(self, key, denominator, errors: list[StepError] | None = None) -> dict[str, dict[str, float]]:
        # denominator(group) -> episodes the shares are fractions of
        groups: dict[Any, Counter] = defaultdict(Counter)
        for e in self.errors if errors is None else errors:
            groups[key(e)][e.category] += 1
        out = {}
        for g in sorted(groups):
            n = denominator(g, groups[g])
            out[str(g)] = {"n": n, "errors": sum(groups[g].values()),
                           **{c: groups[g][c] / n if n else 0.0 for c in CATEGORIES}}
        return out

    def by_env(self) -> dict[str, dict[str, float]]:
        """Per env id: episodes, first errors, and the fraction of episodes in each category."""
        per_env = {short_name(k): v for k, v in self.episodes.items()}
        return self._split(lambda e: short_name(e.env_id), lambda g, _: per_env.get(g, 0))

    def by_depth(self) -> dict[str, dict[str, float]]:
        """Per depth, as :meth:`by_env`."""
        return self._split(lambda e: e.depth, lambda g, _: self.depths.get(g, 0))

    def by_step(self, depth: int | None = None) -> dict[str, dict[str, float]]:
        """Per first-wrong step index, fractions of all episodes (of ``depth`` if given)."""
        errors = [e for e in self.errors if depth is None or e.depth == depth]
        n = self.depths.get(depth, 0) if depth is not None else self.total
        return self._split(lambda e: e.step, lambda g, _: n, errors)

    def by_module(self) -> dict[str, dict[str, float]]:
        """Per module ``routing.skill`` of the first wrong step: counts and category shares of those errors."""
        return self._split(lambda e: f"{e.routing}.{e.skill}", lambda g, counts: sum(counts.values()))

    def kinds(self) -> dict[str, int]:
        """How often each wrong-module kind came first."""
        return dict(Counter(e.kind for e in self.errors if e.category == "wrong_module"))

    def call_offsets(self) -> dict[str, dict[str, int]]:
        """Per depth, how far from its own call was the call whose module a step used (kind
        ``call`` first): ``{"4": {"+1": 93, "-1": 6}}``; ``+1`` is the next outer call."""
        out: dict[str, Counter] = defaultdict(Counter)
        for e in self.errors:
            if e.kind == "call":
                out[str(e.depth)][f"{e.read_step - e.step:+d}"] += 1
        return {d: dict(sorted(c.items())) for d, c in sorted(out.items())}

    def confusions(self, top: int = 10) -> list[tuple[str, str, int]]:
        """The most frequent ``(right module, module used instead, count)`` pairs."""
        c = Counter((f"{e.routing}.{e.skill}", e.used) for e in self.errors if e.used)
        return [(a, b, n) for (a, b), n in c.most_common(top)]

    def first_step_error(self, depth: int) -> dict[str, float]:
        """At ``depth``: the fraction of episodes whose first error is at step 1, and its category split."""
        n = self.depths.get(depth, 0)
        first = [e for e in self.errors if e.depth == depth and e.step == 1]
        split = Counter(e.category for e in first)
        return {"n": n, "rate": len(first) / n if n else 0.0,
                **{c: split[c] / len(first) if first else 0.0 for c in CATEGORIES}}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary; per-episode errors under ``"errors"``."""
        return {
            "episodes": self.episodes, "by_env": self.by_env(), "by_depth": self.by_depth(),
            "by_step": {str(d): self.by_step(d) for d in sorted(self.depths)},
            "first_step": {str(d): self.first_step_error(d) for d in sorted(self.depths)},
            "kinds": self.kinds(), "call_offsets": self.call_offsets(), "by_module": self.by_module(),
            "confusions": [list(c) for c in self.confusions()],
            "errors": [asdict(e) | {"kinds": list(e.kinds)} for e in self.errors],
        }


def analyse(episodes: Iterable[EpisodeSteps]) -> Anatomy:
    """The :class:`Anatomy` of a set of episodes."""
    errors, per_env, per_depth = [], Counter(), Counter()
    for ep in episodes:
        per_env[ep.env_id] += 1
        per_depth[ep.problem.cascade.depth] += 1
        err = ep.first_error()
        if err is not None:
            errors.append(err)
    return Anatomy(errors, dict(per_env), dict(sorted(per_depth.items())))


def error_anatomy(agent: Any, env_ids: str | Sequence[str], episodes: int, seed: int = 0, *,
            batch_size: int = 64) -> Anatomy:
    """Play ``episodes`` episodes of each env id with ``agent`` and analyse their first errors.

    Episode ``i`` of every id resets with ``seed + i`` (the same problems as
    :func:`~composition_gym.agents.evaluation.evaluate`).  Any agent works: an agent object, an
    SB3 model or a :class:`~composition_gym.agents.TransformerLM`.
    """

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    ids = resolve_env_ids(env_ids)
    records = []
    for env_id in ids:
        records += rollout(agent, env_id, [seed + i for i in range(episodes)], batch_size=batch_size)
    return anatomy_of_episodes(records)


def anatomy_of_episodes(records: Iterable[Any]) -> Anatomy:
    """The :class:`Anatomy` of evaluated episodes (:class:`~composition_gym.agents.evaluation.Episode`,
    e.g. ``EvalReport.episodes``), rebuilt from their tokens."""
    import gymnasium as gym

    envs: dict[str, Any] = {}
    steps = []
    for r in records:
        if not r.tokens:
            raise ValueError(f"episode {r.env_id} seed {r.seed} has no tokens; anatomy needs Episode.tokens")
        if r.env_id not in envs:
            envs[r.env_id] = gym.make(r.env_id).unwrapped
        env = envs[r.env_id]
        steps.append(EpisodeSteps.from_tokens(r.env_id, r.seed, r.tokens, env.profile, env.trace_format,
                                              env.prompt_format))
    return analyse(steps)


__all__ = ["CATEGORIES", "KINDS", "Anatomy", "EpisodeSteps", "StepError", "Classification", "alternatives", "analyse",
           "anatomy_of_episodes", "classify_step", "error_anatomy", "edit_distance"]


_LETTER_IDS = frozenset(T.LETTER_IDS.values())


def _closed_values(trace: Sequence[int]) -> list[str]:
    """The letters of each segment closed by ``;`` or ``<eos>`` (tags and an unclosed tail are dropped)."""
    values: list[str] = []
    letters: list[int] = []
    for tok in trace:
        if tok == T.STEP_ID or tok == T.EOS_ID:
            values.append(T.letters_of(letters))
            letters = []
            if tok == T.EOS_ID:
                break
        elif tok in _LETTER_IDS:
            letters.append(tok)
    return values
