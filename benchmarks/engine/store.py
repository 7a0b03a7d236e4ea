"""Where a sweep keeps its finished runs: one JSON record per run, keyed by a hash of its config.

A run is a pure function of its *spec* (the function that runs it and its full config, seed
included), so the SHA-256 of the spec's canonical JSON names it: the same command run again
computes the same keys and finds what is already done.  Every file is written atomically (a
temporary file in the same directory, then :func:`os.replace`), so a sweep killed at any instant
leaves either a complete record or none; a record's presence is what "finished" means.

Layout under ``root``::

    records/<key>.json        the finished run: spec, result, timing, host
    artifacts/<key>/...       files a run leaves for the runs that depend on it (checkpoints)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from composition_gym.atomic import atomic_write

#: Bump when the meaning of a record changes: old records then no longer count as finished.
RECORD_VERSION = 1


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_key(fn: str, config: Mapping[str, Any]) -> str:
    """The 16-hex-digit key of the run ``fn(config)`` (``fn`` is ``"module:function"``)."""
    blob = canonical_json({"fn": fn, "config": config, "record_version": RECORD_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part
    (:func:`composition_gym.atomic.atomic_write`, kept under this name for the callers)."""
    atomic_write(path, text)


class RunStore:
    """The finished runs of one sweep directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()  # absolute: Ray workers run in other directories

    def record_path(self, key: str) -> Path:
        """Where the record of run ``key`` lives (whether or not it exists)."""
        return self.root / "records" / f"{key}.json"

    def artifact_dir(self, key: str) -> Path:
        """The directory of run ``key``'s artifacts (created on demand)."""
        path = self.root / "artifacts" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, key: str) -> bool:
        """Whether run ``key`` has a finished record."""
        return self.record_path(key).exists()

    def load(self, key: str) -> dict[str, Any]:
        """The record of run ``key`` (``FileNotFoundError`` if it has not finished)."""
        return json.loads(self.record_path(key).read_text())

    def save(self, record: Mapping[str, Any]) -> Path:
        """Write a finished run's record atomically; return its path."""
        path = self.record_path(record["key"])
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=_jsonable) + "\n")
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        """Every finished record, in key order."""
        folder = self.root / "records"
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if not path.name.startswith("."):  # an atomic write's temporary file, left by a kill
                    yield json.loads(path.read_text())


def host() -> str:
    """This machine's name, recorded with each run (where did it run, on a cluster)."""
    return socket.gethostname()


def _jsonable(obj: Any) -> Any:
    """numpy scalars and arrays in results, as plain JSON values."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"a run result holds a {type(obj).__name__}, which is not JSON: return numbers, strings, "
                    "lists and dicts")
