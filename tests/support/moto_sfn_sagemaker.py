"""Teach moto's Step Functions interpreter the SageMaker optimised integration.

moto 5.2.5 rejects `arn:aws:states:::sagemaker:*` tasks ("Unsupported sync callback
procedure") and would turn SageMaker API errors into `States.Runtime`, which AWS never does.
`install()` adds request-response (`createModel`, ...) and `.sync` (create, then poll
Describe* until a terminal status) with AWS' error semantics:

* a job that ends Failed/Stopped fails the task with `States.TaskFailed` and the Describe*
  output as JSON in `Cause` (that is where `FailureReason` lives);
* an API error at create time becomes `SageMaker.AmazonSageMakerException` (throttling,
  validation, internal errors: the SDK v1 base exception AWS reports) or
  `SageMaker.<Code>Exception` for the errors SageMaker models (ResourceLimitExceeded, ...).

Tests decide what a created job does through `RUNNERS[kind] = fn(request)`, where `request`
is the exact Create*Job request the state machine sent (all of it: moto's backend drops
fields it does not model). The function may run real local work and return (job Completed;
a returned mapping of metric name -> value becomes the training job's FinalMetricDataList),
raise `JobFailedError(reason)` (job Failed with that FailureReason), or raise
`SageMakerApiError(code, message)` (the create call itself fails; no job is registered).
`CALLS` records every SageMaker call the state machine made, in order.

Depends on moto internals (pin moto exactly; tests/support/test_moto_patches.py is the
canary): the task factory module attribute `state_task_service_for`, the
`StateTaskServiceCallback` hooks, `FailureEvent*`, and the Fake*Job attribute names
(`<kind>_job_status`, `failure_reason`, `final_metric_data_list`).
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from botocore.exceptions import ClientError
from moto.sagemaker.models import sagemaker_backends
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

from tests.support.moto_task_services import SyncTaskService, route_service

# createXxxJob action -> (job kind, describe call, name parameter, status field)
SYNC_ACTIONS: Final[dict[str, tuple[str, str, str, str]]] = {
    "createProcessingJob": (
        "processing",
        "describe_processing_job",
        "ProcessingJobName",
        "ProcessingJobStatus",
    ),
    "createTrainingJob": ("training", "describe_training_job", "TrainingJobName", "TrainingJobStatus"),
    "createTransformJob": ("transform", "describe_transform_job", "TransformJobName", "TransformJobStatus"),
}
# The optimised SageMaker integrations AWS offers; anything else is rejected when the
# state machine is created, as AWS does.
REQUEST_RESPONSE_ACTIONS: Final[frozenset[str]] = frozenset(
    {
        *SYNC_ACTIONS,
        "createModel",
        "createEndpoint",
        "createEndpointConfig",
        "updateEndpoint",
        "createHyperParameterTuningJob",
        "createLabelingJob",
    }
)
_COMPLETED, _FAILED = frozenset({"Completed"}), frozenset({"Failed", "Stopped"})
# SageMaker's modelled errors keep their own name; the rest surface as the SDK's base exception.
_MODELLED_ERRORS: Final[frozenset[str]] = frozenset(
    {"ResourceLimitExceeded", "ResourceInUse", "ResourceNotFound", "ConflictException"}
)


class JobFailedError(Exception):
    """Raised by a runner: the job ends Failed with `reason` as its FailureReason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SageMakerApiError(Exception):
    """Raised by a runner: the Create* API call fails with this error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_client_error(self, operation: str) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": self.code, "Message": self.message},
                "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "moto-sfn-sagemaker"},
            },
            operation,
        )


Runner = Callable[[dict[str, Any]], Mapping[str, float] | None]
# kind ("processing" | "training" | "transform" | "model") -> runner. Cleared by `reset()`.
RUNNERS: dict[str, Runner] = {}
# (api action, request) for every SageMaker call a state machine made, successful or not.
CALLS: list[tuple[str, dict[str, Any]]] = []
_calls_lock = threading.Lock()


def reset() -> None:
    RUNNERS.clear()
    with _calls_lock:
        CALLS.clear()


def sagemaker_error_name(code: str) -> str:
    if code in _MODELLED_ERRORS:
        return f"SageMaker.{code.removesuffix('Exception')}Exception"
    return "SageMaker.AmazonSageMakerException"


def _epoch_millis(value: object) -> int:
    # AWS hands the Describe* output to the state as JSON, timestamps as epoch milliseconds.
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _job_object(account: str, region: str, kind: str, name: str) -> Any:
    return getattr(sagemaker_backends[account][region], f"{kind}_jobs")[name]


class StateTaskServiceSageMaker(SyncTaskService):
    def _validate_service_integration_is_supported(self) -> None:
        action, condition = self.resource.api_action, self.resource.condition
        if action not in REQUEST_RESPONSE_ACTIONS:
            raise ValueError(f"sagemaker:{action} is not an optimised Step Functions integration")
        if condition not in (None, ResourceCondition.Sync):
            raise ValueError(f"sagemaker:{action} does not support the .{condition} pattern")
        if condition == ResourceCondition.Sync and action not in SYNC_ACTIONS:
            raise ValueError(f"sagemaker:{action} has no .sync form")

    def _client(self, runtime: Any, credentials: Any) -> Any:
        return boto_client_for(service="sagemaker", region=runtime.region, state_credentials=credentials)

    def _eval_service_task(
        self, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> None:
        action = self.resource.api_action
        request = json.loads(json.dumps(normalised_parameters))
        with _calls_lock:
            CALLS.append((action, request))
        kind = SYNC_ACTIONS[action][0] if action in SYNC_ACTIONS else action.removeprefix("create").lower()
        runner = RUNNERS.get(kind)
        metrics: Mapping[str, float] | None = None
        failure: str | None = None
        if runner is not None:
            try:
                metrics = runner(request)
            except SageMakerApiError as err:
                raise err.to_client_error(action[0].upper() + action[1:]) from err
            except JobFailedError as err:
                failure = err.reason
        client = self._client(resource_runtime_part, state_credentials)
        response = getattr(client, self._get_boto_service_action())(**normalised_parameters)
        response.pop("ResponseMetadata", None)
        if action in SYNC_ACTIONS:
            _, _, name_key, _ = SYNC_ACTIONS[action]
            job = _job_object(
                resource_runtime_part.account, resource_runtime_part.region, kind, request[name_key]
            )
            self._record_outcome(job, kind, failure, metrics)
        env.stack.append(response)

    @staticmethod
    def _record_outcome(
        job: Any, kind: str, failure: str | None, metrics: Mapping[str, float] | None
    ) -> None:
        if failure is not None:
            setattr(job, f"{kind}_job_status", "Failed")
            job.failure_reason = failure
            if kind == "training":
                job.secondary_status = "Failed"
        if kind == "training":
            # moto invents MetricDefinitions and metrics; report what the request and run gave.
            now = datetime.datetime.now(datetime.UTC)
            job.final_metric_data_list = [
                {"MetricName": name, "Value": float(value), "Timestamp": now}
                for name, value in (metrics or {}).items()
            ]

    def _build_sync_resolver(
        self, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> Callable[[], Any]:
        env.stack.pop()  # the Create* response: AWS returns the Describe* output instead
        _, describe, name_key, status_key = SYNC_ACTIONS[self.resource.api_action]
        client = self._client(resource_runtime_part, state_credentials)
        name = normalised_parameters[name_key]

        def resolver() -> Any:
            out = getattr(client, describe)(**{name_key: name})
            out.pop("ResponseMetadata", None)
            status = out[status_key]
            if status in _COMPLETED:
                return json.loads(json.dumps(out, default=_epoch_millis))
            if status in _FAILED:
                cause = to_json_str(json.loads(json.dumps(out, default=_epoch_millis)))
                raise self._task_failed(env, cause)
            return None  # InProgress/Stopping: moto sleeps 0.5 s and polls again

        return resolver

    def _from_error(self, env: Any, ex: Exception) -> FailureEvent:
        if isinstance(ex, ClientError):
            code, message = ex.response["Error"]["Code"], ex.response["Error"]["Message"]
            error = sagemaker_error_name(code)
            cause = f"{message} (Service: AmazonSageMaker; Status Code: 400; Error Code: {code})"
            return self._failure(env, CustomErrorName(error), error, cause)
        return super()._from_error(env, ex)


def install() -> None:
    """Idempotent: route `sagemaker` service tasks to the integration above."""
    route_service("sagemaker", StateTaskServiceSageMaker)
