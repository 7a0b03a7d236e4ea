"""What an episode's ``info`` holds, one owner for the single env and the vector env.

``info_mode="full"`` (default): the reset and final infos of :func:`reset_info` and
:func:`final_info` (the hidden cascade, the prompt, the answer; at the end the verdict and the
per-step diagnosis).  ``info_mode="arrays"``: :func:`array_info`, the same keys of fixed shape at
every reset and step, for collectors that batch infos into tensors (TorchRL, Tianshou-style loops).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from composition_gym import tokens as T
from composition_gym.cascade import Problem, Score


def reset_info(problem: Problem, prompt_text: str) -> dict[str, Any]:
    """The episode facts every reset and final ``info`` holds (besides ``action_mask``)."""
    return {"cascade": problem.cascade, "prompt": prompt_text, "answer": problem.answer}


def final_info(problem: Problem, prompt_text: str, score: Score, trace_text: str) -> dict[str, Any]:
    """The final ``info`` of an episode (besides ``action_mask``), from its :class:`Score`."""
    return {
        **reset_info(problem, prompt_text),
        "is_success": score.is_success,
        "all_steps_correct": score.all_steps_correct,
        "malformed": score.malformed,
        "diagnosis": score.diagnosis,
        "trace": trace_text,
    }


INFO_MODES = ("full", "arrays")


def array_info(mask: np.ndarray, problem: Problem, closed_correct: list[bool], score: Score | None,
               info_depth: int) -> dict[str, Any]:
    """The ``info_mode="arrays"`` info: the same keys of fixed shape and dtype at every reset and step.

    ``step_correct[k]`` is whether trace segment ``k`` is closed and equals its reference value;
    module ids are token ids (:mod:`composition_gym.tokens`), ``<pad>`` (0) past the depth; the
    outcome flags are ``False`` until the episode ends.
    """
    depth = problem.cascade.depth
    routing_ids = np.zeros(info_depth, dtype=np.int64)
    skill_ids = np.zeros(info_depth, dtype=np.int64)
    routing_ids[:depth] = [T.ROUTING_IDS[r] for r in problem.cascade.routings]
    skill_ids[:depth] = [T.SKILL_IDS[s] for s in problem.cascade.skills]
    step_correct = np.zeros(info_depth, dtype=bool)
    step_correct[: len(closed_correct)] = closed_correct
    done = score is not None
    return {
        "action_mask": mask.copy(),
        "is_success": done and score.is_success,
        "all_steps_correct": done and score.all_steps_correct,
        "malformed": done and score.malformed,
        "depth": depth,
        "steps_written": len(closed_correct),
        "step_correct": step_correct,
        "routing_ids": routing_ids,
        "skill_ids": skill_ids,
    }


def episode_status(score: Score | None, written: int, segments: int) -> str:
    """The status line of a rendered frame."""
    if score is None:
        return f"writing segment {min(written + 1, segments)} of {segments}"
    verdict = "success" if score.is_success else "malformed" if score.malformed else "wrong answer"
    steps = sum(d["correct"] for d in score.diagnosis)
    return f"done: {verdict} ({steps} of {len(score.diagnosis)} steps right)"


__all__ = ["INFO_MODES", "array_info", "episode_status", "final_info", "reset_info"]
