"""Helpers for running the container's entry points as real processes in temporary base dirs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """The console script installed next to this interpreter (train, serve, ml-*)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"console script {name} not installed in {BIN}: run pip install -e . (make venv)")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(base_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "SM_", "ML_"))}
    env["SAGEMAKER_BASE_DIR"] = str(base_dir)
    env["MPLBACKEND"] = "Agg"
    env.update(extra)
    return env


def make_classification(n_rows: int, n_features: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable, noisy binary problem (non-linear, so boosting rounds keep mattering)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features))
    logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3] + np.sin(2 * x[:, 4]) - 0.5
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return x, y


def write_labelled_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    return path


@dataclass
class TrainingDir:
    base: Path

    @property
    def config(self) -> Path:
        return self.base / "input" / "config"

    def channel(self, name: str) -> Path:
        return self.base / "input" / "data" / name

    @property
    def failure(self) -> Path:
        return self.base / "output" / "failure"

    @property
    def model(self) -> Path:
        return self.base / "model" / "xgboost-model"

    @property
    def checkpoints(self) -> Path:
        return self.base / "checkpoints"


def make_training_dir(
    base: Path,
    *,
    hyperparameters: Mapping[str, str] | None = None,
    channels: Mapping[str, Mapping[str, str]] | None = None,
    hosts: tuple[str, ...] = ("algo-1",),
    current_host: str = "algo-1",
) -> TrainingDir:
    """Write input/config/*.json the way SageMaker does (hyperparameter values are strings)."""
    layout = TrainingDir(base)
    layout.config.mkdir(parents=True, exist_ok=True)
    (layout.config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters or {})))
    if channels is None:
        channels = {"train": {"ContentType": "text/csv"}}
    input_config = {
        name: {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
            **c,
        }
        for name, c in channels.items()
    }
    (layout.config / "inputdataconfig.json").write_text(json.dumps(input_config))
    (layout.config / "resourceconfig.json").write_text(
        json.dumps({"current_host": current_host, "hosts": list(hosts), "network_interface_name": "eth0"})
    )
    return layout


def run_command(
    name: str, env: Mapping[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command(name), *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def logloss(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7)))


def predict_file(model_file: Path, x: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(model_file.read_bytes()))
    return np.asarray(booster.inplace_predict(x.astype(np.float32)))


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(base_dir: Path, log_path: Path, *, wait_ready: bool = True, **env: str) -> Server:
    port = free_port()
    settings = {"SAGEMAKER_BIND_TO_PORT": str(port), "ML_BIND_HOST": "127.0.0.1", **env}
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [command("serve")], env=base_env(base_dir, **settings), stdout=handle, stderr=subprocess.STDOUT
    )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{server.log()}")
        try:
            response = requests.get(server.url + "/ping", timeout=2)
        except requests.ConnectionError:
            time.sleep(0.2)
            continue
        if response.status_code == 200 or not wait_ready:
            return server
        time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"serve did not become ready:\n{server.log()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture
def training_data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(3000)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base dir whose model/ holds a model trained by the real `train` command (8 features)."""
    base = tmp_path_factory.mktemp("served")
    layout = make_training_dir(base, hyperparameters={"num_round": "30", "max_depth": "4"})
    x, y = make_classification(4000, seed=1)
    write_labelled_csv(layout.channel("train") / "train.csv", x, y)
    result = run_command("train", base_env(base))
    assert result.returncode == 0, result.stdout + result.stderr
    return base


@pytest.fixture(scope="module")
def server(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server-log") / "serve.log"
    started = start_server(trained_model_dir, log_path, SAGEMAKER_MODEL_SERVER_WORKERS="2")
    yield started
    stop_server(started)
