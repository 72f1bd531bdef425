"""Teach moto's Step Functions interpreter `arn:aws:states:::codebuild:startBuild(.sync)`.

moto 5.2.5 lists CodeBuild as an unsupported optimised integration and ends the whole
execution with a RuntimeError on `.sync` (not even a catchable task failure). `install()` adds
it with AWS' shapes: the task calls StartBuild on moto's CodeBuild backend; `.sync` then polls
BatchGetBuilds until the build leaves IN_PROGRESS and returns `{"Build": <build>}`; a build
ending FAILED/FAULT/STOPPED/TIMED_OUT fails the task with `States.TaskFailed` and that JSON as
Cause.

What a build does is up to the test: `BUILD_RUNNERS[project_name] = fn(build)` runs after
StartBuild with the build description (`environment.environmentVariables` shows what the
build would see); it may push an image to moto's ECR and return, or raise `BuildFailedError`.

Depends on moto internals (canary: tests/support/test_moto_patches.py): the same task-factory
hook as moto_sfn_sagemaker. moto reports every build SUCCEEDED on BatchGetBuilds, so a
runner's failure is applied to the description here.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any, Final

from botocore.exceptions import ClientError
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
)
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

from tests.support.moto_task_services import SyncTaskService, route_service

_FAILED: Final[frozenset[str]] = frozenset({"FAILED", "FAULT", "STOPPED", "TIMED_OUT"})


class BuildFailedError(Exception):
    """Raised by a build runner: the build ends FAILED in phase `phase`."""

    def __init__(self, message: str, phase: str = "BUILD") -> None:
        super().__init__(message)
        self.phase = phase


# project name -> runner(build description). Cleared by `reset()`.
BUILD_RUNNERS: dict[str, Callable[[dict[str, Any]], None]] = {}
# Every StartBuild request a state machine made.
STARTED: list[dict[str, Any]] = []
_FAILURES: dict[str, BuildFailedError] = {}


def reset() -> None:
    BUILD_RUNNERS.clear()
    STARTED.clear()
    _FAILURES.clear()


def _jsonable(value: object) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, datetime.datetime) else str(v))
    )


def _api_case(node: Any) -> Any:
    """Step Functions' PascalCase parameters as the CodeBuild API's camelCase, at every level."""
    if isinstance(node, list):
        return [_api_case(item) for item in node]
    if isinstance(node, dict):
        return {key[0].lower() + key[1:]: _api_case(value) for key, value in node.items()}
    return node


class StateTaskServiceCodeBuild(SyncTaskService):
    def _validate_service_integration_is_supported(self) -> None:
        if self.resource.api_action not in (
            "startBuild",
            "stopBuild",
            "batchGetReports",
            "batchDeleteBuilds",
        ):
            raise ValueError(f"codebuild:{self.resource.api_action} is not an optimised integration")

    def _eval_service_task(
        self, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> None:
        client = boto_client_for(
            service="codebuild", region=resource_runtime_part.region, state_credentials=state_credentials
        )
        # Nested members too: EnvironmentVariablesOverride items are {Name, Type, Value} in the state.
        request = _api_case(normalised_parameters)
        STARTED.append(request)
        build = client.start_build(**request)["build"]
        runner = BUILD_RUNNERS.get(request["projectName"])
        if runner is not None:
            try:
                runner(_jsonable(build))
            except BuildFailedError as failure:
                _FAILURES[build["id"]] = failure
        env.stack.append({"Build": _jsonable(build)})

    def _build_sync_resolver(
        self, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> Callable[[], Any]:
        started = env.stack.pop()
        client = boto_client_for(
            service="codebuild", region=resource_runtime_part.region, state_credentials=state_credentials
        )
        build_id = started["Build"]["id"]

        def resolver() -> Any:
            (build,) = client.batch_get_builds(ids=[build_id])["builds"]
            failure = _FAILURES.get(build_id)
            if failure is not None:
                # moto completes every build it is asked about; record the runner's verdict.
                build["buildStatus"] = "FAILED"
                build["phases"] = [
                    {
                        "phaseType": failure.phase,
                        "phaseStatus": "FAILED",
                        "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": str(failure)}],
                    }
                ]
            status = build["buildStatus"]
            if status == "IN_PROGRESS":
                return None
            result = {"Build": {k[0].upper() + k[1:]: v for k, v in _jsonable(build).items()}}
            if status in _FAILED:
                raise self._task_failed(env, to_json_str(result))
            return result

        return resolver

    def _from_error(self, env: Any, ex: Exception) -> FailureEvent:
        if isinstance(ex, ClientError):
            error = "CodeBuild.AWSCodeBuildException"
            code, message = ex.response["Error"]["Code"], ex.response["Error"]["Message"]
            return self._failure(env, CustomErrorName(error), error, f"{message} (Error Code: {code})")
        return super()._from_error(env, ex)


def install() -> None:
    """Idempotent: route `codebuild` service tasks to the integration above."""
    route_service("codebuild", StateTaskServiceCodeBuild)
