"""The Prepare Lambda's code package: exactly the stdlib-only modules its handler imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from infra.prepare_function import HANDLER, asset_exclude_patterns, package_files
from tests.support.cfn_resolve import resolver, resources_of_type

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_package_follows_the_imports_of_the_handler_module():
    files = package_files(PROJECT_ROOT)
    assert {"ml/__init__.py", "ml/pipeline_input.py", "ml/jobs.py", "ml/hyperparameters.py"} <= set(files)
    assert "ml/sagemaker/__init__.py" in files  # parent package of serving_limits
    # Nothing that needs numpy, pandas or xgboost.
    assert not {"ml/training.py", "ml/data.py", "ml/local_sagemaker.py", "ml/aws_commands.py"} & set(files)


def test_synthesized_asset_holds_exactly_the_package(synthesized):
    (function,) = [
        r
        for lid, r in resources_of_type(synthesized.template, "AWS::Lambda::Function").items()
        if "Prepare" in lid
    ]
    assert function["Properties"]["Handler"] == HANDLER
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    asset_dir = synthesized.assembly_dir / f"asset.{asset_hash}"
    staged = sorted(p.relative_to(asset_dir).as_posix() for p in asset_dir.rglob("*") if p.is_file())
    assert staged == package_files(PROJECT_ROOT)


def test_handler_runs_on_the_standard_library_alone(synthesized, tmp_path):
    """The packaged files, imported by an interpreter without site-packages (-S -I), as in Lambda."""
    for name in package_files(PROJECT_ROOT):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    (function,) = [
        r
        for lid, r in resources_of_type(synthesized.template, "AWS::Lambda::Function").items()
        if "Prepare" in lid
    ]
    environment = resolver(synthesized.template)(function["Properties"]["Environment"]["Variables"])
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "import ml.pipeline_input as p; "
        "assert 'numpy' not in sys.modules; "
        "print(json.dumps(p.handler({'input': {'split_ratio': 0.25}, 'execution_name': 'iso'}, None)))"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-I", "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["run_id"] == "iso"
    assert run["config"]["split_ratio"] == 0.25
    assert set(run["requests"]) >= {"preprocessing", "training", "model", "transform", "evaluation"}


def test_exclude_patterns_reinclude_each_directory_on_the_way():
    patterns = asset_exclude_patterns(["ml/__init__.py", "ml/sagemaker/limits.py"])
    assert patterns[:5] == ["/*", "!/ml/", "/ml/*", "!/ml/sagemaker/", "/ml/sagemaker/*"]
    assert "!/ml/sagemaker/limits.py" in patterns
