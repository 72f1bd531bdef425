"""Data set configuration: which column is the label, which columns are scaled, how to split.

The defaults are the notebook's (UCI "default of credit card clients"); another binary
classification CSV runs by configuration alone, e.g.
``DatasetConfig(label_column="y", standard_scaled=("income",), minmax_scaled=(), drop_columns=())``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DATASET_SCHEMAS", "LABEL", "UCI_LABEL_ALIASES", "ConfigError", "DatasetConfig", "uci_schema_for"]

LABEL = "Label"
"""Canonical label column name of every table this package writes."""

# Names the UCI label has in public copies of the data set (compared ignoring case and
# treating '.', '_' and spaces alike). "Y" is the .xls first header row's name for it.
UCI_LABEL_ALIASES: tuple[str, ...] = (
    "default payment next month",
    "default.payment.next.month",
    "target",
    "Y",
    LABEL,
)

# The execution input's `dataset_schema` (and `--dataset-schema` of ml-preprocess/ml-explore) ->
# `DatasetConfig.uci_schema`. "auto" keeps the default rule: UCI exactly when the label column
# is called "Label"; "generic" is how a non-UCI file whose label is already "Label" runs.
DATASET_SCHEMAS: dict[str, bool | None] = {"auto": None, "uci": True, "generic": False}


class ConfigError(ValueError):
    """A DatasetConfig value is out of range or inconsistent."""


@dataclass(frozen=True)
class DatasetConfig:
    """How to read, clean, split and scale one data set.

    ``label_column`` is the label's name in the source data; the loaded table always calls
    it ``Label``. With the default ``"Label"`` the UCI credit-card schema is expected and its
    public variants are recognised (``label_aliases``, ``X1..X23``/``Y`` headers); set
    ``label_column`` to your label's name to load any other data set of numeric features.
    ``uci_schema`` forces one or the other (``None`` = UCI exactly when ``label_column`` is
    ``"Label"``), e.g. ``uci_schema=False`` for a non-UCI file whose label is already
    called ``Label``. The pipeline's execution input names it ``dataset_schema``
    (``auto``/``uci``/``generic``, see :data:`DATASET_SCHEMAS`).

    ``split_ratio`` is the test share, ``validation_ratio`` the share of the training split
    held out for validation (0 = no validation set).
    """

    label_column: str = LABEL
    label_aliases: tuple[str, ...] = UCI_LABEL_ALIASES
    standard_scaled: tuple[str, ...] = ("PAY_AMT1",)
    minmax_scaled: tuple[str, ...] = ("BILL_AMT1",)
    split_ratio: float = 0.2
    random_state: int = 0
    validation_ratio: float = 0.0
    drop_columns: tuple[str, ...] = ("ID",)
    stratify: bool = False
    uci_schema: bool | None = field(default=None)

    def __post_init__(self) -> None:
        # Lists from JSON or argparse are accepted and frozen into tuples, so the config
        # stays hashable and immutable.
        for name in ("label_aliases", "standard_scaled", "minmax_scaled", "drop_columns"):
            object.__setattr__(self, name, _column_tuple(name, getattr(self, name)))
        problems: list[str] = []
        if not isinstance(self.label_column, str) or not self.label_column.strip():
            problems.append(f"label_column must be a non-empty column name, got {self.label_column!r}")
        if not _is_number(self.split_ratio) or not 0 < self.split_ratio < 1:
            problems.append(
                f"split_ratio must be a number in (0, 1) (the test share), got {self.split_ratio!r}"
            )
        if not _is_number(self.validation_ratio) or not 0 <= self.validation_ratio < 1:
            problems.append(
                "validation_ratio must be a number in [0, 1) (the share of the training split "
                f"held out; 0 = none), got {self.validation_ratio!r}"
            )
        if (
            not isinstance(self.random_state, int)
            or isinstance(self.random_state, bool)
            or not 0 <= self.random_state <= 2**32 - 1
        ):
            problems.append(f"random_state must be an integer in [0, 2**32 - 1], got {self.random_state!r}")
        if not isinstance(self.stratify, bool):
            problems.append(f"stratify must be true or false, got {self.stratify!r}")
        if self.uci_schema is not None and not isinstance(self.uci_schema, bool):
            problems.append(f"uci_schema must be true, false or None, got {self.uci_schema!r}")
        both = sorted(set(self.standard_scaled) & set(self.minmax_scaled))
        if both:
            problems.append(
                f"columns {both} are in both standard_scaled and minmax_scaled; pick one scaler each"
            )
        label_names = {self.label_column, LABEL}
        for name in ("standard_scaled", "minmax_scaled", "drop_columns"):
            clash = sorted(label_names & set(getattr(self, name)))
            if clash:
                problems.append(f"{name} must not contain the label column {clash[0]!r}")
        if problems:
            raise ConfigError("invalid DatasetConfig: " + "; ".join(problems))

    @property
    def dataset_schema(self) -> str:
        """``uci_schema`` by its execution-input name: ``auto``, ``uci`` or ``generic``."""
        return next(name for name, value in DATASET_SCHEMAS.items() if value is self.uci_schema)

    @property
    def is_uci(self) -> bool:
        """Whether the UCI credit-card schema (and its variants) is expected."""
        return self.uci_schema if self.uci_schema is not None else self.label_column == LABEL

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written next to outputs so a run can be reproduced)."""
        return {
            "label_column": self.label_column,
            "label_aliases": list(self.label_aliases),
            "standard_scaled": list(self.standard_scaled),
            "minmax_scaled": list(self.minmax_scaled),
            "split_ratio": self.split_ratio,
            "random_state": self.random_state,
            "validation_ratio": self.validation_ratio,
            "drop_columns": list(self.drop_columns),
            "stratify": self.stratify,
            "uci_schema": self.uci_schema,
        }


def uci_schema_for(dataset_schema: str) -> bool | None:
    """``DatasetConfig.uci_schema`` for a ``dataset_schema`` name (``auto``, ``uci``, ``generic``)."""
    try:
        return DATASET_SCHEMAS[dataset_schema]
    except KeyError:
        raise ConfigError(
            f"invalid DatasetConfig: dataset_schema must be one of {list(DATASET_SCHEMAS)}, got {dataset_schema!r}"
        ) from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _column_tuple(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        # A bare string would silently become a tuple of characters.
        raise ConfigError(
            f"invalid DatasetConfig: {name} must be a sequence of column names, got the string {value!r} "
            f"(write ({value!r},) or [{value!r}])"
        )
    if not isinstance(value, Iterable):
        raise ConfigError(f"invalid DatasetConfig: {name} must be a sequence of column names, got {value!r}")
    columns = tuple(value)
    for column in columns:
        if not isinstance(column, str) or not column.strip():
            raise ConfigError(
                f"invalid DatasetConfig: {name} contains {column!r}, which is not a column name"
            )
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ConfigError(f"invalid DatasetConfig: {name} lists {duplicates} more than once")
    return columns
