"""The experiment: what is run and how it is judged.

* :mod:`.claims` — the paper's claims as data (families, conditions, comparisons) and their statistics;
* :mod:`.protocol` — budgets, the runs of one cell (SFT, then RL arms) and the run functions;
* :mod:`.sweep` / :mod:`.reproduce` — the grid of cells and the one-cell reproduction (front ends);
* :mod:`.report` — markdown tables and figures of their documents.

It runs on :mod:`composition_gym.benchmarks.engine`, which knows nothing about the experiment.
"""
