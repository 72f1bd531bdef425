"""The Ensure-image branch against moto's ECR and CodeBuild with plain boto3 calls.

The calls are the state machine's own: the resolved `FindImage` and `BuildImage` states'
Parameters, sent with boto3 as Step Functions would send them, and the branch taken the way
the states' Choice and Catch say. The CodeBuild project is the template's (source, image,
environment variables), so this checks that the build produces the tag the lookup asks for.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.cfn_resolve import api_case, resolver, resources_of_type
from tests.support.sfn_harness import REGION

MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
)


def ensure_image(states: dict[str, Any], run_config: dict[str, Any], ecr: Any, codebuild: Any) -> str | None:
    """Follow RebuildRequested -> FindImage -(Catch)-> BuildImage with boto3; returns the started
    build id, or None when the image exists and the branch skips the build."""
    choice = states["RebuildRequested"]
    (rule,) = choice["Choices"]
    assert rule["Variable"] == "$.run.config.rebuild_image"
    nxt = rule["Next"] if run_config["rebuild_image"] is rule["BooleanEquals"] else choice["Default"]
    if nxt == "FindImage":
        find = states["FindImage"]
        try:
            ecr.describe_images(**api_case(find["Parameters"]))
            return None
        except ecr.exceptions.ImageNotFoundException:
            # Step Functions names this error Ecr.ImageNotFoundException for the Catch.
            (catcher,) = [c for c in find["Catch"] if "Ecr.ImageNotFoundException" in c["ErrorEquals"]]
            nxt = catcher["Next"]
    assert nxt == "BuildImage"
    parameters = dict(states["BuildImage"]["Parameters"])
    parameters["EnvironmentVariablesOverride"] = [
        override_value(override, run_config) for override in parameters["EnvironmentVariablesOverride"]
    ]
    return str(codebuild.start_build(**api_case(parameters))["build"]["id"])


FORMAT_OF_CONFIG = re.compile(r"^States\.Format\('\{\}', \$\.run\.config\.(\w+)\)$")


def override_value(override: dict[str, Any], run_config: dict[str, Any]) -> dict[str, Any]:
    """The override as Step Functions sends it: States.Format('{}', <config value>) renders JSON
    text (a boolean becomes `true`/`false`)."""
    if "Value.$" not in override:
        return override
    match = FORMAT_OF_CONFIG.match(override["Value.$"])
    assert match, f"unexpected override expression {override['Value.$']!r}"
    rendered = {key: value for key, value in override.items() if key != "Value.$"}
    rendered["Value"] = json.dumps(run_config[match.group(1)])
    return rendered


@pytest.fixture
def image_aws(synthesized):
    template = synthesized.template
    resolve = resolver(template)
    (repository_id,) = resources_of_type(template, "AWS::ECR::Repository")
    (project_id,) = resources_of_type(template, "AWS::CodeBuild::Project")
    project = resolve(template["Resources"][project_id]["Properties"])
    with mock_aws():
        ecr = boto3.client("ecr", region_name=REGION)
        codebuild = boto3.client("codebuild", region_name=REGION)
        ecr.create_repository(repositoryName=resolve({"Ref": repository_id}))
        codebuild.create_project(
            name=resolve({"Ref": project_id}),
            source=api_case(project["Source"]),
            artifacts=api_case(project["Artifacts"]),
            environment=api_case(project["Environment"]),
            serviceRole=project["ServiceRole"],
        )
        yield {
            "ecr": ecr,
            "codebuild": codebuild,
            "project": project,
            "repository": resolve({"Ref": repository_id}),
        }


def test_missing_image_starts_the_build_of_the_tag_the_lookup_wants(synthesized, image_aws):
    states = synthesized.asl["States"]
    wanted = states["FindImage"]["Parameters"]["ImageIds"][0]["ImageTag"]
    build_id = ensure_image(states, {"rebuild_image": False}, image_aws["ecr"], image_aws["codebuild"])
    assert build_id is not None
    (build,) = image_aws["codebuild"].batch_get_builds(ids=[build_id])["builds"]
    assert build["projectName"] == states["BuildImage"]["Parameters"]["ProjectName"]
    variables = {v["Name"]: v["Value"] for v in image_aws["project"]["Environment"]["EnvironmentVariables"]}
    assert variables["IMAGE_TAG"] == wanted
    assert variables["REPOSITORY_URI"].endswith("/" + states["FindImage"]["Parameters"]["RepositoryName"])


def test_existing_image_skips_the_build(synthesized, image_aws):
    states = synthesized.asl["States"]
    tag = states["FindImage"]["Parameters"]["ImageIds"][0]["ImageTag"]
    image_aws["ecr"].put_image(repositoryName=image_aws["repository"], imageManifest=MANIFEST, imageTag=tag)
    assert ensure_image(states, {"rebuild_image": False}, image_aws["ecr"], image_aws["codebuild"]) is None
    assert image_aws["codebuild"].list_builds()["ids"] == []


def test_rebuild_request_builds_even_when_the_image_exists(synthesized, image_aws):
    states = synthesized.asl["States"]
    tag = states["FindImage"]["Parameters"]["ImageIds"][0]["ImageTag"]
    image_aws["ecr"].put_image(repositoryName=image_aws["repository"], imageManifest=MANIFEST, imageTag=tag)
    build_id = ensure_image(states, {"rebuild_image": True}, image_aws["ecr"], image_aws["codebuild"])
    assert build_id is not None
    assert image_aws["codebuild"].list_builds()["ids"] == [build_id]
    # The build is told to replace the tag (container/buildspec.yml reads FORCE_REBUILD).
    (override,) = states["BuildImage"]["Parameters"]["EnvironmentVariablesOverride"]
    assert override_value(override, {"rebuild_image": True}) == {
        "Name": "FORCE_REBUILD",
        "Type": "PLAINTEXT",
        "Value": "true",
    }
    assert override_value(override, {"rebuild_image": False})["Value"] == "false"
