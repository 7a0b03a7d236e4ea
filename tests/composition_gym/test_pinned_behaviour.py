"""Behaviour pins: the episodes of every v0 id are unchanged by refactoring.

For each id, 50 seeded episodes under the expert and 50 under a seeded random-valid-token agent
are hashed (observations, rewards, terminations and the final info).  The hashes below were
recorded before the "one owner per concept" refactor; a change in any of them means an episode
changed, which for a ``-v0`` id is a breaking change (bump the version instead).
"""

from __future__ import annotations

import hashlib
import json

import gymnasium as gym
import numpy as np
import pytest

import composition_gym  # noqa: F401

EPISODES = 50

PINNED: dict[str, str] = {
    "composition_gym/Compose-L3-v0@expert": "1aee09f402016afc",
    "composition_gym/Compose-L3-v0@random": "5943dca87801556d",
    "composition_gym/Compose-RL-L3-v0@expert": "96824cad661ac544",
    "composition_gym/Compose-RL-L3-v0@random": "9556ec08a46be6c7",
    "composition_gym/Atomic-L1-v0@expert": "eab33886a28e41b7",
    "composition_gym/Atomic-L1-v0@random": "fedc22fdcc2e1a51",
    "composition_gym/OOD-Unseen-L3-v0@expert": "b9bd329c508f927a",
    "composition_gym/OOD-Unseen-L3-v0@random": "6b2ef2ed5e93be44",
    "composition_gym/OOD-Depth-L4-v0@expert": "40b99490bf236ab1",
    "composition_gym/OOD-Depth-L4-v0@random": "1b81ea72c308d487",
    "composition_gym/Pairs-ID-L3-v0@expert": "cf6400fb65315872",
    "composition_gym/Pairs-ID-L3-v0@random": "e2a03af5aad0d795",
    "composition_gym/Pairs-OOD-L3-v0@expert": "ff6cc78e94790307",
    "composition_gym/Pairs-OOD-L3-v0@random": "1b443f468042b803",
    "composition_gym/RoutingSkill-ID-L3-v0@expert": "cc8eb7a74fbb8b96",
    "composition_gym/RoutingSkill-ID-L3-v0@random": "0abb54f55c95009f",
    "composition_gym/RoutingSkill-OOD-L3-v0@expert": "55ec7cdba0742129",
    "composition_gym/RoutingSkill-OOD-L3-v0@random": "61768006b3115058",
    "composition_gym/Paper-Compose-L3-v0@expert": "bf175fa71cb52237",
    "composition_gym/Paper-Compose-L3-v0@random": "ceb23545ae2de468",
    "composition_gym/Paper-Compose-RL-L3-v0@expert": "ff4764a12bba9450",
    "composition_gym/Paper-Compose-RL-L3-v0@random": "2bd485048fd154c5",
    "composition_gym/Paper-Atomic-L1-v0@expert": "5c5a035ceb57534d",
    "composition_gym/Paper-Atomic-L1-v0@random": "cf993c03f6cdfb15",
    "composition_gym/Paper-OOD-Unseen-L3-v0@expert": "19a40d4ad303de5f",
    "composition_gym/Paper-OOD-Unseen-L3-v0@random": "5be1f98ce6806132",
    "composition_gym/Paper-OOD-Depth-L4-v0@expert": "130a4ebf04d26d96",
    "composition_gym/Paper-OOD-Depth-L4-v0@random": "5c27b79e5500c4b9",
    "composition_gym/Paper-Pairs-ID-L3-v0@expert": "6872f23242213640",
    "composition_gym/Paper-Pairs-ID-L3-v0@random": "afbb9d15b26d47fe",
    "composition_gym/Paper-Pairs-OOD-L3-v0@expert": "50dbd328aa0e7a8a",
    "composition_gym/Paper-Pairs-OOD-L3-v0@random": "a35d1113a8173126",
    "composition_gym/Paper-RoutingSkill-ID-L3-v0@expert": "98f8f2c4c5042ecc",
    "composition_gym/Paper-RoutingSkill-ID-L3-v0@random": "ce7d11eb904dad50",
    "composition_gym/Paper-RoutingSkill-OOD-L3-v0@expert": "89ee71f45e3128c5",
    "composition_gym/Paper-RoutingSkill-OOD-L3-v0@random": "eba48870549900ab",
}


# The final-info keys that existed when the pins were recorded: keys added later (additive
# information) do not break a pin, a changed value does.
FINAL_KEYS = ("cascade", "prompt", "answer", "is_success", "malformed", "diagnosis", "trace")
STEP_KEYS = ("step", "routing", "skill", "expected", "generated", "correct", "tags_correct")


def _final_info_text(info: dict) -> str:
    keep = {k: info[k] for k in FINAL_KEYS}
    keep["cascade"] = info["cascade"].key()
    keep["diagnosis"] = [{k: d[k] for k in STEP_KEYS if k in d} for d in info["diagnosis"]]
    return json.dumps(keep, sort_keys=True, default=str)


def episodes_hash(env_id: str, agent: str, **kwargs) -> str:
    """A digest of 50 seeded episodes of ``env_id`` (made with ``kwargs``) played by ``agent``
    (``expert`` or ``random``)."""
    env = gym.make(env_id, **kwargs)
    h = hashlib.sha256()
    rng = np.random.default_rng(12345)
    for ep in range(EPISODES):
        obs, info = env.reset(seed=1000 + ep)
        h.update(obs.tobytes())
        done = False
        while not done:
            if agent == "expert":
                a = int(env.unwrapped.expert_action())
            else:
                a = int(rng.choice(np.flatnonzero(info["action_mask"])))
            obs, reward, term, trunc, info = env.step(a)
            h.update(obs.tobytes())
            h.update(np.float64(reward).tobytes())
            h.update(bytes([term, trunc]))
            done = term or trunc
        h.update(_final_info_text(info).encode())
    env.close()
    return h.hexdigest()[:16]


@pytest.mark.parametrize("key", sorted(PINNED) or ["none"])
def test_episodes_unchanged(key):
    if key == "none":
        pytest.skip("no pins recorded")
    env_id, agent = key.rsplit("@", 1)
    assert episodes_hash(env_id, agent) == PINNED[key]


#: The prompt formats other than ``nested`` (added after v1, behind a kwarg): pinned when added.
PINNED_PROMPT_FORMATS: dict[str, str] = {
    "composition_gym/Compose-L1to3-v1@pipeline@expert": "d8dbda91f13ee5c4",
    "composition_gym/OOD-Depth-L4-v1@pipeline@expert": "9538a3a6ef83e25f",
    "composition_gym/Compose-L1to3-v1@pipeline@random": "a42604464d3d2f46",
    "composition_gym/OOD-Depth-L4-v1@pipeline@random": "fb282186a84eea30",
    "composition_gym/Compose-L1to3-v1@reversed@expert": "9ee5d7084459bac1",
    "composition_gym/OOD-Depth-L4-v1@reversed@expert": "5180c3fae09e059b",
    "composition_gym/Compose-L1to3-v1@reversed@random": "537c84076eedd150",
    "composition_gym/OOD-Depth-L4-v1@reversed@random": "41242ca92f144f45",
}


@pytest.mark.parametrize("key", sorted(PINNED_PROMPT_FORMATS))
def test_prompt_format_episodes_unchanged(key):
    env_id, fmt, agent = key.split("@")
    assert episodes_hash(env_id, agent, prompt_format=fmt) == PINNED_PROMPT_FORMATS[key]
