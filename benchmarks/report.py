"""Render reproduction results: a markdown table beside the paper's numbers, and a PNG figure.

Both read the JSON document that :func:`composition_gym.benchmarks.reproduce.reproduce` writes (``meta``,
``runs``, ``summary``, ``verdicts``), so a saved result can be re-rendered without re-training:
``python -m composition_gym.benchmarks.report benchmarks/results/reproduce.json`` (which also recomputes the
statistics from the runs).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from composition_gym.benchmarks import claims
from composition_gym.benchmarks.claims import CLAIMS, CONDITIONS, EVAL_LABELS, PAPER_OOD_L4


def _pct(stat: Mapping | None) -> str:
    """``"42.0 ± 3.1"`` (percent) from a :func:`~composition_gym.benchmarks.claims.mean_se` dict."""
    if stat is None:
        return "–"
    se = "n/a" if stat["se"] is None else f"{100 * stat['se']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {se}"


def _settings(meta: Mapping) -> list[str]:
    """One line with the PPO and transformer settings the runs used (agents' defaults + budget)."""
    defaults = meta.get("agents_defaults")
    if not defaults:
        return []
    ppo = {**defaults["ppo_finetune_kwargs"], **meta["budget"].get("ppo_kwargs", {})}
    model = defaults["transformer"]
    return [f"- PPO (MaskablePPO): {', '.join(f'{k}={v}' for k, v in ppo.items())}; transformer: "
            f"{model['n_layers']} layers, d_model={model['d_model']}"]


def markdown(doc: Mapping) -> str:
    """The results document as markdown: provenance, one table per claim, then the verdicts."""
    meta, summary = doc["meta"], doc["summary"]
    seeds = meta["seeds"]
    lines = [
        "# Reproducing the paper's three claims",
        "",
        f"- date: {meta['date']}",
        f"- commit: `{meta['commit']}`" + (" (uncommitted changes)" if meta.get("dirty") else ""),
        f"- command: `{meta['command']}`",
        f"- profile: `{meta['profile']}`, budget: `{meta['budget_name']}` "
        f"({', '.join(f'{k}={v}' for k, v in meta['budget'].items() if not isinstance(v, dict))})",
        *_settings(meta),
        f"- seeds: {len(seeds)} ({', '.join(map(str, seeds))}); success in %, mean ± standard error over seeds; "
        f"{meta['budget']['eval_episodes']} evaluation episodes per environment and run",
        f"- wall time: {meta['wall_time_s'] / 60:.1f} min with {meta['workers']} worker process(es)",
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
                row.append(f"{PAPER_OOD_L4[cond]:.1f}")
            lines.append("| " + " | ".join(row) + " |")
        gains = doc.get("gains", {})
        if key == "claim1" and gains:
            row = ["RL gain over SFT", *(_pct(gains.get(e)) for e in envs)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Verdicts", "",
              "Paired over seeds (same BC start, same evaluation problems); the standard error combines the "
              "spread over seeds and the binomial error of the evaluation episodes; a difference counts as "
              "*supported* / *contradicted* beyond ±2 standard errors, else *inconclusive*.", "",
              "| claim | comparison | difference (points) | verdict |", "|---|---|---|---|"]
    for v in doc["verdicts"]:
        lines.append(f"| {v['claim'][-1]} | {v['comparison']} | {_pct(v['diff'])} | {v['verdict']} |")
    checks = doc.get("checks", {})
    if checks:
        lines += ["", "Checks: " + "; ".join(f"{k} = {v}" for k, v in checks.items()) + "."]
    return "\n".join(lines) + "\n"


def figure(doc: Mapping, path: str | Path) -> Path:
    """Write a three-panel bar chart (one panel per claim, error bars = SE) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI or over ssh
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    fig, axes = plt.subplots(1, len(CLAIMS), figsize=(5.2 * len(CLAIMS), 5.0), constrained_layout=True)
    colors = {"sft": "#9e9e9e", "rl_atomic": "#f4a261", "rl_compound": "#2a9d8f", "rl_disjoint": "#264653"}
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recompute(doc: dict) -> dict:
    """``doc`` with its summary, gains and verdicts recomputed from its runs (current statistics)."""
    runs = doc["runs"]
    episodes = doc["meta"]["budget"].get("eval_episodes")
    return {**doc, "summary": claims.summarize(runs), "gains": claims.gains(runs),
            "verdicts": claims.verdicts(runs, episodes)}


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
