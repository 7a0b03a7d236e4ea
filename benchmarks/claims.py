"""The paper's three claims as data: which conditions each one compares, on which environments.

Kong, Liu et al. (ICML 2026) claim that (1) RL after SFT helps unseen compositions much more than
seen ones, (2) RL on compound traces generalizes better than RL on atomic modules, and (3) SFT
covering every module followed by RL on compositions *beyond* the SFT support beats RL on the SFT
support itself.  Every claim is a comparison between *conditions* (how the agent was trained)
measured on *evaluation environments*; this module names both, summarises per-seed results
(mean ± standard error), turns paired differences into a verdict, and checks claim 3's premise on
the registered supports (:func:`support_checks`).  It knows nothing about training: :mod:`composition_gym.benchmarks.reproduce` produces the runs, :mod:`composition_gym.benchmarks.report` renders them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from typing import Any

from composition_gym.registration import env_id


@dataclass(frozen=True)
class Condition:
    """One training condition: BC on the SFT set, optionally followed by PPO on ``rl_env``.

    Attributes:
        key: short name used in the JSON and the figure.
        label: human-readable name for tables.
        rl_env: preset name (no namespace, profile prefix or version) PPO trains on; ``None``
            for SFT alone.
    """

    key: str
    label: str
    rl_env: str | None


@dataclass(frozen=True)
class Comparison:
    """One verdict row: ``better`` should beat ``worse`` on ``metric`` if the claim holds.

    ``metric`` is an evaluation-env key, or ``"gain:<ood>-<id>"`` for RL's gain over SFT on one
    env minus its gain on another (claim 1's "gain on unseen vs seen").
    """

    claim: str
    better: str
    worse: str
    metric: str
    text: str


SFT_ENV = "Compose-L3"
#: The evaluation environments, by key: where each condition is measured.
EVAL_ENVS: dict[str, str] = {
    "id": "Compose-L3",  # the SFT composition set: seen compositions
    "rl_set": "Compose-RL-L3",  # the RL composition set, disjoint from SFT
    "ood_unseen": "OOD-Unseen-L3",  # compositions never trained on (L = 3)
    "ood_depth": "OOD-Depth-L4",  # deeper cascades (L = 4)
    "atomic": "Atomic-L1",  # single modules
}
EVAL_LABELS: dict[str, str] = {
    "id": "ID (SFT set, L=3)",
    "rl_set": "RL set (L=3)",
    "ood_unseen": "OOD unseen (L=3)",
    "ood_depth": "OOD depth (L=4)",
    "atomic": "Atomic (L=1)",
}
CONDITIONS: dict[str, Condition] = {
    c.key: c
    for c in (
        Condition("sft", "SFT", None),
        Condition("rl_atomic", "SFT + RL atomic (L=1)", "Atomic-L1"),
        Condition("rl_compound", "SFT + RL compound, SFT set (L=3)", "Compose-L3"),
        Condition("rl_disjoint", "SFT + RL compound, disjoint RL set (L=3)", "Compose-RL-L3"),
    )
}
#: Which conditions and eval envs each claim's table shows.
CLAIMS: dict[str, dict] = {
    "claim1": {
        "title": "Claim 1: SFT vs SFT + RL (RL on the SFT compositions)",
        "short": "Claim 1: SFT vs SFT + RL",
        "conditions": ("sft", "rl_compound"),
        "envs": ("id", "ood_unseen", "ood_depth"),
        "paper": "RL's gain over SFT is much larger on unseen compositions than on seen ones",
    },
    "claim2": {
        "title": "Claim 2: RL on atomic vs compound traces (same BC start, equal RL budget)",
        "short": "Claim 2: RL atomic vs compound",
        "conditions": ("sft", "rl_atomic", "rl_compound"),
        "envs": ("ood_depth", "ood_unseen", "atomic"),
        "paper": "OOD L=4 success: SFT 4.8 %, SFT + RL atomic 14.8 %, SFT + RL compound 42.6 %",
    },
    "claim3": {
        "title": "Claim 3: SFT covering every module, then RL beyond vs on the SFT support",
        "short": "Claim 3: RL beyond vs on SFT support",
        "conditions": ("sft", "rl_compound", "rl_disjoint"),
        "envs": ("id", "rl_set", "ood_unseen", "ood_depth"),
        "paper": "RL on compositions disjoint from the SFT set beats RL on overlapping ones (OOD)",
    },
}
#: The paper's headline numbers (OOD compound traces at L = 4, success in %), claim 2.
PAPER_OOD_L4: dict[str, float] = {"sft": 4.8, "rl_atomic": 14.8, "rl_compound": 42.6}
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("claim1", "rl_compound", "sft", "gain:ood_unseen-id",
               "RL gain on unseen L=3 compositions > RL gain on seen (ID) ones"),
    Comparison("claim1", "rl_compound", "sft", "gain:ood_depth-id",
               "RL gain at OOD depth L=4 > RL gain on seen (ID) compositions"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_depth",
               "RL compound > RL atomic on OOD depth L=4"),
    Comparison("claim2", "rl_atomic", "sft", "ood_depth", "RL atomic > SFT on OOD depth L=4"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_unseen",
               "RL on disjoint set > RL on SFT set, OOD unseen L=3"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_depth",
               "RL on disjoint set > RL on SFT set, OOD depth L=4"),
)
#: A difference is "supported"/"contradicted" when its mean is beyond this many standard errors.
VERDICT_SE = 2.0


def mean_se(values: Sequence[float]) -> dict:
    """``{"mean", "se", "n"}`` of ``values``; ``se`` is ``None`` for fewer than two values."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_se needs at least one value")
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return {"mean": mean, "se": None, "n": n}
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return {"mean": mean, "se": math.sqrt(var / n), "n": n}


def success_table(runs: Iterable[Mapping]) -> dict[str, dict[int, dict[str, float]]]:
    """``{condition: {seed: {env_key: success}}}`` from run records; duplicates are an error."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for run in runs:
        by_seed = table.setdefault(run["condition"], {})
        if run["seed"] in by_seed:
            raise ValueError(f"two runs for condition {run['condition']!r}, seed {run['seed']}")
        by_seed[run["seed"]] = dict(run["success"])
    return table


def summarize(runs: Iterable[Mapping]) -> dict[str, dict[str, dict]]:
    """``{condition: {env_key: mean_se}}`` over seeds."""
    table = success_table(runs)
    out: dict[str, dict[str, dict]] = {}
    for cond, by_seed in table.items():
        envs = sorted({k for s in by_seed.values() for k in s})
        out[cond] = {e: mean_se([s[e] for s in by_seed.values() if e in s]) for e in envs}
    return out


def _metric(success: Mapping[str, float], base: Mapping[str, float], metric: str) -> float:
    """One seed's value of ``metric`` for a condition, ``base`` being SFT's successes."""
    if metric.startswith("gain:"):
        ood, seen = metric[5:].split("-")
        return (success[ood] - base[ood]) - (success[seen] - base[seen])
    return success[metric]


def _binomial_var(success: Mapping[str, float], base: Mapping[str, float], metric: str, episodes: int) -> float:
    """Evaluation-sampling variance of one condition's ``metric`` (``episodes`` per env)."""
    def var(p: float) -> float:
        return p * (1.0 - p) / episodes

    if metric.startswith("gain:"):
        ood, seen = metric[5:].split("-")
        return var(success[ood]) + var(base[ood]) + var(success[seen]) + var(base[seen])
    return var(success[metric])


def verdicts(runs: Iterable[Mapping], episodes: int | None = None) -> list[dict]:
    """Every :data:`COMPARISONS` row with its paired difference over seeds and a verdict.

    The difference is taken seed by seed (each seed's conditions share a BC start and the same
    evaluation problems), then summarised as mean ± SE.  With ``episodes`` (evaluation episodes
    per env and run) the SE also counts the binomial error of those evaluations, treated as
    independent (conservative: paired problems make it smaller), so that a difference of a single
    episode repeated on every seed is not mistaken for an effect.  The verdict is ``"supported"``
    when the mean is more than :data:`VERDICT_SE` standard errors above zero, ``"contradicted"``
    when as far below, ``"inconclusive"`` otherwise (always, with a single seed).
    """
    if episodes is not None and (not isinstance(episodes, int) or episodes < 1):
        raise ValueError(f"episodes must be a positive integer or None, got {episodes!r}")
    table = success_table(runs)
    rows = []
    for comp in COMPARISONS:
        if not {comp.better, comp.worse, "sft"} <= set(table):
            continue
        seeds = sorted(set(table[comp.better]) & set(table[comp.worse]) & set(table["sft"]))
        diffs, binom = [], []
        gain = comp.metric.startswith("gain:")
        for seed in seeds:
            base, better, worse = table["sft"][seed], table[comp.better][seed], table[comp.worse][seed]
            diffs.append(_metric(better, base, comp.metric) - (0.0 if gain else _metric(worse, base, comp.metric)))
            if episodes is not None:
                binom.append(_binomial_var(better, base, comp.metric, episodes)
                             + (0.0 if gain else _binomial_var(worse, base, comp.metric, episodes)))
        if not diffs:
            continue
        stat = mean_se(diffs)
        if stat["se"] is not None and binom:
            stat["se_seeds"] = stat["se"]
            stat["se"] = math.sqrt(stat["se"] ** 2 + sum(binom) / len(binom) / len(binom))
        if stat["se"] is None:
            verdict = "inconclusive"
        elif stat["mean"] > VERDICT_SE * stat["se"] and stat["mean"] > 0:
            verdict = "supported"
        elif stat["mean"] < -VERDICT_SE * stat["se"] and stat["mean"] < 0:
            verdict = "contradicted"
        else:
            verdict = "inconclusive"
        rows.append({"claim": comp.claim, "comparison": comp.text, "better": comp.better, "worse": comp.worse,
                     "metric": comp.metric, "diff": stat, "verdict": verdict})
    return rows


def gains(runs: Iterable[Mapping], condition: str = "rl_compound", base: str = "sft") -> dict[str, dict]:
    """``{env_key: mean_se}`` of ``condition``'s success minus ``base``'s, paired seed by seed."""
    table = success_table(runs)
    if condition not in table or base not in table:
        return {}
    seeds = sorted(set(table[condition]) & set(table[base]))
    envs = sorted(set.intersection(*(set(table[condition][s]) & set(table[base][s]) for s in seeds))) if seeds else []
    return {e: mean_se([table[condition][s][e] - table[base][s][e] for s in seeds]) for e in envs}


def support_checks(profile: str, samples: int = 20_000) -> dict[str, Any]:
    """Check the premises of claim 3 on the registered supports, and return what was checked.

    The SFT composition set must contain every skill, every routing mechanism and every
    ``(routing, skill)`` step (SFT "covers every atomic module"), and share no cascade with the RL
    composition set or the unseen OOD set.  Exhaustive where the support can be enumerated,
    otherwise on ``samples`` sampled cascades.

    Raises:
        RuntimeError: when a premise fails (the experiment would not test the claim).
    """
    import gymnasium as gym
    import numpy as np

    import composition_gym  # noqa: F401  (registers the ids)

    def support(preset: str):
        env = gym.make(env_id(preset, profile))
        try:
            return env.unwrapped.support, env.unwrapped.sampler
        finally:
            env.close()

    sft, sampler = support(SFT_ENV)
    others = {name: support(name)[0] for name in ("Compose-RL-L3", "OOD-Unseen-L3")}
    exhaustive = sft.size() <= 200_000
    if exhaustive:
        cascades = list(sft.enumerate())
    else:
        rng = np.random.default_rng(0)
        cascades = [sampler.sample_cascade(rng) for _ in range(samples)]
    p = sft.profile
    steps = {step for c in cascades for step in c.steps}
    missing = sorted({(r, s) for r in p.routings for s in p.skills} - steps)
    if missing:
        raise RuntimeError(f"the SFT set of profile {profile!r} misses modules {missing[:5]}...: claim 3 "
                           "needs SFT to cover every (routing, skill) step")
    for name, other in others.items():
        shared = next((c for c in cascades if other.contains(c)), None)
        if shared is not None:
            raise RuntimeError(f"SFT set and {name} share the cascade {shared.key()}")
    return {
        "sft_cascades_checked": len(cascades),
        "exhaustive": exhaustive,
        "sft_covers_every_routing_skill_step": True,
        "sft_disjoint_from_rl_set_and_unseen": True,
    }
