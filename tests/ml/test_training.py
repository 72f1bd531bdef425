from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from ml.hyperparameters import parse_hyperparameters
from ml.training import (
    METRIC_DEFINITIONS,
    MODEL_FILENAME,
    DataError,
    format_metric_line,
    load_booster,
    read_labelled_csv,
    save_model,
    train_booster,
)
from tests.ml.conftest import make_binary_data


def write_csv(path: Path, labels: np.ndarray, features: np.ndarray) -> Path:
    rows = np.column_stack([labels, features])
    np.savetxt(path, rows, delimiter=",", fmt="%.17g")
    return path


def params(**overrides: str) -> dict:
    raw = {"num_round": "20", **overrides}
    return parse_hyperparameters(raw)


# --- read_labelled_csv ------------------------------------------------------------------------


def test_read_file_round_trips_values(tmp_path, binary_data):
    features, labels = binary_data
    path = write_csv(tmp_path / "train.csv", labels, features)
    read_x, read_y = read_labelled_csv(path)
    np.testing.assert_array_equal(read_y, labels)
    np.testing.assert_array_equal(read_x, features)
    assert read_y.dtype == np.int64 and read_x.dtype == np.float64


def test_read_directory_concatenates_sorted_files_and_skips_hidden(tmp_path, binary_data):
    features, labels = binary_data
    (tmp_path / "part").mkdir()
    write_csv(tmp_path / "b.csv", labels[200:], features[200:])
    write_csv(tmp_path / "a.csv", labels[:100], features[:100])
    write_csv(tmp_path / "part" / "c", labels[100:200], features[100:200])
    (tmp_path / ".hidden").write_text("not,data\n")
    (tmp_path / "empty.csv").write_text("")
    read_x, read_y = read_labelled_csv(tmp_path)
    # sorted: a.csv, b.csv, empty.csv, part/c
    expected_y = np.concatenate([labels[:100], labels[200:], labels[100:200]])
    np.testing.assert_array_equal(read_y, expected_y)
    assert read_x.shape == features.shape


def test_empty_feature_field_is_a_missing_value(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,0.5,,3\n0,1,2,3\n")
    features, labels = read_labelled_csv(path)
    assert np.isnan(features[0, 1])
    assert labels.tolist() == [1, 0]


def test_quoted_and_scientific_numbers_are_read(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('"1","1.00E+05",2\n0,3e-2,"4"\n')
    features, labels = read_labelled_csv(path)
    assert labels.tolist() == [1, 0]
    assert features.tolist() == [[100000.0, 2.0], [0.03, 4.0]]


def test_header_row_is_rejected_with_hint(tmp_path):
    path = tmp_path / "train_data_with_headers.csv"
    path.write_text("Label,LIMIT_BAL,AGE\n1,20000,24\n")
    with pytest.raises(DataError) as info:
        read_labelled_csv(path)
    message = str(info.value)
    assert str(path) in message and "row 1 looks like a header row (Label, LIMIT_BAL, AGE" in message
    assert "headerless" in message


def test_non_numeric_value_names_file_row_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,3\n0,4,5\n1,abc,6\n")
    with pytest.raises(DataError, match=re.escape(f"{path} row 3 column 2: value 'abc' is not a number")):
        read_labelled_csv(path)


def test_ragged_rows_are_rejected(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("1,2,3\n0,4\n")
    with pytest.raises(DataError, match=re.escape(f"{short} row 2 has 2 fields, but the first row has 3")):
        read_labelled_csv(short)
    long = tmp_path / "long.csv"
    long.write_text("1,2,3\n0,4,5\n1,2,3,4\n")
    with pytest.raises(DataError, match=re.escape(f"{long} row 3 has 4 fields, but the first row has 3")):
        read_labelled_csv(long)


@pytest.mark.parametrize(
    ("body", "row", "shown"), [("1,2\n2,3\n", 2, "2.0"), ("0,1\n1,1\n0.5,1\n", 3, "0.5")]
)
def test_labels_must_be_zero_or_one(tmp_path, body, row, shown):
    path = tmp_path / "d.csv"
    path.write_text(body)
    with pytest.raises(DataError) as info:
        read_labelled_csv(path)
    assert f"{path} row {row}: label {shown} is not 0 or 1" in str(info.value)


def test_label_error_counts_lines_after_blank_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("0,1\n\n1,,\n")  # blank line, then a ragged row with empty label-free fields
    with pytest.raises(DataError, match=re.escape(f"{path} row 3 has 3 fields")):
        read_labelled_csv(path)


def test_empty_label_is_rejected(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2\n,3\n")
    with pytest.raises(DataError, match=re.escape(f"{path} row 2 column 1: the label is empty")):
        read_labelled_csv(path)


def test_empty_data_is_rejected(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"no data rows in .*a\.csv.*b\.csv"):
        read_labelled_csv(tmp_path)
    empty_dir = tmp_path / "none"
    empty_dir.mkdir()
    with pytest.raises(DataError, match=r"no data rows in .*no files"):
        read_labelled_csv(empty_dir)


def test_label_only_rows_are_rejected(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1\n0\n")
    with pytest.raises(DataError, match="only one column"):
        read_labelled_csv(path)


def test_missing_path_is_rejected(tmp_path):
    with pytest.raises(DataError, match=r"training data not found: .*nope"):
        read_labelled_csv(tmp_path / "nope")


def test_files_with_different_widths_are_rejected(tmp_path):
    (tmp_path / "a.csv").write_text("1,2,3\n")
    (tmp_path / "b.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"b\.csv has 2 columns but .*a\.csv has 3"):
        read_labelled_csv(tmp_path)


# --- metric lines -----------------------------------------------------------------------------


def test_metric_line_format_and_definitions_match():
    line = format_metric_line(
        12, {"train": {"logloss": 0.412341, "auc": 0.9}, "validation": {"logloss": 0.4321, "auc": 0.85}}
    )
    assert line == (
        "[round 12] train-logloss=0.41234 train-auc=0.90000 validation-logloss=0.43210 validation-auc=0.85000"
    )
    found = {}
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    assert found == {
        "train:logloss": 0.41234,
        "train:auc": 0.9,
        "validation:logloss": 0.4321,
        "validation:auc": 0.85,
    }


def test_metric_definitions_do_not_confuse_similar_names():
    line = "[round 3] train-aucpr=0.70000 validation-aucpr=0.60000"
    by_name = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
    assert re.search(by_name["train:auc"], line) is None
    assert re.search(by_name["validation:auc"], line) is None
    match = re.search(by_name["validation:aucpr"], line)
    assert match is not None and match.group(1) == "0.60000"
    assert re.search(by_name["train:logloss"], "training on 10 rows") is None
    assert len(METRIC_DEFINITIONS) <= 40  # SageMaker's limit on metric definitions


# --- train_booster ----------------------------------------------------------------------------


def accuracy(booster: xgb.Booster, features: np.ndarray, labels: np.ndarray) -> float:
    probs = booster.predict(xgb.DMatrix(features))
    return float(np.mean((probs >= 0.5) == labels))


def test_training_learns_and_logs_one_parsable_line_per_round(binary_data):
    features, labels = binary_data
    valid = make_binary_data(200, seed=1)
    lines: list[str] = []
    # Early stopping off: this test is about one line per round, for every round.
    booster = train_booster(
        (features, labels),
        valid,
        params(eval_metric="logloss,auc", early_stopping_rounds="0"),
        log=lines.append,
    )
    assert booster.num_boosted_rounds() == 20
    assert accuracy(booster, *valid) > 0.8
    round_lines = [line for line in lines if line.startswith("[round ")]
    assert [int(re.match(r"\[round (\d+)\]", line).group(1)) for line in round_lines] == list(range(1, 21))
    by_name = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
    for line in round_lines:
        for name in ("train:logloss", "train:auc", "validation:logloss", "validation:auc"):
            assert re.search(by_name[name], line), (name, line)
    first = float(re.search(by_name["train:logloss"], round_lines[0]).group(1))
    last = float(re.search(by_name["train:logloss"], round_lines[-1]).group(1))
    assert last < first
    assert "training on 400 rows x 5 features, validating on 200 rows: 20 of 20 rounds" in lines[0]


def test_training_is_deterministic(binary_data):
    features, labels = binary_data
    first = train_booster((features, labels), None, params(), log=lambda _: None)
    second = train_booster((features, labels), None, params(), log=lambda _: None)
    np.testing.assert_array_equal(first.predict(xgb.DMatrix(features)), second.predict(xgb.DMatrix(features)))


def test_resume_from_initial_model_ends_with_num_round(binary_data, tmp_path):
    features, labels = binary_data
    quiet: list[str] = []
    partial = train_booster((features, labels), None, params(num_round="30"), log=quiet.append)
    assert partial.num_boosted_rounds() == 30
    lines: list[str] = []
    resumed = train_booster(
        (features, labels), None, params(num_round="50"), initial_model=partial, log=lines.append
    )
    assert resumed.num_boosted_rounds() == 50
    assert "20 of 50 rounds, resuming a model with 30 rounds" in lines[0]
    assert lines[1].startswith("[round 31] ") and lines[-1].startswith("[round 50] ")
    # resuming from a saved file works the same way
    path = save_model(partial, tmp_path / "ckpt")
    from_file = train_booster(
        (features, labels), None, params(num_round="50"), initial_model=path, log=quiet.append
    )
    assert from_file.num_boosted_rounds() == 50


def test_resume_of_a_finished_model_trains_nothing(binary_data):
    features, labels = binary_data
    done = train_booster((features, labels), None, params(num_round="10"), log=lambda _: None)
    lines: list[str] = []
    again = train_booster(
        (features, labels), None, params(num_round="10"), initial_model=done, log=lines.append
    )
    assert again.num_boosted_rounds() == 10
    assert lines == ["initial model already has 10 rounds (num_round=10); nothing to train"]


def test_initial_model_with_other_features_is_rejected(binary_data):
    features, labels = binary_data
    other = train_booster((features[:, :3], labels), None, params(num_round="2"), log=lambda _: None)
    with pytest.raises(DataError, match="initial model has 3 features but the training data has 5"):
        train_booster((features, labels), None, params(), initial_model=other, log=lambda _: None)


def test_user_callbacks_run_every_round(binary_data):
    features, labels = binary_data

    class Recorder(xgb.callback.TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rounds: list[int] = []

        def after_iteration(self, model, epoch, evals_log) -> bool:
            self.rounds.append(model.num_boosted_rounds())
            return False

    recorder = Recorder()
    train_booster((features, labels), None, params(num_round="5"), callbacks=[recorder], log=lambda _: None)
    assert recorder.rounds == [1, 2, 3, 4, 5]


def test_callback_can_stop_training(binary_data):
    features, labels = binary_data

    class StopAfterThree(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            return model.num_boosted_rounds() >= 3

    booster = train_booster(
        (features, labels), None, params(num_round="50"), callbacks=[StopAfterThree()], log=lambda _: None
    )
    assert booster.num_boosted_rounds() == 3


def test_early_stopping_with_validation_keeps_best_round():
    # Pure-noise labels: validation loss stops improving almost at once.
    rng = np.random.default_rng(3)
    train = (rng.normal(size=(300, 4)), rng.integers(0, 2, 300))
    valid = (rng.normal(size=(200, 4)), rng.integers(0, 2, 200))
    lines: list[str] = []
    booster = train_booster(
        train,
        valid,
        params(num_round="200", early_stopping_rounds="5", eta="0.5", gamma="0", min_child_weight="1"),
        log=lines.append,
    )
    assert booster.num_boosted_rounds() < 200
    assert booster.num_boosted_rounds() == booster.best_iteration + 1
    assert any(line.startswith("early stopping kept") for line in lines)
    assert len([line for line in lines if line.startswith("[round ")]) == booster.best_iteration + 1 + 5


def test_early_stopping_without_validation_is_ignored(binary_data):
    features, labels = binary_data
    lines: list[str] = []
    booster = train_booster((features, labels), None, params(early_stopping_rounds="2"), log=lines.append)
    assert booster.num_boosted_rounds() == 20
    assert "early_stopping_rounds=2 ignored: there is no validation data" in lines


def test_shape_mismatches_are_rejected(binary_data):
    features, labels = binary_data
    with pytest.raises(DataError, match="validation data has 4 features but training data has 5"):
        train_booster((features, labels), (features[:, :4], labels), params(), log=lambda _: None)
    with pytest.raises(DataError, match="train has 400 feature rows but labels of shape"):
        train_booster((features, labels[:10]), None, params(), log=lambda _: None)
    with pytest.raises(DataError, match="non-empty 2-D array"):
        train_booster((features[:0], labels[:0]), None, params(), log=lambda _: None)


# --- save / load ------------------------------------------------------------------------------


def test_save_and_load_round_trip_as_json(binary_data, tmp_path):
    features, labels = binary_data
    booster = train_booster((features, labels), None, params(num_round="5"), log=lambda _: None)
    path = save_model(booster, tmp_path / "model")
    assert path == tmp_path / "model" / MODEL_FILENAME
    document = json.loads(path.read_text())  # XGBoost's JSON format, not pickle
    assert "learner" in document
    for loaded in (load_booster(path), load_booster(tmp_path / "model")):
        assert loaded.num_boosted_rounds() == 5
        np.testing.assert_array_equal(
            loaded.predict(xgb.DMatrix(features)), booster.predict(xgb.DMatrix(features))
        )


def test_load_rejects_pickles_and_missing_files(tmp_path):
    pickled = tmp_path / MODEL_FILENAME
    pickled.write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(ValueError, match=r"not an XGBoost JSON/UBJ model .*pickled models are not loaded"):
        load_booster(pickled)
    with pytest.raises(FileNotFoundError, match=r"model file not found: .*missing"):
        load_booster(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model file not found: .*empty/xgboost-model"):
        load_booster(tmp_path / "empty")
