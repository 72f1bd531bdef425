"""The processing entry points as processes, on synthetic data in a temporary base dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ml.data import synthetic_dataset
from tests.container.conftest import base_env, run_command

UCI_ARGS = [
    "--train-test-split-ratio",
    "0.2",
    "--random-state",
    "0",
    "--validation-ratio",
    "0.1",
    "--label-column",
    "Label",
    "--standard-scale",
    "PAY_AMT1",
    "--minmax-scale",
    "BILL_AMT1",
    "--drop-columns",
    "ID",
]


def _raw_input(base: Path, rows: int = 1000) -> Path:
    """The synthetic table written as the UCI CSV is published (ID column, original label name)."""
    frame = synthetic_dataset(n_rows=rows, seed=2)
    table = frame.drop(columns=["Label"]).copy()
    table.insert(0, "ID", np.arange(1, rows + 1))
    table["default payment next month"] = frame["Label"].to_numpy()
    path = base / "processing" / "input" / "credit.csv"
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)
    return path


def _failure_reason(base: Path) -> str:
    return (base / "output" / "failure").read_text().splitlines()[0]


def test_preprocess_writes_every_output(tmp_path: Path) -> None:
    _raw_input(tmp_path)
    result = run_command("ml-preprocess", base_env(tmp_path), *UCI_ARGS)
    assert result.returncode == 0, result.stderr
    processing = tmp_path / "processing"
    train = np.loadtxt(processing / "train" / "train_data.csv", delimiter=",")
    test = np.loadtxt(processing / "test" / "test_data.csv", delimiter=",")
    no_label = np.loadtxt(processing / "test_no_label" / "test_data_no_label.csv", delimiter=",")
    validation = np.loadtxt(processing / "validation" / "validation_data.csv", delimiter=",")
    assert train.shape[1] == test.shape[1] == 24  # label + 23 features
    assert no_label.shape == (test.shape[0], 23)
    np.testing.assert_allclose(no_label, test[:, 1:])
    assert test.shape[0] == 200 and validation.shape[0] == 80 and train.shape[0] == 720
    assert set(np.unique(train[:, 0])) <= {0.0, 1.0}
    header = (processing / "train_headers" / "train_data_with_headers.csv").read_text().splitlines()[0]
    assert header.startswith("Label,") and "ID" not in header.split(",")
    assert not (tmp_path / "output" / "failure").exists()


def test_preprocess_train_shards_for_sharded_by_s3_key(tmp_path: Path) -> None:
    _raw_input(tmp_path)
    result = run_command("ml-preprocess", base_env(tmp_path), *UCI_ARGS, "--train-shards", "3")
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "processing" / "train").iterdir())
    assert [f.name for f in files] == [f"train_data-{i}-of-3.csv" for i in (1, 2, 3)]
    sizes = [len(f.read_text().splitlines()) for f in files]
    assert sum(sizes) == 720 and max(sizes) - min(sizes) <= 1


def test_preprocess_bad_input_writes_failure_and_exit_message(tmp_path: Path) -> None:
    path = tmp_path / "processing" / "input" / "data.csv"
    path.parent.mkdir(parents=True)
    path.write_text("a,b,c\n1,2,3\n")
    result = run_command("ml-preprocess", base_env(tmp_path), *UCI_ARGS)
    assert result.returncode == 1
    reason = _failure_reason(tmp_path)
    assert "data.csv" in reason
    assert (tmp_path / "output" / "message").read_text().strip() == reason


def test_preprocess_missing_input_and_bad_argument(tmp_path: Path) -> None:
    result = run_command("ml-preprocess", base_env(tmp_path / "a"), *UCI_ARGS)
    assert result.returncode == 1
    assert _failure_reason(tmp_path / "a").startswith("processing input 'input' not found at ")

    _raw_input(tmp_path / "b")
    result = run_command("ml-preprocess", base_env(tmp_path / "b"), "--train-test-split-ratio", "lots")
    assert result.returncode == 1
    assert "argument --train-test-split-ratio: invalid float value: 'lots'" in _failure_reason(tmp_path / "b")


def _evaluation_inputs(base: Path, probabilities: np.ndarray, labels: np.ndarray) -> None:
    predictions = base / "processing" / "predictions" / "test_data_no_label.csv.out"
    predictions.parent.mkdir(parents=True)
    predictions.write_text("".join(f"{p:.6f},{int(p >= 0.5)}\n" for p in probabilities))
    test = base / "processing" / "labels" / "test_data.csv"
    test.parent.mkdir(parents=True)
    test.write_text("".join(f"{label},1.5,2.5\n" for label in labels))


def test_evaluate_writes_report_and_quality_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probabilities = np.clip(labels * 0.6 + rng.random(400) * 0.4, 0, 1)
    _evaluation_inputs(tmp_path, probabilities, labels)
    result = run_command(
        "ml-evaluate",
        base_env(tmp_path),
        "--threshold",
        "0.5",
        "--quality-metric",
        "auc",
        "--quality-threshold",
        "0.7",
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "processing" / "evaluation"
    report = json.loads((out / "evaluation.json").read_text())
    assert report["n"] == 400
    assert report["quality"]["metric"] == "auc" and report["quality"]["passed"] is True
    assert report["quality"]["value"] == report["auc"] > 0.9
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert (out / "roc_curve.png").stat().st_size > 0
    assert "quality gate passed" in result.stdout


def test_evaluate_row_count_mismatch_fails(tmp_path: Path) -> None:
    _evaluation_inputs(tmp_path, np.array([0.1, 0.9, 0.4]), np.array([0, 1]))
    result = run_command("ml-evaluate", base_env(tmp_path))
    assert result.returncode == 1
    assert _failure_reason(tmp_path).startswith("3 predictions but 2 labelled test rows")


def test_explore_writes_plots(tmp_path: Path) -> None:
    _raw_input(tmp_path, rows=300)
    result = run_command("ml-explore", base_env(tmp_path), "--label-column", "Label", "--drop-columns", "ID")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "processing" / "explore"
    assert (out / "correlation_matrix.png").stat().st_size > 0
    assert (out / "scatter_matrix.png").stat().st_size > 0


def test_explore_without_input_fails(tmp_path: Path) -> None:
    result = run_command("ml-explore", base_env(tmp_path))
    assert result.returncode == 1
    assert _failure_reason(tmp_path).startswith("processing input 'input' not found")
