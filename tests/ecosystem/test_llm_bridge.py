"""The LLM bridge: problems as a dataset, and a TRL-style reward function that agrees with the env."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import composition_gym
from composition_gym import llm
from composition_gym.agents.agent import TextAgent
from composition_gym.agents.evaluation import evaluate, rollout
from composition_gym.registration import variant_id

V1_IDS = [r["id"] for r in composition_gym.list_envs() if r["version"] == "v1"]
ID = "composition_gym/Compose-L1to3-v1"
TRL_COLUMNS = ("env_id", "cascade", "x", "y", "answer", "depth", "split", "role", "seed")


def _columns(rows):
    """What TRL passes a reward function: every column but prompt/completion, as lists."""
    return {k: [r[k] for r in rows] for k in TRL_COLUMNS}


def corrupt(completion: str, rng: np.random.Generator) -> str:
    """A wrong, partial or unreadable variant of a reference completion (or the reference itself)."""
    segments = completion.split(";")
    kind = int(rng.integers(9))
    if kind == 0:  # one letter changed
        k = int(rng.integers(len(segments)))
        j = int(rng.integers(len(segments[k])))
        letter = "abcdefghij"[("abcdefghij".find(segments[k][j]) + 1 + int(rng.integers(3))) % 10]
        segments[k] = segments[k][:j] + letter + segments[k][j + 1:]
    elif kind == 1:  # a step missing
        segments.pop(int(rng.integers(len(segments))))
    elif kind == 2:  # one step too many
        segments.append(segments[-1])
    elif kind == 3:  # the answer only
        segments = segments[-1:]
    elif kind == 4:  # the answer one letter short
        segments[-1] = segments[-1][:-1]
    elif kind == 5:
        return "#" + completion  # does not encode
    elif kind == 6:
        return ""
    elif kind == 7:
        return completion + " <eos> ;ab"  # tokens after <eos> are never played
    return ";".join(segments)  # kind 8: unchanged


def test_problems_are_the_envs_resets_and_deterministic(tmp_path):
    rows = llm.problems("Compose-L1to3", 20, seed=5)
    assert rows == llm.problems(ID, 20, seed=5) and rows != llm.problems(ID, 20, seed=6)
    env = gym.make(ID)
    for i, row in enumerate(rows):
        _, info = env.reset(seed=5 + i)
        assert set(row) == set(llm.COLUMNS)
        assert row["prompt"] == info["prompt"] and row["cascade"] == info["cascade"].key()
        assert row["answer"] == info["answer"] and row["seed"] == 5 + i and row["depth"] == info["cascade"].depth
        assert (row["env_id"], row["split"], row["role"]) == (ID, "sft", "train")
        assert llm.problem_of(row, env.unwrapped.profile.alphabet) == env.unwrapped.problem
    path = llm.write_jsonl(rows, tmp_path / "sft.jsonl")
    assert llm.read_jsonl(path) == rows
    assert json.loads(path.read_text().splitlines()[0])["completion"] == rows[0]["completion"]


def test_problems_keep_id_and_ood_sets_disjoint():
    def cascades(env_id, min_depth=1):
        return {r["cascade"] for r in llm.problems(env_id, 400) if r["depth"] >= min_depth}

    assert not cascades("Compose-L3-v1") & cascades("OOD-Unseen-L3-v1")
    assert not cascades("Compose-RL-L3-v1") & cascades("OOD-Unseen-L3-v1")
    assert not cascades("Compose-L1to3-v1", 2) & cascades("Compose-RL-L1to3-v1", 2)
    assert {r["split"] for r in llm.problems(["Compose-L3-v1", "OOD-Unseen-L3-v1"], 3)} == {"sft", "unseen"}


def test_to_dataset_is_a_hugging_face_dataset_of_the_rows():
    pytest.importorskip("datasets", reason="the optional extra [llm]")
    ds = llm.to_dataset(["Compose-L3-v1", "OOD-Depth-L4-v1"], 10, seed=1)
    assert len(ds) == 20 and set(ds.column_names) == set(llm.COLUMNS)
    assert ds.to_list() == llm.problems(["Compose-L3-v1", "OOD-Depth-L4-v1"], 10, seed=1)


def test_the_datasets_problems_are_evaluates_episodes():
    rows = llm.problems(ID, 30, seed=3)
    answers = {r["prompt"]: r["completion"] for r in rows}
    report = evaluate(TextAgent(answers.__getitem__), [ID], episodes=30, seed=3)
    assert [e.cascade for e in report.episodes] == [r["cascade"] for r in rows]
    assert all(e.success and e.all_steps_correct for e in report.episodes)


def test_reward_takes_trls_call_and_never_raises_on_bad_text():
    rows = llm.problems(ID, 4)
    reward = llm.CompositionReward(format_penalty=0.5)
    logged = {}
    completions = [rows[0]["completion"], [{"role": "assistant", "content": rows[1]["completion"]}], None, "∑?"]
    out = reward(prompts=[r["prompt"] for r in rows], completions=completions, completion_ids=[[1]] * 4,
                 trainer_state=object(), log_metric=logged.__setitem__, log_extra=None, **_columns(rows))
    assert out == [1.0, 1.0, -0.5, -0.5]
    assert logged == {"all_steps_correct": 0.5}
    assert reward.__name__ == "composition_reward"
    with pytest.raises(TypeError, match="columns"):
        reward(completions=["ab"], env_id=[ID])
    with pytest.raises(ValueError, match="2 values for 1"):
        reward(completions=["ab"], **_columns(rows[:2]))


def _agreement(env_id, n, seed, **settings):
    """The reward function's score of corrupted completions vs TextAgent episodes on the native vector env."""
    rows = llm.problems(env_id, n, seed=seed)
    rng = np.random.default_rng(seed)
    texts = {r["prompt"]: corrupt(r["completion"], rng) for r in rows}
    reward = llm.CompositionReward(**settings)
    # The expert's completion scores 1 (plus the process reward of every intermediate).
    expert = reward.scores([r["completion"] for r in rows], **_columns(rows))
    assert all(s.is_success and s.all_steps_correct for s in expert)
    rewards = reward(completions=[texts[r["prompt"]] for r in rows], **_columns(rows))
    scores = reward.scores([texts[r["prompt"]] for r in rows], **_columns(rows))
    episodes = rollout(TextAgent(texts.__getitem__), variant_id(env_id, **settings), range(seed, seed + n))
    for row, r, s, e in zip(rows, rewards, scores, episodes, strict=True):
        assert e.cascade == row["cascade"]
        assert (r, s.is_success, s.all_steps_correct, s.malformed) == \
            (e.reward, e.success, e.all_steps_correct, e.malformed), texts[row["prompt"]]
        assert tuple(d["correct"] for d in s.diagnosis) == e.step_correct
    return sum(s.is_success for s in scores) / n


@pytest.mark.parametrize("env_id", [ID, "composition_gym/Paper-OOD-Depth-L4-v1"])
def test_corrupted_completions_score_as_the_env_scores_them(env_id):
    rate = _agreement(env_id, 150, 0, process_reward=0.25, format_penalty=0.5)
    assert 0.05 < rate < 0.5  # some corruptions keep the answer (unchanged, extra text after <eos>)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", V1_IDS)
def test_done_when_1000_problems_of_every_v1_id(env_id):
    _agreement(env_id, 1000, 0, process_reward=0.25, format_penalty=0.5)


def test_the_bridge_and_the_cli_stay_torch_free():
    code = ("import sys, io, contextlib; import composition_gym.llm, composition_gym.render; "
            "from composition_gym.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['list']); main(['show', 'Compose-L3-v1'])\n"
            "heavy = {'torch', 'datasets', 'transformers', 'trl', 'matplotlib', 'PIL'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
