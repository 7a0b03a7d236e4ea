"""Test-session plumbing shared by every layer: how ``make test`` spreads the suite over cores."""

from __future__ import annotations

#: The tests that run for minutes, longest first.  No fixture trains a model (tests use the shipped
#: checkpoint, ``pretrained("small")``); the one test that trains to competence from scratch is the
#: behavior-cloning acceptance run (about 9 minutes on one thread).  Under ``pytest -n N`` a worker
#: takes the first tests collected, so these are moved to the front: started last, the acceptance
#: run alone would set the suite's wall time.  tests/test_suite_layout.py checks the list.
LONG_TESTS = (
    "tests/agents/test_bc.py::test_bc_reaches_90_percent_greedy_success_on_the_sft_id",
)


def pytest_collection_modifyitems(session, config, items):
    """Put :data:`LONG_TESTS` first, in their order (the rest keep theirs)."""
    rank = {name: i for i, name in enumerate(LONG_TESTS)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("[")[0], len(rank)))
