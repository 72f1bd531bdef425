from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import App, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from infra.image_build import ContainerImageBuild, context_exclude_patterns
from infra.nag import add_security_checks
from tests.infra.helpers import (
    actions_of,
    make_build_context,
    nag_findings,
    new_stack,
    policy_statements,
    resources_of_type,
    the_resource,
)


class Built:
    def __init__(self, context: Path, **kwargs: object) -> None:
        self.app, self.stack = new_stack()
        self.key = kms.Key(self.stack, "Key", enable_key_rotation=True)
        self.build = ContainerImageBuild(
            self.stack, "ImageBuild", context_directory=context, encryption_key=self.key, **kwargs
        )
        add_security_checks(self.app)
        self.template = Template.from_stack(self.stack).to_json()

    def ref(self, construct: object) -> str:
        return self.stack.get_logical_id(construct.node.default_child)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    context = make_build_context(tmp_path_factory.mktemp("ctx") / "context")
    return Built(context, images_to_keep=4, log_retention=logs.RetentionDays.TWO_WEEKS)


def test_no_cdk_nag_findings(built: Built) -> None:
    assert nag_findings(built.stack) == []


def test_repository_scans_is_immutable_encrypted_and_keeps_last_images(built: Built) -> None:
    _, repo = the_resource(built.template, "AWS::ECR::Repository")
    props = repo["Properties"]
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["EncryptionConfiguration"] == {
        "EncryptionType": "KMS",
        "KmsKey": {"Fn::GetAtt": [built.ref(built.key), "Arn"]},
    }
    policy = props["LifecyclePolicy"]["LifecyclePolicyText"]
    assert '"countType":"imageCountMoreThan","countNumber":4' in policy
    assert repo["DeletionPolicy"] == "Retain"


def test_project_builds_with_docker_from_the_asset(built: Built) -> None:
    _, project = the_resource(built.template, "AWS::CodeBuild::Project")
    props = project["Properties"]
    env = props["Environment"]
    assert env["PrivilegedMode"] is True
    assert env["Image"] == "aws/codebuild/standard:7.0"
    assert props["Cache"] == {"Type": "LOCAL", "Modes": ["LOCAL_DOCKER_LAYER_CACHE"]}
    assert props["Source"]["Type"] == "S3"
    assert props["Source"]["BuildSpec"] == "container/buildspec.yml"
    location = props["Source"]["Location"]["Fn::Join"][1]
    assert location[0] == {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"}
    assert location[1] == f"/{built.build.image_tag}.zip"
    assert props["EncryptionKey"] == {"Fn::GetAtt": [built.ref(built.key), "Arn"]}
    variables = {v["Name"]: v for v in env["EnvironmentVariables"]}
    assert set(variables) == {"REPOSITORY_URI", "IMAGE_TAG"}
    assert variables["IMAGE_TAG"]["Value"] == built.build.image_tag
    assert variables["REPOSITORY_URI"]["Type"] == "PLAINTEXT"
    log_config = props["LogsConfig"]["CloudWatchLogs"]
    assert log_config == {"GroupName": {"Ref": built.ref(built.build.log_group)}, "Status": "ENABLED"}


def test_image_tag_is_the_asset_hash_and_uri_uses_it(built: Built) -> None:
    assert built.build.image_tag == built.build.asset.asset_hash
    assert len(built.build.image_tag) == 64
    resolved = built.stack.resolve(built.build.image_uri)
    assert resolved["Fn::Join"][1][-1] == f":{built.build.image_tag}"


def test_log_group_has_retention_and_kms_and_key_policy_allows_only_it(built: Built) -> None:
    _, group = the_resource(built.template, "AWS::Logs::LogGroup")
    props = group["Properties"]
    assert props["RetentionInDays"] == 14
    assert props["KmsKeyId"] == {"Fn::GetAtt": [built.ref(built.key), "Arn"]}
    name = props["LogGroupName"]
    assert name.startswith("/aws/codebuild/")
    _, key = the_resource(built.template, "AWS::KMS::Key")
    (logs_statement,) = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"] if "Service" in s.get("Principal", {})
    ]
    condition = logs_statement["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    assert condition["Fn::Join"][1][-1] == f":log-group:{name}"
    assert all("*" not in action for action in logs_statement["Action"])


def test_codebuild_role_has_exactly_the_scoped_statements(built: Built) -> None:
    statements = policy_statements(built.template, "ImageBuildRole")
    repo = built.ref(built.build.repository)
    by_resource = {str(s["Resource"]): s for s in statements}
    assert len(statements) == 5
    assert actions_of(by_resource[str({"Fn::GetAtt": [repo, "Arn"]})]) == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchDeleteImage",
        "ecr:BatchGetImage",
        "ecr:DescribeImages",
        "ecr:GetDownloadUrlForLayer",
        "ecr:CompleteLayerUpload",
        "ecr:InitiateLayerUpload",
        "ecr:PutImage",
        "ecr:UploadLayerPart",
    }
    assert actions_of(by_resource["*"]) == {"ecr:GetAuthorizationToken"}
    assert actions_of(by_resource[str({"Fn::GetAtt": [built.ref(built.build.log_group), "Arn"]})]) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert actions_of(by_resource[str({"Fn::GetAtt": [built.ref(built.key), "Arn"]})]) == {
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    }
    (s3_statement,) = [s for s in statements if actions_of(s) == {"s3:GetObject"}]
    object_arn = s3_statement["Resource"]["Fn::Join"][1]
    assert object_arn[-1] == f"/{built.build.image_tag}.zip"
    assert any("cdk-hnb659fds-assets" in str(part) for part in object_arn)
    for statement in statements:
        assert not any("*" in action for action in actions_of(statement)), statement
        assert "codebuild:" not in str(statement["Action"]), "no report-group permissions"
        assert "/aws/codebuild/" not in str(statement["Resource"]), "no default log-group wildcard"
        assert "iam:PassRole" not in actions_of(statement)


def test_asset_contains_only_the_build_context(built: Built) -> None:
    assembly = built.app.synth()
    staged = Path(assembly.directory) / built.build.asset.asset_path
    files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert files == [
        "container/Dockerfile",
        "container/buildspec.yml",
        "ml/__init__.py",
        "pyproject.toml",
        "requirements-ml.txt",
    ]


def test_tag_changes_with_the_context_and_ignores_excluded_files(tmp_path: Path) -> None:
    context = make_build_context(tmp_path / "ctx")

    def tag() -> str:
        _, stack = new_stack()
        key = kms.Key(stack, "Key")
        return ContainerImageBuild(stack, "B", context_directory=context, encryption_key=key).image_tag

    first = tag()
    (context / "README.md").write_text("changed, but outside the image\n")
    (context / "ml" / "__pycache__" / "y.pyc").write_bytes(b"\1")
    assert tag() == first
    (context / "ml" / "__init__.py").write_text('"""changed"""\n')
    assert tag() != first


def test_existing_repository_is_used(build_context: Path) -> None:
    _, stack = new_stack()
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    existing = ecr.Repository.from_repository_name(stack, "Existing", "platform/images")
    build = ContainerImageBuild(
        stack, "B", context_directory=build_context, encryption_key=key, repository=existing
    )
    assert build.repository is existing
    template = Template.from_stack(stack).to_json()
    assert not resources_of_type(template, "AWS::ECR::Repository")
    (push,) = [s for s in policy_statements(template, "BRole") if "ecr:PutImage" in actions_of(s)]
    assert "repository/platform/images" in str(push["Resource"])


def test_destroy_removes_repository_and_log_group(build_context: Path) -> None:
    _, stack = new_stack()
    key = kms.Key(stack, "Key")
    ContainerImageBuild(
        stack, "B", context_directory=build_context, encryption_key=key, removal_policy=RemovalPolicy.DESTROY
    )
    template = Template.from_stack(stack).to_json()
    _, repo = the_resource(template, "AWS::ECR::Repository")
    assert repo["DeletionPolicy"] == "Delete"
    assert repo["Properties"]["EmptyOnDelete"] is True
    assert the_resource(template, "AWS::Logs::LogGroup")[1]["DeletionPolicy"] == "Delete"


@pytest.mark.parametrize("images_to_keep", [0, -1])
def test_images_to_keep_below_one_is_rejected(build_context: Path, images_to_keep: int) -> None:
    _, stack = new_stack()
    with pytest.raises(ValueError) as error:
        ContainerImageBuild(
            stack,
            "B",
            context_directory=build_context,
            encryption_key=kms.Key(stack, "K"),
            images_to_keep=images_to_keep,
        )
    assert (
        str(error.value)
        == f"ContainerImageBuild images_to_keep must be an integer >= 1, got {images_to_keep}"
    )


def test_missing_buildspec_is_rejected(build_context: Path) -> None:
    (build_context / "container" / "buildspec.yml").unlink()
    _, stack = new_stack()
    with pytest.raises(
        ValueError,
        match=r"buildspec 'container/buildspec.yml' must be a file path relative to the build context",
    ):
        ContainerImageBuild(stack, "B", context_directory=build_context, encryption_key=kms.Key(stack, "K"))


def test_buildspec_outside_the_included_entries_is_rejected(build_context: Path) -> None:
    (build_context / "buildspec.yml").write_text("version: 0.2\n")
    _, stack = new_stack()
    with pytest.raises(ValueError, match=r"buildspec 'buildspec.yml' is not inside an included entry"):
        ContainerImageBuild(
            stack,
            "B",
            context_directory=build_context,
            encryption_key=kms.Key(stack, "K"),
            buildspec="buildspec.yml",
        )


@pytest.mark.parametrize(
    ("include", "message"),
    [
        (("container", "missing"), "include entry 'missing' does not exist"),
        (("container", "ml/sub"), "must be top-level file or directory names"),
        (("container", ".venv"), "must be top-level file or directory names"),
        ((), "include must name at least one entry"),
    ],
)
def test_bad_include_is_rejected(build_context: Path, include: tuple[str, ...], message: str) -> None:
    _, stack = new_stack()
    with pytest.raises(ValueError, match=message):
        ContainerImageBuild(
            stack, "B", context_directory=build_context, encryption_key=kms.Key(stack, "K"), include=include
        )


def test_missing_context_directory_is_rejected(tmp_path: Path) -> None:
    _, stack = new_stack()
    with pytest.raises(ValueError, match=r"context_directory .* is not a directory"):
        ContainerImageBuild(
            stack, "B", context_directory=tmp_path / "nope", encryption_key=kms.Key(stack, "K")
        )


def test_exclude_patterns_keep_only_the_entries() -> None:
    assert context_exclude_patterns(["container", "ml"])[:3] == ["/*", "!/container", "!/ml"]
    assert "__pycache__/" in context_exclude_patterns(["ml"])


def test_construct_works_in_a_plain_app_without_project_flags(build_context: Path) -> None:
    # Reusers may not copy cdk.json's feature flags: the construct must still synthesize.
    app = App()
    from aws_cdk import Stack

    stack = Stack(app, "Plain")
    ContainerImageBuild(stack, "B", context_directory=build_context, encryption_key=kms.Key(stack, "K"))
    assert resources_of_type(Template.from_stack(stack).to_json(), "AWS::CodeBuild::Project")


def test_make_build_context_shape(tmp_path: Path) -> None:
    root = make_build_context(tmp_path / "c")
    assert (root / "container" / "buildspec.yml").is_file()


def test_project_waits_for_the_role_policy_but_not_redundantly_for_the_role(built: Built) -> None:
    # The role comes in through without_policy_updates(): only the explicit DependsOn on its policy
    # keeps a first build from running before its permissions exist. The role is ordered by the
    # ServiceRole GetAtt already; a DependsOn on it is what cfn-lint reports as W3005.
    project_id, project = the_resource(built.template, "AWS::CodeBuild::Project")
    (policy_id,) = resources_of_type(built.template, "AWS::IAM::Policy")
    role_id = built.ref(built.build.role)
    assert project["DependsOn"] == [policy_id]
    assert project["Properties"]["ServiceRole"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert built.template["Resources"][policy_id]["Properties"]["Roles"] == [{"Ref": role_id}]
    assert project_id not in str(built.template["Resources"][policy_id])
