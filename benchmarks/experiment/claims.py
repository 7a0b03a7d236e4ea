"""The paper's three claims as data: which conditions each one compares, on which environments.

Kong, Liu et al. (ICML 2026) claim that (1) RL after SFT helps unseen compositions much more than
seen ones, (2) RL on compound traces generalizes better than RL on atomic modules, and (3) SFT
covering every module followed by RL on compositions *beyond* the SFT support beats RL on the SFT
support itself.  Every claim is a comparison between *conditions* (how the agent was trained)
measured on *evaluation environments*; this module names both, summarises per-seed results
(mean ± standard error), turns paired differences into a verdict, and checks claim 3's premise on
the registered supports (:func:`support_checks`).  It knows nothing about training: :mod:`composition_gym.benchmarks.experiment.reproduce` produces the runs, :mod:`composition_gym.benchmarks.experiment.report` renders them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from typing import Any



@dataclass(frozen=True)
class Condition:
    """One training condition: SFT, optionally followed by a trainer on one of its family's sets.

    Attributes:
        key: short name used in the JSON, the sweep's ``arms`` axis and the figure.
        label: human-readable name for tables.
        trainer: ``None`` (SFT alone) or a name of :data:`composition_gym.agents.trainers.TRAINERS`
            (``"grpo"``: the group-relative trainer; ``"maskable_ppo"``: SB3 MaskablePPO, the
            baseline; ``"sft"``: behavior cloning continued, the matched-data control), always with
            the same budget in episodes (problems, for ``"sft"``).
        rl_set: which set of the family it trains on (``"atomic"``, ``"sft_set"``, ``"beyond"``).
    """

    key: str
    label: str
    trainer: str | None
    rl_set: str | None


Set = tuple[str, dict]
"""A set of problems: a registered preset and the env kwargs that change it (``depth=4`` …)."""


@dataclass(frozen=True)
class Family:
    """A split family: what SFT trains on, what each arm trains on, and where all are evaluated.

    The OOD evaluation sets are OOD *relative to the SFT set* of the same family, so the family is
    one unit: SFT on ``Compose-L1to3`` (hash split of whole cascades) makes the unseen split at
    every depth the OOD sets; SFT on ``RoutingSkill-ID-L1to3`` (held-out routing x skill pairs, let
    in at the ``exposure`` rate) makes ``RoutingSkill-OOD-L3`` the OOD set.

    Attributes:
        key, label: names in tables.
        splits: the split family of :data:`composition_gym.supports.SPLIT_FAMILIES` it uses.
        sft: the preset of the SFT coverage set (depth-mixed, every atomic module).
        rl: the training preset of the ``atomic`` and ``sft_set`` arms.
        beyond: the set the ``beyond`` arms (RL beyond the SFT support, and its matched-data
            control) train on, per :attr:`~.cells.Cell.rl_target`; a target missing here means
            those arms do not apply to this family and target (they are left out, and say so).
        evals: evaluation set by eval key (:data:`EVAL_LABELS`).
        exposure: the presets that take the ``exposure`` kwarg, with the same value on the training
            and the evaluation side (the env then splits the held-out cascades into an exposable
            half and an evaluation half, disjoint by construction).
        evaluation_half: the OOD presets that, when RL trains on the exposable half
            (``rl_target="pairs"``), are evaluated on the evaluation half (``exposure`` > 0).
    """

    key: str
    label: str
    splits: str
    sft: str
    rl: dict[str, str]
    beyond: dict[str, Set]
    evals: dict[str, Set]
    exposure: tuple[str, ...] = ()
    evaluation_half: tuple[str, ...] = ()

    def set_of(self, name: str, rl_target: str = "L3") -> Set:
        """``(preset, env kwargs)`` of the set ``name``: ``"sft"``, an arm's set or an eval key."""
        if name == "sft":
            return self.sft, {}
        if name == "beyond":
            if rl_target not in self.beyond:
                raise ValueError(f"family {self.key!r} has no beyond set for rl_target {rl_target!r}; "
                                 f"it has {sorted(self.beyond)}")
            return self.beyond[rl_target]
        if name in self.rl:
            return self.rl[name], {}
        if name in self.evals:
            return self.evals[name]
        raise ValueError(f"family {self.key!r} has no set {name!r}")


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


#: The environments' version the protocol uses (v1: identifiable problems, depth-mixed SFT sets).
ENV_VERSION = "v1"
#: Trace formats the protocol trains with (``answer`` writes no intermediates to learn modules from).
TRAIN_TRACE_FORMATS = ("values", "tagged")
#: What the beyond arm trains on (:attr:`~.cells.Cell.rl_target`): compositions of the RL split at
#: L=3, deeper ones (depths 1-4, weighted by :data:`L4_DEPTH_WEIGHTS`), or the exposable half of the
#: held-out pairs (mixed with the family's own L=3 problems at the rate :data:`PAIRS_RL_EXPOSURE`).
RL_TARGETS = ("L3", "L4", "pairs")
#: Depth weights (L=1..4) of the L4 target: half the problems one level beyond SFT, the rest at the
#: depths SFT covered, so RL does not forget them (docs/results: the forgetting probes).
L4_DEPTH_WEIGHTS = (0.1, 0.1, 0.3, 0.5)
PAIRS_RL_EXPOSURE = 0.5
_L4 = {"depth": [1, 4], "depth_weights": list(L4_DEPTH_WEIGHTS)}
FAMILIES: dict[str, Family] = {
    f.key: f
    for f in (
        Family("compose", "whole cascades held out (hash split)", "hash", sft="Compose-L1to3",
               rl={"atomic": "Atomic-L1", "sft_set": "Compose-L3"},
               beyond={"L3": ("Compose-RL-L3", {}), "L4": ("Compose-RL-L1to3", _L4)},
               evals={"id": ("Compose-L3", {}), "rl_set": ("Compose-RL-L3", {}),
                      "ood_unseen": ("OOD-Unseen-L3", {}), "ood_unseen_l4": ("OOD-Unseen-L3", {"depth": 4}),
                      "ood_unseen_l5": ("OOD-Unseen-L3", {"depth": 5}), "ood_depth": ("OOD-Depth-L4", {}),
                      "atomic": ("Atomic-L1", {})}),
        Family("routing_skill", "routing x skill pairs held out", "routing_skill", sft="RoutingSkill-ID-L1to3",
               # No L3 beyond set: every L=3 composition outside this SFT support uses a held-out
               # pair, i.e. lies in the evaluation split itself; "pairs" trains on its other half.
               rl={"atomic": "Atomic-L1", "sft_set": "RoutingSkill-ID-L1to3"},
               beyond={"L4": ("RoutingSkill-ID-L1to3", _L4),
                       "pairs": ("RoutingSkill-ID-L1to3", {"depth": 3, "depth_weights": None,
                                                           "exposure": PAIRS_RL_EXPOSURE})},
               evals={"id": ("RoutingSkill-ID-L1to3", {}), "ood_rs": ("RoutingSkill-OOD-L3", {}),
                      "ood_rs_l4": ("RoutingSkill-OOD-L3", {"depth": 4}), "ood_depth": ("OOD-Depth-L4", {}),
                      "atomic": ("Atomic-L1", {})},
               exposure=("RoutingSkill-ID-L1to3", "RoutingSkill-OOD-L3"), evaluation_half=("RoutingSkill-OOD-L3",)),
        Family("pairs", "consecutive skill pairs held out", "pairs", sft="Pairs-ID-L1to3",
               rl={"atomic": "Atomic-L1", "sft_set": "Pairs-ID-L1to3"},
               beyond={"L4": ("Pairs-ID-L1to3", _L4),
                       "pairs": ("Pairs-ID-L1to3", {"depth": 3, "depth_weights": None,
                                                    "exposure": PAIRS_RL_EXPOSURE})},
               evals={"id": ("Pairs-ID-L1to3", {}), "ood_pairs": ("Pairs-OOD-L3", {}),
                      "ood_pairs_l4": ("Pairs-OOD-L3", {"depth": 4}), "ood_depth": ("OOD-Depth-L4", {}),
                      "atomic": ("Atomic-L1", {})},
               exposure=("Pairs-ID-L1to3", "Pairs-OOD-L3"), evaluation_half=("Pairs-OOD-L3",)),
    )
}
FAMILY_KEYS = tuple(FAMILIES)
EVAL_LABELS: dict[str, str] = {
    "id": "ID (SFT set)",
    "rl_set": "RL set (L=3)",
    "ood_unseen": "OOD unseen (L=3)",
    "ood_unseen_l4": "OOD unseen (L=4)",
    "ood_unseen_l5": "OOD unseen (L=5)",
    "ood_rs": "OOD routing x skill (L=3)",
    "ood_rs_l4": "OOD routing x skill (L=4)",
    "ood_pairs": "OOD skill pairs (L=3)",
    "ood_pairs_l4": "OOD skill pairs (L=4)",
    "ood_depth": "L=4, all splits",
    "atomic": "Atomic (L=1)",
}
#: What each evaluation measures per problem: greedy success, sampled success (one sample at the
#: evaluation temperature), pass@k (any of k samples), and all-steps-correct (greedy answer right
#: *and* every intermediate right, so skipping a step cannot look like success).
MEASURES: dict[str, str] = {"greedy": "greedy", "sampled": "sampled", "pass_at_k": "pass@k",
                            "all_steps": "all steps correct"}
CONDITIONS: dict[str, Condition] = {
    c.key: c
    for c in (
        Condition("sft", "SFT", None, None),
        Condition("rl_atomic", "SFT + RL atomic (L=1)", "grpo", "atomic"),
        Condition("rl_compound", "SFT + RL compound, SFT compositions", "grpo", "sft_set"),
        Condition("rl_disjoint", "SFT + RL compound, beyond the SFT support", "grpo", "beyond"),
        Condition("ppo_compound", "SFT + MaskablePPO compound, SFT compositions (SB3 baseline)", "maskable_ppo",
                  "sft_set"),
        Condition("sft_matched", "SFT continued on the beyond arm's problems (matched-data control)", "sft",
                  "beyond"),
    )
}
#: Which conditions and eval envs each claim's table shows.
CLAIMS: dict[str, dict] = {
    "claim1": {
        "title": "Claim 1: SFT vs SFT + RL (RL on the SFT compositions)",
        "short": "Claim 1: SFT vs SFT + RL",
        "conditions": ("sft", "rl_compound", "ppo_compound"),
        "envs": ("id", "ood_unseen", "ood_rs", "ood_depth"),
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
    "beyond": {
        "title": "RL beyond the SFT support (the cell's rl_target), its controls, and what it forgets",
        "short": "RL beyond the SFT support",
        "conditions": ("sft", "rl_atomic", "rl_compound", "rl_disjoint", "sft_matched"),
        "envs": ("atomic", "id", "ood_unseen", "ood_unseen_l4", "ood_unseen_l5", "ood_rs", "ood_rs_l4", "ood_pairs",
                 "ood_pairs_l4"),
        "paper": "the effective protocol: SFT covers every atomic module, RL trains on compositions beyond the SFT "
                 "support (here read as deeper ones, or held-out pairs); OOD L=4: SFT 4.8 %, RL compound 42.6 %",
    },
}
#: How verdict rows name their claim in tables.
CLAIM_LABELS = {"claim1": "1", "claim2": "2", "claim3": "3", "control": "control"}
#: The paper's headline numbers (OOD compound traces at L = 4, success in %), claim 2.
PAPER_OOD_L4: dict[str, float] = {"sft": 4.8, "rl_atomic": 14.8, "rl_compound": 42.6}
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("claim1", "rl_compound", "sft", "gain:ood_unseen-id",
               "RL gain on unseen L=3 compositions > RL gain on seen (ID) ones"),
    Comparison("claim1", "rl_compound", "sft", "gain:ood_depth-id",
               "RL gain at OOD depth L=4 > RL gain on seen (ID) compositions"),
    Comparison("claim1", "rl_compound", "sft", "gain:ood_rs-id",
               "RL gain on held-out routing x skill pairs > RL gain on seen (ID) compositions"),
    Comparison("claim1", "rl_compound", "sft", "ood_rs", "SFT + RL > SFT on held-out routing x skill pairs"),
    Comparison("claim1", "rl_compound", "sft", "ood_unseen", "SFT + RL > SFT on unseen L=3 compositions"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_depth",
               "RL compound > RL atomic on OOD depth L=4"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_unseen", "RL compound > RL atomic on unseen L=3"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_rs", "RL compound > RL atomic on held-out routing x skill"),
    Comparison("claim2", "rl_atomic", "sft", "ood_depth", "RL atomic > SFT on OOD depth L=4"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_unseen",
               "RL on disjoint set > RL on SFT set, OOD unseen L=3"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_depth",
               "RL on disjoint set > RL on SFT set, OOD depth L=4"),
    # RL beyond the SFT support (rl_target L4 or pairs): does it widen, and is compound the reason?
    Comparison("claim1", "rl_disjoint", "sft", "ood_unseen_l4",
               "SFT + RL beyond the SFT support > SFT on unseen L=4 compositions (never trained)"),
    Comparison("claim1", "rl_disjoint", "sft", "ood_unseen_l5",
               "SFT + RL beyond the SFT support > SFT on unseen L=5 compositions (never trained)"),
    Comparison("claim1", "rl_disjoint", "sft", "ood_rs", "SFT + RL beyond the SFT support > SFT on held-out "
               "routing x skill pairs"),
    Comparison("claim1", "rl_disjoint", "sft", "ood_pairs", "SFT + RL beyond the SFT support > SFT on held-out "
               "skill pairs"),
    Comparison("claim2", "rl_disjoint", "rl_atomic", "ood_unseen_l4", "RL compound (beyond) > RL atomic on unseen L=4"),
    Comparison("claim2", "rl_disjoint", "rl_atomic", "ood_rs", "RL compound (beyond) > RL atomic on held-out "
               "routing x skill pairs"),
    Comparison("claim2", "rl_disjoint", "rl_atomic", "ood_pairs", "RL compound (beyond) > RL atomic on held-out "
               "skill pairs"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_unseen_l4",
               "RL beyond the SFT support > RL on the SFT set, unseen L=4"),
    # Not a claim of the paper: at equal problems, does reward alone match demonstrations?
    Comparison("control", "rl_disjoint", "sft_matched", "ood_unseen_l4",
               "RL from reward > SFT from demonstrations on the same problems, unseen L=4"),
    Comparison("control", "rl_disjoint", "sft_matched", "ood_rs",
               "RL from reward > SFT from demonstrations on the same problems, held-out routing x skill"),
    Comparison("control", "rl_disjoint", "sft_matched", "ood_pairs",
               "RL from reward > SFT from demonstrations on the same problems, held-out skill pairs"),
)
#: The sets a beyond arm must not forget (at most :data:`FORGETTING_POINTS` lost against SFT).
SHALLOWER_SETS = ("atomic", "id", "rl_set", "ood_unseen")
FORGETTING_POINTS = 2.0
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
