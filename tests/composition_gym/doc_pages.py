"""The hand-written documentation the tests hold to the code: ``README.md`` and every page under ``docs/``.

``docs/results/files`` is a link to ``benchmarks/results/``, whose reports the code writes; they
are not hand-written pages, so they are left out here (the site build still checks their links).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATED = DOCS / "results" / "files"
README = ROOT / "README.md"


def pages() -> list[Path]:
    """``README.md`` first, then the docs pages in path order."""
    docs = sorted(p for p in DOCS.rglob("*.md") if GENERATED not in p.parents)
    return [README, *docs]


def name(page: Path) -> str:
    """The page's path from the repository root, as the tests report it."""
    return page.relative_to(ROOT).as_posix()


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """Every fenced block of ``language`` in ``text``: (line number of its fence, its code)."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M)]


def block_after(text: str, marker: str, language: str = "python") -> str:
    """The first ``language`` block after ``marker`` (a heading or a bold lead-in)."""
    start = text.index(marker)
    match = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M).search(text, start)
    assert match, f"no {language} block after {marker!r}"
    return match.group(1)
