"""A live view of a sweep: runs done, running and left, and an estimate of the time left.

:class:`SweepProgress` is what the backends call (``started``, ``finished``, ``failed``).  With
``enabled`` it draws a rich live panel on stderr; it always prints one line per finished run, so
a log file of a sweep shows what happened.  The estimate of the time left is the mean duration of
the runs of each kind (SFT, RL…) finished so far — in this session or an earlier one, from their
records — times the runs of that kind left, divided by the runs going side by side.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from composition_gym.benchmarks.engine.backends import RunSpec
from composition_gym.benchmarks.engine.store import RunStore


def _kind(spec: RunSpec) -> str:
    return spec.fn.rsplit(":", 1)[-1]


class SweepProgress:
    """Counts and an ETA over ``specs``; pass it as ``progress=`` to a backend.

    Args:
        specs: every run of the sweep (finished ones included: they count as done).
        store: where finished records are (their durations seed the ETA).
        parallel: runs going side by side (workers or concurrent trials), for the ETA.
        enabled: draw the live panel (the per-run log lines are printed regardless).
        title: the panel's title.
    """

    def __init__(self, specs: Iterable[RunSpec], store: RunStore, *, parallel: int = 1, enabled: bool = True,
                 title: str = "sweep"):
        from rich.console import Console

        self.specs = {s.key: s for s in specs}
        self.parallel = max(1, parallel)
        self.title = title
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.done = {k for k in self.specs if store.done(k)}
        self.skipped = len(self.done)
        self.running: dict[str, float] = {}
        self.failed_keys: set[str] = set()
        self.durations: dict[str, list[float]] = defaultdict(list)
        for key in self.done:
            self.durations[_kind(self.specs[key])].append(float(store.load(key).get("seconds") or 0.0))
        self.t0 = time.perf_counter()
        self._live: Any = None

    # -- what the backends call
    def started(self, spec: RunSpec) -> None:
        """``spec`` began (or was handed to a worker)."""
        self.running[spec.key] = time.perf_counter()
        self._refresh()

    def finished(self, spec: RunSpec, record: Mapping[str, Any]) -> None:
        """``spec`` finished; ``record`` is its store record (``seconds`` is used for the ETA)."""
        began = self.running.pop(spec.key, None)
        seconds = record.get("seconds")
        if seconds is None and began is not None:
            seconds = time.perf_counter() - began
        self.done.add(spec.key)
        if seconds is not None:
            self.durations[_kind(spec)].append(float(seconds))
        self.console.print(f"{time.strftime('%H:%M:%S')} done {spec.label} "
                           f"({seconds or 0:.0f}s) [{len(self.done)}/{len(self.specs)}]",
                           highlight=False, soft_wrap=True)
        self._refresh()

    def failed(self, spec: RunSpec, error: BaseException) -> None:
        """``spec`` raised ``error`` (the sweep goes on with the other runs)."""
        self.running.pop(spec.key, None)
        self.failed_keys.add(spec.key)
        self.console.print(f"{time.strftime('%H:%M:%S')} FAILED {spec.label}: {error!r}", highlight=False,
                           soft_wrap=True)
        self._refresh()

    # -- numbers
    def elapsed(self) -> float:
        """Seconds since this view was created."""
        return time.perf_counter() - self.t0

    @property
    def left(self) -> int:
        """Runs neither finished, failed nor running."""
        return len(self.specs) - len(self.done) - len(self.running) - len(self.failed_keys)

    def eta_seconds(self) -> float | None:
        """Estimated seconds until every run has finished (``None`` before any duration is known)."""
        known = [d for ds in self.durations.values() for d in ds]
        if not known:
            return None
        overall = sum(known) / len(known)
        total = 0.0
        for key, spec in self.specs.items():
            if key in self.done or key in self.failed_keys:
                continue
            ds = self.durations.get(_kind(spec)) or [overall]
            mean = sum(ds) / len(ds)
            if key in self.running:  # already partly done
                mean = max(0.0, mean - (time.perf_counter() - self.running[key]))
            total += mean
        return total / self.parallel

    def summary(self) -> str:
        """One line: done / running / left / failed and the ETA."""
        eta = self.eta_seconds()
        eta_text = "ETA unknown" if eta is None else f"ETA {_duration(eta)}"
        return (f"{len(self.done)}/{len(self.specs)} done ({self.skipped} from earlier sessions), "
                f"{len(self.running)} running, {self.left} left, {len(self.failed_keys)} failed; "
                f"elapsed {_duration(time.perf_counter() - self.t0)}, {eta_text}")

    # -- display
    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        table.add_row(self.summary())
        now = time.perf_counter()
        for key, began in list(self.running.items())[:8]:
            table.add_row(f"  running {self.specs[key].label} ({_duration(now - began)})")
        if len(self.running) > 8:
            table.add_row(f"  … and {len(self.running) - 8} more")
        return Panel(table, title=self.title, expand=False)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def __enter__(self) -> SweepProgress:
        if self.enabled:
            from rich.live import Live

            self._live = Live(self._render(), console=self.console, refresh_per_second=2,
                              get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)  # its last frame stays on screen
            self._live = None
        else:
            self.console.print(self.summary(), highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
