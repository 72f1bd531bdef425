"""The real stack, synthesized once per session, deployed piece by piece into moto.

`pipeline` creates in moto what the state machine talks to, under the physical names the CFN
resolver gives the template's resources: the two buckets, the topic (with an SQS inbox), the
ECR repository (with the image, so FindImage finds it, unless a test removes it), the Prepare
Lambda (its real handler and its resolved environment, run in-process), and the state machine
from the synthesized, resolved definition.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from tests.support import moto_sfn_codebuild, moto_sfn_sagemaker
from tests.support.cfn_resolve import api_case, concrete_asl, resolver, resources_of_type
from tests.support.moto_sfn_extras import RetryClock, WaitClock
from tests.support.sfn_harness import (
    MOTO_CONFIG,
    REGION,
    Execution,
    SnsInbox,
    create_inprocess_function,
    install_all,
    run_execution,
)

MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
)
REBUILT_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "annotations": {"rebuilt": "true"},
    }
)


@dataclass(frozen=True)
class Synthesized:
    template: dict[str, Any]
    asl: dict[str, Any]
    assembly_dir: Path


def _only(template: dict[str, Any], resource_type: str, contains: str = "") -> str:
    matches = [lid for lid in resources_of_type(template, resource_type) if contains in lid]
    assert len(matches) == 1, f"expected one {resource_type} with {contains!r} in its id, got {matches}"
    return matches[0]


@pytest.fixture(scope="session")
def synthesized() -> Synthesized:
    from aws_cdk.assertions import Template

    from infra.app import STACK_NAME, build_app

    app = build_app()
    stack = app.node.find_child(STACK_NAME)
    template = Template.from_stack(stack).to_json()  # type: ignore[arg-type]
    return Synthesized(template=template, asl=concrete_asl(template), assembly_dir=Path(app.outdir))


@dataclass
class PipelineEnv:
    """Clients and names of the moto deployment of the pipeline."""

    template: dict[str, Any]
    asl: dict[str, Any]
    clients: dict[str, Any]
    names: dict[str, str]
    state_machine_arn: str
    inbox: SnsInbox
    executions: list[Execution] = field(default_factory=list)

    def run(self, name: str, execution_input: Any = None, timeout_s: float = 180.0) -> Execution:
        execution = run_execution(
            self.clients["stepfunctions"],
            self.state_machine_arn,
            name=name,
            execution_input=execution_input,
            timeout_s=timeout_s,
        )
        self.executions.append(execution)
        return execution

    def push_image(self, build: dict[str, Any] | None = None) -> None:
        """What container/buildspec.yml does: push the image under IMAGE_TAG, unless that (immutable)
        tag is already in ECR, in which case the build stops early and succeeds. With the
        FORCE_REBUILD=true override of the latest StartBuild it deletes the tag and pushes a new
        image (another manifest, so another digest) under it."""
        ecr = self.clients["ecr"]
        started = moto_sfn_codebuild.STARTED[-1] if moto_sfn_codebuild.STARTED else {}
        overrides = {v["name"]: v["value"] for v in started.get("environmentVariablesOverride", [])}
        if overrides.get("FORCE_REBUILD") == "true":
            ecr.batch_delete_image(
                repositoryName=self.names["repository"],
                imageIds=[{"imageTag": self.names["build_image_tag"]}],
            )
            ecr.put_image(
                repositoryName=self.names["repository"],
                imageManifest=REBUILT_MANIFEST,
                imageTag=self.names["build_image_tag"],
            )
            return
        try:
            ecr.describe_images(
                repositoryName=self.names["repository"],
                imageIds=[{"imageTag": self.names["build_image_tag"]}],
            )
        except ecr.exceptions.ImageNotFoundException:
            ecr.put_image(
                repositoryName=self.names["repository"],
                imageManifest=MANIFEST,
                imageTag=self.names["build_image_tag"],
            )

    def remove_image(self) -> None:
        self.clients["ecr"].batch_delete_image(
            repositoryName=self.names["repository"], imageIds=[{"imageTag": self.names["image_tag"]}]
        )


@pytest.fixture
def pipeline(synthesized: Synthesized) -> Iterator[PipelineEnv]:
    install_all(retry_scale=0.0)
    moto_sfn_sagemaker.reset()
    moto_sfn_codebuild.reset()
    RetryClock.reset()
    WaitClock.reset()
    template, asl = synthesized.template, synthesized.asl
    resolve = resolver(template)
    with mock_aws(config=MOTO_CONFIG):
        clients = {
            name: boto3.client(name, region_name=REGION)
            for name in ("stepfunctions", "s3", "sns", "sqs", "ecr", "iam", "lambda", "sagemaker", "kms")
        }
        names: dict[str, str] = {
            "data_bucket": resolve({"Ref": _only(template, "AWS::S3::Bucket", "DataBucket")}),
            "artifact_bucket": resolve({"Ref": _only(template, "AWS::S3::Bucket", "ArtifactBucket")}),
            "repository": resolve({"Ref": _only(template, "AWS::ECR::Repository")}),
        }
        for bucket in (names["data_bucket"], names["artifact_bucket"]):
            clients["s3"].create_bucket(Bucket=bucket)

        topic_id = _only(template, "AWS::SNS::Topic")
        topic_arn = clients["sns"].create_topic(Name=resolve({"Fn::GetAtt": [topic_id, "TopicName"]}))[
            "TopicArn"
        ]
        assert topic_arn == resolve({"Ref": topic_id})
        inbox = SnsInbox(clients["sns"], clients["sqs"], topic_arn)

        clients["ecr"].create_repository(repositoryName=names["repository"])
        find_image = asl["States"]["FindImage"]["Parameters"]
        names["image_tag"] = find_image["ImageIds"][0]["ImageTag"]
        clients["ecr"].put_image(
            repositoryName=names["repository"], imageManifest=MANIFEST, imageTag=names["image_tag"]
        )

        project_id = _only(template, "AWS::CodeBuild::Project")
        project = resolve(template["Resources"][project_id]["Properties"])
        names["project"] = resolve({"Ref": project_id})
        clients["codebuild"] = boto3.client("codebuild", region_name=REGION)
        clients["codebuild"].create_project(
            name=names["project"],
            source=api_case(project["Source"]),
            artifacts=api_case(project["Artifacts"]),
            environment=api_case(project["Environment"]),
            serviceRole=project["ServiceRole"],
        )
        names["build_image_tag"] = next(
            v["Value"] for v in project["Environment"]["EnvironmentVariables"] if v["Name"] == "IMAGE_TAG"
        )

        function_id = _only(template, "AWS::Lambda::Function", "Prepare")
        properties = resolve(template["Resources"][function_id]["Properties"])
        function_arn = create_inprocess_function(
            clients["iam"],
            clients["lambda"],
            name=resolve({"Ref": function_id}),
            handler=properties["Handler"],
            environment=properties["Environment"]["Variables"],
        )
        assert asl["States"]["Prepare"]["Parameters"]["FunctionName"] == function_arn

        state_machine_arn = clients["stepfunctions"].create_state_machine(
            name="pipeline", definition=json.dumps(asl), roleArn="arn:aws:iam::123456789012:role/pipeline-sfn"
        )["stateMachineArn"]
        names["settings"] = properties["Environment"]["Variables"]["PIPELINE_SETTINGS"]
        yield PipelineEnv(
            template=template,
            asl=asl,
            clients=clients,
            names=names,
            state_machine_arn=state_machine_arn,
            inbox=inbox,
        )
    moto_sfn_sagemaker.reset()
    moto_sfn_codebuild.reset()
