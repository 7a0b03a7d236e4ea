"""Where one group-relative RL iteration spends its time: env, decoding, scoring, update, overhead.

``python -m composition_gym.benchmarks.profile_grpo`` runs :func:`~composition_gym.agents.grpo.train_grpo`
on the shipped checkpoint (``pretrained("small")``): a small warm-up call, then ``--iterations``
measured iterations (B=256, G=8, every group updated, minibatches of 512: the benchmark's
setting), with a timer around each part (wall and CPU seconds), and prints the breakdown:

* env: ``reset`` (problem draws), ``step`` (grammar, scoring of ended episodes, masks) and the
  oracle (only where a caller asks for it);
* decoding: ``prefill`` (prompts, once per group) and ``decode`` (one token per live row and step,
  masked sampling included);
* ``play other``: the batch engine's own bookkeeping;
* ``score`` (advantages), the update's ``forward``, ``backward`` and ``optimizer`` (AdamW, clipping,
  schedule), ``update other``, the KL estimate, logging;
* ``python overhead``: the rest of the iteration.

``--ops`` adds torch's per-operator table of one iteration; ``--cprofile`` the top Python
functions.  The parts are timed by wrapping functions, which costs a little: compare shares, and
take throughput from ``compgym bench``.  The agents are imported inside the functions, for
start-up speed (``--help`` answers without torch).
"""

from __future__ import annotations

import argparse
import cProfile
import contextlib
import pstats
import resource
import sys
import time
from collections import defaultdict
from typing import Any

ENV_ID = "composition_gym/Compose-L3-v0"
SETTINGS = {"problems_per_iter": 256, "group_size": 8, "drop_zero_variance": False, "minibatch_size": 512}
ORDER = ("env reset", "env step", "env oracle", "prefill", "decode", "play other", "score", "forward", "backward",
         "optimizer", "update other", "kl estimate", "log", "python overhead")


class Timers:
    """Wall and CPU seconds per named part; parts nest (an outer part's time excludes its inner ones)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []
        self.enabled = False
        self._wrapped: list[tuple[Any, str, Any]] = []

    @contextlib.contextmanager
    def part(self, name: str):
        if not self.enabled:
            yield
            return
        start = [name, time.perf_counter(), time.process_time(), 0.0, 0.0]  # name, wall, cpu, inner wall, cpu
        self._stack.append(start)
        try:
            yield
        finally:
            self._stack.pop()
            wall, cpu = time.perf_counter() - start[1], time.process_time() - start[2]
            self.wall[name] += wall - start[3]
            self.cpu[name] += cpu - start[4]
            if self._stack:
                self._stack[-1][3] += wall
                self._stack[-1][4] += cpu

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Time every call of ``owner.attr`` as part ``name``."""
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.part(name):
                return inner(*args, **kwargs)

        self._wrapped.append((owner, attr, inner))
        setattr(owner, attr, timed)

    def unwrap(self) -> None:
        """Put every wrapped function back."""
        for owner, attr, inner in reversed(self._wrapped):
            setattr(owner, attr, inner)
        self._wrapped.clear()


def instrument(timers: Timers) -> None:
    """Wrap the functions each part is made of (module attributes, so the trainer picks them up)."""
    import torch

    from composition_gym.agents import grpo, sampling
    from composition_gym.vector import CompositionVectorEnv

    timers.wrap(CompositionVectorEnv, "reset", "env reset")
    timers.wrap(CompositionVectorEnv, "step", "env step")
    timers.wrap(CompositionVectorEnv, "expert_actions", "env oracle")
    timers.wrap(sampling.LMChooser, "start", "prefill")
    timers.wrap(sampling.LMChooser, "choose", "decode")
    timers.wrap(grpo, "sample", "play other")
    timers.wrap(grpo, "score", "score")
    timers.wrap(grpo, "bucket_log_probs", "forward")  # the KL estimate's reference pass too
    timers.wrap(torch.Tensor, "backward", "backward")
    timers.wrap(torch.optim.AdamW, "step", "optimizer")
    timers.wrap(torch.nn.utils, "clip_grad_norm_", "optimizer")
    timers.wrap(grpo, "update", "update other")
    timers.wrap(grpo, "kl_estimate", "kl estimate")
    timers.wrap(grpo, "log_iteration", "log")


def profile(env_id: str = ENV_ID, iterations: int = 2, ops: bool = False, cprofile: bool = False,
            threads: int = 1) -> dict[str, Any]:
    """Run the instrumented iterations; returns ``{"parts": {name: {wall_s, cpu_s, share}}, ...}``."""
    import torch

    from composition_gym.agents import grpo
    from composition_gym.agents.checkpoints import pretrained
    from composition_gym.agents.settings import GRPOConfig

    timers = Timers()
    instrument(timers)
    try:
        # A small warm-up call (kernels, tables, caches), then the measured call at full size.
        grpo.train_grpo(env_id, pretrained("small"), GRPOConfig(iterations=1, **{**SETTINGS, "problems_per_iter": 4,
                                                                                 "group_size": 2}),
                        progress=False, threads=threads)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profiler = cProfile.Profile() if cprofile else None
        torch_prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if ops else None
        timers.enabled = True
        with torch_prof or contextlib.nullcontext():
            if profiler:
                profiler.enable()
            w0, c0 = time.perf_counter(), time.process_time()
            _, stats = grpo.train_grpo(env_id, pretrained("small"), GRPOConfig(iterations=iterations, **SETTINGS),
                                       progress=False, threads=threads)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if profiler:
                profiler.disable()
    finally:
        timers.unwrap()
    timers.wall["python overhead"] = wall - sum(timers.wall.values())
    timers.cpu["python overhead"] = cpu - sum(timers.cpu.values())
    parts = {k: {"wall_s": timers.wall[k], "cpu_s": timers.cpu[k], "share": timers.wall[k] / wall}
             for k in ORDER if k in timers.wall}
    out = {"env_id": env_id, "iterations": iterations, "threads": threads, **SETTINGS, "wall_s": wall, "cpu_s": cpu,
           "tokens": stats["env_steps"], "tokens_per_s": stats["env_steps"] / wall, "parts": parts,
           "env_share": sum(parts[k]["wall_s"] for k in ("env reset", "env step", "env oracle") if k in parts) / wall,
           "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}
    if profiler:
        out["cprofile"] = pstats.Stats(profiler)
    if torch_prof:
        out["ops"] = torch_prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    return out


def report(out: dict[str, Any]) -> str:
    """The breakdown as a text table."""
    lines = [f"GRPO on {out['env_id']}: B={out['problems_per_iter']}, G={out['group_size']}, "
             f"minibatch {out['minibatch_size']}, {out['threads']} torch thread(s), {out['iterations']} iteration(s) "
             f"after a small warm-up call",
             f"{out['tokens']:,} sampled tokens in {out['wall_s']:.2f} s wall ({out['cpu_s']:.2f} s CPU): "
             f"{out['tokens_per_s']:,.0f} tokens/s; env share {out['env_share']:.1%}; "
             f"peak RSS growth {out['peak_rss_growth_mb']:.0f} MB", "",
             f"{'part':18s} {'wall s':>8s} {'CPU s':>8s} {'share':>7s}"]
    for name, p in out["parts"].items():
        lines.append(f"{name:18s} {p['wall_s']:8.2f} {p['cpu_s']:8.2f} {p['share']:7.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m composition_gym.benchmarks.profile_grpo [--env ID] [--iterations N] [--ops] [--cprofile]``."""
    parser = argparse.ArgumentParser(prog="python -m composition_gym.benchmarks.profile_grpo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=ENV_ID, help=f"training env (default {ENV_ID})")
    parser.add_argument("--iterations", type=int, default=2, help="measured iterations after the warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the benchmark)")
    parser.add_argument("--ops", action="store_true", help="also print torch's per-operator table")
    parser.add_argument("--cprofile", action="store_true", help="also print the top Python functions")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.threads < 1:
        parser.error("--iterations and --threads must be >= 1")
    out = profile(args.env, args.iterations, ops=args.ops, cprofile=args.cprofile, threads=args.threads)
    print(report(out))
    if "ops" in out:
        print("\n" + out["ops"])
    if "cprofile" in out:
        out["cprofile"].sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
