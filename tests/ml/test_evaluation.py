from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from ml.config import LABEL
from ml.data import load_dataset
from ml.evaluation import REPORT_FILES, EvaluationError, evaluate, write_report
from ml.hyperparameters import DEFAULT_HYPERPARAMETERS, parse_hyperparameters
from ml.preprocessing import split_and_scale
from ml.training import train_booster

PNG = b"\x89PNG\r\n\x1a\n"

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
PROBS = np.array([0.1, 0.2, 0.6, 0.3, 0.8, 0.4, 0.9, 0.05, 0.5, 0.45])


def test_metrics_of_a_known_case():
    metrics = evaluate(LABELS, PROBS)
    # predicted (>= 0.5): 0 0 1 0 1 0 1 0 1 0 -> tn=5 fp=1 fn=1 tp=3
    assert metrics["confusion_matrix"] == {"labels": [0, 1], "matrix": [[5, 1], [1, 3]]}
    assert metrics["n"] == 10 and metrics["threshold"] == 0.5
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["precision"] == pytest.approx(0.75)
    assert metrics["recall"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(0.75)
    assert metrics["auc"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert metrics["positive_rate"] == pytest.approx(0.4)
    assert metrics["predicted_positive_rate"] == pytest.approx(0.4)
    assert metrics["baseline_accuracy"] == pytest.approx(0.6)
    assert metrics["baseline_basis"] == "test"
    assert metrics["crosstab"]["table"] == {
        "0": {"0": 5, "1": 1, "All": 6},
        "1": {"0": 1, "1": 3, "All": 4},
        "All": {"0": 6, "1": 4, "All": 10},
    }
    assert metrics["crosstab"]["rows"] == "actual"
    json.dumps(metrics)  # plain Python types only


def test_threshold_is_inclusive_and_configurable():
    assert evaluate(LABELS, PROBS, threshold=0.8)["confusion_matrix"]["matrix"] == [[6, 0], [2, 2]]
    assert evaluate([1], [0.5], threshold=0.5)["accuracy"] == 1.0


def test_baseline_uses_train_and_test_labels_when_given():
    metrics = evaluate(LABELS, PROBS, train_labels=[0] * 30)
    assert metrics["baseline_basis"] == "train+test"
    assert metrics["baseline_accuracy"] == pytest.approx(36 / 40)
    # a positive majority is a majority too
    assert evaluate([1, 1, 0], [0.9, 0.8, 0.1])["baseline_accuracy"] == pytest.approx(2 / 3)


def test_single_class_labels_have_no_auc():
    metrics = evaluate([0, 0, 0], [0.1, 0.7, 0.2])
    assert metrics["auc"] is None
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["precision"] == 0.0


@pytest.mark.parametrize(
    ("labels", "probs", "kwargs", "expected"),
    [
        ([0, 1, 1], [0.1, 0.9], {}, "3 labels but 2 probabilities"),
        ([0, 2, 1], [0.1, 0.9, 0.3], {}, "labels must be 0 or 1; row 2 is 2.0"),
        ([0, 0.5], [0.1, 0.9], {}, "labels must be 0 or 1; row 2 is 0.5"),
        (["no", "yes"], [0.1, 0.9], {}, "labels must be numbers 0 or 1"),
        ([], [], {}, "labels must be a non-empty 1-D sequence"),
        ([[0, 1]], [[0.1, 0.2]], {}, "labels must be a non-empty 1-D sequence, got shape (1, 2)"),
        ([0, 1], [0.1, 1.2], {}, "probabilities must be in [0, 1]; row 2 is 1.2"),
        ([0, 1], [0.1, float("nan")], {}, "probabilities must be in [0, 1]; row 2 is nan"),
        ([0, 1], [0.1, 0.2], {"threshold": 1.5}, "threshold must be a number in [0, 1], got 1.5"),
        ([0, 1], [0.1, 0.2], {"train_labels": [0, 3]}, "train_labels must be 0 or 1; row 2 is 3.0"),
    ],
)
def test_bad_inputs_are_rejected_clearly(labels, probs, kwargs, expected):
    with pytest.raises(EvaluationError) as info:
        evaluate(labels, probs, **kwargs)
    assert expected in str(info.value)


def test_write_report_writes_json_and_two_pngs(tmp_path):
    metrics = evaluate(LABELS, PROBS)
    metrics["notice"] = "caller-added key"
    metrics["extra"] = np.float32(0.5)
    written = write_report(metrics, tmp_path / "evaluation", LABELS, PROBS)
    assert [p.name for p in written] == list(REPORT_FILES)
    stored = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert stored["accuracy"] == metrics["accuracy"]
    assert stored["notice"] == "caller-added key" and stored["extra"] == 0.5
    for name in ("confusion_matrix.png", "roc_curve.png"):
        data = (tmp_path / "evaluation" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


@pytest.mark.parametrize(("synthetic", "prefix"), [(True, "SYNTHETIC DATA: "), (False, ""), (None, "")])
def test_plot_titles_name_synthetic_data(tmp_path, synthetic, prefix):
    from PIL import Image

    metrics = {**evaluate(LABELS, PROBS), "data": {"synthetic": synthetic}}
    write_report(metrics, tmp_path, LABELS, PROBS)
    titles = {}
    for name in ("confusion_matrix.png", "roc_curve.png"):
        with Image.open(tmp_path / name) as image:
            titles[name] = image.text["Title"]
    assert titles == {
        "confusion_matrix.png": f"{prefix}Confusion matrix (threshold 0.5)",
        "roc_curve.png": f"{prefix}ROC curve",
    }
    assert json.loads((tmp_path / "evaluation.json").read_text())["data"] == {"synthetic": synthetic}


def test_write_report_handles_single_class_and_rejects_mismatch(tmp_path):
    written = write_report(evaluate([0, 0], [0.2, 0.3]), tmp_path, [0, 0], [0.2, 0.3])
    assert all(p.is_file() for p in written)
    with pytest.raises(EvaluationError, match="2 labels but 3 probabilities"):
        write_report({}, tmp_path, [0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="cannot be written as JSON"):
        write_report({"bad": object()}, tmp_path, [0, 1], [0.1, 0.2])


@pytest.mark.realdata
def test_real_data_reaches_the_reference_figures(real_data_path):
    """load -> split_and_scale -> train_booster -> predict -> evaluate with every default."""
    frame = load_dataset(real_data_path)
    result = split_and_scale(frame)
    features = [c for c in result.train.columns if c != LABEL]
    booster = train_booster(
        (result.train[features].to_numpy(), result.train[LABEL].to_numpy()),
        None,
        parse_hyperparameters(DEFAULT_HYPERPARAMETERS),
        log=lambda _: None,
    )
    probabilities = booster.predict(xgb.DMatrix(result.test[features].to_numpy()))
    metrics = evaluate(
        result.test[LABEL].to_numpy(), probabilities, train_labels=result.train[LABEL].to_numpy()
    )
    assert metrics["n"] == 6000
    assert metrics["accuracy"] >= 0.825  # reference 0.829
    assert metrics["auc"] >= 0.78  # reference 0.784
    assert metrics["baseline_accuracy"] == pytest.approx(0.779, abs=0.001)
