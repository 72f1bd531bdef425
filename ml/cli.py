"""`python -m ml`: run the pipeline locally, fetch the real data, drive the AWS pipeline.

Local sub-commands: `run-local`, `download`. The AWS ones (`upload-data`, `start`, `status`)
come from `ml.aws_commands`. Errors a user can fix print one line (`error: ...`) and exit 2;
a failed job exits 1 with the step, job name, reason and log file.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from ml import aws_commands

EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_OUTPUT = "out"
UCI_PAGE = "https://archive.ics.uci.edu/dataset/350/default+of+credit+card+clients"


def _input_fields_help() -> str:
    from ml.local_runner import DATASET_PREFIX, LOCAL_SETTINGS
    from ml.pipeline_input import INPUT_FIELDS

    lines = ["names for --set (the state machine's execution input):"]
    local_defaults = {
        "data_uri": f"s3://{LOCAL_SETTINGS.data_bucket}/{DATASET_PREFIX} (the --data file)",
        "hyperparameters": "the notebook's",
    }
    for name, spec in INPUT_FIELDS.items():
        default = local_defaults.get(name, spec.default)
        lines.append(f"  {name:<26} {spec.description} (default: {default})")
    lines.append("  hyperparameters.NAME       one XGBoost hyperparameter, e.g. hyperparameters.max_depth=6")
    return "\n".join(lines)


RUN_LOCAL_EPILOG = """\
examples:
  python -m ml run-local
  python -m ml run-local --data default_of_credit_card_clients.xls --output out
  python -m ml run-local --set hyperparameters.max_depth=6 --set split_ratio=0.25 --set threshold=0.6
  python -m ml run-local --data my.csv --set label_column=churned \\
      --set 'standard_scaled=["income"]' --set 'minmax_scaled=[]' --set 'drop_columns=[]'
  python -m ml run-local --data other.csv --set dataset_schema=generic \
      --set 'standard_scaled=[]' --set 'minmax_scaled=[]' --set 'drop_columns=[]'
      (a non-UCI table whose label column is already called Label)

values are JSON when they parse as JSON (0.3, true, ["a","b"]) and strings otherwise.

"""


def _cmd_run_local(args: argparse.Namespace) -> int:
    from ml.hyperparameters import HyperparameterError
    from ml.local_runner import LocalRunError, StepFailedError, format_summary, run_local
    from ml.pipeline_input import InputError

    try:
        execution_input = aws_commands.parse_assignments(args.set or [])
        run = run_local(
            output_dir=Path(args.output),
            execution_input=execution_input,
            data=Path(args.data) if args.data else None,
            execution_name=args.execution_name,
            explore=not args.no_explore,
            verbose=args.verbose,
        )
    except (aws_commands.AwsCommandError, InputError, HyperparameterError, LocalRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: the running jobs were stopped", file=sys.stderr)
        return 130
    except StepFailedError as failure:
        print(f"error: step {failure.step!r} failed (job {failure.job_name})", file=sys.stderr)
        # The first line of output/failure is the human-readable reason; the rest (a traceback)
        # is in the job's log.
        reason = failure.reason.strip().splitlines()[0] if failure.reason.strip() else "unknown"
        print(f"  reason: {reason}", file=sys.stderr)
        if failure.log is not None:
            label = "report" if failure.step == "quality_gate" else "log"
            print(f"  {label + ':':<7} {failure.log}", file=sys.stderr)
        return EXIT_FAILED
    print(format_summary(run))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from ml.data import DownloadError, download_uci

    try:
        path = download_uci(Path(args.dest))
    except DownloadError as error:
        # The message already says how to get the file by hand and how to run without it.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"error: cannot write to {args.dest}: {error}; choose another --dest DIR", file=sys.stderr)
        return EXIT_FAILED
    print(f"downloaded {path}")
    print(f"run the pipeline on it with: python -m ml run-local --data '{path}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml",
        description="XGBoost batch-transform pipeline: run it locally, or upload data to and run it in AWS.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = subparsers.add_parser(
        "run-local",
        help="run the whole pipeline on this machine (no AWS)",
        description=textwrap.fill(
            "Runs explore, preprocessing, training, batch transform and evaluation locally: the same job "
            "requests as the AWS state machine, each job its container entry point in a process of its "
            "own, artefacts in a local copy of the S3 buckets under --output. Without --data the embedded "
            "SYNTHETIC data set is used and every output says so. Guide: docs/local.md.",
            width=100,
        ),
        epilog=RUN_LOCAL_EPILOG + _input_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--data",
        metavar="FILE",
        help="raw data set (.csv, .csv.gz, .xls, .xlsx); default: embedded synthetic data",
    )
    run.add_argument(
        "--output",
        metavar="DIR",
        default=DEFAULT_OUTPUT,
        help=f"where evaluation.json, the local buckets (store/) and job trees (work/) go (default: {DEFAULT_OUTPUT})",
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override one execution-input field, as `python -m ml start --set` does (repeatable)",
    )
    run.add_argument(
        "--execution-name",
        metavar="NAME",
        help="execution name the run id derives from (default: local-YYYYMMDD-HHMMSS)",
    )
    run.add_argument(
        "--no-explore", action="store_true", help="skip the exploration plots (faster iterations)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="stream every job's log to stderr")
    run.set_defaults(func=_cmd_run_local)

    download = subparsers.add_parser(
        "download",
        help="download the UCI credit-card default data set (.xls)",
        description=f"Downloads the real data set from the UCI repository ({UCI_PAGE}).",
    )
    download.add_argument(
        "--dest", metavar="DIR", default="data", help="directory to save it in (default: data)"
    )
    download.set_defaults(func=_cmd_download)

    aws_commands.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
