"""Checkpoints shipped inside the package, loadable offline: ``composition_gym.agents.pretrained("small")``.

Each name ``n`` is two files here: ``n.pt`` (a :meth:`TransformerLM.save` checkpoint) and
``n.json`` (how it was made: env id, recipe, seed, date, held-out greedy success).  They start
RL, evaluation and diagnostics in seconds; the BC acceptance test still trains from scratch.
"""

from __future__ import annotations

import json
import os
from typing import Any

from composition_gym.agents.settings import BC_PRESETS
from composition_gym.agents.transformer import TransformerLM
from composition_gym.agents.bc import DEFAULT_CONFIG, behavior_cloning
from composition_gym.agents.coverage import profile_summary
from composition_gym.agents.sampling import make_vec
from composition_gym.registration import resolve_env_id

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
    lm = TransformerLM.load(_path(name, ".pt"), map_location=device).eval()
    if lm.trained_on is None:  # shipped before checkpoints recorded it: the metadata names the env

        venv = make_vec(pretrained_info(name)["env_id"], 1)
        lm.trained_on = profile_summary(venv.profile)
        venv.close()
    return lm


def make_pretrained(env_id: str, name: str = "small", seed: int = 0, out_dir: str = _HERE,
                    eval_episodes: int = 400) -> dict[str, Any]:
    """Re-make checkpoint ``name``: the default BC recipe on ``env_id``, then ``name.pt`` + ``name.json``.

    The recipe is the small profile's default, BC preset :data:`RECIPE` (20,000 expert episodes,
    19.2 epochs, the default model); about 10 CPU minutes on one idle thread.  Returns the metadata.
    """
    import dataclasses
    import datetime


    env_id = resolve_env_id(env_id)
    lm, stats = behavior_cloning(env_id, settings=RECIPE, config=DEFAULT_CONFIG, seed=seed,
                                 eval_episodes=eval_episodes, progress=False)
    recipe = {"preset": RECIPE, **dataclasses.asdict(BC_PRESETS[RECIPE]), "config": DEFAULT_CONFIG.to_dict()}
    info = {"env_id": env_id, "recipe": recipe, "seed": seed,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "heldout_greedy_success": stats["heldout_success"], "heldout_episodes": eval_episodes,
            "bc_stats": stats}
    lm.save(os.path.join(out_dir, name + ".pt"))
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


#: The behavior-cloning preset of the shipped checkpoints (:data:`~composition_gym.agents.settings.BC_PRESETS`).
RECIPE = "demo"


def _path(name: str, ext: str) -> str:
    if name not in available():
        raise ValueError(f"no pretrained checkpoint {name!r}; shipped: {available()}")
    return os.path.join(_HERE, name + ext)


__all__ = ["RECIPE", "available", "make_pretrained", "pretrained", "pretrained_info"]
