from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from infra.nag import add_security_checks
from infra.sagemaker_role import SageMakerExecutionRole
from infra.storage import PipelineStorage
from tests.infra.helpers import actions_of, nag_findings, new_stack, policy_statements, the_resource
from tests.infra.policy_rules import pass_role_violations, wildcard_violations


class Fixture:
    def __init__(self, role: iam.IRole | None = None, with_pass_role: bool = False) -> None:
        self.app, self.stack = new_stack()
        storage = PipelineStorage(self.stack, "Storage")
        self.key, self.data, self.artifacts = storage.key, storage.data_bucket, storage.artifact_bucket
        self.repository = ecr.Repository(self.stack, "Repo")
        self.construct = SageMakerExecutionRole(
            self.stack,
            "SageMakerRole",
            data_bucket=self.data,
            artifact_bucket=self.artifacts,
            key=self.key,
            repository=self.repository,
            role=role,
        )
        if with_pass_role:
            self.caller = iam.Role(
                self.stack, "Caller", assumed_by=iam.ServicePrincipal("states.amazonaws.com")
            )
            self.construct.grant_pass_role(self.caller)
        add_security_checks(self.app)
        self.template = Template.from_stack(self.stack).to_json()

    def arn(self, construct: Any) -> dict[str, Any]:
        return {"Fn::GetAtt": [self.stack.get_logical_id(construct.node.default_child), "Arn"]}


@pytest.fixture(scope="module")
def fx() -> Fixture:
    return Fixture(with_pass_role=True)


def test_trusts_sagemaker_only(fx: Fixture) -> None:
    roles = {
        k: r
        for k, r in fx.template["Resources"].items()
        if k.startswith("SageMakerRole") and r["Type"] == "AWS::IAM::Role"
    }
    (role,) = roles.values()
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}
    ]
    assert "ManagedPolicyArns" not in role["Properties"]


def test_statements_are_exactly_the_scoped_ones(fx: Fixture) -> None:
    statements = policy_statements(fx.template, "SageMakerRole")
    found = {(frozenset(actions_of(s)), str(s["Resource"]), str(s.get("Condition"))) for s in statements}
    data, artifacts = fx.arn(fx.data), fx.arn(fx.artifacts)
    repo, key = fx.arn(fx.repository), fx.arn(fx.key)

    def join(arn: dict[str, Any], suffix: str) -> str:
        return str({"Fn::Join": ["", [arn, suffix]]})

    log_groups = [
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":logs:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    f":log-group:{suffix}",
                ],
            ]
        }
        for suffix in ("/aws/sagemaker/*Jobs", "/aws/sagemaker/*Jobs:*")
    ]
    expected = {
        (frozenset({"s3:GetObject"}), join(data, "/datasets/*"), "None"),
        (
            frozenset({"s3:ListBucket"}),
            str(data),
            str({"StringLike": {"s3:prefix": ["datasets/", "datasets/*"]}}),
        ),
        (
            frozenset({"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}),
            join(artifacts, "/runs/*"),
            "None",
        ),
        (
            frozenset({"s3:ListBucket"}),
            str(artifacts),
            str({"StringLike": {"s3:prefix": ["runs/", "runs/*"]}}),
        ),
        (
            frozenset(
                {
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                }
            ),
            str(log_groups),
            "None",
        ),
        (
            frozenset({"cloudwatch:PutMetricData"}),
            "*",
            str({"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
        ),
        (
            frozenset({"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}),
            str(repo),
            "None",
        ),
        (frozenset({"ecr:GetAuthorizationToken"}), "*", "None"),
        (frozenset({"kms:Decrypt", "kms:GenerateDataKey"}), str(key), "None"),
        (frozenset({"kms:Encrypt", "kms:DescribeKey"}), str(key), "None"),
        (
            frozenset({"kms:CreateGrant"}),
            str(key),
            str({"Bool": {"kms:GrantIsForAWSResource": "true"}}),
        ),
    }
    assert found == expected


def test_kms_statements_cover_output_and_volume_encryption_on_the_key_only(fx: Fixture) -> None:
    # ml/jobs.py sets KmsKeyId (S3 outputs) and VolumeKmsKeyId (ML storage volumes) to this key.
    statements = policy_statements(fx.template, "SageMakerRole")
    kms_statements = [s for s in statements if any(a.startswith("kms:") for a in actions_of(s))]
    key = fx.arn(fx.key)
    assert all(s["Resource"] == key for s in kms_statements), "KMS permissions must name the stack's key"
    by_sid = {s.get("Sid"): s for s in kms_statements}
    assert by_sid["EncryptJobOutputs"] == {
        "Sid": "EncryptJobOutputs",
        "Effect": "Allow",
        "Action": ["kms:DescribeKey", "kms:Encrypt"],  # CDK sorts the actions
        "Resource": key,
    }
    assert by_sid["AttachEncryptedVolumes"] == {
        "Sid": "AttachEncryptedVolumes",
        "Effect": "Allow",
        "Action": "kms:CreateGrant",
        "Resource": key,
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
    }
    granted = set().union(*(actions_of(s) for s in kms_statements))
    assert granted == {
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:Encrypt",
        "kms:DescribeKey",
        "kms:CreateGrant",
    }
    # CreateGrant appears only in the conditioned statement.
    assert [s for s in kms_statements if "kms:CreateGrant" in actions_of(s)] == [
        by_sid["AttachEncryptedVolumes"]
    ]


def test_each_iam5_suppression_has_one_kind_of_finding_and_its_own_reason(fx: Fixture) -> None:
    policies = {
        k: r
        for k, r in fx.template["Resources"].items()
        if k.startswith("SageMakerRolePolicy") and r["Type"] == "AWS::IAM::Policy"
    }
    (policy,) = policies.values()
    suppressions = policy["Metadata"]["cdk_nag"]["rules_to_suppress"]
    assert {s["id"] for s in suppressions} == {"AwsSolutions-IAM5"}
    findings = [[str(a) for a in s["applies_to"]] for s in suppressions]
    assert len(findings) == 4
    assert any("datasets" in f[0] for f in findings if len(f) == 1)
    assert any("runs" in f[0] for f in findings if len(f) == 1)
    assert ["Resource::*"] in findings
    (log_findings,) = [f for f in findings if len(f) == 2]
    assert all(":log-group:/aws/sagemaker/*Jobs" in f for f in log_findings)
    reasons = [s["reason"] for s in suppressions]
    assert len(set(reasons)) == len(reasons)
    assert "PutMetricData" in next(s["reason"] for s in suppressions if s["applies_to"] == ["Resource::*"])


def test_no_nag_findings_and_no_wildcard_actions(fx: Fixture) -> None:
    assert nag_findings(fx.stack) == []
    assert wildcard_violations(fx.template) == []


def test_grant_pass_role_emits_exactly_the_sagemaker_scoped_statement(fx: Fixture) -> None:
    (statement,) = policy_statements(fx.template, "CallerDefaultPolicy")
    role_id = next(
        k
        for k, r in fx.template["Resources"].items()
        if k.startswith("SageMakerRole") and r["Type"] == "AWS::IAM::Role"
    )
    assert statement == {
        "Action": "iam:PassRole",
        "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [role_id, "Arn"]},
    }
    assert pass_role_violations(fx.template) == []


def test_pass_role_rule_catches_unconditioned_or_broad_pass_role(fx: Fixture) -> None:
    _, stack = new_stack()
    other = iam.Role(stack, "Other", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    caller = iam.Role(stack, "Caller", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
    other.grant_pass_role(caller)
    caller.add_to_policy(iam.PolicyStatement(actions=["iam:PassRole"], resources=["*"]))
    problems = pass_role_violations(Template.from_stack(stack).to_json())
    assert any("without StringEquals iam:PassedToService" in p for p in problems)
    assert any("not on a SageMaker execution role" in p and "'*'" in p for p in problems)


def test_existing_role_gets_the_same_grants_and_passes_cdk_nag() -> None:
    app, stack = new_stack()
    existing = iam.Role.from_role_arn(
        stack, "Existing", "arn:aws:iam::111122223333:role/platform-sagemaker", mutable=True
    )
    storage = PipelineStorage(stack, "Storage")
    construct = SageMakerExecutionRole(
        stack,
        "R",
        data_bucket=storage.data_bucket,
        artifact_bucket=storage.artifact_bucket,
        key=storage.key,
        repository=ecr.Repository(stack, "Repo"),
        role=existing,
    )
    add_security_checks(app)
    assert construct.role_arn == existing.role_arn
    # The imported role's grant policy holds ecr:GetAuthorizationToken on "*", suppressed there.
    assert nag_findings(stack) == []
    template = Template.from_stack(stack).to_json()
    assert not [k for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    assert policies and all(p["Properties"]["Roles"] == ["platform-sagemaker"] for p in policies)
    actions = set().union(
        *(actions_of(s) for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"])
    )
    assert {
        "s3:GetObject",
        "s3:PutObject",
        "ecr:BatchGetImage",
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:CreateGrant",
        "cloudwatch:PutMetricData",
    } <= actions


@pytest.mark.parametrize("prefix", ["datasets", "/datasets/", "data*/"])
def test_bad_prefix_is_rejected(prefix: str) -> None:
    _, stack = new_stack()
    key = kms.Key(stack, "Key")
    bucket = s3.Bucket(stack, "B", encryption=s3.BucketEncryption.KMS, encryption_key=key)
    with pytest.raises(ValueError) as error:
        SageMakerExecutionRole(
            stack,
            "R",
            data_bucket=bucket,
            artifact_bucket=bucket,
            key=key,
            repository=ecr.Repository(stack, "Repo"),
            data_prefix=prefix,
        )
    assert str(error.value) == f"S3 prefix must look like 'name/' (no leading '/', no '*'), got {prefix!r}"


def test_the_resource_helper_finds_the_repository(fx: Fixture) -> None:
    logical_id, _ = the_resource(fx.template, "AWS::ECR::Repository")
    assert fx.arn(fx.repository) == {"Fn::GetAtt": [logical_id, "Arn"]}
