"""The deployable stack: storage, image build and SageMaker role, composed from the reusable constructs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import PipelineSettings
from infra.image_build import ContainerImageBuild
from infra.pipeline import PipelineStateMachine, deploy_defaults
from infra.sagemaker_role import SageMakerExecutionRole
from infra.storage import PipelineStorage

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class XgbPipelineStack(Stack):
    """Everything the batch-transform pipeline needs in one account and region.

    Attributes for further constructs (the pipeline state machine is built from them):
    ``settings`` (:class:`PipelineSettings`), ``storage`` (:class:`PipelineStorage`),
    ``image_build`` (:class:`ContainerImageBuild`), ``sagemaker_role``
    (:class:`SageMakerExecutionRole`).

    ``settings`` defaults to :meth:`PipelineSettings.from_context` of this stack;
    ``context_directory`` (default: the project root) is the container build context.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings | None = None,
        context_directory: str | Path = PROJECT_ROOT,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings or PipelineSettings.from_context(self.node)
        s = self.settings

        self.storage = PipelineStorage(
            self,
            "Storage",
            removal_policy=s.cdk_removal_policy,
            run_retention_days=s.artifact_retention_days,
        )
        self.image_build = ContainerImageBuild(
            self,
            "ImageBuild",
            context_directory=context_directory,
            encryption_key=self.storage.key,
            images_to_keep=s.ecr_images_to_keep,
            log_retention=s.log_retention,
            removal_policy=s.cdk_removal_policy,
        )
        self.sagemaker_role = SageMakerExecutionRole(
            self,
            "SageMakerRole",
            data_bucket=self.storage.data_bucket,
            artifact_bucket=self.storage.artifact_bucket,
            key=self.storage.key,
            repository=self.image_build.repository,
        )

        self.pipeline = PipelineStateMachine(
            self,
            "Pipeline",
            storage=self.storage,
            image_build=self.image_build,
            sagemaker_role=self.sagemaker_role,
            settings=s,
        )

        self._output(
            "DataBucketName", self.storage.data_bucket.bucket_name, "Upload the data set under datasets/"
        )
        self._output(
            "ArtifactBucketName", self.storage.artifact_bucket.bucket_name, "Run outputs under runs/"
        )
        self._output(
            "RepositoryUri", self.image_build.repository.repository_uri, "ECR repository of the image"
        )
        self._output("ImageUri", self.image_build.image_uri, "Image the jobs run (tag = build context hash)")
        self._output(
            "BuildProjectName", self.image_build.project.project_name, "CodeBuild project building it"
        )
        self._output("SageMakerRoleArn", self.sagemaker_role.role_arn, "Execution role of the SageMaker jobs")
        self._output("KmsKeyArn", self.storage.key.key_arn, "Key encrypting buckets, repository and logs")
        self._output(
            "StateMachineArn",
            self.pipeline.state_machine.state_machine_arn,
            "Start a run: python -m ml start",
        )
        self._output(
            "NotificationTopicArn", self.pipeline.topic.topic_arn, "Run success/failure notifications"
        )
        self._output(
            "RunDefaults",
            json.dumps(deploy_defaults(s), sort_keys=True),
            "Execution-input defaults chosen at deploy time (python -m ml start checks input against them)",
        )

    def _output(self, name: str, value: str, description: str) -> CfnOutput:
        return CfnOutput(self, name, value=value, description=description)
