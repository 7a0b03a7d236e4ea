"""Test-session plumbing shared by every layer: how ``make test`` spreads the suite over cores, and
the SIGINT it needs."""

from __future__ import annotations

import signal

# A shell that starts the suite in the background (`make test &`, nohup) makes it ignore SIGINT,
# and every process it starts inherits that: Python then never raises KeyboardInterrupt, and the
# interrupt and kill tests would fail (or, worse, test nothing).  A handler, unlike SIG_IGN, is not
# inherited across exec, so the runs those tests start get Python's own again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
