from __future__ import annotations

import pytest
from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from infra.nag import add_security_checks
from infra.storage import PipelineStorage
from tests.infra.helpers import nag_findings, new_stack, resources_of_type, template_of


@pytest.fixture(scope="module")
def storage_template() -> dict:
    app, stack = new_stack()
    PipelineStorage(stack, "Storage", run_retention_days=14)
    add_security_checks(app)
    assert nag_findings(stack) == []
    return template_of(stack)


def buckets(template: dict) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in resources_of_type(template, "AWS::S3::Bucket").items()}


def by_prefix(template: dict, prefix: str) -> dict:
    (props,) = [p for k, p in buckets(template).items() if k.startswith(prefix)]
    return props


def test_key_is_customer_managed_with_rotation(storage_template: dict) -> None:
    keys = resources_of_type(storage_template, "AWS::KMS::Key")
    assert len(keys) == 1
    (key,) = keys.values()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("prefix", ["StorageDataBucket", "StorageArtifactBucket"])
def test_data_and_artifact_buckets_are_kms_encrypted_private_versioned_logged(
    storage_template: dict, prefix: str
) -> None:
    props = by_prefix(storage_template, prefix)
    (key_id,) = resources_of_type(storage_template, "AWS::KMS::Key")
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    log_bucket_id = next(k for k in buckets(storage_template) if k.startswith("StorageAccessLogBucket"))
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_bucket_id}


def test_access_log_bucket_is_sse_s3_because_log_delivery_cannot_use_kms(storage_template: dict) -> None:
    props = by_prefix(storage_template, "StorageAccessLogBucket")
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert props["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert "LoggingConfiguration" not in props


def test_lifecycle_rules(storage_template: dict) -> None:
    artifact_rules = {
        r["Id"]: r
        for r in by_prefix(storage_template, "StorageArtifactBucket")["LifecycleConfiguration"]["Rules"]
    }
    assert artifact_rules["expire-run-outputs"] == {
        "Id": "expire-run-outputs",
        "Prefix": "runs/",
        "ExpirationInDays": 14,
        "Status": "Enabled",
    }
    assert artifact_rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30
    }
    assert artifact_rules["expire-noncurrent-versions"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    assert artifact_rules["remove-expired-delete-markers"]["ExpiredObjectDeleteMarker"] is True
    data_rules = {
        r["Id"] for r in by_prefix(storage_template, "StorageDataBucket")["LifecycleConfiguration"]["Rules"]
    }
    # The data set itself never expires.
    assert data_rules == {"expire-noncurrent-versions", "remove-expired-delete-markers"}


def test_every_bucket_denies_plain_http(storage_template: dict) -> None:
    policies = resources_of_type(storage_template, "AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )


def test_log_delivery_may_write_only_from_the_two_buckets(storage_template: dict) -> None:
    (policy,) = [
        p for k, p in resources_of_type(storage_template, "AWS::S3::BucketPolicy").items() if "AccessLog" in k
    ]
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert {s["Principal"]["Service"] for s in allows} == {"logging.s3.amazonaws.com"}
    assert {s["Action"] for s in allows} == {"s3:PutObject"}
    sources = {s["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::GetAtt"][0] for s in allows}
    assert {src.rstrip("0123456789ABCDEF") for src in sources} == {
        "StorageDataBucket",
        "StorageArtifactBucket",
    }


def test_retain_keeps_objects_and_destroy_empties_buckets() -> None:
    _, retain_stack = new_stack()
    PipelineStorage(retain_stack, "Storage")
    retain = template_of(retain_stack)
    assert {r["DeletionPolicy"] for r in resources_of_type(retain, "AWS::S3::Bucket").values()} == {"Retain"}
    assert not resources_of_type(retain, "Custom::S3AutoDeleteObjects")

    _, destroy_stack = new_stack()
    PipelineStorage(destroy_stack, "Storage", removal_policy=RemovalPolicy.DESTROY)
    destroy = template_of(destroy_stack)
    assert {r["DeletionPolicy"] for r in resources_of_type(destroy, "AWS::S3::Bucket").values()} == {"Delete"}
    assert len(resources_of_type(destroy, "Custom::S3AutoDeleteObjects")) == 3


def test_existing_key_is_used_and_no_key_created() -> None:
    _, stack = new_stack()
    key = kms.Key.from_key_arn(
        stack, "Existing", "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    storage = PipelineStorage(stack, "Storage", key=key)
    assert storage.key is key
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::KMS::Key", 0)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {"ServerSideEncryptionByDefault": Match.object_like({"KMSMasterKeyID": key.key_arn})}
                    )
                ]
            }
        },
    )


def test_existing_encrypted_buckets_are_used_without_creating_buckets() -> None:
    _, stack = new_stack()
    key = kms.Key.from_key_arn(
        stack, "Key", "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    data = s3.Bucket.from_bucket_attributes(stack, "Data", bucket_name="team-data", encryption_key=key)
    artifacts = s3.Bucket.from_bucket_attributes(
        stack, "Artifacts", bucket_name="team-artifacts", encryption_key=key
    )
    storage = PipelineStorage(stack, "Storage", data_bucket=data, artifact_bucket=artifacts)
    assert storage.data_bucket is data and storage.artifact_bucket is artifacts
    assert storage.key.key_arn == key.key_arn
    assert storage.access_log_bucket is None
    # Nothing created: the construct has no children at all.
    assert storage.node.children == []


def test_existing_bucket_without_kms_key_is_rejected() -> None:
    _, stack = new_stack()
    plain = s3.Bucket.from_bucket_name(stack, "Plain", "team-data")
    with pytest.raises(
        ValueError, match=r"PipelineStorage data_bucket must be encrypted with a customer KMS key"
    ):
        PipelineStorage(stack, "Storage", data_bucket=plain)


def test_existing_bucket_with_other_key_is_rejected() -> None:
    _, stack = new_stack()
    bucket_key = kms.Key(stack, "BucketKey", enable_key_rotation=True)
    other_key = kms.Key(stack, "OtherKey", enable_key_rotation=True)
    bucket = s3.Bucket(stack, "Bucket", encryption=s3.BucketEncryption.KMS, encryption_key=bucket_key)
    with pytest.raises(ValueError, match=r"artifact_bucket is encrypted with a different KMS key"):
        PipelineStorage(stack, "Storage", artifact_bucket=bucket, key=other_key)


@pytest.mark.parametrize(
    "name", ["run_retention_days", "noncurrent_version_days", "access_log_retention_days"]
)
@pytest.mark.parametrize("value", [0, -3])
def test_invalid_retention_is_rejected(name: str, value: int) -> None:
    _, stack = new_stack()
    with pytest.raises(ValueError) as error:
        PipelineStorage(stack, "Storage", **{name: value})
    assert str(error.value) == f"PipelineStorage {name} must be a whole number of days >= 1, got {value}"


def test_snapshot_removal_policy_is_rejected() -> None:
    _, stack = new_stack()
    with pytest.raises(
        ValueError, match=r"removal_policy must be RemovalPolicy\.RETAIN or RemovalPolicy\.DESTROY"
    ):
        PipelineStorage(stack, "Storage", removal_policy=RemovalPolicy.SNAPSHOT)


def test_key_layout_helpers() -> None:
    _, stack = new_stack()
    storage = PipelineStorage(stack, "Storage")
    assert PipelineStorage.dataset_prefix() == "datasets/default/"
    assert PipelineStorage.dataset_prefix("fraud") == "datasets/fraud/"
    assert PipelineStorage.run_prefix("run-1") == "runs/run-1/"
    resolved = stack.resolve(storage.dataset_uri())
    assert resolved == {
        "Fn::Join": [
            "",
            [
                "s3://",
                {"Ref": stack.get_logical_id(storage.data_bucket.node.default_child)},
                "/datasets/default/",
            ],
        ]
    }
    assert stack.resolve(storage.runs_uri)["Fn::Join"][1][-1] == "/runs/"
    with pytest.raises(ValueError, match="data set name must be non-empty without '/'"):
        PipelineStorage.dataset_prefix("a/b")
    with pytest.raises(ValueError, match="run id must be non-empty without '/'"):
        PipelineStorage.run_prefix("")
