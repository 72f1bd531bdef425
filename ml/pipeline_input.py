"""The execution input of the pipeline: validation, defaults, run id, job names, requests.

`prepare` is the Prepare step of the state machine (through `handler`, an AWS Lambda handler)
and the first step of the local runner, so an override means the same thing, and fails with the
same message, in both places.

Stdlib only: it runs in the Lambda runtime, which has no numpy, pandas or xgboost.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ml import jobs
from ml.hyperparameters import DEFAULT_HYPERPARAMETERS, HyperparameterError, parse_hyperparameters

SETTINGS_ENV: Final[str] = "PIPELINE_SETTINGS"
MAX_JOB_NAME: Final[int] = 63
MAX_TRIAL_NAME: Final[int] = 120
_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
_COLUMN = re.compile(r"^[^,\n]+$")
QUALITY_METRICS: Final[tuple[str, ...]] = ("auc", "accuracy", "f1", "precision", "recall")
DISTRIBUTIONS: Final[tuple[str, ...]] = ("FullyReplicated", "ShardedByS3Key")
# The keys of ml.config.DATASET_SCHEMAS (not imported: the Lambda package holds no ml.config).
DATASET_SCHEMAS: Final[tuple[str, ...]] = ("auto", "uci", "generic")


class InputError(ValueError):
    """The execution input is not valid. The message lists every problem and how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid pipeline input: " + "; ".join(problems))


@dataclass(frozen=True)
class InputField:
    kind: str  # "str", "int", "float", "bool", "columns", "hyperparameters"
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None


def _between(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            left, right = ("(" if low_open else "["), (")" if high_open else "]")
            return f"must be in {left}{low}, {high}{right}"
        return None

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


def _matches(pattern: re.Pattern[str], example: str) -> Callable[[Any], str | None]:
    return lambda value: None if pattern.match(value) else f"must look like {example!r}"


def _s3_uri(value: Any) -> str | None:
    return (
        None
        if re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value)
        else ("must be an S3 URI like 's3://my-bucket/datasets/credit/'")
    )


_INSTANCE = _matches(_INSTANCE_TYPE, "ml.m5.xlarge")

INPUT_FIELDS: Final[dict[str, InputField]] = {
    "data_uri": InputField("str", None, "S3 prefix or object of the raw data set", _s3_uri),
    "hyperparameters": InputField("hyperparameters", {}, "XGBoost hyperparameters overriding the defaults"),
    "label_column": InputField("str", "Label", "label column of the raw data (UCI variants are recognised)"),
    "dataset_schema": InputField(
        "str",
        "auto",
        "uci: the UCI credit-card columns; generic: any numeric table with label_column; "
        "auto: uci when label_column is Label, else generic",
        _one_of(DATASET_SCHEMAS),
    ),
    "standard_scaled": InputField("columns", ["PAY_AMT1"], "columns scaled with StandardScaler"),
    "minmax_scaled": InputField("columns", ["BILL_AMT1"], "columns scaled with MinMaxScaler"),
    "drop_columns": InputField("columns", ["ID"], "columns dropped before training (when present)"),
    "split_ratio": InputField(
        "float", 0.2, "test share of the data", _between(0, 1, low_open=True, high_open=True)
    ),
    "validation_ratio": InputField(
        "float", 0.0, "validation share of the training split (0 = none)", _between(0, 0.5, high_open=True)
    ),
    "random_state": InputField("int", 0, "seed of the train/test split", _between(0, 2**31 - 1)),
    "threshold": InputField("float", 0.5, "probability above which a row is predicted 1", _between(0, 1)),
    "quality_metric": InputField(
        "str", "auc", "evaluation metric the quality gate checks", _one_of(QUALITY_METRICS)
    ),
    "quality_threshold": InputField("float", 0.7, "minimum value of quality_metric", _between(0, 1)),
    "processing_instance_type": InputField(
        "str", "ml.m5.xlarge", "instance type of processing jobs", _INSTANCE
    ),
    "training_instance_type": InputField(
        "str", "ml.m5.xlarge", "instance type of the training job", _INSTANCE
    ),
    "training_instance_count": InputField("int", 1, "hosts of the training job", _between(1, 20)),
    "training_distribution": InputField(
        "str", "FullyReplicated", "how the train channel is spread over hosts", _one_of(DISTRIBUTIONS)
    ),
    "transform_instance_type": InputField(
        "str", "ml.m5.xlarge", "instance type of batch transform", _INSTANCE
    ),
    "transform_instance_count": InputField("int", 1, "instances of batch transform", _between(1, 20)),
    "spot_training": InputField("bool", False, "use managed spot training (resumes from checkpoints)"),
    "max_runtime_seconds": InputField("int", 86400, "maximum run time of each job", _between(60, 432000)),
    "max_wait_seconds": InputField(
        "int", 172800, "spot only: maximum wait plus run time of training", _between(60, 432000)
    ),
    "rebuild_image": InputField("bool", False, "rebuild the container image even if its tag exists"),
}

_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "columns": "a list of column names",
    "hyperparameters": 'an object of name -> value, e.g. {"max_depth": "6"}',
}


def _coerce(name: str, kind: str, value: Any) -> Any:
    """Returns the typed value or raises TypeError with what was expected."""
    expected = _TYPE_NAMES[kind]
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "str":
        if isinstance(value, str) and value:
            return value
    elif kind == "columns":
        if isinstance(value, list) and all(isinstance(item, str) and _COLUMN.match(item) for item in value):
            return list(value)
    elif kind == "hyperparameters" and isinstance(value, dict):
        return value
    raise TypeError(f"'{name}' must be {expected}, got {json.dumps(value)}")


def _hyperparameters(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Merged with the defaults and validated now, so a bad value fails the run before any job
    starts; returned as strings, which is what SageMaker's HyperParameters accepts."""
    merged = dict(DEFAULT_HYPERPARAMETERS)
    for name, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise HyperparameterError(
                [f"hyperparameter '{name}' must be a string or number, got {json.dumps(value)}"]
            )
        merged[name] = str(value)
    parse_hyperparameters(merged)
    return merged


def validate_input(raw: Any, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Checks the execution input and merges it with the defaults.

    `defaults` are deploy-time overrides of the field defaults. Every problem is reported at once.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError([f"the execution input must be a JSON object such as {{}}, got {json.dumps(raw)}"])
    problems: list[str] = []
    for name in raw:
        if name not in INPUT_FIELDS:
            close = difflib.get_close_matches(name, INPUT_FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unknown key '{name}'{hint}; allowed keys: {', '.join(INPUT_FIELDS)}")
    config: dict[str, Any] = {}
    for name, spec in INPUT_FIELDS.items():
        value = raw.get(name, (defaults or {}).get(name, spec.default))
        if value is None:
            problems.append(f"'{name}' has no default here; set it in the input ({spec.description})")
            continue
        try:
            typed = _coerce(name, spec.kind, value)
        except TypeError as error:
            problems.append(str(error))
            continue
        reason = spec.check(typed) if spec.check else None
        if reason:
            problems.append(f"'{name}' {reason}, got {json.dumps(value)}")
            continue
        if spec.kind == "hyperparameters":
            try:
                typed = _hyperparameters(typed)
            except HyperparameterError as error:
                problems.append(str(error))
                continue
        config[name] = typed
    if (
        not problems
        and config["spot_training"]
        and config["max_wait_seconds"] < config["max_runtime_seconds"]
    ):
        problems.append(
            f"'max_wait_seconds' ({config['max_wait_seconds']}) must be at least 'max_runtime_seconds' "
            f"({config['max_runtime_seconds']}) when spot_training is true"
        )
    if problems:
        raise InputError(problems)
    return config


def run_id_for(execution_name: str, name_prefix: str) -> str:
    """A run id that is valid inside every job name, relaunch names included, and unique per
    execution name.

    Execution names are unique per state machine, so job names derived from the run id never
    collide with an earlier run. A name that had to be shortened or changed gets a hash of the
    original, so two different names never map to the same run id.
    """
    longest_kind = max(len(tag) for tag in jobs.JOB_KINDS.values())
    # `<prefix>-<kind>-<run id>`, plus the suffix of the last relaunch (`-r2`).
    budget = MAX_JOB_NAME - len(name_prefix) - longest_kind - 2 - jobs.relaunch_suffix_length()
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", execution_name.lower())).strip("-") or "run"
    if cleaned == execution_name and len(cleaned) <= budget:
        return cleaned
    digest = hashlib.sha256(execution_name.encode()).hexdigest()[:8]
    return f"{cleaned[: budget - len(digest) - 1].rstrip('-')}-{digest}"


def job_names(run_id: str, name_prefix: str) -> dict[str, str]:
    names = {kind: f"{name_prefix}-{tag}-{run_id}" for kind, tag in jobs.JOB_KINDS.items()}
    names["experiment"] = f"{name_prefix}-experiment"
    names["trial"] = f"{name_prefix}-trial-{run_id}"[:MAX_TRIAL_NAME]
    return names


def plan_run(execution_input: Any, execution_name: str, settings: jobs.DeploySettings) -> jobs.RunPlan:
    if not _NAME_PREFIX.match(settings.name_prefix):
        raise ValueError(
            f"name prefix {settings.name_prefix!r} must be 1-16 lower-case letters, digits or '-', "
            "starting with a letter"
        )
    defaults = {"data_uri": f"s3://{settings.data_bucket}/datasets/default/", **settings.defaults}
    config = validate_input(execution_input, defaults)
    run_id = run_id_for(execution_name, settings.name_prefix)
    names = job_names(run_id, settings.name_prefix)
    uris = jobs.run_uris(
        artifact_bucket=settings.artifact_bucket,
        run_id=run_id,
        data_uri=config["data_uri"],
        training_job_name=names["training"],
    )
    return jobs.RunPlan(run_id=run_id, config=config, names=names, uris=uris)


def first_attempts(names: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The launch record of each relaunchable job before its first launch.

    The state machine names the job from `name` and, when SageMaker fails it for capacity or an
    internal error, replaces the record with the next attempt's (`ml.jobs.relaunch_name`).
    """
    return {kind: {"attempt": 0, "name": names[kind]} for kind in jobs.RELAUNCHABLE_JOBS}


def prepare(execution_input: Any, execution_name: str, settings: jobs.DeploySettings) -> dict[str, Any]:
    """The run state the state machine keeps under `$.run`."""
    plan = plan_run(execution_input, execution_name, settings)
    return {
        "run_id": plan.run_id,
        "config": dict(plan.config),
        "names": dict(plan.names),
        "uris": dict(plan.uris),
        "requests": jobs.build_requests(plan, settings),
        "attempts": first_attempts(plan.names),
    }


def settings_from_environment() -> jobs.DeploySettings:
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{SETTINGS_ENV} is not set: the stack passes the deploy settings as JSON in it")
    return jobs.DeploySettings.from_json_dict(json.loads(raw))


def handler(event: Mapping[str, Any], _context: object) -> dict[str, Any]:
    """Lambda entry point. Event: {"input": <execution input>, "execution_name": "<name>"}.

    An InputError propagates: Step Functions reports its type as the error and its message,
    which lists every problem, as the cause.
    """
    return prepare(event.get("input"), str(event["execution_name"]), settings_from_environment())
