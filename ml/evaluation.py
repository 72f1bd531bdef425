"""Evaluate predicted probabilities against the test labels; write the report and its plots.

Plots are drawn on matplotlib ``Figure`` objects with the Agg canvas directly, so no display
and no pyplot state are involved (works in containers and threads alike).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from ml.data import SYNTHETIC_TITLE_PREFIX

__all__ = ["REPORT_FILES", "EvaluationError", "evaluate", "write_report"]

REPORT_FILES: tuple[str, ...] = ("evaluation.json", "confusion_matrix.png", "roc_curve.png")


class EvaluationError(ValueError):
    """Labels and probabilities cannot be compared (lengths, values)."""


def evaluate(
    labels: Sequence[float] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    train_labels: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of ``probabilities`` (of class 1) against 0/1 ``labels``.

    A row is predicted 1 when its probability is at least ``threshold`` (as the model server
    does). ``baseline_accuracy`` is the accuracy of always predicting the majority class; the
    notebook computes it on the whole data set's label distribution, so with ``train_labels``
    it uses training + test labels (``baseline_basis: "train+test"``), otherwise the test
    labels alone (``"test"``). ``confusion_matrix.matrix`` is ``[[tn, fp], [fn, tp]]`` (rows =
    actual, columns = predicted); ``crosstab`` is the notebook's ``pd.crosstab(...,
    margins=True)`` as a nested dict (actual -> predicted -> count, with ``All`` margins).
    ``auc`` is None when the labels hold only one class (ROC AUC is undefined then).
    """
    y_true = _labels(labels, "labels")
    y_prob = _probabilities(probabilities)
    if y_true.shape[0] != y_prob.shape[0]:
        raise EvaluationError(
            f"{y_true.shape[0]} labels but {y_prob.shape[0]} probabilities: both must describe the same "
            "rows in the same order (test labels and the transform output of test_no_label)"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise EvaluationError(f"threshold must be a number in [0, 1], got {threshold!r}")
    y_pred = (y_prob >= threshold).astype(np.int64)

    if train_labels is not None:
        basis = np.concatenate([_labels(train_labels, "train_labels"), y_true])
        baseline_basis = "train+test"
    else:
        basis = y_true
        baseline_basis = "test"
    positive_share = float(basis.mean())
    tn = int(np.sum((y_true == 0) & (y_pred == 0)))
    fp = int(np.sum((y_true == 0) & (y_pred == 1)))
    fn = int(np.sum((y_true == 1) & (y_pred == 0)))
    tp = int(np.sum((y_true == 1) & (y_pred == 1)))
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n": int(y_true.shape[0]),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "baseline_accuracy": max(positive_share, 1 - positive_share),
        "baseline_basis": baseline_basis,
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "auc": float(roc_auc_score(y_true, y_prob)) if both_classes else None,
        "logloss": float(log_loss(y_true, np.clip(y_prob, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "positive_rate": float(y_true.mean()),
        "predicted_positive_rate": float(y_pred.mean()),
        "confusion_matrix": {"labels": [0, 1], "matrix": [[tn, fp], [fn, tp]]},
        "crosstab": {
            "rows": "actual",
            "columns": "predicted",
            "table": {
                "0": {"0": tn, "1": fp, "All": tn + fp},
                "1": {"0": fn, "1": tp, "All": fn + tp},
                "All": {"0": tn + fn, "1": fp + tp, "All": tn + fp + fn + tp},
            },
        },
    }


def _numbers(values: Sequence[float] | np.ndarray, name: str, expected: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] == 0:
        raise EvaluationError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{name} must be {expected}; got values like {array[:3].tolist()}") from None


def _labels(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    numbers = _numbers(values, name, "numbers 0 or 1")
    bad = np.flatnonzero(~np.isin(numbers, (0.0, 1.0)))
    if bad.size:
        examples = sorted({float(v) for v in numbers[bad][:1000]})[:5]
        raise EvaluationError(
            f"{name} must be 0 or 1; row {int(bad[0]) + 1} is {float(numbers[bad[0]])!r} "
            f"({bad.size} bad value(s), e.g. {examples})"
        )
    return numbers.astype(np.int64)


def _probabilities(values: Sequence[float] | np.ndarray) -> np.ndarray:
    numbers = _numbers(values, "probabilities", "numbers")
    bad = np.flatnonzero(~((numbers >= 0) & (numbers <= 1)))
    if bad.size:
        raise EvaluationError(
            f"probabilities must be in [0, 1]; row {int(bad[0]) + 1} is {float(numbers[bad[0]])!r} "
            "(is the transform output the probability column?)"
        )
    return numbers


def write_report(
    metrics: Mapping[str, Any],
    out_dir: Path | str,
    labels: Sequence[float] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
) -> list[Path]:
    """Write ``evaluation.json``, ``confusion_matrix.png`` and ``roc_curve.png`` into ``out_dir``.

    ``metrics`` is usually :func:`evaluate`'s result, possibly with keys added by the caller
    (a quality verdict, the ``data`` block); it is written as given. When
    ``metrics["data"]["synthetic"]`` is true, both plot titles start with "SYNTHETIC DATA".
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = _labels(labels, "labels")
    y_prob = _probabilities(probabilities)
    if y_true.shape[0] != y_prob.shape[0]:
        raise EvaluationError(f"{y_true.shape[0]} labels but {y_prob.shape[0]} probabilities")

    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True, default=_json_default) + "\n")

    # A PNG travels without its evaluation.json, so a plot of synthetic data says so itself.
    data = metrics.get("data")
    prefix = SYNTHETIC_TITLE_PREFIX if isinstance(data, Mapping) and data.get("synthetic") is True else ""
    threshold = float(metrics.get("threshold", 0.5))
    y_pred = (y_prob >= threshold).astype(np.int64)
    matrix = np.array(
        [[np.sum((y_true == a) & (y_pred == p)) for p in (0, 1)] for a in (0, 1)],
        dtype=np.int64,
    )
    cm_path = out_dir / "confusion_matrix.png"
    _plot_confusion_matrix(matrix, threshold, cm_path, title_prefix=prefix)
    roc_path = out_dir / "roc_curve.png"
    _plot_roc(y_true, y_prob, roc_path, title_prefix=prefix)
    return [json_path, cm_path, roc_path]


def _json_default(value: object) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metric value {value!r} of type {type(value).__name__} cannot be written as JSON")


def _plot_confusion_matrix(matrix: np.ndarray, threshold: float, path: Path, *, title_prefix: str) -> None:
    figure = Figure(figsize=(5, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax)
    total = max(int(matrix.sum()), 1)
    for actual in (0, 1):
        for predicted in (0, 1):
            count = int(matrix[actual, predicted])
            dark = count > matrix.max() / 2
            ax.text(
                predicted,
                actual,
                f"{count}\n{count / total:.1%}",
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
    ax.set_xticks([0, 1], labels=["0", "1"])
    ax.set_yticks([0, 1], labels=["0", "1"])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    title = f"{title_prefix}Confusion matrix (threshold {threshold:g})"
    ax.set_title(title)
    figure.tight_layout()
    # The PNG's Title metadata repeats the title, so a tool (or a test) can read it without OCR.
    figure.savefig(path, dpi=100, metadata={"Title": title})


def _plot_roc(y_true: np.ndarray, y_prob: np.ndarray, path: Path, *, title_prefix: str) -> None:
    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    if len(np.unique(y_true)) == 2:
        fpr, tpr, _ = roc_curve(y_true, y_prob)
        ax.plot(fpr, tpr, label=f"model (AUC = {roc_auc_score(y_true, y_prob):.3f})")
    else:
        ax.text(0.5, 0.5, "ROC undefined: only one class in the labels", ha="center", va="center")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    title = f"{title_prefix}ROC curve"
    ax.set_title(title)
    ax.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Title": title})
