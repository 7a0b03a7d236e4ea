"""Test-session plumbing shared by every layer: how ``make test`` spreads the suite over cores."""

from __future__ import annotations

import pytest

#: The tests that share the session's behaviour-cloned model (``bc_run`` in tests/agents/conftest.py,
#: about 9 minutes of training).  Under ``pytest -n N --dist loadgroup`` they must run on one
#: worker, or each worker trains its own copy.  Their ``xdist_group("bc_run")`` mark says so, but
#: with pytest 9.2 pytest-xdist 3.8 loses the node-id suffix it groups by
#: (pytest-dev/pytest-xdist#1386: every test is scheduled alone), so the scheduler below groups them
#: by node id.  tests/test_suite_layout.py checks that the list names every user of ``bc_run``.
SHARED_BC_TESTS = (
    "tests/agents/test_bc.py::test_bc_reaches_90_percent_greedy_success_on_the_sft_id",
    "tests/agents/test_ppo.py::test_ppo_from_bc_weights_saves_and_loads_back_acting_identically",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` that also groups :data:`SHARED_BC_TESTS` (see there why)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SharedFixtureScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.split("[")[0] in SHARED_BC_TESTS:
                return "bc_run"
            return super()._split_scope(nodeid)

    return SharedFixtureScheduling(config, log)
