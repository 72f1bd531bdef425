"""The one format of the per-round training metric lines, and the SageMaker metric definitions
that parse them.

Stdlib only: the job definitions (`ml.jobs`) import it, and they run inside the Prepare Lambda,
which has no numpy or xgboost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ml.hyperparameters import EVAL_METRICS

# Names of the evaluation sets; they are part of the metric line format.
TRAIN_NAME: Final[str] = "train"
VALIDATION_NAME: Final[str] = "validation"

_NUMBER = r"([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|nan|inf)"


def format_metric_line(round_number: int, scores: Mapping[str, Mapping[str, float]]) -> str:
    """`[round 12] train-logloss=0.41234 validation-logloss=0.43210` (data set, then metric order)."""
    parts = [
        f"{data}-{metric}={value:.5f}"
        for data, metrics in scores.items()
        for metric, value in metrics.items()
    ]
    return f"[round {round_number}] " + " ".join(parts)


# SageMaker applies each regex to every log line and keeps the first capture group. The names
# (`train:logloss`) mirror those of AWS's built-in XGBoost, so its dashboards keep working.
METRIC_DEFINITIONS: Final[list[dict[str, str]]] = [
    {"Name": f"{data}:{metric}", "Regex": rf"\[round \d+\].*?\b{data}-{metric}={_NUMBER}"}
    for data in (TRAIN_NAME, VALIDATION_NAME)
    for metric in EVAL_METRICS
]
