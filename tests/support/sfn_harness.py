"""Helpers to run state machines in moto and look at what happened.

`install_all()` applies every moto patch of tests/support (idempotent). Use moto with
`mock_aws(config=MOTO_CONFIG)` so executions really run the definition.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.local_sagemaker import JobResult, LocalSageMaker, RequestError
from tests.support import moto_lambda_inprocess, moto_sfn_codebuild, moto_sfn_extras, moto_sfn_sagemaker
from tests.support.moto_sfn_sagemaker import JobFailedError, Runner, SageMakerApiError

REGION = "us-east-1"
ACCOUNT = "123456789012"
MOTO_CONFIG: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}}


def install_all(retry_scale: float = 0.0) -> None:
    """Every moto correction the pipeline tests rely on. Retry intervals and Wait states are
    scaled by `retry_scale`."""
    moto_sfn_sagemaker.install()
    moto_sfn_codebuild.install()
    moto_lambda_inprocess.install()
    moto_sfn_extras.install_service_error_names()
    moto_sfn_extras.install_aws_sdk_shapes()
    moto_sfn_extras.install_keyword_path_bindings()
    moto_sfn_extras.install_lineage_conflicts()
    moto_sfn_extras.RetryClock.install(retry_scale)
    moto_sfn_extras.WaitClock.install(retry_scale)


@dataclass
class Execution:
    arn: str
    description: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return str(self.description["status"])

    @property
    def output(self) -> Any:
        return json.loads(self.description["output"]) if self.description.get("output") else None

    def entered_states(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.events if e["type"].endswith("StateEntered")
        ]

    def task_failures(self) -> list[dict[str, Any]]:
        return [e["taskFailedEventDetails"] for e in self.events if e["type"] == "TaskFailed"]


def run_execution(
    sfn: Any, state_machine_arn: str, *, name: str, execution_input: Any = None, timeout_s: float = 120.0
) -> Execution:
    """Start an execution and wait until it leaves RUNNING (moto runs it on a thread)."""
    # moto needs an explicit name, otherwise the execution ARN ends in ":None".
    arn = sfn.start_execution(
        stateMachineArn=state_machine_arn,
        name=name,
        input=json.dumps({} if execution_input is None else execution_input),
    )["executionArn"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        description = sfn.describe_execution(executionArn=arn)
        if description["status"] != "RUNNING":
            events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
            return Execution(arn=arn, description=description, events=events)
        time.sleep(0.05)
    raise AssertionError(f"execution {name} still RUNNING after {timeout_s}s")


class SnsInbox:
    """An SQS queue subscribed (raw delivery) to a topic: what a subscriber would receive."""

    def __init__(
        self, sns: Any, sqs: Any, topic_arn: str, queue_name: str = "pipeline-notifications"
    ) -> None:
        self.sqs = sqs
        self.queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"}
        )

    def messages(self) -> list[dict[str, Any]]:
        """Every SNS envelope received so far (`Subject`, `Message`, ...), oldest first."""
        received: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not batch:
                return received
            for message in batch:
                received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


def final_metrics(request: Mapping[str, Any], log_paths: list[Path]) -> dict[str, float]:
    """What SageMaker reports as FinalMetricDataList: the last match of each metric definition's
    regex over the job's log lines."""
    found: dict[str, float] = {}
    definitions = request.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
    for path in log_paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            for definition in definitions:
                match = re.search(definition["Regex"], line)
                if match:
                    try:
                        found[definition["Name"]] = float(match.group(1))
                    except ValueError:
                        continue
    return found


def local_runners(local: LocalSageMaker, results: list[JobResult] | None = None) -> dict[str, Runner]:
    """Runners that execute each job the state machine creates with `ml.local_sagemaker`."""

    def finish(result: JobResult) -> None:
        if results is not None:
            results.append(result)
        if not result.succeeded:
            raise JobFailedError(result.failure_reason or "job failed without a reason")

    def processing(request: dict[str, Any]) -> None:
        try:
            finish(local.run_processing_job(request))
        except RequestError as error:
            raise SageMakerApiError("ValidationException", str(error)) from error

    def training(request: dict[str, Any]) -> dict[str, float]:
        try:
            result = local.run_training_job(request)
        except RequestError as error:
            raise SageMakerApiError("ValidationException", str(error)) from error
        finish(result)
        return final_metrics(request, result.log_paths)

    def model(request: dict[str, Any]) -> None:
        try:
            local.create_model(request)
        except RequestError as error:
            raise SageMakerApiError("ValidationException", str(error)) from error

    def transform(request: dict[str, Any]) -> None:
        try:
            finish(local.run_transform_job(request))
        except RequestError as error:
            raise SageMakerApiError("ValidationException", str(error)) from error

    return {"processing": processing, "training": training, "model": model, "transform": transform}


def create_inprocess_function(
    iam: Any, lambda_client: Any, *, name: str, handler: str, environment: Mapping[str, str] | None = None
) -> str:
    """Create a moto Lambda whose invocations run `handler` in this process; returns its ARN.

    The code package is a placeholder zip: the in-process patch imports the handler from the
    project instead (the real package is the same `ml` directory).
    """
    import io
    import zipfile

    role_name = f"{name}-role"[:64]
    try:
        role_arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role_arn = iam.create_role(
            RoleName=role_name,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr(
            "README.txt", "code is imported in-process by tests/support/moto_lambda_inprocess.py"
        )
    return str(
        lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role_arn,
            Handler=handler,
            Code={"ZipFile": package.getvalue()},
            Environment={"Variables": dict(environment or {})},
        )["FunctionArn"]
    )
