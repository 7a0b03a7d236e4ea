"""The README and the docs stay true: their tables are the ones the code generates, their Python
blocks run, every link resolves and the docs site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from markdown.extensions.toc import slugify

from composition_gym.modules import module_table
from composition_gym.registration import ids_table
from tests.composition_gym.doc_pages import DOCS, README, ROOT, block_after, code_blocks, name, pages

README_TEXT = README.read_text()
ENVIRONMENT = (DOCS / "environment.md").read_text()

#: Budget substitutions for the Python blocks: (printed text, what runs instead), each used by
#: some block.  Only budgets and episode counts shrink; calls and arguments stay as printed.
SUBSTITUTIONS = [
    ('settings="demo"', 'settings="tiny"'),
    (", 20_000,", ", 64, n_envs=2, n_steps=32, batch_size=64, eval_freq=64, eval_episodes=1,"),
    ("episodes=100", "episodes=1"),
    ("problems_per_iter=256, group_size=8, lr=2e-4", "problems_per_iter=4, group_size=4, lr=2e-4, iterations=2"),
    ('eval_env_ids={"id": ids, "ood": ood}', 'eval_env_ids={"id": ids[:1]}, eval_episodes=2'),
    ("episodes=400, samples=8", "episodes=3, samples=2"),
]

#: The README blocks that the tests below run with their own checks (the lead-in before each).
QUICK_START, AGENTS, GRPO, CUSTOM_AGENT = ("## Quick start", "**Agents: behavior cloning, then PPO.**",
                                           "**Group-relative RL.**", "**Plug in your own agent.**")
CHECKED = {block_after(README_TEXT, marker) for marker in (QUICK_START, AGENTS, GRPO, CUSTOM_AGENT)}


def _shrunk(code: str) -> str:
    for old, new in SUBSTITUTIONS:
        code = code.replace(old, new)
    return code


def _run(code: str, where: str, tmp_path, monkeypatch) -> None:
    """Run ``code`` with its budgets shrunk, in ``tmp_path`` (it may write runs/ and models)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_shrunk(code), where, "exec"), {})


def _other_blocks():
    """Every Python block of the README and the docs not checked below, each distinct block once;
    the ones that train a model for more than seconds run in the slow suite."""
    seen = set(CHECKED)
    for page in pages():
        for line, code in code_blocks(page.read_text(), "python"):
            if code in seen:
                continue
            seen.add(code)
            slow = "behavior_cloning(" in code or "train_ppo(" in code
            yield pytest.param(code, id=f"{name(page)}:{line}", marks=[pytest.mark.slow] if slow else [])


def test_module_table_is_current():
    assert module_table() in ENVIRONMENT


def test_ids_table_is_current():
    assert ids_table() in ENVIRONMENT


def test_every_substitution_shrinks_some_block():
    blocks = [code for page in pages() for _, code in code_blocks(page.read_text(), "python")]
    for old, _ in SUBSTITUTIONS:
        assert any(old in code for code in blocks), f"substitution {old!r} matches no Python block"


def test_quick_start_runs_and_prints_what_it_claims(capsys):
    exec(compile(block_after(README_TEXT, QUICK_START), "README-quick-start", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "<bos>X=dfea:Shift(Swap(Flip(X+X)))|"
    assert out[1] == "CatX.Flip|Chain.Swap|Chain.Shift"
    assert out[2] == "cabfcabf;acfbacfb;bdacbdac<eos> 1.0 True"


def test_custom_agent_example_runs_and_solves_everything(capsys):
    code = block_after(README_TEXT, CUSTOM_AGENT)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README-custom-agent", "exec"), {})
    out = capsys.readouterr().out
    assert "OOD-Depth-L4-v1" in out and "100.0%" in out


@pytest.mark.slow
def test_agents_example_runs_and_writes_bc_curves_beside_ppo(tmp_path, monkeypatch, capsys):
    _run(block_after(README_TEXT, AGENTS), "README-agents", tmp_path, monkeypatch)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in (tmp_path / "runs" / "api_1").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"bc/loss", "bc/heldout_success", "bc/heldout_success/Compose-L1to3-v1", "eval_id/success"} <= tags


def test_group_relative_rl_example_runs(tmp_path, monkeypatch, capsys):
    _run(block_after(README_TEXT, GRPO), "README-grpo", tmp_path, monkeypatch)
    assert "pass@2" in capsys.readouterr().out
    assert (tmp_path / "runs" / "grpo_1" / "grpo_checkpoint.pt").exists()


@pytest.mark.parametrize("code", list(_other_blocks()))
def test_every_other_python_block_runs(code, tmp_path, monkeypatch):
    _run(code, "docs-block", tmp_path, monkeypatch)


def _anchors(text: str) -> set[str]:
    """The heading ids of a page, as MkDocs (Python-Markdown's toc) and GitHub both make them."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#{1,6} (.+)$", prose, re.M)}


def test_readme_links_resolve():
    """The site build checks the docs' links; the README is not part of the site, so here."""
    links = re.findall(r"\]\(([^)\s]+)\)", README_TEXT)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else README
        assert target.is_file(), f"README links to a missing file: {link}"
        if anchor:
            assert anchor in _anchors(target.read_text()), f"README links to a missing anchor: {link}"


def test_docs_site_builds_strict(tmp_path):
    """Every page in the nav exists, every page is in it, every link and anchor resolves."""
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                          "--site-dir", str(tmp_path / "site")],
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert (tmp_path / "site" / "results" / "default-regime" / "index.html").is_file()


def test_readme_headline_table_is_the_results_page_table():
    """The README quotes its headline results; the results page holds them with command and commit."""
    section = README_TEXT[README_TEXT.index("## Headline results"):].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(rows) >= 6
    page = (DOCS / "results" / "widening.md").read_text()
    for row in rows:
        assert row in page, f"README headline row not on docs/results/widening.md: {row}"
