"""`train` as SageMaker runs it: a process in a base dir, success and every failure path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.training import METRIC_DEFINITIONS
from tests.container.conftest import (
    auc,
    base_env,
    make_classification,
    make_training_dir,
    predict_file,
    run_command,
    write_labelled_csv,
)


def test_trains_and_writes_model_and_metric_lines(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(
        tmp_path,
        # early_stopping_rounds=0 switches off the default early stopping a validation channel brings
        hyperparameters={
            "num_round": "20",
            "max_depth": "3",
            "eval_metric": "logloss,auc",
            "early_stopping_rounds": "0",
        },
        channels={
            "train": {"ContentType": "text/csv"},
            "validation": {"ContentType": "text/csv; label_size=1"},
        },
    )
    write_labelled_csv(layout.channel("train") / "part-1.csv", x[:2000], y[:2000])
    write_labelled_csv(layout.channel("validation") / "validation.csv", x[2000:], y[2000:])

    result = run_command("train", base_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert not layout.failure.exists()
    assert layout.model.read_bytes().startswith(b"{")
    scores = predict_file(layout.model, x[2000:])
    assert auc(y[2000:], scores) > 0.75
    # Every round prints one line that SageMaker's metric definitions parse.
    round_lines = [line for line in result.stdout.splitlines() if line.startswith("[round ")]
    assert len(round_lines) == 20
    for definition in METRIC_DEFINITIONS:
        if definition["Name"] in ("train:logloss", "validation:logloss", "train:auc", "validation:auc"):
            match = re.search(definition["Regex"], round_lines[-1])
            assert match, (definition, round_lines[-1])
            assert 0.0 <= float(match.group(1)) <= 1.0


def test_content_type_absent_is_csv(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path, hyperparameters={"num_round": "3"}, channels={"train": {}})
    write_labelled_csv(layout.channel("train") / "train.csv", x, y)
    result = run_command("train", base_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert layout.model.is_file()


def _failure(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    result = run_command("train", base_env(tmp_path))
    failure = tmp_path / "output" / "failure"
    assert result.returncode == 1, result.stdout + result.stderr
    assert failure.is_file(), result.stderr
    assert not (tmp_path / "model" / "xgboost-model").exists()
    return result, failure.read_text().splitlines()[0]


def test_bad_hyperparameter_fails_before_reading_data(tmp_path: Path) -> None:
    # No data at all: the hyperparameter error must come first.
    make_training_dir(tmp_path, hyperparameters={"max_depth": "deep", "num_round": "10"})
    _, reason = _failure(tmp_path)
    assert "max_depth='deep'" in reason
    assert "an int in [0, 64]" in reason


def test_hyperparameters_xgboost_refuses_together_fail_before_reading_data(tmp_path: Path) -> None:
    # Each value is in range; XGBoost itself would stop only inside training, with a C++ trace.
    make_training_dir(tmp_path, hyperparameters={"max_depth": "0", "tree_method": "exact"})
    _, reason = _failure(tmp_path)
    assert "max_depth=0 (no depth limit) is not supported with tree_method=exact" in reason
    assert "set max_depth to an int in [1, 64], or tree_method to hist or approx" in reason


def test_unknown_hyperparameter_is_named(tmp_path: Path) -> None:
    make_training_dir(tmp_path, hyperparameters={"max_dept": "3"})
    _, reason = _failure(tmp_path)
    assert "unknown hyperparameter 'max_dept'" in reason
    assert "did you mean 'max_depth'" in reason


def test_missing_train_channel(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path, channels={"validation": {"ContentType": "text/csv"}})
    write_labelled_csv(layout.channel("validation") / "v.csv", x, y)
    _, reason = _failure(tmp_path)
    assert reason.startswith("the training job has no 'train' channel (channels: validation)")


def test_declared_channel_without_directory(tmp_path: Path) -> None:
    make_training_dir(tmp_path)
    _, reason = _failure(tmp_path)
    assert "channel 'train' is in inputdataconfig.json but" in reason
    assert "does not exist" in reason


def test_unsupported_content_type(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(
        tmp_path, channels={"train": {"ContentType": "application/x-recordio-protobuf"}}
    )
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    _, reason = _failure(tmp_path)
    assert "ContentType 'application/x-recordio-protobuf'" in reason
    assert "set the channel's ContentType to text/csv" in reason


def test_label_size_other_than_one_is_rejected(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path, channels={"train": {"ContentType": "text/csv;label_size=2"}})
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    _, reason = _failure(tmp_path)
    assert "ContentType 'text/csv;label_size=2'" in reason


def test_bad_data_names_file_row_and_column(tmp_path: Path) -> None:
    layout = make_training_dir(tmp_path)
    layout.channel("train").mkdir(parents=True)
    (layout.channel("train") / "train.csv").write_text("1,0.5,2\n0,0.1,3\n1,abc,4\n")
    _, reason = _failure(tmp_path)
    assert "train.csv row 3 column 2" in reason
    assert "'abc' is not a number" in reason


def test_header_row_in_training_data(tmp_path: Path) -> None:
    layout = make_training_dir(tmp_path)
    layout.channel("train").mkdir(parents=True)
    (layout.channel("train") / "train.csv").write_text("Label,LIMIT_BAL,AGE\n1,20000,24\n")
    _, reason = _failure(tmp_path)
    assert "looks like a header row" in reason


def test_malformed_config_json(tmp_path: Path) -> None:
    layout = make_training_dir(tmp_path)
    (layout.config / "resourceconfig.json").write_text('{"current_host": "algo-1", "hosts": [')
    _, reason = _failure(tmp_path)
    assert reason.startswith("resource config ")
    assert "is not valid JSON (line 1 column" in reason


def test_hyperparameters_not_an_object(tmp_path: Path) -> None:
    layout = make_training_dir(tmp_path)
    (layout.config / "hyperparameters.json").write_text('["num_round", "10"]')
    _, reason = _failure(tmp_path)
    assert "must hold a JSON object of name -> value, not a list" in reason


def test_current_host_not_in_hosts(tmp_path: Path) -> None:
    make_training_dir(tmp_path, hosts=("algo-1", "algo-2"), current_host="algo-3")
    _, reason = _failure(tmp_path)
    assert "current_host 'algo-3' is not among hosts ['algo-1', 'algo-2']" in reason


def test_unexpected_exception_gets_reason_and_traceback(tmp_path: Path) -> None:
    # A bug (not one of the project's own errors) still ends in the failure file, with a
    # one-line reason first and the traceback after it.
    code = (
        "from ml.sagemaker.failure import run_entry_point\n"
        "def job(paths):\n"
        "    return {}['missing']\n"
        "run_entry_point(job, name='demo')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = (tmp_path / "output" / "failure").read_text().splitlines()
    assert lines[0] == "unexpected error (KeyError): 'missing'"
    assert lines[1] == "Traceback (most recent call last):"
    assert "KeyError: 'missing'" in lines[-1]


def test_resumes_from_checkpoint_of_a_previous_run(tmp_path: Path, training_data) -> None:
    """A restarted job finds the checkpoints SageMaker restored and trains only what is left."""
    x, y = training_data
    layout = make_training_dir(tmp_path, hyperparameters={"num_round": "12"})
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    first = run_command("train", base_env(tmp_path, ML_CHECKPOINT_FREQUENCY="4"))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in layout.checkpoints.iterdir()) == [
        "xgboost-checkpoint.12",
        "xgboost-checkpoint.12.json",
        "xgboost-checkpoint.4",
        "xgboost-checkpoint.4.json",
        "xgboost-checkpoint.8",
        "xgboost-checkpoint.8.json",
    ]
    (layout.base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"num_round": "20"}))
    second = run_command("train", base_env(tmp_path, ML_CHECKPOINT_FREQUENCY="4"))
    assert second.returncode == 0, second.stderr
    assert "resuming from checkpoint" in second.stdout
    assert "8 of 20 rounds, resuming a model with 12 rounds" in second.stdout
    rounds = [line for line in second.stdout.splitlines() if line.startswith("[round ")]
    assert rounds[0].startswith("[round 13]") and rounds[-1].startswith("[round 20]")
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(layout.model.read_bytes()))
    assert booster.num_boosted_rounds() == 20


def test_bad_checkpoint_frequency(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path)
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    result = run_command("train", base_env(tmp_path, ML_CHECKPOINT_FREQUENCY="often"))
    assert result.returncode == 1
    assert "ML_CHECKPOINT_FREQUENCY='often'" in layout.failure.read_text()


@pytest.mark.parametrize("rows", [1])
def test_single_row_still_trains(tmp_path: Path, rows: int) -> None:
    x, y = make_classification(rows)
    layout = make_training_dir(tmp_path, hyperparameters={"num_round": "2"})
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    result = run_command("train", base_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert np.isfinite(predict_file(layout.model, x)).all()


def _hyperparameters_file(layout) -> Path:
    return layout.config / "hyperparameters.json"


def test_checkpoint_of_other_hyperparameters_or_features_is_ignored(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path, hyperparameters={"num_round": "8", "max_depth": "3"})
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    env = base_env(tmp_path, ML_CHECKPOINT_FREQUENCY="4")
    first = run_command("train", env)
    assert first.returncode == 0, first.stderr
    fingerprint_8 = json.loads((layout.checkpoints / "xgboost-checkpoint.8.json").read_text())
    assert set(fingerprint_8) == {"hyperparameters_sha256", "n_features"} and fingerprint_8["n_features"] == 8

    # Other max_depth: the 8-round checkpoint is not continued; training starts from round 1.
    _hyperparameters_file(layout).write_text(json.dumps({"num_round": "6", "max_depth": "4"}))
    other_params = run_command("train", env)
    assert other_params.returncode == 0, other_params.stderr
    assert (
        "ignoring checkpoint xgboost-checkpoint.8: it was trained with other hyperparameters"
        in other_params.stdout
    )
    assert "resuming" not in other_params.stdout
    rounds = [line for line in other_params.stdout.splitlines() if line.startswith("[round ")]
    assert rounds[0].startswith("[round 1]") and len(rounds) == 6
    assert xgb_rounds(layout.model) == 6
    # The foreign, higher-numbered checkpoints survive, and so do this run's own (pruning is per kind).
    names = {p.name for p in layout.checkpoints.iterdir()}
    assert {"xgboost-checkpoint.8", "xgboost-checkpoint.6", "xgboost-checkpoint.4"} <= names

    # Only loop settings differ from the first run (num_round, verbosity, nthread): its
    # 8-round checkpoint is resumed although the newer run overwrote checkpoint 4.
    _hyperparameters_file(layout).write_text(
        json.dumps({"num_round": "10", "max_depth": "3", "verbosity": "1", "nthread": "1"})
    )
    same_model = run_command("train", env)
    assert same_model.returncode == 0, same_model.stderr
    assert "2 of 10 rounds, resuming a model with 8 rounds" in same_model.stdout

    # Same hyperparameters, but one feature fewer: its checkpoints are ignored as well.
    write_labelled_csv(layout.channel("train") / "t.csv", x[:, :-1], y)
    fewer_features = run_command("train", env)
    assert fewer_features.returncode == 0, fewer_features.stderr
    assert "ignoring checkpoint xgboost-checkpoint.10: it was trained with other" in fewer_features.stdout
    assert "resuming" not in fewer_features.stdout
    assert xgb_rounds(layout.model) == 10


def test_matching_checkpoint_with_more_rounds_than_num_round_fails(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path, hyperparameters={"num_round": "12"})
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    env = base_env(tmp_path, ML_CHECKPOINT_FREQUENCY="4")
    assert run_command("train", env).returncode == 0
    layout.model.unlink()

    _hyperparameters_file(layout).write_text(json.dumps({"num_round": "5"}))
    result = run_command("train", env)

    assert result.returncode == 1, result.stdout + result.stderr
    reason = layout.failure.read_text().splitlines()[0]
    assert "has 12 rounds but num_round is 5" in reason
    assert "Clear the checkpoint location" in reason and str(layout.checkpoints) in reason
    assert not layout.model.exists()


def test_validation_channel_enables_early_stopping_by_default(tmp_path: Path) -> None:
    # Pure noise: the validation logloss stops improving after a few rounds of eta=0.5.
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(1200, 6)), rng.integers(0, 2, size=1200)
    hyperparameters = {"num_round": "300", "eta": "0.5", "gamma": "0", "min_child_weight": "1"}
    layout = make_training_dir(
        tmp_path,
        hyperparameters=hyperparameters,
        channels={"train": {"ContentType": "text/csv"}, "validation": {"ContentType": "text/csv"}},
    )
    write_labelled_csv(layout.channel("train") / "t.csv", x[:800], y[:800])
    write_labelled_csv(layout.channel("validation") / "v.csv", x[800:], y[800:])

    stopped = run_command("train", base_env(tmp_path))

    assert stopped.returncode == 0, stopped.stderr
    rounds = [line for line in stopped.stdout.splitlines() if line.startswith("[round ")]
    assert len(rounds) < 300
    assert "early stopping kept" in stopped.stdout
    kept = xgb_rounds(layout.model)
    # The default patience is 10 rounds: training ran exactly 10 rounds past the best one it kept.
    assert len(rounds) == kept + 10

    # Without a validation channel the same hyperparameters train every round.
    no_validation = make_training_dir(
        tmp_path / "no-validation", hyperparameters={**hyperparameters, "num_round": "40"}
    )
    write_labelled_csv(no_validation.channel("train") / "t.csv", x[:800], y[:800])
    full = run_command("train", base_env(no_validation.base))
    assert full.returncode == 0, full.stderr
    assert "early stopping" not in full.stdout and "early_stopping" not in full.stdout.split("\n", 1)[1]
    assert xgb_rounds(no_validation.model) == 40


def test_success_removes_failure_files_of_an_earlier_run(tmp_path: Path, training_data) -> None:
    x, y = training_data
    layout = make_training_dir(tmp_path, hyperparameters={"num_round": "3", "max_depth": "nope"})
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    failed = run_command("train", base_env(tmp_path))
    assert failed.returncode == 1 and "max_depth" in layout.failure.read_text()
    # A processing job's ExitMessage from an earlier run in the same base dir goes too.
    (layout.base / "output" / "message").write_text("an old failure\n")

    _hyperparameters_file(layout).write_text(json.dumps({"num_round": "3"}))
    retried = run_command("train", base_env(tmp_path))

    assert retried.returncode == 0, retried.stderr
    assert layout.model.exists()
    assert not layout.failure.exists()
    assert not (layout.base / "output" / "message").exists()


def xgb_rounds(model_file: Path) -> int:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(model_file.read_bytes()))
    return booster.num_boosted_rounds()
