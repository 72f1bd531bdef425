"""The synthesized state machine, executed in moto's Step Functions interpreter.

SageMaker jobs here do no real work (moto completes them) unless a test says otherwise; the
evaluation job writes an evaluation.json with metrics the test chooses. What runs for real is
the definition itself, the Prepare Lambda's handler (in-process), and every Choice, Retry,
Catch, intrinsic function and SNS publish on the way. test_happy_path.py runs the real jobs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from moto.awslambda.models import LambdaBackend
from moto.core.exceptions import JsonRESTError
from moto.ecr.models import ECRBackend
from moto.sagemaker.models import SageMakerModelBackend

from infra.pipeline import TRANSIENT_ERRORS
from ml import jobs, pipeline_input
from tests.support import moto_sfn_codebuild, moto_sfn_sagemaker
from tests.support.moto_sfn_codebuild import BuildFailedError
from tests.support.moto_sfn_extras import RetryClock, WaitClock
from tests.support.moto_sfn_sagemaker import JobFailedError, SageMakerApiError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = PROJECT_ROOT / "node_modules" / ".bin" / "asl-validator"
SAGEMAKER_STATES = {
    "Preprocessing": "preprocessing",
    "Training": "training",
    "CreateModel": "model",
    "Transform": "transform",
    "Evaluation": "evaluation",
}
GOOD_METRICS = {"accuracy": 0.82, "auc": 0.78, "f1": 0.47, "precision": 0.66, "recall": 0.36}


def plan(pipeline, execution_name: str, execution_input: Any = None) -> dict[str, Any]:
    """What the Prepare step computes for this execution (the handler's own function)."""
    settings = jobs.DeploySettings.from_json_dict(json.loads(pipeline.names["settings"]))
    return pipeline_input.prepare(execution_input or {}, execution_name, settings)


def job_kind(request: dict[str, Any]) -> str:
    entrypoint = request.get("AppSpecification", {}).get("ContainerEntrypoint", [""])[0]
    return {"ml-preprocess": "preprocessing", "ml-evaluate": "evaluation"}.get(entrypoint, "")


def fake_runners(
    pipeline, metrics: dict[str, float] | None = None, fail: dict[str, str] | None = None
) -> None:
    """Jobs complete instantly; the evaluation job writes `metrics`; kinds in `fail` fail with
    that FailureReason."""
    fail = fail or {}
    s3 = pipeline.clients["s3"]

    def processing(request: dict[str, Any]) -> None:
        kind = job_kind(request)
        if kind in fail:
            raise JobFailedError(fail[kind])
        if kind == "evaluation":
            (output,) = request["ProcessingOutputConfig"]["Outputs"]
            bucket, _, key = output["S3Output"]["S3Uri"].removeprefix("s3://").partition("/")
            body = json.dumps(metrics if metrics is not None else GOOD_METRICS).encode()
            s3.put_object(Bucket=bucket, Key=key + jobs.EVALUATION_FILE, Body=body)

    def other(kind: str):
        def run(request: dict[str, Any]) -> None:
            if kind == "model" and kind in fail:
                # CreateModel starts no job: its failure is SageMaker refusing the call.
                raise SageMakerApiError("ValidationException", fail[kind])
            if kind in fail:
                raise JobFailedError(fail[kind])

        return run

    moto_sfn_sagemaker.RUNNERS.update(
        processing=processing, training=other("training"), transform=other("transform"), model=other("model")
    )


def notification(pipeline) -> dict[str, Any]:
    (message,) = pipeline.inbox.messages()
    return message


# --------------------------------------------------------------------------- static checks


def test_resolved_definition_passes_asl_validator(synthesized, tmp_path):
    if not ASL_VALIDATOR.exists() or shutil.which("node") is None:
        pytest.skip("asl-validator not installed (npm install)")
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(synthesized.asl))
    result = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(definition)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_sagemaker_task_passes_on_its_prepared_request(synthesized):
    sample = pipeline_input.plan_run(
        {"spot_training": True, "validation_ratio": 0.1, "training_instance_count": 2},
        "shape",
        jobs.DeploySettings(
            name_prefix="xgb-pipeline",
            role_arn="arn:aws:iam::1:role/r",
            image_uri="i",
            data_bucket="data-bucket",
            artifact_bucket="artifact-bucket",
        ),
    )
    requests = jobs.build_requests(
        sample,
        jobs.DeploySettings(
            name_prefix="xgb-pipeline", role_arn="r", image_uri="i", data_bucket="dd", artifact_bucket="aa"
        ),
    )
    for state_name, kind in SAGEMAKER_STATES.items():
        state = synthesized.asl["States"][state_name]
        expected: dict[str, Any] = {f"{key}.$": f"$.run.requests.{kind}.{key}" for key in requests[kind]}
        if kind in jobs.RELAUNCHABLE_JOBS:
            # A relaunch renames the job: the name comes from the current launch record.
            expected[f"{jobs.JOB_NAME_KEYS[kind]}.$"] = f"$.run.attempts.{kind}.name"
        if kind == "model":
            # The artefact of the training launch that succeeded, whatever its name.
            del expected["PrimaryContainer.$"]
            container = requests["model"]["PrimaryContainer"]
            expected["PrimaryContainer"] = {
                f"{key}.$": f"$.run.requests.model.PrimaryContainer.{key}" for key in container
            }
            expected["PrimaryContainer"]["ModelDataUrl.$"] = "$.training.model_artifact"
        assert state["Parameters"] == expected, state_name
        assert state["Resource"].startswith("arn:aws:states:::sagemaker:create")
        assert state["Resource"].endswith(".sync") == (kind != "model")
        retried = [error for retrier in state["Retry"] for error in retrier["ErrorEquals"]]
        assert {"SageMaker.AmazonSageMakerException", "ThrottlingException"} <= set(retried)
        assert "SageMaker.ResourceLimitExceededException" in retried
        assert all(r["BackoffRate"] > 1 for r in state["Retry"])
        relaunch = [
            {"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.error", "Next": f"{state_name}JobFailed"}
        ]
        assert state["Catch"] == [
            *(relaunch if kind in jobs.RELAUNCHABLE_JOBS else []),
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": f"{state_name}Failed"},
        ]


def test_ensure_image_states_shape(synthesized):
    states = synthesized.asl["States"]
    rebuild = states["RebuildRequested"]
    assert rebuild["Choices"] == [
        {"Variable": "$.run.config.rebuild_image", "BooleanEquals": True, "Next": "BuildImage"}
    ]
    assert rebuild["Default"] == "FindImage"
    find = states["FindImage"]
    assert find["Resource"] == "arn:aws:states:::aws-sdk:ecr:describeImages"
    assert find["Next"] == "CreateExperiment"
    assert find["Catch"][0] == {
        "ErrorEquals": ["Ecr.ImageNotFoundException"],
        "ResultPath": None,
        "Next": "BuildImage",
    }
    build = states["BuildImage"]
    assert build["Resource"] == "arn:aws:states:::codebuild:startBuild.sync"
    assert build["Next"] == "CreateExperiment"
    assert build["Parameters"]["EnvironmentVariablesOverride"] == [
        {
            "Name": "FORCE_REBUILD",
            "Type": "PLAINTEXT",
            "Value.$": "States.Format('{}', $.run.config.rebuild_image)",
        }
    ]


def test_logging_tracing_and_encryption(synthesized):
    template = synthesized.template["Resources"]
    (machine,) = [r for r in template.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    props = machine["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    log_groups = [r for r in template.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert log_groups and all("KmsKeyId" in g["Properties"] for g in log_groups)
    (topic,) = [r for r in template.values() if r["Type"] == "AWS::SNS::Topic"]
    assert "KmsMasterKeyId" in topic["Properties"]


# --------------------------------------------------------------------------- executions


def test_defaults_run_every_step_and_publish_a_summary(pipeline):
    fake_runners(pipeline)
    execution = pipeline.run("run-defaults", {})
    assert execution.status == "SUCCEEDED", execution.description
    entered = execution.entered_states()
    assert entered[:3] == ["Prepare", "RebuildRequested", "FindImage"]
    assert "BuildImage" not in entered
    order = [s for s in entered if s in SAGEMAKER_STATES]
    assert order == list(SAGEMAKER_STATES)
    output = execution.output
    expected = plan(pipeline, "run-defaults")
    assert output["run_id"] == expected["run_id"]
    assert output["evaluation"]["metrics"] == GOOD_METRICS
    assert output["evaluation"]["quality_metric"] == "auc"
    assert output["evaluation"]["quality_value"] == GOOD_METRICS["auc"]
    # Every job request is the one Prepare computed, with lineage on each job.
    sent = {
        action: request for action, request in moto_sfn_sagemaker.CALLS if action != "createProcessingJob"
    }
    assert sent["createTrainingJob"] == expected["requests"]["training"]
    assert sent["createTransformJob"] == expected["requests"]["transform"]
    assert sent["createModel"] == expected["requests"]["model"]
    processing = [r for a, r in moto_sfn_sagemaker.CALLS if a == "createProcessingJob"]
    assert processing == [expected["requests"]["preprocessing"], expected["requests"]["evaluation"]]
    for request in (*processing, sent["createTrainingJob"], sent["createTransformJob"]):
        assert request["ExperimentConfig"]["TrialName"] == expected["names"]["trial"]
    # Default data location: where `python -m ml upload-data` puts the file.
    data_input = expected["requests"]["preprocessing"]["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    assert data_input == f"s3://{pipeline.names['data_bucket']}/datasets/default/"
    message = notification(pipeline)
    assert message["Subject"] == "ML pipeline run succeeded"
    assert f"ML pipeline run {expected['run_id']} succeeded: auc = 0.78 (threshold 0.7)" in message["Message"]


def test_overrides_reach_the_job_requests(pipeline):
    fake_runners(pipeline)
    overrides = {
        "hyperparameters": {"max_depth": "3", "eta": 0.3},
        "training_instance_type": "ml.m5.2xlarge",
        "training_instance_count": 2,
        "training_distribution": "ShardedByS3Key",
        "transform_instance_count": 3,
        "split_ratio": 0.3,
        "spot_training": True,
        "data_uri": "s3://other-bucket/credit/",
    }
    execution = pipeline.run("run-overrides", overrides)
    assert execution.status == "SUCCEEDED", execution.description
    sent = dict(moto_sfn_sagemaker.CALLS)
    training = sent["createTrainingJob"]
    assert training["HyperParameters"]["max_depth"] == "3"
    assert training["HyperParameters"]["eta"] == "0.3"
    assert training["ResourceConfig"]["InstanceType"] == "ml.m5.2xlarge"
    assert training["ResourceConfig"]["InstanceCount"] == 2
    assert (
        training["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"]
        == "ShardedByS3Key"
    )
    assert training["EnableManagedSpotTraining"] is True
    assert "MaxWaitTimeInSeconds" in training["StoppingCondition"]
    assert sent["createTransformJob"]["TransformResources"]["InstanceCount"] == 3
    preprocessing = next(r for a, r in moto_sfn_sagemaker.CALLS if a == "createProcessingJob")
    assert preprocessing["ProcessingInputs"][0]["S3Input"]["S3Uri"] == "s3://other-bucket/credit/"
    assert "0.3" in preprocessing["AppSpecification"]["ContainerArguments"]


@pytest.mark.parametrize(
    ("state_name", "kind", "reason"),
    [
        ("Preprocessing", "preprocessing", "AlgorithmError: column 'Label' not found in the data set"),
        ("Training", "training", "AlgorithmError: ExecuteUserScriptError: num_round must be >= 1"),
        (
            "CreateModel",
            "model",
            "Could not find model data at s3://artifact-bucket/runs/x/training/model.tar.gz.",
        ),
        ("Transform", "transform", "ClientError: row 12 has 22 values, expected 23"),
        ("Evaluation", "evaluation", "AlgorithmError: no predictions found under the transform output"),
    ],
)
def test_failed_job_is_notified_with_step_job_and_reason(pipeline, state_name, kind, reason):
    fake_runners(pipeline, fail={kind: reason})
    execution = pipeline.run(f"fail-{kind}")
    assert execution.status == "FAILED"
    job_name = plan(pipeline, f"fail-{kind}")["names"][kind]
    assert execution.description["error"] == f"{state_name}Failed"
    cause = execution.description["cause"]
    assert f"failed at step {state_name} (job {job_name})" in cause
    assert reason in cause
    entered = execution.entered_states()
    assert entered[-3:] == ["SummariseFailure", "NotifyFailure", "PipelineFailed"]
    following = list(SAGEMAKER_STATES)[list(SAGEMAKER_STATES).index(state_name) + 1 :]
    assert not set(following) & set(entered)
    message = notification(pipeline)
    assert message["Subject"] == f"ML pipeline failed at {state_name}"
    assert message["Message"] == cause
    assert (
        pipeline.clients["sagemaker"].list_training_jobs()["TrainingJobSummaries"] or kind == "preprocessing"
    )


def fail_first_calls(
    monkeypatch, backend: type, method: str, error: JsonRESTError, times: int = 2
) -> list[tuple[Any, ...]]:
    """Make `backend.method` raise `error` on its first `times` calls, then behave as moto does.
    Returns the arguments of every call (positional, then sorted keyword items), for assertions."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(backend, method)

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args + tuple(sorted(kwargs.items())))
        if len(calls) <= times:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(backend, method, failing)
    return calls


def test_internal_error_of_the_image_lookup_is_retried_then_succeeds(pipeline, monkeypatch):
    # An aws-sdk task's transient error, injected in moto's ECR: ServerException is modelled, so
    # Step Functions names it Ecr.ServerException (one of TRANSIENT_ERRORS).
    fake_runners(pipeline)
    internal = JsonRESTError("ServerException", "We encountered an internal error. Please try again.")
    calls = fail_first_calls(monkeypatch, ECRBackend, "describe_images", internal)
    execution = pipeline.run("run-ecr-internal-error")
    assert execution.status == "SUCCEEDED", execution.description
    assert len(calls) == 3
    assert [f["error"] for f in execution.task_failures()] == ["Ecr.ServerException"] * 2
    assert "BuildImage" not in execution.entered_states()
    first, second = RetryClock.intervals[:2]
    assert 0 <= first <= 10 and 0 <= second <= 20


def test_throttled_lineage_call_is_retried_then_succeeds(pipeline, monkeypatch):
    # SageMaker does not model ThrottlingException: the aws-sdk task reports the generic
    # SageMaker.SageMakerException, told apart from "already exists" by its cause.
    fake_runners(pipeline)
    throttling = JsonRESTError("ThrottlingException", "Rate exceeded")
    calls = fail_first_calls(monkeypatch, SageMakerModelBackend, "create_experiment", throttling)
    execution = pipeline.run("run-throttled-lineage")
    assert execution.status == "SUCCEEDED", execution.description
    assert len(calls) == 3 and len(set(calls)) == 1
    assert [f["error"] for f in execution.task_failures()] == ["SageMaker.SageMakerException"] * 2
    entered = execution.entered_states()
    assert entered.count("CreateExperimentWaitThrottled") == 2
    assert "CreateExperimentFirstThrottle" in entered and "CreateExperimentNextThrottle" in entered
    # Full jitter: each wait is drawn from [0, 10 * 2**n].
    first, second = WaitClock.seconds[:2]
    assert 0 <= first <= 10 and 0 <= second <= 20


def test_throttled_prepare_lambda_is_retried_then_succeeds(pipeline, monkeypatch):
    # Lambda throttling (TooManyRequestsException, HTTP 429) is not among the errors CDK's
    # retry_on_service_exceptions retries; without its own Retry a busy account fails the run.
    fake_runners(pipeline)
    throttling = JsonRESTError("TooManyRequestsException", "Rate exceeded")
    calls = fail_first_calls(monkeypatch, LambdaBackend, "invoke", throttling)
    execution = pipeline.run("run-throttled-prepare")
    assert execution.status == "SUCCEEDED", execution.description
    assert len(calls) == 3
    assert [f["error"] for f in execution.task_failures()] == ["Lambda.TooManyRequestsException"] * 2
    first, second = RetryClock.intervals[:2]
    assert 0 <= first <= 10 and 0 <= second <= 20


def test_lineage_throttling_gives_up_after_the_retry_budget(pipeline, monkeypatch):
    fake_runners(pipeline)

    def throttled(self: SageMakerModelBackend, experiment_name: str) -> dict[str, str]:
        raise JsonRESTError("ThrottlingException", "Rate exceeded")

    monkeypatch.setattr(SageMakerModelBackend, "create_experiment", throttled)
    execution = pipeline.run("run-throttled-forever")
    assert execution.status == "FAILED"
    assert execution.description["error"] == "CreateExperimentFailed"
    assert "Rate exceeded" in execution.description["cause"]
    assert len(execution.task_failures()) == 1 + 5


def test_every_non_job_task_retries_transient_errors_with_backoff(synthesized):
    states = synthesized.asl["States"]
    for name in (
        "FindImage",
        "BuildImage",
        "CreateExperiment",
        "CreateTrial",
        "ReadEvaluation",
        "NotifySuccess",
        "NotifyFailure",
    ):
        (retrier,) = states[name]["Retry"]
        assert retrier == {
            "ErrorEquals": list(TRANSIENT_ERRORS),
            "IntervalSeconds": 10,
            "BackoffRate": 2,
            "MaxAttempts": 5,
            "MaxDelaySeconds": 300,
            "JitterStrategy": "FULL",
        }, name
    # Each integration's throttling error is in the list; client errors and timeouts are not.
    for error in (
        "SageMaker.ThrottlingException",
        "Ecr.ThrottlingException",
        "CodeBuild.AWSCodeBuildException",
        "S3.SlowDownException",
        "SNS.ThrottledException",
    ):
        assert error in TRANSIENT_ERRORS
    assert not {"States.Timeout", "States.ALL", "States.TaskFailed", "SageMaker.ValidationException"} & set(
        TRANSIENT_ERRORS
    )
    # The image lookup's Catch for a missing image still comes after the retries.
    assert states["FindImage"]["Catch"][0]["ErrorEquals"] == ["Ecr.ImageNotFoundException"]


def test_throttled_create_call_is_retried_then_succeeds(pipeline):
    fake_runners(pipeline)
    attempts: list[str] = []
    plain_training = moto_sfn_sagemaker.RUNNERS["training"]

    def throttled(request: dict[str, Any]) -> None:
        attempts.append(request["TrainingJobName"])
        if len(attempts) <= 2:
            raise SageMakerApiError("ThrottlingException", "Rate exceeded")
        plain_training(request)

    moto_sfn_sagemaker.RUNNERS["training"] = throttled
    execution = pipeline.run("run-throttled")
    assert execution.status == "SUCCEEDED", execution.description
    assert len(attempts) == 3 and len(set(attempts)) == 1
    assert [f["error"] for f in execution.task_failures()] == ["SageMaker.AmazonSageMakerException"] * 2
    # IntervalSeconds 10, BackoffRate 2, full jitter: each wait is drawn from [0, 10 * 2**n].
    first, second = RetryClock.intervals[:2]
    assert 0 <= first <= 10 and 0 <= second <= 20
    assert pipeline.inbox.messages()[0]["Subject"] == "ML pipeline run succeeded"


@pytest.mark.parametrize(
    ("execution_input", "expected"),
    [
        ({"split_ratoi": 0.3}, "unknown key 'split_ratoi' (did you mean 'split_ratio'?)"),
        ({"training_instance_count": "two"}, "'training_instance_count' must be an integer, got \"two\""),
        ({"spot_training": "yes"}, "'spot_training' must be true or false"),
        ([1, 2], "the execution input must be a JSON object"),
    ],
)
def test_bad_input_fails_early_with_a_readable_cause(pipeline, execution_input, expected):
    fake_runners(pipeline)
    execution = pipeline.run("bad-input", execution_input)
    assert execution.status == "FAILED"
    assert execution.description["error"] == "InputError"
    assert expected in execution.description["cause"]
    assert "failed at step Prepare" in execution.description["cause"]
    assert execution.entered_states()[:2] == ["Prepare", "PrepareFailed"]
    assert moto_sfn_sagemaker.CALLS == []
    assert expected in notification(pipeline)["Message"]


def test_quality_gate_fails_a_weak_model_with_metric_and_threshold(pipeline):
    fake_runners(pipeline, metrics={**GOOD_METRICS, "accuracy": 0.8123})
    execution = pipeline.run("weak-model", {"quality_metric": "accuracy", "quality_threshold": 0.99})
    assert execution.status == "FAILED"
    assert execution.description["error"] == "QualityGateFailed"
    cause = execution.description["cause"]
    assert "accuracy is 0.8123, below the quality threshold 0.99" in cause
    assert "failed at step QualityGate" in cause
    assert "Evaluation" in execution.entered_states()
    assert "accuracy is 0.8123" in notification(pipeline)["Message"]


def test_missing_quality_metric_is_reported(pipeline):
    fake_runners(pipeline, metrics={"accuracy": 0.8})
    execution = pipeline.run("no-auc")
    assert execution.status == "FAILED"
    assert execution.description["error"] == "QualityMetricMissing"
    assert "evaluation.json has no numeric auc" in execution.description["cause"]


def test_missing_image_is_built_before_the_jobs(pipeline):
    fake_runners(pipeline)
    pipeline.remove_image()
    moto_sfn_codebuild.BUILD_RUNNERS[pipeline.names["project"]] = pipeline.push_image
    execution = pipeline.run("no-image")
    assert execution.status == "SUCCEEDED", execution.description
    entered = execution.entered_states()
    assert entered[:5] == ["Prepare", "RebuildRequested", "FindImage", "BuildImage", "CreateExperiment"]
    # Not a forced rebuild: the buildspec keeps its skip-if-present check.
    assert [
        {
            "projectName": pipeline.names["project"],
            "environmentVariablesOverride": [
                {"name": "FORCE_REBUILD", "type": "PLAINTEXT", "value": "false"}
            ],
        }
    ] == moto_sfn_codebuild.STARTED
    # The build pushes exactly the tag the state machine looked for and the jobs run.
    assert pipeline.names["build_image_tag"] == pipeline.names["image_tag"]
    pipeline.clients["ecr"].describe_images(
        repositoryName=pipeline.names["repository"], imageIds=[{"imageTag": pipeline.names["image_tag"]}]
    )


def test_failed_image_build_is_notified(pipeline):
    fake_runners(pipeline)
    pipeline.remove_image()

    def fail(build: dict[str, Any]) -> None:
        raise BuildFailedError("docker build: pip install failed")

    moto_sfn_codebuild.BUILD_RUNNERS[pipeline.names["project"]] = fail
    execution = pipeline.run("bad-build")
    assert execution.status == "FAILED"
    assert execution.description["error"] == "BuildImageFailed"
    assert f"failed at step BuildImage (job {pipeline.names['project']})" in execution.description["cause"]
    assert "ended FAILED" in execution.description["cause"]
    assert moto_sfn_sagemaker.CALLS == []
    assert notification(pipeline)["Subject"] == "ML pipeline failed at BuildImage"


def test_rebuild_image_replaces_the_existing_tag(pipeline):
    fake_runners(pipeline)
    ecr = pipeline.clients["ecr"]
    image_id = {
        "repositoryName": pipeline.names["repository"],
        "imageIds": [{"imageTag": pipeline.names["image_tag"]}],
    }
    before = ecr.describe_images(**image_id)["imageDetails"][0]["imageDigest"]
    moto_sfn_codebuild.BUILD_RUNNERS[pipeline.names["project"]] = pipeline.push_image
    execution = pipeline.run("rebuild", {"rebuild_image": True})
    assert execution.status == "SUCCEEDED", execution.description
    entered = execution.entered_states()
    assert entered[:4] == ["Prepare", "RebuildRequested", "BuildImage", "CreateExperiment"]
    assert "FindImage" not in entered
    # The build is told to rebuild (the buildspec would otherwise stop at the existing tag) ...
    assert [
        {
            "projectName": pipeline.names["project"],
            "environmentVariablesOverride": [{"name": "FORCE_REBUILD", "type": "PLAINTEXT", "value": "true"}],
        }
    ] == moto_sfn_codebuild.STARTED
    # ... and the tag now names the new image.
    after = ecr.describe_images(**image_id)["imageDetails"][0]["imageDigest"]
    assert after != before


def test_lineage_is_idempotent_across_runs(pipeline):
    fake_runners(pipeline)
    first = pipeline.run("run-one")
    pipeline.inbox.messages()
    second = pipeline.run("run-two")
    assert (first.status, second.status) == ("SUCCEEDED", "SUCCEEDED"), second.description
    assert "CreateExperimentExists" not in first.entered_states()
    assert "CreateExperimentExists" in second.entered_states()
    assert "CreateTrialExists" not in second.entered_states()
    sagemaker = pipeline.clients["sagemaker"]
    experiment = plan(pipeline, "run-one")["names"]["experiment"]
    trials = {t["TrialName"] for t in sagemaker.list_trials(ExperimentName=experiment)["TrialSummaries"]}
    assert trials == {plan(pipeline, name)["names"]["trial"] for name in ("run-one", "run-two")}


def test_run_with_an_existing_trial_still_runs(pipeline):
    fake_runners(pipeline)
    names = plan(pipeline, "rerun")["names"]
    pipeline.clients["sagemaker"].create_experiment(ExperimentName=names["experiment"])
    pipeline.clients["sagemaker"].create_trial(TrialName=names["trial"], ExperimentName=names["experiment"])
    execution = pipeline.run("rerun")
    assert execution.status == "SUCCEEDED", execution.description
    assert {"CreateExperimentExists", "CreateTrialExists"} <= set(execution.entered_states())
