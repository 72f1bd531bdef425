"""The local runner end to end: the real entry points, the prepared requests, the key layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml import jobs
from ml.artifacts import LocalArtifactStore
from ml.cli import main
from ml.local_runner import LOCAL_SETTINGS, StepFailedError, _stage_data, quality_gate, run_local

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _png_title(path: Path) -> str:
    with Image.open(path) as image:
        return str(image.text["Title"])  # type: ignore[attr-defined]


def _store_keys(output: Path, bucket: str, prefix: str) -> set[str]:
    root = output / "store" / bucket
    return {p.relative_to(root).as_posix() for p in (root / prefix).rglob("*") if p.is_file()}


@pytest.mark.slow
def test_run_local_on_synthetic_data_as_a_subprocess(tmp_path: Path) -> None:
    output = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ml",
            "run-local",
            "--output",
            str(output),
            "--execution-name",
            "local-test-run",
            "--set",
            "hyperparameters.max_depth=4",
            "--set",
            "split_ratio=0.25",
            "--set",
            "threshold=0.6",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    # Progress on stderr, one start and one end line per step.
    for step in ("explore", "preprocessing", "training", "model", "transform", "evaluation"):
        assert f"] {step}" in completed.stderr
    assert completed.stderr.count("Completed in") == 6
    assert "quality gate: passed" in completed.stderr
    # The summary names the data as synthetic and shows the metrics.
    assert "SYNTHETIC" in completed.stdout
    for label in ("accuracy", "ROC AUC", "F1", "baseline accuracy"):
        assert label in completed.stdout

    report = json.loads((output / "evaluation.json").read_text())
    assert report["data"]["synthetic"] is True
    assert "SYNTHETIC" in report["data"]["notice"]
    for metric in ("accuracy", "auc", "baseline_accuracy", "f1", "precision", "recall"):
        assert 0.0 <= report[metric] <= 1.0
    # 5000 synthetic rows, a quarter held out for the test.
    assert report["n"] == 1250
    matrix = report["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == report["n"]
    assert report["run"]["input"]["threshold"] == 0.6
    assert report["run"]["input"]["hyperparameters"]["max_depth"] == "4"
    assert {job["status"] for job in report["run"]["jobs"].values()} == {"Completed"}

    run_id = report["run"]["run_id"]
    # The evaluation job's own report (what the state machine reads in AWS) and all four plots
    # say SYNTHETIC too, from what preprocessing recorded, not from the local runner.
    evaluation_dir = output / "store" / LOCAL_SETTINGS.artifact_bucket / f"runs/{run_id}/evaluation"
    job_report = json.loads((evaluation_dir / "evaluation.json").read_text())
    assert job_report["data"] == {"synthetic": True, "rows": 5000, "notice": report["data"]["notice"]}
    explore_dir = evaluation_dir.parent / "explore"
    for png in (
        evaluation_dir / "confusion_matrix.png",
        evaluation_dir / "roc_curve.png",
        explore_dir / "correlation_matrix.png",
        explore_dir / "scatter_matrix.png",
    ):
        assert _png_title(png).startswith("SYNTHETIC DATA: "), png
    names = report["run"]["jobs"]
    assert names["training"]["job_name"] == f"xgb-pipeline-train-{run_id}"
    # The training job received the override through hyperparameters.json.
    hyperparameters = json.loads(
        (
            output / "work" / names["training"]["job_name"] / "input" / "config" / "hyperparameters.json"
        ).read_text()
    )
    assert hyperparameters["max_depth"] == "4"

    # The buckets hold exactly the AWS key layout.
    assert _store_keys(output, LOCAL_SETTINGS.data_bucket, "datasets") == {
        "datasets/default/synthetic_credit_default.csv"
    }
    keys = _store_keys(output, LOCAL_SETTINGS.artifact_bucket, "")
    run = f"runs/{run_id}"
    expected = {
        f"{run}/processing/train/train_data.csv",
        f"{run}/processing/test/test_data.csv",
        f"{run}/processing/test_no_label/test_data_no_label.csv",
        f"{run}/processing/train_headers/train_data_with_headers.csv",
        f"{run}/processing/train_headers/{jobs.DATASET_FILE}",
        f"{run}/explore/correlation_matrix.png",
        f"{run}/explore/scatter_matrix.png",
        f"{run}/training/{names['training']['job_name']}/output/model.tar.gz",
        f"{run}/transform/{jobs.TRANSFORM_OUTPUT_FILE}",
        f"{run}/evaluation/evaluation.json",
        f"{run}/evaluation/confusion_matrix.png",
        f"{run}/evaluation/roc_curve.png",
    }
    assert expected <= keys
    allowed = tuple(
        f"{run}/{part}/"
        for part in ("processing", "explore", "training", "checkpoints", "transform", "evaluation")
    )
    assert all(key.startswith(allowed) for key in keys), sorted(keys)

    predictions = (
        output / "store" / LOCAL_SETTINGS.artifact_bucket / run / "transform" / jobs.TRANSFORM_OUTPUT_FILE
    )
    rows = predictions.read_text().splitlines()
    assert len(rows) == report["n"]
    probability, label = rows[0].split(",")
    assert 0.0 <= float(probability) <= 1.0
    assert label in ("0", "1")


def _churn_csv(path: Path, n_rows: int = 300) -> Path:
    rng = np.random.default_rng(1)
    income = rng.normal(50_000, 15_000, n_rows).round(2)
    visits = rng.integers(0, 30, n_rows)
    age = rng.integers(18, 80, n_rows)
    score = (visits < 8).astype(float) + (income < 45_000) + rng.normal(0, 0.5, n_rows)
    churned = (score > 1.0).astype(int)
    lines = ["customer_id,income,visits,age,churned"]
    lines += [f"C{i},{income[i]},{visits[i]},{age[i]},{churned[i]}" for i in range(n_rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_another_binary_csv_runs_by_configuration_alone(tmp_path: Path) -> None:
    data = _churn_csv(tmp_path / "churn.csv")
    progress = tmp_path / "progress.log"
    with progress.open("w") as stream:
        run = run_local(
            output_dir=tmp_path / "out",
            data=data,
            execution_input={
                "label_column": "churned",
                "standard_scaled": ["income"],
                "minmax_scaled": ["visits"],
                "drop_columns": ["customer_id"],
                "split_ratio": 0.3,
            },
            execution_name="local-churn",
            explore=False,
            progress=stream,
        )
    report = json.loads(run.evaluation_file.read_text())
    assert report["data"]["synthetic"] is False
    assert "notice" not in report["data"]
    assert report["data"]["uri"] == "s3://local-data/datasets/default/churn.csv"
    job_report = json.loads(
        (
            tmp_path / "out" / "store" / LOCAL_SETTINGS.artifact_bucket / run.state["uris"]["evaluation_key"]
        ).read_text()
    )
    assert job_report["data"] == {"synthetic": False, "rows": 300}
    assert report["n"] == 90
    # The label is learnable from the features, so the model beats guessing.
    assert report["auc"] > 0.7
    assert [step.step for step in run.steps] == [
        "preprocessing",
        "training",
        "model",
        "transform",
        "evaluation",
        "quality_gate",
    ]
    assert "SYNTHETIC" not in progress.read_text()


def _members_csv(path: Path, n_rows: int = 400) -> Path:
    """A made-up table whose 0/1 label column is already called Label, features not UCI's."""
    rng = np.random.default_rng(7)
    tenure = rng.integers(1, 60, n_rows)
    spend = rng.normal(80, 25, n_rows).round(2)
    tickets = rng.poisson(2, n_rows)
    score = (tenure < 15).astype(float) + 0.5 * (tickets > 3) + rng.normal(0, 0.4, n_rows)
    label = (score > 0.7).astype(int)
    lines = ["member_id,tenure,spend,tickets,Label"]
    lines += [f"M{i},{tenure[i]},{spend[i]},{tickets[i]},{label[i]}" for i in range(n_rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_csv_whose_label_is_already_called_label_runs_by_set_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _members_csv(tmp_path / "members.csv")
    common = ["run-local", "--data", str(data), "--no-explore"]
    describe = [
        "--set",
        'standard_scaled=["spend"]',
        "--set",
        'minmax_scaled=["tenure"]',
        "--set",
        'drop_columns=["member_id"]',
    ]
    # Without saying it is not the UCI data, the label name makes the UCI schema expected, and
    # the reason says which --set fixes it.
    code = main([*common, "--output", str(tmp_path / "auto"), *describe])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: step 'preprocessing' failed" in err
    assert "--set dataset_schema=generic" in err

    output = tmp_path / "generic"
    code = main([*common, "--output", str(output), *describe, "--set", "dataset_schema=generic"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((output / "evaluation.json").read_text())
    assert report["run"]["input"]["dataset_schema"] == "generic"
    assert report["data"]["synthetic"] is False
    assert report["n"] == 80
    assert report["auc"] > 0.7  # the label is learnable from tenure and tickets
    run = f"runs/{report['run']['run_id']}/processing"
    store = output / "store" / LOCAL_SETTINGS.artifact_bucket / run
    header = (store / "train_headers" / "train_data_with_headers.csv").read_text().splitlines()[0]
    assert header == "Label,tenure,spend,tickets"
    assert json.loads((store / "train_headers" / jobs.DATASET_FILE).read_text())["schema"] == "generic"


@pytest.mark.slow
def test_failing_step_stops_the_run_with_step_job_and_reason(tmp_path: Path) -> None:
    data = tmp_path / "nolabel.csv"
    data.write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(StepFailedError) as failure, (tmp_path / "progress.log").open("w") as stream:
        run_local(
            output_dir=tmp_path / "out",
            data=data,
            execution_input={
                "label_column": "churned",
                "standard_scaled": [],
                "minmax_scaled": [],
                "drop_columns": [],
            },
            execution_name="local-fail",
            explore=False,
            progress=stream,
        )
    error = failure.value
    assert error.step == "preprocessing"
    assert error.job_name == "xgb-pipeline-prep-local-fail"
    assert "churned" in error.reason
    assert error.log is not None
    assert error.log.is_file()
    # Nothing after the failed step ran.
    assert not (tmp_path / "out" / "work" / "xgb-pipeline-train-local-fail").exists()
    assert not (tmp_path / "out" / "evaluation.json").exists()


@pytest.mark.slow
def test_cli_reports_a_failed_step_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "nolabel.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    code = main(["run-local", "--output", str(tmp_path / "out"), "--data", str(data), "--no-explore"])
    assert code == 1
    err = capsys.readouterr().err
    # The runner's own output: progress lines, then the three failure lines, no traceback.
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-3:][0].startswith("error: step 'preprocessing'")
    assert "error: step 'preprocessing' failed (job xgb-pipeline-prep-local-" in err
    assert "  reason: " in err
    assert "  log:    " in err


def test_data_staging_replaces_earlier_files_in_the_local_data_prefix(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    old = tmp_path / "old.csv"
    old.write_text("Label,x\n1,2\n")
    store.upload_file(old, "s3://local-data/datasets/default/old.csv")
    new = tmp_path / "new.csv"
    new.write_text("Label,x\n0,1\n")

    info = _stage_data(store, new, data_uri_set=False)

    assert info == {
        "synthetic": False,
        "source": str(new.resolve()),
        "uri": "s3://local-data/datasets/default/new.csv",
    }
    assert store.list_objects("s3://local-data/datasets/default/") == [
        "s3://local-data/datasets/default/new.csv"
    ]
    assert old.is_file()  # the source files themselves are never touched


def test_quality_gate_matches_the_state_machine_choice() -> None:
    config = {"quality_metric": "auc", "quality_threshold": 0.7}
    assert quality_gate({"auc": 0.7, "accuracy": 0.5}, config) is None
    verdict = quality_gate({"auc": 0.65}, config)
    assert verdict == "QualityGateFailed: auc is 0.65, below the quality threshold 0.7"
    missing = quality_gate({"accuracy": 0.9}, config)
    assert missing is not None
    assert missing.startswith("QualityMetricMissing: evaluation.json has no numeric auc")
