from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aws_cdk import App, RemovalPolicy
from aws_cdk import aws_logs as logs

from infra.config import MAX_RUNTIME_LIMIT_SECONDS, ConfigError, PipelineSettings


def settings_from(context: dict[str, Any]) -> PipelineSettings:
    return PipelineSettings.from_context(App(context=context).node)


def test_defaults_without_context() -> None:
    settings = settings_from({})
    assert settings == PipelineSettings()
    assert settings.name_prefix == "xgb-pipeline"
    assert settings.training_instance_type == "ml.m5.xlarge"
    assert settings.max_runtime_seconds == 86400
    assert settings.removal_policy == "retain"
    assert settings.cdk_removal_policy == RemovalPolicy.RETAIN
    assert settings.log_retention == logs.RetentionDays.ONE_MONTH
    assert settings.notification_email is None


def test_values_from_cli_strings_are_parsed() -> None:
    # `npx cdk deploy -c key=value` delivers strings.
    settings = settings_from(
        {
            "name_prefix": "fraud-ml",
            "training_instance_type": "ml.g4dn.xlarge",
            "training_instance_count": "2",
            "processing_volume_size_gb": "50",
            "log_retention_days": "90",
            "artifact_retention_days": "7",
            "removal_policy": "destroy",
            "ecr_images_to_keep": "3",
            "notification_email": "ops@example.com",
            "quality_metric": "accuracy",
            "quality_threshold": "0.8",
        }
    )
    assert settings.name_prefix == "fraud-ml"
    assert settings.training_instance_type == "ml.g4dn.xlarge"
    assert settings.training_instance_count == 2
    assert settings.processing_volume_size_gb == 50
    assert settings.log_retention == logs.RetentionDays.THREE_MONTHS
    assert settings.artifact_retention_days == 7
    assert settings.cdk_removal_policy == RemovalPolicy.DESTROY
    assert settings.ecr_images_to_keep == 3
    assert settings.notification_email == "ops@example.com"
    assert settings.quality_metric == "accuracy"
    assert settings.quality_threshold == pytest.approx(0.8)


def test_json_typed_values_from_cdk_json() -> None:
    settings = settings_from(
        {"transform_instance_count": 3, "quality_threshold": 1, "notification_email": ""}
    )
    assert settings.transform_instance_count == 3
    assert settings.quality_threshold == 1.0
    assert settings.notification_email is None


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("name_prefix", "Bad_Prefix", "lower-case letters"),
        ("training_instance_type", "m5.xlarge", "SageMaker instance type"),
        ("transform_instance_count", "0", "integer between 1 and 20"),
        ("training_instance_count", True, "integer between 1 and 20"),
        ("training_volume_size_gb", "20000", "integer between 1 and 16384"),
        ("max_runtime_seconds", "ten", "integer between 60 and 432000"),
        ("log_retention_days", "31", "one of the CloudWatch Logs retention periods"),
        ("artifact_retention_days", "0", "integer between 1 and 3650"),
        ("removal_policy", "snapshot", "'retain' or 'destroy'"),
        ("ecr_images_to_keep", "0", "integer between 1 and 1000"),
        ("notification_email", "not-an-address", "e-mail address"),
        ("quality_metric", "rmse", "one of accuracy, auc, f1, precision, recall"),
        ("quality_threshold", "1.5", "number between 0.0 and 1.0"),
    ],
)
def test_bad_context_value_names_the_key(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from({key: value})
    message = str(error.value)
    assert f"CDK context key '{key}'" in message
    assert repr(value) in message
    assert expected in message
    assert f"-c {key}=VALUE" in message


def test_values_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="CDK context key 'ecr_images_to_keep'"):
        PipelineSettings(ecr_images_to_keep=0)


def test_settings_are_frozen_and_keys_match_fields() -> None:
    settings = PipelineSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.name_prefix = "other"  # type: ignore[misc]
    assert set(PipelineSettings.context_keys()) == {f.name for f in dataclasses.fields(PipelineSettings)}


def test_the_widest_deploy_settings_are_valid_run_inputs() -> None:
    """Every value the CDK context accepts must also be accepted by the Prepare step, which
    validates each run's input against the same defaults."""
    from infra.pipeline import deploy_defaults
    from ml import jobs
    from ml.pipeline_input import plan_run

    widest = PipelineSettings(
        name_prefix="p" * 16,
        training_instance_count=20,
        transform_instance_count=20,
        max_runtime_seconds=MAX_RUNTIME_LIMIT_SECONDS,
        quality_threshold=1.0,
    )
    settings = jobs.DeploySettings(
        name_prefix=widest.name_prefix,
        role_arn="arn:aws:iam::123456789012:role/sm",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag",
        data_bucket="data",
        artifact_bucket="artifacts",
        defaults=deploy_defaults(widest),
    )
    plan = plan_run({}, "x" * 80, settings)
    assert plan.config["training_instance_count"] == 20
    assert all(len(name) <= 63 for kind, name in plan.names.items() if kind not in ("experiment", "trial"))
