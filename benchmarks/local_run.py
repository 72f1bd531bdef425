"""How long `python -m ml run-local` takes, against the same work done in one process.

The local runner runs every job as its container entry point in a process of its own, in a
SageMaker-style directory layout, and hands artefacts over through the local artefact store:
that costs interpreter start-ups, imports, file copies and a model server. This benchmark
measures the whole run beside a baseline measured in the same run: load, split and scale, train,
predict and evaluate in this process, with the same defaults. It prints both, their ratio, and
whether the run stays within the 60 s budget the project promises for a local run.

    .venv/bin/python benchmarks/local_run.py [--data FILE] [--repeat N]

Without --data it uses ../shared/data/default_of_credit_card_clients.csv when present, else
the embedded synthetic data set.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import xgboost as xgb

from ml.data import load_dataset, synthetic_dataset
from ml.evaluation import evaluate
from ml.hyperparameters import DEFAULT_HYPERPARAMETERS, parse_hyperparameters
from ml.preprocessing import split_and_scale
from ml.training import train_booster

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "default_of_credit_card_clients.csv"
BUDGET_S = 60.0
LABEL = "Label"


def in_process(data: Path | None) -> tuple[float, float]:
    """Seconds for the algorithm alone, and its accuracy (a check that both do the same work)."""
    started = time.perf_counter()
    frame = load_dataset(data) if data else synthetic_dataset()
    result = split_and_scale(frame)
    features = [column for column in result.train.columns if column != LABEL]
    booster = train_booster(
        (result.train[features].to_numpy(), result.train[LABEL].to_numpy()),
        None,
        parse_hyperparameters(DEFAULT_HYPERPARAMETERS),
        log=lambda _line: None,
    )
    probabilities = booster.predict(xgb.DMatrix(result.test[features].to_numpy()))
    metrics = evaluate(result.test[LABEL].to_numpy(), probabilities)
    return time.perf_counter() - started, float(metrics["accuracy"])


def run_local(data: Path | None) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-local-") as output:
        command = [sys.executable, "-m", "ml", "run-local", "--output", output]
        if data:
            command += ["--data", str(data)]
        started = time.perf_counter()
        subprocess.run(command, cwd=PROJECT_ROOT, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="data file (default: the shared UCI CSV, else synthetic)")
    parser.add_argument("--repeat", type=int, default=2, help="measurements of each (median is reported)")
    args = parser.parse_args()
    data: Path | None = args.data or (REAL_DATA if REAL_DATA.is_file() else None)
    print(f"data: {data or 'embedded synthetic data set'}")

    baseline_runs = [in_process(data) for _ in range(args.repeat)]
    runner_runs = [run_local(data) for _ in range(args.repeat)]
    baseline = statistics.median(seconds for seconds, _accuracy in baseline_runs)
    runner = statistics.median(runner_runs)

    print(f"in-process algorithm (baseline): {baseline:6.1f} s   accuracy {baseline_runs[0][1]:.4f}")
    print(f"python -m ml run-local:          {runner:6.1f} s   (explore, 5 jobs, model server)")
    print(f"ratio run-local / in-process:    {runner / baseline:6.1f}x")
    verdict = "within" if runner <= BUDGET_S else "OVER"
    print(f"budget: {runner:.1f} s of {BUDGET_S:.0f} s ({verdict} budget, {runner / BUDGET_S:.2f} of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
