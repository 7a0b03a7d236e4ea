"""Why RL helps or does not: does a model identify the latent modules?

* :mod:`~composition_gym.agents.diagnostics.anatomy`: the first wrong step of each failed episode
  and which other module (skill, routing, operand) reproduces what was written — no model internals;
* :mod:`~composition_gym.agents.diagnostics.probes`: linear probes of each step's skill, routing and
  index on the residual stream, per layer, fit on ID and scored on ID and OOD traces;
* :mod:`~composition_gym.agents.diagnostics.attention`: attention mass from each step's tokens to
  the nested call that implements it, per layer and head;
* :mod:`~composition_gym.agents.diagnostics.report`: all three for one model (:func:`diagnose`),
  side by side for several (table, JSON, figure) and as TensorBoard scalars (:func:`write_scalars`);
* :mod:`~composition_gym.agents.diagnostics.cli`: ``compgym diagnose``.

Nothing heavy is imported here: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Anatomy": "anatomy", "EpisodeSteps": "anatomy", "StepError": "anatomy", "analyse": "anatomy",
    "error_anatomy": "anatomy", "anatomy_of_episodes": "anatomy", "classify_step": "anatomy",
    "LinearProbe": "probes", "run_probes": "probes",
    "attention_to_calls": "attention", "call_owners": "attention",
    "TraceSample": "traces", "expert_traces": "traces", "agent_traces": "traces",
    "DiagnoseConfig": "report", "diagnose": "report", "comparison_table": "report", "save_figure": "report",
    "save_json": "report", "summary_scalars": "report", "write_scalars": "report", "log_to_tensorboard": "report",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


__all__ = sorted(_EXPORTS)
