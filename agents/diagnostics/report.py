"""One model's diagnosis (anatomy, probes, attention) and the side-by-side views of several.

:class:`DiagnoseConfig` is also ``compgym diagnose``'s options, so this module imports the
read-outs (torch) inside the functions that run them, for start-up speed.

:func:`diagnose` runs the three read-outs with one :class:`DiagnoseConfig`; :func:`summary_scalars`
flattens a result into named numbers for TensorBoard (:func:`write_scalars`);
:func:`comparison_table` and :func:`save_figure` show several results side by side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from composition_gym.config import Config, bounded
from composition_gym.registration import resolve_env_id, resolve_env_ids, short_name, suite


def _default_envs() -> list[str]:
    return suite("id") + suite("ood")


@dataclass(frozen=True)
class DiagnoseConfig(Config):
    """What :func:`diagnose` measures, and on how many episodes."""

    env_ids: tuple[str, ...] = ()
    """Envs of the anatomy, the probe test sets and the attention read-out (default: the ID then OOD suites)."""
    fit_env: str = "Compose-L3"
    """The ID env whose traces train the probes."""
    episodes: int = bounded(200, ge=1)
    """Anatomy episodes per env (the agent's own greedy rollouts)."""
    probe_episodes: int = bounded(300, ge=2)
    """Probe training traces (fit_env)."""
    probe_test_episodes: int = bounded(200, ge=1)
    """Probe test traces per env."""
    attention_episodes: int = bounded(100, ge=1)
    """Traces per env for the attention read-out."""
    source: Literal["expert", "model"] = "expert"
    """Traces read by probes and attention: the teacher-forced reference or the model's own rollouts."""
    seed: int = 0
    """Episode i resets with seed + i (probe test sets with seed + HELDOUT + i)."""
    probes: bool = True
    """Linear probes of skill, routing and step per layer (a transformer only)."""
    attention: bool = True
    """Attention to each step's own call (a transformer only)."""

    def resolved(self) -> DiagnoseConfig:
        """The same settings with every id resolved to its registered name (the suites when none given)."""
        return self.replace(env_ids=tuple(resolve_env_ids(list(self.env_ids) or _default_envs())),
                            fit_env=resolve_env_id(self.fit_env))


def as_lm(model: Any) -> Any | None:
    """The :class:`TransformerLM` inside ``model`` (itself, or an SB3 model's transformer policy), else ``None``."""
    from composition_gym.agents.transformer import TransformerLM

    if isinstance(model, TransformerLM):
        return model
    policy = getattr(model, "policy", None)
    if policy is not None:
        from composition_gym.agents.policy import lm_from_policy

        try:
            return lm_from_policy(policy)
        except (TypeError, ValueError, AttributeError, IndexError):
            return None
    return None


def diagnose(model: Any, config: DiagnoseConfig | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """Anatomy of ``model``'s errors, and (for a transformer) probes and attention to the call.

    Args:
        model: a :class:`TransformerLM`, an SB3 model or any agent (anatomy only for agents that
            hold no transformer).
        config: what to measure (default :class:`DiagnoseConfig`).
        threads: torch threads (``None``: the project's policy,
            :func:`~composition_gym.agents.settings.resolve_threads`); restored afterwards.

    Returns a JSON-able dict: ``config``, ``anatomy`` (:meth:`Anatomy.to_dict`), ``probes``
    (:func:`~composition_gym.agents.diagnostics.probes.run_probes`, or ``None``) and
    ``attention`` (per env short name, :func:`attention_to_calls` plus ``summary``, or ``None``).
    """
    from composition_gym.agents.settings import torch_threads

    config = (config or DiagnoseConfig()).resolved()
    with torch_threads(threads):
        return _diagnose(model, config)


def _diagnose(model: Any, config: DiagnoseConfig) -> dict[str, Any]:
    from composition_gym.agents.diagnostics.anatomy import error_anatomy

    lm = as_lm(model)
    out: dict[str, Any] = {"config": asdict(config), "probes": None, "attention": None}
    out["anatomy"] = error_anatomy(lm if lm is not None else model, config.env_ids, config.episodes, config.seed).to_dict()
    if lm is not None and config.probes:
        from composition_gym.agents.diagnostics.probes import run_probes

        out["probes"] = run_probes(lm, config.fit_env, config.env_ids, episodes=config.probe_episodes,
                                   test_episodes=config.probe_test_episodes, seed=config.seed, source=config.source)
    if lm is not None and config.attention:
        from composition_gym.agents.diagnostics.attention import attention_to_calls, summarise
        from composition_gym.agents.diagnostics.traces import agent_traces, expert_traces

        out["attention"] = {}
        for e in config.env_ids:
            samples = (expert_traces(e, config.attention_episodes, config.seed) if config.source == "expert"
                       else agent_traces(lm, e, config.attention_episodes, config.seed))
            result = attention_to_calls(lm, samples)
            out["attention"][short_name(e)] = {**result, "summary": summarise(result)}
    return out


def summary_scalars(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of one :func:`diagnose` result, flat and named (``/``-separated)."""
    s: dict[str, float] = {}
    an = result["anatomy"]
    for env, row in an["by_env"].items():
        s[f"all_steps_correct/{env}"] = 1.0 - row["errors"] / row["n"] if row["n"] else float("nan")
        for c in ("wrong_module", "wrong_execution", "unexplained", "missing"):
            s[f"anatomy/{env}/{c}"] = row[c]
    for env, n in an["episodes"].items():  # envs without any error
        s.setdefault(f"all_steps_correct/{short_name(env)}", 1.0)
    for d, row in an["first_step"].items():
        s[f"first_step/L{d}/rate"] = row["rate"]
        for c in ("wrong_module", "wrong_execution", "unexplained", "missing"):
            s[f"first_step/L{d}/{c}"] = row[c]
    if result.get("probes"):
        for target, per_env in result["probes"]["acc"].items():
            for env, accs in per_env.items():
                for layer, acc in enumerate(accs):
                    s[f"probe/{target}/{env}/layer{layer}"] = acc
                s[f"probe/{target}/{env}/chance"] = result["probes"]["chance"][target][env]
    if result.get("attention"):
        for env, att in result["attention"].items():
            for layer, (mean, best) in enumerate(zip(att["summary"]["mean_head"], att["summary"]["best_head"])):
                s[f"attention/{env}/layer{layer + 1}/share_mean_head"] = mean
                s[f"attention/{env}/layer{layer + 1}/share_best_head"] = best
            s[f"attention/{env}/chance_share"] = att["chance_share"]
    return s


def write_scalars(writer: Any, result: dict[str, Any], step: int, prefix: str = "diag") -> None:
    """Write :func:`summary_scalars` to a TensorBoard ``SummaryWriter`` under ``prefix/`` (inside training)."""
    for name, value in summary_scalars(result).items():
        writer.add_scalar(f"{prefix}/{name}", value, step)


def log_to_tensorboard(writer: Any, model: Any, step: int, config: DiagnoseConfig | None = None) -> dict[str, Any]:
    """Inside training: :func:`diagnose` the current model and :func:`write_scalars` its numbers; returns the result.

    Keep ``config`` small there (e.g. ``episodes=50``): it runs greedy rollouts on every env.
    """
    result = diagnose(model, config)
    write_scalars(writer, result, step)
    return result


def comparison_rows(result: dict[str, Any]) -> dict[str, str]:
    """The comparison table's cells for one :func:`diagnose` result: ``{row label: text}``.

    Shares are percentages; per-layer rows list layer 0 (embeddings, probes) or 1 (attention) first.
    """
    def pct(v: float) -> str:
        return "-" if v != v else f"{100 * v:.0f}"

    rows: dict[str, str] = {}
    an = result["anatomy"]
    for env, n in an["episodes"].items():
        env = short_name(env)
        row = an["by_env"].get(env, {"errors": 0, "wrong_module": 0.0, "wrong_execution": 0.0, "unexplained": 0.0,
                                     "missing": 0.0})
        rows[f"all steps right {env}"] = pct(1 - row["errors"] / n)
        rows[f"1st error module/exec/other {env}"] = " / ".join(
            pct(row[c]) for c in ("wrong_module", "wrong_execution")) + f" / {pct(row['unexplained'] + row['missing'])}"
    for d, row in an["first_step"].items():
        rows[f"L={d} wrong at step 1 (module/exec/other)"] = (
            f"{pct(row['rate'])} ({pct(row['wrong_module'])}/{pct(row['wrong_execution'])}/"
            f"{pct(row['unexplained'] + row['missing'])})")
    for d, offsets in an.get("call_offsets", {}).items():
        rows[f"L={d} 1st errors reading call t+k (k: count)"] = ", ".join(f"{k}: {n}" for k, n in offsets.items())
    if result.get("probes"):
        p = result["probes"]
        for target, per_env in p["acc"].items():
            for env, accs in per_env.items():
                rows[f"probe {target} by layer {env}"] = " ".join(map(pct, accs)) + f" (chance {pct(p['chance'][target][env])})"
    if result.get("attention"):
        for env, att in result["attention"].items():
            rows[f"own-call share by layer {env}"] = (" ".join(map(pct, att["summary"]["best_head"]))
                                                      + f" (chance {pct(att['chance_share'])})")
    return rows


def comparison_table(results: dict[str, dict[str, Any]]) -> Any:
    """A rich ``Table``, one column per model (:func:`comparison_rows`; percentages, attention: best head)."""
    from rich.table import Table

    cells = {name: comparison_rows(r) for name, r in results.items()}
    keys = list(dict.fromkeys(k for c in cells.values() for k in c))
    table = Table(title="diagnostics (%)")
    table.add_column("measure", no_wrap=True)
    for name in results:
        table.add_column(name, justify="right")
    for k in keys:
        table.add_row(k, *[cells[n].get(k, "-") for n in results])
    return table


def save_json(results: dict[str, dict[str, Any]], path: str) -> None:
    """Write ``{model name: diagnose result}`` to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)


def _finish_layer_axis(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Integer layer ticks, labels, a [0, 1] share axis and a small legend."""
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6)


def save_figure(results: dict[str, dict[str, Any]], path: str) -> str:
    """One PNG, three panels: first-error anatomy per env, skill-probe accuracy by layer per env,
    attention share to the own call by layer per env (one line style per model).  Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = ["-", "--", ":", "-."]  # one line style per model
    colors = {"wrong_module": "tab:red", "wrong_execution": "tab:orange", "unexplained": "tab:gray",
              "missing": "tab:purple"}
    ax = axes[0]
    bars = [(name, short_name(e)) for name, r in results.items() for e in r["anatomy"]["episodes"]]
    lookup = {(name, env): row for name, r in results.items() for env, row in r["anatomy"]["by_env"].items()}
    bottoms = np.zeros(len(bars))
    for c, color in colors.items():
        vals = np.array([lookup.get(b, {}).get(c, 0.0) for b in bars])
        ax.bar(range(len(bars)), vals, bottom=bottoms, color=color, label=c.replace("_", " "))
        bottoms += vals
    labels = [e + (f"\n{n}" if len(results) > 1 else "") for n, e in bars]
    ax.set_xticks(range(len(bars)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("fraction of episodes")
    ax.set_title("first wrong step: what went wrong")
    ax.legend(fontsize=7)
    ax = axes[1]
    for m, (name, r) in enumerate(results.items()):
        if not r.get("probes"):
            continue
        for j, (env, accs) in enumerate(r["probes"]["acc"]["skill"].items()):
            ax.plot(range(len(accs)), accs, styles[m % 4], marker="o", color=f"C{j}",
                    label=env + (f" [{name}]" if len(results) > 1 else ""))
            ax.axhline(r["probes"]["chance"]["skill"][env], color=f"C{j}", lw=0.7, ls=":")
    _finish_layer_axis(ax, "layer (0 = embeddings)", "probe accuracy (dotted: chance)",
                       "skill probe at each step's opener (fit on ID)")
    ax = axes[2]
    for m, (name, r) in enumerate(results.items()):
        if not r.get("attention"):
            continue
        for j, (env, att) in enumerate(r["attention"].items()):
            best = att["summary"]["best_head"]
            ax.plot(range(1, len(best) + 1), best, styles[m % 4], marker="o", color=f"C{j}",
                    label=env + (f" [{name}]" if len(results) > 1 else ""))
            ax.axhline(att["chance_share"], color=f"C{j}", lw=0.7, ls=":")
    _finish_layer_axis(ax, "layer", "own call / all calls (best head)",
                       "attention to the step's own call (dotted: chance)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["DiagnoseConfig", "as_lm", "comparison_table", "diagnose", "save_figure", "save_json",
           "summary_scalars", "write_scalars", "comparison_rows", "log_to_tensorboard"]
