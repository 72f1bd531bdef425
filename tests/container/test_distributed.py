"""Several training hosts, each a `train` process with its own base dir, on loopback.

Tolerance: the distributed model's AUC on held-out rows is within 0.01 of a single host trained
on all the rows. They differ slightly because histogram training merges the hosts' quantile
sketches, so split candidates are not exactly a single host's. Row subsampling is off
(subsample=1) so that the comparison measures distribution, not the random draws of each host.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from tests.container.conftest import (
    auc,
    base_env,
    command,
    free_port,
    make_classification,
    make_training_dir,
    predict_file,
    run_command,
    write_labelled_csv,
)

AUC_TOLERANCE = 0.01
HYPERPARAMETERS = {
    "num_round": "40",
    "max_depth": "4",
    "eta": "0.2",
    "subsample": "1",
    "eval_metric": "logloss,auc",
}


def _single_host_auc(
    base: Path, x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    layout = make_training_dir(base, hyperparameters=HYPERPARAMETERS)
    write_labelled_csv(layout.channel("train") / "train.csv", x, y)
    result = run_command("train", base_env(base))
    assert result.returncode == 0, result.stderr
    return auc(test_y, predict_file(layout.model, test_x))


def _run_cluster(tmp_path: Path, shards: list[tuple[np.ndarray, np.ndarray]], distribution: str):
    hosts = tuple(f"algo-{i + 1}" for i in range(len(shards)))
    env_extra = {
        "ML_HOST_ADDRESSES": json.dumps(dict.fromkeys(hosts, "127.0.0.1")),
        "ML_TRACKER_PORT": str(free_port()),
        "ML_TRACKER_TIMEOUT": "120",
    }
    layouts, processes = [], []
    for host, (x, y) in zip(hosts, shards, strict=True):
        layout = make_training_dir(
            tmp_path / host,
            hyperparameters=HYPERPARAMETERS,
            channels={"train": {"ContentType": "text/csv", "S3DistributionType": distribution}},
            hosts=hosts,
            current_host=host,
        )
        write_labelled_csv(layout.channel("train") / f"train-{host}.csv", x, y)
        layouts.append(layout)
    for layout in layouts:
        processes.append(
            subprocess.Popen(
                [command("train")],
                env=base_env(layout.base, **env_extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    return layouts, outputs


def test_three_hosts_sharded_by_s3_key_train_one_model(tmp_path: Path) -> None:
    x, y = make_classification(12000, seed=5)
    train_x, train_y, test_x, test_y = x[:9000], y[:9000], x[9000:], y[9000:]
    shards = [(train_x[i::3], train_y[i::3]) for i in range(3)]

    layouts, outputs = _run_cluster(tmp_path / "cluster", shards, "ShardedByS3Key")

    # Only the first host writes the model; the others say so.
    assert layouts[0].model.is_file()
    assert not layouts[1].model.exists() and not layouts[2].model.exists()
    assert "the first host writes the model" in outputs[1][0]
    # Each host trained on its own 3000 rows, evaluated globally (the metric lines agree).
    for stdout, _ in outputs:
        assert "training on 3000 rows x 8 features" in stdout
    last_lines = {
        next(line for line in out.splitlines() if line.startswith("[round 40]")) for out, _ in outputs
    }
    assert len(last_lines) == 1

    distributed = auc(test_y, predict_file(layouts[0].model, test_x))
    single = _single_host_auc(tmp_path / "single", train_x, train_y, test_x, test_y)
    print(f"3 hosts ShardedByS3Key AUC {distributed:.5f} vs single host {single:.5f}")
    assert abs(distributed - single) <= AUC_TOLERANCE


def test_two_hosts_fully_replicated_each_use_half_of_the_rows(tmp_path: Path) -> None:
    x, y = make_classification(8000, seed=6)
    train_x, train_y, test_x, test_y = x[:6000], y[:6000], x[6000:], y[6000:]

    layouts, outputs = _run_cluster(tmp_path / "cluster", [(train_x, train_y)] * 2, "FullyReplicated")

    for stdout, _ in outputs:
        assert "training on 3000 rows x 8 features" in stdout
    distributed = auc(test_y, predict_file(layouts[0].model, test_x))
    single = _single_host_auc(tmp_path / "single", train_x, train_y, test_x, test_y)
    print(f"2 hosts FullyReplicated AUC {distributed:.5f} vs single host {single:.5f}")
    assert abs(distributed - single) <= AUC_TOLERANCE


def test_host_that_cannot_reach_the_tracker_fails_with_a_reason(tmp_path: Path) -> None:
    layout = make_training_dir(tmp_path, hosts=("algo-1", "algo-2"), current_host="algo-2")
    x, y = make_classification(100)
    write_labelled_csv(layout.channel("train") / "t.csv", x, y)
    env = base_env(
        tmp_path,
        ML_HOST_ADDRESSES=json.dumps({"algo-1": "127.0.0.1", "algo-2": "127.0.0.1"}),
        ML_TRACKER_PORT=str(free_port()),
        ML_TRACKER_TIMEOUT="3",
    )
    result = run_command("train", env, timeout=180)
    assert result.returncode == 1
    reason = layout.failure.read_text().splitlines()[0]
    assert reason.startswith("host algo-2 could not join the training cluster through the tracker at algo-1")
