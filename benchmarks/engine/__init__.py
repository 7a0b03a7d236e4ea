"""The run engine: dependent, resumable runs on a local process pool or Ray Tune.

* :mod:`.store` — the run store (one record per finished run, keyed by a hash of its config);
* :mod:`.backends` — in-process, local process pool, and the graph checks shared by every backend;
* :mod:`.ray_backend` — Ray Tune (optional extra ``ray``);
* :mod:`.progress` — the live progress view;
* :mod:`.provenance` — date, commit and command line recorded with every result.

It knows nothing about the experiment (:mod:`composition_gym.benchmarks.experiment`).
"""
