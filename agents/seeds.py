"""Every seed offset of the project, named in one place.

Episode ``i`` of a run with seed ``s`` resets with ``s + i``; the offsets below keep the streams
that must never meet (training problems, held-out checks, evaluations) apart.  They are part of
what makes a result reproducible: changing one changes which problems a run sees.
"""

#: Held-out problems behaviour cloning checks itself on (``seed + HELDOUT + i``), and the probe
#: test sets of the diagnostics.
HELDOUT = 1_000_003
#: DAgger rollouts of round ``r``: ``seed + DAGGER + r * n + i``.
DAGGER = 2 * HELDOUT
#: Group-relative RL: run seed ``s`` draws its problems from ``s * PROBLEM_STRIDE`` on, so runs of
#: different seeds never share a problem (and the matched-data SFT control replays exactly them).
PROBLEM_STRIDE = 1_000_003
#: The replay pool of group-relative RL (expert traces of the replay set, e.g. the SFT set).
REPLAY = 3 * HELDOUT
#: Periodic evaluations during training (``compgym demo``, GRPO's ``eval_env_ids``).
EVAL = 10_000
#: The reproduction's evaluation problems (the same for every condition of a seed).
PROTOCOL_EVAL = 100_000
#: Sampled completions in :func:`~composition_gym.agents.evaluation.evaluate`: env ``k`` samples
#: with generator seed ``seed + SAMPLING * k``.
SAMPLING = 7_919
#: Expert episodes that measure an RL set's mean episode length (MaskablePPO's token budget).
EPISODE_LENGTH = 7_777_777

__all__ = ["DAGGER", "EPISODE_LENGTH", "EVAL", "HELDOUT", "PROBLEM_STRIDE", "PROTOCOL_EVAL", "REPLAY", "SAMPLING"]
