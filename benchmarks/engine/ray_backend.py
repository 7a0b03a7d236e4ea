"""The Ray Tune backend of the sweep engine (``--backend ray``; Ray is an optional extra).

One Tune trial per run, in phases by dependency depth (Tune has no dependencies between trials);
``address`` joins an existing cluster, CPUs/GPUs per trial are settable, each trial reports its
metrics as it goes (``ctx.report``) and its final result.  The bookkeeping is the run store (see
:mod:`.backends`), not Tune's restore: runs already recorded are not submitted again, and each
trial's record also comes back with its final result, so the driver's store is complete even
when the nodes do not share it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from composition_gym.benchmarks.engine.backends import RunSpec, raise_failures, check_graph, execute, phases
from composition_gym.benchmarks.engine.store import RunStore
from composition_gym.config import Config, bounded


@dataclass(frozen=True)
class RayOptions(Config):
    """How the Ray backend runs trials."""

    address: str | None = None
    """An existing cluster to join ("auto", "ray://host:10001"); None starts a local Ray."""
    cpus_per_trial: float = bounded(1.0, gt=0)
    """CPUs each trial reserves (fractions allowed)."""
    gpus_per_trial: float = bounded(0.0, ge=0)
    """GPUs each trial reserves (fractions allowed)."""
    max_concurrent: int | None = bounded(None, ge=1)
    """Trials at once (None: as many as resources allow)."""
    num_cpus: int | None = bounded(None, ge=1)
    """CPUs of the local Ray started when address is None (None: all)."""


def _ray_trainable(param: dict[str, Any], *, specs: Mapping[str, RunSpec], root: str) -> dict[str, Any]:
    """One Tune trial: execute the run named by ``param["run"]``, reporting metrics as it goes."""
    from ray import tune

    spec = specs[param["run"]]

    def report(metrics: dict[str, Any]) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))})

    record = execute(spec, root, specs, reporter=report)
    final = {"run_key": spec.key, "seconds": record["seconds"], "done": True,
             "record_json": json.dumps(record, default=str)}
    final.update({k: v for k, v in _flat(record["result"]).items()})
    tune.report(final)
    return final


def _flat(result: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested numbers as ``{"a/b": 1.0}`` (what Tune's result table can show)."""
    out: dict[str, Any] = {}
    for k, v in result.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def run_ray(specs: Sequence[RunSpec], store: RunStore, *, options: RayOptions | None = None,
            progress: Any = None, name: str = "sweep") -> None:
    """Run every unfinished spec as a Ray Tune trial, one Tune run per dependency phase."""
    try:
        import ray
        from ray import tune
    except ImportError as exc:
        raise ImportError("the ray backend needs Ray Tune: pip install 'composition-gym[ray]'") from exc
    options = options or RayOptions()
    options.validate()
    by_key = check_graph(specs)
    started_ray = False
    if not ray.is_initialized():
        # The workers import this package; a local Ray shares this interpreter's environment.
        ray.init(address=options.address, num_cpus=None if options.address else options.num_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
        started_ray = True
    failures: dict[str, str] = {}
    try:
        for k, group in enumerate(phases(specs)):
            todo = [s for s in group if not store.done(s.key)
                    and not any(d in failures for d in s.deps)]
            failures.update({s.key: "skipped: a dependency failed" for s in group
                             if not store.done(s.key) and s not in todo})
            if not todo:
                continue
            trainable = tune.with_resources(
                tune.with_parameters(_ray_trainable, specs=by_key, root=str(store.root)),
                {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
            tuner = tune.Tuner(
                trainable,
                param_space={"run": tune.grid_search([s.key for s in todo])},
                tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent),
                run_config=tune.RunConfig(name=f"{name}-phase{k}", storage_path=str(store.root / "ray"),
                                          verbose=0, callbacks=[_TuneProgress(by_key, progress)]
                                          if progress is not None else None),
            )
            results = tuner.fit()
            for result in results:
                key = (result.config or {}).get("run")
                if key is not None and result.error is None and not store.done(key):
                    # The trial ran on a node that does not share the store: its record came back
                    # with its final result.
                    store.save(json.loads(result.metrics["record_json"]))
            errors = {r.config["run"]: str(r.error) for r in results if r.config and r.error is not None}
            failures.update({s.key: errors.get(s.key, "the trial failed before it started")
                             for s in todo if not store.done(s.key)})
    finally:
        if started_ray:
            ray.shutdown()
    raise_failures(failures, by_key)


def _TuneProgress(specs: Mapping[str, RunSpec], progress: Any) -> Any:
    """A Tune callback that forwards trial starts, completions and errors to ``progress``."""
    from ray.tune import Callback

    class TuneProgress(Callback):
        def __init__(self, view: Any) -> None:
            self.view = view  # an argument, not a closure variable: the class itself is pickled

        def __getstate__(self) -> dict:
            # Tune pickles its callbacks with its experiment state; a live view holds locks and
            # is only of use in this process.
            return {"view": None}

        def _each(self, method: str, trial: Any, *args: Any) -> None:
            if self.view is not None:
                getattr(self.view, method)(specs[trial.config["run"]], *args)

        def on_trial_start(self, iteration, trials, trial, **info):  # noqa: D102 (Tune's hook)
            self._each("started", trial)

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: D102
            self._each("finished", trial, {"seconds": (trial.last_result or {}).get("seconds")})

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: D102
            self._each("failed", trial, RuntimeError("trial failed"))

    return TuneProgress(progress)
