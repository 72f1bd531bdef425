"""A platform team's own stack built from the pipeline's constructs (docs/deploy.md, "Reuse the constructs").

Another model, another container directory, another data set, the team's own KMS key and the
team's automation role; tests/infra/test_reuse_example.py synthesizes it and runs cdk-nag on it.

    python docs/examples/reuse_constructs.py /path/to/fraud-model   # a directory with docker/ and src/
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from aws_cdk import App, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.image_build import ContainerImageBuild
from infra.nag import add_security_checks
from infra.sagemaker_role import SageMakerExecutionRole
from infra.storage import PipelineStorage


class FraudModelStack(Stack):
    """Storage, image build and SageMaker role for a fraud model whose container lives elsewhere."""

    def __init__(self, scope: Construct, construct_id: str, *, model_directory: Path, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        # The team's key, shared by the buckets, the repository and the build logs.
        key = kms.Key(self, "TeamKey", enable_key_rotation=True, alias="alias/fraud-model")
        storage = PipelineStorage(
            self, "Storage", key=key, run_retention_days=30, removal_policy=RemovalPolicy.DESTROY
        )

        # model_directory/docker/{Dockerfile,buildspec.yml} and model_directory/src/ are the context.
        image = ContainerImageBuild(
            self,
            "Image",
            context_directory=model_directory,
            include=("docker", "src"),
            buildspec="docker/buildspec.yml",
            encryption_key=storage.key,
            images_to_keep=5,
            removal_policy=RemovalPolicy.DESTROY,
        )

        # Jobs read only the fraud data set and write only run outputs.
        job_role = SageMakerExecutionRole(
            self,
            "JobRole",
            data_bucket=storage.data_bucket,
            artifact_bucket=storage.artifact_bucket,
            key=storage.key,
            repository=image.repository,
            data_prefix=PipelineStorage.dataset_prefix("fraud-transactions"),
        )

        # Whatever starts the SageMaker jobs (here the team's CI role) may pass the job role to
        # SageMaker, and only to SageMaker.
        automation = iam.Role(self, "Automation", assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"))
        job_role.grant_pass_role(automation)

        CfnOutput(self, "DataSetUri", value=storage.dataset_uri("fraud-transactions"))
        CfnOutput(self, "ImageUri", value=image.image_uri)
        CfnOutput(self, "JobRoleArn", value=job_role.role_arn)


def build(model_directory: Path, app: App | None = None) -> tuple[App, FraudModelStack]:
    app = app or App()
    stack = FraudModelStack(app, "FraudModel", model_directory=model_directory)
    add_security_checks(app)
    return app, stack


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(
            "usage: reuse_constructs.py MODEL_DIRECTORY (with docker/Dockerfile, docker/buildspec.yml, src/)"
        )
    build(Path(sys.argv[1]))[0].synth()
