"""Linear probes: chance on random features, near 100 % on features that encode the label, and
the real read-out on a small model is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from composition_gym.agents.diagnostics.hooks import batched_residual, pad, residual_stream
from composition_gym.agents.diagnostics.probes import LinearProbe, chance, labels, probe_layers, run_probes
from composition_gym.agents.diagnostics.traces import expert_traces
from composition_gym.profiles import get_profile

SKILLS = list(get_profile("small").skills)


def _skills(n, rng):
    return [SKILLS[i] for i in rng.integers(0, len(SKILLS), n)]


def test_random_features_score_at_chance():
    rng = np.random.default_rng(0)
    y_train, y_test = _skills(600, rng), _skills(3000, rng)
    x_train, x_test = rng.normal(size=(600, 16)), rng.normal(size=(3000, 16))
    probe = LinearProbe().fit(x_train, y_train)
    acc = np.mean([p == t for p, t in zip(probe.predict(x_test), y_test)])
    assert abs(acc - 1 / len(SKILLS)) < 0.05
    assert abs(chance(y_train, y_test) - 1 / len(SKILLS)) < 0.05


def test_features_that_encode_the_skill_score_near_100():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(len(SKILLS), 16))

    def make(n):
        y = _skills(n, rng)
        x = np.stack([codes[SKILLS.index(s)] for s in y]) + 0.3 * rng.normal(size=(n, 16))
        return x, y

    (x_train, y_train), (x_test, y_test) = make(600), make(1000)
    train = {"skill": y_train, "routing": y_train, "step": y_train}
    out = probe_layers(np.stack([rng.normal(size=x_train.shape), x_train]), train,
                       {"test": (np.stack([rng.normal(size=x_test.shape), x_test]),
                                 {"skill": y_test, "routing": y_test, "step": y_test})})
    noise, encoded = out["acc"]["skill"]["test"]
    assert encoded > 0.98 and noise < 0.3
    assert min(out["per_class"]["skill"]["test"][1].values()) > 0.9


def test_labels_unseen_in_training_are_counted_not_scored():
    probe = LinearProbe().fit(np.eye(3), [1, 2, 3])
    from composition_gym.agents.diagnostics.probes import score
    s = score(probe, np.eye(4, 3), [1, 2, 3, 4])
    assert s["unseen"] == 1 and s["n"] == 3 and s["acc"] == 1.0


def test_residual_stream_matches_the_model(small_lm):
    samples = expert_traces("Compose-L3-v0", 4, 0)
    ids = pad([s.ids for s in samples])
    layers = residual_stream(small_lm, ids)
    assert len(layers) == small_lm.config.n_layers + 1
    hidden = small_lm.body(ids)
    assert np.allclose(small_lm.body.ln_f(layers[-1]).detach().numpy(), hidden.detach().numpy(), atol=1e-5)
    feats = batched_residual(small_lm, [s.ids for s in samples], [s.openers for s in samples], batch_size=3)
    assert feats.shape == (3, sum(len(s.openers) for s in samples), small_lm.config.d_model)
    assert np.allclose(feats[1][0], layers[1][0, samples[0].openers[0]].numpy())
    assert labels(samples)["step"] == [t for s in samples for t in range(1, len(s.openers) + 1)]


def test_run_probes_is_deterministic_and_reports_unseen_steps(small_lm):
    kw = dict(episodes=40, test_episodes=15, seed=2)
    a = run_probes(small_lm, "Compose-L3-v0", ["Compose-L3-v0", "OOD-Depth-L4-v0"], **kw)
    b = run_probes(small_lm, "Compose-L3-v0", ["Compose-L3-v0", "OOD-Depth-L4-v0"], **kw)
    assert a["acc"] == b["acc"]
    assert a["layers"] == [0, 1, 2]
    assert a["unseen"]["step"] == {"Compose-L3-v0": 0, "OOD-Depth-L4-v0": 15}  # step 4 never in training
    assert a["n"] == {"Compose-L3-v0": 45, "OOD-Depth-L4-v0": 60}
    for accs in a["acc"]["skill"].values():
        assert all(0.0 <= v <= 1.0 for v in accs)
    with pytest.raises(ValueError, match="source"):
        run_probes(small_lm, "Compose-L3-v0", ["Compose-L3-v0"], source="teacher")
