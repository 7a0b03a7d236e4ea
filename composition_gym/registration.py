"""The registered environment ids: named presets of :class:`~composition_gym.env.CompositionEnv`.

This module is the one owner of names: it builds every id from a profile and a preset
(:func:`env_id`), resolves what a user types (:func:`resolve_env_id`, with a "did you mean"
hint), shortens ids for tables and TensorBoard tags (:func:`short_name`) and returns the named
evaluation suites (:func:`suite`).  No other module parses or assembles id strings.

Each id is data (a row of :data:`PRESETS`), not a subclass.  Ids of the ``small`` profile are
unprefixed; the ``paper`` profile's carry ``Paper-``.  A preset's ``role`` says how the protocol
uses it: ``id`` ids hold the compositions a model trains on (the ``id`` suite), ``ood`` ids never
share a cascade with the training ids of their family (the ``ood`` suite), and ``family`` ids
belong to another split family (skill pairs, routing x skill, atomic): registered for
experiments of their own, they are in the ``all`` suite only; ``train`` ids are depth-mixed
training sets (``Compose-L1to3``), in the ``all`` suite only since their depths are evaluated one
by one by the ``id`` ids.

``-v1`` ids draw identifiable problems only, put every atomic module in the hash family's
training sets (``share_atomic``), and add the depth-mixed training sets; ``-v0`` ids are frozen.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass

import gymnasium as gym
from composition_gym.profiles import get_profile

NAMESPACE = "composition_gym"
ENTRY_POINT = "composition_gym.env:CompositionEnv"
VECTOR_ENTRY_POINT = "composition_gym.vector:CompositionVectorEnv"
ROLES = ("id", "ood", "family", "train")
SUITES = ("id", "ood", "all")
PROFILE_PREFIX = {"small": "", "paper": "Paper-"}
VERSIONS = ("v0", "v1")
#: The version :func:`env_id`, :func:`suite` and a short name (``Compose-L3``) resolve to: the newest.
NEWEST = VERSIONS[-1]
#: Depth weights of the depth-mixed (``"mixed"``, depths 1..train depth) v1 ids: half the problems
#: at the training depth, a fifth atomic (every module as a one-step problem).
MIXED_DEPTH_WEIGHTS = (0.2, 0.3, 0.5)
#: Kwargs every v1 id passes on top of profile, split and depth.
V1_KWARGS = {"identifiable": True, "share_atomic": True}


@dataclass(frozen=True)
class Preset:
    """One registered id: its name (without namespace/profile prefix), split, depth and purpose.

    ``depth`` is ``"train"``, ``"ood"``, ``"atomic"`` or ``"mixed"`` (1 to the training depth,
    weighted by :data:`MIXED_DEPTH_WEIGHTS`), resolved per profile; ``role`` is one of :data:`ROLES`.
    """

    name: str
    split: str
    depth: str
    role: str
    purpose: str
    version: str = "v0"


PRESETS: tuple[Preset, ...] = (
    Preset("Compose-L3", "sft", "train", "id", "compound traces at L=3, SFT composition set (seen compositions)"),
    Preset("Compose-RL-L3", "rl", "train", "id", "compound traces at L=3, RL composition set disjoint from SFT"),
    Preset("Atomic-L1", "all", "atomic", "family", "atomic modules in isolation (L=1)"),
    Preset("OOD-Unseen-L3", "unseen", "train", "ood", "unseen compositions at L=3 (hash family: never in SFT or RL sets)"),
    Preset("OOD-Depth-L4", "all", "ood", "ood", "deeper cascades, L=4 (never trained at this depth)"),
    Preset("Pairs-ID-L3", "pairs_id", "train", "family", "L=3 without held-out consecutive skill pairs"),
    Preset("Pairs-OOD-L3", "pairs_ood", "train", "family", "L=3 with at least one held-out skill pair"),
    Preset("RoutingSkill-ID-L3", "routing_skill_id", "train", "family", "L=3 without held-out routing x skill pairs"),
    Preset("RoutingSkill-OOD-L3", "routing_skill_ood", "train", "family", "L=3 with at least one held-out routing x skill pair"),
    # v1: identifiable problems; training sets mix depths 1-3 so L=1 is no new prompt shape.
    Preset("Compose-L1to3", "sft", "mixed", "train", "SFT composition set, depths 1-3 (weights .2/.3/.5; every atomic module at L=1)", "v1"),
    Preset("Compose-L3", "sft", "train", "id", "SFT composition set at L=3 (seen compositions)", "v1"),
    Preset("Compose-RL-L1to3", "rl", "mixed", "train", "RL composition set, depths 1-3, disjoint from SFT at L>=2", "v1"),
    Preset("Compose-RL-L3", "rl", "train", "id", "RL composition set at L=3, disjoint from SFT", "v1"),
    Preset("Atomic-L1", "all", "atomic", "id", "atomic modules in isolation (L=1; all in the L1to3 sets)", "v1"),
    Preset("OOD-Unseen-L3", "unseen", "train", "ood", "unseen compositions at L=3 (never in SFT or RL sets)", "v1"),
    Preset("OOD-Depth-L4", "all", "ood", "ood", "deeper cascades, L=4 (one level beyond training)", "v1"),
    Preset("Pairs-ID-L1to3", "pairs_id", "mixed", "family", "depths 1-3 without held-out skill pairs (exposure= shows some)", "v1"),
    Preset("Pairs-OOD-L3", "pairs_ood", "train", "family", "L=3 with a held-out skill pair (with exposure>0: the evaluation half)", "v1"),
    Preset("RoutingSkill-ID-L1to3", "routing_skill_id", "mixed", "family", "depths 1-3 without held-out routing x skill pairs (exposure= shows some)", "v1"),
    Preset("RoutingSkill-OOD-L3", "routing_skill_ood", "train", "family", "L=3 with a held-out routing x skill pair (with exposure>0: the evaluation half)", "v1"),
)


def _preset(name: str, version: str) -> Preset:
    for p in PRESETS:
        if p.name == name and p.version == version:
            return p
    known = sorted({f"{p.name}-{p.version}" for p in PRESETS})
    raise ValueError(f"unknown preset {name!r} at version {version!r}; known: {known}")


def env_id(preset: str, profile: str = "small", version: str = NEWEST) -> str:
    """The full id of ``preset`` for ``profile``, e.g. ``env_id("Compose-L3", "paper")`` is
    ``"composition_gym/Paper-Compose-L3-v1"`` (the newest version unless ``version`` says)."""
    if profile not in PROFILE_PREFIX:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILE_PREFIX)}")
    p = _preset(preset, version)
    return f"{NAMESPACE}/{PROFILE_PREFIX[profile]}{p.name}-{p.version}"


def _kwargs(profile: str, preset: Preset) -> dict:

    p = get_profile(profile)
    if preset.depth == "mixed":
        if p.train_depth != len(MIXED_DEPTH_WEIGHTS):
            raise ValueError(f"profile {profile!r}: MIXED_DEPTH_WEIGHTS has one weight per depth 1..{len(MIXED_DEPTH_WEIGHTS)}")
        kw = {"profile": profile, "split": preset.split, "depth": [1, p.train_depth],
              "depth_weights": list(MIXED_DEPTH_WEIGHTS)}
    else:
        depth = {"train": p.train_depth, "ood": p.ood_depth, "atomic": 1}[preset.depth]
        kw = {"profile": profile, "split": preset.split, "depth": depth}
    if preset.version == "v1":
        kw.update(V1_KWARGS)
    return kw


def list_envs() -> list[dict]:
    """Every registered id with its profile, split, depth, role, purpose and ``kwargs`` (what
    ``gym.make`` passes to the env; depth-mixed and v1 ids add ``depth_weights``,
    ``identifiable`` and ``share_atomic``)."""
    rows = []
    for version in VERSIONS:
        for profile in PROFILE_PREFIX:
            for preset in (p for p in PRESETS if p.version == version):
                kw = _kwargs(profile, preset)
                rows.append({"id": env_id(preset.name, profile, preset.version), **kw, "role": preset.role,
                             "purpose": preset.purpose, "version": preset.version, "kwargs": kw})
    return rows


def register_envs() -> None:
    """Register every id with string entry points (idempotent).

    ``-v0`` ids stay supported (frozen for reproducibility), so Gymnasium's "out of date, consider
    upgrading to v1" deprecation warning is silenced for this namespace only.
    """
    warnings.filterwarnings("ignore", message=rf".*The environment {NAMESPACE}/\S+ is out of date",
                            category=DeprecationWarning)
    for row in list_envs():
        if row["id"] in gym.registry:
            continue
        gym.register(
            id=row["id"],
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs=dict(row["kwargs"]),
        )


def registered_ids() -> list[str]:
    """Every id this package registers, in :func:`list_envs` order."""
    return [r["id"] for r in list_envs()]


def resolve_env_id(name: str) -> str:
    """The full registered id for what a user typed: ``composition_gym/Compose-L3-v0``,
    ``Compose-L3-v0`` (namespace optional) or the short name ``Compose-L3`` (its newest version).

    Raises:
        ValueError: naming the id and the closest registered ones (``did you mean …``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an env id must be a non-empty string, got {name!r}")
    ids = registered_ids()
    if name in ids:
        return name
    full = name if name.startswith(f"{NAMESPACE}/") else f"{NAMESPACE}/{name}"
    if full in ids:
        return full
    versions = sorted(i for i in ids if i.rsplit("-", 1)[0] == full)
    if versions:
        return versions[-1]
    if "/" in name and name in gym.registry:  # another package's id: not ours to judge
        return name
    close = difflib.get_close_matches(full, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; run `compgym list` to see them"
    raise ValueError(f"unknown env id {name!r}{hint}")


def resolve_env_ids(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """:func:`resolve_env_id` of one name or each of several (``ValueError`` if none is given)."""
    ids = [names] if isinstance(names, str) else list(names)
    if not ids:
        raise ValueError("need at least one env id")
    return [resolve_env_id(i) for i in ids]


def short_name(env_id_: str) -> str:
    """An id without the namespace, for tables and TensorBoard tags: ``OOD-Depth-L4-v0``."""
    return env_id_.split("/", 1)[1] if env_id_.startswith(f"{NAMESPACE}/") else env_id_


def suite(name: str, profile: str = "small", version: str = NEWEST) -> list[str]:
    """The ids of a named evaluation suite (:data:`SUITES`) for a profile, driven by ``Preset.role``.

    * ``id``: the compositions a model trains on (the SFT and RL composition sets);
    * ``ood``: compositions never trained on (unseen at the training depth, and one level deeper);
    * ``all``: every registered id of the profile and version.
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {list(SUITES)}")
    if profile not in PROFILE_PREFIX:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILE_PREFIX)}")
    presets = [p for p in PRESETS if p.version == version]
    if not presets:
        raise ValueError(f"no preset has version {version!r}; known: {sorted({p.version for p in PRESETS})}")
    if name != "all":
        presets = [p for p in presets if p.role == name]
    return [env_id(p.name, profile, p.version) for p in presets]


def ids_table() -> str:
    """The registered ids as a markdown table (docs/environment.md renders it)."""
    rows = ["| id | profile | split | L | role | purpose |", "|---|---|---|---|---|---|"]
    for r in list_envs():
        depth = "-".join(map(str, r["depth"])) if isinstance(r["depth"], list) else r["depth"]
        rows.append(f"| `{r['id']}` | {r['profile']} | `{r['split']}` | {depth} | {r['role']} | {r['purpose']} |")
    return "\n".join(rows)


def variant_id(env_id_: str, **kwargs) -> str:
    """A registered id for ``env_id_`` with ``kwargs`` replacing its registered ``gym.make`` kwargs.

    For code that only takes id strings (trainers, evaluation, worker processes): e.g.
    ``variant_id("Compose-L3", trace_format="tagged")`` registers (once) and returns
    ``composition_gym/Compose-L3-x<hash>-v0``, whose name carries a hash of the merged kwargs, so
    the same variant gets the same id in every process.  No kwargs: the resolved id itself.
    """
    import hashlib
    import json

    spec = gym.spec(resolve_env_id(env_id_))
    if not kwargs:
        return spec.id
    merged = {**spec.kwargs, **kwargs}
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()[:10]
    new_id = f"{spec.namespace}/{spec.name}-x{digest}-v{spec.version}"
    if new_id not in gym.registry:
        gym.register(id=new_id, entry_point=spec.entry_point, vector_entry_point=spec.vector_entry_point,
                     kwargs=merged, max_episode_steps=spec.max_episode_steps)
    return new_id
