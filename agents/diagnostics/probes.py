"""Linear probes: can the module of each step be read off the residual stream, layer by layer?

At the opener of every trace segment (see :mod:`composition_gym.agents.diagnostics.traces`) we
read the residual stream after every block (layer 0: the embeddings) and fit one linear
classifier (:class:`LinearProbe`) per layer and target — that step's ``skill``, its ``routing`` and its ``step``
index — on ID traces, then score it on held-out ID traces and on OOD traces.  A module the model
has *identified* is linearly decodable where the step starts, on OOD compositions as on ID ones.

Chance is the accuracy of always answering the training set's most frequent label.  Test labels
never seen in training (step 4 when fitting on L=3) cannot be predicted by any probe; they are
left out of the accuracy and counted under ``unseen``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from composition_gym.agents import seeds
from composition_gym.registration import short_name
from composition_gym.agents.diagnostics.hooks import batched_residual
from composition_gym.agents.diagnostics.traces import agent_traces, expert_traces
from composition_gym.registration import resolve_env_id, resolve_env_ids

TARGETS = ("skill", "routing", "step")


def labels(samples: Sequence[Any]) -> dict[str, list]:
    """Per target, one label per segment opener of ``samples`` (in :func:`hooks.batched_residual` order)."""
    out: dict[str, list] = {t: [] for t in TARGETS}
    for s in samples:
        for t in range(1, len(s.openers) + 1):
            r, k = s.problem.cascade.steps[t - 1]
            out["skill"].append(k)
            out["routing"].append(r)
            out["step"].append(t)
    return out


@dataclass
class LinearProbe:
    """A linear classifier: ridge least squares from standardised features to one-hot labels.

    Closed form and deterministic (no optimiser, no seed); on these probes it ranks layers as a
    logistic regression does, at a fraction of the cost.

    Args:
        ridge: L2 penalty per training example (on the weights, not the bias).
    """

    ridge: float = 1e-2
    classes: list = field(default_factory=list)

    def fit(self, x: np.ndarray, y: Sequence) -> LinearProbe:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError(f"features must be [N, d] with N = len(labels) > 0, got {x.shape} and {len(y)} labels")
        self.classes = sorted(set(y), key=str)
        index = {c: i for i, c in enumerate(self.classes)}
        self._mean, self._std = x.mean(0), x.std(0) + 1e-6
        z = np.hstack([(x - self._mean) / self._std, np.ones((len(x), 1))])
        target = np.zeros((len(y), len(self.classes)))
        target[np.arange(len(y)), [index[c] for c in y]] = 1.0
        penalty = self.ridge * len(x) * np.eye(z.shape[1])
        penalty[-1, -1] = 0.0  # the bias is free
        self._w = np.linalg.solve(z.T @ z + penalty, z.T @ target)
        return self

    def predict(self, x: np.ndarray) -> list:
        z = (np.asarray(x, dtype=np.float64) - self._mean) / self._std
        scores = z @ self._w[:-1] + self._w[-1]
        return [self.classes[i] for i in scores.argmax(1)]


def score(probe: LinearProbe, x: np.ndarray, y: Sequence) -> dict[str, Any]:
    """``acc`` over labels the probe knows, ``per_class`` recall, ``n`` and ``unseen`` counts."""
    known = [i for i, c in enumerate(y) if c in set(probe.classes)]
    pred = probe.predict(x[known]) if known else []
    truth = [y[i] for i in known]
    per: dict[str, list[bool]] = {}
    for p, t in zip(pred, truth):
        per.setdefault(str(t), []).append(p == t)
    return {"acc": float(np.mean([p == t for p, t in zip(pred, truth)])) if known else float("nan"),
            "per_class": {k: float(np.mean(v)) for k, v in sorted(per.items())},
            "n": len(known), "unseen": len(y) - len(known)}


def chance(train_y: Sequence, test_y: Sequence) -> float:
    """Accuracy of always answering the most frequent training label (over labels seen in training)."""
    values, counts = np.unique([str(v) for v in train_y], return_counts=True)
    top = values[counts.argmax()]
    known = [str(v) for v in test_y if str(v) in set(values)]
    return float(np.mean([v == top for v in known])) if known else float("nan")


def probe_layers(train_x: np.ndarray, train_y: dict[str, list], tests: dict[str, tuple[np.ndarray, dict[str, list]]],
                 ridge: float = 1e-2) -> dict[str, Any]:
    """Fit a probe per layer and target on ``train_x [layers, N, d]``, score it on each test set.

    Returns ``{"acc": {target: {test: [per layer]}}, "per_class": {target: {test: [per layer]}},
    "chance": {target: {test: float}}, "n": {test: int}, "unseen": {target: {test: int}}}``.
    """
    out: dict[str, Any] = {"acc": {}, "per_class": {}, "chance": {}, "n": {}, "unseen": {}}
    for target in TARGETS:
        ys = train_y[target]
        probes = [LinearProbe(ridge).fit(train_x[layer], ys) for layer in range(train_x.shape[0])]
        for key in ("acc", "per_class", "chance", "unseen"):
            out[key][target] = {}
        for name, (x, y) in tests.items():
            scores = [score(p, x[layer], y[target]) for layer, p in enumerate(probes)]
            out["acc"][target][name] = [s["acc"] for s in scores]
            out["per_class"][target][name] = [s["per_class"] for s in scores]
            out["chance"][target][name] = chance(ys, y[target])
            out["unseen"][target][name] = scores[0]["unseen"]
            out["n"][name] = len(y[target])
    return out


def run_probes(lm: Any, fit_env: str, test_envs: Sequence[str], *, episodes: int = 300, test_episodes: int = 200,
               seed: int = 0, source: str = "expert") -> dict[str, Any]:
    """Probe ``lm`` per layer: fit on ``fit_env`` traces, score on held-out traces of each test env.

    Args:
        lm: a :class:`~composition_gym.agents.TransformerLM`.
        fit_env: the ID env whose traces train the probes (episodes ``seed …``).
        test_envs: envs scored on episodes ``seed + HELDOUT …`` (disjoint seeds from the fit set).
        source: ``"expert"`` (teacher-forced reference traces) or ``"model"`` (``lm``'s greedy rollouts).

    Returns :func:`probe_layers`'s dict, test sets keyed by short env name, plus ``"fit_env"``,
    ``"source"`` and ``"layers"`` (``0`` embeddings … ``n`` last block).
    """


    fit_env, test_envs = resolve_env_id(fit_env), resolve_env_ids(test_envs)
    if source not in ("expert", "model"):
        raise ValueError(f"source must be 'expert' or 'model', got {source!r}")
    if episodes < 2 or test_episodes < 1:
        raise ValueError(f"need episodes >= 2 and test_episodes >= 1, got {episodes} and {test_episodes}")

    def traces(env: str, n: int, s: int):
        return expert_traces(env, n, s) if source == "expert" else agent_traces(lm, env, n, s)

    def features(samples):
        return batched_residual(lm, [s.ids for s in samples], [s.openers for s in samples]), labels(samples)

    train_x, train_y = features(traces(fit_env, episodes, seed))
    tests = {short_name(e): features(traces(e, test_episodes, seed + seeds.HELDOUT)) for e in test_envs}
    out = probe_layers(train_x, train_y, tests)
    return {**out, "fit_env": short_name(fit_env), "source": source, "layers": list(range(train_x.shape[0]))}


__all__ = ["TARGETS", "LinearProbe", "chance", "labels", "probe_layers", "run_probes", "score"]
