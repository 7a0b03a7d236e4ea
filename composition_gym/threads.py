"""The project's one torch-thread policy: how many threads a call that runs torch uses.

:func:`resolve_threads` decides, in order: the call's own ``threads`` argument, the count of the
enclosing :func:`torch_threads` block, ``COMPGYM_THREADS``, the caller's default (the run engine
passes 1), and :func:`default_threads`' rule (2 threads when two cores are idle, else 1).
:func:`torch_threads` applies it to a block and restores the caller's count after; every entry
point that runs torch (``evaluate``, ``behavior_cloning``, ``train_ppo``, ``diagnose``) wraps
its work in it, and :func:`thread_scope` does the same for the run engine's
runs without importing torch (a worker imports it only if its run does).  Re-exported by
:mod:`composition_gym.agents.settings`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["default_threads", "resolve_threads", "thread_scope", "torch_threads"]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


#: Thread counts of the enclosing :func:`torch_threads` blocks, innermost last: a nested call
#: given no count (``evaluate`` inside ``behavior_cloning``) keeps its caller's, rather than
#: re-reading the machine's load halfway through a run.
_ACTIVE: list[int] = []


def _env_threads() -> int | None:
    env = os.environ.get("COMPGYM_THREADS")
    if not env:
        return None
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"COMPGYM_THREADS must be a positive integer, got {env!r}") from None
    if n < 1:
        raise ValueError(f"COMPGYM_THREADS must be a positive integer, got {env!r}")
    return n


def default_threads() -> int:
    """The torch thread count the project uses when none is given: 2 if two cores are idle, else 1.

    ``COMPGYM_THREADS`` (an integer) overrides it.  Why not torch's default (one thread per
    core): the models are small, so a second thread gains about 1.4x on an idle machine (BC 5.9 s
    with 2 threads vs 8.4 s with 1), but with one competing process a thread that waits for a busy
    core spin-waits and the run gets twice as slow (19.6 s vs 10.0 s).  The load is the 1-minute
    load average.
    """
    env = _env_threads()
    if env is not None:
        return env
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cpus)
    return 2 if cpus >= 2 and cpus - load >= 1.5 else 1


def resolve_threads(threads: int | None = None, *, default: int | None = None) -> int:
    """The project's one thread policy: how many torch threads a call runs with.

    In order: ``threads`` (checked: an integer >= 1), else the count of the enclosing
    :func:`torch_threads` block, else ``COMPGYM_THREADS``, else ``default`` (the run engine
    passes 1: its runs share the cores), else :func:`default_threads`' load rule.
    """
    if threads is not None:
        _check_int("threads", threads, minimum=1)
        return threads
    if _ACTIVE:
        return _ACTIVE[-1]
    env = _env_threads()
    if env is not None:
        return env
    if default is not None:
        _check_int("default threads", default, minimum=1)
        return default
    return default_threads()


@contextlib.contextmanager
def torch_threads(threads: int | None = None, *, default: int | None = None) -> Iterator[int]:
    """Run a block with ``resolve_threads(threads, default=default)`` torch threads; the caller's
    count comes back after.  Every entry point that runs torch (``evaluate``,
    ``behavior_cloning``, ``train_ppo``, ``diagnose``) wraps its work in this block."""
    import torch  # noqa: F401  (loaded here, so that importing the settings stays cheap; thread_scope sets it)

    with thread_scope(threads, default=default) as n:
        yield n


@contextlib.contextmanager
def thread_scope(threads: int | None = None, *, default: int | None = None) -> Iterator[int]:
    """:func:`torch_threads` without importing torch: where torch is not loaded yet, the
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` variables make it start with the resolved count when
    the block imports it (a fresh worker process); nested calls inherit the count either way."""
    n = resolve_threads(threads, default=default)
    saved = {var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({var: str(n) for var in saved})
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    _ACTIVE.append(n)
    try:
        yield n
    finally:
        _ACTIVE.pop()
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if before is not None:
            torch.set_num_threads(before)
