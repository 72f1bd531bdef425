"""The one format of the per-round training metric lines, and the SageMaker metric definitions
that parse them.

Stdlib only: the job definitions (`ml.jobs`) import it, and they run inside the Prepare Lambda,
which has no numpy or xgboost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

# `[round 12] train-logloss=0.412340 validation-logloss=0.432100`
_LINE_PREFIX: Final[str] = "[round {round}]"
METRIC_NAMES: Final[tuple[str, ...]] = (
    "train-logloss",
    "train-auc",
    "train-error",
    "validation-logloss",
    "validation-auc",
    "validation-error",
)


def format_metric_line(round_number: int, metrics: Mapping[str, float]) -> str:
    """One line per boosting round; `metrics` keys look like `train-logloss`."""
    fields = " ".join(f"{name}={value:.6f}" for name, value in sorted(metrics.items()))
    return f"{_LINE_PREFIX.format(round=round_number)} {fields}"


def _regex_for(metric: str) -> str:
    # SageMaker applies each regex to every log line and takes the first capture group.
    return r"\[round \d+\].*\b" + re.escape(metric) + r"=([-+0-9.eE]+|nan|inf)"


# SageMaker metric names may contain `:` but not `-` in the first part; `train:logloss` mirrors
# the names AWS's built-in XGBoost uses, so dashboards built for it keep working.
METRIC_DEFINITIONS: Final[list[dict[str, str]]] = [
    {"Name": metric.replace("-", ":", 1), "Regex": _regex_for(metric)} for metric in METRIC_NAMES
]
