"""PPO / MaskablePPO / RecurrentPPO wiring: a few updates from BC weights, save, load, same actions."""

from __future__ import annotations

import glob
import os
import zipfile

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO

from composition_gym.agents import CompositionEvalCallback, bc_then_ppo, evaluate, load_model, train_ppo
from composition_gym.agents.policy import lm_from_policy
from tests.agents.conftest import DEPTH4_ENV, SFT_ENV, expert_episode

RL_ENV = "composition_gym/Compose-RL-L3-v0"
FEW = dict(n_envs=4, n_steps=32, batch_size=64, n_epochs=2, progress=False)


def _scalars(run_dir: str) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        acc = EventAccumulator(path)
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def _same_actions(a, b, masks: bool) -> None:
    obs = np.concatenate([expert_episode(SFT_ENV, s) for s in range(3)] + [expert_episode(DEPTH4_ENV, 0)])
    kwargs = {}
    if masks:
        kwargs["action_masks"] = np.ones((len(obs), 74), dtype=bool)
    x, _ = a.predict(obs, deterministic=True, **kwargs)
    y, _ = b.predict(obs, deterministic=True, **kwargs)
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("algo,cls", [("ppo", PPO), ("maskable_ppo", MaskablePPO)])
def test_ppo_from_bc_weights_saves_and_loads_back_acting_identically(shipped_lm, tmp_path, algo, cls):
    lm = shipped_lm
    model = train_ppo(RL_ENV, lm, 256, algo=algo, seed=0, **FEW)
    assert isinstance(model, cls) and model.num_timesteps >= 256
    # Fine-tuning moved the weights, but not far: the policy still decodes like the BC model.
    tuned = lm_from_policy(model.policy)
    assert any(not torch.equal(p, q) for p, q in zip(tuned.parameters(), lm.parameters()))
    path = tmp_path / f"{algo}.zip"
    model.save(path)
    for loaded in (load_model(path), cls.load(path)):  # no custom_objects needed after `import agents`
        assert type(loaded) is cls
        _same_actions(model, loaded, masks=cls is MaskablePPO)
        a = evaluate(model, [SFT_ENV], episodes=10, seed=3)
        b = evaluate(loaded, [SFT_ENV], episodes=10, seed=3)
        assert [e.tokens for e in a.episodes] == [e.tokens for e in b.episodes]


def test_recurrent_ppo_baseline_trains_saves_and_loads(tmp_path):
    model = train_ppo(SFT_ENV, None, 256, algo="recurrent_ppo", seed=0, **FEW)
    assert isinstance(model, RecurrentPPO)
    path = tmp_path / "rppo.zip"
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, RecurrentPPO)
    a = evaluate(model, [SFT_ENV], episodes=3, seed=1)
    b = evaluate(loaded, [SFT_ENV], episodes=3, seed=1)
    assert [e.tokens for e in a.episodes] == [e.tokens for e in b.episodes]
    with pytest.raises(ValueError, match="own LSTM policy"):
        train_ppo(SFT_ENV, _tiny_lm(), 64, algo="recurrent_ppo", **FEW)


def _tiny_lm():
    from composition_gym.agents import TransformerConfig, TransformerLM

    return TransformerLM(TransformerConfig(d_model=16, n_heads=2, d_ff=32, n_layers=1, segment_dims=0))


def test_corrupt_or_mismatched_model_files_are_clear_errors(tmp_path, small_lm):
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "missing.zip")
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match="not an SB3 model .zip"):
        load_model(garbage)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="SB3 model"):
        load_model(empty)
    # A real model whose weights were swapped for another architecture's.
    model = train_ppo(SFT_ENV, small_lm, 64, algo="ppo", **FEW)
    good = tmp_path / "good.zip"
    model.save(good)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "policy.pth":
                state = torch.load(src.open(item), weights_only=True)
                state["action_net.weight"] = torch.zeros(5, 5)
                import io

                buf = io.BytesIO()
                torch.save(state, buf)
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="could not be loaded as PPO"):
        load_model(bad)
    with pytest.raises(ValueError, match="trained on observations"):
        load_model(good, env_id="CartPole-v1")


def test_eval_callback_logs_id_and_ood_under_their_own_prefixes(small_lm, tmp_path):
    sets = {"id": [SFT_ENV], "ood": [DEPTH4_ENV]}
    model = train_ppo(SFT_ENV, small_lm, 256, algo="maskable_ppo", tensorboard_log=str(tmp_path), eval_env_ids=sets,
                      eval_freq=128, eval_episodes=4, **FEW)
    run_dir = glob.glob(str(tmp_path / "maskable_ppo_*"))[0]
    tags = _scalars(run_dir)
    for tag in ("eval_id/success", "eval_id/Compose-L3-v0", "eval_id/depth_3", "eval_ood/success",
                "eval_ood/OOD-Depth-L4-v0", "eval_ood/depth_4", "rollout/ep_rew_mean", "train/loss"):
        assert tag in tags, tag
    assert not any(t.startswith("eval/") for t in tags)
    assert model.num_timesteps >= 256


def test_eval_callback_history_and_validation():
    with pytest.raises(ValueError, match="non-empty dict"):
        CompositionEvalCallback({})
    with pytest.raises(ValueError, match="non-empty list"):
        CompositionEvalCallback({"id": SFT_ENV})


def test_bc_then_ppo_puts_bc_ppo_and_eval_curves_in_one_run(tmp_path):
    from composition_gym.agents import TransformerConfig

    model, lm = bc_then_ppo(SFT_ENV, bc_episodes=64, ppo_steps=128, algo="maskable_ppo", seed=0,
                            tensorboard_log=str(tmp_path), rl_env_id=RL_ENV,
                            bc_kwargs=dict(config=TransformerConfig(d_model=32, n_heads=2, d_ff=64), epochs=1,
                                           eval_episodes=8),
                            eval_env_ids={"id": [SFT_ENV], "ood": [DEPTH4_ENV]}, eval_freq=64, eval_episodes=2,
                            **{k: v for k, v in FEW.items()})
    runs = os.listdir(tmp_path)
    assert runs == ["bc_maskable_ppo_1"]
    tags = _scalars(str(tmp_path / runs[0]))
    assert {"bc/loss", "bc/heldout_success", "rollout/ep_rew_mean", "eval_id/success", "eval_ood/success"} <= tags
    assert isinstance(model, MaskablePPO) and lm.config.d_model == 32


def test_train_ppo_rejects_bad_arguments(small_lm):
    with pytest.raises(ValueError, match="unknown algo"):
        train_ppo(SFT_ENV, small_lm, 64, algo="dqn")
    with pytest.raises(ValueError, match="unknown env id"):
        train_ppo("composition_gym/Nope-v0", small_lm, 64)
    with pytest.raises(ValueError, match="algo must be"):
        bc_then_ppo(SFT_ENV, algo="recurrent_ppo")


def _as_if_saved_by_the_old_package(src_path, dst_path) -> None:
    """Copy an SB3 zip whose pickled policy class points at ``agents.policy`` (the pre-rename module)."""
    import base64
    import json
    import sys
    import types

    import cloudpickle

    old = types.ModuleType("agents.policy")
    old.__file__ = "agents/policy.py"  # a file-backed module: cloudpickle pickles its classes by reference
    fake = type("MaskableTransformerPolicy", (), {"__module__": "agents.policy"})
    old.MaskableTransformerPolicy = fake
    sys.modules["agents.policy"] = old  # present only while pickling (by reference)
    try:
        serialized = base64.b64encode(cloudpickle.dumps(fake)).decode()
    finally:
        del sys.modules["agents.policy"]
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(dst_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "data":
                doc = json.loads(data)
                doc["policy_class"][":serialized:"] = serialized
                data = json.dumps(doc).encode()
            dst.writestr(item, data)


def test_a_model_saved_before_the_package_rename_gets_a_clear_message(tmp_path, small_lm, monkeypatch):
    model = train_ppo(SFT_ENV, small_lm, 64, algo="maskable_ppo", **FEW)
    good = tmp_path / "good.zip"
    model.save(good)
    old = tmp_path / "old.zip"
    _as_if_saved_by_the_old_package(good, old)
    # From the repository root the folder agents/ is importable as `agents`; a user's install is not.
    import sys

    monkeypatch.setitem(sys.modules, "agents", None)
    with pytest.raises(ValueError, match=r"saved before the agents moved to composition_gym\.agents") as err:
        load_model(old)
    assert "custom_objects" in str(err.value)
    # The advice in the message works.
    from composition_gym.agents.policy import MaskableTransformerPolicy

    loaded = MaskablePPO.load(old, custom_objects={"policy_class": MaskableTransformerPolicy}, device="cpu")
    assert isinstance(loaded.policy, MaskableTransformerPolicy)


def test_run_directories_are_numbered_like_sb3(tmp_path):
    from composition_gym.agents.ppo import next_run_dir

    assert next_run_dir(tmp_path, "demo") == str(tmp_path / "demo_1")
    (tmp_path / "demo_3").mkdir()
    (tmp_path / "demo_x").mkdir()
    assert next_run_dir(tmp_path, "demo") == str(tmp_path / "demo_4")  # above the highest, as SB3 numbers


def test_train_ppo_uses_the_thread_policy_and_restores_the_callers_count(small_lm, monkeypatch):
    from composition_gym.agents import callbacks

    seen = []
    real = callbacks.evaluate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(callbacks, "evaluate", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        # One thread inside (a second one only slows a loaded test machine); one evaluation, at the start.
        train_ppo(SFT_ENV, small_lm, 32, algo="ppo", threads=1, eval_env_ids={"id": [SFT_ENV]}, eval_freq=10_000,
                  eval_episodes=1, **FEW)
        assert seen == [1]  # inside training: the requested count
        assert torch.get_num_threads() == 3  # afterwards: the caller's
    finally:
        torch.set_num_threads(before)
