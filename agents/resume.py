"""Stopping and resuming training: interrupts land between two steps, checkpoints know their run.

:class:`Interrupts` turns Ctrl-C (SIGINT) and SIGTERM into a ``KeyboardInterrupt`` raised between
two steps of a training loop, never inside one (an optimizer step cut in half leaves weights
that no checkpoint should hold), so a trainer can catch it, write a checkpoint of the last whole
step and re-raise.  A second signal raises at once (``torn`` is then set: the step in progress is
lost, and the trainer keeps its last periodic checkpoint).  A signal the process ignores (the run
engine's workers ignore SIGINT: their driver decides) stays ignored.

:func:`fingerprint` names what a run computes (its settings, not its thread count or logging), so
a checkpoint left in a run directory is resumed only by the same run; :func:`say` prints the
one-line status messages (``resuming BC from step 1200 of 3000 in runs/x``) to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any
from composition_gym.atomic import atomic_write

__all__ = ["Interrupts", "fingerprint", "load_checkpoint", "mark_run", "say", "unfinished_run", "weights_digest"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class Interrupts:
    """A context manager for a training loop; wrap each step in ``with guard.step():``.

    Outside a step, a signal raises ``KeyboardInterrupt`` at once; inside one, it is held until the
    step ends.  Only the main thread can own signal handlers: elsewhere this does nothing (and
    ``KeyboardInterrupt`` reaches only the main thread anyway).  The handlers in place before
    ``__enter__`` come back at ``__exit__``.
    """

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal's number
        self.torn = False  # a second signal cut a step in half
        self._in_step = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None or not self._in_step:
            self.torn = self._in_step
            self.received = self.received or signum
            raise KeyboardInterrupt
        self.received = signum  # held until the step ends

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One step that a first signal does not cut: it is raised when the step is done."""
        self._in_step = True
        try:
            yield
        finally:
            self._in_step = False
        if self.received is not None:
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        """The received signal's name (``"SIGINT"``), or ``"interrupt"`` for a plain KeyboardInterrupt."""
        return signal.Signals(self.received).name if self.received is not None else "interrupt"


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return repr(obj)


def fingerprint(**parts: Any) -> str:
    """A short hash of ``parts`` (JSON values, dataclasses and configs with ``to_dict``): equal
    settings give equal fingerprints, in any key order."""
    blob = json.dumps(parts, sort_keys=True, default=_plain, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def weights_digest(module: Any) -> str:
    """A hash of a torch module's weights (a run that starts from given weights is keyed by them)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def say(message: str) -> None:
    """A status line on stderr (where the progress bars are, so stdout stays the results)."""
    print(message, file=sys.stderr, flush=True)


def mark_run(run_dir: str, marker: str, key: str, *, finished: bool) -> None:
    """Write ``run_dir/marker``: the run's fingerprint ``key`` and whether it finished (atomically)."""

    atomic_write(os.path.join(run_dir, marker), json.dumps({"fingerprint": key, "finished": finished}))


def unfinished_run(root: str, name: str, key: str, marker: str) -> str | None:
    """The newest ``root/name_k`` whose ``marker`` (:func:`mark_run`) says an unfinished run of
    fingerprint ``key`` left it; ``None`` if there is none."""
    found = []
    if os.path.isdir(root):
        for entry in os.listdir(root):
            head, _, k = entry.rpartition("_")
            path = os.path.join(root, entry, marker)
            if head == name and k.isdigit() and os.path.isfile(path):
                try:
                    with open(path) as f:
                        doc = json.load(f)
                except (OSError, ValueError):
                    continue
                if doc.get("fingerprint") == key and not doc.get("finished"):
                    found.append((int(k), os.path.join(root, entry)))
    return max(found)[1] if found else None


def load_checkpoint(path: str, key: str, what: str, *, weights_only: bool = True) -> dict[str, Any] | None:
    """The checkpoint dict at ``path`` (``None`` if there is none), refused with one line when it is
    damaged or another run (fingerprint other than ``key``) wrote it.  ``weights_only=False`` for
    checkpoints that hold pickled objects (load only files you wrote)."""
    import torch

    if not os.path.isfile(path):
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 (torch raises many types for a damaged file)
        raise ValueError(f"{path} is not a readable {what} checkpoint ({type(err).__name__}); delete it or pass "
                         "resume=False") from None
    if not isinstance(ck, dict) or ck.get("fingerprint") != key:
        raise ValueError(f"{path} was written by another {what} run (other ids, settings, seed or starting "
                         "weights); use another run_dir, or resume=False to overwrite it")
    return ck
