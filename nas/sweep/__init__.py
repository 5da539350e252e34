"""`nas sweep`: an Optuna multi-objective study over search hyper-parameters.

Each trial is a short `nas search` and a short `nas retrain` of the genotype it found, run
as subprocesses (`trial.py`), scored on the retrain's held-out accuracy against latency
(and modelled energy). The study lives in an Optuna storage (`study.py`: SQLite in the
sweep directory by default, any database URL for many workers), which also holds the
sweep's fixed settings (`settings.py`), so resumes and extra workers run the same
experiment. `pareto.py` writes the front after every trial.

Docs: docs/sweep.md.
"""
