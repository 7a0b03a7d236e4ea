"""Registered ids: the v1 set, its kwargs and suites; v0 unchanged; names resolved with hints."""

import gymnasium as gym
import pytest

import composition_gym  # noqa: F401  (registers the ids)
from composition_gym.registration import (
    MIXED_DEPTH_WEIGHTS,
    ROLES,
    env_id,
    list_envs,
    resolve_env_id,
    short_name,
    suite,
)

V1_NAMES = ["Compose-L1to3", "Compose-L3", "Compose-RL-L1to3", "Compose-RL-L3", "Atomic-L1", "OOD-Unseen-L3",
            "OOD-Depth-L4", "Pairs-ID-L1to3", "Pairs-OOD-L3", "RoutingSkill-ID-L1to3", "RoutingSkill-OOD-L3"]
V0_NAMES = ["Compose-L3", "Compose-RL-L3", "Atomic-L1", "OOD-Unseen-L3", "OOD-Depth-L4", "Pairs-ID-L3",
            "Pairs-OOD-L3", "RoutingSkill-ID-L3", "RoutingSkill-OOD-L3"]


def test_v1_ids_are_registered_for_both_profiles():
    ids = [r["id"] for r in list_envs() if r["version"] == "v1"]
    assert ids == [f"composition_gym/{p}{n}-v1" for p in ("", "Paper-") for n in V1_NAMES]
    assert all(i in gym.registry for i in ids)


def test_v0_ids_keep_their_kwargs():
    rows = [r for r in list_envs() if r["version"] == "v0"]
    assert [short_name(r["id"]) for r in rows] == [f"{p}{n}-v0" for p in ("", "Paper-") for n in V0_NAMES]
    for r in rows:
        assert gym.spec(r["id"]).kwargs == {"profile": r["profile"], "split": r["split"], "depth": r["depth"]}


def test_v1_kwargs():
    spec = gym.spec("composition_gym/Compose-L1to3-v1")
    assert spec.kwargs == {"profile": "small", "split": "sft", "depth": [1, 3],
                           "depth_weights": list(MIXED_DEPTH_WEIGHTS), "identifiable": True, "share_atomic": True}
    assert gym.spec("composition_gym/Paper-OOD-Depth-L4-v1").kwargs == {
        "profile": "paper", "split": "all", "depth": 4, "identifiable": True, "share_atomic": True}
    assert abs(sum(MIXED_DEPTH_WEIGHTS) - 1) < 1e-12


def test_v1_suites():
    assert suite("id", version="v1") == [env_id(n, "small", "v1") for n in ("Compose-L3", "Compose-RL-L3", "Atomic-L1")]
    assert suite("ood", "paper", "v1") == [env_id(n, "paper", "v1") for n in ("OOD-Unseen-L3", "OOD-Depth-L4")]
    assert len(suite("all", version="v1")) == len(V1_NAMES)
    assert {r["role"] for r in list_envs()} == set(ROLES)
    # The defaults are the newest version (v1), as a short name resolves; v0 stays registered and pinned.
    assert suite("id") == suite("id", version="v1") and env_id("Compose-L3") == "composition_gym/Compose-L3-v1"
    assert suite("id", version="v0") == ["composition_gym/Compose-L3-v0", "composition_gym/Compose-RL-L3-v0"]


def test_resolve_names():
    assert resolve_env_id("Compose-L1to3") == "composition_gym/Compose-L1to3-v1"
    assert resolve_env_id("Compose-L3") == "composition_gym/Compose-L3-v1"  # the newest version
    assert resolve_env_id("Compose-L3-v0") == "composition_gym/Compose-L3-v0"  # namespace optional
    with pytest.raises(ValueError, match="did you mean 'composition_gym/Compose-L1to3-v1'"):
        resolve_env_id("Compose-L1to3-v2")


def test_make_without_namespace_is_gymnasiums_error():
    # Gymnasium looks names up in the default namespace only and offers no hook for a hint there
    # (docs/environment.md says so); resolve_env_id is the way to accept bare names.
    with pytest.raises(gym.error.NameNotFound):
        gym.make("Compose-L3-v0")
