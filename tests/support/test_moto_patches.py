"""Canary tests of tests/support: each moto correction behaves as AWS does.

They depend on moto internals; when a moto upgrade breaks one, this file says which.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws

from tests.support import moto_lambda_inprocess, moto_sfn_codebuild, moto_sfn_sagemaker
from tests.support.moto_sfn_codebuild import BuildFailedError
from tests.support.moto_sfn_extras import RetryClock, WaitClock
from tests.support.moto_sfn_sagemaker import JobFailedError, SageMakerApiError
from tests.support.sfn_harness import (
    MOTO_CONFIG,
    REGION,
    create_inprocess_function,
    install_all,
    run_execution,
)

ROLE = "arn:aws:iam::123456789012:role/sfn"
SM_ROLE = "arn:aws:iam::123456789012:role/sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag"


@pytest.fixture
def aws():
    install_all(retry_scale=0.0)
    moto_sfn_sagemaker.reset()
    RetryClock.reset()
    WaitClock.reset()
    with mock_aws(config=MOTO_CONFIG):
        yield {
            name: boto3.client(name, region_name=REGION)
            for name in ("stepfunctions", "sagemaker", "s3", "ecr")
        }
    moto_sfn_sagemaker.reset()


def machine(aws, states: dict, start: str) -> str:
    definition = {"StartAt": start, "States": states}
    return aws["stepfunctions"].create_state_machine(
        name=f"m{abs(hash(json.dumps(definition, sort_keys=True))) % 10**8}",
        definition=json.dumps(definition),
        roleArn=ROLE,
    )["stateMachineArn"]


def processing_task(**extra) -> dict:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::sagemaker:createProcessingJob.sync",
        "Parameters": {
            "ProcessingJobName.$": "$.name",
            "RoleArn": SM_ROLE,
            "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["ml-preprocess"]},
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
            },
        },
        **extra,
    }


def test_sync_processing_job_runs_the_runner_with_the_full_request(aws):
    seen = []
    moto_sfn_sagemaker.RUNNERS["processing"] = seen.append
    arn = machine(aws, {"P": processing_task(End=True)}, "P")
    execution = run_execution(aws["stepfunctions"], arn, name="ok", execution_input={"name": "job-ok"})
    assert execution.status == "SUCCEEDED", execution.description
    # The output is the Describe* output, as with AWS' .sync integration.
    assert execution.output["ProcessingJobStatus"] == "Completed"
    assert execution.output["ProcessingJobName"] == "job-ok"
    # The runner sees what the state machine sent, including what moto's backend drops.
    assert seen[0]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert [action for action, _ in moto_sfn_sagemaker.CALLS] == ["createProcessingJob"]


def test_failed_job_fails_the_task_with_describe_output_as_cause(aws):
    def fail(request):
        raise JobFailedError("AlgorithmError: no rows left after dropping ID")

    moto_sfn_sagemaker.RUNNERS["processing"] = fail
    arn = machine(aws, {"P": processing_task(End=True)}, "P")
    execution = run_execution(aws["stepfunctions"], arn, name="bad", execution_input={"name": "job-bad"})
    assert execution.status == "FAILED"
    (failure,) = execution.task_failures()
    assert failure["error"] == "States.TaskFailed"
    cause = json.loads(failure["cause"])
    assert cause["FailureReason"] == "AlgorithmError: no rows left after dropping ID"
    assert cause["ProcessingJobStatus"] == "Failed"
    assert (
        aws["sagemaker"].describe_processing_job(ProcessingJobName="job-bad")["ProcessingJobStatus"]
        == "Failed"
    )


def test_api_throttling_is_named_like_aws_and_retried_with_backoff(aws):
    attempts = []

    def throttle_twice(request):
        attempts.append(request["ProcessingJobName"])
        if len(attempts) <= 2:
            raise SageMakerApiError("ThrottlingException", "Rate exceeded")

    moto_sfn_sagemaker.RUNNERS["processing"] = throttle_twice
    retry = [
        {
            "ErrorEquals": ["SageMaker.AmazonSageMakerException"],
            "IntervalSeconds": 3,
            "BackoffRate": 2.0,
            "MaxAttempts": 3,
        }
    ]
    arn = machine(aws, {"P": processing_task(Retry=retry, End=True)}, "P")
    execution = run_execution(aws["stepfunctions"], arn, name="thr", execution_input={"name": "job-thr"})
    assert execution.status == "SUCCEEDED", execution.description
    assert attempts == ["job-thr"] * 3
    errors = {f["error"] for f in execution.task_failures()}
    assert errors == {"SageMaker.AmazonSageMakerException"}
    assert "Error Code: ThrottlingException" in execution.task_failures()[0]["cause"]
    assert RetryClock.intervals == [3, 6]


def test_wait_states_are_recorded_and_not_waited_for(aws):
    states = {
        "Pick": {
            "Type": "Pass",
            "Parameters": {"seconds.$": "States.ArrayGetItem(States.Array(60, 300), States.MathAdd($.i, 1))"},
            "Next": "FromPath",
        },
        "FromPath": {"Type": "Wait", "SecondsPath": "$.seconds", "Next": "Fixed"},
        "Fixed": {"Type": "Wait", "Seconds": 3600, "End": True},
    }
    arn = machine(aws, states, "Pick")
    started = time.monotonic()
    execution = run_execution(aws["stepfunctions"], arn, name="waits", execution_input={"i": 0})
    assert execution.status == "SUCCEEDED", execution.description
    assert WaitClock.seconds == [300, 3600]
    assert time.monotonic() - started < 30


def test_modelled_sagemaker_errors_keep_their_name():
    assert moto_sfn_sagemaker.sagemaker_error_name("ResourceLimitExceeded") == (
        "SageMaker.ResourceLimitExceededException"
    )
    assert (
        moto_sfn_sagemaker.sagemaker_error_name("ValidationException") == "SageMaker.AmazonSageMakerException"
    )


def test_create_model_is_request_response(aws):
    states = {
        "M": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sagemaker:createModel",
            "Parameters": {
                "ModelName": "m1",
                "ExecutionRoleArn": SM_ROLE,
                "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://b/model.tar.gz"},
            },
            "End": True,
        }
    }
    execution = run_execution(aws["stepfunctions"], machine(aws, states, "M"), name="model")
    assert execution.status == "SUCCEEDED", execution.description
    assert execution.output["ModelArn"].endswith(":model/m1")


def test_sagemaker_actions_without_sync_form_are_rejected(aws):
    states = {"M": {"Type": "Task", "Resource": "arn:aws:states:::sagemaker:createModel.sync", "End": True}}
    with pytest.raises(aws["stepfunctions"].exceptions.ClientError, match=r"no \.sync form"):
        machine(aws, states, "M")


def test_inprocess_lambda_returns_payload_and_fails_like_aws():
    install_all()
    with mock_aws(config=MOTO_CONFIG):
        sfn = boto3.client("stepfunctions", region_name=REGION)
        function_arn = create_inprocess_function(
            boto3.client("iam", region_name=REGION),
            boto3.client("lambda", region_name=REGION),
            name="canary",
            handler="tests.support.lambda_handlers.echo",
            environment={"CANARY_SETTING": "from-env"},
        )
        states = {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
                "ResultSelector": {"result.$": "$.Payload"},
                "Catch": [{"ErrorEquals": ["BadRequestError"], "ResultPath": "$.error", "Next": "Explain"}],
                "End": True,
            },
            "Explain": {
                "Type": "Pass",
                "Parameters": {"error.$": "$.error.Error", "payload.$": "States.StringToJson($.error.Cause)"},
                "Next": "Failed",
            },
            "Failed": {"Type": "Fail", "ErrorPath": "$.error", "CausePath": "$.payload.errorMessage"},
        }
        arn = sfn.create_state_machine(
            name="lambda-canary", definition=json.dumps({"StartAt": "Call", "States": states}), roleArn=ROLE
        )["stateMachineArn"]

        ok = run_execution(sfn, arn, name="ok", execution_input={"x": 1})
        assert ok.status == "SUCCEEDED", ok.description
        assert ok.output == {"result": {"echo": {"x": 1}, "setting": "from-env", "function": "canary"}}

        bad = run_execution(sfn, arn, name="bad", execution_input={"fail": "no"})
        assert bad.status == "FAILED"
        assert (bad.description["error"], bad.description["cause"]) == ("BadRequestError", "refused: no")
        (failure,) = bad.task_failures()
        assert json.loads(failure["cause"])["errorType"] == "BadRequestError"
        assert moto_lambda_inprocess.INVOCATIONS[-1][0] == "canary"


def test_aws_sdk_errors_use_aws_service_names(aws):
    aws["ecr"].create_repository(repositoryName="repo")
    states = {
        "Describe": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:ecr:describeImages",
            "Parameters": {"RepositoryName": "repo", "ImageIds": [{"ImageTag": "missing"}]},
            "Catch": [
                {"ErrorEquals": ["Ecr.ImageNotFoundException"], "ResultPath": "$.error", "Next": "Missing"}
            ],
            "End": True,
        },
        "Missing": {"Type": "Succeed"},
    }
    arn = machine(aws, states, "Describe")
    execution = run_execution(aws["stepfunctions"], arn, name="ecr")
    assert execution.status == "SUCCEEDED", execution.description
    assert execution.output["error"]["Error"] == "Ecr.ImageNotFoundException"

    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    aws["ecr"].put_image(repositoryName="repo", imageManifest=json.dumps(manifest), imageTag="missing")
    found = run_execution(aws["stepfunctions"], arn, name="ecr-found")
    assert found.status == "SUCCEEDED", found.description
    # PascalCase in and out, as AWS' aws-sdk integration does for camelCase APIs.
    assert found.output["ImageDetails"][0]["ImageTags"] == ["missing"]


def test_lineage_names_conflict_like_sagemaker(aws):
    aws["sagemaker"].create_experiment(ExperimentName="exp")
    with pytest.raises(aws["sagemaker"].exceptions.ClientError, match="already exists"):
        aws["sagemaker"].create_experiment(ExperimentName="exp")
    aws["sagemaker"].create_trial(TrialName="t", ExperimentName="exp")
    with pytest.raises(aws["sagemaker"].exceptions.ClientError, match="already exists"):
        aws["sagemaker"].create_trial(TrialName="t", ExperimentName="exp")


def test_lineage_conflict_through_aws_sdk_task(aws):
    aws["sagemaker"].create_experiment(ExperimentName="exp")
    states = {
        "Create": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:createExperiment",
            "Parameters": {"ExperimentName": "exp"},
            "End": True,
        }
    }
    execution = run_execution(aws["stepfunctions"], machine(aws, states, "Create"), name="exp")
    assert execution.status == "FAILED"
    (failure,) = execution.task_failures()
    assert failure["error"].startswith("SageMaker.")
    assert "already exists" in failure["cause"]


def test_s3_get_object_body_is_a_string_for_string_to_json(aws):
    aws["s3"].create_bucket(Bucket="artefacts")
    aws["s3"].put_object(Bucket="artefacts", Key="e.json", Body=json.dumps({"auc": 0.81}).encode())
    states = {
        "Read": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
            "Parameters": {"Bucket": "artefacts", "Key": "e.json"},
            "ResultSelector": {"metrics.$": "States.StringToJson($.Body)"},
            "End": True,
        }
    }
    execution = run_execution(aws["stepfunctions"], machine(aws, states, "Read"), name="s3")
    assert execution.status == "SUCCEEDED", execution.description
    assert execution.output == {"metrics": {"auc": 0.81}}


def test_keyword_keys_with_paths_are_evaluated_like_aws(aws):
    states = {
        "P": {
            "Type": "Pass",
            "Parameters": {"RoleArn.$": "$.role", "Other.$": "$$.Execution.Name"},
            "End": True,
        }
    }
    execution = run_execution(
        aws["stepfunctions"], machine(aws, states, "P"), name="kw", execution_input={"role": "arn:role"}
    )
    assert execution.status == "SUCCEEDED", execution.description
    assert execution.output == {"RoleArn": "arn:role", "Other": "kw"}


@pytest.mark.parametrize("fails", [False, True])
def test_codebuild_start_build_sync(aws, fails):
    codebuild = boto3.client("codebuild", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="cb", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    codebuild.create_project(
        name="image-build",
        source={"type": "S3", "location": "bucket/context.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_SMALL",
        },
        serviceRole=role,
    )
    built = []

    def build(description):
        built.append(description["projectName"])
        if fails:
            raise BuildFailedError("docker build failed")

    moto_sfn_codebuild.reset()
    moto_sfn_codebuild.BUILD_RUNNERS["image-build"] = build
    states = {
        "Build": {
            "Type": "Task",
            "Resource": "arn:aws:states:::codebuild:startBuild.sync",
            "Parameters": {"ProjectName": "image-build"},
            "ResultSelector": {"status.$": "$.Build.BuildStatus"},
            "End": True,
        }
    }
    execution = run_execution(aws["stepfunctions"], machine(aws, states, "Build"), name=f"build-{fails}")
    assert built == ["image-build"]
    if fails:
        assert execution.status == "FAILED"
        (failure,) = execution.task_failures()
        assert failure["error"] == "States.TaskFailed"
        assert json.loads(failure["cause"])["Build"]["BuildStatus"] == "FAILED"
    else:
        assert execution.status == "SUCCEEDED", execution.description
        assert execution.output == {"status": "SUCCEEDED"}
