"""What a model has seen in training (its profile's skills, routings and letters), and the check
that refuses to evaluate it on an env beyond that: a small-profile model on ``Paper-`` ids scored
0 % without a word.

Behavior cloning stores the summary with the model (``TransformerLM.trained_on``, saved in its
checkpoint); :func:`check_profile` runs where evaluation starts (every rollout and sampling call).
A model that does not know what it saw (``trained_on`` is ``None``) is not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composition_gym.agents.sampling import make_vec
from composition_gym.registration import short_name


def profile_summary(profile: Any) -> dict[str, Any]:
    """What a model trained on ``profile`` has seen: its name, skills, routings and letters
    (stored with a :class:`TransformerLM` as ``trained_on`` by behavior cloning)."""
    return {"profile": profile.name, "skills": sorted(profile.skills), "routings": sorted(profile.routings),
            "alphabet": "".join(sorted(profile.alphabet))}


def merge_profiles(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary covering several (a model trained on the ids of several profiles)."""
    return {"profile": "+".join(dict.fromkeys(s["profile"] for s in summaries)),
            "skills": sorted({k for s in summaries for k in s["skills"]}),
            "routings": sorted({k for s in summaries for k in s["routings"]}),
            "alphabet": "".join(sorted({c for s in summaries for c in s["alphabet"]}))}


def check_profile(agent: Any, venv: Any, env_id: str) -> None:
    """Refuse a language model on an env whose modules or letters it never saw in training (a
    small-profile model on ``Paper-`` ids scored 0 % without a word)."""
    trained = getattr(getattr(agent, "lm", None), "trained_on", None)
    profile = getattr(venv, "profile", None)
    if not trained or profile is None:
        return
    need = profile_summary(profile)
    unseen = {k: sorted(set(need[k]) - set(trained[k])) for k in ("skills", "routings", "alphabet")}
    unseen = {k: v for k, v in unseen.items() if v}
    if unseen:
        what = "; ".join(f"{len(v)} {k[:-1] if k != 'alphabet' else 'letter'}(s): {', '.join(v[:4])}"
                         + (", ..." if len(v) > 4 else "") for k, v in unseen.items())
        raise ValueError(f"the model was trained on profile {trained['profile']!r} but {short_name(env_id)} is profile "
                         f"{profile.name!r}, with modules and letters it never saw ({what}): evaluate it on "
                         f"its own profile's ids")


def trained_on(ids: Sequence[str]) -> dict[str, Any]:
    """What a model trained on ``ids`` has seen (profile, skills, routings, letters): stored with
    the model, so that evaluation refuses envs beyond it."""
    summaries = []
    for e in ids:
        venv = make_vec(e, 1)
        summaries.append(profile_summary(venv.profile))
        venv.close()
    return merge_profiles(summaries)


__all__ = ["check_profile", "merge_profiles", "profile_summary", "trained_on"]
