"""Route Step Functions task services of moto's interpreter to the project's integrations.

DEPENDS ON MOTO INTERNALS (pinned moto, canary in test_moto_patches.py): the interpreter builds
the service of a `arn:aws:states:::<service>:...` task through the module attribute
`state_task_factory.state_task_service_for`, which is rebound here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (
    StateTaskServiceCallback,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

_ROUTES: dict[str, Callable[[], Any]] = {}


def route_service(service_name: str, make_service: Callable[[], Any]) -> None:
    """Tasks of `service_name` get `make_service()`; every other service keeps moto's own.
    Idempotent: routing the same service again replaces its entry."""
    if not _ROUTES:
        moto_factory = state_task_factory.state_task_service_for

        # moto calls it with the keyword `service_name`.
        def factory(service_name: str) -> Any:
            make = _ROUTES.get(service_name)
            return make() if make is not None else moto_factory(service_name)

        state_task_factory.state_task_service_for = factory  # type: ignore[assignment]
    _ROUTES[service_name] = make_service


class SyncTaskService(StateTaskServiceCallback):
    """Base of the project's `.sync` integrations: the patterns moto needs and AWS' failure events."""

    def __init__(self) -> None:
        # WaitForTaskToken has to be listed although these services do not offer it: moto's
        # `_eval_integration_pattern` calls `callback_endpoint.interrupt_all()` unconditionally
        # and crashes on None otherwise. Subclasses keep the AWS rules in
        # `_validate_service_integration_is_supported`.
        super().__init__(
            supported_integration_patterns={ResourceCondition.Sync, ResourceCondition.WaitForTaskToken}
        )

    def _failure(self, env: Any, error_name: Any, error: str, cause: str) -> FailureEvent:
        return FailureEvent(
            env=env,
            error_name=error_name,
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=error,
                    cause=cause,
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                )
            ),
        )

    def _task_failed(self, env: Any, cause: str) -> FailureEventException:
        """`States.TaskFailed` with `cause`, as AWS ends a `.sync` task whose job failed."""
        return FailureEventException(
            self._failure(
                env,
                StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                StatesErrorNameType.StatesTaskFailed.to_name(),
                cause,
            )
        )
