"""The local SageMaker executor, driven by small request dicts and stand-in container commands.

The stand-ins are real executables (Python scripts in a temporary bin directory) that follow the
container contract: read `$SAGEMAKER_BASE_DIR/...`, write outputs, write `output/failure` and
exit non-zero on failure, serve /ping, /execution-parameters and /invocations. That isolates the
executor's mechanics (staging, config files, uploads, batching, failure surfacing) from the
real algorithm, which the end-to-end tests cover.
"""

from __future__ import annotations

import json
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ml.artifacts import LocalArtifactStore
from ml.local_sagemaker import LocalSageMaker, RequestError, assemble, make_batches, split_records

PROCESS_SCRIPT = """
import json, os, pathlib, sys
base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"])
args = sys.argv[1:]
if "--fail" in args:
    (base / "output").mkdir(parents=True, exist_ok=True)
    (base / "output" / "failure").write_text("SchemaError: column 'Label' is missing\\nTraceback...\\n")
    (base / "output" / "message").write_text("SchemaError: column 'Label' is missing")
    print("failing on purpose", flush=True)
    sys.exit(3)
if "--sleep" in args:
    import time
    time.sleep(30)
out = base / "processing" / "out"
for path in sorted((base / "processing" / "input").rglob("*")):
    if path.is_file():
        target = out / path.relative_to(base / "processing" / "input")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text().upper())
(out / "meta.json").write_text(json.dumps({"args": args, "greeting": os.environ.get("GREETING"),
    "resource": json.loads((base / "config" / "resourceconfig.json").read_text())}))
print("processed", flush=True)
"""

TRAIN_SCRIPT = """
import json, os, pathlib, sys
base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"])
config = base / "input" / "config"
hp = json.loads((config / "hyperparameters.json").read_text())
resource = json.loads((config / "resourceconfig.json").read_text())
if hp.get("fail") == "yes":
    (base / "output" / "failure").write_text("HyperparameterError: 'max_depth' must be an int in [0, 20], got 'x'")
    sys.exit(1)
if hp.get("crash") == "yes":
    print("something went badly wrong", flush=True)
    sys.exit(7)
files = sorted(p.relative_to(base / "input" / "data").as_posix()
               for p in (base / "input" / "data").rglob("*") if p.is_file())
ckpt = base / "checkpoints"
previous = sorted(p.name for p in ckpt.glob("*"))
(ckpt / f"ckpt-{resource['current_host']}.txt").write_text("round 3")
(ckpt / "partial.sagemaker-ignore").write_text("half written")
model = {"hp": hp, "files": files, "host": resource["current_host"], "hosts": resource["hosts"],
         "channels": json.loads((config / "inputdataconfig.json").read_text()),
         "previous_checkpoints": previous, "job": os.environ.get("TRAINING_JOB_NAME")}
(base / "model" / "model.json").write_text(json.dumps(model))
print("[round 0] train-logloss=0.5", flush=True)
"""

SERVE_SCRIPT = """
import json, os, pathlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"])
model = (base / "model" / "model.json").read_text()
log = base / "batches.txt"

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def _reply(self, status, body, kind="text/csv"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/ping":
            self._reply(200, "")
        elif self.path == "/execution-parameters":
            self._reply(200, json.dumps({"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                                         "MaxPayloadInMB": 1}), "application/json")
        else:
            self._reply(404, "")
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        rows = body.split("\\n")
        if any(r.startswith("bad") for r in rows):
            self._reply(400, "row 2: expected 3 features, got 1")
            return
        with log.open("a") as handle:
            handle.write(f"{len(rows)} {len(body)} {self.headers['Content-Type']} {self.headers['Accept']}\\n")
        self._reply(200, "\\n".join(f"{r.split(',')[0]},{os.environ.get('PREDICTION_THRESHOLD')}" for r in rows) + "\\n")

ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
"""

BROKEN_SERVE_SCRIPT = """
import os, pathlib, sys
base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"])
(base / "output" / "failure").write_text("ModelLoadError: model/xgboost-model not found")
sys.exit(1)
"""


def _install(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}")
    script.chmod(0o755)


@pytest.fixture
def executor(tmp_path: Path) -> LocalSageMaker:
    bin_dir = tmp_path / "bin"
    _install(bin_dir, "fake-process", PROCESS_SCRIPT)
    _install(bin_dir, "train", TRAIN_SCRIPT)
    _install(bin_dir, "serve", SERVE_SCRIPT)
    store = LocalArtifactStore(tmp_path / "store")
    return LocalSageMaker(store, tmp_path / "work", bin_dirs=[bin_dir], ping_timeout_s=20)


def _put(executor: LocalSageMaker, uri: str, text: str) -> None:
    store = executor.store
    assert isinstance(store, LocalArtifactStore)
    path = store.path_for(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _read(executor: LocalSageMaker, uri: str) -> str:
    store = executor.store
    assert isinstance(store, LocalArtifactStore)
    return store.path_for(uri).read_text()


def processing_request(
    name: str, arguments: list[str], data_uri: str = "s3://data/datasets/default/"
) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "AppSpecification": {
            "ImageUri": "img",
            "ContainerEntrypoint": ["fake-process"],
            "ContainerArguments": arguments,
        },
        "ProcessingInputs": [
            {
                "InputName": "input",
                "S3Input": {
                    "S3Uri": data_uri,
                    "LocalPath": "/opt/ml/processing/input",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "out",
                    "S3Output": {
                        "S3Uri": "s3://art/runs/r1/processing/out/",
                        "LocalPath": "/opt/ml/processing/out",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "Environment": {"GREETING": "hello"},
    }


def training_request(
    name: str, hyperparameters: dict[str, str], *, hosts: int = 1, sharded: bool = False
) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://art/runs/r1/processing/train/",
                        "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://art/runs/r1/training/"},
        "ResourceConfig": {"InstanceCount": hosts, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "CheckpointConfig": {"S3Uri": "s3://art/runs/r1/checkpoints/", "LocalPath": "/opt/ml/checkpoints"},
    }


def transform_request(name: str, model: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": model,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://art/runs/r1/processing/test_no_label/",
                }
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": "s3://art/runs/r1/transform/",
            "Accept": "text/csv",
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"},
    }
    request.update(overrides)
    return request


# ---------------------------------------------------------------------------- processing


def test_processing_job_stages_inputs_runs_entrypoint_and_uploads_outputs(executor: LocalSageMaker) -> None:
    _put(executor, "s3://data/datasets/default/raw.csv", "a,b\n1,2\n")
    _put(executor, "s3://data/datasets/default/more/extra.csv", "c\n")
    result = executor.run_processing_job(processing_request("prep-1", ["--ratio", "0.2"]))

    assert result.status == "Completed", result.failure_reason
    assert result.failure_reason is None
    assert result.outputs == {"out": "s3://art/runs/r1/processing/out/"}
    assert _read(executor, "s3://art/runs/r1/processing/out/raw.csv") == "A,B\n1,2\n"
    assert _read(executor, "s3://art/runs/r1/processing/out/more/extra.csv") == "C\n"
    meta = json.loads(_read(executor, "s3://art/runs/r1/processing/out/meta.json"))
    assert meta["args"] == ["--ratio", "0.2"]
    assert meta["greeting"] == "hello"
    assert meta["resource"]["current_host"] == "algo-1"
    # The job's tree is the SageMaker layout under work/<job-name>, kept for inspection.
    assert result.work_dir == executor.work_root / "prep-1"
    assert (result.work_dir / "processing" / "input" / "raw.csv").is_file()
    assert (result.work_dir / "config" / "processingjobconfig.json").is_file()
    assert "processed" in result.log_path.read_text()
    assert result.duration_seconds >= 0
    assert result.describe()["ProcessingJobStatus"] == "Completed"


def test_failed_processing_job_reports_the_failure_file_and_uploads_nothing(executor: LocalSageMaker) -> None:
    _put(executor, "s3://data/datasets/default/raw.csv", "a\n")
    result = executor.run_processing_job(processing_request("prep-fail", ["--fail"]))

    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("SchemaError: column 'Label' is missing")
    assert result.describe()["FailureReason"] == result.failure_reason
    assert result.describe()["ExitMessage"] == "SchemaError: column 'Label' is missing"
    assert executor.store.list_objects("s3://art/runs/r1/processing/out/") == []
    assert "failing on purpose" in result.log_path.read_text()


def test_processing_job_over_its_runtime_limit_is_stopped(executor: LocalSageMaker) -> None:
    request = processing_request("prep-slow", ["--sleep"])
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 1}
    result = executor.run_processing_job(request)
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert "MaxRuntimeExceeded" in result.failure_reason
    assert result.duration_seconds < 15


def test_missing_entrypoint_is_a_failed_job_naming_the_executable(executor: LocalSageMaker) -> None:
    request = processing_request("prep-missing", [])
    request["AppSpecification"]["ContainerEntrypoint"] = ["no-such-entrypoint-xyz"]
    result = executor.run_processing_job(request)
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert "CannotStartContainerError" in result.failure_reason
    assert "no-such-entrypoint-xyz" in result.failure_reason


def test_local_path_outside_opt_ml_is_rejected_like_a_validation_error(executor: LocalSageMaker) -> None:
    request = processing_request("prep-bad-path", [])
    request["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/tmp/input"
    with pytest.raises(RequestError, match="outside /opt/ml"):
        executor.run_processing_job(request)


# ---------------------------------------------------------------------------- training


def test_training_job_writes_config_stages_channels_and_packages_the_model(executor: LocalSageMaker) -> None:
    _put(executor, "s3://art/runs/r1/processing/train/train_data.csv", "1,0.5\n")
    _put(executor, "s3://art/runs/r1/checkpoints/ckpt-old.txt", "round 1")
    result = executor.run_training_job(training_request("train-1", {"max_depth": "5", "eta": "0.2"}))

    assert result.status == "Completed", result.failure_reason
    model_uri = "s3://art/runs/r1/training/train-1/output/model.tar.gz"
    assert result.details["model_artifacts"] == model_uri
    assert result.describe()["ModelArtifacts"] == {"S3ModelArtifacts": model_uri}
    store = executor.store
    assert isinstance(store, LocalArtifactStore)
    with tarfile.open(store.path_for(model_uri), "r:gz") as tar:
        member = tar.extractfile("model.json")
        assert member is not None
        model = json.loads(member.read())
    assert model["hp"] == {"max_depth": "5", "eta": "0.2"}
    assert model["files"] == ["train/train_data.csv"]
    assert model["channels"]["train"]["S3DistributionType"] == "FullyReplicated"
    assert model["channels"]["train"]["ContentType"] == "text/csv"
    assert model["job"] == "train-1"
    # Checkpoints are restored before `train` and synced back after it.
    assert model["previous_checkpoints"] == ["ckpt-old.txt"]
    assert store.list_objects("s3://art/runs/r1/checkpoints/") == [
        "s3://art/runs/r1/checkpoints/ckpt-algo-1.txt",
        "s3://art/runs/r1/checkpoints/ckpt-old.txt",
    ]


def test_failed_training_job_surfaces_the_failure_file_and_keeps_checkpoints(
    executor: LocalSageMaker,
) -> None:
    _put(executor, "s3://art/runs/r1/processing/train/train_data.csv", "1,0.5\n")
    result = executor.run_training_job(training_request("train-fail", {"fail": "yes"}))
    assert result.status == "Failed"
    assert result.failure_reason == "HyperparameterError: 'max_depth' must be an int in [0, 20], got 'x'"
    assert "model_artifacts" not in result.details
    assert executor.store.list_objects("s3://art/runs/r1/training/") == []


def test_crash_without_failure_file_reports_exit_code_and_log_tail(executor: LocalSageMaker) -> None:
    _put(executor, "s3://art/runs/r1/processing/train/train_data.csv", "1,0.5\n")
    result = executor.run_training_job(training_request("train-crash", {"crash": "yes"}))
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert "exited with code 7" in result.failure_reason
    assert "something went badly wrong" in result.failure_reason


def test_training_channel_without_objects_fails_before_train_starts(executor: LocalSageMaker) -> None:
    result = executor.run_training_job(training_request("train-empty", {}))
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("ClientError: Data download failed: no S3 objects found")
    assert "s3://art/runs/r1/processing/train/" in result.failure_reason
    assert not result.log_path.exists()  # `train` never ran


def test_sharded_training_over_two_hosts_splits_objects_by_key(executor: LocalSageMaker) -> None:
    for shard in range(2):
        _put(executor, f"s3://art/runs/r1/processing/train/train_data_{shard}.csv", f"{shard},0.5\n")
    result = executor.run_training_job(training_request("train-dist", {}, hosts=2, sharded=True))
    assert result.status == "Completed", result.failure_reason
    assert [p.name for p in result.log_paths] == ["algo-1.log", "algo-2.log"]
    models = {}
    for host in ("algo-1", "algo-2"):
        models[host] = json.loads((result.work_dir / host / "model" / "model.json").read_text())
    assert models["algo-1"]["files"] == ["train/train_data_0.csv"]
    assert models["algo-2"]["files"] == ["train/train_data_1.csv"]
    assert models["algo-2"]["hosts"] == ["algo-1", "algo-2"]
    assert models["algo-1"]["channels"]["train"]["S3DistributionType"] == "ShardedByS3Key"


# ---------------------------------------------------------------------------- transform


def _trained_model(executor: LocalSageMaker, name: str) -> None:
    _put(executor, "s3://art/runs/r1/processing/train/train_data.csv", "1,0.5\n")
    result = executor.run_training_job(training_request(f"train-for-{name}", {}))
    assert result.succeeded, result.failure_reason
    executor.create_model(
        {
            "ModelName": name,
            "PrimaryContainer": {
                "Image": "img",
                "ModelDataUrl": result.details["model_artifacts"],
                "Environment": {"PREDICTION_THRESHOLD": "0.6"},
            },
        }
    )


def test_transform_splits_lines_into_payload_sized_batches_in_order(executor: LocalSageMaker) -> None:
    _trained_model(executor, "model-1")
    # 40 records of ~100 KB: with MaxPayloadInMB=1 at most 10 fit one request.
    rows = [f"{i}," + "9" * 100_000 for i in range(40)]
    _put(executor, "s3://art/runs/r1/processing/test_no_label/test_data_no_label.csv", "\n".join(rows) + "\n")
    result = executor.run_transform_job(transform_request("xform-1", "model-1", MaxPayloadInMB=1))

    assert result.status == "Completed", result.failure_reason
    assert result.outputs == {
        "test_data_no_label.csv": "s3://art/runs/r1/transform/test_data_no_label.csv.out"
    }
    output = _read(executor, "s3://art/runs/r1/transform/test_data_no_label.csv.out")
    assert output.splitlines() == [f"{i},0.6" for i in range(40)]
    batches = (result.work_dir / "batches.txt").read_text().splitlines()
    sizes = [int(line.split()[0]) for line in batches]
    assert sum(sizes) == 40
    assert len(sizes) == 4
    assert max(int(line.split()[1]) for line in batches) <= 1024 * 1024
    assert all(line.endswith("text/csv text/csv") for line in batches)
    assert result.details["batches"] == {
        "s3://art/runs/r1/processing/test_no_label/test_data_no_label.csv": 4
    }
    # Unset request values come from /execution-parameters.
    assert result.details["execution_parameters"]["MaxConcurrentTransforms"] == 2
    # The server was stopped.
    assert result.details["port"] > 0


def test_transform_uses_execution_parameters_when_the_request_leaves_them_out(
    executor: LocalSageMaker,
) -> None:
    _trained_model(executor, "model-2")
    _put(executor, "s3://art/runs/r1/processing/test_no_label/part.csv", "1,2\n3,4\n")
    request = transform_request("xform-2", "model-2")
    del request["BatchStrategy"]
    result = executor.run_transform_job(request)
    assert result.succeeded, result.failure_reason
    assert result.details["execution_parameters"] == {
        "MaxPayloadInMB": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxConcurrentTransforms": 2,
    }
    assert _read(executor, "s3://art/runs/r1/transform/part.csv.out") == "1,0.6\n3,0.6\n"


def test_transform_fails_on_a_client_error_with_the_server_message(executor: LocalSageMaker) -> None:
    _trained_model(executor, "model-3")
    _put(executor, "s3://art/runs/r1/processing/test_no_label/test.csv", "1,2\nbad\n")
    result = executor.run_transform_job(transform_request("xform-3", "model-3"))
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert "HTTP 400" in result.failure_reason
    assert "expected 3 features" in result.failure_reason
    assert executor.store.list_objects("s3://art/runs/r1/transform/") == []


def test_transform_fails_when_one_record_exceeds_the_payload_limit(executor: LocalSageMaker) -> None:
    _trained_model(executor, "model-4")
    _put(
        executor, "s3://art/runs/r1/processing/test_no_label/test.csv", "1\n" + "9" * (1024 * 1024 + 1) + "\n"
    )
    result = executor.run_transform_job(transform_request("xform-4", "model-4", MaxPayloadInMB=1))
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert "record 2" in result.failure_reason
    assert "MaxPayloadInMB" in result.failure_reason


def test_server_that_exits_before_ping_fails_the_job_with_its_reason(
    tmp_path: Path, executor: LocalSageMaker
) -> None:
    _trained_model(executor, "model-5")
    _install(tmp_path / "bin", "serve", BROKEN_SERVE_SCRIPT)
    _put(executor, "s3://art/runs/r1/processing/test_no_label/test.csv", "1,2\n")
    result = executor.run_transform_job(transform_request("xform-5", "model-5"))
    assert result.status == "Failed"
    assert result.failure_reason is not None
    assert "ModelLoadError: model/xgboost-model not found" in result.failure_reason


def test_transform_of_an_unknown_model_is_a_request_error(executor: LocalSageMaker) -> None:
    with pytest.raises(RequestError, match="was not created"):
        executor.run_transform_job(transform_request("xform-6", "nope"))


def test_create_model_checks_the_artifact_exists(executor: LocalSageMaker) -> None:
    with pytest.raises(RequestError, match="does not exist"):
        executor.create_model(
            {"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "s3://art/none/model.tar.gz"}}
        )


# ---------------------------------------------------------------------------- batching helpers


def test_make_batches_packs_records_up_to_the_limit() -> None:
    records = [b"a" * 4, b"b" * 4, b"c" * 4, b"d"]
    # 4 + 1 + 4 = 9 <= 10; adding the third would make 14.
    assert make_batches(records, 10, multi_record=True) == [b"aaaa\nbbbb", b"cccc\nd"]
    assert make_batches(records, 0, multi_record=True) == [b"aaaa\nbbbb\ncccc\nd"]
    assert make_batches(records, 10, multi_record=False) == records
    with pytest.raises(ValueError, match="record 1 is 4 bytes"):
        make_batches(records, 3, multi_record=True)


def test_split_and_assemble_lines() -> None:
    assert split_records(b"1,2\r\n3,4\n\n5,6", "Line") == [b"1,2", b"3,4", b"5,6"]
    assert split_records(b"1,2\n3,4\n", "None") == [b"1,2\n3,4\n"]
    assert assemble([b"0.1,0\n0.2,0\n", b"0.9,1"], lines=True) == b"0.1,0\n0.2,0\n0.9,1\n"
    assert assemble([b"ab", b"cd"], lines=False) == b"abcd"


# ---------------------------------------------------------------------------- real entry points


@pytest.mark.slow
def test_prepared_two_host_training_request_runs_the_real_train_entry_point(tmp_path: Path) -> None:
    """The request the state machine sends for distributed training, run with the real `train`:
    two processes that find each other through the executor's host mapping and train one model."""
    import numpy as np

    from ml.local_runner import LOCAL_SETTINGS
    from ml.pipeline_input import prepare

    state = prepare(
        {
            "training_instance_count": 2,
            "training_distribution": "ShardedByS3Key",
            "hyperparameters": {"num_round": "5"},
        },
        "local-dist-test",
        LOCAL_SETTINGS,
    )
    request = state["requests"]["training"]
    store = LocalArtifactStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for shard in range(2):
        features = rng.normal(size=(200, 4))
        labels = (features[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
        rows = [
            f"{label}," + ",".join(f"{v:.5f}" for v in row)
            for label, row in zip(labels, features, strict=True)
        ]
        path = tmp_path / f"train_data_{shard}.csv"
        path.write_text("\n".join(rows) + "\n")
        store.upload_file(path, f"{state['uris']['train']}train_data_{shard}.csv")

    result = LocalSageMaker(store, tmp_path / "work").run_training_job(request)

    assert result.status == "Completed", result.failure_reason
    assert [p.name for p in result.log_paths] == ["algo-1.log", "algo-2.log"]
    assert result.details["model_artifacts"] == state["uris"]["model_artifact"]
    with tarfile.open(store.path_for(state["uris"]["model_artifact"]), "r:gz") as tar:
        assert "xgboost-model" in tar.getnames()
    # Each host saw only its own shard.
    for host, shard in (("algo-1", 0), ("algo-2", 1)):
        staged = sorted(p.name for p in (result.work_dir / host / "input" / "data" / "train").iterdir())
        assert staged == [f"train_data_{shard}.csv"]
