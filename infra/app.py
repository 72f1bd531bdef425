"""Builds the CDK app: used by ``app.py`` (``npx cdk synth``) and by the tests, so both see the same stacks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Stack

from infra.nag import add_security_checks
from infra.stack import PROJECT_ROOT, XgbPipelineStack

STACK_NAME = "XgbBatchPipeline"
CDK_JSON = PROJECT_ROOT / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` of cdk.json (feature flags and settings), which the CDK CLI passes to the app.

    In-process builds (tests) read it here so they synthesize what ``npx cdk synth`` synthesizes.
    """
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("context", {}))


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> App:
    """The app with every stack and the cdk-nag AWS Solutions checks.

    ``context`` overrides cdk.json's context (e.g. ``{"removal_policy": "destroy"}``); context given on
    the CDK command line (``-c``) overrides both.
    """
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    # No env=: the templates stay environment-agnostic (no account/region lookups at synth time).
    XgbPipelineStack(
        app,
        STACK_NAME,
        description="SageMaker batch-transform pipeline with a bring-your-own XGBoost container",
    )
    add_security_checks(app)
    return app


def app_stacks(app: App) -> list[Stack]:
    """Every stack of ``app``, in construct order (checks iterate over these)."""
    return [child for child in app.node.find_all() if isinstance(child, Stack)]
