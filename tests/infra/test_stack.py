from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import Stack

from infra.app import STACK_NAME, app_stacks, build_app
from infra.config import ConfigError
from infra.pipeline import deploy_defaults
from infra.stack import PROJECT_ROOT, XgbPipelineStack
from tests.infra.helpers import SynthesizedApp, resources_of_type, the_resource

REQUIRED_OUTPUTS = {
    "DataBucketName",
    "ArtifactBucketName",
    "RepositoryUri",
    "ImageUri",
    "BuildProjectName",
    "SageMakerRoleArn",
    "KmsKeyArn",
    "StateMachineArn",
    "NotificationTopicArn",
    "RunDefaults",
}
DEPLOY_DOC = PROJECT_ROOT / "docs" / "deploy.md"


def test_stack_outputs(default_app: SynthesizedApp) -> None:
    template = default_app.templates[STACK_NAME]
    assert set(template["Outputs"]) >= REQUIRED_OUTPUTS
    (stack,) = [s for s in default_app.stacks if s.stack_name == STACK_NAME]
    assert isinstance(stack, XgbPipelineStack)
    image_uri = template["Outputs"]["ImageUri"]["Value"]
    assert image_uri["Fn::Join"][1][-1] == f":{stack.image_build.image_tag}"
    assert template["Outputs"]["SageMakerRoleArn"]["Value"] == {
        "Fn::GetAtt": [stack.get_logical_id(stack.sagemaker_role.role.node.default_child), "Arn"]
    }


def test_run_defaults_output_is_what_the_prepare_step_merges(default_app: SynthesizedApp) -> None:
    (stack,) = [s for s in default_app.stacks if s.stack_name == STACK_NAME]
    assert isinstance(stack, XgbPipelineStack)
    output = json.loads(default_app.templates[STACK_NAME]["Outputs"]["RunDefaults"]["Value"])
    assert output == deploy_defaults(stack.settings)
    assert output["training_instance_type"] == stack.settings.training_instance_type


def test_deploy_doc_lists_every_stack_output(default_app: SynthesizedApp) -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    table = doc[doc.index("### Stack outputs") : doc.index("## The container image")]
    documented = {
        line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")
    }
    assert documented == set(default_app.templates[STACK_NAME]["Outputs"])


def test_deploy_doc_reuse_table_lists_the_reusable_constructs() -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    table = doc[doc.index("## Reuse the constructs") : doc.index("The build project passes")]
    for construct in (
        "infra.storage.PipelineStorage",
        "infra.image_build.ContainerImageBuild",
        "infra.sagemaker_role.SageMakerExecutionRole",
        "infra.pipeline.PipelineStateMachine",
    ):
        assert f"| `{construct}` |" in table, construct
    row = next(line for line in table.splitlines() if "PipelineStateMachine" in line)
    for name in ("storage", "image_build", "sagemaker_role", "settings", "topic", "timeout"):
        assert f"`{name}`" in row.split("|")[2], name
    for name in ("state_machine", "topic", "log_group", "prepare_function", "deploy_settings"):
        assert f"`{name}`" in row.split("|")[3], name


def test_stack_is_environment_agnostic(default_app: SynthesizedApp) -> None:
    for stack in default_app.stacks:
        assert stack.resolve(stack.account) == {"Ref": "AWS::AccountId"}
        assert stack.resolve(stack.region) == {"Ref": "AWS::Region"}


def test_stack_exposes_constructs_for_the_pipeline(default_app: SynthesizedApp) -> None:
    (stack,) = [s for s in default_app.stacks if isinstance(s, XgbPipelineStack)]
    assert stack.storage.data_bucket is not None
    assert stack.image_build.repository is not None
    assert stack.sagemaker_role.role is not None
    assert stack.settings.removal_policy == "retain"


def test_image_asset_is_the_project_build_context(default_app: SynthesizedApp) -> None:
    (stack,) = [s for s in default_app.stacks if isinstance(s, XgbPipelineStack)]
    staged = default_app.assembly_dir / stack.image_build.asset.asset_path
    top_level = {p.name for p in staged.iterdir()}
    assert top_level == {"container", "ml", "requirements-ml.txt", "pyproject.toml"}
    assert (staged / "container" / "buildspec.yml").is_file()
    assert not list(staged.rglob("__pycache__"))
    assert not list(staged.rglob("*.pyc"))


def test_context_settings_reach_the_resources(tmp_path: Path) -> None:
    app = build_app(
        {
            "ecr_images_to_keep": "3",
            "log_retention_days": "7",
            "artifact_retention_days": "5",
            "removal_policy": "destroy",
        },
        outdir=str(tmp_path),
    )
    (stack,) = app_stacks(app)
    template = app.synth().get_stack_artifact(stack.artifact_id).template
    _, repo = the_resource(template, "AWS::ECR::Repository")
    assert '"countNumber":3' in repo["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"]
    assert repo["DeletionPolicy"] == "Delete"
    build_logs = [
        r for k, r in resources_of_type(template, "AWS::Logs::LogGroup").items() if k.startswith("ImageBuild")
    ]
    assert [r["Properties"]["RetentionInDays"] for r in build_logs] == [7]
    artifact = next(
        r
        for k, r in resources_of_type(template, "AWS::S3::Bucket").items()
        if k.startswith("StorageArtifact")
    )
    rules = {r["Id"]: r for r in artifact["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-run-outputs"]["ExpirationInDays"] == 5


def test_bad_context_value_fails_synthesis_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CDK context key 'ecr_images_to_keep' has the invalid value '0'"):
        build_app({"ecr_images_to_keep": "0"}, outdir=str(tmp_path))


def test_app_stacks_lists_every_stack(default_app: SynthesizedApp) -> None:
    assert all(isinstance(s, Stack) for s in default_app.stacks)
    assert [s.stack_name for s in default_app.stacks] == [STACK_NAME]


@pytest.mark.slow
def test_app_py_synthesizes_as_the_cdk_cli_runs_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CDK_OUTDIR": str(tmp_path),
        "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    completed = subprocess.run(
        [sys.executable, "app.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / f"{STACK_NAME}.template.json").is_file()
