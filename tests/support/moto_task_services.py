"""Route Step Functions task services of moto's interpreter to the project's integrations.

DEPENDS ON MOTO INTERNALS (pinned moto, canary in test_moto_patches.py): the interpreter builds
the service of a `arn:aws:states:::<service>:...` task through the module attribute
`state_task_factory.state_task_service_for`, which is rebound here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory

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
