"""Bad input gets one clear line where the value is consumed, so every command line inherits it:
unreadable checkpoints, devices this machine lacks (every model kind), a model evaluated on a
profile it never saw, a string where a sequence is needed, zero threads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from composition_gym import cli
from composition_gym.agents import TransformerLM, behavior_cloning, evaluate, load_model, pretrained, train_ppo
from composition_gym.agents.loading import load_agent
from composition_gym.profiles import get_profile
from composition_gym.registration import env_id

from .conftest import SFT_ENV

NO_GPU = not torch.cuda.is_available()
#: Files that are not checkpoints; torch's unpickler met them with KeyError, IndexError ('pop from
#: empty list') and struct.error, which reached the user as "compgym eval: 101" and the like.
GARBAGE = {"text": b"hello garbage\n", "pop": b"b \"{'", "struct": b"J", "empty": b"", "zip": b"PK\x03\x04junk"}


@pytest.fixture(scope="module")
def zip_model(tmp_path_factory):
    torch.manual_seed(0)
    from composition_gym.agents import TransformerConfig

    lm = TransformerLM(TransformerConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2, segment_dims=4))
    path = tmp_path_factory.mktemp("zip") / "model.zip"
    train_ppo(SFT_ENV, lm, 64, n_envs=2, n_steps=32, progress=False, threads=1).save(path)
    return path


def _one_line(capsys, rc: int) -> str:
    captured = capsys.readouterr()
    assert rc == 2, captured
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return err


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_a_garbage_checkpoint_is_named_as_such(tmp_path, kind):
    path = tmp_path / "model.pt"
    path.write_bytes(GARBAGE[kind])
    for load in (TransformerLM.load, load_agent):
        with pytest.raises(ValueError, match="is not a readable TransformerLM checkpoint"):
            load(str(path))


@pytest.mark.parametrize("command", ["eval", "diagnose"])
def test_cli_on_a_garbage_checkpoint(tmp_path, capsys, command):
    path = tmp_path / "model.pt"
    path.write_bytes(GARBAGE["pop"])
    err = _one_line(capsys, cli.main([command, str(path), "--episodes", "1"]))
    assert err.startswith(f"compgym {command}: ") and "is not a readable TransformerLM checkpoint" in err


def test_the_installed_command_on_a_garbage_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(GARBAGE["text"])
    proc = subprocess.run([str(Path(sys.executable).parent / "compgym"), "eval", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is not a readable TransformerLM checkpoint" in proc.stderr


@pytest.mark.skipif(not NO_GPU, reason="on a GPU machine cuda is a valid device")
def test_cuda_without_a_gpu_is_refused_for_every_model_kind(tmp_path, zip_model, small_lm):
    pt = tmp_path / "lm.pt"
    small_lm.save(pt)
    for path in ("pretrained", str(pt), str(zip_model)):
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            load_agent(path, device="cuda")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        load_model(zip_model, device="cuda")
    for agent in (small_lm, load_model(zip_model)):
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            evaluate(agent, SFT_ENV, 1, device="cuda")
    # SB3 alone would fall back to the CPU without a word.
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        train_ppo(SFT_ENV, small_lm, 64, n_envs=2, n_steps=32, progress=False, device="cuda")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        train_ppo(SFT_ENV, small_lm, 64, n_envs=2, n_steps=32, progress=False, device="cuda:0")


def test_an_unknown_device_is_refused_for_every_model_kind(zip_model, small_lm):
    for path in ("pretrained", str(zip_model)):
        with pytest.raises(ValueError, match="unknown torch device 'tpu'"):
            load_agent(path, device="tpu")
    for agent in (small_lm, load_model(zip_model)):
        with pytest.raises(ValueError, match="unknown torch device 'tpu'"):
            evaluate(agent, SFT_ENV, 1, device="tpu")
    with pytest.raises(ValueError, match="unknown torch device"):
        train_ppo(SFT_ENV, small_lm, 64, n_envs=2, n_steps=32, progress=False, device="tpu")


def test_a_device_is_honoured_for_every_model_kind(zip_model, small_lm):
    device = "cpu" if NO_GPU else "cuda"
    model = load_model(zip_model, device=device)
    assert model.device.type == device
    assert evaluate(model, SFT_ENV, 2, device=device).episodes
    assert evaluate(small_lm, SFT_ENV, 2, device=device).episodes
    assert next(small_lm.parameters()).device.type == device
    small_lm.to("cpu")


def test_a_model_is_refused_on_a_profile_it_never_saw(tmp_path):
    lm = pretrained()
    assert lm.trained_on["profile"] == "small"
    with pytest.raises(ValueError, match=r"trained on profile 'small' but Paper-Compose-L3-v\d is profile 'paper'"):
        evaluate(lm, env_id("Compose-L3", "paper"), 1)
    assert evaluate(lm, env_id("OOD-Depth-L4"), 2).episodes  # its own profile's OOD ids are fine
    # Behaviour cloning records what the model saw, and the checkpoint keeps it.
    trained, _ = behavior_cloning(SFT_ENV, settings="tiny", progress=False, threads=1)
    path = tmp_path / "bc.pt"
    trained.save(path)
    assert TransformerLM.load(path).trained_on == trained.trained_on == lm.trained_on


def test_cli_refuses_the_profile_mismatch(capsys):
    err = _one_line(capsys, cli.main(["eval", "pretrained", "--profile", "paper", "--episodes", "1"]))
    assert "trained on profile 'small'" in err


def test_a_string_where_a_list_of_skills_is_needed():
    small = get_profile("small")
    with pytest.raises(TypeError, match=r"skills must be a list or tuple, got 'Rev' \(did you mean \['Rev'\]\?\)"):
        small.with_overrides(skills="Rev")
    with pytest.raises(TypeError, match="routings must be a list or tuple"):
        small.with_overrides(routings="Chain")
    with pytest.raises(TypeError, match="input_len must be a list or tuple"):
        small.with_overrides(input_len=3)
    assert small.with_overrides(skills=["Rev", "Sort"]).skills == ("Rev", "Sort")
    with pytest.raises(TypeError, match="skills must be a list or tuple"):
        gym.make(SFT_ENV, skills="Rev")


def test_zero_threads_is_refused_before_any_work(capsys):
    err = _one_line(capsys, cli.main(["diagnose", "pretrained", "--threads", "0", "--episodes", "1", "--no-probes",
                                      "--no-attention"]))
    assert "threads must be >= 1, got 0" in err
