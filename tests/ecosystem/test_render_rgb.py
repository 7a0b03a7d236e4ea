"""``render_mode="rgb_array"``: frames of the text view, RecordVideo, SB3's make_vec_env without warnings."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import composition_gym  # noqa: F401
from composition_gym.render import GREEN, RED

ID = "composition_gym/Compose-L3-v1"


def _play(env, wrong_at=None):
    """The expert, except one wrong letter at step ``wrong_at``; returns the frames."""
    env.reset(seed=1)
    frames, done, t = [env.render()], False, 0
    while not done:
        base = env.unwrapped
        action = base.expert_action()
        if t == wrong_at:
            action = int(next(a for a in np.flatnonzero(base.action_masks()) if a != action and 14 <= a < 40))
        _, _, term, trunc, _ = env.step(action)
        frames.append(env.render())
        done, t = term or trunc, t + 1
    return frames


def _has(frame, colour):
    return bool((frame == np.array(colour, dtype=np.uint8)).all(axis=2).any())


def test_frames_are_fixed_size_rgb_and_colour_each_closed_segment():
    env = gym.make(ID, render_mode="rgb_array")
    frames = _play(env)
    assert all(f.dtype == np.uint8 and f.shape == frames[0].shape and f.shape[2] == 3 for f in frames)
    assert frames[0].shape[0] % 16 == 0 and frames[0].shape[1] % 16 == 0
    assert not _has(frames[0], GREEN) and _has(frames[-1], GREEN) and not _has(frames[-1], RED)
    wrong = _play(env, wrong_at=0)
    assert _has(wrong[-1], RED)
    assert not np.array_equal(frames[-1], wrong[-1])


def test_every_frame_of_every_small_id_has_its_env_size():
    for row in composition_gym.list_envs():
        if row["profile"] == "small" and row["version"] == "v1":
            env = gym.make(row["id"], render_mode="rgb_array", trace_format="tagged")
            shapes = {f.shape for f in _play(env)}
            assert len(shapes) == 1


def test_rendering_changes_no_episode():
    plain, drawn = gym.make(ID), gym.make(ID, render_mode="rgb_array")
    for seed in range(5):
        assert np.array_equal(plain.reset(seed=seed)[0], drawn.reset(seed=seed)[0])
        done = False
        while not done:
            a = plain.unwrapped.expert_action()
            drawn.render()
            out_p, out_d = plain.step(a), drawn.step(a)
            assert np.array_equal(out_p[0], out_d[0]) and out_p[1:4] == out_d[1:4]
            done = out_p[2] or out_p[3]


def test_check_env_passes_in_rgb_array_mode():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(ID, render_mode="rgb_array").unwrapped)


def test_native_vector_env_renders_one_frame_per_row_like_sync():
    native = gym.make_vec(ID, num_envs=3, render_mode="rgb_array")
    sync = gym.make_vec(ID, num_envs=3, vectorization_mode="sync", render_mode="rgb_array")
    native.reset(seed=0)
    sync.reset(seed=0)
    for _ in range(12):
        actions = native.unwrapped.expert_actions()
        native.step(actions)
        sync.step(actions)
        for a, b in zip(native.render(), sync.render()):
            np.testing.assert_array_equal(a, b)
    assert len(native.unwrapped.call("render")) == 3


def test_record_video_writes_an_episode(tmp_path):
    pytest.importorskip("moviepy", reason="RecordVideo needs moviepy: the optional extra [video]")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(gym.make(ID, render_mode="rgb_array"), video_folder=str(tmp_path / "videos"), name_prefix="trace",
                      episode_trigger=lambda episode: True, disable_logger=True)
    _play(env)
    env.close()
    videos = sorted((tmp_path / "videos").glob("trace-episode-0.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_sb3_make_vec_env_no_longer_warns():
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        venv = make_vec_env(ID, n_envs=2, seed=0)
    venv.reset()
    assert venv.render_mode == "rgb_array"
    frames = venv.get_images()
    assert len(frames) == 2 and frames[0].ndim == 3
