"""Statistics of the reproduction's runs: summaries over seeds, paired differences, verdicts.

Every comparison is paired seed by seed (each seed's conditions share an SFT start and the same
evaluation problems) and summarised as mean ± standard error; with the number of evaluation
episodes the error also counts the evaluation's binomial noise.  What is compared is data in
:mod:`.claims`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from composition_gym.benchmarks.experiment.claims import (COMPARISONS, CONDITIONS, FORGETTING_POINTS, MEASURES,
                                                          SHALLOWER_SETS, VERDICT_SE)


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


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {list(MEASURES)}")


def run_rows(records: Sequence[Mapping]) -> list[dict]:
    """Run-store records as run rows (``seed``, ``condition``, ``metrics``)."""
    return [{"seed": r["result"]["seed"], "condition": r["result"]["condition"], "metrics": r["result"]["metrics"],
             "diagnostics": r["result"].get("diagnostics"), "leakage": r["result"].get("leakage")} for r in records]


def run_scores(run: Mapping, measure: str = "greedy") -> dict[str, float]:
    """``{env_key: value}`` of ``measure`` in one run record.

    Measures an evaluation did not report (``None``) are left out.
    """
    _check_measure(measure)
    return {e: float(m[measure]) for e, m in run["metrics"].items() if m.get(measure) is not None}


def success_table(runs: Iterable[Mapping], measure: str = "greedy") -> dict[str, dict[int, dict[str, float]]]:
    """``{condition: {seed: {env_key: value}}}`` of ``measure`` from run records; duplicates are an error."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for run in runs:
        by_seed = table.setdefault(run["condition"], {})
        if run["seed"] in by_seed:
            raise ValueError(f"two runs for condition {run['condition']!r}, seed {run['seed']}")
        by_seed[run["seed"]] = run_scores(run, measure)
    return table


def summarize(runs: Iterable[Mapping], measure: str = "greedy") -> dict[str, dict[str, dict]]:
    """``{condition: {env_key: mean_se}}`` of ``measure`` over seeds."""
    table = success_table(runs, measure)
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


def _envs_of(metric: str) -> tuple[str, ...]:
    return tuple(metric[5:].split("-")) if metric.startswith("gain:") else (metric,)


def _paired(table: Mapping[str, Mapping[int, Mapping[str, float]]], better: str, worse: str, metric: str,
            episodes: int | None) -> dict | None:
    """Mean ± SE over seeds of ``better - worse`` on ``metric`` (``None`` if no seed has both)."""
    if not {better, worse, "sft"} <= set(table):
        return None
    needed = set(_envs_of(metric))
    seeds = sorted(s for s in set(table[better]) & set(table[worse]) & set(table["sft"])
                   if all(needed <= set(table[c][s]) for c in (better, worse, "sft")))
    diffs, binom = [], []
    gain = metric.startswith("gain:")
    for seed in seeds:
        base, hi, lo = table["sft"][seed], table[better][seed], table[worse][seed]
        diffs.append(_metric(hi, base, metric) - (0.0 if gain else _metric(lo, base, metric)))
        if episodes is not None:
            binom.append(_binomial_var(hi, base, metric, episodes)
                         + (0.0 if gain else _binomial_var(lo, base, metric, episodes)))
    if not diffs:
        return None
    stat = mean_se(diffs)
    if stat["se"] is not None and binom:
        stat["se_seeds"] = stat["se"]
        stat["se"] = math.sqrt(stat["se"] ** 2 + sum(binom) / len(binom) / len(binom))
    return stat


def paired_difference(runs: Iterable[Mapping], better: str, worse: str, metric: str, episodes: int | None = None,
                      measure: str = "greedy") -> dict | None:
    """Mean ± SE over seeds of ``better``'s minus ``worse``'s ``metric`` (an eval key or ``gain:a-b``),
    paired seed by seed, the SE including the evaluation's binomial error when ``episodes`` is given;
    ``None`` when no seed has both conditions.  What :func:`verdicts` judges, for any pair."""
    return _paired(success_table(runs, measure), better, worse, metric, episodes)


def verdict_of(stat: Mapping | None) -> str:
    """``supported`` / ``contradicted`` / ``inconclusive`` for a difference at ±:data:`VERDICT_SE` SE."""
    if stat is None or stat["se"] is None:
        return "inconclusive"
    if stat["mean"] > VERDICT_SE * stat["se"] and stat["mean"] > 0:
        return "supported"
    if stat["mean"] < -VERDICT_SE * stat["se"] and stat["mean"] < 0:
        return "contradicted"
    return "inconclusive"


def verdicts(runs: Iterable[Mapping], episodes: int | None = None, measure: str = "greedy") -> list[dict]:
    """Every :data:`COMPARISONS` row with its paired difference over seeds and a verdict.

    The difference is taken seed by seed (each seed's conditions share a BC start and the same
    evaluation problems), then summarised as mean ± SE.  With ``episodes`` (evaluation episodes
    per env and run) the SE also counts the binomial error of those evaluations, treated as
    independent (conservative: paired problems make it smaller), so that a difference of a single
    episode repeated on every seed is not mistaken for an effect.  The verdict is ``"supported"``
    when the mean is more than :data:`VERDICT_SE` standard errors above zero, ``"contradicted"``
    when as far below, ``"inconclusive"`` otherwise (always, with a single seed).  ``measure``
    picks greedy success, sampled success, pass@k or all-steps-correct (each is a per-problem
    Bernoulli, so the binomial term applies to every one).  Comparisons on an evaluation set the
    runs do not have (another split family) are left out.
    """
    if episodes is not None and (not isinstance(episodes, int) or episodes < 1):
        raise ValueError(f"episodes must be a positive integer or None, got {episodes!r}")
    table = success_table(runs, measure)
    rows = []
    for comp in COMPARISONS:
        stat = _paired(table, comp.better, comp.worse, comp.metric, episodes)
        if stat is None:
            continue
        verdict = verdict_of(stat)
        rows.append({"claim": comp.claim, "comparison": comp.text, "better": comp.better, "worse": comp.worse,
                     "metric": comp.metric, "measure": measure, "diff": stat, "verdict": verdict})
    return rows


def statistics(runs: Sequence[Mapping], episodes: int | None) -> dict[str, Any]:
    """Everything a report shows about ``runs``: summaries (greedy, then per measure), the RL gains,
    and the verdicts on greedy success and on pass@k."""
    return {
        "summary": summarize(runs),
        "summary_by_measure": {m: summarize(runs, m) for m in MEASURES},
        "gains": gains(runs),
        "verdicts": verdicts(runs, episodes),
        "verdicts_pass_at_k": verdicts(runs, episodes, measure="pass_at_k"),
        "forgetting": forgetting(runs, episodes),
        "leakage": leakage_table(runs),
        "first_fail": {env: first_fail(runs, env) for env in dict.fromkeys(e for r in runs for e in r["metrics"])},
    }


def first_fail(runs: Iterable[Mapping], env: str) -> dict[str, dict[str, float]]:
    """``{condition: {step: share}}``: which step of ``env``'s problems a condition's greedy answer
    gets wrong first (``"none"``: every step right), averaged over seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        shares = run["metrics"].get(env, {}).get("first_fail")
        if shares:
            for step, share in shares.items():
                out.setdefault(run["condition"], {}).setdefault(step, []).append(share)
    return {cond: {k: sum(v) / len(v) for k, v in steps.items()} for cond, steps in out.items()}


def forgetting(runs: Iterable[Mapping], episodes: int | None = None) -> list[dict[str, Any]]:
    """For every arm and :data:`SHALLOWER_SETS` set: its greedy success minus SFT's, paired over seeds,
    and whether it lost more than :data:`FORGETTING_POINTS` points (mean below the threshold)."""
    runs = list(runs)
    table = success_table(runs, "greedy")
    rows = []
    for cond in CONDITIONS:
        if cond == "sft" or cond not in table:
            continue
        for env in SHALLOWER_SETS:
            stat = _paired(table, cond, "sft", env, episodes)
            if stat is not None:
                rows.append({"condition": cond, "set": env, "diff": stat,
                             "forgets": stat["mean"] < -FORGETTING_POINTS / 100})
    return rows


def leakage_table(runs: Iterable[Mapping]) -> dict[str, dict[str, dict[str, int]]]:
    """``{condition: {eval set: {stage: evaluated problems a training stage could have drawn}}}``,
    summed over seeds (runs without a leakage record are left out)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for run in runs:
        for env, hits in (run.get("leakage") or {}).items():
            slot = out.setdefault(run["condition"], {}).setdefault(env, {})
            for stage, n in hits.items():
                slot[stage] = slot.get(stage, 0) + n
    return out


def gains(runs: Iterable[Mapping], condition: str = "rl_compound", base: str = "sft",
          measure: str = "greedy") -> dict[str, dict]:
    """``{env_key: mean_se}`` of ``condition``'s ``measure`` minus ``base``'s, paired seed by seed."""
    table = success_table(runs, measure)
    if condition not in table or base not in table:
        return {}
    seeds = sorted(set(table[condition]) & set(table[base]))
    envs = sorted(set.intersection(*(set(table[condition][s]) & set(table[base][s]) for s in seeds))) if seeds else []
    return {e: mean_se([table[condition][s][e] - table[base][s][e] for s in seeds]) for e in envs}
