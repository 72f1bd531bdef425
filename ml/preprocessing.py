"""The notebook's processing job, fixed: split, scale on the training split only, write CSVs.

Differences from the notebook's ``preprocessing.py`` (on purpose): the default split is the
notebook's execution value 0.2 (its argparse default 0.3 was never used); the discarded
``df.sample(frac=1)`` is gone (``train_test_split`` shuffles); column names stay attached to
their columns instead of the hard-coded ``newcolorder``, which misnamed columns; scaled
columns keep their place; and an optional validation set is carved out of the training split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from ml.config import LABEL, DatasetConfig
from ml.data import SchemaError, is_synthetic

__all__ = [
    "OPTIONAL_OUTPUTS",
    "OUTPUT_FILES",
    "REQUIRED_OUTPUTS",
    "PreprocessError",
    "PreprocessResult",
    "split_and_scale",
    "write_outputs",
]

# Output name -> file name inside that output's directory (docs/architecture.md).
OUTPUT_FILES: dict[str, str] = {
    "train": "train_data.csv",
    "test": "test_data.csv",
    "test_no_label": "test_data_no_label.csv",
    "train_headers": "train_data_with_headers.csv",
    "validation": "validation_data.csv",
}
REQUIRED_OUTPUTS: tuple[str, ...] = ("train", "test", "test_no_label", "train_headers")
OPTIONAL_OUTPUTS: tuple[str, ...] = ("validation",)


class PreprocessError(ValueError):
    """The table cannot be split or scaled as configured."""


@dataclass(frozen=True)
class PreprocessResult:
    """Scaled splits, each ``Label`` first then the features in ``feature_names`` order."""

    train: pd.DataFrame
    test: pd.DataFrame
    validation: pd.DataFrame | None
    feature_names: tuple[str, ...]
    config: DatasetConfig
    scaling: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: bool = False

    def summary(self) -> dict[str, Any]:
        """Row counts and positive rates per split, the scaling used (for logs and reports)."""
        splits = {"train": self.train, "test": self.test}
        if self.validation is not None:
            splits["validation"] = self.validation
        return {
            "features": list(self.feature_names),
            "splits": {
                name: {"rows": len(split), "positive_rate": round(float(split[LABEL].mean()), 6)}
                for name, split in splits.items()
            },
            "scaling": self.scaling,
            "config": self.config.to_dict(),
            "synthetic": self.synthetic,
        }


def split_and_scale(frame: pd.DataFrame, config: DatasetConfig | None = None) -> PreprocessResult:
    """Split ``frame`` (the canonical table of :func:`ml.data.load_dataset`) and scale it.

    ``train_test_split(test_size=split_ratio, random_state=random_state)`` exactly as the
    notebook (stratified only with ``config.stratify``); the validation set, when
    ``validation_ratio > 0``, is split off the training part with the same seed. The
    StandardScaler and MinMaxScaler are fitted on the (remaining) training rows only and
    applied to every split.
    """
    config = config or DatasetConfig()
    if LABEL not in frame.columns:
        raise SchemaError(
            f"the table has no {LABEL!r} column (columns: {', '.join(map(str, frame.columns))}); "
            "load it with ml.data.load_dataset, which names the label column Label"
        )
    features = [str(c) for c in frame.columns if c != LABEL]
    if not features:
        raise SchemaError("the table has no feature columns besides the label")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise SchemaError(f"columns {non_numeric} are not numeric; load the data with ml.data.load_dataset")
    for option in ("standard_scaled", "minmax_scaled"):
        missing = [c for c in getattr(config, option) if c not in features]
        if missing:
            raise SchemaError(
                f"{option} names columns {missing} that are not features of this data set "
                f"(features: {', '.join(features)}); set {option} to existing columns or to nothing: "
                f"`--set '{option}=[...]'` for run-local/start, --{option.split('_')[0]}-scale for ml-preprocess"
            )

    x = frame[features]
    y = frame[LABEL]
    x_train, x_test, y_train, y_test = _split(x, y, config.split_ratio, config, "train/test")
    x_valid: pd.DataFrame | None = None
    y_valid: pd.Series | None = None
    if config.validation_ratio > 0:
        x_train, x_valid, y_train, y_valid = _split(
            x_train, y_train, config.validation_ratio, config, "train/validation"
        )

    scaling: dict[str, dict[str, Any]] = {}
    parts: dict[str, pd.DataFrame] = {"train": x_train.copy(), "test": x_test.copy()}
    if x_valid is not None:
        parts["validation"] = x_valid.copy()
    for columns, scaler in (
        (list(config.standard_scaled), StandardScaler()),
        (list(config.minmax_scaled), MinMaxScaler()),
    ):
        if not columns:
            continue
        scaler.fit(x_train[columns].to_numpy(dtype=np.float64))
        for part in parts.values():
            scaled = scaler.transform(part[columns].to_numpy(dtype=np.float64))
            for index, column in enumerate(columns):
                part[column] = scaled[:, index]
        scaling.update(_scaler_parameters(columns, scaler))

    def with_label(part: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
        table = pd.concat([labels.rename(LABEL), part], axis=1).reset_index(drop=True)
        return table[[LABEL, *features]]

    return PreprocessResult(
        train=with_label(parts["train"], y_train),
        test=with_label(parts["test"], y_test),
        validation=with_label(parts["validation"], y_valid) if y_valid is not None else None,
        feature_names=tuple(features),
        config=config,
        scaling=scaling,
        synthetic=is_synthetic(frame),
    )


def _split(
    x: pd.DataFrame, y: pd.Series, ratio: float, config: DatasetConfig, what: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    try:
        x_a, x_b, y_a, y_b = train_test_split(
            x,
            y,
            test_size=ratio,
            random_state=config.random_state,
            stratify=y if config.stratify else None,
        )
    except ValueError as error:
        raise PreprocessError(
            f"cannot make the {what} split of {len(x)} rows with ratio {ratio} "
            f"(stratify={config.stratify}): {error}"
        ) from None
    return x_a, x_b, y_a, y_b


def _scaler_parameters(
    columns: list[str], scaler: StandardScaler | MinMaxScaler
) -> dict[str, dict[str, Any]]:
    if isinstance(scaler, StandardScaler):
        assert scaler.mean_ is not None and scaler.scale_ is not None
        return {
            c: {"scaler": "standard", "mean": float(m), "scale": float(s)}
            for c, m, s in zip(columns, scaler.mean_, scaler.scale_, strict=True)
        }
    return {
        c: {"scaler": "minmax", "min": float(lo), "max": float(hi)}
        for c, lo, hi in zip(columns, scaler.data_min_, scaler.data_max_, strict=True)
    }


def write_outputs(result: PreprocessResult, output_dirs: Mapping[str, Path | str]) -> dict[str, Path]:
    """Write each split into its output directory; returns output name -> file written.

    ``output_dirs`` maps output names (``train``, ``test``, ``test_no_label``,
    ``train_headers`` and, only when there is a validation split, ``validation``) to
    directories, which are created. ``train``/``test``/``validation`` are headerless with the
    label first, ``test_no_label`` holds the test features only, ``train_headers`` is the
    training split with a header row. Floats are written in their shortest exact form, so
    reading them back gives the same numbers.
    """
    unknown = sorted(set(output_dirs) - set(OUTPUT_FILES))
    if unknown:
        raise PreprocessError(f"unknown output names {unknown}; known: {', '.join(OUTPUT_FILES)}")
    needed = list(REQUIRED_OUTPUTS) + (["validation"] if result.validation is not None else [])
    missing = [name for name in needed if name not in output_dirs]
    if missing:
        hint = " (validation_ratio > 0 makes a validation split)" if "validation" in missing else ""
        raise PreprocessError(f"no directory given for outputs {missing}{hint}")

    tables: dict[str, tuple[pd.DataFrame, bool]] = {
        "train": (result.train, False),
        "test": (result.test, False),
        "test_no_label": (result.test.drop(columns=[LABEL]), False),
        "train_headers": (result.train, True),
    }
    if result.validation is not None:
        tables["validation"] = (result.validation, False)
    written: dict[str, Path] = {}
    for name, (table, header) in tables.items():
        directory = Path(output_dirs[name])
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / OUTPUT_FILES[name]
        # float_format=None writes repr(), the shortest string that parses back to the same float.
        table.to_csv(path, header=header, index=False, lineterminator="\n")
        written[name] = path
    return written
