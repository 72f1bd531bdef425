"""Run concrete SageMaker job requests on this machine, the way SageMaker runs them.

Input: the boto3-shaped CreateProcessingJob / CreateTrainingJob / CreateModel /
CreateTransformJob requests that `ml.pipeline_input.prepare` builds with `ml.jobs` (the very
requests the state machine sends). Everything the job does is taken from the request: S3 URIs, channel names,
local paths, entry point, arguments, hyperparameters, environment, instance count, payload
limits. Each job gets its own `SAGEMAKER_BASE_DIR` under `work_root/<job-name>` with the
container layout (`input/config/*.json`, `input/data/<channel>/`, `model/`, `output/`,
`processing/<name>/`), and each container command runs as its own process.

Job failures come back as a `JobResult` with `status="Failed"` and the failure reason (the
container's `output/failure` file, as SageMaker's describe shows it), never as an exception.
A request the executor cannot run at all raises `RequestError`, the local counterpart of the
ValidationException `Create*Job` returns.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import requests

from ml.artifacts import ArtifactError, ArtifactStore, package_model, parse_s3_uri, relative_key, unpack_model

CONTAINER_ROOT = "/opt/ml"
FAILURE_REASON_LIMIT = 1024  # SageMaker truncates FailureReason to this many characters
DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker's default when neither request nor container sets one
DEFAULT_INVOCATION_TIMEOUT_S = 600
DEFAULT_INVOCATION_RETRIES = 3
LOG_TAIL_LINES = 8
CHECKPOINT_IGNORE_SUFFIX = ".sagemaker-ignore"  # SageMaker never uploads these checkpoint files

# Variables a developer may have exported while debugging a container by hand; a local job
# must see only what its request sets, as in a real container.
_INHERITED_PREFIXES_DROPPED = ("SAGEMAKER_", "SM_")


class RequestError(ValueError):
    """The request cannot be run (SageMaker would reject it at Create*Job time)."""


@dataclass
class JobResult:
    """Outcome of one local job, shaped after the fields of a SageMaker Describe*Job."""

    job_type: str  # "processing" | "training" | "transform"
    job_name: str
    status: str  # "Completed" | "Failed"
    failure_reason: str | None
    work_dir: Path
    log_paths: list[Path]
    started_at: datetime
    ended_at: datetime
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"

    @property
    def duration_seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def log_path(self) -> Path:
        return self.log_paths[0]

    def describe(self) -> dict[str, Any]:
        """The subset of Describe*Job the pipeline looks at, with SageMaker's key names."""
        prefix = {"processing": "Processing", "training": "Training", "transform": "Transform"}[self.job_type]
        described: dict[str, Any] = {
            f"{prefix}JobName": self.job_name,
            f"{prefix}JobStatus": self.status,
            f"{prefix}StartTime": self.started_at,
            f"{prefix}EndTime": self.ended_at,
        }
        if self.failure_reason:
            described["FailureReason"] = self.failure_reason
        if "exit_message" in self.details:
            described["ExitMessage"] = self.details["exit_message"]
        if "model_artifacts" in self.details:
            described["ModelArtifacts"] = {"S3ModelArtifacts": self.details["model_artifacts"]}
        return described


@dataclass(eq=False)  # identity semantics: hosts live in a set of running processes
class _Host:
    name: str
    base_dir: Path
    log_path: Path
    process: subprocess.Popen[str] | None = None
    pump: threading.Thread | None = None
    returncode: int | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _container_path(base_dir: Path, container_path: str, what: str) -> Path:
    """Map an absolute path inside the container (/opt/ml/...) to the job's base directory."""
    if not container_path.startswith(CONTAINER_ROOT + "/"):
        raise RequestError(
            f"{what} {container_path!r} is outside {CONTAINER_ROOT}; the local executor maps only "
            f"{CONTAINER_ROOT}/... to SAGEMAKER_BASE_DIR"
        )
    relative = Path(container_path[len(CONTAINER_ROOT) + 1 :])
    if ".." in relative.parts:
        raise RequestError(f"{what} {container_path!r} must not contain '..'")
    return base_dir / relative


def _read_failure(base_dir: Path) -> str | None:
    failure = base_dir / "output" / "failure"
    if not failure.is_file():
        return None
    text = failure.read_text(encoding="utf-8", errors="replace").strip()
    return text[:FAILURE_REASON_LIMIT] if text else None


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    # The port is released before the server binds it; another process could take it in
    # between, which the ping wait then reports as a server that did not come up.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


class LocalSageMaker:
    """Executes SageMaker job requests locally against an artefact store.

    `store` is any `ml.artifacts.ArtifactStore` (local directory or boto3/moto S3).
    `work_root` receives one directory per job. `bin_dirs` are searched for the container
    commands (`train`, `serve`, `ml-preprocess`, ...) before PATH; by default the directory of
    the running interpreter, which is the virtualenv's `bin`. `echo` receives a copy of every
    container log line (e.g. `sys.stderr` for a verbose run).
    """

    def __init__(
        self,
        store: ArtifactStore,
        work_root: Path,
        *,
        bin_dirs: Sequence[Path] | None = None,
        env: Mapping[str, str] | None = None,
        echo: IO[str] | None = None,
        ping_timeout_s: float = 60.0,
    ) -> None:
        self.store = store
        self.work_root = Path(work_root).resolve()
        self.bin_dirs = [
            Path(d) for d in (bin_dirs if bin_dirs is not None else [Path(sys.executable).parent])
        ]
        self.extra_env = dict(env or {})
        self.echo = echo
        self.ping_timeout_s = ping_timeout_s
        self.models: dict[str, dict[str, Any]] = {}
        self._echo_lock = threading.Lock()
        self._active: set[_Host] = set()
        self._active_lock = threading.Lock()

    # ------------------------------------------------------------------ common mechanics

    def _job_dir(self, job_name: str) -> Path:
        if not job_name or "/" in job_name or job_name in (".", ".."):
            raise RequestError(f"invalid job name {job_name!r}")
        job_dir = self.work_root / job_name
        # Job names are unique per run; a re-run of the same name starts from a clean tree so
        # no file of the earlier attempt leaks into the new one.
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        return job_dir

    def _resolve_command(self, argv: Sequence[str]) -> list[str] | None:
        if not argv:
            return None
        program = argv[0]
        if "/" in program:
            return list(argv) if Path(program).exists() else None
        for directory in self.bin_dirs:
            candidate = directory / program
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return [str(candidate), *argv[1:]]
        found = shutil.which(program)
        return [found, *argv[1:]] if found else None

    def _environment(self, base_dir: Path, *layers: Mapping[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES_DROPPED)}
        env.setdefault("MPLBACKEND", "Agg")
        env["PYTHONUNBUFFERED"] = "1"
        # Console scripts started by a container command (serve -> gunicorn) live next to it.
        path_dirs = [str(d) for d in self.bin_dirs]
        env["PATH"] = os.pathsep.join([*path_dirs, env.get("PATH", "")])
        env.update(self.extra_env)
        for layer in layers:
            env.update({str(k): str(v) for k, v in (layer or {}).items()})
        env["SAGEMAKER_BASE_DIR"] = str(base_dir)
        return env

    def _pump(self, stream: IO[str], log_path: Path, host: str) -> None:
        with log_path.open("a", encoding="utf-8") as log:
            for line in stream:
                log.write(line)
                log.flush()
                if self.echo is not None:
                    with self._echo_lock:
                        self.echo.write(f"  [{host}] {line}")
                        self.echo.flush()

    def _start(self, host: _Host, argv: list[str], env: Mapping[str, str]) -> None:
        host.log_path.parent.mkdir(parents=True, exist_ok=True)
        with host.log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n")
        # A session of its own lets stop() signal the whole process group (gunicorn workers).
        host.process = subprocess.Popen(
            argv,
            cwd=host.base_dir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        assert host.process.stdout is not None
        with self._active_lock:
            self._active.add(host)
        host.pump = threading.Thread(
            target=self._pump, args=(host.process.stdout, host.log_path, host.name), daemon=True
        )
        host.pump.start()

    def _stop(self, host: _Host, grace_s: float = 10.0) -> None:
        with self._active_lock:
            self._active.discard(host)
        process = host.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        host.returncode = process.returncode
        if host.pump is not None:
            host.pump.join(timeout=5)

    def _run_hosts(
        self, hosts: list[_Host], argv: list[str], envs: list[dict[str, str]], max_runtime_s: float | None
    ) -> str | None:
        """Run the command on every host; returns a failure reason or None when all exit 0.

        When one host fails the others are stopped, as SageMaker ends the whole job: a peer
        waiting for the failed host would otherwise hang until the runtime limit.
        """
        deadline = time.monotonic() + max_runtime_s if max_runtime_s else None
        failure: str | None = None
        try:
            for host, env in zip(hosts, envs, strict=True):
                self._start(host, argv, env)
            while True:
                running = [h for h in hosts if h.process is not None and h.process.poll() is None]
                for host in hosts:
                    assert host.process is not None
                    code = host.process.poll()
                    if code is not None and code != 0 and failure is None:
                        host.returncode = code
                        failure = self._failure_reason(host, code)
                if failure is not None or not running:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    failure = (
                        f"MaxRuntimeExceeded: the job ran longer than StoppingCondition.MaxRuntimeInSeconds="
                        f"{max_runtime_s:g} and was stopped"
                    )
                    break
                time.sleep(0.05)
        finally:
            # Also on KeyboardInterrupt: the processes have sessions of their own, so Ctrl-C
            # in the terminal does not reach them.
            for host in hosts:
                self._stop(host)
        return failure

    def stop_all(self) -> None:
        """Stop every container process still running (used when the caller is interrupted)."""
        with self._active_lock:
            active = list(self._active)
        for host in active:
            self._stop(host, grace_s=5.0)

    @staticmethod
    def _failure_reason(host: _Host, code: int) -> str:
        reason = _read_failure(host.base_dir)
        if reason:
            return reason
        tail = _log_tail(host.log_path)
        return (
            f"AlgorithmError: {host.name} exited with code {code} without writing output/failure; "
            f"last log lines:\n{tail}"
        )[:FAILURE_REASON_LIMIT]

    def _stage(
        self, uri: str, distribution: str, host_index: int, host_count: int, local_dir: Path
    ) -> list[Path]:
        local_dir.mkdir(parents=True, exist_ok=True)
        uris = self.store.list_objects(uri)
        if distribution == "ShardedByS3Key":
            uris = uris[host_index::host_count]
        elif distribution not in ("FullyReplicated", ""):
            raise RequestError(f"unknown S3 data distribution type {distribution!r}")
        prefix_key = parse_s3_uri(uri).key
        paths = []
        for object_uri in uris:
            rel = relative_key(prefix_key, parse_s3_uri(object_uri).key)
            if rel and not rel.endswith("/"):
                paths.append(self.store.download_file(object_uri, local_dir / rel))
        return paths

    @staticmethod
    def _check_s3_source(source: Mapping[str, Any], what: str) -> None:
        data_type = source.get("S3DataType", "S3Prefix")
        if data_type != "S3Prefix":
            raise RequestError(f"{what}: S3DataType {data_type!r} is not supported locally (use S3Prefix)")
        mode = source.get("S3InputMode", "File")
        if mode != "File":
            raise RequestError(f"{what}: S3InputMode {mode!r} is not supported locally (use File)")

    def _hosts(self, job_dir: Path, count: int) -> list[_Host]:
        if count < 1:
            raise RequestError(f"InstanceCount must be >= 1, got {count}")
        if count == 1:
            return [_Host("algo-1", job_dir, job_dir / "logs" / "algo-1.log")]
        # Each instance has its own /opt/ml in SageMaker, so each host gets its own tree.
        return [
            _Host(f"algo-{i}", job_dir / f"algo-{i}", job_dir / "logs" / f"algo-{i}.log")
            for i in range(1, count + 1)
        ]

    @staticmethod
    def _resource_config(host: str, hosts: list[str], instance_type: str) -> dict[str, Any]:
        return {
            "current_host": host,
            "current_instance_type": instance_type,
            "current_group_name": "homogeneousCluster",
            "hosts": hosts,
            "instance_groups": [
                {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": hosts}
            ],
            "network_interface_name": "lo",
        }

    def _result(
        self,
        job_type: str,
        job_name: str,
        job_dir: Path,
        hosts: list[_Host],
        started: datetime,
        failure: str | None,
        **extra: Any,
    ) -> JobResult:
        return JobResult(
            job_type=job_type,
            job_name=job_name,
            status="Failed" if failure else "Completed",
            failure_reason=failure,
            work_dir=job_dir,
            log_paths=[h.log_path for h in hosts],
            started_at=started,
            ended_at=_now(),
            **extra,
        )

    # ------------------------------------------------------------------ processing

    def run_processing_job(self, request: Mapping[str, Any]) -> JobResult:
        """CreateProcessingJob: stage inputs, run the entry point, upload the outputs."""
        started = _now()
        job_name = str(request["ProcessingJobName"])
        app = request.get("AppSpecification") or {}
        entrypoint = list(app.get("ContainerEntrypoint") or [])
        if not entrypoint:
            raise RequestError(
                f"{job_name}: AppSpecification.ContainerEntrypoint is empty; the local executor "
                "cannot fall back to an image's ENTRYPOINT"
            )
        cluster_config = (request.get("ProcessingResources") or {}).get("ClusterConfig") or {}
        job_dir = self._job_dir(job_name)
        hosts = self._hosts(job_dir, int(cluster_config.get("InstanceCount", 1)))
        host_names = [h.name for h in hosts]

        inputs = list(request.get("ProcessingInputs") or [])
        outputs = list((request.get("ProcessingOutputConfig") or {}).get("Outputs") or [])
        try:
            for index, host in enumerate(hosts):
                config_dir = host.base_dir / "config"
                _write_json(config_dir / "processingjobconfig.json", request)
                _write_json(
                    config_dir / "resourceconfig.json",
                    self._resource_config(
                        host.name, host_names, str(cluster_config.get("InstanceType", "local"))
                    ),
                )
                for item in inputs:
                    name = item.get("InputName", "?")
                    source = item.get("S3Input")
                    if source is None:
                        raise RequestError(
                            f"{job_name}: input {name!r} has no S3Input (only S3 inputs run locally)"
                        )
                    self._check_s3_source(source, f"{job_name} input {name!r}")
                    local = _container_path(host.base_dir, source["LocalPath"], f"input {name!r} LocalPath")
                    self._stage(
                        source["S3Uri"],
                        source.get("S3DataDistributionType", "FullyReplicated"),
                        index,
                        len(hosts),
                        local,
                    )
                for item in outputs:
                    source = item.get("S3Output") or {}
                    local = _container_path(
                        host.base_dir,
                        source.get("LocalPath", ""),
                        f"output {item.get('OutputName')!r} LocalPath",
                    )
                    local.mkdir(parents=True, exist_ok=True)
                (host.base_dir / "output").mkdir(parents=True, exist_ok=True)
        except ArtifactError as error:
            return self._result("processing", job_name, job_dir, hosts, started, f"ClientError: {error}")

        command = self._resolve_command(entrypoint + list(app.get("ContainerArguments") or []))
        if command is None:
            return self._result(
                "processing",
                job_name,
                job_dir,
                hosts,
                started,
                f"CannotStartContainerError: executable {entrypoint[0]!r} not found in "
                f"{', '.join(map(str, self.bin_dirs))} or PATH (run `pip install -e .` in the virtualenv)",
            )
        peers = cluster_env(host_names)
        envs = [self._environment(h.base_dir, request.get("Environment"), peers) for h in hosts]
        max_runtime = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        failure = self._run_hosts(hosts, command, envs, max_runtime)

        uploaded: dict[str, str] = {}
        if failure is None:
            try:
                for item in outputs:
                    source = item["S3Output"]
                    for host in hosts:
                        local = _container_path(host.base_dir, source["LocalPath"], "output LocalPath")
                        self.store.upload_dir(local, source["S3Uri"])
                    uploaded[str(item["OutputName"])] = str(source["S3Uri"])
            except (ArtifactError, OSError) as error:
                failure = f"ClientError: uploading the outputs failed: {error}"
        details: dict[str, Any] = {}
        message = hosts[0].base_dir / "output" / "message"
        if message.is_file():
            # SageMaker Processing reports this file as ExitMessage.
            details["exit_message"] = message.read_text(encoding="utf-8", errors="replace")[
                :FAILURE_REASON_LIMIT
            ]
        return self._result(
            "processing", job_name, job_dir, hosts, started, failure, outputs=uploaded, details=details
        )

    # ------------------------------------------------------------------ training

    def run_training_job(self, request: Mapping[str, Any]) -> JobResult:
        """CreateTrainingJob: config files, channels, `train`, model.tar.gz, checkpoints."""
        started = _now()
        job_name = str(request["TrainingJobName"])
        algorithm = request.get("AlgorithmSpecification") or {}
        if algorithm.get("TrainingInputMode", "File") != "File":
            raise RequestError(
                f"{job_name}: TrainingInputMode {algorithm['TrainingInputMode']!r} is not supported locally"
            )
        resources = request.get("ResourceConfig") or {}
        job_dir = self._job_dir(job_name)
        hosts = self._hosts(job_dir, int(resources.get("InstanceCount", 1)))
        host_names = [h.name for h in hosts]
        output_path = str((request.get("OutputDataConfig") or {}).get("S3OutputPath", "")).rstrip("/")
        if not output_path:
            raise RequestError(f"{job_name}: OutputDataConfig.S3OutputPath is required")
        checkpoint = request.get("CheckpointConfig") or {}
        checkpoint_uri = checkpoint.get("S3Uri")
        checkpoint_local = checkpoint.get("LocalPath", f"{CONTAINER_ROOT}/checkpoints")

        channels = list(request.get("InputDataConfig") or [])
        input_config = {}
        for channel in channels:
            name = channel["ChannelName"]
            source = (channel.get("DataSource") or {}).get("S3DataSource")
            if source is None:
                raise RequestError(
                    f"{job_name}: channel {name!r} has no S3DataSource (only S3 channels run locally)"
                )
            self._check_s3_source(source, f"{job_name} channel {name!r}")
            input_config[name] = {
                "ContentType": channel.get("ContentType", ""),
                "TrainingInputMode": channel.get("InputMode", algorithm.get("TrainingInputMode", "File")),
                "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
                "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            }
        hyperparameters = {str(k): str(v) for k, v in (request.get("HyperParameters") or {}).items()}

        try:
            for index, host in enumerate(hosts):
                config_dir = host.base_dir / "input" / "config"
                _write_json(config_dir / "hyperparameters.json", hyperparameters)
                _write_json(config_dir / "inputdataconfig.json", input_config)
                _write_json(
                    config_dir / "resourceconfig.json",
                    self._resource_config(host.name, host_names, str(resources.get("InstanceType", "local"))),
                )
                for channel in channels:
                    source = channel["DataSource"]["S3DataSource"]
                    staged = self._stage(
                        source["S3Uri"],
                        source.get("S3DataDistributionType", "FullyReplicated"),
                        index,
                        len(hosts),
                        host.base_dir / "input" / "data" / channel["ChannelName"],
                    )
                    if not staged:
                        # SageMaker refuses to start `train` on a channel without data.
                        raise ArtifactError(
                            f"Data download failed: no S3 objects found under S3 URL {source['S3Uri']} "
                            f"(channel {channel['ChannelName']!r}, {host.name})"
                        )
                for sub in ("model", "output/data"):
                    (host.base_dir / sub).mkdir(parents=True, exist_ok=True)
                checkpoints = _container_path(host.base_dir, checkpoint_local, "CheckpointConfig.LocalPath")
                checkpoints.mkdir(parents=True, exist_ok=True)
                if checkpoint_uri:
                    # SageMaker restores the checkpoint prefix before `train` starts (resume).
                    self.store.download_prefix(checkpoint_uri, checkpoints)
        except ArtifactError as error:
            return self._result("training", job_name, job_dir, hosts, started, f"ClientError: {error}")

        argv = list(algorithm.get("ContainerEntrypoint") or ["train"]) + list(
            algorithm.get("ContainerArguments") or []
        )
        command = self._resolve_command(argv)
        if command is None:
            return self._result(
                "training",
                job_name,
                job_dir,
                hosts,
                started,
                f"CannotStartContainerError: executable {argv[0]!r} not found in "
                f"{', '.join(map(str, self.bin_dirs))} or PATH (run `pip install -e .` in the virtualenv)",
            )
        peers = cluster_env(host_names)
        envs = [
            self._environment(h.base_dir, {"TRAINING_JOB_NAME": job_name}, request.get("Environment"), peers)
            for h in hosts
        ]
        max_runtime = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        failure = self._run_hosts(hosts, command, envs, max_runtime)

        if checkpoint_uri:
            # Synced whatever the outcome: checkpoints exist to resume a failed or stopped job.
            for host in hosts:
                checkpoints = _container_path(host.base_dir, checkpoint_local, "CheckpointConfig.LocalPath")
                self._sync_checkpoints(checkpoints, checkpoint_uri)

        details: dict[str, Any] = {"hosts": host_names}
        outputs: dict[str, str] = {}
        if failure is None:
            job_output = f"{output_path}/{job_name}/output"
            try:
                # The model of the first host is the job's model (the others hold the same trees
                # after a distributed run, and SageMaker's guidance is to save on the leader only).
                archive = package_model(hosts[0].base_dir / "model", job_dir / "upload" / "model.tar.gz")
                model_uri = self.store.upload_file(archive, f"{job_output}/model.tar.gz")
                details["model_artifacts"] = model_uri
                outputs["model"] = model_uri
                data_dir = hosts[0].base_dir / "output" / "data"
                if any(data_dir.iterdir()):
                    archive = package_model(data_dir, job_dir / "upload" / "output.tar.gz")
                    outputs["output"] = self.store.upload_file(archive, f"{job_output}/output.tar.gz")
            except (ArtifactError, OSError) as error:
                failure = f"ClientError: uploading the model failed: {error}"
        if checkpoint_uri:
            outputs["checkpoints"] = checkpoint_uri
        return self._result(
            "training", job_name, job_dir, hosts, started, failure, outputs=outputs, details=details
        )

    def _sync_checkpoints(self, local_dir: Path, uri_prefix: str) -> list[str]:
        """Upload the checkpoint directory as SageMaker does: `*.sagemaker-ignore` files (a
        checkpoint being written) stay local."""
        uploaded = []
        base = uri_prefix.rstrip("/")
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            if path.name.endswith(CHECKPOINT_IGNORE_SUFFIX):
                continue
            uploaded.append(self.store.upload_file(path, f"{base}/{path.relative_to(local_dir).as_posix()}"))
        return uploaded

    # ------------------------------------------------------------------ model + transform

    def create_model(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """CreateModel: record the model so a transform job can name it; checks the artefact."""
        name = str(request["ModelName"])
        container = request.get("PrimaryContainer") or next(iter(request.get("Containers") or []), None)
        if not container or not container.get("ModelDataUrl"):
            raise RequestError(f"model {name!r}: PrimaryContainer.ModelDataUrl is required")
        if not self.store.exists(container["ModelDataUrl"]):
            raise RequestError(f"model {name!r}: ModelDataUrl {container['ModelDataUrl']} does not exist")
        self.models[name] = dict(container)
        return {"ModelArn": f"arn:aws:sagemaker:local:000000000000:model/{name}", "ModelName": name}

    def run_transform_job(self, request: Mapping[str, Any]) -> JobResult:
        """CreateTransformJob: serve the model, send the input in batches, write `.out` files."""
        started = _now()
        job_name = str(request["TransformJobName"])
        model_name = str(request.get("ModelName", ""))
        container = self.models.get(model_name)
        if container is None:
            raise RequestError(f"{job_name}: model {model_name!r} was not created (call create_model first)")
        transform_input = request.get("TransformInput") or {}
        source = (transform_input.get("DataSource") or {}).get("S3DataSource") or {}
        self._check_s3_source(source, f"{job_name} input")
        transform_output = request.get("TransformOutput") or {}
        output_path = str(transform_output.get("S3OutputPath", "")).rstrip("/")
        if not source.get("S3Uri") or not output_path:
            raise RequestError(
                f"{job_name}: TransformInput S3Uri and TransformOutput.S3OutputPath are required"
            )
        processing = request.get("DataProcessing") or {}
        for key, default in (("InputFilter", "$"), ("OutputFilter", "$"), ("JoinSource", "None")):
            if processing.get(key, default) != default:
                raise RequestError(
                    f"{job_name}: DataProcessing.{key}={processing[key]!r} is not supported locally"
                )
        split = transform_input.get("SplitType", "None")
        if split not in ("None", "Line"):
            raise RequestError(f"{job_name}: SplitType {split!r} is not supported locally (use Line or None)")
        compression = transform_input.get("CompressionType", "None")
        # SageMaker hands whole input objects to the instances; one local server processing
        # every object in turn writes the same `.out` files, so more instances are not simulated.
        instances = int((request.get("TransformResources") or {}).get("InstanceCount", 1))

        job_dir = self._job_dir(job_name)
        host = _Host("algo-1", job_dir, job_dir / "logs" / "serve.log")
        try:
            archive = self.store.download_file(container["ModelDataUrl"], job_dir / "upload" / "model.tar.gz")
            unpack_model(archive, job_dir / "model")
        except ArtifactError as error:
            return self._result("transform", job_name, job_dir, [host], started, f"ClientError: {error}")
        (job_dir / "output").mkdir(parents=True, exist_ok=True)

        command = self._resolve_command(["serve"])
        if command is None:
            return self._result(
                "transform",
                job_name,
                job_dir,
                [host],
                started,
                "CannotStartContainerError: executable 'serve' not found "
                "(run `pip install -e .` in the virtualenv)",
            )
        port = _free_port()
        env = self._environment(
            job_dir,
            container.get("Environment"),
            request.get("Environment"),
            # Loopback only: a local run must not expose the model server to the network.
            {"SAGEMAKER_BIND_TO_PORT": str(port), "ML_BIND_HOST": "127.0.0.1"},
        )
        details: dict[str, Any] = {"port": port, "instances_requested": instances, "instances_used": 1}
        outputs: dict[str, str] = {}
        self._start(host, command, env)
        try:
            url = f"http://127.0.0.1:{port}"
            failure = self._wait_for_ping(host, url)
            if failure is None:
                parameters = self._execution_parameters(url, request)
                details["execution_parameters"] = parameters
                failure = self._transform_objects(
                    url,
                    request,
                    source["S3Uri"],
                    output_path,
                    split,
                    compression,
                    parameters,
                    job_dir,
                    outputs,
                    details,
                )
        finally:
            self._stop(host)
        return self._result(
            "transform", job_name, job_dir, [host], started, failure, outputs=outputs, details=details
        )

    def _wait_for_ping(self, host: _Host, url: str) -> str | None:
        assert host.process is not None
        deadline = time.monotonic() + self.ping_timeout_s
        while time.monotonic() < deadline:
            code = host.process.poll()
            if code is not None:
                self._stop(host)
                reason = _read_failure(host.base_dir) or _log_tail(host.log_path)
                return (
                    f"ModelError: the model server exited with code {code} before answering /ping: {reason}"[
                        :FAILURE_REASON_LIMIT
                    ]
                )
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    return None
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return (
            f"ModelError: the model server did not answer GET /ping with 200 "
            f"within {self.ping_timeout_s:g} s; "
            f"see {host.log_path}"
        )

    @staticmethod
    def _execution_parameters(url: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Request values win; unset ones come from /execution-parameters, then SageMaker defaults."""
        advertised: dict[str, Any] = {}
        try:
            response = requests.get(f"{url}/execution-parameters", timeout=10)
            if response.status_code == 200:
                advertised = dict(response.json())
        except (requests.RequestException, ValueError):
            advertised = {}
        return {
            "MaxPayloadInMB": int(
                request.get("MaxPayloadInMB", advertised.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB))
            ),
            "BatchStrategy": str(
                request.get("BatchStrategy", advertised.get("BatchStrategy", "MultiRecord"))
            ),
            "MaxConcurrentTransforms": max(
                1, int(request.get("MaxConcurrentTransforms", advertised.get("MaxConcurrentTransforms", 1)))
            ),
        }

    def _transform_objects(
        self,
        url: str,
        request: Mapping[str, Any],
        input_uri: str,
        output_path: str,
        split: str,
        compression: str,
        parameters: Mapping[str, Any],
        job_dir: Path,
        outputs: dict[str, str],
        details: dict[str, Any],
    ) -> str | None:
        transform_input = request.get("TransformInput") or {}
        transform_output = request.get("TransformOutput") or {}
        client_config = request.get("ModelClientConfig") or {}
        headers = {}
        if transform_input.get("ContentType"):
            headers["Content-Type"] = str(transform_input["ContentType"])
        if transform_output.get("Accept"):
            headers["Accept"] = str(transform_output["Accept"])
        timeout = float(client_config.get("InvocationsTimeoutInSeconds", DEFAULT_INVOCATION_TIMEOUT_S))
        retries = int(client_config.get("InvocationsMaxRetries", DEFAULT_INVOCATION_RETRIES))
        assemble_lines = transform_output.get("AssembleWith", "None") == "Line"
        max_bytes = int(parameters["MaxPayloadInMB"]) * 1024 * 1024
        multi = str(parameters["BatchStrategy"]).replace("_", "").lower() == "multirecord"

        prefix_key = parse_s3_uri(input_uri).key
        object_uris = self.store.list_objects(input_uri)
        if not object_uris:
            return f"ClientError: no input objects found under {input_uri}"
        batch_counts: dict[str, int] = {}
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=int(parameters["MaxConcurrentTransforms"])
        ) as pool:
            for object_uri in object_uris:
                rel = relative_key(prefix_key, parse_s3_uri(object_uri).key)
                local_input = self.store.download_file(object_uri, job_dir / "input" / rel)
                body = local_input.read_bytes()
                if compression == "Gzip":
                    body = gzip.decompress(body)
                records = split_records(body, split)
                try:
                    batches = make_batches(
                        records, max_bytes, multi, joiner=b"\n" if split == "Line" else b""
                    )
                except ValueError as error:
                    return f"ClientError: {object_uri}: {error}"
                batch_counts[object_uri] = len(batches)
                futures = [
                    pool.submit(self._invoke, url, batch, headers, timeout, retries) for batch in batches
                ]
                responses = []
                for number, future in enumerate(futures, start=1):
                    status, content = future.result()
                    if status != 200:
                        for pending in futures:
                            pending.cancel()
                        snippet = content[:300].decode("utf-8", errors="replace").strip()
                        return (
                            f"ClientError: POST /invocations for batch {number}/{len(batches)} "
                            f"of {object_uri} "
                            f"returned HTTP {status}: {snippet}"
                        )[:FAILURE_REASON_LIMIT]
                    responses.append(content)
                assembled = assemble(responses, assemble_lines)
                local_output = job_dir / "output" / f"{rel}.out"
                local_output.parent.mkdir(parents=True, exist_ok=True)
                local_output.write_bytes(assembled)
                outputs[rel] = self.store.upload_file(local_output, f"{output_path}/{rel}.out")
        details["batches"] = batch_counts
        return None

    @staticmethod
    def _invoke(
        url: str, body: bytes, headers: Mapping[str, str], timeout: float, retries: int
    ) -> tuple[int, bytes]:
        status, content = 0, b""
        for attempt in range(retries + 1):
            try:
                response = requests.post(
                    f"{url}/invocations", data=body, headers=dict(headers), timeout=timeout
                )
                status, content = response.status_code, response.content
            except requests.RequestException as error:
                status, content = 0, f"request failed: {error}".encode()
            # Client errors are deterministic: retrying the same payload cannot help.
            if status == 200 or 400 <= status < 500:
                break
            if attempt < retries:
                time.sleep(0.2 * (attempt + 1))
        return status, content


def split_records(body: bytes, split: str) -> list[bytes]:
    """SplitType Line: one record per non-empty line; None: the whole object is one record."""
    if split == "Line":
        return [line.rstrip(b"\r") for line in body.split(b"\n") if line.strip()]
    return [body] if body else []


def make_batches(
    records: Sequence[bytes], max_bytes: int, multi_record: bool, joiner: bytes = b"\n"
) -> list[bytes]:
    """Pack records into request bodies of at most `max_bytes` (0 = no limit), in order.

    A record larger than the limit cannot be sent at all; SageMaker fails the job for it too.
    """
    batches: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for number, record in enumerate(records, start=1):
        if max_bytes and len(record) > max_bytes:
            raise ValueError(
                f"record {number} is {len(record)} bytes, larger than MaxPayloadInMB ({max_bytes} bytes)"
            )
        if not multi_record:
            batches.append(record)
            continue
        added = len(record) + (len(joiner) if current else 0)
        if current and max_bytes and size + added > max_bytes:
            batches.append(joiner.join(current))
            current, size = [], 0
            added = len(record)
        current.append(record)
        size += added
    if current:
        batches.append(joiner.join(current))
    return batches


def assemble(responses: Sequence[bytes], lines: bool) -> bytes:
    """AssembleWith Line: one response after another, each ending in exactly one newline."""
    if not lines:
        return b"".join(responses)
    return b"".join(r.rstrip(b"\n") + b"\n" for r in responses if r.strip())


def cluster_env(hosts: Sequence[str]) -> dict[str, str]:
    """What the hosts of one multi-host job need to find each other on this machine.

    In SageMaker `algo-N` resolve through DNS; here every host is a process on 127.0.0.1, so
    `ml.sagemaker.distributed` gets the names mapped explicitly and a tracker port that no
    other job uses. The short join timeout turns a host that never starts into a failed job
    within minutes instead of the 15 minutes a real cluster may need to boot.
    """
    if len(hosts) < 2:
        return {}
    return {
        "ML_HOST_ADDRESSES": json.dumps(dict.fromkeys(hosts, "127.0.0.1")),
        "ML_TRACKER_PORT": str(_free_port()),
        "ML_TRACKER_TIMEOUT": "120",
    }
