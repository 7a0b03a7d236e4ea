"""Checkpoints shipped inside the package, loadable offline: ``composition_gym.agents.pretrained("small")``.

Each name ``n`` is two files here: ``n.pt`` (a :meth:`TransformerLM.save` checkpoint) and
``n.json`` (how it was made: env id, recipe, seed, date, held-out greedy success).  They start
RL, evaluation and diagnostics in seconds; the BC acceptance test still trains from scratch.
"""

from __future__ import annotations

import json
import os
from typing import Any

from composition_gym.agents.transformer import TransformerLM

_HERE = os.path.dirname(os.path.abspath(__file__))


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(f[:-3] for f in os.listdir(_HERE) if f.endswith(".pt"))


def pretrained_info(name: str = "small") -> dict[str, Any]:
    """The metadata of checkpoint ``name`` (env id, recipe, seed, date, greedy success)."""
    with open(_path(name, ".json")) as f:
        return json.load(f)


def pretrained(name: str = "small", device: str = "cpu") -> TransformerLM:
    """The shipped :class:`TransformerLM` ``name`` (offline, from the installed package), in eval mode.

    Raises:
        ValueError: on an unknown name (the message lists the shipped ones).
    """
    return TransformerLM.load(_path(name, ".pt"), map_location=device).eval()


def _path(name: str, ext: str) -> str:
    if name not in available():
        raise ValueError(f"no pretrained checkpoint {name!r}; shipped: {available()}")
    return os.path.join(_HERE, name + ext)


__all__ = ["available", "pretrained", "pretrained_info"]
