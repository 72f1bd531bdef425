"""Inference without a transport: load the model, parse request bodies, predict, format rows.

The HTTP layer (`ml.sagemaker.server`) only maps these functions and their exceptions to status
codes, so everything here can be measured and tested in-process.

Input formats (the features only, never the label, in training column order):

* ``text/csv``: headerless rows ``f1,f2,...,fN``, one per line (LF or CRLF), many rows per
  body. An empty field is a missing value (XGBoost routes it like ``NaN``). A field may be
  wrapped in one pair of double quotes (``"1.5"``; ``""`` is missing).
* ``application/json``: ``{"instances": [[f1, ...], ...]}``, ``{"instances": [{"features":
  [f1, ...]}, ...]}``, ``{"features": [f1, ...]}`` (one row), ``[[f1, ...], ...]`` or a flat
  ``[f1, ...]`` (one row). ``null`` is a missing value.
* ``application/jsonlines``: one ``[f1, ...]`` or ``{"features": [f1, ...]}`` per line.

Output: one row per input row, ``probability,predicted_label`` where the label is 1 when the
probability is at least the threshold. ``text/csv`` gives ``0.123456,0`` lines,
``application/jsonlines`` gives ``{"probability":0.123456,"predicted_label":0}`` lines and
``application/json`` gives ``{"predictions":[{"probability":...,"predicted_label":...},...]}``.
Probabilities are written with six decimals.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import xgboost as xgb

from ml.training import MODEL_FILENAME, load_booster

__all__ = [
    "CSV",
    "JSON",
    "JSONLINES",
    "SUPPORTED_ACCEPT",
    "SUPPORTED_CONTENT_TYPES",
    "InferenceError",
    "ModelError",
    "PayloadError",
    "Predictor",
    "RowError",
    "format_predictions",
    "load_model",
    "parse_csv_rows",
    "parse_json_rows",
    "parse_jsonlines_rows",
    "parse_rows",
]

CSV: Final[str] = "text/csv"
JSON: Final[str] = "application/json"
JSONLINES: Final[str] = "application/jsonlines"
SUPPORTED_CONTENT_TYPES: Final[tuple[str, ...]] = (CSV, JSON, JSONLINES)
SUPPORTED_ACCEPT: Final[tuple[str, ...]] = (CSV, JSON, JSONLINES)

# Objectives whose prediction is already a probability of the positive class.
_PROBABILITY_OBJECTIVES: Final[frozenset[str]] = frozenset({"binary:logistic", "reg:logistic"})
_MARGIN_OBJECTIVES: Final[frozenset[str]] = frozenset({"binary:logitraw"})

_NEWLINE: Final[int] = ord("\n")
_COMMA: Final[int] = ord(",")
_DECIMALS: Final[int] = 6


class InferenceError(ValueError):
    """A request cannot be answered; the message says why and what to send instead."""


class PayloadError(InferenceError):
    """The body as a whole is unreadable (for example not JSON at all)."""


class RowError(InferenceError):
    """One row is malformed. ``row`` is 1-based, as a person counts lines."""

    def __init__(self, row: int, problem: str, n_features: int) -> None:
        self.row = row
        self.n_features = n_features
        super().__init__(
            f"row {row}: {problem}; the model expects {n_features} numeric features per row (no label column)"
        )


class ModelError(RuntimeError):
    """The model directory does not hold a model this server can use."""


# ---------------------------------------------------------------------------------------------
# Model


class Predictor:
    """A loaded booster that turns a float32 feature matrix into probabilities."""

    def __init__(self, booster: xgb.Booster, *, nthread: int | None = None) -> None:
        objective = _objective(booster)
        if objective not in _PROBABILITY_OBJECTIVES | _MARGIN_OBJECTIVES:
            raise ModelError(
                f"the model's objective is {objective!r}; this server returns probabilities of a binary "
                "classifier and supports binary:logistic, reg:logistic and binary:logitraw"
            )
        if nthread is not None:
            booster.set_param({"nthread": nthread})
        self.booster = booster
        self.objective = objective
        self.n_features = booster.num_features()

    @classmethod
    def from_bytes(cls, raw: bytes, *, nthread: int | None = None) -> Predictor:
        """A predictor from the bytes of a model file (what the server's master process read)."""
        if not raw.startswith(b"{"):
            raise ModelError(
                "the model file is not an XGBoost JSON/UBJ model; pickled models are refused because "
                "unpickling runs arbitrary code"
            )
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return cls(booster, nthread=nthread)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (float32, one per row) of the positive class."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise InferenceError(
                f"expected a matrix with {self.n_features} columns, got shape {features.shape}"
            )
        if features.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        scores = self.booster.inplace_predict(features, validate_features=False)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if self.objective in _MARGIN_OBJECTIVES:
            scores = (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
        return scores


def _objective(booster: xgb.Booster) -> str:
    config = json.loads(booster.save_config())
    return str(config["learner"]["objective"]["name"])


def model_path(model_dir: Path | str) -> Path:
    """Where the model file of ``model_dir`` is (SageMaker extracts model.tar.gz there)."""
    return Path(model_dir) / MODEL_FILENAME


def read_model_bytes(model_dir: Path | str) -> bytes:
    """The raw model file, with an error that lists what the directory holds instead."""
    path = model_path(model_dir)
    if not path.is_file():
        directory = Path(model_dir)
        listing = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else None
        found = f"it holds {listing}" if listing is not None else "the directory does not exist"
        raise ModelError(
            f"model file not found: {path} ({found}); the training job writes {MODEL_FILENAME} at the "
            "root of model.tar.gz, which SageMaker extracts into the model directory"
        )
    return path.read_bytes()


def load_model(model_dir: Path | str, *, nthread: int | None = None) -> Predictor:
    """Load ``model_dir/xgboost-model`` (XGBoost JSON/UBJ, never pickle)."""
    read_model_bytes(model_dir)  # for its error message when the file is missing
    try:
        booster = load_booster(model_path(model_dir))
    except ValueError as error:
        raise ModelError(str(error)) from error
    return Predictor(booster, nthread=nthread)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_rows(body: bytes, content_type: str, n_features: int) -> np.ndarray:
    """Dispatch on the media type (parameters already stripped)."""
    if content_type == CSV:
        return parse_csv_rows(body, n_features)
    if content_type == JSON:
        return parse_json_rows(body, n_features)
    if content_type == JSONLINES:
        return parse_jsonlines_rows(body, n_features)
    raise InferenceError(
        f"unsupported content type {content_type!r}; send one of {', '.join(SUPPORTED_CONTENT_TYPES)}"
    )


def parse_csv_rows(body: bytes, n_features: int, *, missing: Sequence[str] = ("",)) -> np.ndarray:
    """Headerless CSV rows to a float32 matrix ``[rows, n_features]``.

    The shape is checked with vectorised byte counts over the whole buffer (commas per line),
    the numbers are converted by pandas' C parser, and only a body that fails there goes
    through a row-by-row pass that finds and names the first bad row.
    """
    body = _normalise_lines(body)
    if not body:
        return np.empty((0, n_features), dtype=np.float32)
    if b'"' in body:  # rare: the unquoted fast path pays only for this one byte search
        body = _unquote_fields(body)
    _check_csv_shape(body, n_features)
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            header=None,
            dtype=np.float32,
            engine="c",
            keep_default_na=False,
            na_values=list(missing),
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,
        )
    except (ValueError, pd.errors.ParserError):
        return _parse_csv_slowly(body, n_features, missing)
    values = frame.to_numpy(dtype=np.float32)
    if values.shape[1] != n_features:  # cannot happen after the shape check; kept as a guard
        return _parse_csv_slowly(body, n_features, missing)
    return np.ascontiguousarray(values)


# One pair of double quotes around a whole field ("1.5", "" = missing), as CSV writers that quote
# everything produce and as ml.data reads; quotes anywhere else are left for the errors to name.
_QUOTED_FIELD: Final[re.Pattern[bytes]] = re.compile(rb'(?m)(^|,)[ \t]*"([^",\n]*)"[ \t]*(?=,|$)')


def _unquote_fields(body: bytes) -> bytes:
    return _QUOTED_FIELD.sub(rb"\1\2", body)


def _normalise_lines(body: bytes) -> bytes:
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # Batch transform ends the last record with a newline; trailing blank lines carry no rows.
    return body.rstrip(b"\n\t ")


def _check_csv_shape(body: bytes, n_features: int) -> None:
    data = np.frombuffer(body, dtype=np.uint8)
    line_ends = np.flatnonzero(data == _NEWLINE)
    line_ends = np.append(line_ends, len(body))
    line_starts = np.empty_like(line_ends)
    line_starts[0] = 0
    line_starts[1:] = line_ends[:-1] + 1
    commas = np.flatnonzero(data == _COMMA)
    fields = np.diff(np.searchsorted(commas, line_ends), prepend=0) + 1
    empty = line_ends == line_starts
    bad = np.flatnonzero((fields != n_features) | empty)
    if bad.size == 0:
        return
    index = int(bad[0])
    if empty[index]:
        raise RowError(index + 1, "the line is empty", n_features)
    raise RowError(index + 1, f"found {int(fields[index])} comma-separated values", n_features)


def _parse_csv_slowly(body: bytes, n_features: int, missing: Sequence[str]) -> np.ndarray:
    missing_set = set(missing)
    rows: list[list[float]] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        text = line.decode("utf-8", errors="replace")
        fields = text.split(",")
        if len(fields) != n_features:
            raise RowError(number, f"found {len(fields)} comma-separated values", n_features)
        row: list[float] = []
        for column, field in enumerate(fields, start=1):
            value = field.strip()
            if value in missing_set:
                row.append(math.nan)
                continue
            try:
                row.append(float(value))
            except ValueError:
                raise RowError(
                    number, f"column {column} is {field[:40]!r}, not a number", n_features
                ) from None
        rows.append(row)
    return np.asarray(rows, dtype=np.float32).reshape(-1, n_features)


def parse_json_rows(body: bytes, n_features: int) -> np.ndarray:
    """A JSON document (see the module docstring for the accepted shapes) to a float32 matrix."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"the body is not valid JSON ({error}); {_JSON_SHAPES}") from None
    return _rows_to_matrix(_json_document_rows(document), n_features)


_JSON_SHAPES: Final[str] = 'send {"instances": [[f1, ...], ...]}, {"features": [f1, ...]} or [[f1, ...], ...]'


def _json_document_rows(document: Any) -> list[Any]:
    if isinstance(document, dict):
        if "instances" in document:
            instances = document["instances"]
            if not isinstance(instances, list):
                raise PayloadError(f'"instances" must be a list of rows; {_JSON_SHAPES}')
            return instances
        if "features" in document:
            return [document]
        raise PayloadError(f"the JSON object has neither 'instances' nor 'features'; {_JSON_SHAPES}")
    if isinstance(document, list):
        if document and all(_is_number_or_null(item) for item in document):
            return [document]  # a flat list is one row
        return document
    raise PayloadError(f"the JSON body is a {type(document).__name__}; {_JSON_SHAPES}")


def parse_jsonlines_rows(body: bytes, n_features: int) -> np.ndarray:
    """One JSON array (or ``{"features": [...]}``) per line to a float32 matrix."""
    body = _normalise_lines(body)
    if not body:
        return np.empty((0, n_features), dtype=np.float32)
    # Not with quotes: a JSON string "1" is not a number, though a quoted CSV field is.
    if b"{" not in body and b'"' not in body and _lines_are_arrays(body):
        # Lines of plain arrays are CSV once the brackets go: reuse the vectorised parser,
        # whose row numbers are the same line numbers.
        try:
            return parse_csv_rows(body.translate(None, b"[] \t"), n_features, missing=("", "null"))
        except RowError:
            pass  # the line-by-line pass below words the problem in JSON terms
    rows: list[Any] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        try:
            rows.append(json.loads(line))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RowError(number, f"the line is not valid JSON ({error})", n_features) from None
    return _rows_to_matrix(rows, n_features)


def _lines_are_arrays(body: bytes) -> bool:
    data = np.frombuffer(body, dtype=np.uint8)
    line_ends = np.append(np.flatnonzero(data == _NEWLINE), len(body))
    starts = np.concatenate(([0], line_ends[:-1] + 1))
    if np.any(line_ends <= starts):
        return False
    return bool(np.all(data[starts] == ord("[")) and np.all(data[line_ends - 1] == ord("]")))


def _rows_to_matrix(rows: list[Any], n_features: int) -> np.ndarray:
    rows = [row["features"] if isinstance(row, dict) and "features" in row else row for row in rows]
    try:
        matrix = np.array(rows, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        matrix = None
    if (
        matrix is not None
        and matrix.ndim == 2
        and matrix.shape[1] == n_features
        and all(isinstance(row, list) for row in rows)
        and not any(isinstance(value, bool | str) for row in rows for value in row)
    ):
        return matrix
    # Something is off: find the first bad row and say what it is.
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list):
            raise RowError(
                number,
                f'expected a JSON array of numbers (or {{"features": [...]}}), got {_kind(row)}',
                n_features,
            )
        if len(row) != n_features:
            raise RowError(number, f"found {len(row)} values", n_features)
        for column, value in enumerate(row, start=1):
            if not _is_number_or_null(value):
                raise RowError(number, f"value {column} is {_kind(value)}, not a number", n_features)
    if not rows:
        return np.empty((0, n_features), dtype=np.float32)
    return np.array([[_as_float(value) for value in row] for row in rows], dtype=np.float32)


def _as_float(value: int | float | None) -> float:
    """JSON null is missing; an integer beyond float range is +-inf, as the CSV parser reads it."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _is_number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _kind(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------------
# Output


def format_predictions(probabilities: np.ndarray, threshold: float, accept: str) -> bytes:
    """``probability,predicted_label`` per row in the ``accept`` media type (see module doc)."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if accept == CSV:
        return _fixed_width_rows(probabilities, threshold, b"", b",", b"\n")
    if accept == JSONLINES:
        return _fixed_width_rows(probabilities, threshold, _JSON_OPEN, _JSON_MIDDLE, b"}\n")
    if accept == JSON:
        rows = _fixed_width_rows(probabilities, threshold, _JSON_OPEN, _JSON_MIDDLE, b"},")
        return b'{"predictions":[' + rows[:-1] + b"]}"
    raise InferenceError(f"unsupported accept type {accept!r}; ask for one of {', '.join(SUPPORTED_ACCEPT)}")


_JSON_OPEN: Final[bytes] = b'{"probability":'
_JSON_MIDDLE: Final[bytes] = b',"predicted_label":'


def _fixed_width_rows(
    probabilities: np.ndarray, threshold: float, prefix: bytes, middle: bytes, suffix: bytes
) -> bytes:
    """Every row has the same width (``d.dddddd`` and a one-digit label), so the whole output is
    one uint8 matrix filled column by column instead of a Python loop over rows."""
    n = probabilities.shape[0]
    if n == 0:
        return b""
    clean = np.nan_to_num(np.clip(probabilities, 0.0, 1.0), nan=0.0)
    scaled = np.rint(clean * 10**_DECIMALS).astype(np.int64)
    labels = (clean >= threshold).astype(np.uint8)
    out = np.empty((n, len(prefix) + 2 + _DECIMALS + len(middle) + 1 + len(suffix)), dtype=np.uint8)
    column = _put(out, 0, prefix)
    out[:, column] = scaled // 10**_DECIMALS + ord("0")
    out[:, column + 1] = ord(".")
    fraction = scaled % 10**_DECIMALS
    for digit in range(_DECIMALS):
        out[:, column + 2 + digit] = fraction // 10 ** (_DECIMALS - 1 - digit) % 10 + ord("0")
    column = _put(out, column + 2 + _DECIMALS, middle)
    out[:, column] = labels + ord("0")
    _put(out, column + 1, suffix)
    return out.tobytes()


def _put(out: np.ndarray, column: int, piece: bytes) -> int:
    out[:, column : column + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
    return column + len(piece)
