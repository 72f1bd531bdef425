"""Deploy-time settings of the pipeline, read from CDK context and validated in one place.

Every value a deployer may change lives in :class:`PipelineSettings`. Each field is read from
the CDK context key of the same name (``cdk.json`` ``"context"`` or ``npx cdk deploy -c KEY=VALUE``);
a missing key keeps the default shown in the dataclass. Values given on the command line arrive as
strings, so every field is parsed from a string as well as from its JSON type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

RemovalPolicyName = Literal["retain", "destroy"]

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy); 9999 means "never expire".
LOG_RETENTION_DAYS: Mapping[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
    9999: logs.RetentionDays.INFINITE,
}

QUALITY_METRICS = ("accuracy", "auc", "f1", "precision", "recall")

# Job names are `<prefix>-<kind>-<run id>` within SageMaker's 63 characters: the run-id budget in
# ml.pipeline_input assumes a prefix of at most 16 characters.
_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
# SageMaker instance types look like ml.m5.xlarge or ml.g4dn.12xlarge.
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# SageMaker allows training 28 days and processing 9; the execution input caps runs at 5 days.
MAX_RUNTIME_LIMIT_SECONDS = 5 * 24 * 3600
# SageMaker volumes: 1..16384 GB.
MAX_VOLUME_SIZE_GB = 16384


class ConfigError(ValueError):
    """A context value is missing its expected type or range; the message names the key and the fix."""


class _ContextNode(Protocol):
    def try_get_context(self, key: str) -> Any: ...


def _fail(key: str, value: object, expected: str) -> ConfigError:
    return ConfigError(
        f"CDK context key '{key}' has the invalid value {value!r}: expected {expected}. "
        f'Fix it in cdk.json ("context") or pass -c {key}=VALUE.'
    )


def _as_int(key: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool):
        raise _fail(key, value, f"an integer between {minimum} and {maximum}")
    if isinstance(value, int):
        parsed = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        parsed = int(value)
    else:
        raise _fail(key, value, f"an integer between {minimum} and {maximum}")
    if not minimum <= parsed <= maximum:
        raise _fail(key, value, f"an integer between {minimum} and {maximum}")
    return parsed


def _as_float(key: str, value: object, minimum: float, maximum: float) -> float:
    if isinstance(value, bool):
        raise _fail(key, value, f"a number between {minimum} and {maximum}")
    try:
        parsed = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _fail(key, value, f"a number between {minimum} and {maximum}") from None
    if not minimum <= parsed <= maximum:
        raise _fail(key, value, f"a number between {minimum} and {maximum}")
    return parsed


def _as_str(key: str, value: object, pattern: re.Pattern[str], expected: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(key, value, expected)
    return value


def _instance_type(key: str, value: object) -> str:
    return _as_str(key, value, _INSTANCE_TYPE, "a SageMaker instance type such as 'ml.m5.xlarge'")


def _count(key: str, value: object) -> int:
    # The same bounds as the execution input (ml.pipeline_input), so a deploy-time default is
    # always a value a run may also choose.
    return _as_int(key, value, 1, 20)


def _volume(key: str, value: object) -> int:
    return _as_int(key, value, 1, MAX_VOLUME_SIZE_GB)


def _log_retention(key: str, value: object) -> int:
    days = _as_int(key, value, 1, 9999)
    if days not in LOG_RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in LOG_RETENTION_DAYS)
        raise _fail(key, value, f"one of the CloudWatch Logs retention periods ({allowed})")
    return days


def _removal_policy(key: str, value: object) -> RemovalPolicyName:
    if value == "retain":
        return "retain"
    if value == "destroy":
        return "destroy"
    raise _fail(key, value, "'retain' or 'destroy'")


def _email(key: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    return _as_str(key, value, _EMAIL, "an e-mail address such as 'ops@example.com', or empty for none")


def _quality_metric(key: str, value: object) -> str:
    if value not in QUALITY_METRICS:
        raise _fail(key, value, "one of " + ", ".join(QUALITY_METRICS))
    return str(value)


_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "name_prefix": lambda k, v: _as_str(
        k, v, _NAME_PREFIX, "2 to 16 characters: lower-case letters, digits and '-', starting with a letter"
    ),
    "processing_instance_type": _instance_type,
    "processing_volume_size_gb": _volume,
    "training_instance_type": _instance_type,
    "training_instance_count": _count,
    "training_volume_size_gb": _volume,
    "transform_instance_type": _instance_type,
    "transform_instance_count": _count,
    "max_runtime_seconds": lambda k, v: _as_int(k, v, 60, MAX_RUNTIME_LIMIT_SECONDS),
    "log_retention_days": _log_retention,
    "artifact_retention_days": lambda k, v: _as_int(k, v, 1, 3650),
    "removal_policy": _removal_policy,
    "ecr_images_to_keep": lambda k, v: _as_int(k, v, 1, 1000),
    "notification_email": _email,
    "quality_metric": _quality_metric,
    "quality_threshold": lambda k, v: _as_float(k, v, 0.0, 1.0),
}


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """Everything a deployer can change, with the defaults used when a context key is absent.

    The SageMaker defaults follow the notebook, moved to current instance families
    (the notebook uses ml.c4.xlarge, ml.m4.xlarge and ml.m5.xlarge and ``train_max_run=86400``).
    """

    name_prefix: str = "xgb-pipeline"
    """Prefix of every SageMaker job, model, experiment and trial name (and so of the IAM scope on
    them). Buckets, repository, project and log groups get names CloudFormation derives from the
    stack, so two deployments in one account never collide."""
    processing_instance_type: str = "ml.m5.xlarge"
    processing_volume_size_gb: int = 30
    training_instance_type: str = "ml.m5.xlarge"
    training_instance_count: int = 1
    training_volume_size_gb: int = 30
    transform_instance_type: str = "ml.m5.xlarge"
    transform_instance_count: int = 1
    max_runtime_seconds: int = 86400
    """Upper bound of each processing and training job (SageMaker StoppingCondition)."""
    log_retention_days: int = 30
    """Retention of the log groups the stack creates; one of :data:`LOG_RETENTION_DAYS`."""
    artifact_retention_days: int = 90
    """Objects under ``runs/`` in the artefact bucket expire after this many days."""
    removal_policy: RemovalPolicyName = "retain"
    """'retain' keeps buckets, key, repository and log groups on stack deletion; 'destroy' deletes
    them (buckets are emptied first)."""
    ecr_images_to_keep: int = 10
    notification_email: str | None = None
    """Subscribed to pipeline failure notifications when set."""
    quality_metric: str = "auc"
    """Metric of ``evaluation.json`` that gates a run; one of :data:`QUALITY_METRICS`."""
    quality_threshold: float = 0.7
    """A run whose ``quality_metric`` is below this fails the quality gate."""

    def __post_init__(self) -> None:
        # Validate values built in code too, not only those read from context.
        for field in dataclasses.fields(self):
            _PARSERS[field.name](field.name, getattr(self, field.name))

    @classmethod
    def from_context(cls, node: _ContextNode) -> PipelineSettings:
        """Read every field from the CDK context of ``node`` (an ``App``, ``Stack`` or its ``node``)."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = node.try_get_context(field.name)
            if raw is not None:
                values[field.name] = _PARSERS[field.name](field.name, raw)
        return cls(**values)

    @property
    def cdk_removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.DESTROY if self.removal_policy == "destroy" else RemovalPolicy.RETAIN

    @property
    def log_retention(self) -> logs.RetentionDays:
        return LOG_RETENTION_DAYS[self.log_retention_days]

    @classmethod
    def context_keys(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))
