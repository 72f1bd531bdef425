"""ml-preprocess records what the data is (dataset.json); ml-evaluate and ml-explore label their
outputs with it. In-process, on a hand-made processing tree, as the jobs see it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml import jobs
from ml.data import SYNTHETIC_NOTICE, SchemaError, synthetic_dataset
from ml.sagemaker.environment import SageMakerPaths
from ml.sagemaker.processing import (
    read_dataset_description,
    run_evaluate,
    run_explore,
    run_preprocess,
)
from ml.training import read_labelled_csv


def _png_title(path: Path) -> str:
    with Image.open(path) as image:
        return str(image.text["Title"])  # type: ignore[attr-defined]


def _preprocess(base: Path, data_file: Path, *argv: str) -> SageMakerPaths:
    paths = SageMakerPaths(base)
    source = paths.processing_dir("input")
    source.mkdir(parents=True)
    (source / data_file.name).write_bytes(data_file.read_bytes())
    run_preprocess(paths, list(argv))
    return paths


def _evaluate(paths: SageMakerPaths, *, with_dataset: bool = True) -> dict[str, object]:
    """Evaluation inputs staged as the evaluation request lays them out."""
    _, labels = read_labelled_csv(paths.processing_dir("test"))
    predictions = paths.processing_dir("predictions")
    predictions.mkdir(parents=True)
    probabilities = np.clip(labels * 0.6 + np.linspace(0.05, 0.35, labels.shape[0]), 0, 1)
    (predictions / jobs.TRANSFORM_OUTPUT_FILE).write_text(
        "".join(f"{p:.6f},{int(p >= 0.5)}\n" for p in probabilities)
    )
    # `labels` is the test output; `dataset` the one object dataset.json of train_headers.
    paths.processing_dir("labels").symlink_to(paths.processing_dir("test"), target_is_directory=True)
    if with_dataset:
        dataset = paths.processing_dir("dataset")
        dataset.mkdir()
        source = paths.processing_dir("train_headers") / jobs.DATASET_FILE
        (dataset / jobs.DATASET_FILE).write_bytes(source.read_bytes())
    run_evaluate(paths, ["--threshold", "0.5"])
    return json.loads((paths.processing_dir("evaluation") / "evaluation.json").read_text())


def _generic_csv(path: Path, n_rows: int = 200) -> Path:
    """A made-up table whose 0/1 label is already called Label, with non-UCI features."""
    rng = np.random.default_rng(3)
    tenure = rng.integers(1, 60, n_rows)
    spend = rng.normal(80, 25, n_rows).round(2)
    label = ((tenure < 15) ^ (rng.random(n_rows) < 0.15)).astype(int)
    lines = ["member_id,tenure,spend,Label"]
    lines += [f"M{i},{tenure[i]},{spend[i]},{label[i]}" for i in range(n_rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_synthetic_data_is_recorded_and_every_evaluation_output_says_so(tmp_path: Path) -> None:
    data = tmp_path / "synthetic_credit_default.csv"
    synthetic_dataset(400, seed=2).to_csv(data, index=False)
    paths = _preprocess(tmp_path / "job", data)

    description = json.loads((paths.processing_dir("train_headers") / jobs.DATASET_FILE).read_text())
    assert description["synthetic"] is True
    assert description["notice"] == SYNTHETIC_NOTICE
    assert description["rows"] == 400 and description["schema"] == "uci"
    # The headerless outputs hold exactly the training contract's files, nothing else.
    for name, files in {
        "train": ["train_data.csv"],
        "test": ["test_data.csv"],
        "test_no_label": ["test_data_no_label.csv"],
        "train_headers": [jobs.DATASET_FILE, "train_data_with_headers.csv"],
    }.items():
        assert sorted(p.name for p in paths.processing_dir(name).iterdir()) == files

    report = _evaluate(paths)
    assert report["data"] == {"synthetic": True, "rows": 400, "notice": SYNTHETIC_NOTICE}
    out = paths.processing_dir("evaluation")
    for png in ("confusion_matrix.png", "roc_curve.png"):
        assert _png_title(out / png).startswith("SYNTHETIC DATA: ")


def test_real_like_data_is_recorded_as_not_synthetic(tmp_path: Path) -> None:
    data = tmp_path / "credit.csv"
    synthetic_dataset(300, seed=4).to_csv(data, index=False)  # same schema, a non-synthetic name
    paths = _preprocess(tmp_path / "job", data)
    report = _evaluate(paths)
    assert report["data"] == {"synthetic": False, "rows": 300}
    out = paths.processing_dir("evaluation")
    assert _png_title(out / "confusion_matrix.png") == "Confusion matrix (threshold 0.5)"
    assert _png_title(out / "roc_curve.png") == "ROC curve"


def test_evaluation_without_the_dataset_input_does_not_guess(tmp_path: Path) -> None:
    data = tmp_path / "synthetic_x.csv"
    synthetic_dataset(200, seed=1).to_csv(data, index=False)
    paths = _preprocess(tmp_path / "job", data)
    report = _evaluate(paths, with_dataset=False)
    assert report["data"]["synthetic"] is None
    assert "no 'dataset' input" in str(report["data"]["notice"])


def test_a_dataset_file_without_the_flag_is_rejected(tmp_path: Path) -> None:
    paths = SageMakerPaths(tmp_path)
    dataset = paths.processing_dir("dataset")
    dataset.mkdir(parents=True)
    (dataset / jobs.DATASET_FILE).write_text('{"rows": 3}')
    with pytest.raises(ValueError, match="has no boolean 'synthetic'"):
        read_dataset_description(paths)


def test_label_named_label_with_other_features_needs_the_generic_schema(tmp_path: Path) -> None:
    data = _generic_csv(tmp_path / "members.csv")
    common = ["--standard-scale", "spend", "--minmax-scale", "tenure", "--drop-columns", "member_id"]
    with pytest.raises(SchemaError, match="--set dataset_schema=generic"):
        _preprocess(tmp_path / "auto", data, *common)

    paths = _preprocess(tmp_path / "generic", data, "--dataset-schema", "generic", *common)
    header = (
        (paths.processing_dir("train_headers") / "train_data_with_headers.csv").read_text().splitlines()[0]
    )
    assert header == "Label,tenure,spend"
    description = json.loads((paths.processing_dir("train_headers") / jobs.DATASET_FILE).read_text())
    assert description == {
        "synthetic": False,
        "rows": 200,
        "features": ["tenure", "spend"],
        "schema": "generic",
    }


def test_explore_takes_the_schema_and_labels_synthetic_plots(tmp_path: Path) -> None:
    generic = SageMakerPaths(tmp_path / "generic")
    generic.processing_dir("input").mkdir(parents=True)
    _generic_csv(generic.processing_dir("input") / "members.csv")
    run_explore(generic, ["--dataset-schema", "generic", "--drop-columns", "member_id"])
    out = generic.processing_dir("explore")
    assert _png_title(out / "correlation_matrix.png") == "Correlation Matrix"
    assert json.loads((out / "summary.json").read_text())["column_names"] == ["Label", "tenure", "spend"]

    synthetic = SageMakerPaths(tmp_path / "synthetic")
    synthetic.processing_dir("input").mkdir(parents=True)
    synthetic_dataset(300, seed=0).to_csv(synthetic.processing_dir("input") / "synthetic_d.csv", index=False)
    run_explore(synthetic, [])
    out = synthetic.processing_dir("explore")
    for png in ("correlation_matrix.png", "scatter_matrix.png"):
        assert _png_title(out / png).startswith("SYNTHETIC DATA: ")
