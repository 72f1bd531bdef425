"""Rows per second of the model server on 6 MB CSV payloads, against two baselines in one run.

1. ours: `serve` (real gunicorn, loopback), several concurrent clients;
2. in-process: the same parse + predict + format (`ml.inference`) without HTTP, with the server's
   parallelism: WORKERS processes, each with the server's XGBoost threads per worker, over the
   same number of payloads;
3. naive: a Flask handler in the style of AWS's scikit-learn bring-your-own example
   (`pd.read_csv(io.StringIO(body.decode()), header=None)`, `xgb.DMatrix`, predict,
   `pd.DataFrame(...).to_csv`) under the same gunicorn settings and XGBoost threads per worker.

Targets: ours >= 1.5x naive and >= 0.6x in-process. Run: `.venv/bin/python benchmarks/serve_throughput.py`.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

from ml.data import SYNTHETIC_NOTICE, synthetic_dataset
from ml.hyperparameters import DEFAULT_HYPERPARAMETERS, parse_hyperparameters
from ml.inference import CSV, Predictor, format_predictions, load_model, parse_csv_rows
from ml.training import save_model, train_booster

PAYLOAD_BYTES = 6 * 1024 * 1024
CLIENTS = 4
REQUESTS = 16
WORKERS = 2
THREADS = 2
BIN = Path(sys.executable).parent

NAIVE_APP = textwrap.dedent(
    """
    import io
    import os

    import flask
    import pandas as pd
    import xgboost as xgb

    model = xgb.Booster()
    model.load_model(os.path.join(os.environ["MODEL_DIR"], "xgboost-model"))
    # The same XGBoost threads per worker as `serve`, so the workers do not compete for cores.
    model.set_param({"nthread": int(os.environ["PREDICT_THREADS"])})
    app = flask.Flask(__name__)


    @app.route("/ping", methods=["GET"])
    def ping():
        return flask.Response(response="\\n", status=200, mimetype="application/json")


    @app.route("/invocations", methods=["POST"])
    def transformation():
        if flask.request.content_type != "text/csv":
            return flask.Response(response="This predictor only supports CSV data", status=415, mimetype="text/plain")
        data = flask.request.data.decode("utf-8")
        frame = pd.read_csv(io.StringIO(data), header=None)
        predictions = model.predict(xgb.DMatrix(frame))
        out = io.StringIO()
        pd.DataFrame({"probability": predictions, "label": (predictions >= 0.5).astype(int)}).to_csv(
            out, header=False, index=False
        )
        return flask.Response(response=out.getvalue(), status=200, mimetype="text/csv")
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_model(base: Path) -> tuple[Path, np.ndarray]:
    frame = synthetic_dataset(n_rows=5000, seed=0)
    labels = frame["Label"].to_numpy()
    features = frame.drop(columns=["Label"]).to_numpy(dtype=np.float64)
    params = parse_hyperparameters(DEFAULT_HYPERPARAMETERS)
    booster = train_booster((features, labels), None, params, log=lambda _: None)
    model_dir = base / "model"
    save_model(booster, model_dir)
    return model_dir, features


def make_payload(features: np.ndarray) -> tuple[bytes, int]:
    """Headerless CSV rows as preprocessing writes them, repeated up to ~6 MB."""
    lines = [
        "".join([",".join(repr(float(v)) if v % 1 else str(int(v)) for v in row), "\n"]) for row in features
    ]
    body = "".join(lines).encode()
    repeats = PAYLOAD_BYTES // len(body) + 1
    rows_per_copy = len(lines)
    full = body * repeats
    cut = full[:PAYLOAD_BYTES].rfind(b"\n") + 1
    payload = full[:cut]
    return payload, payload.count(b"\n") if rows_per_copy else 0


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(url + "/ping", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or workers still importing
        time.sleep(0.2)
    raise SystemExit(f"server at {url} not ready:\n{log.read_text()}")


def measure_server(url: str, payload: bytes, rows: int) -> float:
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    response = requests.post(url + "/invocations", data=payload, headers=headers, timeout=120)  # warm-up
    if response.status_code != 200 or response.content.count(b"\n") != rows:
        raise SystemExit(f"bad answer from {url}: {response.status_code} {response.text[:300]}")

    def one(_: int) -> int:
        with requests.Session() as session:
            answer = session.post(url + "/invocations", data=payload, headers=headers, timeout=120)
        if answer.status_code != 200:
            raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")
        return answer.content.count(b"\n")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        served = sum(pool.map(one, range(REQUESTS)))
    return served / (time.perf_counter() - started)


def predict_threads_per_worker() -> int:
    """What `serve` gives each worker by default (ML_PREDICT_THREADS: usable CPUs / workers)."""
    return max(1, len(os.sched_getaffinity(0)) // WORKERS)


# Per-process state of the in-process pool: the model and the payload are set up once per
# process by the initializer, like a gunicorn worker that loaded the model at start-up.
_POOL_STATE: dict[str, Any] = {}


def _init_in_process_worker(model_dir: Path, payload: bytes, nthread: int) -> None:
    _POOL_STATE["predictor"] = load_model(model_dir, nthread=nthread)
    _POOL_STATE["payload"] = payload


def _in_process_request(_: int) -> int:
    predictor: Predictor = _POOL_STATE["predictor"]
    payload: bytes = _POOL_STATE["payload"]
    matrix = parse_csv_rows(payload, predictor.n_features)
    return format_predictions(predictor.predict(matrix), 0.5, CSV).count(b"\n")


def measure_in_process(model_dir: Path, payload: bytes, rows: int) -> float:
    """The fair baseline: the server's parallelism without HTTP. One process with
    nthread = all predict threads would parallelise only predict, while parsing and formatting
    (most of the time) stay on one core; the server runs them in WORKERS processes at once. So
    WORKERS processes, each with the server's predict threads per worker, handle the same
    REQUESTS payloads and the rate is rows over wall time, as for the servers."""
    # spawn, not fork: the parent has already run XGBoost's OpenMP threads (training), and a forked
    # child that starts OpenMP again can hang. The payload is sent once per process, untimed.
    context = multiprocessing.get_context("spawn")
    with context.Pool(
        WORKERS,
        initializer=_init_in_process_worker,
        initargs=(model_dir, payload, predict_threads_per_worker()),
    ) as pool:
        pool.map(_in_process_request, range(WORKERS), chunksize=1)  # warm-up, as for the servers
        started = time.perf_counter()
        counts = pool.map(_in_process_request, range(REQUESTS), chunksize=1)
        elapsed = time.perf_counter() - started
    if any(count != rows for count in counts):
        raise SystemExit(f"in-process run returned {counts} rows per payload, expected {rows}")
    return rows * REQUESTS / elapsed


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    print(SYNTHETIC_NOTICE)
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        model_dir, features = build_model(base)
        payload, rows = make_payload(features)
        print(
            f"payload: {len(payload) / 2**20:.1f} MiB, {rows} rows x {features.shape[1]} features per request"
        )
        print(
            f"servers: gunicorn, {WORKERS} workers x {THREADS} threads; {CLIENTS} clients, {REQUESTS} requests"
        )

        in_process = measure_in_process(model_dir, payload, rows)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "ML_"))}
        ours_port = free_port()
        ours_env = {
            **env,
            "SAGEMAKER_BASE_DIR": str(base),
            "SAGEMAKER_BIND_TO_PORT": str(ours_port),
            "ML_BIND_HOST": "127.0.0.1",
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS),
            "ML_SERVER_THREADS": str(THREADS),
        }
        ours = start([str(BIN / "serve")], ours_env, base / "ours.log", base)
        try:
            wait_ready(f"http://127.0.0.1:{ours_port}", ours, base / "ours.log")
            served = measure_server(f"http://127.0.0.1:{ours_port}", payload, rows)
        finally:
            stop(ours)

        (base / "naive_app.py").write_text(NAIVE_APP)
        naive_port = free_port()
        naive_command = [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{naive_port}",
            "--workers",
            str(WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(THREADS),
            "--timeout",
            "120",
            "naive_app:app",
        ]
        naive = start(
            naive_command,
            {**env, "MODEL_DIR": str(model_dir), "PREDICT_THREADS": str(predict_threads_per_worker())},
            base / "naive.log",
            base,
        )
        try:
            wait_ready(f"http://127.0.0.1:{naive_port}", naive, base / "naive.log")
            naive_rate = measure_server(f"http://127.0.0.1:{naive_port}", payload, rows)
        finally:
            stop(naive)

    print(
        f"in-process parse+predict+format: {in_process:12,.0f} rows/s "
        f"({WORKERS} processes x {predict_threads_per_worker()} predict thread(s), as the server)"
    )
    print(f"serve (ours, HTTP):              {served:12,.0f} rows/s")
    print(f"naive Flask handler (HTTP):      {naive_rate:12,.0f} rows/s")
    versus_naive = served / naive_rate
    versus_in_process = served / in_process
    print(
        f"ours / naive      = {versus_naive:.2f}  (target >= 1.5: {'met' if versus_naive >= 1.5 else 'MISSED'})"
    )
    print(
        f"ours / in-process = {versus_in_process:.2f}  "
        f"(target >= 0.6: {'met' if versus_in_process >= 0.6 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
