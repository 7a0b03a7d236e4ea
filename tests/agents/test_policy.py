"""The transformer: LM <-> SB3 policy logits equality, trimming, relative positions, files."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from composition_gym.agents import TransformerConfig, TransformerLM
from composition_gym.agents.policy import (
    MaskableTransformerPolicy,
    TransformerActorCriticPolicy,
    TransformerExtractor,
    lm_from_policy,
    load_lm_into_policy,
    transformer_policy_kwargs,
)
from composition_gym.agents import prefix_sharing
from composition_gym.agents.prefix_sharing import prefix_representatives
from composition_gym.agents.transformer import (
    Rotary,
    real_lengths,
    string_positions,
    trim_to_real,
)
from composition_gym import tokens as T
from tests.agents.conftest import DEPTH4_ENV, SFT_ENV, expert_episode


def _model(algo_cls, policy_cls, lm, env_id=SFT_ENV):
    env = gym.make(env_id)
    model = algo_cls(policy_cls, env, policy_kwargs=transformer_policy_kwargs(lm.config), n_steps=32,
                     batch_size=32, seed=0, device="cpu")
    load_lm_into_policy(model.policy, lm)
    return model


@pytest.mark.parametrize("env_id", [SFT_ENV, DEPTH4_ENV])
@pytest.mark.parametrize("algo_cls,policy_cls", [(PPO, TransformerActorCriticPolicy),
                                                 (MaskablePPO, MaskableTransformerPolicy)])
def test_policy_logits_equal_lm_logits_at_every_step(small_lm, env_id, algo_cls, policy_cls):
    model = _model(algo_cls, policy_cls, small_lm, env_id)
    for seed in range(3):
        steps = expert_episode(env_id, seed)  # [n, max_len]: the state before each token
        final_len = int((steps[-1] != 0).sum()) + 1
        with torch.no_grad():
            # One LM forward over the whole trace gives the logits at every position ...
            lm_logits = small_lm(torch.as_tensor(steps[-1:, : final_len - 1]))[0]
            # ... and the policy, one observation at a time, must give the same numbers.
            obs_t, _ = model.policy.obs_to_tensor(steps)
            pol_logits = model.policy.get_distribution(obs_t).distribution.logits  # normalised log-probs
        last = real_lengths(torch.as_tensor(steps)) - 1
        torch.testing.assert_close(pol_logits, torch.log_softmax(lm_logits[last], -1), atol=1e-5, rtol=1e-5)
        # The policy's distribution is the softmax of those logits.
        obs_t, _ = model.policy.obs_to_tensor(steps)
        with torch.no_grad():
            dist = model.policy.get_distribution(obs_t)
        probs = dist.distribution.probs
        torch.testing.assert_close(probs, torch.softmax(lm_logits[last], -1), atol=1e-5, rtol=1e-4)


def test_depth4_traces_are_longer_than_depth3_and_still_match(small_lm):
    longest3 = max(int((expert_episode(SFT_ENV, s)[-1] != 0).sum()) for s in range(30))
    longest4 = max(int((expert_episode(DEPTH4_ENV, s)[-1] != 0).sum()) for s in range(30))
    assert longest4 > longest3  # OOD depth reaches positions that depth-3 training never does


def test_lm_from_policy_round_trips_weights(small_lm):
    model = _model(MaskablePPO, MaskableTransformerPolicy, small_lm)
    back = lm_from_policy(model.policy)
    ids = torch.as_tensor(expert_episode(SFT_ENV, 0))
    with torch.no_grad():
        torch.testing.assert_close(back.last_logits(ids), small_lm.last_logits(ids))


def test_trimming_to_the_longest_real_prefix_leaves_logits_unchanged(small_lm):
    obs = torch.as_tensor(np.concatenate([expert_episode(SFT_ENV, 1), expert_episode(DEPTH4_ENV, 2)]))
    trimmed, lengths = trim_to_real(obs)
    assert trimmed.shape[1] == int(lengths.max()) < obs.shape[1]
    with torch.no_grad():
        padded_logits = small_lm(obs)  # attention over all 80 columns
        trimmed_logits = small_lm(trimmed)
        torch.testing.assert_close(padded_logits[:, : trimmed.shape[1]], trimmed_logits, atol=1e-5, rtol=1e-5)
        # The extractor's fast path (trim + last layer at one position) agrees with the full forward.
        rows = torch.arange(len(obs))
        torch.testing.assert_close(small_lm.last_logits(obs), padded_logits[rows, lengths - 1], atol=1e-5, rtol=1e-5)
        ext = TransformerExtractor(gym.make(SFT_ENV).observation_space, small_lm.config)
        ext.body.load_state_dict(small_lm.body.state_dict())
        torch.testing.assert_close(ext(obs.float()), small_lm.body(obs)[rows, lengths - 1], atol=1e-5, rtol=1e-5)


def test_prefix_sharing_matches_one_forward_per_row_in_values_and_gradients(small_lm):
    """A PPO mini-batch holds many states of the same episodes: prefix sharing runs only the rows
    no other row extends, and must give each row's own numbers and gradients."""
    episodes = [expert_episode(SFT_ENV, s) for s in range(3)] + [expert_episode(DEPTH4_ENV, 0)]
    obs = np.concatenate(episodes + [episodes[0][2:4]])  # two exact duplicates too
    obs = torch.as_tensor(obs[np.random.default_rng(0).permutation(len(obs))])
    _, lengths = trim_to_real(obs)
    rep = prefix_representatives(obs, lengths)
    assert len(torch.unique(rep)) == 4  # one full trace per episode
    assert bool((rep[torch.unique(rep)] == torch.unique(rep)).all())  # representatives represent themselves
    assert bool((lengths[rep] >= lengths).all())
    weights = torch.randn(len(obs), small_lm.config.d_model, generator=torch.Generator().manual_seed(1))

    def value_and_grads(fn):
        small_lm.zero_grad()
        out = fn()
        (out * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in small_lm.body.parameters() if p.grad is not None]

    rows = torch.arange(len(obs))
    shared, shared_grads = value_and_grads(lambda: prefix_sharing.last_hidden(small_lm.body, obs))
    # The reference: every row on its own.
    own, own_grads = value_and_grads(lambda: torch.cat([small_lm.body(obs[i:i + 1])[0, lengths[i] - 1][None]
                                                        for i in rows]))
    torch.testing.assert_close(shared, own, atol=1e-5, rtol=1e-5)
    assert len(shared_grads) == len(own_grads) > 0
    for a, b in zip(shared_grads, own_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    small_lm.zero_grad()
    # Rows of different episodes (an SB3 rollout step) share nothing and take the one-position path.
    finals = torch.as_tensor(np.stack([e[-1] for e in episodes]))
    assert len(torch.unique(prefix_representatives(*trim_to_real(finals)))) == len(finals)
    _, final_lengths = trim_to_real(finals)
    with torch.no_grad():
        torch.testing.assert_close(prefix_sharing.last_hidden(small_lm.body, finals),
                                   small_lm.body(finals)[torch.arange(len(finals)), final_lengths - 1],
                                   atol=1e-5, rtol=1e-5)


def test_prefix_representatives_leave_unrelated_rows_alone(monkeypatch):
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0], [5, 8, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [5, 6, 7, 0]])
    rep = prefix_representatives(ids, real_lengths(ids))
    assert rep.tolist() == [0, 0, 2, 3, 3, 0]  # an all-padding row shares only with its like
    # Every hash colliding: the token-by-token check catches it and the full comparison decides.
    monkeypatch.setattr(prefix_sharing, "_HASH_MOD", 1)
    assert prefix_representatives(ids, real_lengths(ids)).tolist() == [0, 0, 2, 3, 3, 0]


def test_rotary_scores_depend_only_on_relative_position():
    rot = Rotary(head_dim=16, max_len=8, base=10000.0)
    q, k = torch.randn(16), torch.randn(16)
    ids = torch.ones(1, 300, dtype=torch.int64)  # no separators: pure token positions
    cos, sin = rot.tables(ids)  # grows past max_len on demand

    def score(i, j):
        return float(Rotary.rotate(q, cos[0, 0, i], sin[0, 0, i]) @ Rotary.rotate(k, cos[0, 0, j], sin[0, 0, j]))

    for shift in (1, 17, 250):
        assert score(9, 4) == pytest.approx(score(9 + shift, 4 + shift), abs=1e-4)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-4)


def test_segment_rotary_counts_separators():
    rot = Rotary(head_dim=16, max_len=8, base=10000.0, segment_dims=4)
    ids = torch.tensor([T.encode("<bos>X=ab:Rev(X)|ba;ab;ba<eos>")])
    cos, _ = rot.tables(ids)
    seg_cols = cos[0, 0, :, 6]  # the first segment pair (position pairs are 0..5)
    sep = (ids[0] == T.SEP_ID).nonzero().item()
    assert torch.allclose(seg_cols[:sep], torch.ones(sep))  # segment 0: angle 0
    assert not torch.isclose(seg_cols[sep], torch.tensor(1.0))


def test_string_positions_index_letters_inside_their_run():
    ids = torch.tensor([T.encode("<bos>X=abc:Rev(X)|cba;ab<eos>")])
    pos = string_positions(ids, 16)[0].tolist()
    letters = [i for i, t in enumerate(ids[0].tolist()) if T.TOKENS[t] in T.LETTER_IDS]
    assert [pos[i] for i in letters] == [1, 2, 3, 1, 2, 3, 1, 2]
    assert all(pos[i] == 0 for i in range(len(pos)) if i not in letters)
    assert string_positions(ids, 3)[0].max() == 2  # clamped


def test_long_inputs_beyond_max_len_work(small_lm):
    ids = torch.randint(1, T.VOCAB_SIZE, (2, small_lm.config.max_len + 40))
    with torch.no_grad():
        assert torch.isfinite(small_lm(ids)).all()


def test_save_load_round_trip(tmp_path, small_lm):
    path = tmp_path / "lm.pt"
    small_lm.save(path)
    back = TransformerLM.load(path)
    assert back.config == small_lm.config
    ids = torch.as_tensor(expert_episode(SFT_ENV, 0))
    with torch.no_grad():
        torch.testing.assert_close(back.last_logits(ids), small_lm.last_logits(ids))


def test_corrupt_or_mismatched_lm_file_is_a_clear_error(tmp_path, small_lm):
    with pytest.raises(FileNotFoundError, match="no TransformerLM checkpoint"):
        TransformerLM.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="not a readable TransformerLM checkpoint"):
        TransformerLM.load(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="missing format tag"):
        TransformerLM.load(other)
    # A checkpoint whose weights do not fit its config: the error names the offending tensors.
    path = tmp_path / "lm.pt"
    small_lm.save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["d_model"] = 48
    torch.save(payload, path)
    with pytest.raises(ValueError, match="does not match the model.*shape mismatches"):
        TransformerLM.load(path)
    truncated = tmp_path / "truncated.pt"
    small_lm.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        TransformerLM.load(truncated)


def test_loading_an_lm_into_a_policy_of_another_shape_is_a_clear_error(small_lm):
    env = gym.make(SFT_ENV)
    other = TransformerConfig(d_model=48, n_heads=4, d_ff=64)
    model = PPO(TransformerActorCriticPolicy, env, policy_kwargs=transformer_policy_kwargs(other), n_steps=32,
                batch_size=32, device="cpu")
    with pytest.raises(ValueError, match="does not match the policy's transformer"):
        load_lm_into_policy(model.policy, small_lm)


@pytest.mark.parametrize("bad", [dict(d_model=30, n_heads=4), dict(d_model=12, n_heads=4), dict(n_layers=0),
                                 dict(dropout=1.5), dict(segment_dims=3), dict(segment_dims=64)])
def test_config_validation_names_the_field(bad):
    with pytest.raises(ValueError):
        TransformerConfig(**bad).validate()
    with pytest.raises(ValueError, match="unknown TransformerConfig field"):
        TransformerConfig.from_dict({"d_modle": 64})


def test_critic_is_detached_from_the_transformer(small_lm):
    model = _model(PPO, TransformerActorCriticPolicy, small_lm)
    obs_t, _ = model.policy.obs_to_tensor(expert_episode(SFT_ENV, 0))
    values = model.policy.predict_values(obs_t)
    values.sum().backward()
    body_grads = [p.grad for p in model.policy.features_extractor.parameters()]
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in body_grads)
    assert model.policy.value_net.weight.grad is not None
