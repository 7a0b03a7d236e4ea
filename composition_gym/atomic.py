"""Atomic file writes: a reader (or a re-run after a kill) sees the old file or the new one, never a part.

Every file the project writes that a later run reads back (run records, checkpoints, reports)
goes through :func:`atomic_write`: the data goes to a temporary file in the same directory, is
flushed to disk, and :func:`os.replace` swaps it in (a rename within one file system is atomic on
POSIX and Windows).  A process killed at any instant leaves at most a hidden ``.NAME.*.tmp*`` file
behind, which nothing reads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]

_UMASK = os.umask(0o022)  # read once (the only way to read it is to set it), then put back
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path`` (its parent is created).

    Args:
        path: the destination.
        data: text, bytes, or a function that writes the file at the temporary path it is given
            (``lambda tmp: torch.save(state, tmp)``, ``model.save``).  The temporary name ends
            with ``path``'s own suffix, because some writers add one when it is missing (SB3's
            ``save`` appends ``.zip``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if not callable(data):
                f.write(data.encode() if isinstance(data, str) else bytes(data))
        if callable(data):
            data(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash cannot swap in an empty file
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
