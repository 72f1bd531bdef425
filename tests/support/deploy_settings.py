"""Deploy settings for tests that build job requests without a synthesized stack."""

from __future__ import annotations

from ml import jobs

EXAMPLE_DEPLOY_SETTINGS = jobs.DeploySettings(
    name_prefix="xgb",
    role_arn="arn:aws:iam::123456789012:role/sm",
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:0123abcd",
    data_bucket="data-bucket",
    artifact_bucket="artifact-bucket",
    kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k",
)
