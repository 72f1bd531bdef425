"""Helpers for the CDK tests: stacks with the project's feature flags, synthesis, checker runs."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Stack
from aws_cdk.assertions import Annotations, Match, Template

from infra.app import app_stacks, build_app, cdk_json_context
from infra.stack import PROJECT_ROOT

BUILDSPEC = """version: 0.2
phases:
  build:
    commands:
      - docker build -t "$REPOSITORY_URI:$IMAGE_TAG" -f container/Dockerfile .
      - docker push "$REPOSITORY_URI:$IMAGE_TAG"
"""


def make_build_context(root: Path) -> Path:
    """A minimal build context shaped like the project's, plus files that must stay out of the asset."""
    (root / "container").mkdir(parents=True)
    (root / "container" / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (root / "container" / "buildspec.yml").write_text(BUILDSPEC)
    (root / "ml" / "__pycache__").mkdir(parents=True)
    (root / "ml" / "__init__.py").write_text('"""ml"""\n')
    (root / "ml" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "requirements-ml.txt").write_text("xgboost==3.2.0\n")
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "README.md").write_text("not part of the image\n")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("")
    (root / "cdk.out").mkdir()
    (root / "cdk.out" / "manifest.json").write_text("{}")
    return root


def new_stack(context: dict[str, Any] | None = None) -> tuple[App, Stack]:
    """An empty stack in an app with the project's feature flags (as in ``npx cdk synth``)."""
    app = App(context={**cdk_json_context(), **(context or {})})
    return app, Stack(app, "TestStack")


def template_of(stack: Stack) -> dict[str, Any]:
    return Template.from_stack(stack).to_json()


def nag_findings(stack: Stack) -> list[str]:
    """Unsuppressed cdk-nag errors and warnings of ``stack`` as readable lines."""
    annotations = Annotations.from_stack(stack)
    found = annotations.find_error(
        "*", Match.string_like_regexp(r"AwsSolutions-.*")
    ) + annotations.find_warning("*", Match.string_like_regexp(r"AwsSolutions-.*"))
    return [f"{message.id}: {str(message.entry.data)[:300]}" for message in found]


def all_errors_and_warnings(stack: Stack) -> list[str]:
    annotations = Annotations.from_stack(stack)
    found = annotations.find_error("*", Match.any_value()) + annotations.find_warning("*", Match.any_value())
    return [f"{message.id}: {str(message.entry.data)[:300]}" for message in found]


def policy_statements(template: dict[str, Any], logical_id_prefix: str) -> list[dict[str, Any]]:
    """Statements of every AWS::IAM::Policy whose logical id starts with ``logical_id_prefix``."""
    found = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Policy" and logical_id.startswith(logical_id_prefix):
            found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def actions_of(statement: dict[str, Any]) -> set[str]:
    raw = statement["Action"]
    return {raw} if isinstance(raw, str) else set(raw)


def the_resource(template: dict[str, Any], resource_type: str) -> tuple[str, dict[str, Any]]:
    found = [(k, r) for k, r in template["Resources"].items() if r["Type"] == resource_type]
    assert len(found) == 1, f"expected one {resource_type}, found {[k for k, _ in found]}"
    return found[0]


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == resource_type}


@dataclass
class SynthesizedApp:
    name: str
    app: App
    stacks: list[Stack]
    templates: dict[str, dict[str, Any]]
    template_paths: dict[str, Path]
    assembly_dir: Path


# The app as deployed by default, and with removal_policy=destroy (which adds CDK's auto-delete
# custom resources): the checks run on both.
APP_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "destroy": {"removal_policy": "destroy", "notification_email": "ops@example.com"},
}


def synthesize(name: str, outdir: Path) -> SynthesizedApp:
    app = build_app(APP_VARIANTS[name], outdir=str(outdir))
    assembly = app.synth()
    stacks = app_stacks(app)
    templates, paths = {}, {}
    for stack in stacks:
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        templates[stack.stack_name] = artifact.template
        paths[stack.stack_name] = Path(artifact.template_full_path)
    return SynthesizedApp(name, app, stacks, templates, paths, Path(assembly.directory))


def checkov_binary() -> str:
    candidates = [os.environ.get("CHECKOV_BIN"), str(PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("checkov")
    if found:
        return found
    raise RuntimeError("checkov not found: run `make test` (it installs .venv-checkov) or set CHECKOV_BIN")


# Cached per template path: each synthesized template is written once per session, and the checks
# that span the variants reuse the reports of the per-variant checks.
@functools.cache
def run_checkov(template: Path) -> dict[str, Any]:
    command = [
        checkov_binary(),
        "-f",
        str(template),
        "--framework",
        "cloudformation",
        "--skip-download",
        "--compact",
        "-o",
        "json",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"checkov printed no JSON report: {completed.stderr[-2000:]}") from error
    # One framework gives one report object (a list when several frameworks ran).
    return report[0] if isinstance(report, list) else report


@functools.cache
def run_cfn_lint(template: Path) -> list[dict[str, Any]]:
    venv_cfn_lint = PROJECT_ROOT / ".venv" / "bin" / "cfn-lint"
    cfn_lint = str(venv_cfn_lint) if venv_cfn_lint.is_file() else shutil.which("cfn-lint")
    if cfn_lint is None:
        raise RuntimeError("cfn-lint not found: it is pinned in requirements-dev.txt (make venv)")
    # No rule is ignored: accepted findings are listed, per resource, in policy_rules.CFN_LINT_ACCEPTED.
    command = [cfn_lint, "--format", "json", "--", str(template)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if completed.returncode != 0 and not completed.stdout.strip():
        raise AssertionError(f"cfn-lint failed without a report: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout or "[]")
