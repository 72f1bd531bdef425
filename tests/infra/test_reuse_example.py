"""The "Reuse the constructs" example of docs/deploy.md is real code: synthesize it and check it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from aws_cdk.assertions import Template

from infra.stack import PROJECT_ROOT
from tests.infra.helpers import all_errors_and_warnings, run_cfn_lint
from tests.infra.policy_rules import cfn_lint_accepted_reason, pass_role_violations, wildcard_violations

EXAMPLE = PROJECT_ROOT / "docs" / "examples" / "reuse_constructs.py"
DEPLOY_DOC = PROJECT_ROOT / "docs" / "deploy.md"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reuse_constructs_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fraud-model")
    (root / "docker").mkdir()
    (root / "docker" / "Dockerfile").write_text(
        "FROM public.ecr.aws/docker/library/python:3.12-slim\nCOPY src /app\n"
    )
    (root / "docker" / "buildspec.yml").write_text(
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        '      - docker build -f docker/Dockerfile -t "$REPOSITORY_URI:$IMAGE_TAG" .\n'
        '      - docker push "$REPOSITORY_URI:$IMAGE_TAG"\n'
    )
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text("print('fraud model')\n")
    (root / "notes.txt").write_text("not in the image\n")
    return root


@pytest.fixture(scope="module")
def synthesized(model_directory: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict]:
    from aws_cdk import App

    from infra.app import cdk_json_context

    example = load_example()
    _, stack = example.build(
        model_directory, App(context=cdk_json_context(), outdir=str(tmp_path_factory.mktemp("out")))
    )
    return stack, Template.from_stack(stack).to_json()


def test_the_doc_includes_the_example_verbatim() -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    assert "docs/examples/reuse_constructs.py" in doc
    code = EXAMPLE.read_text(encoding="utf-8")
    start = code.index("class FraudModelStack")
    end = code.index('\nif __name__ == "__main__":')
    assert code[start:end].strip() in doc


def test_example_synthesizes_without_cdk_nag_findings(synthesized: tuple) -> None:
    stack, _ = synthesized
    assert all_errors_and_warnings(stack) == []


def test_example_uses_its_own_context_prefix_and_key(synthesized: tuple) -> None:
    _, template = synthesized
    project = next(r for r in template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project")
    assert project["Properties"]["Source"]["BuildSpec"] == "docker/buildspec.yml"
    keys = [r for r in template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert len(keys) == 1, "the storage must reuse the team key, not create another"
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    rendered = str(policies)
    assert "/datasets/fraud-transactions/*" in rendered
    assert "/datasets/*'" not in rendered
    assert wildcard_violations(template) == []
    assert pass_role_violations(template) == []
    assert "iam:PassRole" in rendered


def test_example_asset_holds_only_docker_and_src(synthesized: tuple) -> None:
    stack, _ = synthesized
    assembly = stack.node.root.synth()
    image = stack.node.find_child("Image")
    staged = Path(assembly.directory) / image.asset.asset_path
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()) == [
        "docker/Dockerfile",
        "docker/buildspec.yml",
        "src/model.py",
    ]


def test_example_template_is_cfn_lint_clean(synthesized: tuple) -> None:
    stack, _ = synthesized
    assembly = stack.node.root.synth()
    path = Path(assembly.get_stack_artifact(stack.artifact_id).template_full_path)
    # The example uses RemovalPolicy.DESTROY: CDK's auto-delete provider and its accepted findings.
    problems = [m for m in run_cfn_lint(path) if cfn_lint_accepted_reason(m) is None]
    assert problems == []
