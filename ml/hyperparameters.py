"""XGBoost hyperparameters: the one spec, its defaults and a strict parser.

Standard library only: the Prepare Lambda imports this module to validate execution-input
overrides before any job starts, and it ships without numpy or xgboost.

Values arrive as strings (SageMaker writes ``hyperparameters.json`` with string values) or as
JSON numbers (Step Functions execution input); both are accepted. Unknown names and bad values
raise :class:`HyperparameterError`, whose message names the parameter, the value and what is
allowed.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "EVAL_METRICS",
    "HYPERPARAMETERS",
    "PLATFORM_PREFIXES",
    "Hyperparameter",
    "HyperparameterError",
    "booster_params",
    "parse_hyperparameters",
    "spec_as_dict",
]

# Metrics that make sense for a binary classifier that outputs probabilities. The training
# log prints each chosen one per round, and METRIC_DEFINITIONS in ml.training has a regex for
# every one of them, so SageMaker can chart any choice.
EVAL_METRICS: tuple[str, ...] = ("logloss", "auc", "aucpr", "error")

# SageMaker adds its own entries to hyperparameters.json for tuning jobs and framework
# containers; they are not XGBoost parameters, so the parser skips them instead of failing.
PLATFORM_PREFIXES: tuple[str, ...] = ("sagemaker_", "_tuning_")


class HyperparameterError(ValueError):
    """One or more hyperparameters are unknown or out of range.

    ``errors`` holds one message per problem; ``str(error)`` joins them.
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class Hyperparameter:
    """Spec of one hyperparameter.

    ``kind`` is ``"int"``, ``"float"``, ``"choice"`` or ``"choice_list"`` (comma-separated
    choices). ``minimum``/``maximum`` bound numbers (``None`` = unbounded) and the
    ``*_inclusive`` flags say whether the bound itself is allowed. ``default`` is the string
    used when the parameter is absent; ``None`` means "not passed to XGBoost" (XGBoost's own
    default applies, or the feature is off).
    """

    name: str
    kind: str
    default: str | None
    description: str
    minimum: float | None = None
    maximum: float | None = None
    minimum_inclusive: bool = True
    maximum_inclusive: bool = True
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        """Human-readable allowed values, e.g. ``a float in (0, 1]``."""
        if self.kind in ("choice", "choice_list"):
            listed = ", ".join(self.choices)
            if self.kind == "choice_list":
                return f"one or more (comma-separated) of: {listed}"
            return f"one of: {listed}"
        low = "-inf" if self.minimum is None else _format_bound(self.minimum)
        high = "inf" if self.maximum is None else _format_bound(self.maximum)
        left = "[" if self.minimum is not None and self.minimum_inclusive else "("
        right = "]" if self.maximum is not None and self.maximum_inclusive else ")"
        article = "an" if self.kind == "int" else "a"
        return f"{article} {self.kind} in {left}{low}, {high}{right}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (what the Prepare Lambda and the docs show)."""
        entry: dict[str, Any] = {
            "type": self.kind,
            "default": self.default,
            "description": self.description,
            "allowed": self.allowed(),
        }
        if self.kind in ("int", "float"):
            entry.update(
                minimum=self.minimum,
                maximum=self.maximum,
                minimum_inclusive=self.minimum_inclusive,
                maximum_inclusive=self.maximum_inclusive,
            )
        else:
            entry["choices"] = list(self.choices)
        return entry

    def parse(self, raw: object) -> Any:
        """Typed value of ``raw``; raises HyperparameterError naming this parameter."""
        text = _as_text(self.name, raw)
        if self.kind == "int":
            number: float = _parse_int(text, self)
        elif self.kind == "float":
            number = _parse_float(text, self)
        elif self.kind == "choice":
            if text not in self.choices:
                raise HyperparameterError([_bad(self, raw)])
            return text
        else:
            items = [item.strip() for item in text.split(",")]
            if not text or any(item not in self.choices for item in items):
                raise HyperparameterError([_bad(self, raw)])
            if len(set(items)) != len(items):
                raise HyperparameterError([f"{_bad(self, raw)} (each metric at most once)"])
            return items
        if not self._in_range(number):
            raise HyperparameterError([_bad(self, raw)])
        return number

    def _in_range(self, value: float) -> bool:
        below = self.minimum is not None and (
            value < self.minimum or (value == self.minimum and not self.minimum_inclusive)
        )
        above = self.maximum is not None and (
            value > self.maximum or (value == self.maximum and not self.maximum_inclusive)
        )
        return not (below or above)


def _format_bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _bad(spec: Hyperparameter, raw: object) -> str:
    return f"hyperparameter {spec.name}={raw!r} is invalid: {spec.name} must be {spec.allowed()}"


def _as_text(name: str, raw: object) -> str:
    # bool is an int subclass: a JSON true for max_depth is a mistake, not 1.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise HyperparameterError(
            [
                f"hyperparameter {name}={raw!r} is invalid: "
                f"expected a string or a number, got {type(raw).__name__}"
            ]
        )
    text = str(raw).strip()
    # Some SDKs JSON-encode every value, so '"binary:logistic"' reaches the container.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            text = decoded.strip()
    return text


def _parse_float(text: str, spec: Hyperparameter) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HyperparameterError([_bad(spec, text)]) from None
    if not math.isfinite(value):
        raise HyperparameterError([_bad(spec, text)])
    return value


def _parse_int(text: str, spec: Hyperparameter) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    # Tuners and JSON writers sometimes turn 5 into "5.0"; accept integral floats only.
    value = _parse_float(text, spec)
    if not value.is_integer():
        raise HyperparameterError([_bad(spec, text)])
    return int(value)


_SPECS: tuple[Hyperparameter, ...] = (
    Hyperparameter("num_round", "int", "100", "Number of boosting rounds.", 1, 100_000),
    Hyperparameter(
        "max_depth", "int", "5", "Maximum tree depth (0 = no limit; not with tree_method=exact).", 0, 64
    ),
    Hyperparameter(
        "eta", "float", "0.2", "Learning rate: shrinkage applied to each tree.", 0, 1, minimum_inclusive=False
    ),
    Hyperparameter("gamma", "float", "4", "Minimum loss reduction required to make a split.", 0, None),
    Hyperparameter("min_child_weight", "float", "6", "Minimum sum of instance weight in a child.", 0, None),
    Hyperparameter(
        "subsample", "float", "0.8", "Fraction of rows sampled per tree.", 0, 1, minimum_inclusive=False
    ),
    Hyperparameter(
        "objective",
        "choice",
        "binary:logistic",
        "Learning objective; both choices output probabilities, which the model server returns.",
        choices=("binary:logistic", "reg:logistic"),
    ),
    Hyperparameter("verbosity", "int", "0", "XGBoost's own log level (0 = silent, 3 = debug).", 0, 3),
    Hyperparameter(
        "eval_metric",
        "choice_list",
        "logloss",
        "Metrics printed each round; early stopping watches the first one.",
        choices=EVAL_METRICS,
    ),
    Hyperparameter(
        "tree_method",
        "choice",
        "hist",
        "Tree construction algorithm.",
        choices=("hist", "approx", "exact", "auto"),
    ),
    Hyperparameter("seed", "int", "0", "Random seed; fixed so that runs are reproducible.", 0, 2**31 - 1),
    Hyperparameter(
        "early_stopping_rounds",
        "int",
        "10",
        "With a validation channel, stop when the first eval_metric on it has not improved for this "
        "many rounds and keep the best round (0 = off); without validation data it has no effect.",
        0,
        100_000,
    ),
    Hyperparameter(
        "colsample_bytree",
        "float",
        None,
        "Fraction of columns sampled per tree.",
        0,
        1,
        minimum_inclusive=False,
    ),
    Hyperparameter(
        "colsample_bylevel",
        "float",
        None,
        "Fraction of columns sampled per tree level.",
        0,
        1,
        minimum_inclusive=False,
    ),
    Hyperparameter(
        "colsample_bynode",
        "float",
        None,
        "Fraction of columns sampled per split.",
        0,
        1,
        minimum_inclusive=False,
    ),
    Hyperparameter("lambda", "float", None, "L2 regularisation on leaf weights.", 0, None),
    Hyperparameter("alpha", "float", None, "L1 regularisation on leaf weights.", 0, None),
    Hyperparameter("max_delta_step", "float", None, "Maximum delta step of each leaf output.", 0, None),
    Hyperparameter(
        "scale_pos_weight",
        "float",
        None,
        "Weight of positive examples (sum(negative) / sum(positive) balances classes).",
        0,
        None,
        minimum_inclusive=False,
    ),
    Hyperparameter("max_bin", "int", None, "Maximum number of histogram bins (hist/approx).", 2, 65_536),
    Hyperparameter("max_leaves", "int", None, "Maximum number of leaves per tree (0 = no limit).", 0, None),
    Hyperparameter(
        "grow_policy", "choice", None, "How new nodes are added.", choices=("depthwise", "lossguide")
    ),
    Hyperparameter("nthread", "int", None, "CPU threads (default: all cores).", 1, 1024),
)

HYPERPARAMETERS: dict[str, Hyperparameter] = {spec.name: spec for spec in _SPECS}
"""The machine-readable spec: name -> :class:`Hyperparameter`."""

# The notebook's estimator.set_hyperparameters(...) call, as SageMaker would pass it.
DEFAULT_HYPERPARAMETERS: dict[str, str] = {
    "max_depth": "5",
    "eta": "0.2",
    "gamma": "4",
    "min_child_weight": "6",
    "subsample": "0.8",
    "verbosity": "0",
    "objective": "binary:logistic",
    "num_round": "100",
}

# Keys of the parsed dict that steer the training loop rather than the booster.
_LOOP_KEYS = ("num_round", "early_stopping_rounds")


def spec_as_dict() -> dict[str, dict[str, Any]]:
    """The whole spec as JSON-serialisable data (name -> type, range, default, description)."""
    return {name: spec.to_dict() for name, spec in HYPERPARAMETERS.items()}


def parse_hyperparameters(raw: Mapping[str, object]) -> dict[str, Any]:
    """Validate and type ``raw``; absent parameters take their defaults.

    Returns every parameter whose value is known (given or defaulted); parameters whose
    default is ``None`` appear only when given. ``eval_metric`` is a list of metric names.
    Keys starting with one of :data:`PLATFORM_PREFIXES` are SageMaker's, not XGBoost's, and
    are skipped. All problems are reported at once in one :class:`HyperparameterError`.
    """
    if not isinstance(raw, Mapping):
        raise HyperparameterError(
            [f"hyperparameters must be a mapping of name to value, got {type(raw).__name__}"]
        )
    errors: list[str] = []
    parsed: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str):
            errors.append(f"hyperparameter name {name!r} is not a string")
            continue
        if name.startswith(PLATFORM_PREFIXES):
            continue
        spec = HYPERPARAMETERS.get(name)
        if spec is None:
            errors.append(_unknown(name))
            continue
        try:
            parsed[name] = spec.parse(value)
        except HyperparameterError as error:
            errors.extend(error.errors)
    if errors:
        raise HyperparameterError(errors)
    for name, spec in HYPERPARAMETERS.items():
        if name not in parsed and spec.default is not None:
            parsed[name] = spec.parse(spec.default)
    combination_errors = _combination_errors(parsed)
    if combination_errors:
        raise HyperparameterError(combination_errors)
    return parsed


def _combination_errors(parsed: Mapping[str, Any]) -> list[str]:
    """Values valid one by one that XGBoost refuses together, only once training starts."""
    errors = []
    if parsed.get("max_depth") == 0 and parsed.get("tree_method") == "exact":
        errors.append(
            "max_depth=0 (no depth limit) is not supported with tree_method=exact: set max_depth to an "
            "int in [1, 64], or tree_method to hist or approx"
        )
    return errors


def booster_params(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of :func:`parse_hyperparameters` output that ``xgboost.train`` takes as params."""
    return {name: value for name, value in parsed.items() if name not in _LOOP_KEYS}


def _unknown(name: str) -> str:
    known = ", ".join(sorted(HYPERPARAMETERS))
    close = difflib.get_close_matches(name, list(HYPERPARAMETERS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown hyperparameter {name!r}{hint}; known hyperparameters: {known}"
