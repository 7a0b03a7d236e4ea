"""The registered environment ids: named presets of :class:`~composition_gym.env.CompositionEnv`.

Each id is data (a row of :data:`PRESETS`), not a subclass.  Ids of the ``small`` profile are
unprefixed; the ``paper`` profile's carry ``Paper-``.  Roles: ``train`` ids are for SFT/RL,
``id`` evaluates seen compositions, ``ood`` never shares a cascade with its family's training ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

NAMESPACE = "composition_gym"
ENTRY_POINT = "composition_gym.env:CompositionEnv"
VECTOR_ENTRY_POINT = "composition_gym.vector:CompositionVectorEnv"


@dataclass(frozen=True)
class Preset:
    """One registered id: its name (without namespace/profile prefix), split, depth and purpose."""

    name: str
    split: str
    depth: str  # "train", "ood" or "atomic": resolved per profile
    role: str
    purpose: str


PRESETS: tuple[Preset, ...] = (
    Preset("Compose-L3", "sft", "train", "train", "compound traces at L=3, SFT composition set (seen compositions)"),
    Preset("Compose-RL-L3", "rl", "train", "train", "compound traces at L=3, RL composition set disjoint from SFT"),
    Preset("Atomic-L1", "all", "atomic", "train", "atomic modules in isolation (L=1)"),
    Preset("OOD-Unseen-L3", "unseen", "train", "ood", "unseen compositions at L=3 (hash family: never in SFT or RL sets)"),
    Preset("OOD-Depth-L4", "all", "ood", "ood", "deeper cascades, L=4 (never trained at this depth)"),
    Preset("Pairs-ID-L3", "pairs_id", "train", "train", "L=3 without held-out consecutive skill pairs"),
    Preset("Pairs-OOD-L3", "pairs_ood", "train", "ood", "L=3 with at least one held-out skill pair"),
    Preset("RoutingSkill-ID-L3", "routing_skill_id", "train", "train", "L=3 without held-out routing x skill pairs"),
    Preset("RoutingSkill-OOD-L3", "routing_skill_ood", "train", "ood", "L=3 with at least one held-out routing x skill pair"),
)
PROFILE_PREFIX = {"small": "", "paper": "Paper-"}
VERSION = "v0"


def _env_id(profile: str, preset: Preset) -> str:
    return f"{NAMESPACE}/{PROFILE_PREFIX[profile]}{preset.name}-{VERSION}"


def _kwargs(profile: str, preset: Preset) -> dict:
    from composition_gym.profiles import get_profile

    p = get_profile(profile)
    depth = {"train": p.train_depth, "ood": p.ood_depth, "atomic": 1}[preset.depth]
    return {"profile": profile, "split": preset.split, "depth": depth}


def list_envs() -> list[dict]:
    """Every registered id with its profile, split, depth, role and purpose."""
    rows = []
    for profile in PROFILE_PREFIX:
        for preset in PRESETS:
            kw = _kwargs(profile, preset)
            rows.append({"id": _env_id(profile, preset), **kw, "role": preset.role, "purpose": preset.purpose})
    return rows


def register_envs() -> None:
    """Register every id with string entry points (idempotent)."""
    for row in list_envs():
        if row["id"] in gym.registry:
            continue
        gym.register(
            id=row["id"],
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs={k: row[k] for k in ("profile", "split", "depth")},
        )


def ids_table() -> str:
    """The registered ids as a markdown table (the README renders it)."""
    rows = ["| id | profile | split | L | role | purpose |", "|---|---|---|---|---|---|"]
    for r in list_envs():
        rows.append(f"| `{r['id']}` | {r['profile']} | `{r['split']}` | {r['depth']} | {r['role']} | {r['purpose']} |")
    return "\n".join(rows)
