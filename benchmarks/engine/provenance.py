"""Where a result came from: date, commit, whether the code differed from it, command line, CPUs."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def provenance(command: str | None = None) -> dict[str, Any]:
    """Date, commit, whether the code differs from it, the command line, the CPU count."""
    def git(*args: str) -> str:
        try:
            res = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                 cwd=Path(__file__).resolve().parents[2])
            return res.stdout.strip() if res.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD") or "unknown",
        # Uncommitted code (not results) means the commit alone does not reproduce the numbers.
        "dirty": bool(git("status", "--porcelain", "--", "composition_gym", "agents", "benchmarks",
                          ":!benchmarks/results")),
        "command": command or " ".join([Path(sys.argv[0]).name, *map(shlex.quote, sys.argv[1:])]),
        "cpu_count": os.cpu_count(),
    }
