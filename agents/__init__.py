"""Agents for composition-gym: a transformer policy, behavior cloning, group-relative RL, SB3 PPO
wiring, plug-in agents and evaluation.

The public names below are imported on first use (PEP 562), for start-up speed: the command line
and the experiment's settings import :mod:`~composition_gym.agents.settings` without loading torch
or Stable-Baselines3.  Saved SB3 models name their policy class by its module
(``composition_gym.agents.policy``), so ``PPO.load`` / ``MaskablePPO.load`` find it without
``custom_objects``.  The shipped checkpoints live in the subpackage
:mod:`~composition_gym.agents.checkpoints`; :func:`pretrained` loads one.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Agent", "LMAgent", "RandomAgent", "SB3Agent", "TextAgent", "trace_so_far"), "agent"),
    "behavior_cloning": "bc",
    "CompositionEvalCallback": "callbacks",
    **dict.fromkeys(("EvalReport", "evaluate"), "evaluation"),
    **dict.fromkeys(("MaskableTransformerPolicy", "TransformerActorCriticPolicy", "TransformerExtractor",
                     "lm_from_policy", "load_lm_into_policy"), "policy"),
    **dict.fromkeys(("bc_then_ppo", "load_model", "train_ppo"), "ppo"),
    "train_grpo": "grpo",
    **dict.fromkeys(("BCConfig", "GRPOConfig", "PPOConfig"), "settings"),
    "pretrained": "checkpoints",
    "TRAINERS": "trainers",
    **dict.fromkeys(("TransformerConfig", "TransformerLM"), "transformer"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
