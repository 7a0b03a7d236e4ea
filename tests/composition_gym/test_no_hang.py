"""Nothing a user can pass makes ``gym.make`` or ``reset`` hang: each setting either fails at
construction with a message naming the limit, or works.  Each case runs in a fresh subprocess
under a wall-clock timeout (a hang fails the test; durations are never asserted)."""

import json
import re
import subprocess
import sys

import pytest

TIMEOUT_S = 30  # generous for a loaded 2-core machine; an idle one needs about a second per case

SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
import gymnasium as gym
import composition_gym
env_id, kwargs = sys.argv[1], json.loads(sys.argv[2])
try:
    env = gym.make(env_id, **kwargs)
except (ValueError, TypeError) as e:
    print("ERROR", type(e).__name__, str(e).splitlines()[0])
    raise SystemExit(0)
for seed in range(20):
    env.reset(seed=seed)
print("OK")
"""

CASES = [
    ("Compose-L3-v0", {"depth": 99}, "MAX_DEPTH=32"),
    ("Paper-Compose-L3-v0", {"depth": 99}, "MAX_DEPTH=32"),
    ("Compose-L3-v1", {"depth": 32}, "too deep for max_result_len=8.*deepest depth that fits is"),
    ("Paper-Compose-L3-v0", {"depth": 32}, "too deep for max_result_len=16.*deepest depth that fits is"),
    ("Paper-Compose-L1to3-v1", {"depth": [1, 32], "depth_weights": None}, "too deep for max_result_len=16"),
    ("Compose-L3-v0", {"routings": ["CatX"], "max_result_len": 5}, "too deep for max_result_len=5"),
    ("Compose-L3-v0", {"max_result_len": 1}, "max_result_len 1 < longest input 4"),
    ("Compose-L3-v1", {"max_result_len": 4}, None),
    ("Paper-OOD-Depth-L4-v1", {"max_result_len": 6}, None),
    ("Compose-L3-v1", {"skills": ["Sort"], "routings": ["Chain"]}, "identifiable=True leaves too few problems"),
    ("Compose-L3-v0", {"split_seed": "a"}, "split_seed must be an int"),
]


@pytest.mark.parametrize("name,kwargs,error", CASES, ids=[f"{n}-{json.dumps(k)}" for n, k, _ in CASES])
def test_make_fails_fast_or_works(name, kwargs, error):
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT, f"composition_gym/{name}", json.dumps(kwargs)],
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gym.make({name!r}, **{kwargs}) + 20 resets did not finish in {TIMEOUT_S} s")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    if error is None:
        assert line == "OK", line
    else:
        assert line.startswith("ERROR"), line
        assert re.search(error, line), line
