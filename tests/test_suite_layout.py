"""The suite's own bookkeeping: the tests sharing the BC fixture are all scheduled together."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import SHARED_BC_TESTS

ROOT = Path(__file__).resolve().parents[1]


def test_every_user_of_the_shared_bc_model_is_scheduled_on_one_worker():
    users = set()
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                if "bc_run" in [a.arg for a in node.args.args]:
                    users.add(f"{path.relative_to(ROOT).as_posix()}::{node.name}")
    assert users == set(SHARED_BC_TESTS)
