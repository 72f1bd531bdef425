"""Tiny Lambda handlers for the canary tests of the in-process Lambda patch."""

from __future__ import annotations

import os
from typing import Any


class BadRequestError(ValueError):
    pass


def echo(event: Any, context: Any) -> dict[str, Any]:
    if event.get("fail"):
        raise BadRequestError(f"refused: {event['fail']}")
    return {"echo": event, "setting": os.environ.get("CANARY_SETTING"), "function": context.function_name}
