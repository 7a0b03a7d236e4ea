"""Saved models by path, for the command line and scripts: the one loader of every model kind.

It sits above the trainers in the data flow (an SB3 ``.zip`` is read by
:func:`~composition_gym.agents.ppo.load_model`, a shipped checkpoint by
:mod:`~composition_gym.agents.checkpoints`), so the agent protocol below it imports none of them.
"""

from __future__ import annotations

import os
from typing import Any

from composition_gym.agents.checkpoints import pretrained
from composition_gym.agents.ppo import load_model
from composition_gym.agents.settings import check_device
from composition_gym.agents.transformer import TransformerLM


def load_agent(path: str, device: str = "cpu") -> Any:
    """A saved model by path: an SB3 ``.zip`` (:func:`~composition_gym.agents.ppo.load_model`), a
    :class:`TransformerLM` checkpoint, or ``"pretrained"`` / ``"pretrained:NAME"`` (a checkpoint
    shipped in the package), on ``device``.  The one loader of the CLI's commands.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not a model of these kinds (one line naming it), or a device
            this machine does not have (checked once here, for every kind of model).
        TypeError: ``path`` or ``device`` is not a string.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a model path must be a string, got {type(path).__name__}")
    path = os.fspath(path)
    check_device(device)
    if path == "pretrained" or path.startswith("pretrained:"):
        return pretrained(path.partition(":")[2] or "small", device=device)
    if path.endswith(".zip"):
        return load_model(path, device=device)
    return TransformerLM.load(path, map_location=device)


__all__ = ["load_agent"]
