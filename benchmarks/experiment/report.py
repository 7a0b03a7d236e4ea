"""Render reproduction results: a markdown table beside the paper's numbers, and a PNG figure.

Both read the JSON document that :func:`composition_gym.benchmarks.experiment.reproduce.reproduce` writes (``meta``,
``runs``, ``summary``, ``verdicts``), so a saved result can be re-rendered without re-training:
``python -m composition_gym.benchmarks.experiment.report benchmarks/results/reproduce.json`` (which also recomputes the
statistics from the runs).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from composition_gym.benchmarks.experiment import statistics
from composition_gym.benchmarks.experiment.protocol import GRPO_SET_BY_CELL
from composition_gym.benchmarks.experiment.claims import (CLAIM_LABELS, CLAIMS, CONDITIONS, EVAL_LABELS, FORGETTING_POINTS,
                                                          MEASURES, PAPER_OOD_L4)


def _pct(stat: Mapping | None) -> str:
    """``"42.0 ± 3.1"`` (percent) from a :func:`~composition_gym.benchmarks.experiment.statistics.mean_se` dict."""
    if stat is None:
        return "–"
    se = "n/a" if stat["se"] is None else f"{100 * stat['se']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {se}"


def _settings(meta: Mapping) -> list[str]:
    """One line with the trainer and transformer settings the runs used (agents' defaults + budget)."""
    defaults = meta.get("agents_defaults")
    if not defaults:
        return []
    budget = meta["budget"]
    ppo = budget.get("ppo", {})
    model = {**defaults["transformer"], **{k: v for k, v in meta.get("cell", {}).items() if k == "d_model" and v}}
    # The cell sets these per run: the budget's own values were never used.
    grpo = {k: v for k, v in (budget.get("grpo") or {}).items() if k not in GRPO_SET_BY_CELL}
    return [(f"- group-relative RL: {', '.join(f'{k}={v}' for k, v in grpo.items())} (iterations, process "
             "reward and replay: the cell's); " if grpo else "- ")
            + f"MaskablePPO: {', '.join(f'{k}={v}' for k, v in ppo.items())}; transformer: "
            f"{model['n_layers']} layers, d_model={model['d_model']}"]


def _cell_line(meta: Mapping) -> list[str]:
    cell = meta.get("cell")
    if not cell:
        return []
    return [f"- cell: {', '.join(f'{k}={v}' for k, v in cell.items() if v is not None)}; environments "
            f"`{meta.get('version', 'v1')}`: " + ", ".join(f"{k}=`{v}`" for k, v in meta.get("eval_envs", {}).items())]


def _measures_table(doc: Mapping) -> list[str]:
    """Every condition x evaluation set: greedy / sampled / pass@k / all-steps-correct (v2 runs)."""
    by_measure = doc.get("summary_by_measure")
    if not by_measure:
        return []
    k = doc["meta"]["budget"].get("samples", "k")
    envs = sorted({e for m in by_measure.values() for c in m.values() for e in c}, key=list(EVAL_LABELS).index)
    lines = [f"## Every measure (greedy / sampled / pass@{k} / all steps correct, %)", "",
             "| condition | " + " | ".join(EVAL_LABELS[e] for e in envs) + " |", "|" + "---|" * (len(envs) + 1)]
    for cond in CONDITIONS:
        if cond not in by_measure["greedy"]:
            continue
        cells = []
        for e in envs:
            vals = [by_measure[m].get(cond, {}).get(e) for m in MEASURES]
            cells.append(" / ".join("–" if v is None else f"{100 * v['mean']:.1f}" for v in vals))
        lines.append(f"| {CONDITIONS[cond].label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _diagnostics_table(doc: Mapping) -> list[str]:
    """Module diagnostics of each condition, seed by seed (rows: ``compgym diagnose``'s comparison rows)."""
    runs = [r for r in doc["runs"] if r.get("diagnostics")]
    if not runs:
        return []
    lines = ["", "## Module diagnostics per condition", "",
             "Error anatomy (first wrong step: wrong module / wrong execution / other, in %), linear probes "
             "of the skill, routing and step index per layer (fit on seen compositions), and the attention "
             "share on each step's own call per layer (`compgym diagnose`; shares in %).", ""]
    for seed in sorted({r["seed"] for r in runs}):
        of_seed = [r for r in runs if r["seed"] == seed]
        names = [CONDITIONS[r["condition"]].label for r in of_seed]
        rows = list(dict.fromkeys(k for r in of_seed for k in r["diagnostics"]))
        lines += [f"Seed {seed}:", "", "| measure | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        lines += ["| " + " | ".join([row, *(r["diagnostics"].get(row, "–") for r in of_seed)]) + " |" for row in rows]
        lines.append("")
    return lines


def _forgetting_table(doc: Mapping) -> list[str]:
    """Each arm's greedy success minus SFT's on the shallower sets (what RL elsewhere must not cost)."""
    rows = doc.get("forgetting")
    if not rows:
        return []
    sets = list(dict.fromkeys(r["set"] for r in rows))
    lines = ["", f"## What each arm costs on the sets SFT covered (greedy, points vs SFT; ✗: more than "
             f"{FORGETTING_POINTS:g} points lost on average)", "",
             "| condition | " + " | ".join(EVAL_LABELS[s] for s in sets) + " |", "|" + "---|" * (len(sets) + 1)]
    for cond in dict.fromkeys(r["condition"] for r in rows):
        by_set = {r["set"]: r for r in rows if r["condition"] == cond}
        cells = [(_pct(by_set[s]["diff"]) + (" ✗" if by_set[s]["forgets"] else "")) if s in by_set else "–"
                 for s in sets]
        lines.append(f"| {CONDITIONS[cond].label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _first_fail_table(doc: Mapping, solved: float = 0.5) -> list[str]:
    """Which step each condition's greedy answer gets wrong first, averaged over seeds, on every set
    whose problems SFT solves less than a ``solved`` share of (the sets where an arm can move it)."""
    by_env = {env: shares for env, shares in (doc.get("first_fail") or {}).items()
              if shares.get("sft") and shares["sft"].get("none", 0.0) < solved}
    if not by_env:
        return []
    lines = ["", "## Which step fails first (greedy, % of problems, mean over seeds)", ""]
    for env, shares in by_env.items():
        steps = sorted({k for s in shares.values() for k in s if k != "none"}, key=int)
        lines += [f"{EVAL_LABELS.get(env, env)}:", "", "| condition | all right | " + " | ".join(
            f"step {k}" for k in steps) + " |", "|" + "---|" * (len(steps) + 2)]
        for cond, s in shares.items():
            lines.append(f"| {CONDITIONS[cond].label} | " + " | ".join(
                f"{100 * s.get(k, 0.0):.1f}" for k in ("none", *steps)) + " |")
        lines.append("")
    return lines


def _leakage_table(doc: Mapping) -> list[str]:
    """Evaluated problems that a training stage could have drawn (by cascade key), summed over seeds."""
    leak = doc.get("leakage")
    if not leak:
        return []
    nonzero = {(c, e): hits for c, by_env in leak.items() for e, hits in by_env.items() if any(hits.values())}
    lines = ["", "## Leakage check", "",
             "Every evaluated problem's cascade was tested against the support of every training stage of its run "
             "(prior, SFT, the arm's own set)."]
    if not nonzero:
        return lines + [" No evaluated problem of any set could have been drawn in training.", ""]
    lines += [" Sets where some could (they are not out of distribution for that condition):", "",
              "| condition | set | problems a stage could have drawn (summed over seeds) |", "|---|---|---|"]
    for (cond, env), hits in nonzero.items():
        lines.append(f"| {CONDITIONS[cond].label} | {EVAL_LABELS.get(env, env)} | "
                     + ", ".join(f"{k}: {v}" for k, v in hits.items() if v) + " |")
    return lines + [""]


def markdown(doc: Mapping) -> str:
    """The results document as markdown: provenance, one table per claim, then the verdicts."""
    meta, summary = doc["meta"], doc["summary"]
    seeds = meta["seeds"]
    lines = [
        "# Reproducing the paper's claims",
        "",
        f"- date: {meta['date']}",
        f"- commit: `{meta['commit']}`" + (" (uncommitted changes)" if meta.get("dirty") else ""),
        f"- command: `{meta['command']}`",
        f"- profile: `{meta['profile']}`, budget: `{meta['budget_name']}` "
        f"({', '.join(f'{k}={v}' for k, v in meta['budget'].items() if not isinstance(v, dict))})",
        *_cell_line(meta),
        *_settings(meta),
        f"- seeds: {len(seeds)} ({', '.join(map(str, seeds))}); success in %, mean ± standard error over seeds; "
        f"{meta['budget']['eval_episodes']} evaluation episodes per environment and run",
        f"- wall time: {meta['wall_time_s'] / 60:.1f} min with {meta['workers']} worker process(es)"
        + (f" ({meta['backend']} backend; {meta['run_seconds_total'] / 60:.1f} min summed over runs, "
           "earlier sessions of a resumed command included)" if "run_seconds_total" in meta else ""),
        "",
    ]
    if len(seeds) < 3:
        lines += [f"**Fewer than 3 seeds ({len(seeds)}): a plumbing run, not the protocol of the reproduction.**", ""]
    for key, claim in CLAIMS.items():
        envs = [e for e in claim["envs"] if any(e in summary.get(c, {}) for c in claim["conditions"])]
        header = ["condition", *(EVAL_LABELS[e] for e in envs)]
        if key == "claim2":
            header.append("paper, OOD L=4")
        lines += [f"## {claim['title']}", "", f"Paper: {claim['paper']}.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cond in claim["conditions"]:
            if cond not in summary:
                continue
            row = [CONDITIONS[cond].label, *(_pct(summary[cond].get(e)) for e in envs)]
            if key == "claim2":
                row.append(f"{PAPER_OOD_L4[cond]:.1f}" if cond in PAPER_OOD_L4 else "–")
            lines.append("| " + " | ".join(row) + " |")
        gains = doc.get("gains", {})
        if key == "claim1" and gains:
            row = ["RL gain over SFT", *(_pct(gains.get(e)) for e in envs)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += _measures_table(doc)
    lines += ["## Verdicts", "",
              "Paired over seeds (same BC start, same evaluation problems); the standard error combines the "
              "spread over seeds and the binomial error of the evaluation episodes; a difference counts as "
              "*supported* / *contradicted* beyond ±2 standard errors, else *inconclusive*.", "",
              "| claim | comparison | difference (points) | verdict |", "|---|---|---|---|"]
    for v in doc["verdicts"]:
        lines.append(f"| {CLAIM_LABELS[v['claim']]} | {v['comparison']} | {_pct(v['diff'])} | {v['verdict']} |")
    if doc.get("verdicts_pass_at_k"):
        lines += ["", "The same comparisons on pass@k (does RL widen what the policy can sample, or only "
                  "sharpen it?):", "", "| claim | comparison | difference (points) | verdict |", "|---|---|---|---|"]
        for v in doc["verdicts_pass_at_k"]:
            lines.append(f"| {CLAIM_LABELS[v['claim']]} | {v['comparison']} | {_pct(v['diff'])} | {v['verdict']} |")
    lines += _forgetting_table(doc)
    lines += _first_fail_table(doc)
    lines += _leakage_table(doc)
    lines += _diagnostics_table(doc)
    checks = doc.get("checks", {})
    if checks:
        lines += ["", "Checks: " + "; ".join(f"{k} = {v}" for k, v in checks.items()) + "."]
    return "\n".join(lines) + "\n"


def figure(doc: Mapping, path: str | Path) -> Path:
    """Write a bar chart, one panel per claim's table (error bars = SE), to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI or over ssh
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    fig, axes = plt.subplots(1, len(CLAIMS), figsize=(5.2 * len(CLAIMS), 5.0), constrained_layout=True)
    colors = {"sft": "#9e9e9e", "rl_atomic": "#f4a261", "rl_compound": "#2a9d8f", "rl_disjoint": "#264653",
              "ppo_compound": "#e76f51", "sft_matched": "#8d99ae"}
    for ax, (key, claim) in zip(axes, CLAIMS.items()):
        conds = [c for c in claim["conditions"] if c in summary]
        envs = [e for e in claim["envs"] if any(e in summary[c] for c in conds)]
        width = 0.8 / max(1, len(conds) + (key == "claim2"))
        for i, cond in enumerate(conds):
            xs = [j + (i - (len(conds) - 1) / 2) * width for j in range(len(envs))]
            stats = [summary[cond].get(e) for e in envs]
            means = [100 * s["mean"] if s else 0.0 for s in stats]
            errs = [100 * (s["se"] or 0.0) if s else 0.0 for s in stats]
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=CONDITIONS[cond].label, color=colors[cond])
        if key == "claim2" and "ood_depth" in envs:
            # The paper's numbers as hollow markers over our OOD L=4 bars.
            j = envs.index("ood_depth")
            for i, cond in enumerate(conds):
                x = j + (i - (len(conds) - 1) / 2) * width
                if cond not in PAPER_OOD_L4:
                    continue
                ax.plot([x], [PAPER_OOD_L4[cond]], marker="D", mfc="none", mec="black", ls="none",
                        label="paper (OOD L=4)" if i == 0 else None)
        ax.set_xticks(range(len(envs)), [EVAL_LABELS[e].replace(" (", "\n(") for e in envs])
        ax.set_ylim(0, 100)
        ax.set_ylabel("success (%)")
        ax.set_title(claim["short"], fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    meta = doc["meta"]
    fig.suptitle(f"composition-gym, profile {meta['profile']}, {len(meta['seeds'])} seeds, "
                 f"commit {meta['commit'][:10]}, {meta['date'][:10]}", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------- the sweep
def _quantities(doc: Mapping) -> list[tuple[str, str]]:
    """The heatmap's columns: ``(ood set, "reach" | "headroom" | an arm)``, in a fixed order."""
    arms = [a for a in doc["meta"]["arms"] if a != "sft"]
    sets = list(dict.fromkeys(env for row in doc["table"] for env in row["sets"]))
    return [(env, q) for env in sets for q in ("reach", "headroom", *arms)]


def _value(row: Mapping, env: str, quantity: str) -> Mapping | None:
    entry = row["sets"].get(env)
    if entry is None:
        return None
    if quantity == "reach":
        return entry.get("sft_pass_at_k")
    return entry["sft_headroom"] if quantity == "headroom" else entry["gains"].get(quantity)


def _row_label(doc: Mapping, row: Mapping) -> str:
    """A row's name: the values of the grid's varying axes (the whole tag when nothing varies)."""
    axes = doc["meta"].get("axes") or []
    if not axes:
        return row["tag"]
    return ", ".join(f"{a}={row['cell'][a]}" for a in axes)


def _first_fail_text(shares: Mapping[str, float] | None) -> str:
    if not shares:
        return "–"
    return " ".join(f"{k}:{100 * v:.0f}" for k, v in shares.items())


def sweep_markdown(doc: Mapping) -> str:
    """The whole sweep grid as markdown: one row per cell, per OOD set: reach, headroom, every arm's gains."""
    meta = doc["meta"]
    k = meta["budget"]["samples"]
    arms = [a for a in meta["arms"] if a != "sft"]
    axes = meta.get("axes", [])
    axes_text = ", ".join(f"{a}={meta['grid'][a]}" for a in axes)
    others = ", ".join(f"{a}={v}" for a, v in meta.get("base_cell", {}).items() if a not in axes)
    lines = [
        "# Sweep: where does RL after SFT widen, and where does it only sharpen?", "",
        f"- date: {meta['date']}; commit `{meta['commit']}`" + (" (uncommitted changes)" if meta.get("dirty") else ""),
        f"- command: `{meta['command']}`",
        f"- profile `{meta['profile']}`, environments `{meta['version']}`, budget `{meta['budget_name']}` "
        f"({', '.join(f'{k_}={v}' for k_, v in meta['budget'].items() if not isinstance(v, dict))})",
        f"- axes: {axes_text}; other knobs as the base cell ({others}); arms {arms}; seeds {meta['seeds']}",
        f"- {meta['runs']} runs, {meta['run_seconds_total'] / 3600:.2f} h summed over runs; this session "
        f"{meta['wall_time_s'] / 60:.1f} min ({meta['backend']} backend, {meta['workers']} workers)", "",
        "Every cell the command asked for is shown.  Points, mean ± SE over seeds (paired; the SE includes the "
        f"evaluation's binomial error).  *reach* = SFT's pass@{k} (can SFT sample the answer at all?); "
        f"*headroom* = SFT's pass@{k} − greedy; an arm's columns = its greedy / sampled / pass@{k} success − SFT's "
        "on the same problems, ✓ beyond +2 SE and ✗ beyond −2 SE; *first fail* = share of SFT's greedy answers "
        "whose first wrong step is 1, 2, … (none: all right); *min* = the cell's run time summed over runs.", "",
    ]
    for env in dict.fromkeys(e for row in doc["table"] for e in row["sets"]):
        rows = [r for r in doc["table"] if env in r["sets"]]
        header = ["cell", "SFT greedy", "reach", "headroom", "first fail (SFT)"]
        for arm in arms:
            header += [f"{arm} greedy", "sampled", f"pass@{k}"]
        lines += [f"## {EVAL_LABELS.get(env, env)}", "", "| " + " | ".join(header) + " | min |",
                  "|" + "---|" * (len(header) + 1)]
        for row in rows:
            entry = row["sets"][env]
            cells = [_row_label(doc, row), _pct(entry["sft_greedy"]), _pct(entry.get("sft_pass_at_k")),
                     _pct(entry["sft_headroom"]), _first_fail_text(entry.get("first_fail", {}).get("sft"))]
            for arm in arms:
                for key in (arm, f"{arm}:sampled", f"{arm}:pass_at_k"):
                    stat = entry["gains"].get(key)
                    mark = {"supported": " ✓", "contradicted": " ✗"}.get(stat.get("verdict", "") if stat else "", "")
                    cells.append(_pct(stat) + mark)
            lines.append("| " + " | ".join(cells) + f" | {row.get('seconds', 0) / 60:.0f} |")
        lines.append("")
    return "\n".join(lines)


def sweep_heatmap(doc: Mapping, path: str | Path) -> Path:
    """Write the sweep as a heatmap PNG: cells (rows) x (OOD set, headroom or arm gain) (columns), in points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols, rows = _quantities(doc), doc["table"]
    grid = np.full((len(rows), len(cols)), np.nan)
    for i, row in enumerate(rows):
        for j, (env, q) in enumerate(cols):
            stat = _value(row, env, q)
            if stat is not None:
                grid[i, j] = 100 * stat["mean"]
    lim = max(5.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 5.0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 1.2 + 0.35 * len(rows)), constrained_layout=True)
    image = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, j in zip(*np.nonzero(np.isfinite(grid))):
        ax.text(j, i, f"{grid[i, j]:.1f}".replace("-0.0", "0.0"), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), [f"{env}\n{q}" for env, q in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [_row_label(doc, r) for r in rows], fontsize=7)
    fig.colorbar(image, ax=ax, label="points")  # reach = pass@k; headroom = pass@k − greedy; an arm: its greedy gain
    meta = doc["meta"]
    n_seeds = len(meta["seeds"])
    ax.set_title(f"sweep, profile {meta['profile']}, {n_seeds} seed{'s' * (n_seeds != 1)}, "
                 f"commit {meta['commit'][:10]}", fontsize=9)
    return _save(fig, path, bbox_inches="tight")


def regime_figure(doc: Mapping, path: str | Path, env: str = "ood_unseen_l4", arm: str = "rl_disjoint",
                  known: str = "ood_unseen") -> Path | None:
    """The knob that separates "widens" from "sharpens", one point per cell: the ``arm``'s greedy gain
    over SFT on ``env`` (± 2 SE) against what SFT already does — its pass@k on ``env`` (is the answer
    within sampling reach?) and its greedy success on ``known``, a set at the depth SFT trained on
    (does SFT execute the steps it was taught?).  ``None`` (and no file) when no cell has both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for row in doc["table"]:
        entry = row["sets"].get(env)
        gain = entry and entry["gains"].get(arm)
        if not gain or not entry.get("sft_pass_at_k"):
            continue
        at_known = row["sets"].get(known, {}).get("sft_greedy", {}).get("mean", float("nan"))
        points.append((_row_label(doc, row), entry["sft_pass_at_k"]["mean"], at_known, gain["mean"], gain["se"] or 0.0))
    if not points:
        return None
    k = doc["meta"]["budget"]["samples"]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2), constrained_layout=True)
    markers = "osD^v<>pP*Xh"
    for ax, (xi, xlabel) in zip(axes, ((1, f"SFT pass@{k} on {EVAL_LABELS.get(env, env)} (reach, %)"),
                                       (2, f"SFT greedy success on {EVAL_LABELS.get(known, known)} (%)"))):
        for i, (label, *values) in enumerate(points):
            x, y, se = 100 * values[xi - 1], 100 * values[2], 100 * values[3]
            ax.errorbar([x], [y], yerr=[2 * se], fmt=markers[i % len(markers)], color=f"C{i % 10}", capsize=3,
                        label=label if xi == 1 else None)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhline(10, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{arm} gain over SFT (greedy, points)")
    fig.legend(loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    meta = doc["meta"]
    fig.suptitle(f"When does RL widen? {EVAL_LABELS.get(env, env)}, one point per cell (± 2 SE); "
                 f"profile {meta['profile']}, "
                 f"{len(meta['seeds'])} seed(s), commit {meta['commit'][:10]}", fontsize=9)
    return _save(fig, path)


def _save(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` (its folder made as needed) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, **kwargs)
    plt.close(fig)
    return path


def recompute(doc: dict) -> dict:
    """``doc`` with its summary, gains and verdicts recomputed from its runs (current statistics)."""
    return {**doc, **statistics.statistics(doc["runs"], doc["meta"]["budget"].get("eval_episodes"))}


def main(argv: list[str] | None = None) -> int:
    """Re-render the markdown table and the figure from a saved results JSON (statistics recomputed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="reproduce.json written by benchmarks.reproduce")
    args = parser.parse_args(argv)
    doc = recompute(json.loads(args.results.read_text()))
    args.results.write_text(json.dumps(doc, indent=1) + "\n")
    args.results.with_suffix(".md").write_text(markdown(doc))
    figure(doc, args.results.with_suffix(".png"))
    print(f"wrote {args.results.with_suffix('.md')} and {args.results.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
