"""The shell lines of the README and of every docs page run as pasted.

Every line of a fenced ``bash`` block and every ``$ `` line is extracted (backslash continuations
joined, comments dropped), from ``README.md`` and from each page under ``docs/``
(:mod:`tests.composition_gym.doc_pages`).  The fast test parses each ``compgym`` line with the real
parser (a pasted ``--suite id|ood|all`` or a stale flag fails here) and checks that every line is
either run or skipped below for a stated reason.  The slow test runs them all, in page order, in
one scratch directory, with the training budgets shrunk by :data:`SUBSTITUTIONS`; a line that
appears on several pages runs once.  Commands quoted on the results pages are records of what ran
at a given commit: they sit in plain code blocks, not ``bash`` ones, and are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from composition_gym import cli
from tests.composition_gym.doc_pages import README, ROOT, code_blocks, name, pages

BIN = Path(sys.executable).parent

#: Lines not run, and why.
SKIPPED = {
    "make demo": "the full demo (minutes); `compgym demo --quick` is tested in tests/agents/test_cli.py",
    "make test": "the test suite itself",
    "make test-fast": "the test suite itself",
    "make reproduce": "the default regime (about 18 min on 2 cores); the docs' `compgym reproduce --budget tiny` line runs",
    "source .venv/bin/activate": "changes the interactive shell only; the test puts .venv/bin on PATH",
    ".venv/bin/python -m pytest tests/composition_gym -q": "the test suite itself",
    ".venv/bin/mkdocs build --strict --site-dir site": "test_readme.py::test_docs_site_builds_strict builds the site",
}

#: Budget substitutions for the slow run: (text of a docs line, what runs instead).  Only budgets
#: and episode counts shrink; ids, flags and file names stay as printed.
SUBSTITUTIONS = [
    ("--bc-preset demo", "--bc-preset tiny"),
    ("--ppo-steps 20000", "--ppo-steps 64 --ppo.n-envs 2 --eval-freq 64 --eval-episodes 1"),
    ("--episodes 200", "--episodes 2"),
    ("--grpo.iterations 30", "--grpo.iterations 2 --grpo.problems-per-iter 4 --grpo.group-size 4 --eval-every 0"),
    ("--episodes 100 --json diag.json", "--episodes 20 --probe-episodes 60 --probe-test-episodes 20 "
                                        "--attention-episodes 20 --json diag.json"),
    ("--conf-file hyperparams/ppo.yml", f"--conf-file {ROOT / 'hyperparams' / 'ppo.yml'} -n 64 "
                                        "--hyperparams n_envs:2 n_steps:32 batch_size:64 --eval-freq -1"),
    ("-f runs/zoo -n 200", "-f runs/zoo -n 20"),
    # The widen regime's cell (L4 target, process reward, replay, the matched control) at the tiny budget.
    ("reproduce --budget widen", "reproduce --budget tiny --seeds 1 --rl-target L4 --process-reward 0.5 --replay 2.0"),
]


def shell_lines(text: str) -> list[str]:
    """One page's shell commands, in order: fenced ``bash`` blocks, then ``$ `` lines."""
    lines: list[str] = []
    for _, block in code_blocks(text, "bash"):
        lines += _commands(block.splitlines())
    lines += _commands(m for m in re.findall(r"^\$ (.*)$", text, re.M))
    return lines


def all_shell_lines() -> list[tuple[str, str]]:
    """(page, line) for every shell line of the README and the docs, each distinct line once."""
    seen: dict[str, str] = {}
    for page in pages():
        for line in shell_lines(page.read_text()):
            seen.setdefault(line, name(page))
    return [(page, line) for line, page in seen.items()]


def _commands(raw) -> list[str]:
    out, pending = [], ""
    for line in raw:
        if pending:
            line = pending + " " + line.strip()
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip()
            continue
        pending = ""
        code = _strip_comment(line).strip()
        if code:
            out.append(code)
    return out


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` that starts a word outside quotes)."""
    for match in re.finditer(r"(^|\s)#", line):
        head = line[: match.start()]
        if head.count('"') % 2 == 0 and head.count("'") % 2 == 0:
            return head
    return line


def _compgym_argv(line: str) -> list[str] | None:
    words = shlex.split(line)
    if words and os.path.basename(words[0]) == "compgym":
        return words[1:]
    return None


def test_every_page_is_read_and_the_readme_has_shell_lines():
    names = [name(p) for p in pages()]
    assert names[0] == "README.md" and "docs/environment.md" in names and "docs/results/index.md" in names
    assert not any(n.startswith("docs/results/files/") for n in names)
    readme = shell_lines(README.read_text())
    assert any(line.startswith("compgym eval") for line in readme)  # the extraction works
    assert "tensorboard --logdir runs" in readme


def test_every_shell_line_is_known_and_every_compgym_line_parses():
    lines = all_shell_lines()
    for page, line in lines:
        assert not re.search(r"(?<![<>])\|(?!\|)", line) or line in SKIPPED, f"a pipe in {line!r} ({page})"
        argv = _compgym_argv(line)
        if argv is not None:
            try:
                cli.parse(argv)
            except SystemExit as exit_:
                pytest.fail(f"{page}: line does not parse: {line!r} (exit {exit_.code})")
            except cli.UsageError as err:
                pytest.fail(f"{page}: line does not parse: {line!r} ({err})")
        elif line not in SKIPPED:
            assert line.split()[0] in {"python", ".venv/bin/compgym", "tensorboard"}, f"unexpected line {line!r} ({page})"
    for old, _ in SUBSTITUTIONS:
        assert any(old in line for _, line in lines), f"substitution {old!r} matches no docs line"
    shown = {line for _, line in lines}
    for line in SKIPPED:
        assert line in shown, f"SKIPPED names {line!r}, which no page shows any more"


@pytest.mark.slow
def test_docs_shell_lines_run_as_pasted(tmp_path):
    import composition_gym

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COMPGYM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    human = "human" in composition_gym.CompositionEnv.metadata["render_modes"]
    ran = 0
    for page, line in all_shell_lines():
        if line in SKIPPED:
            continue
        if "rl_zoo3.enjoy" in line and not human:
            continue  # needs render_mode="human" (tests/agents/test_zoo.py marks it)
        cmd = line.replace(".venv/bin/", f"{BIN}/")
        if cmd.startswith("python "):
            cmd = f"{sys.executable} " + cmd[len("python "):]
        if cmd.startswith("tensorboard "):
            cmd += " --inspect"  # prints what the folder holds instead of serving forever
        for old, new in SUBSTITUTIONS:
            cmd = cmd.replace(old, new)
        out = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"{page}: {line!r} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        ran += 1
    assert ran >= 12
