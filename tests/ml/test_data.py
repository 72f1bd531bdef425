from __future__ import annotations

import csv
import re
import socket
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from ml.config import LABEL, DatasetConfig
from ml.data import (
    OLE2_MAGIC,
    SYNTHETIC_NOTICE,
    UCI_FEATURES,
    UCI_FILENAME,
    UCI_URLS,
    DatasetError,
    DownloadError,
    SchemaError,
    download_uci,
    is_synthetic,
    load_dataset,
    synthetic_dataset,
)

try:  # dev dependency (requirements-dev.txt): writes real legacy .xls files
    import xlwt
except ImportError:  # only the .xls tests skip without it
    xlwt = None

UCI_LABEL = "default payment next month"


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return synthetic_dataset(300, seed=7)


def raw_uci(frame: pd.DataFrame, label_name: str = UCI_LABEL) -> pd.DataFrame:
    """The frame as the UCI file lays it out: ID first, label last."""
    raw = frame.drop(columns=[LABEL]).copy()
    raw.insert(0, "ID", np.arange(1, len(frame) + 1))
    raw[label_name] = frame[LABEL].to_numpy()
    return raw


def write_uci_xls(frame: pd.DataFrame, path: Path, *, x_row: bool = True) -> Path:
    """A real .xls laid out like the UCI original: X1..X23/Y row, then the names row."""
    if xlwt is None:
        pytest.skip("xlwt is not installed (pip install -r requirements-dev.txt)")
    raw = raw_uci(frame)
    book = xlwt.Workbook()
    sheet = book.add_sheet("Data")
    row = 0
    if x_row:
        for col, name in enumerate(["", *[f"X{i}" for i in range(1, 24)], "Y"]):
            if name:
                sheet.write(0, col, name)
        row = 1
    for col, name in enumerate(raw.columns):
        sheet.write(row, col, name)
    for r, values in enumerate(raw.itertuples(index=False), start=row + 1):
        for col, value in enumerate(values):
            sheet.write(r, col, float(value))
    book.save(str(path))
    return path


def assert_same_table(loaded: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(loaded.columns) == [LABEL, *UCI_FEATURES]
    np.testing.assert_array_equal(loaded.to_numpy(dtype=float), expected.to_numpy(dtype=float))


# --- synthetic data ---------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_marked():
    first = synthetic_dataset(500, seed=3)
    pd.testing.assert_frame_equal(first, synthetic_dataset(500, seed=3))
    assert not first.equals(synthetic_dataset(500, seed=4))
    assert first.attrs["synthetic"] is True and is_synthetic(first)
    assert "SYNTHETIC" in SYNTHETIC_NOTICE


def test_synthetic_has_the_uci_schema_and_ranges():
    frame = synthetic_dataset(3000, seed=0)
    assert list(frame.columns) == [LABEL, *UCI_FEATURES]
    assert all(pd.api.types.is_integer_dtype(frame[c]) for c in frame.columns)
    assert set(frame[LABEL].unique()) == {0, 1}
    assert 0.18 <= frame[LABEL].mean() <= 0.26
    assert set(frame["SEX"].unique()) <= {1, 2}
    assert set(frame["EDUCATION"].unique()) <= {1, 2, 3, 4}
    assert set(frame["MARRIAGE"].unique()) <= {1, 2, 3}
    assert frame["AGE"].between(21, 75).all()
    for column in ("PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"):
        assert frame[column].between(-2, 8).all(), column
    assert frame["LIMIT_BAL"].between(10_000, 1_000_000).all()
    assert (frame["LIMIT_BAL"] % 10_000 == 0).all()
    assert (frame[[f"PAY_AMT{k}" for k in range(1, 7)]] >= 0).all().all()
    # Realistic structure: delays persist month to month and bills track each other.
    assert frame["PAY_0"].corr(frame["PAY_2"]) > 0.5
    assert frame["BILL_AMT1"].corr(frame["BILL_AMT2"]) > 0.8


def test_synthetic_label_is_learnable_from_delays_and_payments():
    frame = synthetic_dataset(3000, seed=0)
    assert frame["PAY_0"].corr(frame[LABEL]) > 0.3
    assert frame["PAY_AMT1"].corr(frame[LABEL]) < 0
    x, y = frame.drop(columns=[LABEL]).to_numpy(), frame[LABEL].to_numpy()
    booster = xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "seed": 0}, xgb.DMatrix(x[:2000], label=y[:2000]), 30
    )
    assert roc_auc_score(y[2000:], booster.predict(xgb.DMatrix(x[2000:]))) > 0.75


@pytest.mark.parametrize("n_rows", [0, 5, 10.5])
def test_synthetic_rejects_bad_sizes(n_rows):
    with pytest.raises(ValueError, match="n_rows must be an integer >= 10"):
        synthetic_dataset(n_rows)  # type: ignore[arg-type]


# --- load_dataset: UCI variants ---------------------------------------------------------------


def test_csv_with_the_shared_files_columns(tmp_path, small):
    path = tmp_path / "data.csv"
    raw_uci(small).to_csv(path, index=False)
    loaded = load_dataset(path)
    assert_same_table(loaded, small)
    assert all(pd.api.types.is_integer_dtype(loaded[c]) for c in loaded.columns)
    assert loaded.attrs["source"] == str(path)


def test_real_xls_with_x_row_reads_like_read_excel_header_1(tmp_path, small):
    path = write_uci_xls(small, tmp_path / UCI_FILENAME)
    assert path.read_bytes()[:8] == OLE2_MAGIC
    assert_same_table(load_dataset(path), small)
    # The notebook's own reading gives the same names, which load_dataset then canonicalises.
    notebook = pd.read_excel(path, header=1)
    assert list(notebook.columns) == ["ID", *UCI_FEATURES, UCI_LABEL]


def test_xls_without_the_x_row(tmp_path, small):
    path = write_uci_xls(small, tmp_path / "plain.xls", x_row=False)
    assert_same_table(load_dataset(path), small)


def test_csv_with_x_row_then_names_row(tmp_path, small):
    path = tmp_path / "exported.csv"
    raw = raw_uci(small)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *[f"X{i}" for i in range(1, 24)], "Y"])
        writer.writerow(raw.columns)
        writer.writerows(raw.itertuples(index=False))
    assert_same_table(load_dataset(path), small)


def test_x_headers_only_map_to_uci_order(tmp_path, small):
    path = tmp_path / "x.csv"
    raw = raw_uci(small)
    raw.columns = ["", *[f"X{i}" for i in range(1, 24)], "Y"]
    raw.to_csv(path, index=False)
    assert_same_table(load_dataset(path), small)
    # without the ID column as well
    raw.drop(columns=[""]).to_csv(path, index=False)
    assert_same_table(load_dataset(path), small)


@pytest.mark.parametrize(
    "label_name", ["default.payment.next.month", "target", "Y", "Label", "DEFAULT_PAYMENT_NEXT_MONTH"]
)
def test_label_aliases(tmp_path, small, label_name):
    path = tmp_path / "d.csv"
    raw_uci(small, label_name).to_csv(path, index=False)
    assert_same_table(load_dataset(path), small)


def test_scientific_quoted_numbers_and_column_order(tmp_path, small):
    raw = raw_uci(small)
    shuffled = raw[list(reversed(raw.columns))]
    path = tmp_path / "sci.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(shuffled.columns)
        for values in shuffled.itertuples(index=False):
            writer.writerow([f"{v:.2E}" if abs(v) >= 100_000 else f" {v} " for v in values])
    loaded = load_dataset(path)
    assert list(loaded.columns) == [LABEL, *UCI_FEATURES]
    expected = small.copy().astype(float)
    features = list(UCI_FEATURES)
    big = expected[features].abs() >= 100_000
    rounded = expected[features].map(lambda v: float(f"{v:.2E}"))
    expected[features] = expected[features].where(~big, rounded)
    np.testing.assert_allclose(loaded.to_numpy(dtype=float), expected.to_numpy(dtype=float))
    assert loaded.loc[big["LIMIT_BAL"].to_numpy(), "LIMIT_BAL"].min() >= 100_000


def test_pay_1_is_recognised_as_pay_0(tmp_path, small):
    raw = raw_uci(small).rename(columns={"PAY_0": "PAY_1"})
    path = tmp_path / "d.csv"
    raw.to_csv(path, index=False)
    assert_same_table(load_dataset(path), small)


def test_missing_feature_values_become_nan(tmp_path, small):
    raw = raw_uci(small).astype(object)
    raw.loc[3, "AGE"] = ""
    path = tmp_path / "d.csv"
    raw.to_csv(path, index=False)
    loaded = load_dataset(path)
    assert np.isnan(loaded.loc[3, "AGE"])
    assert loaded["AGE"].dtype == np.float64


def test_directory_of_files_is_concatenated(tmp_path, small):
    raw_uci(small.iloc[:100]).to_csv(tmp_path / "a.csv", index=False)
    raw_uci(small.iloc[100:]).to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "README.md").write_text("not data")
    assert_same_table(load_dataset(tmp_path), small)


@pytest.mark.realdata
def test_realdata_csv_loads(real_data_path):
    loaded = load_dataset(real_data_path)
    assert loaded.shape == (30000, 24)
    assert list(loaded.columns) == [LABEL, *UCI_FEATURES]
    assert int(loaded[LABEL].sum()) == 6636


# --- load_dataset: errors ---------------------------------------------------------------------


def test_unknown_schema_names_missing_and_unexpected_columns_and_the_fix(tmp_path, small):
    raw = raw_uci(small).rename(columns={"AGE": "age_years"}).drop(columns=["SEX"])
    raw["Unnamed: 0"] = 1
    path = tmp_path / "d.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(SchemaError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "missing columns: SEX, AGE" in message
    assert "unexpected columns: age_years, Unnamed: 0" in message
    # The fixes are spelled for every way to run: execution input, Python, entry points.
    assert "--set dataset_schema=generic" in message
    assert "--set label_column=NAME" in message
    assert """--set 'drop_columns=["age_years", "Unnamed: 0"]'""" in message
    assert "DatasetConfig(uci_schema=False" in message
    assert "--dataset-schema generic --label-column NAME --drop-columns" in message
    # What it suggests must be accepted where it is suggested.
    from ml.pipeline_input import validate_input

    validate_input(
        {"dataset_schema": "generic", "drop_columns": ["age_years", "Unnamed: 0"]},
        {"data_uri": "s3://bucket/data/"},
    )


def test_missing_label_is_a_schema_error(tmp_path, small):
    path = tmp_path / "d.csv"
    raw_uci(small).drop(columns=[UCI_LABEL]).to_csv(path, index=False)
    with pytest.raises(SchemaError, match="missing columns: Label"):
        load_dataset(path)


def test_two_label_columns_are_rejected(tmp_path, small):
    raw = raw_uci(small)
    raw["target"] = raw[UCI_LABEL]
    path = tmp_path / "d.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(
        SchemaError, match=r"appear more than once .*Label from 'default payment next month', 'target'"
    ):
        load_dataset(path)


def test_non_numeric_value_names_row_and_column(tmp_path, small):
    raw = raw_uci(small).astype(object)
    raw.loc[4, "LIMIT_BAL"] = "20,000"
    path = tmp_path / "d.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(
        DatasetError, match=re.escape(f"{path} row 6 column 'LIMIT_BAL': value '20,000' is not a number")
    ):
        load_dataset(path)


@pytest.mark.parametrize(("value", "expected"), [(2, "label 2.0 is not 0 or 1"), ("", "the label is empty")])
def test_bad_labels(tmp_path, small, value, expected):
    raw = raw_uci(small).astype(object)
    raw.loc[9, UCI_LABEL] = value
    path = tmp_path / "d.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=re.escape(f"{path} row 11")) as info:
        load_dataset(path)
    assert expected in str(info.value)


def test_files_without_rows(tmp_path, small):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="has no rows"):
        load_dataset(empty)
    header_only = tmp_path / "header.csv"
    raw_uci(small).iloc[:0].to_csv(header_only, index=False)
    with pytest.raises(DatasetError, match="has a header row but no data rows"):
        load_dataset(header_only)


def test_missing_paths(tmp_path):
    with pytest.raises(DatasetError, match="data file not found"):
        load_dataset(tmp_path / "nope.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no data file in .* \(found: notes.txt\); expected one of .csv"):
        load_dataset(tmp_path)


def test_files_of_a_directory_must_agree(tmp_path, small):
    small.iloc[:50].to_csv(tmp_path / "a.csv", index=False)
    other = small.iloc[50:].rename(columns={"AGE": "x"})
    other.to_csv(tmp_path / "b.csv", index=False)
    config = DatasetConfig(label_column="Label", uci_schema=False)
    with pytest.raises(SchemaError, match=r"b\.csv has columns .* but .*a\.csv has"):
        load_dataset(tmp_path, config)


def test_xlsx_with_x_row_reads_like_the_xls(tmp_path, small):
    """The same sheet saved as .xlsx (openpyxl is pinned in requirements-ml.txt)."""
    raw = raw_uci(small)
    rows = [["", *[f"X{i}" for i in range(1, 24)], "Y"], list(raw.columns), *raw.itertuples(index=False)]
    path = tmp_path / "credit.xlsx"
    pd.DataFrame(rows).to_excel(path, header=False, index=False, engine="openpyxl")
    assert_same_table(load_dataset(path), small)


def test_corrupt_xlsx_names_the_file(tmp_path):
    path = tmp_path / "d.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DatasetError, match=r"d\.xlsx cannot be read as an Excel sheet"):
        load_dataset(path)


def test_ragged_csv_is_rejected(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("Label,a,b\n1,2,3\n0,1,2,3\n")
    with pytest.raises(DatasetError, match="cannot be read as CSV"):
        load_dataset(path, DatasetConfig(uci_schema=False))


# --- load_dataset: other data sets ------------------------------------------------------------


def test_generic_data_set_by_configuration(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("id,income,y,score\n1,100,0,0.5\n2,200,1,1.5\n3,300,1,2.5\n")
    config = DatasetConfig(
        label_column="y", standard_scaled=("income",), minmax_scaled=(), drop_columns=("id",)
    )
    loaded = load_dataset(path, config)
    assert list(loaded.columns) == [LABEL, "income", "score"]
    assert loaded[LABEL].tolist() == [0, 1, 1]
    assert loaded["score"].tolist() == [0.5, 1.5, 2.5]


def test_generic_label_that_is_already_called_label(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,Label\n1,0\n2,1\n")
    loaded = load_dataset(path, DatasetConfig(uci_schema=False, standard_scaled=(), minmax_scaled=()))
    assert list(loaded.columns) == [LABEL, "a"]


def test_generic_errors(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,0\n")
    with pytest.raises(
        SchemaError, match=r"label column 'y' was not found; columns are: a, b\. Set label_column"
    ):
        load_dataset(path, DatasetConfig(label_column="y"))
    path.write_text("Label,y,b\n1,0,3\n")
    with pytest.raises(SchemaError, match="a feature column is already called 'Label'"):
        load_dataset(path, DatasetConfig(label_column="y"))
    path.write_text("y\n1\n")
    with pytest.raises(SchemaError, match="no feature columns left besides the label 'y'"):
        load_dataset(path, DatasetConfig(label_column="y"))
    path.write_text("y,colour\n1,red\n")
    with pytest.raises(DatasetError, match="row 2 column 'colour': value 'red' is not a number"):
        load_dataset(path, DatasetConfig(label_column="y"))


# --- download_uci -----------------------------------------------------------------------------


def closed_loopback_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/default.xls"


def test_download_failure_says_what_to_do(tmp_path):
    urls = (closed_loopback_url(), closed_loopback_url())
    with pytest.raises(DownloadError) as info:
        download_uci(tmp_path, urls=urls, timeout=2)
    message = str(info.value)
    assert urls[0] in message and urls[1] in message
    assert UCI_URLS[0] in message and UCI_URLS[1] in message
    assert "--data FILE" in message and "synthetic" in message
    assert not (tmp_path / UCI_FILENAME).exists()


def test_download_times_out_on_a_silent_server(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # the kernel accepts the connection; nobody ever answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/x.xls"
        with pytest.raises(DownloadError, match="timed out"):
            download_uci(tmp_path, urls=(url,), timeout=0.5)


def test_download_of_the_zip_extracts_the_xls(tmp_path, small):
    xls = write_uci_xls(small, tmp_path / UCI_FILENAME)
    archive_path = tmp_path / "default+of+credit+card+clients.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.write(xls, arcname=UCI_FILENAME)
    xls.unlink()
    dest = tmp_path / "dest"
    got = download_uci(dest, urls=(closed_loopback_url(), archive_path.as_uri()), timeout=2)
    assert got == dest / UCI_FILENAME
    assert_same_table(load_dataset(got), small)


def test_download_of_the_xls_and_reuse(tmp_path, small):
    xls = write_uci_xls(small, tmp_path / "source.xls")
    dest = tmp_path / "dest"
    got = download_uci(dest, urls=(xls.as_uri(),))
    assert got.read_bytes() == xls.read_bytes()
    # already there: no network needed
    assert download_uci(dest, urls=(closed_loopback_url(),), timeout=1) == got


def test_download_rejects_wrong_content(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html>moved</html>")
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "nothing")
    with pytest.raises(DownloadError) as info:
        download_uci(tmp_path / "dest", urls=(page.as_uri(), empty_zip.as_uri()))
    assert "is not an .xls or .zip file" in str(info.value)
    assert "holds no .xls file" in str(info.value)
