"""The AWS side of `python -m ml`: upload the data set, start a pipeline run, follow it.

Every command finds the deployed resources through the stack's CloudFormation outputs
(`DataBucketName`, `StateMachineArn`), so nothing is configured by hand. `register(subparsers)`
adds the sub-commands to the `python -m ml` parser; each sets `func(args) -> int` (exit code).

The functions under the commands take boto3 clients as arguments, so tests run them against
moto and other code can reuse them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

DEFAULT_STACK_NAME: Final[str] = "XgbBatchPipeline"
STACK_ENV: Final[str] = "ML_PIPELINE_STACK"
OUTPUT_DATA_BUCKET: Final[str] = "DataBucketName"
OUTPUT_STATE_MACHINE: Final[str] = "StateMachineArn"
# JSON of the execution-input defaults the deployer chose in CDK context (infra.pipeline.deploy_defaults).
OUTPUT_RUN_DEFAULTS: Final[str] = "RunDefaults"
DATASET_PREFIX: Final[str] = "datasets/default/"
# Step Functions execution names: 1-80 characters, letters, digits, '-' and '_'.
_EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
# Task parameters that name the job, cluster or resource a step works on.
_JOB_NAME_KEYS: Final[tuple[str, ...]] = (
    "ProcessingJobName",
    "TrainingJobName",
    "TransformJobName",
    "ModelName",
    "TrialName",
    "ExperimentName",
    "ProjectName",
    "FunctionName",
)


class AwsCommandError(RuntimeError):
    """A problem the user can fix; the message says what and how. The CLI prints it, exit 2."""


# --------------------------------------------------------------------------- stack outputs


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """The outputs of a deployed stack, by output key."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        raise AwsCommandError(
            f"stack {stack_name!r} not found ({error.response['Error']['Message']}). Deploy it with "
            f"`npx cdk deploy`, or name the deployed stack with --stack NAME or ${STACK_ENV}."
        ) from error
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def require_output(outputs: Mapping[str, str], key: str, stack_name: str) -> str:
    if key not in outputs:
        raise AwsCommandError(
            f"stack {stack_name!r} has no output {key!r} (it has: {', '.join(sorted(outputs)) or 'none'}). "
            "Is it the pipeline stack, and is it deployed from this version of the project?"
        )
    return outputs[key]


# --------------------------------------------------------------------------- upload-data


def bucket_kms_key(s3: Any, bucket: str) -> str:
    """The KMS key the bucket encrypts with by default (uploads name it explicitly, so an object
    never ends up under the AWS-managed `aws/s3` key the bucket policy may refuse)."""
    from botocore.exceptions import ClientError

    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as error:
        raise AwsCommandError(
            f"cannot read the default encryption of bucket {bucket!r}: {error.response['Error']['Message']}"
        ) from error
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse") and default.get("KMSMasterKeyID"):
            return str(default["KMSMasterKeyID"])
    raise AwsCommandError(
        f"bucket {bucket!r} has no default SSE-KMS key; the pipeline stack creates its buckets with one. "
        "Is --stack the pipeline stack?"
    )


def dataset_uri(bucket: str, file_name: str) -> str:
    return f"s3://{bucket}/{DATASET_PREFIX}{file_name}"


# The input fields that decide how a file loads: `upload-data --set` takes these, with the same
# names and validation as `start --set`, so a data set that needs them is checked as it will run.
LOADING_FIELDS: tuple[str, ...] = ("label_column", "dataset_schema", "drop_columns")


def dataset_config_for(loading_input: Mapping[str, Any]) -> Any:
    """The `DatasetConfig` that the preprocessing job will use for these input fields."""
    from ml.config import DatasetConfig, uci_schema_for
    from ml.pipeline_input import validate_input

    unknown = sorted(set(loading_input) - set(LOADING_FIELDS))
    if unknown:
        raise AwsCommandError(
            f"upload-data --set takes only {', '.join(LOADING_FIELDS)} (how the file loads); "
            f"got {', '.join(unknown)}: pass those to `python -m ml start --set` instead"
        )
    # data_uri is irrelevant here; any valid URI lets the rest of the input validate.
    config = validate_input(dict(loading_input), {"data_uri": "s3://placeholder-bucket/"})
    return DatasetConfig(
        label_column=config["label_column"],
        drop_columns=tuple(config["drop_columns"]),
        uci_schema=uci_schema_for(config["dataset_schema"]),
    )


def upload_dataset(
    path: Path,
    *,
    s3: Any,
    bucket: str,
    kms_key_id: str,
    loading_input: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> str:
    """Check that `path` loads as the data set, then upload it where a run reads it by default.

    `loading_input` holds the execution-input fields that decide how the file loads
    (`LOADING_FIELDS`); without them the UCI credit-card schema is expected. A run reads every
    object under the data set prefix, so other files there are refused (they would be mixed into
    the data set) unless `replace`, which deletes them after the upload; the bucket is versioned,
    so their earlier versions stay recoverable.
    """
    from ml.data import load_dataset

    path = Path(path)
    if not path.is_file():
        raise AwsCommandError(f"{path} is not a file; pass the data set (.csv, .xls or .xlsx)")
    dataset_config = dataset_config_for(loading_input or {})
    try:
        frame = load_dataset(path, dataset_config)
    except ValueError as error:
        raise AwsCommandError(f"{path} is not a usable data set: {error}") from error
    key = f"{DATASET_PREFIX}{path.name}"
    others = [other for other in _keys_under(s3, bucket, DATASET_PREFIX) if other != key]
    if others and not replace:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise AwsCommandError(
            f"s3://{bucket}/{DATASET_PREFIX} already holds {listed}; a run reads every file there, so "
            f"{path.name} would be mixed with them. Pass --replace to upload it as the only data set "
            "(the others are deleted; the bucket keeps their earlier versions)"
        )
    s3.upload_file(
        str(path),
        bucket,
        key,
        ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id},
    )
    print(f"uploaded {path} ({len(frame)} rows) to s3://{bucket}/{key}")
    if others:
        for start in range(0, len(others), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = others[start : start + 1000]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": other} for other in batch]})
        print(f"removed the other data set files: {', '.join(others)}")
    if loading_input:
        settings = " ".join(f"--set {name}={json.dumps(value)}" for name, value in loading_input.items())
        print(f"start runs on it with the same settings: python -m ml start {settings}")
    return dataset_uri(bucket, path.name)


def _keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


# --------------------------------------------------------------------------- start


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """`--set name=value` options as an execution input.

    The value is JSON when it parses as JSON (`0.3`, `true`, `["ID"]`, `{"max_depth": "6"}`) and
    a string otherwise (`s3://bucket/key`, `ml.m5.2xlarge`). `hyperparameters.NAME=VALUE` sets one
    hyperparameter. The result is validated by `ml.pipeline_input`, which names any bad key.
    """
    execution_input: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise AwsCommandError(f"--set {assignment!r}: expected NAME=VALUE, e.g. --set split_ratio=0.3")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if name.startswith("hyperparameters."):
            hyperparameters = execution_input.setdefault("hyperparameters", {})
            if not isinstance(hyperparameters, dict):
                raise AwsCommandError(
                    "--set hyperparameters=... and hyperparameters.NAME=... cannot be mixed"
                )
            hyperparameters[name.split(".", 1)[1]] = value
        else:
            execution_input[name] = value
    return execution_input


def default_execution_name(now: datetime | None = None) -> str:
    return "run-" + (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def validate_execution_input(
    execution_input: Mapping[str, Any], data_bucket: str, deploy_defaults: Mapping[str, Any] | None = None
) -> None:
    """Fail here, before anything starts in AWS, on what the Prepare step would refuse: the input
    merged with the same deploy-time defaults (the stack's RunDefaults output) the Prepare step uses."""
    from ml.pipeline_input import InputError, validate_input

    defaults = {**(deploy_defaults or {}), "data_uri": f"s3://{data_bucket}/{DATASET_PREFIX}"}
    try:
        validate_input(dict(execution_input), defaults)
    except InputError as error:
        raise AwsCommandError(str(error)) from error


def run_defaults(outputs: Mapping[str, str], stack: str) -> dict[str, Any]:
    """The stack's deploy-time input defaults; {} for a stack deployed before it had the output."""
    raw = outputs.get(OUTPUT_RUN_DEFAULTS)
    if raw is None:
        return {}
    try:
        defaults = json.loads(raw)
    except json.JSONDecodeError as error:
        raise AwsCommandError(
            f"stack {stack!r} output {OUTPUT_RUN_DEFAULTS} is not JSON ({error})"
        ) from error
    if not isinstance(defaults, dict):
        raise AwsCommandError(f"stack {stack!r} output {OUTPUT_RUN_DEFAULTS} is not a JSON object")
    return defaults


def start_run(
    sfn: Any,
    *,
    state_machine_arn: str,
    execution_input: Mapping[str, Any],
    name: str,
) -> str:
    """Start one execution; returns its ARN."""
    if not _EXECUTION_NAME.match(name):
        raise AwsCommandError(
            f"execution name {name!r} is not valid: use 1-80 letters, digits, '-' or '_' (it becomes the run id)"
        )
    from botocore.exceptions import ClientError

    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(dict(execution_input))
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
            raise AwsCommandError(
                f"an execution named {name!r} already exists; run ids are unique, choose another --name"
            ) from error
        raise
    return str(response["executionArn"])


# --------------------------------------------------------------------------- status


@dataclass
class StepReport:
    """One state of an execution, as `status` shows it."""

    name: str
    state_type: str
    started: datetime
    ended: datetime | None = None
    job_name: str | None = None
    status: str = "running"  # "running" | "succeeded" | "failed" | "caught" | "retried"
    error: str | None = None
    reason: str | None = None
    attempts: int = 0

    @property
    def duration_seconds(self) -> float | None:
        return None if self.ended is None else (self.ended - self.started).total_seconds()


@dataclass
class ExecutionReport:
    name: str
    arn: str
    status: str
    started: datetime
    stopped: datetime | None
    steps: list[StepReport] = field(default_factory=list)
    error: str | None = None
    cause: str | None = None
    metrics: dict[str, Any] | None = None


def failure_reason(cause: str | None) -> str | None:
    """The human part of a task failure's Cause.

    A failed `.sync` SageMaker job reports its Describe* output (with `FailureReason`), a
    Lambda its error payload (`errorMessage`); other causes are already text.
    """
    if not cause:
        return cause
    try:
        parsed = json.loads(cause)
    except json.JSONDecodeError:
        return cause
    if isinstance(parsed, dict):
        for key in ("FailureReason", "errorMessage", "ExitMessage", "reason"):
            if parsed.get(key):
                return str(parsed[key])
    return cause


def _job_name(parameters: str | None) -> str | None:
    if not parameters:
        return None
    try:
        parsed = json.loads(parameters)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    for key in _JOB_NAME_KEYS:
        if isinstance(parsed.get(key), str):
            return str(parsed[key])
    return None


def steps_from_history(events: Iterable[Mapping[str, Any]]) -> list[StepReport]:
    """Fold an execution history (a sequential state machine) into one report per state entered."""
    steps: list[StepReport] = []
    current: StepReport | None = None
    for event in events:
        kind: str = event["type"]
        if kind.endswith("StateEntered"):
            current = StepReport(
                name=event["stateEnteredEventDetails"]["name"],
                state_type=kind.removesuffix("StateEntered"),
                started=event["timestamp"],
            )
            steps.append(current)
        elif current is None:
            continue
        elif kind == "TaskScheduled":
            current.attempts += 1
            current.job_name = (
                _job_name(event["taskScheduledEventDetails"].get("parameters")) or current.job_name
            )
        elif kind in ("TaskFailed", "TaskTimedOut", "LambdaFunctionFailed"):
            details = next(v for k, v in event.items() if k.endswith("EventDetails"))
            current.error = details.get("error")
            current.reason = failure_reason(details.get("cause"))
            current.status = "failed"
        elif kind == "TaskSucceeded":
            current.status, current.error, current.reason = "succeeded", None, None
        elif kind.endswith("StateExited"):
            current.ended = event["timestamp"]
            if current.status == "running":
                current.status = "succeeded"
            elif current.status == "failed":
                # The state was left through a Catch: the execution went on to its failure path.
                current.status = "caught"
        elif kind == "FailStateEntered":
            current.status = "failed"
    for step in steps:
        if step.attempts > 1 and step.status == "succeeded":
            step.status = f"succeeded after {step.attempts} attempts"
    return steps


def _history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        events.extend(page["events"])
    return events


def latest_execution(sfn: Any, state_machine_arn: str) -> str:
    executions: list[dict[str, Any]] = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn):
        executions.extend(page["executions"])
    if not executions:
        raise AwsCommandError("the pipeline has not run yet; start a run with `python -m ml start`")
    return str(max(executions, key=lambda e: e["startDate"])["executionArn"])


def execution_arn_for(state_machine_arn: str, execution: str) -> str:
    """Accept an execution ARN or just its name."""
    if execution.startswith("arn:"):
        return execution
    # arn:aws:states:region:account:stateMachine:NAME -> ...:execution:NAME:EXECUTION
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{machine}:{execution}"


def execution_report(sfn: Any, execution_arn: str) -> ExecutionReport:
    described = sfn.describe_execution(executionArn=execution_arn)
    report = ExecutionReport(
        name=described["name"],
        arn=execution_arn,
        status=described["status"],
        started=described["startDate"],
        stopped=described.get("stopDate"),
        error=described.get("error"),
        cause=described.get("cause"),
    )
    report.steps = steps_from_history(_history(sfn, execution_arn))
    if report.status == "SUCCEEDED" and described.get("output"):
        output = json.loads(described["output"])
        if isinstance(output, dict) and isinstance(output.get("evaluation"), dict):
            metrics = output["evaluation"].get("metrics")
            report.metrics = metrics if isinstance(metrics, dict) else None
    return report


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{value:.1f}s"


def format_report(report: ExecutionReport) -> str:
    end = report.stopped or datetime.now(report.started.tzinfo)
    lines = [
        f"execution {report.name}: {report.status} ({_seconds((end - report.started).total_seconds())})",
        f"  {report.arn}",
        "",
    ]
    width = max([len(s.name) for s in report.steps] + [4])
    for step in report.steps:
        job = f"  job {step.job_name}" if step.job_name else ""
        lines.append(f"  {step.name:<{width}}  {step.status:<10} {_seconds(step.duration_seconds):>7}{job}")
        if step.reason and step.status in ("failed", "caught"):
            lines.append(f"  {'':<{width}}  {step.error}: {step.reason}")
    if report.status != "SUCCEEDED" and (report.error or report.cause):
        lines += ["", f"error: {report.error}", f"cause: {report.cause}"]
    if report.metrics:
        lines += ["", "metrics:"]
        for name, value in report.metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines.append(
                    f"  {name:<18} {value:.4f}" if isinstance(value, float) else f"  {name:<18} {value}"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI wiring


@dataclass
class Clients:
    """boto3 clients the commands use; tests pass moto-backed ones."""

    cloudformation: Any
    s3: Any
    sfn: Any

    @classmethod
    def default(cls, region: str | None = None) -> Clients:
        import boto3

        session = boto3.Session(region_name=region)
        return cls(
            cloudformation=session.client("cloudformation"),
            s3=session.client("s3"),
            sfn=session.client("stepfunctions"),
        )


ClientFactory = Callable[[argparse.Namespace], Clients]


def _clients(args: argparse.Namespace) -> Clients:
    factory: ClientFactory = getattr(args, "client_factory", None) or (lambda a: Clients.default(a.region))
    return factory(args)


def cmd_upload_data(args: argparse.Namespace) -> int:
    clients = _clients(args)
    outputs = stack_outputs(clients.cloudformation, args.stack)
    bucket = require_output(outputs, OUTPUT_DATA_BUCKET, args.stack)
    upload_dataset(
        Path(args.file),
        s3=clients.s3,
        bucket=bucket,
        kms_key_id=bucket_kms_key(clients.s3, bucket),
        loading_input=parse_assignments(args.set or []),
        replace=args.replace,
    )
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    clients = _clients(args)
    execution_input = parse_assignments(args.set or [])
    outputs = stack_outputs(clients.cloudformation, args.stack)
    state_machine_arn = require_output(outputs, OUTPUT_STATE_MACHINE, args.stack)
    data_bucket = require_output(outputs, OUTPUT_DATA_BUCKET, args.stack)
    validate_execution_input(execution_input, data_bucket, run_defaults(outputs, args.stack))
    name = args.name or default_execution_name()
    arn = start_run(
        clients.sfn, state_machine_arn=state_machine_arn, execution_input=execution_input, name=name
    )
    print(f"started {name} with input {json.dumps(execution_input)}")
    print(f"  {arn}")
    print(f"follow it with: python -m ml status {name}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    clients = _clients(args)
    outputs = stack_outputs(clients.cloudformation, args.stack)
    state_machine_arn = require_output(outputs, OUTPUT_STATE_MACHINE, args.stack)
    if args.execution:
        execution_arn = execution_arn_for(state_machine_arn, args.execution)
    else:
        execution_arn = latest_execution(clients.sfn, state_machine_arn)
    report = execution_report(clients.sfn, execution_arn)
    print(format_report(report))
    return {"SUCCEEDED": 0, "RUNNING": 0}.get(report.status, 1)


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AwsCommandError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    run.__name__ = command.__name__
    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack",
        default=os.environ.get(STACK_ENV, DEFAULT_STACK_NAME),
        help=f"name of the deployed pipeline stack (default: ${STACK_ENV} or {DEFAULT_STACK_NAME})",
    )
    parser.add_argument("--region", default=None, help="AWS region (default: the AWS CLI configuration)")


def register(subparsers: Any) -> None:
    """Add `upload-data`, `start` and `status` to the `python -m ml` sub-command parser.

    Each sub-command sets `func`: call `args.func(args)` and exit with the returned code.
    """
    upload = subparsers.add_parser(
        "upload-data",
        help="check a data set file and upload it to the stack's data bucket",
        description="Checks that FILE loads as the data set (the UCI credit-card schema, or what --set "
        "describes), then uploads it to "
        f"s3://<DataBucketName>/{DATASET_PREFIX}<file name> with SSE-KMS, where a run reads it by default.",
    )
    upload.add_argument("file", help="the data set (.csv, .xls or .xlsx)")
    upload.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="how the file loads, as in `start --set`: label_column, dataset_schema, drop_columns "
        "(e.g. --set label_column=churned for another data set)",
    )
    upload.add_argument(
        "--replace",
        action="store_true",
        help=f"delete the other files under {DATASET_PREFIX} after the upload (a run reads them all); "
        "without it the upload is refused when there are any",
    )
    _common(upload)
    upload.set_defaults(func=_guarded(cmd_upload_data))

    start = subparsers.add_parser(
        "start",
        help="start a pipeline run in AWS Step Functions",
        description="Starts the pipeline state machine. Without --set the run uses every default.",
    )
    start.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override one input field, e.g. --set split_ratio=0.3 --set hyperparameters.max_depth=6 "
        "--set spot_training=true (repeatable)",
    )
    start.add_argument("--name", help="execution name, which becomes the run id (default: run-<UTC time>)")
    _common(start)
    start.set_defaults(func=_guarded(cmd_start))

    status = subparsers.add_parser(
        "status",
        help="show a pipeline run step by step",
        description="Shows each step of a run (default: the latest) with job names, durations, "
        "failure reasons, and the evaluation metrics of a successful run.",
    )
    status.add_argument("execution", nargs="?", help="execution name or ARN (default: the latest run)")
    _common(status)
    status.set_defaults(func=_guarded(cmd_status))
