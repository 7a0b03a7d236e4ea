"""The suite's own bookkeeping: no test trains a model except the one acceptance run, which goes first."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import LONG_TESTS

ROOT = Path(__file__).resolve().parents[1]


def _tests() -> dict[str, ast.FunctionDef]:
    out = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                out[f"{path.relative_to(ROOT).as_posix()}::{node.name}"] = node
    return out


def _calls(node: ast.AST, name: str) -> list[ast.Call]:
    return [c for c in ast.walk(node) if isinstance(c, ast.Call)
            and getattr(c.func, "id", getattr(c.func, "attr", None)) == name]


def test_no_fixture_trains_a_model():
    for path in sorted((ROOT / "tests").rglob("conftest.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and any(
                    getattr(d, "attr", getattr(d, "id", None)) == "fixture"
                    or getattr(getattr(d, "func", None), "attr", None) == "fixture" for d in fn.decorator_list):
                assert not _calls(fn, "behavior_cloning"), f"{path}: fixture {fn.name} trains a model"


def test_only_the_acceptance_run_trains_with_the_full_bc_budget():
    """Tests that need a trained model use ``pretrained("small")``; the full budget (``BC_TEST``, the
    ``default`` preset) is trained by the acceptance test alone, which is slow and scheduled first."""
    tests = _tests()
    full = sorted(name for name, node in tests.items()
                  if any(kw.arg == "settings" and getattr(kw.value, "id", None) == "BC_TEST"
                         for c in _calls(node, "behavior_cloning") for kw in c.keywords))
    assert full == list(LONG_TESTS)
    for name in LONG_TESTS:
        marks = [ast.unparse(d) for d in tests[name].decorator_list]
        assert "pytest.mark.slow" in marks, f"{name} must be marked slow"


def test_long_tests_are_collected_first(pytestconfig):
    from tests.conftest import pytest_collection_modifyitems

    class Item:
        def __init__(self, nodeid):
            self.nodeid = nodeid

    items = [Item("tests/a.py::test_x"), Item(LONG_TESTS[0]), Item("tests/b.py::test_y[1]")]
    pytest_collection_modifyitems(None, pytestconfig, items)
    assert [i.nodeid for i in items] == [LONG_TESTS[0], "tests/a.py::test_x", "tests/b.py::test_y[1]"]
