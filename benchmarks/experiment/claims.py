"""The paper's three claims as data: which conditions each one compares, on which environments.

Kong, Liu et al. (ICML 2026) claim that (1) RL after SFT helps unseen compositions much more than
seen ones, (2) RL on compound traces generalizes better than RL on atomic modules, and (3) SFT
covering every module followed by RL on compositions *beyond* the SFT support beats RL on the SFT
support itself.  Every claim is a comparison between *conditions* (how the agent was trained)
measured on *evaluation environments*; this module names both, as data: the split families and
their sets, the conditions, the comparisons each claim makes.  :mod:`.statistics` summarises runs
(mean ± standard error, paired differences, verdicts), :mod:`.protocol` produces them and
:mod:`.report` renders them; nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class Condition:
    """One training condition: SFT, optionally followed by a trainer on one of its family's sets.

    Attributes:
        key: short name used in the JSON, the sweep's ``arms`` axis and the figure.
        label: human-readable name for tables.
        trainer: ``None`` (SFT alone) or a name of :data:`composition_gym.agents.trainers.TRAINERS`
            (``"grpo"``: the group-relative trainer; ``"maskable_ppo"``: SB3 MaskablePPO, the
            baseline; ``"sft"``: behavior cloning continued, the matched-data control), always with
            the same budget in episodes (problems, for ``"sft"``).
        rl_set: which set of the family it trains on (``"atomic"``, ``"sft_set"``, ``"beyond"``).
    """

    key: str
    label: str
    trainer: str | None
    rl_set: str | None


Set = tuple[str, dict]
"""A set of problems: a registered preset and the env kwargs that change it (``depth=4`` …)."""


@dataclass(frozen=True)
class Family:
    """A split family: what SFT trains on, what each arm trains on, and where all are evaluated.

    The OOD evaluation sets are OOD *relative to the SFT set* of the same family, so the family is
    one unit: SFT on ``Compose-L1to3`` (hash split of whole cascades) makes the unseen split at
    every depth the OOD sets; SFT on ``RoutingSkill-ID-L1to3`` (held-out routing x skill pairs, let
    in at the ``exposure`` rate) makes ``RoutingSkill-OOD-L3`` the OOD set.

    Attributes:
        key, label: names in tables.
        splits: the split family of :data:`composition_gym.supports.SPLIT_FAMILIES` it uses.
        sft: the preset of the SFT coverage set (depth-mixed, every atomic module).
        rl: the training preset of the ``atomic`` and ``sft_set`` arms.
        beyond: the set the ``beyond`` arms (RL beyond the SFT support, and its matched-data
            control) train on, per :attr:`~.cells.Cell.rl_target`; a target missing here means
            those arms do not apply to this family and target (they are left out, and say so).
        evals: evaluation set by eval key (:data:`EVAL_LABELS`).
        exposure: the presets that take the ``exposure`` kwarg, with the same value on the training
            and the evaluation side (the env then splits the held-out cascades into an exposable
            half and an evaluation half, disjoint by construction).
        evaluation_half: the OOD presets that, when RL trains on the exposable half
            (``rl_target="pairs"``), are evaluated on the evaluation half (``exposure`` > 0).
    """

    key: str
    label: str
    splits: str
    sft: str
    rl: dict[str, str]
    beyond: dict[str, Set]
    evals: dict[str, Set]
    exposure: tuple[str, ...] = ()
    evaluation_half: tuple[str, ...] = ()

    def set_of(self, name: str, rl_target: str = "L3") -> Set:
        """``(preset, env kwargs)`` of the set ``name``: ``"sft"``, an arm's set or an eval key."""
        if name == "sft":
            return self.sft, {}
        if name == "beyond":
            if rl_target not in self.beyond:
                raise ValueError(f"family {self.key!r} has no beyond set for rl_target {rl_target!r}; "
                                 f"it has {sorted(self.beyond)}")
            return self.beyond[rl_target]
        if name in self.rl:
            return self.rl[name], {}
        if name in self.evals:
            return self.evals[name]
        raise ValueError(f"family {self.key!r} has no set {name!r}")


@dataclass(frozen=True)
class Comparison:
    """One verdict row: ``better`` should beat ``worse`` on ``metric`` if the claim holds.

    ``metric`` is an evaluation-env key, or ``"gain:<ood>-<id>"`` for RL's gain over SFT on one
    env minus its gain on another (claim 1's "gain on unseen vs seen").
    """

    claim: str
    better: str
    worse: str
    metric: str
    text: str


#: The environments' version the protocol uses (v1: identifiable problems, depth-mixed SFT sets).
ENV_VERSION = "v1"
#: Trace formats the protocol trains with (``answer`` writes no intermediates to learn modules from).
TRAIN_TRACE_FORMATS = ("values", "tagged")
#: What the beyond arm trains on (:attr:`~.cells.Cell.rl_target`): compositions of the RL split at
#: L=3, deeper ones (:data:`L4_SET`), or the exposable half of the held-out pairs (mixed with the
#: family's own L=3 problems at the rate :data:`PAIRS_RL_EXPOSURE`).
RL_TARGETS = ("L3", "L4", "pairs")
#: The L4 target's depths and weights: half the problems one level beyond SFT, half at the depth SFT
#: trained (compositions SFT never saw: the RL split).  Measured against depths 1-4 (.1/.1/.3/.5),
#: L=4 alone and with KL anchors: docs/results/widening.md.
L4_SET = {"depth": [3, 4], "depth_weights": [0.5, 0.5]}
PAIRS_RL_EXPOSURE = 0.5
_L4 = L4_SET
FAMILIES: dict[str, Family] = {
    f.key: f
    for f in (
        Family("compose", "whole cascades held out (hash split)", "hash", sft="Compose-L1to3",
               rl={"atomic": "Atomic-L1", "sft_set": "Compose-L3"},
               beyond={"L3": ("Compose-RL-L3", {}), "L4": ("Compose-RL-L1to3", _L4)},
               evals={"id": ("Compose-L3", {}), "rl_set": ("Compose-RL-L3", {}),
                      "ood_unseen": ("OOD-Unseen-L3", {}), "ood_unseen_l4": ("OOD-Unseen-L3", {"depth": 4}),
                      "ood_unseen_l5": ("OOD-Unseen-L3", {"depth": 5}), "ood_depth": ("OOD-Depth-L4", {}),
                      "atomic": ("Atomic-L1", {})}),
        Family("routing_skill", "routing x skill pairs held out", "routing_skill", sft="RoutingSkill-ID-L1to3",
               # No L3 beyond set: every L=3 composition outside this SFT support uses a held-out
               # pair, i.e. lies in the evaluation split itself; "pairs" trains on its other half.
               rl={"atomic": "Atomic-L1", "sft_set": "RoutingSkill-ID-L1to3"},
               beyond={"L4": ("RoutingSkill-ID-L1to3", _L4),
                       "pairs": ("RoutingSkill-ID-L1to3", {"depth": 3, "depth_weights": None,
                                                           "exposure": PAIRS_RL_EXPOSURE})},
               evals={"id": ("RoutingSkill-ID-L1to3", {}), "ood_rs": ("RoutingSkill-OOD-L3", {}),
                      "ood_rs_l4": ("RoutingSkill-OOD-L3", {"depth": 4}), "ood_depth": ("OOD-Depth-L4", {}),
                      "atomic": ("Atomic-L1", {})},
               exposure=("RoutingSkill-ID-L1to3", "RoutingSkill-OOD-L3"), evaluation_half=("RoutingSkill-OOD-L3",)),
        Family("pairs", "consecutive skill pairs held out", "pairs", sft="Pairs-ID-L1to3",
               rl={"atomic": "Atomic-L1", "sft_set": "Pairs-ID-L1to3"},
               beyond={"L4": ("Pairs-ID-L1to3", _L4),
                       "pairs": ("Pairs-ID-L1to3", {"depth": 3, "depth_weights": None,
                                                    "exposure": PAIRS_RL_EXPOSURE})},
               evals={"id": ("Pairs-ID-L1to3", {}), "ood_pairs": ("Pairs-OOD-L3", {}),
                      "ood_pairs_l4": ("Pairs-OOD-L3", {"depth": 4}), "ood_depth": ("OOD-Depth-L4", {}),
                      "atomic": ("Atomic-L1", {})},
               exposure=("Pairs-ID-L1to3", "Pairs-OOD-L3"), evaluation_half=("Pairs-OOD-L3",)),
    )
}
FAMILY_KEYS = tuple(FAMILIES)
EVAL_LABELS: dict[str, str] = {
    "id": "ID (SFT set)",
    "rl_set": "RL set (L=3)",
    "ood_unseen": "OOD unseen (L=3)",
    "ood_unseen_l4": "OOD unseen (L=4)",
    "ood_unseen_l5": "OOD unseen (L=5)",
    "ood_rs": "OOD routing x skill (L=3)",
    "ood_rs_l4": "OOD routing x skill (L=4)",
    "ood_pairs": "OOD skill pairs (L=3)",
    "ood_pairs_l4": "OOD skill pairs (L=4)",
    "ood_depth": "L=4, all splits",
    "atomic": "Atomic (L=1)",
}
#: What each evaluation measures per problem: greedy success, sampled success (one sample at the
#: evaluation temperature), pass@k (any of k samples), and all-steps-correct (greedy answer right
#: *and* every intermediate right, so skipping a step cannot look like success).
MEASURES: dict[str, str] = {"greedy": "greedy", "sampled": "sampled", "pass_at_k": "pass@k",
                            "all_steps": "all steps correct"}
CONDITIONS: dict[str, Condition] = {
    c.key: c
    for c in (
        Condition("sft", "SFT", None, None),
        Condition("rl_atomic", "SFT + RL atomic (L=1)", "grpo", "atomic"),
        Condition("rl_compound", "SFT + RL compound, SFT compositions", "grpo", "sft_set"),
        Condition("rl_disjoint", "SFT + RL compound, beyond the SFT support", "grpo", "beyond"),
        Condition("ppo_compound", "SFT + MaskablePPO compound, SFT compositions (SB3 baseline)", "maskable_ppo",
                  "sft_set"),
        Condition("sft_matched", "SFT continued on the beyond arm's problems (matched-data control)", "sft",
                  "beyond"),
    )
}
#: Which conditions and eval envs each claim's table shows.
CLAIMS: dict[str, dict] = {
    "claim1": {
        "title": "Claim 1: SFT vs SFT + RL (RL on the SFT compositions)",
        "short": "Claim 1: SFT vs SFT + RL",
        "conditions": ("sft", "rl_compound", "ppo_compound"),
        "envs": ("id", "ood_unseen", "ood_rs", "ood_depth"),
        "paper": "RL's gain over SFT is much larger on unseen compositions than on seen ones",
    },
    "claim2": {
        "title": "Claim 2: RL on atomic vs compound traces (same BC start, equal RL budget)",
        "short": "Claim 2: RL atomic vs compound",
        "conditions": ("sft", "rl_atomic", "rl_compound"),
        "envs": ("ood_depth", "ood_unseen", "atomic"),
        "paper": "OOD L=4 success: SFT 4.8 %, SFT + RL atomic 14.8 %, SFT + RL compound 42.6 %",
    },
    "claim3": {
        "title": "Claim 3: SFT covering every module, then RL beyond vs on the SFT support",
        "short": "Claim 3: RL beyond vs on SFT support",
        "conditions": ("sft", "rl_compound", "rl_disjoint"),
        "envs": ("id", "rl_set", "ood_unseen", "ood_depth"),
        "paper": "RL on compositions disjoint from the SFT set beats RL on overlapping ones (OOD)",
    },
    "beyond": {
        "title": "RL beyond the SFT support (the cell's rl_target), its controls, and what it forgets",
        "short": "RL beyond the SFT support",
        "conditions": ("sft", "rl_atomic", "rl_compound", "rl_disjoint", "sft_matched"),
        "envs": ("atomic", "id", "ood_unseen", "ood_unseen_l4", "ood_unseen_l5", "ood_rs", "ood_rs_l4", "ood_pairs",
                 "ood_pairs_l4"),
        "paper": "the effective protocol: SFT covers every atomic module, RL trains on compositions beyond the SFT "
                 "support (here read as deeper ones, or held-out pairs); OOD L=4: SFT 4.8 %, RL compound 42.6 %",
    },
}
#: How verdict rows name their claim in tables.
CLAIM_LABELS = {"claim1": "1", "claim2": "2", "claim3": "3", "control": "control"}
#: The paper's headline numbers (OOD compound traces at L = 4, success in %), claim 2.
PAPER_OOD_L4: dict[str, float] = {"sft": 4.8, "rl_atomic": 14.8, "rl_compound": 42.6}
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("claim1", "rl_compound", "sft", "gain:ood_unseen-id",
               "RL gain on unseen L=3 compositions > RL gain on seen (ID) ones"),
    Comparison("claim1", "rl_compound", "sft", "gain:ood_depth-id",
               "RL gain at OOD depth L=4 > RL gain on seen (ID) compositions"),
    Comparison("claim1", "rl_compound", "sft", "gain:ood_rs-id",
               "RL gain on held-out routing x skill pairs > RL gain on seen (ID) compositions"),
    Comparison("claim1", "rl_compound", "sft", "ood_rs", "SFT + RL > SFT on held-out routing x skill pairs"),
    Comparison("claim1", "rl_compound", "sft", "ood_unseen", "SFT + RL > SFT on unseen L=3 compositions"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_depth",
               "RL compound > RL atomic on OOD depth L=4"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_unseen", "RL compound > RL atomic on unseen L=3"),
    Comparison("claim2", "rl_compound", "rl_atomic", "ood_rs", "RL compound > RL atomic on held-out routing x skill"),
    Comparison("claim2", "rl_atomic", "sft", "ood_depth", "RL atomic > SFT on OOD depth L=4"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_unseen",
               "RL on disjoint set > RL on SFT set, OOD unseen L=3"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_depth",
               "RL on disjoint set > RL on SFT set, OOD depth L=4"),
    # RL beyond the SFT support (rl_target L4 or pairs): does it widen, and is compound the reason?
    Comparison("claim1", "rl_disjoint", "sft", "ood_unseen_l4",
               "SFT + RL beyond the SFT support > SFT on unseen L=4 compositions (never trained)"),
    Comparison("claim1", "rl_disjoint", "sft", "ood_unseen_l5",
               "SFT + RL beyond the SFT support > SFT on unseen L=5 compositions (never trained)"),
    Comparison("claim1", "rl_disjoint", "sft", "ood_rs", "SFT + RL beyond the SFT support > SFT on held-out "
               "routing x skill pairs"),
    Comparison("claim1", "rl_disjoint", "sft", "ood_pairs", "SFT + RL beyond the SFT support > SFT on held-out "
               "skill pairs"),
    Comparison("claim2", "rl_disjoint", "rl_atomic", "ood_unseen_l4", "RL compound (beyond) > RL atomic on unseen L=4"),
    Comparison("claim2", "rl_disjoint", "rl_atomic", "ood_rs", "RL compound (beyond) > RL atomic on held-out "
               "routing x skill pairs"),
    Comparison("claim2", "rl_disjoint", "rl_atomic", "ood_pairs", "RL compound (beyond) > RL atomic on held-out "
               "skill pairs"),
    Comparison("claim3", "rl_disjoint", "rl_compound", "ood_unseen_l4",
               "RL beyond the SFT support > RL on the SFT set, unseen L=4"),
    # Not a claim of the paper: at equal problems, does reward alone match demonstrations?
    Comparison("control", "rl_disjoint", "sft_matched", "ood_unseen_l4",
               "RL from reward > SFT from demonstrations on the same problems, unseen L=4"),
    Comparison("control", "rl_disjoint", "sft_matched", "ood_rs",
               "RL from reward > SFT from demonstrations on the same problems, held-out routing x skill"),
    Comparison("control", "rl_disjoint", "sft_matched", "ood_pairs",
               "RL from reward > SFT from demonstrations on the same problems, held-out skill pairs"),
)
#: The sets a beyond arm must not forget (at most :data:`FORGETTING_POINTS` lost against SFT).
SHALLOWER_SETS = ("atomic", "id", "rl_set", "ood_unseen")
FORGETTING_POINTS = 2.0
#: A difference is "supported"/"contradicted" when its mean is beyond this many standard errors.
VERDICT_SE = 2.0
