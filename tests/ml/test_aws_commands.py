"""`python -m ml upload-data | start | status` against moto, through the real CLI parser.

S3, KMS and Step Functions are moto's. The stack outputs come from a real boto3 CloudFormation
client whose DescribeStacks answers are stubbed with botocore's Stubber (checked against the
API model): moto's CloudFormation needs its `cloudformation` extra (openapi-spec-validator,
docker, ...), which this project does not install.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from ml import aws_commands
from ml.cli import build_parser
from ml.data import synthetic_dataset
from tests.support import moto_sfn_sagemaker
from tests.support.moto_sfn_sagemaker import JobFailedError
from tests.support.sfn_harness import MOTO_CONFIG, REGION, install_all, run_execution

STACK = "TestPipelineStack"
ROLE = "arn:aws:iam::123456789012:role/sfn"


class Aws(aws_commands.Clients):
    """The command's clients, plus the outputs the deployed stack would report (None: no stack)."""

    outputs: dict[str, str] | None = None
    stubber: Stubber


@pytest.fixture
def aws():
    install_all()
    moto_sfn_sagemaker.reset()
    with mock_aws(config=MOTO_CONFIG):
        clients = Aws(
            cloudformation=boto3.client("cloudformation", region_name=REGION),
            s3=boto3.client("s3", region_name=REGION),
            sfn=boto3.client("stepfunctions", region_name=REGION),
        )
        clients.stubber = Stubber(clients.cloudformation)
        with clients.stubber:
            yield clients
    moto_sfn_sagemaker.reset()


def deploy(clients: Aws, definition: dict) -> dict[str, str]:
    """A data bucket with SSE-KMS by default, a state machine, and a stack whose outputs name them."""
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    clients.s3.create_bucket(Bucket="pipeline-data")
    clients.s3.put_bucket_encryption(
        Bucket="pipeline-data",
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}}
            ]
        },
    )
    machine = clients.sfn.create_state_machine(
        name="pipeline", definition=json.dumps(definition), roleArn=ROLE
    )
    outputs = {"DataBucketName": "pipeline-data", "StateMachineArn": machine["stateMachineArn"]}
    clients.outputs = outputs
    return {**outputs, "key": key_id}


def cli(clients: Aws, *argv: str) -> int:
    """Run one command; CloudFormation answers its DescribeStacks as for the deployed stack."""
    if clients.outputs is None:
        clients.stubber.add_client_error(
            "describe_stacks",
            service_error_code="ValidationError",
            service_message=f"Stack with id {STACK} does not exist",
            expected_params={"StackName": STACK},
        )
    else:
        stack = {
            "StackName": STACK,
            "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
            "StackStatus": "CREATE_COMPLETE",
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in clients.outputs.items()],
        }
        clients.stubber.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": STACK})
    args = build_parser().parse_args([*argv, "--stack", STACK])
    args.client_factory = lambda _args: clients
    return int(args.func(args))


SUCCEEDING = {
    "StartAt": "Done",
    "States": {
        "Done": {
            "Type": "Pass",
            "Result": {"evaluation": {"metrics": {"auc": 0.81, "accuracy": 0.8}}},
            "End": True,
        }
    },
}


# --------------------------------------------------------------------------- --set parsing


def test_assignments_are_json_when_they_parse_and_strings_otherwise():
    parsed = aws_commands.parse_assignments(
        [
            "split_ratio=0.3",
            "spot_training=true",
            "data_uri=s3://bucket/data/",
            'drop_columns=["ID"]',
            "hyperparameters.max_depth=6",
            "hyperparameters.objective=binary:logistic",
        ]
    )
    assert parsed == {
        "split_ratio": 0.3,
        "spot_training": True,
        "data_uri": "s3://bucket/data/",
        "drop_columns": ["ID"],
        "hyperparameters": {"max_depth": 6, "objective": "binary:logistic"},
    }


def test_assignment_without_equals_is_refused():
    with pytest.raises(aws_commands.AwsCommandError, match="expected NAME=VALUE"):
        aws_commands.parse_assignments(["split_ratio"])


# --------------------------------------------------------------------------- upload-data


def test_upload_checks_the_file_and_uploads_it_with_the_buckets_kms_key(aws, tmp_path, capsys):
    deployed = deploy(aws, SUCCEEDING)
    data = tmp_path / "credit.csv"
    synthetic_dataset(n_rows=120).to_csv(data, index=False)
    assert cli(aws, "upload-data", str(data)) == 0
    head = aws.s3.head_object(Bucket="pipeline-data", Key="datasets/default/credit.csv")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == deployed["key"]
    assert "120 rows" in capsys.readouterr().out


def test_upload_refuses_a_file_that_is_not_the_data_set(aws, tmp_path, capsys):
    deploy(aws, SUCCEEDING)
    data = tmp_path / "notes.csv"
    data.write_text("just,some\ntext,here\n")
    assert cli(aws, "upload-data", str(data)) == 2
    assert "is not a usable data set" in capsys.readouterr().err
    assert "Contents" not in aws.s3.list_objects_v2(Bucket="pipeline-data")


def test_upload_takes_another_data_set_by_configuration(aws, tmp_path, capsys):
    deploy(aws, SUCCEEDING)
    data = tmp_path / "churn.csv"
    data.write_text(
        "customer,tenure,spend,churned\n" + "".join(f"{i},{i % 7},{i * 3},{i % 2}\n" for i in range(40))
    )
    assert cli(aws, "upload-data", str(data)) == 2  # the UCI schema is expected by default
    assert "is not a usable data set" in capsys.readouterr().err
    assert (
        cli(
            aws,
            "upload-data",
            str(data),
            "--set",
            "label_column=churned",
            "--set",
            'drop_columns=["customer"]',
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "40 rows" in out
    assert 'python -m ml start --set label_column="churned"' in out
    aws.s3.head_object(Bucket="pipeline-data", Key="datasets/default/churn.csv")


def test_upload_refuses_to_mix_data_sets_unless_told_to_replace(aws, tmp_path, capsys):
    deploy(aws, SUCCEEDING)
    first, second = tmp_path / "credit-2025.csv", tmp_path / "credit-2026.csv"
    synthetic_dataset(n_rows=60).to_csv(first, index=False)
    synthetic_dataset(n_rows=80, seed=1).to_csv(second, index=False)
    assert cli(aws, "upload-data", str(first)) == 0
    assert cli(aws, "upload-data", str(first)) == 0  # the same file again replaces itself
    capsys.readouterr()

    assert cli(aws, "upload-data", str(second)) == 2
    error = capsys.readouterr().err
    assert "already holds datasets/default/credit-2025.csv" in error and "--replace" in error
    listed = aws.s3.list_objects_v2(Bucket="pipeline-data", Prefix="datasets/default/")["Contents"]
    assert [item["Key"] for item in listed] == ["datasets/default/credit-2025.csv"]

    assert cli(aws, "upload-data", str(second), "--replace") == 0
    assert "removed the other data set files: datasets/default/credit-2025.csv" in capsys.readouterr().out
    listed = aws.s3.list_objects_v2(Bucket="pipeline-data", Prefix="datasets/default/")["Contents"]
    assert [item["Key"] for item in listed] == ["datasets/default/credit-2026.csv"]


def test_upload_refuses_run_settings_that_do_not_affect_loading(aws, tmp_path, capsys):
    deploy(aws, SUCCEEDING)
    data = tmp_path / "credit.csv"
    synthetic_dataset(n_rows=50).to_csv(data, index=False)
    assert cli(aws, "upload-data", str(data), "--set", "split_ratio=0.3") == 2
    assert "pass those to `python -m ml start --set` instead" in capsys.readouterr().err


def test_missing_stack_names_the_fix(aws, tmp_path, capsys):
    data = tmp_path / "credit.csv"
    synthetic_dataset(n_rows=50).to_csv(data, index=False)
    assert cli(aws, "upload-data", str(data)) == 2
    error = capsys.readouterr().err
    assert f"stack {STACK!r} not found" in error and "--stack NAME" in error


# --------------------------------------------------------------------------- start


def test_start_sends_the_set_overrides_as_input(aws, capsys):
    deployed = deploy(aws, SUCCEEDING)
    code = cli(
        aws, "start", "--set", "split_ratio=0.3", "--set", "hyperparameters.max_depth=4", "--name", "run-1"
    )
    assert code == 0
    (execution,) = aws.sfn.list_executions(stateMachineArn=deployed["StateMachineArn"])["executions"]
    assert execution["name"] == "run-1"
    described = aws.sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"]) == {"split_ratio": 0.3, "hyperparameters": {"max_depth": 4}}
    assert "python -m ml status run-1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "split_ratoi=0.3"], "unknown key 'split_ratoi' (did you mean 'split_ratio'?)"),
        (["--set", "training_instance_count=two"], "'training_instance_count' must be an integer"),
        (["--set", "hyperparameters.max_depth=-1"], "max_depth"),
        (["--name", "has spaces"], "execution name 'has spaces' is not valid"),
    ],
)
def test_start_validates_locally_before_anything_starts(aws, capsys, argv, message):
    deployed = deploy(aws, SUCCEEDING)
    assert cli(aws, "start", *argv) == 2
    assert message in capsys.readouterr().err
    assert aws.sfn.list_executions(stateMachineArn=deployed["StateMachineArn"])["executions"] == []


def test_start_checks_the_input_against_the_deploy_time_defaults(aws, capsys):
    # Deployed with -c max_runtime_seconds=200000: a spot run must then wait at least that long,
    # which the field default of max_wait_seconds does not; Prepare would refuse it, so start does.
    deployed = deploy(aws, SUCCEEDING)
    aws.outputs = {**(aws.outputs or {}), "RunDefaults": json.dumps({"max_runtime_seconds": 200000})}
    assert cli(aws, "start", "--set", "spot_training=true") == 2
    assert "must be at least 'max_runtime_seconds' (200000)" in capsys.readouterr().err
    assert aws.sfn.list_executions(stateMachineArn=deployed["StateMachineArn"])["executions"] == []
    assert cli(aws, "start", "--set", "spot_training=true", "--set", "max_wait_seconds=259200") == 0


def test_start_names_a_broken_run_defaults_output(aws, capsys):
    deploy(aws, SUCCEEDING)
    aws.outputs = {**(aws.outputs or {}), "RunDefaults": "not json"}
    assert cli(aws, "start") == 2
    assert f"stack {STACK!r} output RunDefaults is not JSON" in capsys.readouterr().err


def test_start_refuses_a_name_already_used(aws, capsys):
    # Another input under the same name: Step Functions refuses it whether or not the first
    # execution is still running (the same name and input while running would be idempotent).
    deploy(aws, SUCCEEDING)
    assert cli(aws, "start", "--name", "same") == 0
    assert cli(aws, "start", "--name", "same", "--set", "split_ratio=0.3") == 2
    assert "already exists" in capsys.readouterr().err


def test_default_execution_name_is_sortable_utc_time():
    assert (
        aws_commands.default_execution_name(datetime(2026, 3, 1, 8, 5, 9, tzinfo=UTC))
        == "run-20260301-080509"
    )


# --------------------------------------------------------------------------- status


FAILING = {
    "StartAt": "Preprocessing",
    "States": {
        "Preprocessing": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sagemaker:createProcessingJob.sync",
            "Parameters": {
                "ProcessingJobName.$": "$$.Execution.Name",
                "RoleArn": "arn:aws:iam::123456789012:role/sagemaker",
                "AppSpecification": {"ImageUri": "image"},
                "ProcessingResources": {
                    "ClusterConfig": {
                        "InstanceCount": 1,
                        "InstanceType": "ml.m5.xlarge",
                        "VolumeSizeInGB": 30,
                    }
                },
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "PipelineFailed"}],
            "End": True,
        },
        "PipelineFailed": {"Type": "Fail", "Error": "PreprocessingFailed", "Cause": "see the SNS message"},
    },
}


def test_status_shows_the_failed_step_with_job_name_and_reason(aws, capsys):
    deployed = deploy(aws, FAILING)

    def fail(request):
        raise JobFailedError("AlgorithmError: label column 'churned' was not found")

    moto_sfn_sagemaker.RUNNERS["processing"] = fail
    run_execution(aws.sfn, deployed["StateMachineArn"], name="prep-fails")
    assert cli(aws, "status") == 1
    out = capsys.readouterr().out
    assert "execution prep-fails: FAILED" in out
    (line,) = [line for line in out.splitlines() if line.strip().startswith("Preprocessing")]
    assert "caught" in line and "job prep-fails" in line
    assert "States.TaskFailed: AlgorithmError: label column 'churned' was not found" in out
    assert "error: PreprocessingFailed" in out


def test_status_of_a_named_run_shows_its_metrics(aws, capsys):
    deployed = deploy(aws, SUCCEEDING)
    run_execution(aws.sfn, deployed["StateMachineArn"], name="good")
    run_execution(aws.sfn, deployed["StateMachineArn"], name="later")
    assert cli(aws, "status", "good") == 0
    out = capsys.readouterr().out
    assert "execution good: SUCCEEDED" in out
    assert "auc" in out and "0.8100" in out


def test_status_without_runs_says_how_to_start_one(aws, capsys):
    deploy(aws, SUCCEEDING)
    assert cli(aws, "status") == 2
    assert "python -m ml start" in capsys.readouterr().err


def test_failure_reason_reads_sagemaker_and_lambda_causes():
    assert aws_commands.failure_reason(json.dumps({"FailureReason": "OOM", "x": 1})) == "OOM"
    assert aws_commands.failure_reason(
        json.dumps({"errorMessage": "bad input", "errorType": "InputError"})
    ) == ("bad input")
    assert aws_commands.failure_reason("Rate exceeded (Service: AmazonSageMaker)") == (
        "Rate exceeded (Service: AmazonSageMaker)"
    )
