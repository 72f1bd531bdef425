"""The Prepare Lambda: validates a run's input and computes its job requests (`ml.pipeline_input`).

Its code is the stdlib-only part of the `ml` package, found by following the `ml.*` imports of
`ml/pipeline_input.py`, so the package holds exactly what the handler imports and a new import in
those modules is picked up without editing a file list here.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import suppress
from infra.policies import (
    depend_on_role_policy_only,
    encrypted_log_group,
    grant_key_use,
    unique_log_group_name,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HANDLER = "ml.pipeline_input.handler"
ENTRY_MODULE = "ml.pipeline_input"
SETTINGS_ENV = "PIPELINE_SETTINGS"  # ml.pipeline_input.SETTINGS_ENV (not imported: infra stays CDK-only)
# The handler is stdlib-only Python >= 3.11. 3.14 is newer, but cfn-lint's schema (1.40.2) does
# not accept it yet; 3.13 is supported by Lambda until 2029.
RUNTIME = lambda_.Runtime.PYTHON_3_13


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_files(root: Path = PROJECT_ROOT, entry: str = ENTRY_MODULE) -> list[str]:
    """Paths (relative to `root`, POSIX) of every `ml` module `entry` imports, transitively,
    plus the package `__init__.py` files Python needs to import them."""
    seen: set[str] = set()
    pending = [entry]
    files: set[Path] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(root, module)
        if path is None:
            raise FileNotFoundError(
                f"module {module!r} imported by the Prepare Lambda has no file under {root}"
            )
        files.add(path)
        parts = module.split(".")
        for depth in range(1, len(parts)):
            init = root.joinpath(*parts[:depth], "__init__.py")
            if init.is_file():
                files.add(init)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            # `from ml import jobs` names a module; `from ml.jobs import X` names an attribute.
            pending.extend(n for n in names if n.split(".")[0] == "ml" and _module_file(root, n) is not None)
    return sorted(p.relative_to(root).as_posix() for p in files)


def asset_exclude_patterns(files: list[str]) -> list[str]:
    """.gitignore-style patterns that keep only `files` (and the directories holding them).

    Git semantics: a file can only be re-included when its directory is, so every directory on
    the way is re-included and its other entries excluded again.
    """
    patterns = ["/*"]
    directories = sorted({str(Path(f).parent) for f in files} - {"."}, key=lambda d: d.count("/"))
    for directory in directories:
        patterns += [f"!/{directory}/", f"/{directory}/*"]
    patterns += [f"!/{f}" for f in files]
    patterns += ["__pycache__/", "*.py[cod]"]
    return patterns


class PrepareFunction(Construct):
    """A Python Lambda running `ml.pipeline_input.handler` with the deploy settings in its environment.

    Inputs: ``settings``: the `ml.jobs.DeploySettings` fields as a JSON-able mapping (CDK tokens
    allowed); ``key``: KMS key for the environment variables and the log group;
    ``log_retention``; ``removal_policy`` of the log group.

    Attributes: ``function``, ``log_group``, ``role``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Mapping[str, Any],
        key: kms.IKey,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        code_root: Path = PROJECT_ROOT,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        log_group_name = unique_log_group_name(self, "/aws/lambda/")
        self.log_group = encrypted_log_group(
            self,
            "Logs",
            log_group_name=log_group_name,
            key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        # Our own role: the default one carries the AWSLambdaBasicExecutionRole managed policy,
        # which writes to any log group.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Runs the pipeline's Prepare step: validates the run input, needs no AWS access",
        )
        self.log_group.grant_write(self.role)
        # X-Ray segments have no resource-level permissions.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"], resources=["*"]
            )
        )
        grant_key_use(key, self.role, ("kms:Decrypt",))
        files = package_files(code_root)
        self.function = lambda_.Function(
            self,
            "Function",
            description="Validates a pipeline run's input and computes its job names, S3 URIs and job requests",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(code_root), exclude=asset_exclude_patterns(files), ignore_mode=IgnoreMode.GIT
            ),
            environment={SETTINGS_ENV: stack.to_json_string(dict(settings))},
            environment_encryption=key,
            memory_size=256,
            timeout=Duration.seconds(30),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role.without_policy_updates(),
        )
        # No DependsOn on the role itself (cfn-lint W3005: the Role GetAtt orders it), only on its
        # policy, so the first invocation finds its log and key permissions. checkov CKV_AWS_115/116/117
        # on this function are accepted in tests/infra/policy_rules.py (CHECKOV_ACCEPTED), with reasons.
        cfn_function = self.function.node.default_child
        if not isinstance(cfn_function, lambda_.CfnFunction):
            raise TypeError("lambda.Function without its CfnFunction: cannot set its DependsOn")
        depend_on_role_policy_only(cfn_function, self.role)
        suppress(
            self.function,
            "AwsSolutions-L1",
            "Python 3.13, supported by Lambda until 2029: 3.14 is not yet in cfn-lint's runtime schema, "
            "which the project's checks run. Move to the newest runtime when cfn-lint accepts it.",
        )
        self.package_files = files

        suppress(
            self.role,
            "AwsSolutions-IAM5",
            "xray:PutTraceSegments and xray:PutTelemetryRecords (active tracing) have no resource-level "
            "permissions: IAM accepts only '*'.",
            applies_to=["Resource::*"],
            apply_to_children=True,
        )
