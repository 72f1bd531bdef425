"""The SageMaker job requests of the pipeline, each built in exactly one place.

Every request has the boto3 shape of its Create* call. The state machine does not spell any
request out: its Prepare step calls `build_requests` (through `ml.pipeline_input.prepare`) and
each SageMaker task passes the prepared request's top-level keys on (`state_machine_parameters`).
The local runner calls the same functions and runs the requests on this machine. So what AWS
runs and what a data scientist runs locally cannot drift apart.

Stdlib only: this module runs inside the Prepare Lambda.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ml.metric_log import METRIC_DEFINITIONS
from ml.sagemaker.serving_limits import MAX_CONCURRENT_TRANSFORMS, MAX_PAYLOAD_MB

# Container paths: SageMaker mounts channels and processing inputs/outputs here; the local
# executor maps the `/opt/ml` root onto its own SAGEMAKER_BASE_DIR.
CONTAINER_ROOT: Final[str] = "/opt/ml"
PROCESSING_ROOT: Final[str] = f"{CONTAINER_ROOT}/processing"
CHECKPOINT_PATH: Final[str] = f"{CONTAINER_ROOT}/checkpoints"

PREPROCESSING_OUTPUTS: Final[tuple[str, ...]] = (
    "train",
    "test",
    "test_no_label",
    "train_headers",
    "validation",
)
# Batch transform names its output after the input object: `<input file>.out`.
TRANSFORM_INPUT_FILE: Final[str] = "test_data_no_label.csv"
TRANSFORM_OUTPUT_FILE: Final[str] = f"{TRANSFORM_INPUT_FILE}.out"
EVALUATION_FILE: Final[str] = "evaluation.json"
# Written by ml-preprocess into its `train_headers` output: {"synthetic": bool, ...}; the
# evaluation job reads it as its `dataset` input to label its report.
DATASET_FILE: Final[str] = "dataset.json"

# Kinds of job and the short tag each contributes to its job name.
JOB_KINDS: Final[dict[str, str]] = {
    "explore": "explore",
    "preprocessing": "prep",
    "training": "train",
    "model": "model",
    "transform": "xform",
    "evaluation": "eval",
}
# What the state machine runs; `explore` is a local-only convenience.
PIPELINE_JOBS: Final[tuple[str, ...]] = ("preprocessing", "training", "model", "transform", "evaluation")

# The request key that names each job; the state machine renames a relaunched job through it.
JOB_NAME_KEYS: Final[dict[str, str]] = {
    "explore": "ProcessingJobName",
    "preprocessing": "ProcessingJobName",
    "training": "TrainingJobName",
    "model": "ModelName",
    "transform": "TransformJobName",
    "evaluation": "ProcessingJobName",
}

# Relaunching a job that SageMaker accepted and that then failed for a reason of SageMaker's own
# (no capacity for the instance type, an internal error). SageMaker keeps the failed job's name,
# so the state machine relaunches it as `<name>-r<attempt>` (RELAUNCH_NAME_FORMAT, in Python
# `str.format` and ASL `States.Format` alike) after a wait. API errors at create time are retried
# by the tasks' Retry blocks instead; container errors (AlgorithmError, ClientError) never
# relaunch: the same code on the same data would fail again.
RELAUNCHABLE_JOBS: Final[tuple[str, ...]] = ("preprocessing", "training", "transform", "evaluation")
MAX_JOB_LAUNCHES: Final[int] = 3  # the first launch and up to two relaunches
# Wait before relaunch k (1-based) is RELAUNCH_WAIT_SECONDS[k - 1]: capacity comes back in minutes.
RELAUNCH_WAIT_SECONDS: Final[tuple[int, ...]] = (60, 300)
RELAUNCH_NAME_FORMAT: Final[str] = "{}-r{}"
# Step Functions `StringMatches` patterns (`*` is the only wildcard) on a failed job's
# FailureReason. SageMaker starts these reasons with the error type, so anchoring them at the
# start keeps a container message that merely mentions the words from relaunching.
RELAUNCH_FAILURE_PATTERNS: Final[tuple[str, ...]] = (
    "CapacityError*",  # "CapacityError: Unable to provision requested ML compute capacity. ..."
    "InsufficientInstanceCapacity*",  # EC2's capacity error, passed on by SageMaker
    "InternalServerError*",  # "InternalServerError: We encountered an internal error. ..."
)
# SageMaker's own in-place retry of a training job after an InternalServerError (1-30 allowed):
# cheaper than a relaunch because the job keeps its name, output location and lineage.
TRAINING_RETRY_ATTEMPTS: Final[int] = 2


def relaunch_name(name: str, attempt: int) -> str:
    """The job name of relaunch `attempt` (1-based) of the job first launched as `name`."""
    if not 1 <= attempt < MAX_JOB_LAUNCHES:
        raise ValueError(f"relaunch attempt must be in [1, {MAX_JOB_LAUNCHES - 1}], got {attempt}")
    return RELAUNCH_NAME_FORMAT.format(name, attempt)


def relaunch_suffix_length() -> int:
    """Characters a relaunch adds to a job name at most: what job names must leave free."""
    return len(relaunch_name("", MAX_JOB_LAUNCHES - 1))


TRIAL_COMPONENT_NAMES: Final[dict[str, str]] = {
    "explore": "Exploration",
    "preprocessing": "Preprocessing",
    "training": "Training",
    "transform": "BatchTransform",
    "evaluation": "Evaluation",
}


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    """What is fixed when the stack is deployed (or when the local runner starts).

    `defaults` overrides the execution-input defaults of `ml.pipeline_input.INPUT_FIELDS`
    (for example the instance types a platform team chose in CDK context).
    """

    name_prefix: str
    role_arn: str
    image_uri: str
    data_bucket: str
    artifact_bucket: str
    kms_key_arn: str | None = None
    processing_volume_gb: int = 30
    training_volume_gb: int = 30
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "name_prefix": self.name_prefix,
            "role_arn": self.role_arn,
            "image_uri": self.image_uri,
            "data_bucket": self.data_bucket,
            "artifact_bucket": self.artifact_bucket,
            "kms_key_arn": self.kms_key_arn,
            "processing_volume_gb": self.processing_volume_gb,
            "training_volume_gb": self.training_volume_gb,
            "defaults": dict(self.defaults),
        }

    @classmethod
    def from_json_dict(cls, raw: Mapping[str, Any]) -> DeploySettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown deploy settings {unknown}; known: {sorted(known)}")
        return cls(**raw)


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """One run: its id, the validated configuration, job names and S3 locations."""

    run_id: str
    config: Mapping[str, Any]
    names: Mapping[str, str]
    uris: Mapping[str, str]


def run_uris(*, artifact_bucket: str, run_id: str, data_uri: str, training_job_name: str) -> dict[str, str]:
    """Every S3 location of a run (docs/architecture.md, "Artefact key layout")."""
    run_key = f"runs/{run_id}"
    base = f"s3://{artifact_bucket}/{run_key}"
    uris = {"data": data_uri, "run": f"{base}/"}
    for output in PREPROCESSING_OUTPUTS:
        uris[output] = f"{base}/processing/{output}/"
    uris["dataset_file"] = f"{uris['train_headers']}{DATASET_FILE}"
    uris.update(
        explore=f"{base}/explore/",
        models=f"{base}/training/",
        model_artifact=f"{base}/training/{training_job_name}/output/model.tar.gz",
        checkpoints=f"{base}/checkpoints/",
        transform_output=f"{base}/transform/",
        evaluation=f"{base}/evaluation/",
        evaluation_key=f"{run_key}/evaluation/{EVALUATION_FILE}",
    )
    return uris


def _kms(settings: DeploySettings, key: str) -> dict[str, str]:
    return {key: settings.kms_key_arn} if settings.kms_key_arn else {}


def _experiment_config(plan: RunPlan, kind: str) -> dict[str, str]:
    return {
        "ExperimentName": plan.names["experiment"],
        "TrialName": plan.names["trial"],
        "TrialComponentDisplayName": TRIAL_COMPONENT_NAMES[kind],
    }


def _tags(plan: RunPlan) -> list[dict[str, str]]:
    return [{"Key": "pipeline-run-id", "Value": plan.run_id}]


def _processing_input(name: str, s3_uri: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": s3_uri,
            "LocalPath": f"{PROCESSING_ROOT}/{name}",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }


def _processing_output(name: str, s3_uri: str) -> dict[str, Any]:
    return {
        "OutputName": name,
        "S3Output": {"S3Uri": s3_uri, "LocalPath": f"{PROCESSING_ROOT}/{name}", "S3UploadMode": "EndOfJob"},
    }


def _processing_job(
    plan: RunPlan,
    settings: DeploySettings,
    *,
    kind: str,
    entrypoint: str,
    arguments: list[str],
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
) -> dict[str, Any]:
    """The one processing-job shape; preprocessing, evaluation and exploration differ only in
    entry point, arguments and the named inputs/outputs."""
    config = plan.config
    return {
        "ProcessingJobName": plan.names[kind],
        "RoleArn": settings.role_arn,
        "AppSpecification": {
            "ImageUri": settings.image_uri,
            "ContainerEntrypoint": [entrypoint],
            "ContainerArguments": arguments,
        },
        "ProcessingInputs": [_processing_input(name, uri) for name, uri in inputs.items()],
        "ProcessingOutputConfig": {
            "Outputs": [_processing_output(name, uri) for name, uri in outputs.items()],
            **_kms(settings, "KmsKeyId"),
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": config["processing_instance_type"],
                "VolumeSizeInGB": settings.processing_volume_gb,
                **_kms(settings, "VolumeKmsKeyId"),
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": config["max_runtime_seconds"]},
        # The jobs read and write S3 through SageMaker only; they never need the network.
        "NetworkConfig": {"EnableNetworkIsolation": True},
        "ExperimentConfig": _experiment_config(plan, kind),
        "Tags": _tags(plan),
    }


def _csv_list(values: Any) -> str:
    return ",".join(str(value) for value in values)


def preprocessing_job(plan: RunPlan, settings: DeploySettings) -> dict[str, Any]:
    config = plan.config
    sharded = config["training_distribution"] == "ShardedByS3Key"
    arguments = [
        "--train-test-split-ratio",
        str(config["split_ratio"]),
        "--random-state",
        str(config["random_state"]),
        "--validation-ratio",
        str(config["validation_ratio"]),
        "--label-column",
        config["label_column"],
        "--dataset-schema",
        config["dataset_schema"],
        "--standard-scale",
        _csv_list(config["standard_scaled"]),
        "--minmax-scale",
        _csv_list(config["minmax_scaled"]),
        "--drop-columns",
        _csv_list(config["drop_columns"]),
        # ShardedByS3Key hands each training host whole S3 objects: one file per host.
        "--train-shards",
        str(config["training_instance_count"] if sharded else 1),
    ]
    return _processing_job(
        plan,
        settings,
        kind="preprocessing",
        entrypoint="ml-preprocess",
        arguments=arguments,
        inputs={"input": plan.uris["data"]},
        outputs={name: plan.uris[name] for name in PREPROCESSING_OUTPUTS},
    )


def explore_job(plan: RunPlan, settings: DeploySettings) -> dict[str, Any]:
    config = plan.config
    return _processing_job(
        plan,
        settings,
        kind="explore",
        entrypoint="ml-explore",
        arguments=[
            "--label-column",
            config["label_column"],
            "--dataset-schema",
            config["dataset_schema"],
            "--drop-columns",
            _csv_list(config["drop_columns"]),
        ],
        inputs={"input": plan.uris["data"]},
        outputs={"explore": plan.uris["explore"]},
    )


def evaluation_job(plan: RunPlan, settings: DeploySettings) -> dict[str, Any]:
    config = plan.config
    return _processing_job(
        plan,
        settings,
        kind="evaluation",
        entrypoint="ml-evaluate",
        arguments=[
            "--threshold",
            str(config["threshold"]),
            "--quality-metric",
            config["quality_metric"],
            "--quality-threshold",
            str(config["quality_threshold"]),
        ],
        # `dataset` is the one object preprocessing writes about the data (is it synthetic?),
        # kept beside the headed training copy so that no data prefix holds a non-data file.
        inputs={
            "predictions": plan.uris["transform_output"],
            "labels": plan.uris["test"],
            "dataset": plan.uris["dataset_file"],
        },
        outputs={"evaluation": plan.uris["evaluation"]},
    )


def _channel(name: str, s3_uri: str, distribution: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": s3_uri,
                "S3DataDistributionType": distribution,
            }
        },
        "ContentType": "text/csv",
        "CompressionType": "None",
    }


def training_job(plan: RunPlan, settings: DeploySettings) -> dict[str, Any]:
    config = plan.config
    channels = [_channel("train", plan.uris["train"], config["training_distribution"])]
    if config["validation_ratio"] > 0:
        # An empty validation prefix would fail the job ("no S3 objects"), so the channel is
        # only declared when preprocessing writes validation data.
        channels.append(_channel("validation", plan.uris["validation"], "FullyReplicated"))
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": config["max_runtime_seconds"]}
    if config["spot_training"]:
        stopping["MaxWaitTimeInSeconds"] = config["max_wait_seconds"]
    instance_count = config["training_instance_count"]
    return {
        "TrainingJobName": plan.names["training"],
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": settings.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(definition) for definition in METRIC_DEFINITIONS],
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "HyperParameters": dict(config["hyperparameters"]),
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": plan.uris["models"], **_kms(settings, "KmsKeyId")},
        "ResourceConfig": {
            "InstanceCount": instance_count,
            "InstanceType": config["training_instance_type"],
            "VolumeSizeInGB": settings.training_volume_gb,
            **_kms(settings, "VolumeKmsKeyId"),
        },
        "StoppingCondition": stopping,
        "RetryStrategy": {"MaximumRetryAttempts": TRAINING_RETRY_ATTEMPTS},
        "EnableManagedSpotTraining": config["spot_training"],
        # Spot interruptions resume from here (the container checkpoints on SIGTERM).
        "CheckpointConfig": {"S3Uri": plan.uris["checkpoints"], "LocalPath": CHECKPOINT_PATH},
        "EnableNetworkIsolation": True,
        # The hosts of a distributed job exchange gradients histograms: encrypt that traffic.
        "EnableInterContainerTrafficEncryption": instance_count > 1,
        "ExperimentConfig": _experiment_config(plan, "training"),
        "Tags": _tags(plan),
    }


def model_request(plan: RunPlan, settings: DeploySettings) -> dict[str, Any]:
    return {
        "ModelName": plan.names["model"],
        "ExecutionRoleArn": settings.role_arn,
        "PrimaryContainer": {
            "Image": settings.image_uri,
            "ModelDataUrl": plan.uris["model_artifact"],
            "Environment": {"PREDICTION_THRESHOLD": str(plan.config["threshold"])},
        },
        "EnableNetworkIsolation": True,
        "Tags": _tags(plan),
    }


def transform_job(plan: RunPlan, settings: DeploySettings) -> dict[str, Any]:
    config = plan.config
    return {
        "TransformJobName": plan.names["transform"],
        "ModelName": plan.names["model"],
        # The same limits the server enforces (`/execution-parameters`, 413 above the payload).
        "MaxConcurrentTransforms": MAX_CONCURRENT_TRANSFORMS,
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": plan.uris["test_no_label"]}},
            "ContentType": "text/csv",
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": plan.uris["transform_output"],
            "Accept": "text/csv",
            "AssembleWith": "Line",
            **_kms(settings, "KmsKeyId"),
        },
        "TransformResources": {
            "InstanceCount": config["transform_instance_count"],
            "InstanceType": config["transform_instance_type"],
            **_kms(settings, "VolumeKmsKeyId"),
        },
        "ExperimentConfig": _experiment_config(plan, "transform"),
        "Tags": _tags(plan),
    }


BUILDERS: Final = {
    "explore": explore_job,
    "preprocessing": preprocessing_job,
    "training": training_job,
    "model": model_request,
    "transform": transform_job,
    "evaluation": evaluation_job,
}


def build_requests(plan: RunPlan, settings: DeploySettings) -> dict[str, dict[str, Any]]:
    """Every request of the run, by kind of job."""
    return {kind: builder(plan, settings) for kind, builder in BUILDERS.items()}


def state_machine_parameters(
    kind: str,
    plan: RunPlan,
    settings: DeploySettings,
    *,
    requests_path: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """ASL `Parameters` passing the prepared request of `kind` on, key by key.

    `plan` and `settings` may be any valid sample: each builder emits the same top-level keys for
    every configuration (a test holds it to that), which is what makes this static rendering
    valid for every run.

    `overrides` maps a request field to the JSONPath the task reads instead of the prepared
    value, for values only known while the execution runs (a relaunched job's name, the model
    artefact of the training job that actually succeeded). A field is a top-level key
    (`"TrainingJobName"`) or a dotted path into an object of the request
    (`"PrimaryContainer.ModelDataUrl"`); the objects on such a path are then passed on key by
    key too, so their keys must also be the same for every configuration. An override of a field
    the request does not have raises ValueError: a misspelt one would otherwise silently add a
    parameter SageMaker rejects at run time.
    """
    request = BUILDERS[kind](plan, settings)
    tree: dict[str, Any] = {}
    for field_path, json_path in (overrides or {}).items():
        *parents, leaf = field_path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or leaf in node:
            raise ValueError(
                f"conflicting overrides of {kind!r} at {field_path!r}: a field and a field inside it "
                "cannot both be overridden"
            )
        node[leaf] = json_path
    return _bind(request, tree, f"{requests_path}.{kind}", kind)


def _bind(request: Mapping[str, Any], overrides: Mapping[str, Any], path: str, kind: str) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(request))
    if unknown:
        raise ValueError(
            f"override of {kind!r} names {unknown} under {path}, which the request does not have; "
            f"its fields there are {sorted(request)}"
        )
    parameters: dict[str, Any] = {}
    for key, value in request.items():
        override = overrides.get(key)
        if override is None:
            parameters[f"{key}.$"] = f"{path}.{key}"
        elif isinstance(override, str):
            parameters[f"{key}.$"] = override
        elif isinstance(value, Mapping):
            parameters[key] = _bind(value, override, f"{path}.{key}", kind)
        else:
            raise ValueError(f"override of {kind!r} descends into {path}.{key}, which is not an object")
    return parameters
