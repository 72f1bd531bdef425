"""IAM statements shared by the constructs, written out action by action.

CDK's ``key.grant_*`` and ``bucket.grant_*`` helpers emit wildcard actions (``kms:GenerateDataKey*``,
``kms:ReEncrypt*``, ``s3:GetObject*``, ``s3:List*``); the project allows no wildcard action, so the
few statements that need them are spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Aws, CfnResource, Names, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

# Reading an SSE-KMS object needs Decrypt; writing one needs GenerateDataKey (and Decrypt again for
# multipart uploads, which S3 uses for large objects).
KMS_S3_READ_ACTIONS: tuple[str, ...] = ("kms:Decrypt",)
KMS_S3_READ_WRITE_ACTIONS: tuple[str, ...] = ("kms:Decrypt", "kms:GenerateDataKey")

# What CloudWatch Logs calls on a key that encrypts a log group (the AWS documentation lists the
# same actions with wildcards: Encrypt*, Decrypt*, ReEncrypt*, GenerateDataKey*, Describe*).
KMS_LOGS_ACTIONS: tuple[str, ...] = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
)


def grant_key_use(key: kms.IKey, grantee: iam.IGrantable, actions: Sequence[str]) -> iam.Grant:
    """Allow ``grantee`` the listed KMS ``actions`` on ``key`` only (identity policy; the key policy
    delegates to IAM through its default account-root statement)."""
    for action in actions:
        if not action.startswith("kms:") or "*" in action:
            raise ValueError(f"grant_key_use expects explicit kms: actions, got {action!r}")
    return iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[key.key_arn])


def log_group_arn(scope: IConstruct, log_group_name: str) -> str:
    """ARN of a log group by name (without the ``:*`` suffix that ``LogGroup.log_group_arn`` carries)."""
    return Stack.of(scope).format_arn(
        service="logs",
        resource="log-group",
        resource_name=log_group_name,
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


def allow_log_group_encryption(key: kms.IKey, scope: IConstruct, log_group_name: str) -> bool:
    """Let CloudWatch Logs use ``key`` for the log group named ``log_group_name`` only.

    CloudWatch Logs checks the key policy when the log group is created, so this must be in the key
    policy itself. Returns False when ``key`` is imported (its policy cannot be changed from here:
    the owner of the key adds the same statement).
    """
    statement = iam.PolicyStatement(
        principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
        actions=list(KMS_LOGS_ACTIONS),
        resources=["*"],  # in a key policy "*" means this key
        conditions={
            "ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_group_arn(scope, log_group_name)}
        },
    )
    return key.add_to_resource_policy(statement).statement_added


def unique_log_group_name(scope: IConstruct, prefix: str) -> str:
    """A concrete log group name, ``<prefix><unique id of scope>``.

    Concrete (not CloudFormation-generated) so the key policy and IAM statements can name the log
    group without a dependency cycle between the key and the log group.
    """
    return prefix + Names.unique_resource_name(scope, max_length=200, separator="-")


def encrypted_log_group(
    scope: Construct,
    construct_id: str,
    *,
    log_group_name: str,
    key: kms.IKey,
    retention: logs.RetentionDays,
    removal_policy: RemovalPolicy,
) -> logs.LogGroup:
    """A log group encrypted with ``key``, whose policy lets CloudWatch Logs use it for this group."""
    allow_log_group_encryption(key, scope, log_group_name)
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=log_group_name,
        retention=retention,
        encryption_key=key,
        removal_policy=removal_policy,
    )


def depend_on_role_policy_only(resource: CfnResource, role: iam.IRole) -> None:
    """Make ``resource`` DependsOn exactly ``role``'s default policy, not the role itself.

    CDK's ``lambda.Function`` (and ``StateMachine``) add a dependency on their whole role: on its
    default policy, which matters (the first invocation after a deploy must find its permissions),
    and on the role, which the role-ARN ``GetAtt`` in the resource's properties already orders
    (cfn-lint W3005). CDK computes DependsOn at synthesis, so it can only be replaced, by override:
    call this last, once nothing else adds a dependency to ``resource``.
    """
    policy = role.node.try_find_child("DefaultPolicy")
    policy_resource = policy.node.default_child if policy is not None else None
    if not isinstance(policy_resource, CfnResource):
        raise ValueError(
            f"{role.node.path} has no default policy: add its statements before ordering "
            f"{resource.node.path} after them"
        )
    resource.add_override("DependsOn", [Stack.of(resource).get_logical_id(policy_resource)])
