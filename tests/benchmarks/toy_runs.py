"""Run functions for the engine tests: deterministic, fast, no training.

``TOY_RUN_LOG`` (an environment variable, so that it is not part of any run's key) names a file
that gets one line per *started* run: the tests read it to see which runs a session executed.
"""

from __future__ import annotations

import os
import signal
import time

from composition_gym.benchmarks.engine.backends import RunSpec


def toy(config, ctx):
    """``x**2`` plus the values of its dependencies (read from their records and artifacts)."""
    log = os.environ.get("TOY_RUN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(ctx.spec.key + "\n")
    if config.get("fail"):
        raise RuntimeError(f"toy run {config['x']} fails on purpose")
    if config.get("ignore_sigterm"):  # a run that will not stop when asked (the second-Ctrl-C test)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(config.get("sleep", 0.0))
    value = config["x"] ** 2
    for dep in ctx.spec.deps:
        record, folder = ctx.dependency(dep)
        assert float((folder / "value.txt").read_text()) == record["result"]["value"]
        value += record["result"]["value"]
    ctx.report(stage="half", value=value)
    (ctx.artifact_dir / "value.txt").write_text(str(value))
    return {"value": value, "seed": config.get("seed", 0), "condition": config.get("condition", "sft")}


def threads_run(config, ctx):
    """Torch's thread count in a run, and what a nested call of the policy gets (the engine's)."""
    import torch

    from composition_gym.threads import resolve_threads

    return {"threads": torch.get_num_threads(), "nested": resolve_threads(), "x": config["x"]}


def toy_specs(n: int = 4, sleep: float = 0.0, children: bool = True, **extra) -> list[RunSpec]:
    """``n`` parent runs and, with ``children``, one run depending on each; ``extra`` goes into
    the parents' configs."""
    specs = []
    for x in range(n):
        parent = RunSpec("tests.benchmarks.toy_runs:toy", {"x": x, "sleep": sleep, **extra}, name=f"parent{x}")
        specs.append(parent)
        if children:
            specs.append(RunSpec("tests.benchmarks.toy_runs:toy", {"x": 10 + x, "sleep": sleep},
                                 deps=(parent.key,), name=f"child{x}"))
    return specs


def main(root: str, workers: int, n: int, sleep: float, **extra) -> None:
    """What the kill-and-resume tests run in a subprocess."""
    from composition_gym.benchmarks.engine.backends import run_local
    from composition_gym.benchmarks.engine.store import RunStore

    run_local(toy_specs(n, sleep, **extra), RunStore(root), workers=workers)
