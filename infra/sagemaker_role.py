"""The execution role SageMaker processing, training and transform jobs run as."""

from __future__ import annotations

import json
import re

from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from cdk_nag import RegexAppliesTo
from constructs import Construct

from infra.nag import suppress
from infra.policies import KMS_S3_READ_WRITE_ACTIONS, grant_key_use, log_group_arn
from infra.storage import DATASETS_PREFIX, RUNS_PREFIX

SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
# SageMaker writes job logs to /aws/sagemaker/ProcessingJobs, /TrainingJobs and /TransformJobs.
SAGEMAKER_JOB_LOG_GROUPS = "/aws/sagemaker/*Jobs"
SAGEMAKER_METRIC_NAMESPACE = "/aws/sagemaker/*"

# Every job request (ml/jobs.py) names the key as KmsKeyId of its S3 output (OutputDataConfig,
# ProcessingOutputConfig, TransformOutput): the SageMaker API reference requires kms:Encrypt on the
# execution role for that. DescribeKey: SageMaker checks the key before using it for a volume.
KMS_JOB_OUTPUT_ACTIONS: tuple[str, ...] = ("kms:Encrypt", "kms:DescribeKey")
# VolumeKmsKeyId: the ML storage volumes are EBS volumes encrypted with the key; attaching them makes
# EC2 use the key through a grant the role creates. The condition limits the role to grants for
# AWS services, so it cannot hand the key to an arbitrary principal.
KMS_VOLUME_GRANT_CONDITION: dict[str, dict[str, str]] = {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def _prefix_pattern(prefix: str) -> str:
    if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix:
        raise ValueError(f"S3 prefix must look like 'name/' (no leading '/', no '*'), got {prefix!r}")
    return prefix + "*"


def _policies_granting(role: iam.IRole, action: str) -> list[iam.Policy]:
    """The policies of `role` that CDK's grant_* methods added `action` to: the `DefaultPolicy` of
    an `iam.Role`, the policy CDK adds to a role imported with `mutable=True`."""
    return [
        child
        for child in role.node.children
        if isinstance(child, iam.Policy) and f'"{action}"' in json.dumps(child.document.to_json())
    ]


class SageMakerExecutionRole(Construct):
    """An IAM role for SageMaker jobs with access to the pipeline's own data only.

    Grants (all on the resources passed in, nothing account-wide except where IAM allows only "*"):

    - S3: read ``data_bucket`` under ``data_prefix`` (default ``datasets/``); read and write
      ``artifact_bucket`` under ``artifact_prefix`` (default ``runs/``); ``s3:ListBucket`` on both,
      conditioned on those prefixes;
    - KMS, on ``key`` only: ``kms:Decrypt``/``kms:GenerateDataKey`` (SSE-KMS objects),
      ``kms:Encrypt``/``kms:DescribeKey`` (the jobs' output ``KmsKeyId``), ``kms:CreateGrant`` with
      ``kms:GrantIsForAWSResource = true`` (storage volumes encrypted with ``VolumeKmsKeyId``);
    - ECR: pull from ``repository`` (plus ``ecr:GetAuthorizationToken``, which only accepts "*");
    - CloudWatch Logs: the SageMaker job log groups ``/aws/sagemaker/*Jobs`` (ARN with and without
      the ``:*`` suffix, which also covers their streams);
    - CloudWatch metrics: ``cloudwatch:PutMetricData`` in namespaces ``/aws/sagemaker/*``.

    Bring your own: pass ``role`` (e.g. ``iam.Role.from_role_arn(..., mutable=True)``) and the same
    grants are attached to it; it must trust ``sagemaker.amazonaws.com``.

    Attributes: ``role``, ``role_arn``. Use :meth:`grant_pass_role` for whoever creates the jobs.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        data_bucket: s3.IBucket,
        artifact_bucket: s3.IBucket,
        key: kms.IKey,
        repository: ecr.IRepository,
        data_prefix: str = DATASETS_PREFIX,
        artifact_prefix: str = RUNS_PREFIX,
        role: iam.IRole | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        data_objects = _prefix_pattern(data_prefix)
        artifact_objects = _prefix_pattern(artifact_prefix)

        self.role: iam.IRole = role or iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(SAGEMAKER_SERVICE),
            description="Execution role of the XGBoost pipeline's SageMaker processing, training and transform jobs",
        )
        self.role_arn: str = self.role.role_arn

        statements = [
            iam.PolicyStatement(
                sid="ReadDataSets",
                actions=["s3:GetObject"],
                resources=[data_bucket.arn_for_objects(data_objects)],
            ),
            iam.PolicyStatement(
                sid="ListDataSets",
                actions=["s3:ListBucket"],
                resources=[data_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [data_prefix, data_objects]}},
            ),
            iam.PolicyStatement(
                sid="ReadWriteRunArtifacts",
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[artifact_bucket.arn_for_objects(artifact_objects)],
            ),
            iam.PolicyStatement(
                sid="ListRunArtifacts",
                actions=["s3:ListBucket"],
                resources=[artifact_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [artifact_prefix, artifact_objects]}},
            ),
            iam.PolicyStatement(
                sid="WriteJobLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                # The group ARN both bare and with ":*": CloudWatch Logs authorises some actions on
                # the group's ARN with the ":*" suffix, and that form also covers its log streams.
                resources=[
                    log_group_arn(self, SAGEMAKER_JOB_LOG_GROUPS),
                    log_group_arn(self, f"{SAGEMAKER_JOB_LOG_GROUPS}:*"),
                ],
            ),
            iam.PolicyStatement(
                sid="PublishJobMetrics",
                actions=["cloudwatch:PutMetricData"],
                # PutMetricData has no resource-level permissions ("*" only); the namespace
                # condition is what scopes it.
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": SAGEMAKER_METRIC_NAMESPACE}},
            ),
            iam.PolicyStatement(
                sid="EncryptJobOutputs",
                actions=list(KMS_JOB_OUTPUT_ACTIONS),
                resources=[key.key_arn],
            ),
            iam.PolicyStatement(
                sid="AttachEncryptedVolumes",
                actions=["kms:CreateGrant"],
                resources=[key.key_arn],
                conditions=KMS_VOLUME_GRANT_CONDITION,
            ),
        ]
        policy = iam.Policy(self, "Policy", statements=statements)
        self.role.attach_inline_policy(policy)
        repository.grant_pull(self.role)
        grant_key_use(key, self.role, KMS_S3_READ_WRITE_ACTIONS)

        log_groups = (
            "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
            f"{SAGEMAKER_JOB_LOG_GROUPS}"
        )
        # One suppression per kind of IAM5 finding, each with its own reason. The bucket part of an
        # object ARN is a token (GetAtt, import or literal): match on the prefix.
        suppress(
            policy,
            "AwsSolutions-IAM5",
            f"Jobs read any object of the data sets under '{data_prefix}' (read-only: s3:GetObject); "
            "object names are chosen by whoever uploads a data set.",
            applies_to=[RegexAppliesTo(regex=f"/^Resource::.+/{re.escape(data_objects)}$/")],
        )
        suppress(
            policy,
            "AwsSolutions-IAM5",
            f"Jobs read and write run artefacts under '{artifact_prefix}<run id>/'; run ids are "
            "generated per execution, so the prefix is the narrowest fixed scope.",
            applies_to=[RegexAppliesTo(regex=f"/^Resource::.+/{re.escape(artifact_objects)}$/")],
        )
        suppress(
            policy,
            "AwsSolutions-IAM5",
            "SageMaker writes job logs to the log groups /aws/sagemaker/ProcessingJobs, TrainingJobs and "
            "TransformJobs, with one stream per job and host named by SageMaker.",
            applies_to=[log_groups, f"{log_groups}:*"],
        )
        suppress(
            policy,
            "AwsSolutions-IAM5",
            "cloudwatch:PutMetricData has no resource-level permissions (IAM accepts only '*'); the "
            f"cloudwatch:namespace condition limits it to {SAGEMAKER_METRIC_NAMESPACE}.",
            applies_to=["Resource::*"],
        )
        # CDK puts the pull grant into the role's own grant policy (a new role's DefaultPolicy, or
        # the Policy it adds to an imported mutable role): suppress exactly there. An immutable
        # imported role takes no grant, and then there is no policy to suppress on.
        for pull_policy in _policies_granting(self.role, "ecr:GetAuthorizationToken"):
            suppress(
                pull_policy,
                "AwsSolutions-IAM5",
                "ecr:GetAuthorizationToken has no resource-level permissions: IAM only accepts '*'; "
                "the image pull actions are scoped to the one repository.",
                applies_to=["Resource::*"],
            )

    def grant_pass_role(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to pass this role to SageMaker, and to nothing else.

        Emits exactly one statement: ``iam:PassRole`` on this role's ARN with the condition
        ``StringEquals iam:PassedToService = sagemaker.amazonaws.com``.
        """
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["iam:PassRole"],
            resource_arns=[self.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER_SERVICE}},
        )
