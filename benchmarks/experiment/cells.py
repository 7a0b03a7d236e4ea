"""The cell: every knob the protocol varies, declared once; the grid and the cell's ids derive from it.

A :class:`Cell` is one setting of the knobs that decide whether RL after SFT can widen (split
family, SFT budget, exposure, trace and prompt formats, the controlled prior, what the "beyond"
RL arm trains on, process reward, RL budget, model width).  Each field is

* an option of ``compgym reproduce`` (the command line is derived from this class),
* an axis of ``compgym sweep`` (:func:`grid_class` derives the grid: one tuple-valued field per
  cell field, so a new field is a new axis with no other edit),
* part of the run keys of the stage it affects (``stage`` metadata: ``"sft"`` fields shape the
  SFT checkpoint, ``"rl"`` fields only the RL arms, so RL cells share their SFT runs).

:func:`family_ids` is the one rule for which registered ids (with which env kwargs) a cell
trains and evaluates on.  Settings that do not apply to a family are refused with one line.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from composition_gym.benchmarks.experiment.claims import (FAMILIES, FAMILY_KEYS, PAIRS_RL_EXPOSURE, RL_TARGETS,
                                                         TRAIN_TRACE_FORMATS)
from composition_gym.cascade import PROMPT_FORMATS
from composition_gym.config import Config, check, field_docs
from composition_gym.profiles import get_profile
from composition_gym.registration import env_id, variant_id

_NO_NEUTRAL = object()


def axis(default: Any, stage: str, *, neutral: Any = _NO_NEUTRAL, **bounds: float) -> Any:
    """A :class:`Cell` field: its default, the stage it affects (``"sft"`` or ``"rl"``), its bounds
    (``ge``/``gt``/``le``), and optionally its *neutral* value — the value that reproduces the runs
    made before the field existed, left out of run keys so those runs keep their keys."""
    meta = {"bounds": bounds, "stage": stage}
    if neutral is not _NO_NEUTRAL:
        meta["neutral"] = neutral
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Cell(Config):
    """One setting of every knob the protocol varies (each field is also a sweep axis)."""

    family: Literal[FAMILY_KEYS] = axis("compose", "sft")
    """Split family: what SFT never sees — whole cascades (compose: hash split), routing x skill
    pairs (routing_skill) or consecutive skill pairs (pairs)."""
    sft_episodes: int = axis(14_000, "sft", ge=1)
    """SFT budget: expert episodes of the family's depth-mixed coverage set."""
    exposure: float | None = axis(None, "sft", ge=0, le=1)
    """Rate at which held-out pairs appear in SFT data (routing_skill and pairs only; None there
    means 0, fully held out)."""
    trace_format: Literal[TRAIN_TRACE_FORMATS] = axis("values", "sft")
    """values: only intermediates are written (modules latent); tagged: each step's modules too."""
    prompt_format: Literal[PROMPT_FORMATS] = axis("nested", "sft", neutral="nested")
    """How the prompt writes the program: nested calls, or the steps listed (pipeline, reversed)."""
    prior: bool = axis(False, "sft", neutral=False)
    """Pre-train on programs of depths 1-6 built only from skills held out of every later stage
    (the controlled prior) before SFT."""
    d_model: int | None = axis(None, "sft", ge=8)
    """Transformer width (None: behavior cloning's default)."""
    rl_target: Literal[RL_TARGETS] = axis("L3", "rl", neutral="L3")
    """What the beyond arm (RL beyond the SFT support) trains on: L3 compositions of the RL split,
    L4 (depths 1-4 of the RL split: deeper than any SFT trace), or pairs (the exposable half of
    the held-out pairs; routing_skill and pairs families)."""
    process_reward: float = axis(0.0, "rl", neutral=0.0, ge=0)
    """RL reward per correct intermediate, on top of the outcome reward (0: outcome only)."""
    replay: float = axis(0.0, "rl", neutral=0.0, ge=0)
    """Weight of the SFT set's replay in the arms (a teacher-forced loss on its expert traces in every
    group-relative step; the matched control trains on the same traces): 0 replays nothing."""
    rl_episodes: int = axis(8_192, "rl", ge=1)
    """RL budget: episodes per arm, equal for every arm and trainer."""

    def __post_init__(self) -> None:
        check(self)
        fam = FAMILIES[self.family]
        if fam.exposure:
            if self.exposure is None:
                object.__setattr__(self, "exposure", 0.0)
        elif self.exposure is not None:
            raise ValueError(f"exposure applies to the families {exposure_families()}; family {self.family!r} "
                             "holds whole cascades out, not pairs")
        if self.rl_target != "L3" and self.rl_target not in fam.beyond:
            raise ValueError(f"rl_target {self.rl_target!r} does not apply to family {self.family!r}; it takes "
                             f"{sorted(fam.beyond)}")

    def stage_dict(self, stage: str) -> dict[str, Any]:
        """The fields of ``stage`` (``"sft"`` or ``"rl"``) as a dict, less those at their neutral value."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["stage"] == stage and not ("neutral" in f.metadata and value == f.metadata["neutral"]):
                out[f.name] = value
        return out

    def tag(self) -> str:
        """A short readable name for logs, tables and TensorBoard directories."""
        parts = [self.family, self.trace_format, f"sft{self.sft_episodes}"]
        if self.exposure is not None:
            parts.append(f"exp{self.exposure:g}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("family", "trace_format", "sft_episodes", "exposure", "rl_episodes"):
                continue
            if "neutral" in f.metadata and value == f.metadata["neutral"] or value is None:
                continue
            parts.append(f.name if value is True else f"{f.name}={value}")
        return "-".join(parts)


def exposure_families() -> list[str]:
    """The families whose held-out pairs can be exposed (:attr:`Family.exposure` not empty)."""
    return [k for k, f in FAMILIES.items() if f.exposure]


def cell_for_grid(**values: Any) -> Cell | None:
    """The cell of one grid combination, with settings that do not apply to its family dropped
    (exposure on compose) — or ``None`` when the combination cannot exist (rl_target pairs on
    compose).  Direct :class:`Cell` construction refuses both instead."""
    fam = FAMILIES.get(values["family"])
    if fam is None:
        return Cell(**values)  # refused there, with the known families named
    if not fam.exposure:
        values["exposure"] = None
    target = values.get("rl_target", "L3")
    if target != "L3" and target not in fam.beyond:
        return None
    return Cell(**values)


def grid_class() -> type:
    """The sweep's grid: for each :class:`Cell` field a tuple of values (empty: the base cell's).

    Derived, so every cell field is an axis with its help text, and a new field needs no edit here.
    """
    docs = field_docs(Cell)
    fields, lines = [], []
    for f in dataclasses.fields(Cell):
        hint = Cell.__annotations__[f.name]
        fields.append((f.name, f"tuple[{hint}, ...]", dataclasses.field(default=())))
        lines.append(f"    {f.name}: {docs.get(f.name, '')} (empty: the base cell's value)")
    namespace = {"__doc__": "The sweep's axes: every combination of these values is one cell.\n\nAttributes:\n"
                 + "\n".join(lines) + "\n", "cells": _cells, "varying": _varying}
    cls = dataclasses.make_dataclass("Grid", fields, frozen=True, namespace=namespace)
    cls.__module__ = __name__  # the annotations' names (Literal, the choices) resolve in this module
    return cls


def _cells(self: Any, base: Cell) -> list[Cell]:
    """Every applicable cell of the grid around ``base``, in a fixed order (fields' order, values' order)."""
    names = [f.name for f in dataclasses.fields(Cell)]
    choices = [getattr(self, n) or (getattr(base, n),) for n in names]
    out: list[Cell] = []
    for combo in itertools.product(*choices):
        cell = cell_for_grid(**dict(zip(names, combo)))
        if cell is not None and cell not in out:
            out.append(cell)
    if not out:
        raise ValueError("the grid has no applicable cell (e.g. rl_target pairs needs family routing_skill or pairs)")
    return out


def _varying(self: Any) -> list[str]:
    """The axes given more than one value (what the sweep's table labels its rows by)."""
    return [f.name for f in dataclasses.fields(self) if len(getattr(self, f.name)) > 1]


Grid = grid_class()


# ---------------------------------------------------------------------------- ids of a cell
def env_kwargs(cell: Cell) -> dict[str, Any]:
    """The env kwargs every id of ``cell`` gets (its formats)."""
    kwargs: dict[str, Any] = {"trace_format": cell.trace_format}
    if cell.prompt_format != "nested":
        kwargs["prompt_format"] = cell.prompt_format
    return kwargs


def family_ids(cell: Cell, sets: Sequence[str], *, profile: str, version: str,
               evaluation_half: bool | None = None) -> list[str]:
    """Registered ids (variants with the cell's env kwargs) of the named sets of ``cell``'s family.

    ``sets`` are keys of :meth:`~.claims.Family.set_of`: ``"sft"``, an RL set (``"atomic"``,
    ``"sft_set"``, ``"beyond"``) or an evaluation key (``"id"``, ``"ood_unseen"`` …).  The one rule
    for which environments a cell uses: every trainer and evaluator asks here.  With
    ``evaluation_half`` (default: the cell's RL target is ``pairs``) the held-out OOD sets are
    their evaluation half, the part the beyond arm never trains on.
    """
    if evaluation_half is None:
        evaluation_half = cell.rl_target == "pairs"
    fam = FAMILIES[cell.family]
    ids = []
    for name in sets:
        preset, kwargs = fam.set_of(name, cell.rl_target)
        kw = {**env_kwargs(cell), **kwargs}
        if preset in fam.exposure and "exposure" not in kw:
            kw["exposure"] = cell.exposure
            if evaluation_half and not cell.exposure and preset in fam.evaluation_half:
                # RL trains on the exposable half: evaluate on the other half (any rate > 0 splits).
                kw["exposure"] = PAIRS_RL_EXPOSURE
        if kw.get("exposure") in (None, 0.0):
            kw.pop("exposure", None)
        ids.append(variant_id(env_id(preset, profile, version), **kw))
    return ids


#: The controlled prior's skills: six permutation-like skills of the paper profile that the small
#: profile never uses (held out of every later stage, so the prior teaches how programs of the same
#: routings compose, not the target modules).
PRIOR_SKILLS = ("SortDesc", "Rot2", "RotR", "Unshift", "HalfSwap", "Riffle")


def cell_of(config: Mapping[str, Any]) -> Cell:
    """The :class:`Cell` a run config was made from (an SFT config, or an arm's: its ``sft`` part and RL fields)."""
    sft = config.get("sft", config)
    names = {f.name for f in dataclasses.fields(Cell)}
    values = {k: v for k, v in {**sft, **config}.items() if k in names}
    return Cell(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def run_ids(config: Mapping[str, Any], sets: Sequence[str]) -> list[str]:
    """:func:`family_ids` for a run's config (an SFT config, or an arm's)."""
    sft = config.get("sft", config)
    return family_ids(cell_of(config), sets, profile=sft["profile"], version=sft["version"],
                      evaluation_half=bool(sft.get("evaluation_half")))


def prior_id(config: Mapping[str, Any]) -> str:
    """The controlled prior's id: programs of depths 1..``prior_depth`` over the skills the target
    profile never uses (every routing; the target's splits and formats)."""
    used = sorted(set(PRIOR_SKILLS) & set(get_profile(config["profile"]).skills))
    if used:
        raise ValueError(f"profile {config['profile']!r} uses the prior's skills {used}: a prior needs skills "
                         "held out of every later stage")
    base = run_ids(config, ["sft"])[0]
    return variant_id(base, skills=list(PRIOR_SKILLS), depth=[1, int(config["prior_depth"])], depth_weights=None)


__all__ = ["Cell", "Grid", "PRIOR_SKILLS", "axis", "cell_for_grid", "cell_of", "exposure_families", "family_ids",
           "grid_class", "prior_id", "run_ids"]
