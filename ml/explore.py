"""The notebook's data exploration: correlation matrix, scatter matrix and a summary.

Drawn on matplotlib ``Figure`` objects with the Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pandas.plotting import scatter_matrix

from ml.config import LABEL
from ml.data import SYNTHETIC_NOTICE, SYNTHETIC_TITLE_PREFIX, is_synthetic

__all__ = ["EXPLORE_FILES", "SCATTER_COLUMNS", "SCATTER_MAX_ROWS", "write_exploration_plots"]

SCATTER_COLUMNS: tuple[str, ...] = ("BILL_AMT1", "BILL_AMT2", "PAY_AMT1", "PAY_AMT2")
EXPLORE_FILES: tuple[str, ...] = ("correlation_matrix.png", "scatter_matrix.png", "summary.json")
# A scatter matrix of 30,000 points looks the same as one of 3,000 and draws ten times faster.
SCATTER_MAX_ROWS = 3000


def write_exploration_plots(frame: pd.DataFrame, out_dir: Path | str) -> list[Path]:
    """Write ``correlation_matrix.png``, ``scatter_matrix.png`` and ``summary.json``.

    Plot titles start with "SYNTHETIC DATA" when ``frame`` is synthetic (``ml.data.is_synthetic``).
    The scatter matrix shows the notebook's BILL_AMT1, BILL_AMT2, PAY_AMT1, PAY_AMT2 (those
    present) with KDE diagonals; for other data sets, the first four numeric features.
    """
    numeric = frame.select_dtypes(include="number")
    if numeric.shape[1] == 0 or len(numeric) == 0:
        raise ValueError(
            f"nothing to explore: the table has {len(frame)} rows and no numeric columns "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = [str(c) for c in numeric.columns if c != LABEL] or [str(c) for c in numeric.columns]
    scatter_columns = [c for c in SCATTER_COLUMNS if c in features]
    if len(scatter_columns) < 2:
        scatter_columns = features[:4]

    # The PNGs travel without summary.json, so synthetic data is named in their titles too.
    prefix = SYNTHETIC_TITLE_PREFIX if is_synthetic(frame) else ""
    correlation_path = out_dir / "correlation_matrix.png"
    _plot_correlation(numeric, correlation_path, title_prefix=prefix)
    scatter_path = out_dir / "scatter_matrix.png"
    scatter_rows = _plot_scatter(numeric[scatter_columns], scatter_path, title_prefix=prefix)
    summary_path = out_dir / "summary.json"
    summary = _summary(frame, numeric, scatter_columns, scatter_rows)
    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    return [correlation_path, scatter_path, summary_path]


def _plot_correlation(numeric: pd.DataFrame, path: Path, *, title_prefix: str) -> None:
    columns = list(numeric.columns)
    size = max(6.0, 0.45 * len(columns) + 3)
    figure = Figure(figsize=(size * 1.25, size))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.matshow(numeric.corr().to_numpy(), vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(columns)), labels=columns, fontsize=11, rotation=45, ha="left")
    ax.set_yticks(range(len(columns)), labels=columns, fontsize=11)
    colorbar = figure.colorbar(image, ax=ax)
    colorbar.ax.tick_params(labelsize=11)
    title = f"{title_prefix}Correlation Matrix"
    ax.set_title(title, fontsize=16, pad=20)
    figure.tight_layout()
    # The PNG's Title metadata repeats the title, so a tool (or a test) can read it without OCR.
    figure.savefig(path, dpi=80, metadata={"Title": title})


def _plot_scatter(data: pd.DataFrame, path: Path, *, title_prefix: str) -> int:
    if len(data) > SCATTER_MAX_ROWS:
        data = data.sample(n=SCATTER_MAX_ROWS, random_state=0)
    # A KDE of a constant or all-missing column is undefined; fall back to histograms.
    varying = all(data[c].dropna().nunique() > 1 for c in data.columns)
    n = len(data.columns)
    figure = Figure(figsize=(10, 10))
    FigureCanvasAgg(figure)
    axes = figure.subplots(n, n, squeeze=False)
    with warnings.catch_warnings():
        # pandas warns that it ignores `layout` when given the axes; they have that layout.
        warnings.filterwarnings("ignore", message="When passing multiple axes", category=UserWarning)
        # a constant column has identical axis limits, which matplotlib widens itself
        warnings.filterwarnings("ignore", message="Attempting to set identical", category=UserWarning)
        scatter_matrix(data, ax=cast(Any, axes), diagonal="kde" if varying else "hist", alpha=0.3)
    title = f"{title_prefix}Scatter matrix ({len(data)} rows)"
    figure.suptitle(title)
    figure.savefig(path, dpi=80, metadata={"Title": title})
    return len(data)


def _summary(
    frame: pd.DataFrame, numeric: pd.DataFrame, scatter_columns: list[str], scatter_rows: int
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rows": int(frame.shape[0]),
        "columns": int(frame.shape[1]),
        "column_names": [str(c) for c in frame.columns],
        "missing_values": {str(c): int(v) for c, v in frame.isna().sum().items() if v},
        "describe": {
            str(column): {str(stat): _number(value) for stat, value in stats.items()}
            for column, stats in numeric.describe().to_dict().items()
        },
        "scatter_columns": scatter_columns,
        "scatter_rows": scatter_rows,
        "synthetic": is_synthetic(frame),
    }
    if LABEL in frame.columns:
        counts = frame[LABEL].value_counts().sort_index()
        summary["label_balance"] = {
            "counts": {str(k): int(v) for k, v in counts.items()},
            "positive_rate": _number(frame[LABEL].mean()),
        }
        correlations = numeric.corr()[LABEL].drop(LABEL) if LABEL in numeric.columns else pd.Series()
        summary["correlation_with_label"] = {str(k): _number(v) for k, v in correlations.items()}
    if summary["synthetic"]:
        summary["notice"] = SYNTHETIC_NOTICE
    return summary


def _number(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _json_default(value: object) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{value!r} cannot be written as JSON")
