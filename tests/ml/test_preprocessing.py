from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from ml.config import LABEL, DatasetConfig
from ml.data import UCI_FEATURES, SchemaError, synthetic_dataset
from ml.preprocessing import (
    OUTPUT_FILES,
    PreprocessError,
    split_and_scale,
    write_outputs,
)
from ml.training import read_labelled_csv


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_dataset(1000, seed=2)


def output_dirs(root, names=("train", "test", "test_no_label", "train_headers")):
    return {name: root / name for name in names}


def test_split_matches_the_notebooks_train_test_split(frame):
    result = split_and_scale(frame)
    assert len(result.train) == 800 and len(result.test) == 200 and result.validation is None
    assert list(result.train.columns) == [LABEL, *UCI_FEATURES]
    assert result.feature_names == UCI_FEATURES
    x_train, x_test, y_train, y_test = train_test_split(
        frame.drop(columns=[LABEL]), frame[LABEL], test_size=0.2, random_state=0
    )
    np.testing.assert_array_equal(result.train[LABEL], y_train)
    np.testing.assert_array_equal(result.test[LABEL], y_test)
    unscaled = [c for c in UCI_FEATURES if c not in ("PAY_AMT1", "BILL_AMT1")]
    np.testing.assert_array_equal(result.train[unscaled], x_train[unscaled])
    np.testing.assert_array_equal(result.test[unscaled], x_test[unscaled])


def test_scalers_are_fitted_on_the_training_split_only(frame):
    result = split_and_scale(frame)
    x_train, x_test, *_ = train_test_split(
        frame.drop(columns=[LABEL]), frame[LABEL], test_size=0.2, random_state=0
    )
    train_pay = result.train["PAY_AMT1"]
    assert abs(train_pay.mean()) < 1e-9 and abs(train_pay.std(ddof=0) - 1) < 1e-9
    mean, std = x_train["PAY_AMT1"].mean(), x_train["PAY_AMT1"].std(ddof=0)
    np.testing.assert_allclose(result.test["PAY_AMT1"], (x_test["PAY_AMT1"] - mean) / std)
    assert result.train["BILL_AMT1"].min() == 0 and result.train["BILL_AMT1"].max() == pytest.approx(1)
    low, high = x_train["BILL_AMT1"].min(), x_train["BILL_AMT1"].max()
    np.testing.assert_allclose(result.test["BILL_AMT1"], (x_test["BILL_AMT1"] - low) / (high - low))
    assert result.scaling["PAY_AMT1"] == {
        "scaler": "standard",
        "mean": pytest.approx(mean),
        "scale": pytest.approx(std),
    }
    assert result.scaling["BILL_AMT1"] == {"scaler": "minmax", "min": low, "max": high}


def test_validation_is_carved_out_of_the_training_split(frame):
    result = split_and_scale(frame, DatasetConfig(validation_ratio=0.25))
    assert (len(result.train), len(result.validation), len(result.test)) == (600, 200, 200)
    plain = split_and_scale(frame)
    np.testing.assert_array_equal(result.test[LABEL], plain.test[LABEL])  # test rows unchanged
    # the scalers saw only the remaining training rows
    assert result.train["BILL_AMT1"].min() == 0 and result.train["BILL_AMT1"].max() == pytest.approx(1)
    assert result.summary()["splits"]["validation"]["rows"] == 200


def test_stratified_split_keeps_the_positive_rate(frame):
    result = split_and_scale(frame, DatasetConfig(stratify=True))
    rate = frame[LABEL].mean()
    assert abs(result.train[LABEL].mean() - rate) < 0.005
    assert abs(result.test[LABEL].mean() - rate) < 0.005


def test_other_configuration_and_no_scaling():
    other = pd.DataFrame({LABEL: [0, 1] * 10, "a": np.arange(20.0), "b": np.arange(20.0) * 2})
    result = split_and_scale(
        other, DatasetConfig(label_column="y", standard_scaled=("b",), minmax_scaled=(), split_ratio=0.5)
    )
    assert list(result.train.columns) == [LABEL, "a", "b"]
    assert abs(result.train["b"].mean()) < 1e-9
    none = split_and_scale(other, DatasetConfig(label_column="y", standard_scaled=(), minmax_scaled=()))
    assert none.scaling == {}


def test_synthetic_flag_is_carried(frame):
    assert split_and_scale(frame).synthetic is True
    plain = pd.DataFrame(frame.to_dict())
    assert split_and_scale(plain).synthetic is False


def test_missing_scaled_column_says_which_and_how_to_fix(frame):
    with pytest.raises(SchemaError) as info:
        split_and_scale(frame, DatasetConfig(standard_scaled=("INCOME",)))
    message = str(info.value)
    assert "standard_scaled names columns ['INCOME'] that are not features" in message
    assert "LIMIT_BAL" in message and "--standard-scale" in message
    with pytest.raises(SchemaError, match=r"minmax_scaled names columns \['X'\].*--minmax-scale"):
        split_and_scale(frame, DatasetConfig(minmax_scaled=("X",)))


def test_bad_tables_are_rejected(frame):
    with pytest.raises(SchemaError, match=r"the table has no 'Label' column .*load_dataset"):
        split_and_scale(frame.drop(columns=[LABEL]))
    with pytest.raises(SchemaError, match="no feature columns"):
        split_and_scale(frame[[LABEL]])
    with pytest.raises(SchemaError, match=r"columns \['name'\] are not numeric"):
        split_and_scale(frame.assign(name="x"), DatasetConfig())
    with pytest.raises(PreprocessError, match="cannot make the train/test split of 1 rows"):
        split_and_scale(frame.iloc[:1])
    tiny = pd.DataFrame({LABEL: [0, 0, 0, 1], "PAY_AMT1": [1, 2, 3, 4], "BILL_AMT1": [1, 2, 3, 4]})
    with pytest.raises(PreprocessError, match=r"train/test split .*stratify=True"):
        split_and_scale(tiny, DatasetConfig(stratify=True, split_ratio=0.5))


def test_write_outputs_writes_exactly_the_contract_files(frame, tmp_path):
    result = split_and_scale(frame)
    written = write_outputs(result, output_dirs(tmp_path))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "test/test_data.csv",
        "test_no_label/test_data_no_label.csv",
        "train/train_data.csv",
        "train_headers/train_data_with_headers.csv",
    ]
    assert written == {name: tmp_path / name / OUTPUT_FILES[name] for name in output_dirs(tmp_path)}

    # headerless, label first, exact round trip of the scaled floats
    features, labels = read_labelled_csv(tmp_path / "train" / "train_data.csv")
    np.testing.assert_array_equal(labels, result.train[LABEL])
    np.testing.assert_array_equal(features, result.train[list(UCI_FEATURES)].to_numpy(dtype=float))
    test_x, _ = read_labelled_csv(tmp_path / "test" / "test_data.csv")
    no_label = np.loadtxt(tmp_path / "test_no_label" / "test_data_no_label.csv", delimiter=",")
    assert no_label.shape == (200, 23)
    np.testing.assert_array_equal(no_label, test_x)
    with_headers = pd.read_csv(tmp_path / "train_headers" / "train_data_with_headers.csv")
    assert list(with_headers.columns) == [LABEL, *UCI_FEATURES]
    pd.testing.assert_frame_equal(with_headers, result.train, check_dtype=False)
    first_line = (tmp_path / "train" / "train_data.csv").read_text().splitlines()[0]
    assert first_line.split(",")[0] in ("0", "1")
    assert first_line.split(",")[1].isdigit()  # integer columns stay integers


def test_validation_file_only_with_a_validation_split(frame, tmp_path):
    with_validation = split_and_scale(frame, DatasetConfig(validation_ratio=0.1))
    dirs = output_dirs(tmp_path, (*output_dirs(tmp_path), "validation"))
    written = write_outputs(with_validation, dirs)
    assert written["validation"] == tmp_path / "validation" / "validation_data.csv"
    _, labels = read_labelled_csv(written["validation"])
    assert len(labels) == 80

    other = tmp_path / "second"
    written = write_outputs(split_and_scale(frame), output_dirs(other, (*output_dirs(other), "validation")))
    assert "validation" not in written
    assert not (other / "validation" / "validation_data.csv").exists()


def test_write_outputs_rejects_bad_directory_maps(frame, tmp_path):
    with pytest.raises(
        PreprocessError, match=r"no directory given for outputs \['validation'\].*validation_ratio"
    ):
        write_outputs(split_and_scale(frame, DatasetConfig(validation_ratio=0.1)), output_dirs(tmp_path))
    with pytest.raises(PreprocessError, match=r"no directory given for outputs \['train_headers'\]"):
        write_outputs(split_and_scale(frame), output_dirs(tmp_path, ("train", "test", "test_no_label")))
    with pytest.raises(PreprocessError, match=r"unknown output names \['trian'\]"):
        write_outputs(split_and_scale(frame), {**output_dirs(tmp_path), "trian": tmp_path})
