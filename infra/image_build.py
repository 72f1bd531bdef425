"""The container image: an ECR repository and the CodeBuild project that builds and pushes it.

The build context (by default ``container/``, ``ml/``, ``requirements-ml.txt`` and ``pyproject.toml``
of the project root) is uploaded as a CDK S3 asset at deploy time; its content hash is the image tag,
so a changed context means a new tag and an unchanged one reuses the image already in ECR.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Duration, IgnoreMode, RemovalPolicy
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct, IDependable

from infra.nag import suppress
from infra.policies import encrypted_log_group, grant_key_use, unique_log_group_name

DEFAULT_CONTEXT_ENTRIES: tuple[str, ...] = ("container", "ml", "requirements-ml.txt", "pyproject.toml")
DEFAULT_BUILDSPEC = "container/buildspec.yml"
# Never part of an image: byte code and tool caches inside the included directories.
ALWAYS_EXCLUDED: tuple[str, ...] = (
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
)

DEFAULT_BUILD_TIMEOUT = Duration.minutes(30)

# The project encryption key protects build outputs CodeBuild stores (cache, logs it uploads).
_CODEBUILD_KMS_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")


def context_exclude_patterns(include: Sequence[str]) -> list[str]:
    """.gitignore-style patterns that keep only the top-level entries ``include`` of the context.

    Git semantics (``IgnoreMode.GIT``) rather than CDK's default glob mode because ``/*`` there also
    matches hidden entries (``.venv``, ``.git``) and anchors at the root: ignore every top-level entry,
    re-include the wanted ones, then drop byte code and tool caches below them.
    """
    return ["/*", *(f"!/{entry}" for entry in include), *ALWAYS_EXCLUDED]


class ContainerImageBuild(Construct):
    """An ECR repository and a CodeBuild project that builds the image from a directory of this repo.

    Inputs (keyword-only):

    - ``context_directory``: the build context root; it must contain ``buildspec`` (relative path,
      default ``container/buildspec.yml``) and every name in ``include``
      (default ``container, ml, requirements-ml.txt, pyproject.toml``; top-level names only);
    - ``encryption_key``: KMS key for the repository, the CodeBuild project and its log group
      (CloudWatch Logs gets a key-policy statement for this one log group; for an imported key its
      owner must add that statement);
    - ``repository``: an existing repository to push to (default: one is created with scan on push,
      immutable tags, KMS encryption and a lifecycle rule keeping the last ``images_to_keep``=10);
    - ``log_retention`` (default one month), ``removal_policy`` (default RETAIN) for the created
      repository and log group, ``compute_type`` (default SMALL), ``timeout`` (default 30 minutes).

    Attributes: ``repository``, ``project``, ``role`` (the CodeBuild service role), ``log_group``,
    ``asset`` (the uploaded build context), ``image_tag`` (the asset hash, known at synth time) and
    ``image_uri`` (``<repository uri>:<image tag>``, a token string).

    The build receives ``REPOSITORY_URI`` and ``IMAGE_TAG`` as environment variables.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        context_directory: str | Path,
        encryption_key: kms.IKey,
        include: Sequence[str] = DEFAULT_CONTEXT_ENTRIES,
        buildspec: str = DEFAULT_BUILDSPEC,
        repository: ecr.IRepository | None = None,
        images_to_keep: int = 10,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        compute_type: codebuild.ComputeType = codebuild.ComputeType.SMALL,
        timeout: Duration = DEFAULT_BUILD_TIMEOUT,
    ) -> None:
        super().__init__(scope, construct_id)
        root = Path(context_directory).resolve()
        _validate_context(root, include, buildspec)
        if isinstance(images_to_keep, bool) or not isinstance(images_to_keep, int) or images_to_keep < 1:
            raise ValueError(
                f"ContainerImageBuild images_to_keep must be an integer >= 1, got {images_to_keep!r}"
            )

        self.asset = s3_assets.Asset(
            self,
            "BuildContext",
            path=str(root),
            exclude=context_exclude_patterns(include),
            ignore_mode=IgnoreMode.GIT,
        )
        # The content hash of the uploaded context: a plain string at synth time, so the tag is fixed
        # in the template and changes exactly when the context does.
        self.image_tag: str = self.asset.asset_hash

        self.repository: ecr.IRepository = repository or ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=encryption_key,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description=f"keep the last {images_to_keep} images",
                    max_image_count=images_to_keep,
                    tag_status=ecr.TagStatus.ANY,
                )
            ],
            removal_policy=removal_policy,
            empty_on_delete=removal_policy == RemovalPolicy.DESTROY,
        )
        self.image_uri: str = self.repository.repository_uri_for_tag(self.image_tag)

        log_group_name = unique_log_group_name(self, "/aws/codebuild/")
        self.log_group = encrypted_log_group(
            self,
            "Logs",
            log_group_name=log_group_name,
            key=encryption_key,
            retention=log_retention,
            removal_policy=removal_policy,
        )

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
            description="Builds the pipeline image from the uploaded build context and pushes it to ECR",
        )
        self.project = codebuild.Project(
            self,
            "Project",
            description="Builds the XGBoost pipeline container image and pushes it to ECR",
            source=codebuild.Source.s3(bucket=self.asset.bucket, path=self.asset.s3_object_key),
            build_spec=codebuild.BuildSpec.from_source_filename(buildspec),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=compute_type,
                # Docker-in-Docker: `docker build` needs the daemon, which needs privileged mode.
                privileged=True,
            ),
            environment_variables={
                "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=self.repository.repository_uri),
                "IMAGE_TAG": codebuild.BuildEnvironmentVariable(value=self.image_tag),
            },
            cache=codebuild.Cache.local(codebuild.LocalCacheMode.DOCKER_LAYER),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self.log_group)
            ),
            encryption_key=encryption_key,
            timeout=timeout,
            # The build writes no test reports: no report-group permissions.
            grant_report_group_permissions=False,
            # CodeBuild's own grants would add wildcard actions (s3:GetObject*, s3:List*,
            # kms:GenerateDataKey*) and /aws/codebuild/<project>:* log permissions for a log group we
            # do not use; the role gets exactly the statements below instead.
            role=self.role.without_policy_updates(),
        )
        # The project gets the role through `without_policy_updates()`, so CDK adds no ordering on
        # the role's policy: without it a build started right after the deploy (or by the pipeline's
        # first run) could run before its permissions exist. The role itself needs no DependsOn: the
        # ServiceRole GetAtt already orders it (cfn-lint W3005).
        for dependable in self._grant_build_permissions(encryption_key):
            self.project.node.add_dependency(dependable)

    def _grant_build_permissions(self, encryption_key: kms.IKey) -> list[IDependable]:
        """Attach the build's statements to the role; returns what holds them (the role's policy)."""
        # ECR push/pull on this repository, plus ecr:GetAuthorizationToken on "*" (docker login):
        # that action has no resource-level permissions, "*" is the only resource it accepts.
        grants = [self.repository.grant_pull_push(self.role)]
        # The buildspec skips the build when IMAGE_TAG is already in the (immutable) repository and
        # seeds --cache-from with the newest image: both look up images with DescribeImages.
        grants.append(self.repository.grant(self.role, "ecr:DescribeImages"))
        # A forced rebuild (FORCE_REBUILD=true, the run input's rebuild_image) deletes the existing
        # tag before it pushes the new image under it: tags are immutable, so that is the only way.
        grants.append(self.repository.grant(self.role, "ecr:BatchDeleteImage"))
        grants.append(self.log_group.grant_write(self.role))
        # Exactly the uploaded context object (asset.grant_read would add s3:GetObject*, s3:List*).
        added = self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[self.asset.bucket.arn_for_objects(self.asset.s3_object_key)],
            )
        )
        grants.append(grant_key_use(encryption_key, self.role, _CODEBUILD_KMS_ACTIONS))
        suppress(
            self.role,
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken has no resource-level permissions: IAM only accepts '*'; every "
            "other ECR action of this role is scoped to the one repository.",
            applies_to=["Resource::*"],
            apply_to_children=True,
        )
        # A Grant depends on the policy that holds its statements (not on the role).
        dependables: list[IDependable] = list(grants)
        if added.policy_dependable is not None:
            dependables.append(added.policy_dependable)
        return dependables


def _validate_context(root: Path, include: Sequence[str], buildspec: str) -> None:
    if not root.is_dir():
        raise ValueError(f"ContainerImageBuild context_directory {str(root)!r} is not a directory")
    if not include:
        raise ValueError("ContainerImageBuild include must name at least one entry of the build context")
    for entry in include:
        if not entry or "/" in entry or "*" in entry or entry.startswith(("!", ".")):
            raise ValueError(
                f"ContainerImageBuild include entries must be top-level file or directory names of the "
                f"build context, got {entry!r}"
            )
        if not (root / entry).exists():
            raise ValueError(
                f"ContainerImageBuild include entry {entry!r} does not exist in {str(root)!r}; create it "
                f"or remove it from include="
            )
    if Path(buildspec).is_absolute() or not (root / buildspec).is_file():
        raise ValueError(
            f"ContainerImageBuild buildspec {buildspec!r} must be a file path relative to the build "
            f"context {str(root)!r}, inside the uploaded entries; it was not found there"
        )
    if Path(buildspec).parts[0] not in include:
        raise ValueError(
            f"ContainerImageBuild buildspec {buildspec!r} is not inside an included entry ({', '.join(include)})"
        )
