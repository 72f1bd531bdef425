"""Managed spot: SIGTERM mid-training saves a checkpoint, a restart resumes and ends equivalent.

Tolerance: the resumed model must match an uninterrupted run within 0.01 AUC and 0.01 logloss
on held-out rows. They are not bit-identical because row subsampling (subsample=0.8) draws from
XGBoost's random engine, whose state is not part of a saved model, so the rounds after the
restart see other samples than the uninterrupted run does.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

from ml.sagemaker.checkpoints import CheckpointStore
from tests.container.conftest import (
    auc,
    base_env,
    command,
    logloss,
    make_classification,
    make_training_dir,
    predict_file,
    run_command,
    write_labelled_csv,
)

NUM_ROUND = 400
AUC_TOLERANCE = 0.01
LOGLOSS_TOLERANCE = 0.01


def _layout(base: Path, x: np.ndarray, y: np.ndarray):
    layout = make_training_dir(
        base,
        hyperparameters={"num_round": str(NUM_ROUND), "max_depth": "6", "eta": "0.05", "subsample": "0.8"},
    )
    write_labelled_csv(layout.channel("train") / "train.csv", x, y)
    return layout


def test_sigterm_saves_checkpoint_and_restart_resumes_to_same_quality(tmp_path: Path) -> None:
    x, y = make_classification(30000, seed=3)
    train_x, train_y, test_x, test_y = x[:24000], y[:24000], x[24000:], y[24000:]

    reference = _layout(tmp_path / "reference", train_x, train_y)
    finished = run_command("train", base_env(reference.base))
    assert finished.returncode == 0, finished.stderr

    interrupted = _layout(tmp_path / "spot", train_x, train_y)
    env = base_env(interrupted.base, ML_CHECKPOINT_FREQUENCY="5")
    process = subprocess.Popen(
        [command("train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    # Interrupt well into training (a checkpoint of >= 50 of 400 rounds exists) but before the end.
    while not any(rounds >= 50 for rounds, _ in CheckpointStore(interrupted.checkpoints).checkpoints()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)

    # Interrupted: exit 143, a checkpoint of the last round, no model, no failure file.
    assert process.returncode == 143, stdout + stderr
    assert "SIGTERM received" in stderr
    assert not interrupted.model.exists()
    assert not interrupted.failure.exists()
    saved = CheckpointStore(interrupted.checkpoints).checkpoints()
    stopped_at = saved[-1][0]
    assert 50 <= stopped_at < NUM_ROUND
    assert f"stopped by SIGTERM after {stopped_at} of {NUM_ROUND} rounds" in stderr
    assert not list(interrupted.checkpoints.glob("*.sagemaker-ignore"))

    # Restarted (SageMaker restores checkpoints/ and runs `train` again): resumes, finishes.
    resumed = run_command("train", env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({stopped_at} rounds)" in resumed.stdout
    first_round = next(line for line in resumed.stdout.splitlines() if line.startswith("[round "))
    assert first_round.startswith(f"[round {stopped_at + 1}]")
    booster = xgb.Booster()
    booster.load_model(bytearray(interrupted.model.read_bytes()))
    assert booster.num_boosted_rounds() == NUM_ROUND

    expected = predict_file(reference.model, test_x)
    actual = predict_file(interrupted.model, test_x)
    print(
        f"stopped after {stopped_at} rounds; AUC resumed {auc(test_y, actual):.5f} vs uninterrupted "
        f"{auc(test_y, expected):.5f}; logloss {logloss(test_y, actual):.5f} vs {logloss(test_y, expected):.5f}"
    )
    assert abs(auc(test_y, actual) - auc(test_y, expected)) <= AUC_TOLERANCE
    assert abs(logloss(test_y, actual) - logloss(test_y, expected)) <= LOGLOSS_TOLERANCE


def _booster(rounds: int) -> xgb.Booster:
    x, y = make_classification(200)
    return xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=y), rounds)


def test_truncated_latest_checkpoint_is_skipped(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, log=lambda _: None)
    store.save(_booster(5), 5)
    good = store.save(_booster(10), 10)
    # What a kill in the middle of a non-atomic write would leave behind.
    (tmp_path / "xgboost-checkpoint.15").write_bytes(good.read_bytes()[:100])
    (tmp_path / ".xgboost-checkpoint.20.abc.sagemaker-ignore").write_bytes(b"{partial")
    rounds, booster, path = store.latest() or (0, None, None)
    assert rounds == 10 and path == good
    assert booster is not None and booster.num_boosted_rounds() == 10
    assert not list(tmp_path.glob("*.sagemaker-ignore"))


def test_prune_keeps_newest_and_files_still_uploading(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2, log=lambda _: None)
    store.save(_booster(1), 1)
    (tmp_path / "xgboost-checkpoint.1.sagemaker-uploading").touch()
    for rounds in (2, 3, 4):
        store.save(_booster(rounds), rounds)
    assert [r for r, _ in store.checkpoints()] == [1, 3, 4]
    (tmp_path / "xgboost-checkpoint.1.sagemaker-uploaded").touch()
    store.save(_booster(5), 5)
    assert [r for r, _ in store.checkpoints()] == [4, 5]
