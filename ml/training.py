"""Training: read the preprocessed CSV, train an XGBoost booster, save it in XGBoost's format.

No SageMaker paths here. The container layer (``ml.sagemaker``) adds checkpoints, SIGTERM
handling and distributed training through ``callbacks`` and ``initial_model``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from ml.hyperparameters import HYPERPARAMETERS, booster_params

# The line format and its regexes live in the stdlib-only ml.metric_log, which the job
# definitions (Prepare Lambda) import too; re-exported here for the training side.
from ml.metric_log import METRIC_DEFINITIONS, TRAIN_NAME, VALIDATION_NAME, format_metric_line

__all__ = [
    "METRIC_DEFINITIONS",
    "MODEL_FILENAME",
    "TRAIN_NAME",
    "VALIDATION_NAME",
    "DataError",
    "MetricLogger",
    "format_metric_line",
    "load_booster",
    "read_labelled_csv",
    "save_model",
    "train_booster",
]

MODEL_FILENAME = "xgboost-model"
_DEFAULT_EARLY_STOPPING = int(HYPERPARAMETERS["early_stopping_rounds"].default or 0)

Dataset = tuple[np.ndarray, np.ndarray]
Log = Callable[[str], None]


class DataError(ValueError):
    """The training data cannot be used; the message names the file and row."""


# ---------------------------------------------------------------------------------------------
# Reading data


def read_labelled_csv(path: Path | str) -> Dataset:
    """Read headerless CSV rows ``label,feature,...`` from a file or a directory of files.

    A directory is read recursively in sorted order (SageMaker may copy an S3 prefix with
    sub-folders); hidden files are skipped. Empty feature fields are missing values (NaN,
    which XGBoost handles); everything else must be a number and labels must be 0 or 1.
    Returns ``(features float64 [n, f], labels int64 [n])``.
    """
    path = Path(path)
    files = _data_files(path)
    feature_blocks: list[np.ndarray] = []
    label_blocks: list[np.ndarray] = []
    width: int | None = None
    width_source: Path | None = None
    for file in files:
        block = _read_one_csv(file)
        if block is None:
            continue
        if width is not None and block.shape[1] != width:
            raise DataError(
                f"{file} has {block.shape[1]} columns but {width_source} has {width}: every file "
                "of a channel must have the same columns (label first, then the same features)"
            )
        width, width_source = block.shape[1], file
        feature_blocks.append(block[:, 1:])
        label_blocks.append(block[:, 0].astype(np.int64))
    if not feature_blocks:
        listed = ", ".join(str(f) for f in files) or "no files"
        raise DataError(f"no data rows in {path} ({listed}): expected headerless CSV rows label,feature,...")
    features = np.concatenate(feature_blocks)
    if features.shape[1] == 0:
        raise DataError(f"{path} has only one column: expected the label followed by at least one feature")
    return features, np.concatenate(label_blocks)


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    raise DataError(f"training data not found: {path} is neither a file nor a directory")


def _read_one_csv(file: Path) -> np.ndarray | None:
    """Numbers of one file, or None when it has no rows. The C parser does the common case;
    anything unusual goes through the slow row-by-row pass that can say what is wrong."""
    if file.stat().st_size == 0:
        return None
    try:
        frame = pd.read_csv(
            file, header=None, dtype=np.float64, skip_blank_lines=True, float_precision="round_trip"
        )
    except (ValueError, pd.errors.ParserError):
        return _diagnose(file)
    except pd.errors.EmptyDataError:
        return None
    values = frame.to_numpy(dtype=np.float64)
    # NaN may be a legitimate missing feature or a short (ragged) row: only the slow pass can tell.
    # Bad labels too: blank lines are skipped, so only the slow pass knows the line numbers.
    if np.isnan(values).any() or not np.isin(values[:, 0], (0.0, 1.0)).all():
        return _diagnose(file)
    return values


def _diagnose(file: Path) -> np.ndarray | None:
    rows: list[list[float]] = []
    line_numbers: list[int] = []
    width: int | None = None
    with file.open(newline="", encoding="utf-8", errors="replace") as handle:
        for line_number, fields in enumerate(csv.reader(handle), start=1):
            if not fields or all(not f.strip() for f in fields):
                continue
            if width is None:
                width = len(fields)
            elif len(fields) != width:
                raise DataError(
                    f"{file} row {line_number} has {len(fields)} fields, but the first row has {width}: "
                    "every row must have the label followed by the same number of features"
                )
            rows.append(_parse_row(file, line_number, fields, is_first=not rows))
            line_numbers.append(line_number)
    if not rows:
        return None
    values = np.array(rows, dtype=np.float64)
    _check_labels(file, values[:, 0], row_numbers=line_numbers)
    return values


def _parse_row(file: Path, line_number: int, fields: list[str], *, is_first: bool) -> list[float]:
    parsed: list[float] = []
    for column, field in enumerate(fields, start=1):
        text = field.strip()
        if not text and column > 1:
            parsed.append(math.nan)
            continue
        try:
            parsed.append(float(text))
        except ValueError:
            if is_first and _looks_like_header(fields):
                raise DataError(
                    f"{file} row {line_number} looks like a header row ({', '.join(fields[:4])}, ...): "
                    "training data must be headerless CSV with the label in the first column "
                    "(use train/train_data.csv, not train_headers/train_data_with_headers.csv)"
                ) from None
            what = "the label is empty" if not text else f"value {field!r} is not a number"
            raise DataError(f"{file} row {line_number} column {column}: {what}") from None
    return parsed


def _looks_like_header(fields: Sequence[str]) -> bool:
    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    names = [f for f in fields if f.strip()]
    return bool(names) and sum(not is_number(f) for f in names) >= max(1, len(names) // 2)


def _check_labels(file: Path, labels: np.ndarray, row_numbers: list[int]) -> None:
    bad = np.flatnonzero(~np.isin(labels, (0.0, 1.0)))
    if bad.size:
        index = int(bad[0])
        row = row_numbers[index]
        raise DataError(
            f"{file} row {row}: label {float(labels[index])!r} is not 0 or 1 "
            f"({bad.size} bad label(s) in this file); the first column must be the 0/1 label"
        )


# ---------------------------------------------------------------------------------------------
# Training


class MetricLogger(xgb.callback.TrainingCallback):
    """Prints one metric line per round through ``log``.

    The round number is the model's total number of boosted rounds after the round
    (1-based, counting rounds of a resumed model), so a resumed run continues the numbering.
    """

    def __init__(self, log: Log) -> None:
        super().__init__()
        self._log = log

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        scores: dict[str, dict[str, float]] = {}
        for data, metrics in evals_log.items():
            scores[data] = {}
            for metric, history in metrics.items():
                last = history[-1]
                scores[data][metric] = float(last[0] if isinstance(last, tuple) else last)
        self._log(format_metric_line(model.num_boosted_rounds(), scores))
        return False


def train_booster(
    train: Dataset,
    validation: Dataset | None,
    params: Mapping[str, Any],
    *,
    callbacks: Iterable[xgb.callback.TrainingCallback] = (),
    initial_model: xgb.Booster | Path | str | None = None,
    log: Log = print,
) -> xgb.Booster:
    """Train on ``train`` (features, labels), evaluating on ``validation`` when given.

    ``params`` is the output of :func:`ml.hyperparameters.parse_hyperparameters`. With
    ``initial_model`` (a Booster or a model file), training continues it and stops once the
    model has ``num_round`` rounds in total, so resuming from a checkpoint gives the same
    number of rounds as an uninterrupted run. Early stopping (``early_stopping_rounds``, 10 by
    default, 0 = off) watches the first ``eval_metric`` on the validation set and keeps the best
    round; without validation it is skipped with a log line. ``callbacks`` run after the metric logger.
    """
    train_x, train_y = _check_dataset("train", train)
    num_round = int(params["num_round"])
    early_stopping = params.get("early_stopping_rounds")
    base = _initial_booster(initial_model)
    done = base.num_boosted_rounds() if base is not None else 0
    remaining = num_round - done
    if base is not None and base.num_features() != train_x.shape[1]:
        raise DataError(
            f"initial model has {base.num_features()} features but the training data has {train_x.shape[1]}: "
            "the checkpoint belongs to other data; delete it to start over"
        )
    if remaining <= 0:
        log(f"initial model already has {done} rounds (num_round={num_round}); nothing to train")
        assert base is not None
        return base

    dtrain = xgb.DMatrix(train_x, label=train_y)
    evals: list[tuple[xgb.DMatrix, str]] = [(dtrain, TRAIN_NAME)]
    if validation is not None:
        valid_x, valid_y = _check_dataset("validation", validation)
        if valid_x.shape[1] != train_x.shape[1]:
            raise DataError(
                f"validation data has {valid_x.shape[1]} features but training data has {train_x.shape[1]}: "
                "both must come from the same preprocessing run"
            )
        evals.append((xgb.DMatrix(valid_x, label=valid_y), VALIDATION_NAME))

    all_callbacks: list[xgb.callback.TrainingCallback] = [MetricLogger(log)]
    if early_stopping:  # None (absent) or 0 (switched off) train all num_round rounds
        if validation is None:
            # Only a value someone chose is worth a line: the default exists for validation runs.
            if early_stopping != _DEFAULT_EARLY_STOPPING:
                log(f"early_stopping_rounds={early_stopping} ignored: there is no validation data")
        else:
            metric = next(iter(params.get("eval_metric") or ["logloss"]))
            all_callbacks.append(
                xgb.callback.EarlyStopping(
                    rounds=int(early_stopping),
                    data_name=VALIDATION_NAME,
                    metric_name=metric,
                    save_best=True,
                )
            )
    all_callbacks.extend(callbacks)

    resumed = f", resuming a model with {done} rounds" if done else ""
    log(
        f"training on {train_x.shape[0]} rows x {train_x.shape[1]} features"
        + (f", validating on {evals[1][0].num_row()} rows" if validation is not None else "")
        + f": {remaining} of {num_round} rounds{resumed}"
    )
    booster = xgb.train(
        booster_params(params),
        dtrain,
        num_boost_round=remaining,
        evals=evals,
        callbacks=all_callbacks,
        xgb_model=base,
        verbose_eval=False,
    )
    if early_stopping and validation is not None:
        log(
            f"early stopping kept {booster.num_boosted_rounds()} rounds "
            f"(best validation score {booster.best_score:.5f} at round {booster.best_iteration + 1})"
        )
    return booster


def _check_dataset(name: str, data: Dataset) -> Dataset:
    features = np.asarray(data[0], dtype=np.float64)
    labels = np.asarray(data[1])
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise DataError(f"{name} features must be a non-empty 2-D array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise DataError(
            f"{name} has {features.shape[0]} feature rows but labels of shape {labels.shape}: "
            "expected one label per row"
        )
    return features, labels


def _initial_booster(initial_model: xgb.Booster | Path | str | None) -> xgb.Booster | None:
    if initial_model is None or isinstance(initial_model, xgb.Booster):
        return initial_model
    return load_booster(initial_model)


# ---------------------------------------------------------------------------------------------
# Model files


def save_model(booster: xgb.Booster, model_dir: Path | str) -> Path:
    """Write ``model_dir/xgboost-model`` in XGBoost's JSON format (never pickle).

    The bytes are written explicitly as JSON because the file name has no extension, from
    which XGBoost would otherwise guess the format.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MODEL_FILENAME
    path.write_bytes(bytes(booster.save_raw(raw_format="json")))
    return path


def load_booster(path: Path | str) -> xgb.Booster:
    """Load a model saved by :func:`save_model` (or any XGBoost JSON/UBJ model).

    ``path`` is the model file or a directory holding ``xgboost-model``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"model file not found: {path} (expected the {MODEL_FILENAME} that training writes)"
        )
    raw = path.read_bytes()
    # XGBoost JSON and UBJ both start with '{'; a pickle starts with 0x80.
    if not raw.startswith(b"{"):
        raise ValueError(
            f"{path} is not an XGBoost JSON/UBJ model (first byte {raw[:1]!r}); pickled models are not "
            "loaded because unpickling runs arbitrary code: save the model with Booster.save_model(*.json)"
        )
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster
