"""The whole pipeline on this machine: the same requests as the state machine, run locally.

`run_local` builds the run state with `ml.pipeline_input.prepare` (the Prepare Lambda's code,
so every override is validated and fails exactly as in AWS), then runs each prepared request
with `ml.local_sagemaker.LocalSageMaker` against a `LocalArtifactStore` under the output
directory: explore, preprocessing, training, model, batch transform, evaluation. Each job is
its container entry point in a process of its own, in a SageMaker directory tree.

Output directory:

    DIR/evaluation.json          the evaluation job's report + data and run metadata
    DIR/store/<bucket>/<key>     the buckets, with the key layout of AWS (docs/architecture.md)
    DIR/work/<job-name>/         each job's SAGEMAKER_BASE_DIR, logs under logs/
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

from ml import jobs
from ml.artifacts import LocalArtifactStore
from ml.local_sagemaker import JobResult, LocalSageMaker, RequestError
from ml.pipeline_input import prepare

# Deploy-time values of a local run. The name prefix is the stack's default, so job names have
# the same shape as in AWS; the ARNs and image are never called, only carried in the requests.
LOCAL_SETTINGS: Final = jobs.DeploySettings(
    name_prefix="xgb-pipeline",
    role_arn="arn:aws:iam::000000000000:role/local-run",
    image_uri="local/xgb-pipeline:latest",
    data_bucket="local-data",
    artifact_bucket="local-artifacts",
)
DATASET_PREFIX: Final[str] = "datasets/default/"
EXECUTION_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,80}")
SYNTHETIC_FILE: Final[str] = "synthetic_credit_default.csv"
DATA_SUFFIXES: Final[tuple[str, ...]] = (".csv", ".csv.gz", ".xls", ".xlsx")  # as ml.data reads

# Each step and what the executor does with its request; `explore` runs only locally.
STEPS: Final[tuple[tuple[str, str], ...]] = (
    ("explore", "processing"),
    ("preprocessing", "processing"),
    ("training", "training"),
    ("model", "model"),
    ("transform", "transform"),
    ("evaluation", "processing"),
)
SIDE_STEPS: Final[frozenset[str]] = frozenset({"explore"})


class LocalRunError(Exception):
    """A problem with the local run's own inputs (file, options); the message says the fix."""


class StepFailedError(Exception):
    """A job of the run failed; carries the step, the job name, the reason and the log."""

    def __init__(self, step: str, job_name: str, reason: str, log: Path | None) -> None:
        self.step = step
        self.job_name = job_name
        self.reason = reason
        self.log = log
        super().__init__(f"step {step!r} (job {job_name}) failed: {reason}")


@dataclass
class StepReport:
    step: str
    job_name: str
    status: str
    duration_seconds: float
    log: Path | None = None
    failure_reason: str | None = None


@dataclass
class LocalRun:
    """What a finished local run produced."""

    execution_name: str
    run_id: str
    output_dir: Path
    state: dict[str, Any]
    data: dict[str, Any]
    steps: list[StepReport] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    wall_time_seconds: float = 0.0

    @property
    def evaluation_file(self) -> Path:
        return self.output_dir / "evaluation.json"


def default_execution_name(now: datetime | None = None) -> str:
    return "local-" + (now or datetime.now()).strftime("%Y%m%d-%H%M%S")


def _stage_data(store: LocalArtifactStore, data: Path | None, data_uri_set: bool) -> dict[str, Any]:
    """Put the raw data where `upload-data` puts it in AWS; returns the run's data description."""
    target_prefix = f"s3://{LOCAL_SETTINGS.data_bucket}/{DATASET_PREFIX}"
    if data_uri_set:
        if data is not None:
            raise LocalRunError("--data and --set data_uri=... both name the input; use one of them")
        return {"synthetic": False, "source": "data_uri (--set)"}
    if data is not None:
        data = Path(data)
        if not data.is_file():
            raise LocalRunError(f"--data {data}: no such file (pass a {', '.join(DATA_SUFFIXES)} data set)")
        if not data.name.lower().endswith(DATA_SUFFIXES):
            raise LocalRunError(
                f"--data {data}: unsupported file type; use one of {', '.join(DATA_SUFFIXES)}"
            )
    # The default data_uri is the whole prefix; an earlier run's file left there would be read
    # too, so the local data prefix holds exactly this run's file (copies only, never the source).
    stale = store.path_for(target_prefix)
    if stale.is_dir():
        shutil.rmtree(stale)
    if data is not None:
        uri = store.upload_file(data, target_prefix + data.name)
        return {"synthetic": False, "source": str(data.resolve()), "uri": uri}

    from ml.data import SYNTHETIC_NOTICE, synthetic_dataset

    frame = synthetic_dataset()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SYNTHETIC_FILE
        frame.to_csv(path, index=False)
        uri = store.upload_file(path, target_prefix + SYNTHETIC_FILE)
    return {
        "synthetic": True,
        "source": "embedded synthetic data set (ml.data.synthetic_dataset)",
        "uri": uri,
        "rows": len(frame),
        "notice": SYNTHETIC_NOTICE,
    }


class _Progress:
    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream = stream
        self.total = total
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def start(self, index: int, step: str, job_name: str) -> None:
        self.line(f"[{index}/{self.total}] {step:<13} {job_name} ...")

    def end(self, index: int, report: StepReport) -> None:
        self.line(
            f"[{index}/{self.total}] {report.step:<13} {report.job_name} "
            f"{report.status} in {report.duration_seconds:.1f} s"
        )


def _check(run: LocalRun, step_report: StepReport) -> None:
    run.steps.append(step_report)
    if step_report.status != "Completed":
        raise StepFailedError(
            step_report.step,
            step_report.job_name,
            step_report.failure_reason or "unknown failure",
            step_report.log,
        )


def _execute(
    executor: LocalSageMaker,
    step: str,
    kind: str,
    request: Mapping[str, Any],
    progress: _Progress,
    number: int,
) -> StepReport:
    """Run one step and report its end; a rejected request is a failed step like a failed job."""
    job_name = _job_name(request)
    started = time.monotonic()
    try:
        result = _run_step(executor, kind, request)
    except RequestError as error:
        step_report = StepReport(
            step, job_name, "Failed", time.monotonic() - started, None, f"the request was rejected: {error}"
        )
    else:
        if result is None:
            step_report = StepReport(step, job_name, "Completed", time.monotonic() - started)
        else:
            step_report = StepReport(
                step=step,
                job_name=job_name,
                status=result.status,
                duration_seconds=result.duration_seconds,
                log=result.log_path,
                failure_reason=result.failure_reason,
            )
    progress.end(number, step_report)
    return step_report


def _run_step(executor: LocalSageMaker, kind: str, request: Mapping[str, Any]) -> JobResult | None:
    if kind == "processing":
        return executor.run_processing_job(request)
    if kind == "training":
        return executor.run_training_job(request)
    if kind == "transform":
        return executor.run_transform_job(request)
    executor.create_model(request)
    return None


def _job_name(request: Mapping[str, Any]) -> str:
    for key in ("ProcessingJobName", "TrainingJobName", "TransformJobName", "ModelName"):
        if key in request:
            return str(request[key])
    raise KeyError("request without a job name")


def _artifact_table(
    store: LocalArtifactStore, state: Mapping[str, Any], data: Mapping[str, Any], *, explored: bool
) -> dict[str, dict[str, str]]:
    uris = state["uris"]
    names = {
        "data": data.get("uri", uris["data"]),
        **({"explore": uris["explore"]} if explored else {}),
        "processing": uris["run"] + "processing/",
        "model": uris["model_artifact"],
        "checkpoints": uris["checkpoints"],
        "predictions": uris["transform_output"] + jobs.TRANSFORM_OUTPUT_FILE,
        "evaluation": uris["evaluation"],
    }
    return {name: {"uri": uri, "path": str(store.path_for(uri))} for name, uri in names.items()}


def run_local(
    *,
    output_dir: Path,
    execution_input: Mapping[str, Any] | None = None,
    data: Path | None = None,
    execution_name: str | None = None,
    explore: bool = True,
    verbose: bool = False,
    progress: IO[str] | None = None,
) -> LocalRun:
    """Run the pipeline locally. Raises `InputError`/`HyperparameterError` for a bad input
    (before anything runs), `LocalRunError` for a bad --data, `StepFailedError` when a job fails."""
    started = time.monotonic()
    stream = progress if progress is not None else sys.stderr
    execution_input = dict(execution_input or {})
    execution_name = execution_name or default_execution_name()
    if not EXECUTION_NAME.fullmatch(execution_name):
        raise LocalRunError(
            f"execution name {execution_name!r} is not valid: use 1-80 letters, digits, '-' or '_' "
            "(the rule of Step Functions, whose execution name becomes the run id)"
        )
    state = prepare(execution_input, execution_name, LOCAL_SETTINGS)

    output_dir = Path(output_dir).resolve()
    store = LocalArtifactStore(output_dir / "store")
    data_info = _stage_data(store, data, "data_uri" in execution_input)
    data_info.setdefault("uri", state["uris"]["data"])

    executor = LocalSageMaker(store, output_dir / "work", echo=stream if verbose else None)
    run = LocalRun(
        execution_name=execution_name,
        run_id=state["run_id"],
        output_dir=output_dir,
        state=state,
        data=data_info,
    )
    steps = [(step, kind) for step, kind in STEPS if explore or step != "explore"]
    report = _Progress(stream, len(steps))
    report.line(f"local run {execution_name} (run id {state['run_id']}) -> {output_dir}")
    if data_info["synthetic"]:
        report.line(f"NOTE: {data_info['notice']}")
    report.line(f"data: {data_info['uri']}")

    numbers = {step: index for index, (step, _) in enumerate(steps, start=1)}
    # Exploration only reads the raw data and nothing waits for its plots, so it runs beside
    # the pipeline instead of in front of it. Leaving the `with` waits for it in every case.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as side:
        try:
            background: concurrent.futures.Future[StepReport] | None = None
            for step, kind in steps:
                request = state["requests"][step]
                report.start(numbers[step], step, _job_name(request))
                if step in SIDE_STEPS:
                    background = side.submit(_execute, executor, step, kind, request, report, numbers[step])
                    continue
                _check(run, _execute(executor, step, kind, request, report, numbers[step]))
            if background is not None:
                _check(run, background.result())
        except KeyboardInterrupt:
            # Stopped here, inside the `with`, so leaving it does not wait for exploration.
            executor.stop_all()
            raise
    run.steps.sort(key=lambda step_report: numbers[step_report.step])

    run.artifacts = _artifact_table(store, state, data_info, explored=explore)
    evaluation_uri = f"s3://{LOCAL_SETTINGS.artifact_bucket}/{state['uris']['evaluation_key']}"
    evaluation = json.loads(store.path_for(evaluation_uri).read_text(encoding="utf-8"))
    _take_job_data_description(run, evaluation)
    verdict = quality_gate(evaluation, state["config"])
    gate = StepReport(
        step="quality_gate",
        job_name=state["names"]["evaluation"],
        status="Failed" if verdict else "Completed",
        duration_seconds=0.0,
        failure_reason=verdict,
    )
    run.steps.append(gate)
    report.line(f"quality gate: {verdict or _gate_text(evaluation, state['config'])}")
    run.wall_time_seconds = time.monotonic() - started
    run.evaluation = _with_run_metadata(evaluation, run)
    # Written even when the gate fails: the report is what one looks at to see why.
    run.evaluation_file.write_text(json.dumps(run.evaluation, indent=2) + "\n", encoding="utf-8")
    if verdict:
        raise StepFailedError("quality_gate", gate.job_name, verdict, run.evaluation_file)
    return run


def quality_gate(evaluation: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    """The state machine's QualityGate: None when `quality_metric >= quality_threshold`, else the
    failure (error name and cause, as the AWS run reports them)."""
    metric = config["quality_metric"]
    value = evaluation.get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"QualityMetricMissing: evaluation.json has no numeric {metric}; it has {sorted(evaluation)}"
    if value < config["quality_threshold"]:
        return f"QualityGateFailed: {metric} is {value}, below the quality threshold {config['quality_threshold']}"
    return None


def _gate_text(evaluation: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    metric = config["quality_metric"]
    return f"passed ({metric} {evaluation[metric]:.4f} >= {config['quality_threshold']})"


def _take_job_data_description(run: LocalRun, evaluation: Mapping[str, Any]) -> None:
    """The evaluation job's `data` block (synthetic?, rows, notice) is what the jobs actually
    read, so it wins over what staging assumed (data under `--set data_uri=` can be synthetic
    too); DIR/evaluation.json keeps one `data` block: the job's keys plus source and uri."""
    job_data = evaluation.get("data")
    if isinstance(job_data, Mapping) and isinstance(job_data.get("synthetic"), bool):
        run.data.update(job_data)
        if not job_data["synthetic"]:
            run.data.pop("notice", None)


def _with_run_metadata(evaluation: Mapping[str, Any], run: LocalRun) -> dict[str, Any]:
    document = dict(evaluation)
    document["data"] = dict(run.data)
    document["run"] = {
        "mode": "local",
        "execution_name": run.execution_name,
        "run_id": run.run_id,
        "input": run.state["config"],
        "jobs": {
            s.step: {
                "job_name": s.job_name,
                "status": s.status,
                "duration_seconds": round(s.duration_seconds, 3),
                "log": str(s.log) if s.log else None,
            }
            for s in run.steps
        },
        "artifacts": run.artifacts,
        "wall_time_seconds": round(run.wall_time_seconds, 3),
    }
    return document


def _metric(evaluation: Mapping[str, Any], name: str) -> str:
    value = evaluation.get(name)
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def format_summary(run: LocalRun) -> str:
    """The table a local run ends with: metrics, then where each artefact is."""
    evaluation = run.evaluation
    lines = [f"Local run {run.execution_name} (run id {run.run_id})"]
    if run.data.get("synthetic"):
        lines.append(f"  DATA: SYNTHETIC. {run.data.get('notice', '')}".rstrip())
    else:
        lines.append(f"  data: {run.data.get('source')}")
    lines.append("")
    rows = [
        ("accuracy", _metric(evaluation, "accuracy")),
        ("ROC AUC", _metric(evaluation, "auc")),
        ("F1", _metric(evaluation, "f1")),
        ("precision", _metric(evaluation, "precision")),
        ("recall", _metric(evaluation, "recall")),
        ("baseline accuracy", _metric(evaluation, "baseline_accuracy")),
        ("test rows", str(evaluation.get("n", "n/a"))),
        ("threshold", str(evaluation.get("threshold", run.state["config"]["threshold"]))),
    ]
    lines.append(f"  {'metric':<20} value")
    lines.extend(f"  {name:<20} {value}" for name, value in rows)
    config = run.state["config"]
    gate = next((s for s in run.steps if s.step == "quality_gate"), None)
    if gate is not None:
        verdict = "passed" if gate.status == "Completed" else "FAILED"
        lines.append(
            f"  {'quality gate':<20} {verdict} ({config['quality_metric']} >= {config['quality_threshold']})"
        )
    lines.append("")
    lines.append(f"  {'step':<14} {'status':<10} {'seconds':>8}  job")
    for step in run.steps:
        lines.append(f"  {step.step:<14} {step.status:<10} {step.duration_seconds:>8.1f}  {step.job_name}")
    lines.append("")
    lines.append(f"  {'artefact':<14} location")
    for name, where in run.artifacts.items():
        lines.append(f"  {name:<14} {where['uri']}")
        lines.append(f"  {'':<14} -> {where['path']}")
    lines.append(f"  {'report':<14} {run.evaluation_file}")
    lines.append(f"  {'job trees':<14} {run.output_dir / 'work'}/<job-name>/ (logs/ inside each)")
    lines.append("")
    lines.append(f"  wall time {run.wall_time_seconds:.1f} s")
    return "\n".join(lines)
