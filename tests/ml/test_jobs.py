"""Job requests: one builder per job kind, valid shapes, stable top-level keys."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest

from ml import jobs
from ml.metric_log import METRIC_DEFINITIONS, format_metric_line
from ml.pipeline_input import plan_run
from ml.sagemaker.serving_limits import MAX_CONCURRENT_TRANSFORMS, MAX_PAYLOAD_MB
from tests.support.deploy_settings import EXAMPLE_DEPLOY_SETTINGS as SETTINGS

CONFIGURATIONS: list[dict[str, Any]] = [
    {},
    {"validation_ratio": 0.1, "spot_training": True, "training_instance_count": 3},
    {"training_distribution": "ShardedByS3Key", "training_instance_count": 2},
    {"dataset_schema": "generic", "label_column": "Label", "drop_columns": [], "standard_scaled": []},
]


def requests_for(execution_input: dict[str, Any], settings: jobs.DeploySettings = SETTINGS) -> dict[str, Any]:
    return jobs.build_requests(plan_run(execution_input, "run-1", settings), settings)


def test_every_builder_emits_the_same_top_level_keys_for_every_configuration() -> None:
    """What makes the static ASL rendering (`state_machine_parameters`) valid for every run."""
    key_sets = [{kind: tuple(request) for kind, request in requests_for(c).items()} for c in CONFIGURATIONS]
    assert all(keys == key_sets[0] for keys in key_sets)


def test_preprocessing_request_follows_the_run_layout() -> None:
    request = requests_for({"split_ratio": 0.3})["preprocessing"]
    assert request["ProcessingJobName"] == "xgb-prep-run-1"
    assert request["AppSpecification"]["ContainerEntrypoint"] == ["ml-preprocess"]
    arguments = request["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--train-test-split-ratio") + 1] == "0.3"
    assert all(isinstance(argument, str) for argument in arguments)
    (source,) = request["ProcessingInputs"]
    assert source["S3Input"]["S3Uri"] == "s3://data-bucket/datasets/default/"
    assert source["S3Input"]["LocalPath"] == "/opt/ml/processing/input"
    outputs = {o["OutputName"]: o["S3Output"] for o in request["ProcessingOutputConfig"]["Outputs"]}
    assert set(outputs) == set(jobs.PREPROCESSING_OUTPUTS)
    assert outputs["train"]["S3Uri"] == "s3://artifact-bucket/runs/run-1/processing/train/"
    assert outputs["test_no_label"]["LocalPath"] == "/opt/ml/processing/test_no_label"
    assert request["ExperimentConfig"] == {
        "ExperimentName": "xgb-experiment",
        "TrialName": "xgb-trial-run-1",
        "TrialComponentDisplayName": "Preprocessing",
    }


def test_training_request_channels_spot_and_distribution() -> None:
    plain = requests_for({})["training"]
    assert [c["ChannelName"] for c in plain["InputDataConfig"]] == ["train"]
    assert plain["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert plain["EnableManagedSpotTraining"] is False
    assert plain["EnableInterContainerTrafficEncryption"] is False
    assert plain["CheckpointConfig"] == {
        "S3Uri": "s3://artifact-bucket/runs/run-1/checkpoints/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert plain["HyperParameters"]["max_depth"] == "5"
    assert plain["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS

    spot = requests_for({"spot_training": True, "validation_ratio": 0.1, "training_instance_count": 2})[
        "training"
    ]
    assert [c["ChannelName"] for c in spot["InputDataConfig"]] == ["train", "validation"]
    assert spot["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800}
    assert spot["ResourceConfig"]["InstanceCount"] == 2
    assert spot["EnableInterContainerTrafficEncryption"] is True

    sharded = requests_for({"training_distribution": "ShardedByS3Key", "training_instance_count": 3})
    train_channel = sharded["training"]["InputDataConfig"][0]
    assert train_channel["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    arguments = sharded["preprocessing"]["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--train-shards") + 1] == "3"


def test_model_and_transform_fit_together() -> None:
    requests = requests_for({"threshold": 0.4, "transform_instance_count": 2})
    model, transform, training = requests["model"], requests["transform"], requests["training"]
    assert transform["ModelName"] == model["ModelName"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == (
        f"{training['OutputDataConfig']['S3OutputPath']}{training['TrainingJobName']}/output/model.tar.gz"
    )
    assert model["PrimaryContainer"]["Environment"] == {"PREDICTION_THRESHOLD": "0.4"}
    assert transform["MaxPayloadInMB"] == MAX_PAYLOAD_MB
    assert transform["MaxConcurrentTransforms"] == MAX_CONCURRENT_TRANSFORMS
    # SageMaker rejects MaxConcurrentTransforms * MaxPayloadInMB above 100 MB.
    assert MAX_PAYLOAD_MB * MAX_CONCURRENT_TRANSFORMS <= 100
    assert transform["BatchStrategy"] == "MultiRecord"
    assert transform["TransformInput"]["SplitType"] == "Line"
    assert transform["TransformInput"]["ContentType"] == "text/csv"
    assert (
        transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        == (requests["preprocessing"]["ProcessingOutputConfig"]["Outputs"][2]["S3Output"]["S3Uri"])
    )
    assert transform["TransformResources"]["InstanceCount"] == 2


def test_evaluation_reads_the_transform_output_and_the_labels() -> None:
    requests = requests_for({})
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in requests["evaluation"]["ProcessingInputs"]}
    assert inputs == {
        "predictions": requests["transform"]["TransformOutput"]["S3OutputPath"],
        "labels": "s3://artifact-bucket/runs/run-1/processing/test/",
        # One object of preprocessing's train_headers output, not a data prefix.
        "dataset": f"s3://artifact-bucket/runs/run-1/processing/train_headers/{jobs.DATASET_FILE}",
    }
    outputs = {
        o["OutputName"]: o["S3Output"]["S3Uri"]
        for o in requests["preprocessing"]["ProcessingOutputConfig"]["Outputs"]
    }
    assert inputs["dataset"].startswith(outputs["train_headers"])
    # Neither the training channels nor the transform input can pick the file up.
    for channel in requests["training"]["InputDataConfig"]:
        assert not inputs["dataset"].startswith(channel["DataSource"]["S3DataSource"]["S3Uri"])
    assert not inputs["dataset"].startswith(
        requests["transform"]["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    )
    assert not inputs["dataset"].startswith(inputs["labels"])


@pytest.mark.parametrize("schema", ["auto", "uci", "generic"])
def test_dataset_schema_reaches_preprocessing_and_exploration(schema: str) -> None:
    requests = requests_for({"dataset_schema": schema})
    for kind in ("preprocessing", "explore"):
        arguments = requests[kind]["AppSpecification"]["ContainerArguments"]
        assert arguments[arguments.index("--dataset-schema") + 1] == schema
    arguments = requests["evaluation"]["AppSpecification"]["ContainerArguments"]
    assert "--dataset-schema" not in arguments
    assert requests["evaluation"]["AppSpecification"]["ContainerEntrypoint"] == ["ml-evaluate"]


def test_without_a_kms_key_no_key_fields_are_sent() -> None:
    settings = jobs.DeploySettings(**{**SETTINGS.to_json_dict(), "kms_key_arn": None})
    text = repr(requests_for({}, settings))
    assert "KmsKeyId" not in text and "VolumeKmsKeyId" not in text


def test_state_machine_parameters_pass_each_key_on() -> None:
    plan = plan_run({}, "sample", SETTINGS)
    parameters = jobs.state_machine_parameters("transform", plan, SETTINGS, requests_path="$.run.requests")
    assert parameters["TransformJobName.$"] == "$.run.requests.transform.TransformJobName"
    assert len(parameters) == len(jobs.transform_job(plan, SETTINGS))


def test_state_machine_parameters_overrides_replace_top_level_and_nested_fields() -> None:
    plan = plan_run({}, "sample", SETTINGS)
    parameters = jobs.state_machine_parameters(
        "model",
        plan,
        SETTINGS,
        requests_path="$.run.requests",
        overrides={
            "ModelName": "$.names.model",
            "PrimaryContainer.ModelDataUrl": "$.training.model_artifact",
        },
    )
    request = jobs.model_request(plan, SETTINGS)
    assert parameters["ModelName.$"] == "$.names.model"
    assert "PrimaryContainer.$" not in parameters
    assert parameters["PrimaryContainer"] == {
        "Image.$": "$.run.requests.model.PrimaryContainer.Image",
        "ModelDataUrl.$": "$.training.model_artifact",
        "Environment.$": "$.run.requests.model.PrimaryContainer.Environment",
    }
    assert set(parameters["PrimaryContainer"]) == {f"{key}.$" for key in request["PrimaryContainer"]}
    untouched = {k: v for k, v in parameters.items() if k not in ("ModelName.$", "PrimaryContainer")}
    assert untouched == {
        f"{key}.$": f"$.run.requests.model.{key}"
        for key in request
        if key not in ("ModelName", "PrimaryContainer")
    }


def test_rendered_parameters_with_overrides_are_the_same_for_every_configuration() -> None:
    """Overrides descend into objects, whose keys must then be as stable as the top-level ones."""
    overrides = {
        "model": {"PrimaryContainer.ModelDataUrl": "$.training.model_artifact"},
        **{
            kind: {jobs.JOB_NAME_KEYS[kind]: f"$.run.attempts.{kind}.name"} for kind in jobs.RELAUNCHABLE_JOBS
        },
    }
    rendered = [
        {
            kind: jobs.state_machine_parameters(
                kind,
                plan_run(configuration, "run-1", SETTINGS),
                SETTINGS,
                requests_path="$.run.requests",
                overrides=overrides.get(kind),
            )
            for kind in jobs.PIPELINE_JOBS
        }
        for configuration in CONFIGURATIONS
    ]
    assert all(parameters == rendered[0] for parameters in rendered)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ModelNmae": "$.x"}, r"names \['ModelNmae'\] under \$.r.model, which the request does not have"),
        ({"PrimaryContainer.Imgae": "$.x"}, r"names \['Imgae'\] under \$.r.model.PrimaryContainer"),
        ({"ModelName.Inner": "$.x"}, "descends into .*ModelName, which is not an object"),
        (
            {"PrimaryContainer": "$.x", "PrimaryContainer.Image": "$.y"},
            "conflicting overrides of 'model' at 'PrimaryContainer.Image'",
        ),
        (
            {"PrimaryContainer.Image": "$.y", "PrimaryContainer": "$.x"},
            "conflicting overrides of 'model' at 'PrimaryContainer'",
        ),
    ],
)
def test_state_machine_parameters_refuse_overrides_of_fields_the_request_lacks(
    overrides: dict[str, str], message: str
) -> None:
    plan = plan_run({}, "sample", SETTINGS)
    with pytest.raises(ValueError, match=message):
        jobs.state_machine_parameters("model", plan, SETTINGS, requests_path="$.r", overrides=overrides)


def test_training_asks_sagemaker_to_retry_internal_errors_in_place() -> None:
    for configuration in CONFIGURATIONS:
        training = requests_for(configuration)["training"]
        assert training["RetryStrategy"] == {"MaximumRetryAttempts": jobs.TRAINING_RETRY_ATTEMPTS}
    # SageMaker accepts 1 to 30 attempts.
    assert 1 <= jobs.TRAINING_RETRY_ATTEMPTS <= 30


def test_relaunch_plan_is_consistent() -> None:
    assert len(jobs.RELAUNCH_WAIT_SECONDS) == jobs.MAX_JOB_LAUNCHES - 1
    assert all(seconds > 0 for seconds in jobs.RELAUNCH_WAIT_SECONDS)
    assert list(jobs.RELAUNCH_WAIT_SECONDS) == sorted(jobs.RELAUNCH_WAIT_SECONDS)  # backoff
    assert set(jobs.RELAUNCHABLE_JOBS) <= set(jobs.PIPELINE_JOBS) - {"model"}
    assert jobs.relaunch_name("xgb-train-run-1", 1) == "xgb-train-run-1-r1"
    assert jobs.relaunch_suffix_length() == len("-r2")
    for attempt in (0, jobs.MAX_JOB_LAUNCHES):
        with pytest.raises(ValueError, match="relaunch attempt must be in"):
            jobs.relaunch_name("x", attempt)
    requests = requests_for({})
    for kind, key in jobs.JOB_NAME_KEYS.items():
        assert requests[kind][key] == plan_run({}, "run-1", SETTINGS).names[kind]


@pytest.mark.parametrize(
    ("reason", "relaunched"),
    [
        (
            "CapacityError: Unable to provision requested ML compute capacity. "
            "Please retry using a different ML instance type.",
            True,
        ),
        ("InsufficientInstanceCapacity: We currently do not have sufficient ml.p3.2xlarge capacity", True),
        ("InternalServerError: We encountered an internal error. Please try again.", True),
        ("AlgorithmError: ExecuteUserScriptError: num_round must be >= 1", False),
        ("AlgorithmError: upstream said InternalServerError: try again", False),
        ("ClientError: row 12 has 22 values, expected 23", False),
        ("", False),
    ],
)
def test_relaunch_patterns_select_sagemakers_own_failures(reason: str, relaunched: bool) -> None:
    """StringMatches has `*` as its only wildcard, which is what fnmatch does with these patterns."""
    assert not any(ch in pattern for pattern in jobs.RELAUNCH_FAILURE_PATTERNS for ch in "?[]\\")
    matched = any(fnmatch.fnmatchcase(reason, pattern) for pattern in jobs.RELAUNCH_FAILURE_PATTERNS)
    assert matched is relaunched


def test_deploy_settings_round_trip_and_reject_unknown_keys() -> None:
    assert jobs.DeploySettings.from_json_dict(SETTINGS.to_json_dict()) == SETTINGS
    with pytest.raises(ValueError, match="unknown deploy settings"):
        jobs.DeploySettings.from_json_dict({**SETTINGS.to_json_dict(), "region": "x"})


def test_metric_definitions_parse_the_metric_lines() -> None:
    line = format_metric_line(12, {"train": {"logloss": 0.41234}, "validation": {"auc": 0.8123}})
    found = {}
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    assert found == {"train:logloss": 0.41234, "validation:auc": 0.8123}
