from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml import explore
from ml.config import LABEL
from ml.data import SYNTHETIC_NOTICE, synthetic_dataset
from ml.explore import EXPLORE_FILES, SCATTER_MAX_ROWS, write_exploration_plots

PNG = b"\x89PNG\r\n\x1a\n"


def read_summary(out_dir):
    return json.loads((out_dir / "summary.json").read_text())


def test_uci_table_gets_the_notebooks_plots_and_a_summary(tmp_path):
    frame = synthetic_dataset(400, seed=5)
    written = write_exploration_plots(frame, tmp_path / "explore")
    assert [p.name for p in written] == list(EXPLORE_FILES)
    for path in written[:2]:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    summary = read_summary(tmp_path / "explore")
    assert summary["rows"] == 400 and summary["columns"] == 24
    assert summary["scatter_columns"] == ["BILL_AMT1", "BILL_AMT2", "PAY_AMT1", "PAY_AMT2"]
    assert summary["scatter_rows"] == 400
    counts = summary["label_balance"]["counts"]
    assert counts["0"] + counts["1"] == 400
    assert summary["label_balance"]["positive_rate"] == pytest.approx(frame[LABEL].mean())
    assert summary["describe"]["AGE"]["min"] == frame["AGE"].min()
    assert summary["describe"]["LIMIT_BAL"]["mean"] == pytest.approx(frame["LIMIT_BAL"].mean())
    assert summary["correlation_with_label"]["PAY_0"] > 0.2
    assert summary["synthetic"] is True and summary["notice"] == SYNTHETIC_NOTICE
    assert summary["missing_values"] == {}


def test_other_data_sets_use_the_first_four_numeric_features(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            LABEL: rng.integers(0, 2, 60),
            "a": rng.normal(size=60),
            "b": rng.normal(size=60),
            "c": rng.normal(size=60),
            "d": rng.normal(size=60),
            "e": rng.normal(size=60),
            "name": ["x"] * 60,
        }
    )
    frame.loc[3, "a"] = np.nan
    write_exploration_plots(frame, tmp_path)
    summary = read_summary(tmp_path)
    assert summary["scatter_columns"] == ["a", "b", "c", "d"]
    assert summary["missing_values"] == {"a": 1}
    assert summary["synthetic"] is False and "notice" not in summary
    assert "name" not in summary["describe"]


def test_partial_notebook_columns_and_constant_columns(tmp_path):
    frame = pd.DataFrame({LABEL: [0, 1] * 10, "BILL_AMT1": np.arange(20), "PAY_AMT1": [5] * 20})
    write_exploration_plots(frame, tmp_path)  # constant column: histogram diagonal instead of KDE
    assert read_summary(tmp_path)["scatter_columns"] == ["BILL_AMT1", "PAY_AMT1"]
    assert (tmp_path / "scatter_matrix.png").read_bytes().startswith(PNG)


def test_large_tables_are_sampled_for_the_scatter_matrix(tmp_path, monkeypatch):
    assert SCATTER_MAX_ROWS == 3000
    monkeypatch.setattr(explore, "SCATTER_MAX_ROWS", 100)  # same code path, faster test
    frame = synthetic_dataset(150, seed=1)
    write_exploration_plots(frame, tmp_path)
    summary = read_summary(tmp_path)
    assert summary["scatter_rows"] == 100
    assert summary["rows"] == 150


def test_nothing_numeric_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to explore: the table has 2 rows and no numeric columns"):
        write_exploration_plots(pd.DataFrame({"name": ["a", "b"]}), tmp_path)
