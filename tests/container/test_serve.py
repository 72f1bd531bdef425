"""`serve` as SageMaker runs it: real gunicorn on a loopback port, every endpoint and error."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil
import pytest
import requests

from ml.sagemaker import serving_limits
from tests.container.conftest import (
    Server,
    make_classification,
    predict_file,
    start_server,
    stop_server,
)

N_FEATURES = 8
CSV_ROW = re.compile(rb"^[01]\.\d{6},[01]$")


def _csv(x: np.ndarray) -> bytes:
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in x).encode()


def _post(server: Server, body: bytes, content_type: str | None = "text/csv", accept: str | None = None):
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    return requests.post(server.url + "/invocations", data=body, headers=headers, timeout=60)


def _model_file(base: Path) -> Path:
    return base / "model" / "xgboost-model"


def test_ping_and_execution_parameters(server: Server) -> None:
    ping = requests.get(server.url + "/ping", timeout=10)
    assert ping.status_code == 200
    parameters = requests.get(server.url + "/execution-parameters", timeout=10)
    assert parameters.status_code == 200
    assert parameters.headers["Content-Type"] == "application/json"
    assert parameters.json() == {
        "MaxConcurrentTransforms": serving_limits.MAX_CONCURRENT_TRANSFORMS,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": serving_limits.MAX_PAYLOAD_MB,
    }


def test_csv_rows_in_csv_rows_out_match_the_model(server: Server, trained_model_dir: Path) -> None:
    x, _ = make_classification(500, seed=9)
    response = _post(server, _csv(x))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv"
    lines = response.content.splitlines()
    assert len(lines) == 500
    assert all(CSV_ROW.match(line) for line in lines)
    served = np.array([float(line.split(b",")[0]) for line in lines])
    labels = np.array([int(line.split(b",")[1]) for line in lines])
    expected = predict_file(
        _model_file(trained_model_dir), np.loadtxt(_csv(x).decode().splitlines(), delimiter=",")
    )
    np.testing.assert_allclose(served, expected, atol=5e-7)
    np.testing.assert_array_equal(labels, (expected >= 0.5).astype(int))


@pytest.mark.parametrize("accept", [None, "*/*", "text/csv", "text/html;q=0.9, */*;q=0.1"])
def test_accept_defaults_to_csv(server: Server, accept: str | None) -> None:
    x, _ = make_classification(3)
    response = _post(server, _csv(x), accept=accept)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv"
    assert len(response.content.splitlines()) == 3


def test_content_type_parameters_and_crlf(server: Server) -> None:
    x, _ = make_classification(4)
    body = _csv(x).replace(b"\n", b"\r\n")
    response = _post(server, body, content_type="text/csv; charset=utf-8")
    assert response.status_code == 200
    assert len(response.content.splitlines()) == 4


def test_quoted_numbers_are_accepted(server: Server) -> None:
    x, _ = make_classification(3)
    plain = _post(server, _csv(x))
    quoted_body = b"\n".join(
        b",".join(b'"' + field + b'"' for field in line.split(b",")) for line in _csv(x).splitlines()
    )
    quoted = _post(server, quoted_body + b"\n")
    assert quoted.status_code == 200, quoted.text
    assert quoted.content == plain.content


def test_missing_values_are_allowed(server: Server) -> None:
    response = _post(server, b"1,,3,4,5,6,7,8\n" + b",,,,,,,\n")
    assert response.status_code == 200
    assert len(response.content.splitlines()) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [[0.1] * N_FEATURES, [0.2] * N_FEATURES]},
        {"instances": [{"features": [0.1] * N_FEATURES}, {"features": [0.2] * N_FEATURES}]},
        [[0.1] * N_FEATURES, [0.2] * N_FEATURES],
    ],
)
def test_json_in_json_out(server: Server, body) -> None:
    response = _post(
        server, json.dumps(body).encode(), content_type="application/json", accept="application/json"
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for row in predictions:
        assert set(row) == {"probability", "predicted_label"}
        assert 0 <= row["probability"] <= 1
        assert row["predicted_label"] == int(row["probability"] >= 0.5)


def test_single_json_features_object(server: Server) -> None:
    body = json.dumps({"features": [1.0] * N_FEATURES}).encode()
    response = _post(server, body, content_type="application/json", accept="application/jsonlines")
    assert response.status_code == 200
    lines = response.content.splitlines()
    assert len(lines) == 1
    assert set(json.loads(lines[0])) == {"probability", "predicted_label"}


def test_jsonlines_in_jsonlines_out(server: Server) -> None:
    body = (
        b"[1,2,3,4,5,6,7,8]\n"
        + json.dumps({"features": [0.0] * N_FEATURES}).encode()
        + b"\n[0,0,0,0,0,0,0,null]\n"
    )
    response = _post(server, body, content_type="application/jsonlines", accept="application/jsonlines")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/jsonlines"
    rows = [json.loads(line) for line in response.content.splitlines()]
    assert len(rows) == 3
    # Same features in JSON lines and in CSV give the same answer.
    csv_answer = _post(server, b"1,2,3,4,5,6,7,8\n").content.split(b",")[0]
    assert f"{rows[0]['probability']:.6f}".encode() == csv_answer


def test_empty_body_is_204(server: Server) -> None:
    for body in (b"", b"\n\n"):
        response = _post(server, body)
        assert response.status_code == 204
        assert response.content == b""


def test_unsupported_content_type_is_415(server: Server) -> None:
    response = _post(server, b"1,2", content_type="application/x-recordio-protobuf")
    assert response.status_code == 415
    assert "text/csv, application/json, application/jsonlines" in response.text


def test_unsupported_accept_is_406(server: Server) -> None:
    response = _post(server, b"1,2,3,4,5,6,7,8\n", accept="application/x-protobuf")
    assert response.status_code == 406
    assert "application/x-protobuf" in response.text


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"1,2,3,4,5,6,7,8\n1,2,3\n", "text/csv", "row 2: found 3 comma-separated values"),
        (b"1,2,3,4,5,6,7,8\n1,2,3,4,5,6,7,8,9\n", "text/csv", "row 2: found 9 comma-separated values"),
        (
            b"1,2,3,4,5,6,7,8\n1,2,3,4,5,6,7,8\n1,2,x,4,5,6,7,8\n",
            "text/csv",
            "row 3: column 3 is 'x', not a number",
        ),
        (b"1,2,3,4,5,6,7,8\n\n1,2,3,4,5,6,7,8\n", "text/csv", "row 2: the line is empty"),
        (b'{"instances": [[1,2,3,4,5,6,7,8], [1,2]]}', "application/json", "row 2: found 2 values"),
        (b'[[1,2,3,4,5,6,7,"8"]]', "application/json", 'row 1: value 8 is "8", not a number'),
        (b"[1,2,3,4,5,6,7,8]\n[1,2,3,4,5,6,7]\n", "application/jsonlines", "row 2: found 7 values"),
        (b"[1,2,3,4,5,6,7,8]\nnot json\n", "application/jsonlines", "row 2: the line is not valid JSON"),
    ],
)
def test_malformed_rows_are_400_naming_row_and_feature_count(
    server: Server, body, content_type, expected
) -> None:
    response = _post(server, body, content_type=content_type)
    assert response.status_code == 400
    assert expected in response.text
    assert f"the model expects {N_FEATURES} numeric features per row" in response.text


def test_malformed_json_document_is_400(server: Server) -> None:
    response = _post(server, b'{"instances": [', content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.text


def _post_oversized_headers_only(server: Server) -> tuple[int, str]:
    """POST only headers announcing a body one byte over the limit; (status, body text)."""
    address = urlparse(server.url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "text/csv")
        connection.putheader("Content-Length", str(serving_limits.MAX_PAYLOAD_BYTES + 1))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_payload_over_the_limit_is_413_before_reading(server: Server) -> None:
    # Only the headers are sent: the server must answer from Content-Length alone.
    status, text = _post_oversized_headers_only(server)
    assert status == 413
    assert f"exceeds the {serving_limits.MAX_PAYLOAD_BYTES} byte" in text


def test_chunked_payload_over_the_limit_is_413(server: Server) -> None:
    row = b"1,2,3,4,5,6,7,8\n"
    chunk = row * (65536 // len(row))
    total = serving_limits.MAX_PAYLOAD_BYTES + 3 * len(chunk)

    def body():
        sent = 0
        while sent < total:
            yield chunk
            sent += len(chunk)

    response = requests.post(
        server.url + "/invocations", data=body(), headers={"Content-Type": "text/csv"}, timeout=120
    )
    assert response.status_code == 413
    assert "chunked payload" in response.text


def test_chunked_payload_under_the_limit_is_served(server: Server) -> None:
    rows = [b"1,2,3,4,5,6,7,8\n"] * 50
    response = requests.post(
        server.url + "/invocations", data=iter(rows), headers={"Content-Type": "text/csv"}, timeout=60
    )
    assert response.status_code == 200
    assert len(response.content.splitlines()) == 50


def test_unknown_route_and_wrong_method(server: Server) -> None:
    assert requests.get(server.url + "/nope", timeout=10).status_code == 404
    response = requests.get(server.url + "/invocations", timeout=10)
    assert response.status_code == 405
    assert "POST /invocations" in response.text
    assert requests.post(server.url + "/ping", timeout=10).status_code == 405


def test_threshold_comes_from_the_environment(trained_model_dir: Path, tmp_path: Path) -> None:
    started = start_server(trained_model_dir, tmp_path / "serve.log", PREDICTION_THRESHOLD="0.9")
    try:
        x, _ = make_classification(300, seed=4)
        lines = _post(started, _csv(x)).content.splitlines()
        probabilities = np.array([float(line.split(b",")[0]) for line in lines])
        labels = np.array([int(line.split(b",")[1]) for line in lines])
        assert ((probabilities >= 0.5) & (probabilities < 0.9)).any()
        np.testing.assert_array_equal(labels, (probabilities >= 0.9).astype(int))
    finally:
        stop_server(started)


def test_bad_setting_stops_serve_with_a_message(tmp_path: Path) -> None:
    import subprocess

    from tests.container.conftest import base_env, command

    result = subprocess.run(
        [command("serve")],
        env=base_env(tmp_path, PREDICTION_THRESHOLD="high"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "PREDICTION_THRESHOLD='high' is not a number in [0, 1]" in result.stderr


def test_ping_is_503_until_a_model_is_there(trained_model_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "empty"
    (base / "model").mkdir(parents=True)
    started = start_server(base, tmp_path / "serve.log", wait_ready=False)
    try:
        ping = requests.get(started.url + "/ping", timeout=10)
        assert ping.status_code == 503
        assert "model file not found" in ping.text
        response = _post(started, b"1,2,3,4,5,6,7,8\n")
        assert response.status_code == 503
        # The model arrives (e.g. a slow volume): the next ping loads it in each worker.
        shutil.copy(_model_file(trained_model_dir), base / "model" / "xgboost-model")
        deadline = time.monotonic() + 30
        while requests.get(started.url + "/ping", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop_server(started)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="switching users needs root")
def test_workers_run_as_the_serve_user_and_the_master_reads_the_model(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "private"
    (base / "model").mkdir(parents=True)
    model = base / "model" / "xgboost-model"
    shutil.copy(_model_file(trained_model_dir), model)
    model.chmod(0o600)  # root only, as a root-extracted model.tar.gz may be
    started = start_server(base, tmp_path / "serve.log", ML_SERVE_USER="nobody")
    try:
        workers = psutil.Process(started.process.pid).children()
        assert workers
        assert psutil.Process(started.process.pid).uids().real == 0
        assert all(worker.uids().effective != 0 for worker in workers)
        assert _post(started, b"1,2,3,4,5,6,7,8\n").status_code == 200
    finally:
        stop_server(started)


def _workers_rss(server: Server) -> int:
    return sum(child.memory_info().rss for child in psutil.Process(server.process.pid).children())


def test_soak_mixed_requests_no_failures_and_flat_memory(server: Server) -> None:
    """1,200 requests, good and bad mixed, 4 concurrent clients. Every good request answers 200
    with one row per input row; worker RSS after the second half is < 10 % above the first half."""
    rng = np.random.default_rng(11)
    good_csv = [_csv(make_classification(n, seed=int(n))[0]) for n in (1, 10, 200, 2000)]
    good_json = json.dumps({"instances": make_classification(50)[0].tolist()}).encode()
    bad = [  # (body, content type, accept, expected status): every error path of /invocations
        (b"1,2,3\n", "text/csv", None, 400),
        (b"", "text/csv", None, 204),
        (b"1,2,3,4,5,6,7,8\n", "application/octet-stream", None, 415),
        (b"1,2,3,4,5,6,7,8\n", "text/csv", "image/png", 406),
        (b"[[1,2]]", "application/json", None, 400),
        (b"1,2,x,4,5,6,7,8\n", "text/csv", None, 400),
        (None, "text/csv", None, 413),  # None: only headers announcing a body over the limit
    ]

    def one(index: int) -> tuple[bool, str]:
        kind = rng.integers(0, 10) if index % 3 else 0
        if kind < 5:
            body = good_csv[index % len(good_csv)]
            response = _post(server, body)
            ok = response.status_code == 200 and len(response.content.splitlines()) == body.count(b"\n")
        elif kind < 7:
            response = _post(
                server, good_json, content_type="application/json", accept="application/jsonlines"
            )
            ok = response.status_code == 200 and len(response.content.splitlines()) == 50
        else:
            body, content_type, accept, expected = bad[index % len(bad)]
            if body is None:
                status, text = _post_oversized_headers_only(server)
            else:
                response = _post(server, body, content_type=content_type, accept=accept)
                status, text = response.status_code, response.text
            return status == expected, f"request {index}: {status} (expected {expected}) {text[:200]}"
        return ok, f"request {index}: {response.status_code} {response.text[:200]}"

    def run(indices: range) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            failures = [message for ok, message in pool.map(one, indices) if not ok]
        assert not failures, failures[:5]

    run(range(0, 100))  # warm-up: allocator pools and caches reach their working size
    run(range(100, 650))
    after_first_half = _workers_rss(server)
    run(range(650, 1200))
    after_second_half = _workers_rss(server)
    print(
        f"workers RSS after first half {after_first_half / 2**20:.1f} MiB, after second {after_second_half / 2**20:.1f} MiB"
    )
    assert after_second_half < 1.10 * after_first_half
    assert requests.get(server.url + "/ping", timeout=10).status_code == 200
