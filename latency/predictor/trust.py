"""When a predicted latency deserves a caution, judged from its predictor's own metadata.

A predictor's output is one confident number whatever it was trained on, and nothing in
a prediction says that the model behind it saw 40 samples, or misses a tenth of its
held-out cells by more than 10 %. `predictor.json` records both (``extra.n_train``,
``heldout_metrics``), so every command that prints a prediction (`nas latency`,
`nas retrain`, `nas hardware list`) can say so in one line, and say what would fix it.

Thresholds, and why:

* fewer than ``MIN_TRAIN`` (500) training samples (not for a predictor adapted from a
  device prior, `adapt.py`, which is meant to need few): the MLP ensemble learns one cost per
  (edge, op) plus their interactions, 224 one-hot inputs in the DARTS space; the shipped
  predictors use 800, and the held-out figures of a few hundred samples (200 rows x 20 %
  held out = 40 cells) are themselves too noisy to vouch for the model;
* held-out MAPE above ``MAX_MAPE`` (10 %): a latency-aware search compares cells whose
  latencies differ by 10-30 %, which such a predictor cannot rank;
* fewer than ``MIN_WITHIN_10`` (80 %) of held-out predictions within 10 %: a low MAPE can
  hide a heavy tail of badly predicted cells, which is where a search ends up;
* more than ``MAX_NOISY_SHARE`` (10 %) of the training samples marked noisy (their timing
  spread stayed above the profile's threshold after re-measuring): the machine was busy
  while profiling, and one label in ten is off by more than the spread the profile
  allows. Only checked when the artifact records it (``extra.n_noisy_train``, written by
  `train_predictor` for measured samples); simulated and imported samples carry no such
  mark, and a missing figure is never read as zero.

A figure that is missing or malformed (an artifact from another version) is skipped,
never guessed.
"""

from __future__ import annotations

import math
from typing import Any

from search_spaces.space import DEFAULT_SPACE

MIN_TRAIN = 500
MAX_MAPE = 0.10
MIN_WITHIN_10 = 0.80
MAX_NOISY_SHARE = 0.10
#: what a caution suggests profiling up to, at least (the shipped predictors' 1,000)
SUGGESTED_SAMPLES = 1000


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _section(meta: dict[str, Any], key: str) -> dict[str, Any]:
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def _suggested_total(n_train: float | None, n_test: float | None) -> int:
    """Twice the samples it had (rounded up to hundreds), at least `SUGGESTED_SAMPLES`;
    `nas profile --samples N` counts the total, so a resumed run adds the difference."""
    had = (n_train or 0) + (n_test or 0)
    return max(SUGGESTED_SAMPLES, int(math.ceil(2 * had / 100.0)) * 100)


def _remedy(meta: dict[str, Any], extra: dict[str, Any], total: int, noisy_only: bool) -> str:
    hardware = meta.get("hardware")
    hardware = hardware if isinstance(hardware, str) and hardware else "NAME"
    space = meta.get("space")
    space = space if isinstance(space, str) and space else DEFAULT_SPACE
    space_opt = "" if space == DEFAULT_SPACE else f" --space {space}"
    sources = extra.get("sources")
    if isinstance(sources, list) and sources and all(s == "imported" for s in sources):
        return "import more measurements (`nas profile import`) and train it again"
    if noisy_only:
        return (f"profile again while the machine is quiet (`nas profile --hardware {hardware}"
                f"{space_opt} --samples {total} --out FILE`) and train on FILE")
    train = f"`nas predictor train --hardware {hardware}{space_opt} --force`"
    if isinstance(extra.get("prior"), str):  # adapted from a device prior (adapt.py)
        return (f"adapt it on more samples (`nas profile --hardware {hardware}{space_opt} "
                "--samples 50 --out FILE`, then `nas predictor adapt --hardware "
                f"{hardware} --samples FILE --force`), or profile {total} and {train}")
    return (f"profile more samples: `nas profile --hardware {hardware}{space_opt} "
            f"--samples {total}`, then {train}")


def prediction_caution(meta: dict[str, Any]) -> str | None:
    """One line saying why predictions of the predictor with metadata `meta` (its
    `predictor.json`, as `read_metadata` returns it) should be taken with care and what
    to do about it, or None when nothing recorded there calls for it."""
    extra = _section(meta, "extra")
    metrics = _section(meta, "heldout_metrics")
    n_train = _number(extra.get("n_train"))
    n_test = _number(extra.get("n_test"))
    mape = _number(metrics.get("mape"))
    within_10 = _number(metrics.get("within_10"))
    n_noisy = _number(extra.get("n_noisy_train"))

    reasons = []
    # a prior adapted to a few samples is meant to have few: its leave-one-out metrics
    # (heldout_metrics) are what can call for care
    adapted = isinstance(extra.get("prior"), str)
    if n_train is not None and n_train < MIN_TRAIN and not adapted:
        reasons.append(f"trained on only {int(n_train)} samples (fewer than {MIN_TRAIN})")
    if mape is not None and mape > MAX_MAPE:
        reasons.append(f"held-out MAPE {100 * mape:.1f}% (above {100 * MAX_MAPE:.0f}%)")
    if within_10 is not None and within_10 < MIN_WITHIN_10:
        reasons.append(f"only {100 * within_10:.0f}% of held-out predictions within 10% "
                       f"(below {100 * MIN_WITHIN_10:.0f}%)")
    noisy = (n_noisy is not None and n_train is not None and n_train > 0
             and n_noisy / n_train > MAX_NOISY_SHARE)
    if noisy:
        assert n_noisy is not None and n_train is not None
        reasons.append(f"{int(n_noisy)} of its {int(n_train)} training samples "
                       f"({100 * n_noisy / n_train:.0f}%) were marked noisy "
                       f"(above {100 * MAX_NOISY_SHARE:.0f}%)")
    if not reasons:
        return None
    remedy = _remedy(meta, extra, _suggested_total(n_train, n_test),
                     noisy_only=noisy and len(reasons) == 1)
    return f"predictor {'; '.join(reasons)}: treat its figures as rough; {remedy}"
