"""Processing job entry points (``AppSpecification.ContainerEntrypoint``).

Each reads ``$SAGEMAKER_BASE_DIR/processing/<input name>`` and writes
``$SAGEMAKER_BASE_DIR/processing/<output name>`` (the ProcessingInput/Output ``LocalPath``s the
job requests use), takes its options as ``ContainerArguments``, and on failure writes
``output/failure`` and ``output/message`` (ExitMessage) and exits 1.

``ml-preprocess``  input ``input`` (.csv/.xls/.xlsx file(s)); outputs ``train``, ``test``,
                   ``test_no_label``, ``train_headers``, ``validation``. With
                   ``--train-shards N`` (N > 1) the training split is written as N files
                   ``train_data-<i>-of-<N>.csv`` so that ShardedByS3Key gives each host one.
                   ``train_headers/dataset.json`` says whether the data is synthetic.
``ml-evaluate``    inputs ``predictions`` (transform output ``*.out``: ``probability,label``
                   rows), ``labels`` (the ``test`` output, label first) and ``dataset``
                   (preprocessing's ``dataset.json``); output ``evaluation`` (evaluation.json
                   with ``data`` and a ``quality`` verdict, two plots).
``ml-explore``     input ``input``; output ``explore`` (correlation and scatter matrices).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.config import DATASET_SCHEMAS, DatasetConfig, uci_schema_for
from ml.jobs import DATASET_FILE
from ml.sagemaker.environment import SageMakerPaths
from ml.sagemaker.failure import UsageError, UserArgumentParser, run_entry_point

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "dataset_description",
    "evaluate_main",
    "explore_main",
    "preprocess_main",
    "read_dataset_description",
    "run_evaluate",
    "run_explore",
    "run_preprocess",
]

os.environ.setdefault("MPLBACKEND", "Agg")  # no display in a processing container

PREPROCESS_OUTPUTS: tuple[str, ...] = ("train", "test", "test_no_label", "train_headers", "validation")
# The description of the data that preprocessing writes and evaluation reads goes to
# `train_headers`, the one output no job reads as headerless training/test rows.
DATASET_OUTPUT = "train_headers"
DATASET_SCHEMA_CHOICES: tuple[str, ...] = tuple(DATASET_SCHEMAS)
QUALITY_METRICS: tuple[str, ...] = ("auc", "accuracy", "f1", "precision", "recall")


def _columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _log(message: str) -> None:
    print(message, flush=True)


def _input_dir(paths: SageMakerPaths, name: str) -> Path:
    directory = paths.processing_dir(name)
    if not directory.exists():
        raise FileNotFoundError(
            f"processing input {name!r} not found at {directory}: the job needs a ProcessingInput named "
            f"{name!r} with LocalPath {directory}"
        )
    return directory


# ---------------------------------------------------------------------------------------------
# ml-preprocess


def _preprocess_parser() -> UserArgumentParser:
    parser = UserArgumentParser(prog="ml-preprocess", description="Split and scale the raw data set.")
    parser.add_argument("--train-test-split-ratio", type=float, default=0.2)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--validation-ratio", type=float, default=0.0)
    parser.add_argument("--label-column", default="Label")
    parser.add_argument("--dataset-schema", choices=DATASET_SCHEMA_CHOICES, default="auto")
    parser.add_argument("--standard-scale", type=_columns, default=("PAY_AMT1",))
    parser.add_argument("--minmax-scale", type=_columns, default=("BILL_AMT1",))
    parser.add_argument("--drop-columns", type=_columns, default=("ID",))
    parser.add_argument("--train-shards", type=int, default=1)
    return parser


def dataset_description(frame: pd.DataFrame, config: DatasetConfig) -> dict[str, Any]:
    """What ``dataset.json`` holds: whether the data is synthetic (with the notice every output
    of synthetic data carries), its size and schema."""
    from ml.data import SYNTHETIC_NOTICE, is_synthetic

    synthetic = is_synthetic(frame)
    description: dict[str, Any] = {
        "synthetic": synthetic,
        "rows": int(frame.shape[0]),
        "features": [str(c) for c in frame.columns[1:]],
        "schema": "uci" if config.is_uci else "generic",
    }
    if synthetic:
        description["notice"] = SYNTHETIC_NOTICE
    return description


def run_preprocess(paths: SageMakerPaths, argv: Sequence[str] | None = None) -> None:
    from ml.data import SYNTHETIC_NOTICE, is_synthetic, load_dataset
    from ml.preprocessing import split_and_scale, write_outputs

    args = _preprocess_parser().parse_args(argv)
    if args.train_shards < 1:
        raise UsageError(f"--train-shards must be at least 1, got {args.train_shards}")
    config = DatasetConfig(
        uci_schema=uci_schema_for(args.dataset_schema),
        label_column=args.label_column,
        standard_scaled=args.standard_scale,
        minmax_scaled=args.minmax_scale,
        split_ratio=args.train_test_split_ratio,
        random_state=args.random_state,
        validation_ratio=args.validation_ratio,
        drop_columns=args.drop_columns,
    )
    frame = load_dataset(_input_dir(paths, "input"), config)
    if is_synthetic(frame):
        _log(SYNTHETIC_NOTICE)
    result = split_and_scale(frame, config)
    names = [n for n in PREPROCESS_OUTPUTS if n != "validation" or result.validation is not None]
    written = write_outputs(result, {name: paths.processing_dir(name) for name in names})
    if args.train_shards > 1:
        written.pop("train")
        for index, shard in enumerate(_shard_file(paths.processing_dir("train"), args.train_shards)):
            written[f"train[{index}]"] = shard
    description = paths.processing_dir(DATASET_OUTPUT) / DATASET_FILE
    description.write_text(json.dumps(dataset_description(frame, config), indent=2) + "\n")
    written["dataset"] = description
    for name, path in written.items():
        _log(f"wrote {name}: {path}")
    _log(json.dumps(result.summary(), default=str))


def _shard_file(directory: Path, shards: int) -> list[Path]:
    """Split train_data.csv into ``shards`` files of contiguous rows (ShardedByS3Key hands each
    training host whole S3 objects)."""
    source = directory / "train_data.csv"
    lines = source.read_bytes().splitlines(keepends=True)
    if len(lines) < shards:
        raise UsageError(
            f"--train-shards {shards} needs at least {shards} training rows, the training split has {len(lines)}"
        )
    bounds = np.linspace(0, len(lines), shards + 1).round().astype(int)
    written = []
    for index in range(shards):
        path = directory / f"train_data-{index + 1}-of-{shards}.csv"
        path.write_bytes(b"".join(lines[bounds[index] : bounds[index + 1]]))
        written.append(path)
    source.unlink()
    return written


def preprocess_main() -> None:
    run_entry_point(run_preprocess, name="ml-preprocess", processing=True)


# ---------------------------------------------------------------------------------------------
# ml-evaluate


def _evaluate_parser() -> UserArgumentParser:
    parser = UserArgumentParser(prog="ml-evaluate", description="Score the batch transform output.")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--quality-metric", choices=QUALITY_METRICS, default="auc")
    parser.add_argument("--quality-threshold", type=float, default=0.7)
    return parser


def read_predictions(directory: Path) -> np.ndarray:
    """Probabilities (first column) of every ``*.out`` file under ``directory``, in name order."""
    files = sorted(p for p in directory.rglob("*.out") if p.is_file())
    if not files:
        raise FileNotFoundError(
            f"no batch transform output (*.out) under {directory}; the predictions input must be the "
            "transform job's output prefix"
        )
    blocks = []
    for file in files:
        if file.stat().st_size == 0:
            continue
        try:
            table = np.loadtxt(file, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as error:
            raise UsageError(
                f"{file} is not probability,predicted_label CSV rows ({error}); run the transform with "
                "Accept text/csv"
            ) from None
        blocks.append(table[:, 0])
    probabilities = np.concatenate(blocks) if blocks else np.empty(0)
    bad = np.flatnonzero(~((probabilities >= 0) & (probabilities <= 1)))
    if bad.size:
        raise UsageError(
            f"prediction row {int(bad[0]) + 1} has probability {probabilities[bad[0]]!r}, outside [0, 1]"
        )
    return probabilities


def read_dataset_description(paths: SageMakerPaths) -> dict[str, Any]:
    """The ``data`` block of evaluation.json, from the ``dataset`` input (preprocessing's
    ``dataset.json``): ``{"synthetic": bool, "rows": int}`` plus ``notice`` when synthetic.

    Without that input (an evaluation run by hand) whether the data is synthetic is unknown,
    and the block says so rather than guessing.
    """
    directory = paths.processing_dir("dataset")
    files = sorted(directory.rglob(DATASET_FILE)) if directory.is_dir() else []
    if not files:
        _log(f"no {DATASET_FILE} under {directory}: the report cannot say whether the data is synthetic")
        return {
            "synthetic": None,
            "notice": f"unknown whether the data is synthetic: the job had no 'dataset' input ({DATASET_FILE})",
        }
    try:
        raw = json.loads(files[0].read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"{files[0]} is not the dataset.json preprocessing writes: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("synthetic"), bool):
        raise UsageError(
            f"{files[0]} has no boolean 'synthetic': the dataset input must be the dataset.json of "
            "the same preprocessing run"
        )
    data: dict[str, Any] = {"synthetic": raw["synthetic"]}
    if isinstance(raw.get("rows"), int):
        data["rows"] = raw["rows"]
    if raw["synthetic"]:
        from ml.data import SYNTHETIC_NOTICE

        data["notice"] = raw.get("notice") or SYNTHETIC_NOTICE
    return data


def run_evaluate(paths: SageMakerPaths, argv: Sequence[str] | None = None) -> None:
    from ml.evaluation import evaluate, write_report
    from ml.training import read_labelled_csv

    args = _evaluate_parser().parse_args(argv)
    for name in ("threshold", "quality_threshold"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    probabilities = read_predictions(_input_dir(paths, "predictions"))
    _, labels = read_labelled_csv(_input_dir(paths, "labels"))
    if probabilities.shape[0] != labels.shape[0]:
        raise UsageError(
            f"{probabilities.shape[0]} predictions but {labels.shape[0]} labelled test rows: the transform "
            "output must come from test_no_label of the same preprocessing run as the labels"
        )
    data = read_dataset_description(paths)
    if data["synthetic"]:
        _log(data["notice"])
    metrics: dict[str, Any] = evaluate(labels, probabilities, threshold=args.threshold)
    metrics["data"] = data
    raw_value = metrics.get(args.quality_metric)
    # AUC is undefined (None) when the test labels hold one class: the gate cannot pass then.
    value = None if raw_value is None else float(raw_value)
    metrics["quality"] = {
        "metric": args.quality_metric,
        "value": value,
        "threshold": args.quality_threshold,
        "passed": value is not None and value >= args.quality_threshold,
    }
    out_dir = paths.processing_dir("evaluation")
    write_report(metrics, out_dir, labels, probabilities)
    verdict = "passed" if metrics["quality"]["passed"] else "FAILED"
    shown = "undefined" if value is None else f"{value:.4f}"
    _log(f"quality gate {verdict}: {args.quality_metric}={shown} (minimum {args.quality_threshold})")
    _log(json.dumps({k: v for k, v in metrics.items() if k not in ("quality", "data")}, default=str))


def evaluate_main() -> None:
    run_entry_point(run_evaluate, name="ml-evaluate", processing=True)


# ---------------------------------------------------------------------------------------------
# ml-explore


def _explore_parser() -> UserArgumentParser:
    parser = UserArgumentParser(prog="ml-explore", description="Plot the raw data set.")
    parser.add_argument("--label-column", default="Label")
    parser.add_argument("--dataset-schema", choices=DATASET_SCHEMA_CHOICES, default="auto")
    parser.add_argument("--drop-columns", type=_columns, default=("ID",))
    return parser


def run_explore(paths: SageMakerPaths, argv: Sequence[str] | None = None) -> None:
    from ml.data import SYNTHETIC_NOTICE, is_synthetic, load_dataset
    from ml.explore import write_exploration_plots

    args = _explore_parser().parse_args(argv)
    config = DatasetConfig(
        label_column=args.label_column,
        drop_columns=args.drop_columns,
        uci_schema=uci_schema_for(args.dataset_schema),
    )
    frame = load_dataset(_input_dir(paths, "input"), config)
    if is_synthetic(frame):
        _log(SYNTHETIC_NOTICE)
    written = write_exploration_plots(frame, paths.processing_dir("explore"))
    _log(f"wrote exploration plots to {paths.processing_dir('explore')}: {written}")


def explore_main() -> None:
    run_entry_point(run_explore, name="ml-explore", processing=True)
