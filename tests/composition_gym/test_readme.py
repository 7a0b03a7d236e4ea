"""The README stays true: its tables are the ones the code generates, its quick start runs."""

import re
from pathlib import Path

import pytest

from composition_gym.modules import module_table
from composition_gym.registration import ids_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _run_with_small_budgets(section: str, substitutions: list[tuple[str, str]], tmp_path, monkeypatch) -> None:
    """Run the first Python block after ``section`` in ``tmp_path``, with only its budgets shrunk
    (explicit substitutions, each of which must apply); calls and arguments stay as printed."""
    code = re.search(re.escape(section) + r".*?```python\n(.*?)```", README, re.S).group(1)
    for old, new in substitutions:
        assert old in code
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README {section}", "exec"), {})


def test_module_table_is_current():
    assert module_table() in README


def test_ids_table_is_current():
    assert ids_table() in README


def test_quick_start_runs_and_prints_what_it_claims(capsys):
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", README, re.S).group(1)
    exec(compile(code, "README-quick-start", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "<bos>X=dfea:Shift(Swap(Flip(X+X)))|"
    assert out[1] == "CatX.Flip|Chain.Swap|Chain.Shift"
    assert out[2] == "cabfcabf;acfbacfb;bdacbdac<eos> 1.0 True"


def test_custom_agent_example_runs_and_solves_everything(capsys):
    code = re.search(r"### Plug in your own agent\n.*?```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README-custom-agent", "exec"), {})
    out = capsys.readouterr().out
    assert "OOD-Depth-L4-v0" in out and "100.0%" in out


@pytest.mark.slow
def test_agents_example_runs_and_writes_bc_curves_beside_ppo(tmp_path, monkeypatch, capsys):
    _run_with_small_budgets("## Agents", [
        ('settings="demo"', 'settings="tiny"'),
        (", 20_000,", ", 64, n_envs=2, n_steps=32, batch_size=64, eval_freq=64, eval_episodes=1,"),
        ("episodes=100", "episodes=1")], tmp_path, monkeypatch)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in (tmp_path / "runs" / "api_1").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"bc/loss", "bc/heldout_success", "bc/heldout_success/Compose-L3-v0", "eval_id/success"} <= tags


def test_group_relative_rl_example_runs(tmp_path, monkeypatch, capsys):
    _run_with_small_budgets("## Group-relative RL", [
        ("problems_per_iter=256, group_size=8, lr=2e-4", "problems_per_iter=4, group_size=4, lr=2e-4, iterations=2"),
        ('eval_env_ids={"id": ids, "ood": ood}', 'eval_env_ids={"id": ids[:1]}, eval_episodes=2'),
        ("episodes=400, samples=8", "episodes=3, samples=2")], tmp_path, monkeypatch)
    assert "pass@2" in capsys.readouterr().out
    assert (tmp_path / "runs" / "grpo_1" / "grpo_checkpoint.pt").exists()
