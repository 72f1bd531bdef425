"""Run moto Lambda functions in-process instead of in Docker (which these machines lack).

`install()` replaces moto's `LambdaBackend.invoke`: the function must exist in moto (create
it with its real Handler and Environment, e.g. copied from the synthesized template), and
invoking it imports `module.attr` from its Handler and calls `handler(event, context)` with
the function's environment variables set, as the Lambda Python runtime would. An uncaught
exception becomes what AWS returns: status 200, header `X-Amz-Function-Error: Unhandled` and
the payload `{"errorMessage", "errorType", "requestId", "stackTrace"}`; Step Functions then
fails the task with `Error` = the exception's type name and `Cause` = that payload as JSON.

Depends on moto internals (canary: tests/support/test_moto_patches.py):
`moto.awslambda.models.LambdaBackend.invoke(function_name, qualifier, body, headers,
response_headers)` and the `handler` / `environment_vars` attributes of `LambdaFunction`.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda.models import LambdaBackend

# os.environ is process-global: one in-process invocation at a time.
_environ_lock = threading.Lock()
# Every invocation, for assertions: (function name, event, returned payload or error payload).
INVOCATIONS: list[tuple[str, Any, Any]] = []


@dataclass
class _Context:
    """The attributes of the Lambda Python runtime's context object a handler may read."""

    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 128
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _load_handler(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"Lambda Handler {spec!r} is not of the form module.function")
    return getattr(importlib.import_module(module_name), attr)


def invoke_in_process(fn: Any, event: Any) -> tuple[Any, bool]:
    """Return (payload, errored) for one invocation of moto function `fn`."""
    context = _Context(function_name=fn.function_name, invoked_function_arn=fn.function_arn)
    with _environ_lock:
        saved = dict(os.environ)
        os.environ.update({k: str(v) for k, v in (fn.environment_vars or {}).items()})
        try:
            return _load_handler(fn.handler)(event, context), False
        except Exception as exc:
            return {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "requestId": context.aws_request_id,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }, True
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _invoke(
    self: LambdaBackend,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: dict[str, str],
) -> bytes:
    fn = self.get_function(function_name, qualifier)
    event = json.loads(body) if body else {}
    payload, errored = invoke_in_process(fn, event)
    INVOCATIONS.append((fn.function_name, event, payload))
    if errored:
        response_headers["x-amz-function-error"] = "Unhandled"
    encoded = json.dumps(payload).encode("utf-8")
    response_headers["Content-Length"] = str(len(encoded))
    return encoded


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    LambdaBackend.invoke = _invoke  # type: ignore[method-assign]
    _installed = True
