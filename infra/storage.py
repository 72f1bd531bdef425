"""Storage of the pipeline: a data bucket, an artefact bucket, their KMS key and an access-log bucket.

Key layout (docs/architecture.md): the data set lives under ``datasets/<name>/`` of the data bucket;
every run writes under ``runs/<run id>/`` of the artefact bucket.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

DATASETS_PREFIX = "datasets/"
RUNS_PREFIX = "runs/"
DEFAULT_DATASET = "default"


def _positive_days(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"PipelineStorage {name} must be a whole number of days >= 1, got {value!r}")
    return value


class PipelineStorage(Construct):
    """Encrypted, versioned, access-logged S3 storage for the data set and the run artefacts.

    Created resources (attributes):

    - ``key``: customer KMS key with yearly rotation, encrypting both buckets (S3 bucket keys on);
    - ``data_bucket``: raw data sets under ``datasets/``;
    - ``artifact_bucket``: run outputs under ``runs/``; objects there expire after
      ``run_retention_days``;
    - ``access_log_bucket``: S3 server access logs of the two buckets (SSE-S3: log delivery cannot
      write to SSE-KMS buckets), or ``None`` when both buckets were brought in.

    Every bucket created here blocks public access, refuses non-TLS requests (and TLS < 1.2), is
    versioned (noncurrent versions expire after ``noncurrent_version_days``), aborts incomplete
    multipart uploads after 7 days and owns all its objects (no ACLs).

    Bring your own: pass ``key`` to use an existing key for the buckets created here; pass
    ``data_bucket`` / ``artifact_bucket`` to use existing buckets (they must be encrypted with a
    customer KMS key known to CDK, i.e. a ``Bucket`` with ``encryption_key`` or one imported with
    ``Bucket.from_bucket_attributes(..., encryption_key=...)``; lifecycle rules and access logging are
    then left to their owner); pass ``access_log_bucket`` to log into an existing bucket (its owner
    must allow ``logging.s3.amazonaws.com`` to write).

    Defaults: ``removal_policy=RETAIN`` (``DESTROY`` also empties the created buckets on stack
    deletion), ``run_retention_days=90``, ``noncurrent_version_days=30``,
    ``access_log_retention_days=365``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        run_retention_days: int = 90,
        noncurrent_version_days: int = 30,
        access_log_retention_days: int = 365,
        key: kms.IKey | None = None,
        data_bucket: s3.IBucket | None = None,
        artifact_bucket: s3.IBucket | None = None,
        access_log_bucket: s3.IBucket | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        _positive_days("run_retention_days", run_retention_days)
        _positive_days("noncurrent_version_days", noncurrent_version_days)
        _positive_days("access_log_retention_days", access_log_retention_days)
        if removal_policy not in (RemovalPolicy.RETAIN, RemovalPolicy.DESTROY):
            raise ValueError(
                f"PipelineStorage removal_policy must be RemovalPolicy.RETAIN or RemovalPolicy.DESTROY, "
                f"got {removal_policy}"
            )
        self._destroy = removal_policy == RemovalPolicy.DESTROY
        self._removal_policy = removal_policy

        for name, bucket in (("data_bucket", data_bucket), ("artifact_bucket", artifact_bucket)):
            if bucket is not None:
                key = _check_existing_bucket_key(name, bucket, key)

        self.key: kms.IKey = key if key is not None else self._create_key()

        self.access_log_bucket: s3.IBucket | None = access_log_bucket
        if self.access_log_bucket is None and (data_bucket is None or artifact_bucket is None):
            self.access_log_bucket = self._create_access_log_bucket(access_log_retention_days)

        noncurrent = s3.LifecycleRule(
            id="expire-noncurrent-versions",
            noncurrent_version_expiration=Duration.days(noncurrent_version_days),
            abort_incomplete_multipart_upload_after=Duration.days(7),
        )
        delete_markers = s3.LifecycleRule(
            id="remove-expired-delete-markers", expired_object_delete_marker=True
        )

        self.data_bucket: s3.IBucket = data_bucket or self._create_bucket(
            "DataBucket", "data-bucket/", [noncurrent, delete_markers]
        )
        self.artifact_bucket: s3.IBucket = artifact_bucket or self._create_bucket(
            "ArtifactBucket",
            "artifact-bucket/",
            [
                # Run outputs are reproducible from the data set and the code: keep them for a while only.
                s3.LifecycleRule(
                    id="expire-run-outputs", prefix=RUNS_PREFIX, expiration=Duration.days(run_retention_days)
                ),
                noncurrent,
                delete_markers,
            ],
        )

    # ---- key layout -------------------------------------------------------------------------
    @staticmethod
    def dataset_prefix(name: str = DEFAULT_DATASET) -> str:
        """Key prefix of a data set in the data bucket: ``datasets/<name>/``."""
        if not name or "/" in name:
            raise ValueError(f"data set name must be non-empty without '/', got {name!r}")
        return f"{DATASETS_PREFIX}{name}/"

    @staticmethod
    def run_prefix(run_id: str) -> str:
        """Key prefix of one run in the artefact bucket: ``runs/<run id>/``."""
        if not run_id or "/" in run_id:
            raise ValueError(f"run id must be non-empty without '/', got {run_id!r}")
        return f"{RUNS_PREFIX}{run_id}/"

    def dataset_uri(self, name: str = DEFAULT_DATASET) -> str:
        """``s3://<data bucket>/datasets/<name>/`` (a CDK token string inside a stack)."""
        return f"s3://{self.data_bucket.bucket_name}/{self.dataset_prefix(name)}"

    @property
    def runs_uri(self) -> str:
        """``s3://<artefact bucket>/runs/``: every run id is a sub-prefix of it."""
        return f"s3://{self.artifact_bucket.bucket_name}/{RUNS_PREFIX}"

    # ---- resources --------------------------------------------------------------------------
    def _create_key(self) -> kms.Key:
        return kms.Key(
            self,
            "Key",
            description="Encrypts the data set, run artefacts, image build and logs of the XGBoost pipeline",
            enable_key_rotation=True,
            removal_policy=self._removal_policy,
        )

    def _create_access_log_bucket(self, retention_days: int) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            # S3 server access log delivery supports only SSE-S3 on the target bucket, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=self._removal_policy,
            auto_delete_objects=self._destroy,
        )
        return bucket

    def _create_bucket(self, construct_id: str, log_prefix: str, rules: list[s3.LifecycleRule]) -> s3.Bucket:
        return s3.Bucket(
            self,
            construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # One data key per bucket instead of one KMS call per object.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=rules,
            removal_policy=self._removal_policy,
            auto_delete_objects=self._destroy,
        )


def _check_existing_bucket_key(name: str, bucket: s3.IBucket, key: kms.IKey | None) -> kms.IKey:
    """The key of an existing bucket, checked against ``key`` when both are given."""
    bucket_key = bucket.encryption_key
    if bucket_key is None:
        raise ValueError(
            f"PipelineStorage {name} must be encrypted with a customer KMS key that CDK knows: create it "
            f"with encryption=s3.BucketEncryption.KMS and encryption_key=..., or import it with "
            f"s3.Bucket.from_bucket_attributes(..., encryption_key=kms.Key.from_key_arn(...))."
        )
    if key is not None and bucket_key is not key and bucket_key.key_arn != key.key_arn:
        raise ValueError(
            f"PipelineStorage {name} is encrypted with a different KMS key than the one passed as key=; "
            f"pass key=<that bucket's key> (both buckets and the pipeline share one key)."
        )
    return bucket_key
