"""Smaller corrections that bring moto 5.2.5's Step Functions closer to AWS.

* `install_service_error_names()`: AWS names aws-sdk integration errors
  `<ServiceName>.<ErrorName>` in PascalCase (`Ecr.ImageNotFoundException`,
  `S3.NoSuchKeyException`); moto knows the spelling only for DynamoDB and SFN and would
  report `ecr.ImageNotFoundException`, so a Catch written for AWS would not match.
* `install_aws_sdk_shapes()`: AWS takes aws-sdk task parameters in PascalCase
  (`RepositoryName` for ECR's `repositoryName`) and returns PascalCase fields; moto 5.2.5 passes
  them to botocore unchanged, so camelCase APIs such as ECR fail. The patch maps both ways with
  the botocore operation shapes (moto's own helpers `_to_boto_request` / `_from_boto_response`,
  which its trimmed aws-sdk service never calls).
* `install_keyword_path_bindings()`: moto's ASL lexer reads `"RoleArn.$"` as the keyword of
  a Task's `Credentials` block, so inside `Parameters` the binding `"RoleArn.$": "$.path"` is
  taken literally (key `RoleArn.$`, value the path text) instead of as a path; AWS evaluates
  it like any other `.$` key. The patch turns such bindings back into path bindings.
* `install_lineage_conflicts()`: SageMaker's CreateExperiment/CreateTrial refuse an existing
  name with a ValidationException ("... already exists"); moto silently overwrites, which
  would hide whether the state machine's lineage step is idempotent.
* `RetryClock`: moto really sleeps for every Retry interval. `RetryClock.install(scale)`
  records each requested interval and sleeps `interval * scale`, so tests can assert the
  backoff without waiting for it.
* `WaitClock`: the same for Wait states (moto waits for real). `WaitClock.install(scale)` records
  the seconds each Wait state resolved (Seconds, SecondsPath, ...) and waits `seconds * scale`.

Depends on moto internals (canary: tests/support/test_moto_patches.py):
`state_task_service_aws_sdk._SERVICE_ERROR_NAMES` and `StateTaskServiceAwsSdk`'s
`_normalise_parameters/_normalise_response` hooks, `retrier_decl.time`,
`WaitFunction._eval_body/_get_wait_seconds/_wait_interval`, `Preprocessor.visitPayload_binding_value`, the payload binding and string expression classes,
`SageMakerModelBackend.create_experiment/create_trial` and their `experiments`/`trials` dicts.
"""

from __future__ import annotations

import datetime
import functools
import threading
import time
from typing import Any, ClassVar

import botocore.session
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend
from moto.stepfunctions.parser.asl.component.common.payload.payloadvalue.payloadbinding.payload_binding import (
    PayloadBindingStringExpressionSimple,
)
from moto.stepfunctions.parser.asl.component.common.payload.payloadvalue.payloadvaluelit.payload_value_str import (
    PayloadValueStr,
)
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.common.string.string_expression import (
    StringContextPath,
    StringJsonPath,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_aws_sdk,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

# Lower-case SDK service name -> the PascalCase prefix AWS puts in aws-sdk error names.
AWS_SDK_ERROR_PREFIXES = {
    "ecr": "Ecr",
    "s3": "S3",
    "sagemaker": "SageMaker",
    "codebuild": "CodeBuild",
    "sns": "Sns",
    "lambda": "Lambda",
}


def install_service_error_names() -> None:
    state_task_service_aws_sdk._SERVICE_ERROR_NAMES.update(AWS_SDK_ERROR_PREFIXES)


@functools.cache
def _operation_model(service: str, api_action: str) -> Any:
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(api_action[0].upper() + api_action[1:])


def _normalise_parameters(
    self: Any, parameters: dict, boto_service_name: Any = None, service_action_name: Any = None
) -> None:
    operation = _operation_model(self._get_boto_service_name(), self.resource.api_action)
    self._to_boto_request(parameters, operation.input_shape)


def _normalise_response(
    self: Any, response: Any, boto_service_name: Any = None, service_action_name: Any = None
) -> None:
    operation = _operation_model(self._get_boto_service_name(), self.resource.api_action)
    if operation.output_shape is not None:
        self._from_boto_response(response, operation.output_shape)
    _stringify_timestamps(response)


def _stringify_timestamps(node: Any) -> None:
    # moto's JSON encoder cannot serialise datetimes. The project's state machine never reads an
    # aws-sdk timestamp, so ISO-8601 text is as good as AWS' own encoding here.
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, datetime.datetime):
            node[key] = value.isoformat()
        else:
            _stringify_timestamps(value)


def install_aws_sdk_shapes() -> None:
    service = state_task_service_aws_sdk.StateTaskServiceAwsSdk
    service._normalise_parameters = _normalise_parameters  # type: ignore[method-assign]
    service._normalise_response = _normalise_response  # type: ignore[method-assign]


_original_visit_binding_value = Preprocessor.visitPayload_binding_value


def _visit_binding_value(self: Preprocessor, ctx: Any) -> Any:
    binding = _original_visit_binding_value(self, ctx)
    field, value = binding.field, binding.payload_value
    if not (field.endswith(".$") and isinstance(value, PayloadValueStr)):
        return binding
    path = value.val
    if path.startswith("$$"):
        expression: Any = StringContextPath(context_object_path=path)
    elif path.startswith("$"):
        expression = StringJsonPath(json_path=path)
    else:
        raise NotImplementedError(
            f"keyword binding {field!r}: {path!r} is neither a path nor a context path; extend "
            "tests/support/moto_sfn_extras.py"
        )
    return PayloadBindingStringExpressionSimple(field=field[:-2], string_expression_simple=expression)


def install_keyword_path_bindings() -> None:
    Preprocessor.visitPayload_binding_value = _visit_binding_value  # type: ignore[method-assign]


_original_create_experiment = SageMakerModelBackend.create_experiment
_original_create_trial = SageMakerModelBackend.create_trial


def _create_experiment(self: SageMakerModelBackend, experiment_name: str) -> dict[str, str]:
    if experiment_name in self.experiments:
        raise ValidationError(message=f"Experiment '{experiment_name}' already exists.")
    return _original_create_experiment(self, experiment_name)


def _create_trial(self: SageMakerModelBackend, trial_name: str, experiment_name: str) -> dict[str, str]:
    if trial_name in self.trials:
        raise ValidationError(message=f"Trial '{trial_name}' already exists.")
    if experiment_name not in self.experiments:
        raise ValidationError(message=f"Experiment '{experiment_name}' does not exist.")
    return _original_create_trial(self, trial_name, experiment_name)


def install_lineage_conflicts() -> None:
    SageMakerModelBackend.create_experiment = _create_experiment  # type: ignore[method-assign]
    SageMakerModelBackend.create_trial = _create_trial  # type: ignore[method-assign]


class _ScaledTime:
    """Stands in for the `time` module inside moto's retrier."""

    def __init__(self, clock: type[RetryClock]) -> None:
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        with self._clock.lock:
            self._clock.intervals.append(seconds)
        time.sleep(seconds * self._clock.scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class RetryClock:
    intervals: ClassVar[list[float]] = []
    scale: ClassVar[float] = 1.0
    lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def install(cls, scale: float = 0.0) -> None:
        cls.scale = scale
        retrier_decl.time = _ScaledTime(cls)  # type: ignore[assignment]

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.intervals.clear()


class WaitClock:
    """Seconds each Wait state asked for, in order; the wait itself is scaled by `scale`."""

    seconds: ClassVar[list[int]] = []
    scale: ClassVar[float] = 1.0
    lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def install(cls, scale: float = 0.0) -> None:
        cls.scale = scale
        WaitFunction._eval_body = _scaled_wait_body  # type: ignore[method-assign]

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.seconds.clear()


def _scaled_wait_body(self: WaitFunction, env: Any) -> None:
    seconds = self._get_wait_seconds(env=env)
    with WaitClock.lock:
        WaitClock.seconds.append(seconds)
    self._wait_interval(env=env, wait_seconds=int(seconds * WaitClock.scale))
