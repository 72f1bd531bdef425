from __future__ import annotations

import dataclasses
import json

import pytest

from ml.config import DATASET_SCHEMAS, LABEL, UCI_LABEL_ALIASES, ConfigError, DatasetConfig, uci_schema_for


def test_defaults_are_the_notebooks():
    config = DatasetConfig()
    assert config.label_column == LABEL == "Label"
    assert config.standard_scaled == ("PAY_AMT1",)
    assert config.minmax_scaled == ("BILL_AMT1",)
    assert config.split_ratio == 0.2
    assert config.random_state == 0
    assert config.validation_ratio == 0.0
    assert config.drop_columns == ("ID",)
    assert config.stratify is False
    assert config.is_uci
    assert "default payment next month" in config.label_aliases
    assert config.label_aliases == UCI_LABEL_ALIASES


def test_frozen_and_hashable():
    config = DatasetConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.split_ratio = 0.3  # type: ignore[misc]
    assert hash(config) == hash(DatasetConfig())


def test_other_data_set_by_configuration():
    config = DatasetConfig(label_column="y", standard_scaled=["income"], minmax_scaled=(), drop_columns=[])
    assert not config.is_uci
    assert config.standard_scaled == ("income",)  # lists are frozen into tuples
    assert config.drop_columns == ()
    assert DatasetConfig(uci_schema=False).is_uci is False
    assert DatasetConfig(label_column="y", uci_schema=True).is_uci is True


def test_dataset_schema_names_map_to_uci_schema():
    assert DATASET_SCHEMAS == {"auto": None, "uci": True, "generic": False}
    assert DatasetConfig(uci_schema=uci_schema_for("generic")).is_uci is False
    assert DatasetConfig(label_column="y", uci_schema=uci_schema_for("uci")).is_uci is True
    # "auto" keeps the rule: UCI exactly when the label column is called Label.
    assert DatasetConfig(uci_schema=uci_schema_for("auto")).is_uci is True
    assert DatasetConfig(label_column="y", uci_schema=uci_schema_for("auto")).is_uci is False
    for name in DATASET_SCHEMAS:
        assert DatasetConfig(uci_schema=uci_schema_for(name)).dataset_schema == name
    with pytest.raises(
        ConfigError, match=r"dataset_schema must be one of \['auto', 'uci', 'generic'\], got 'UCI'"
    ):
        uci_schema_for("UCI")


def test_to_dict_is_json():
    data = DatasetConfig(validation_ratio=0.1).to_dict()
    assert json.loads(json.dumps(data))["validation_ratio"] == 0.1
    assert data["standard_scaled"] == ["PAY_AMT1"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"split_ratio": 0}, "split_ratio must be a number in (0, 1) (the test share), got 0"),
        ({"split_ratio": 1.0}, "split_ratio must be a number in (0, 1)"),
        ({"split_ratio": "0.2"}, "split_ratio must be a number in (0, 1) (the test share), got '0.2'"),
        ({"split_ratio": True}, "split_ratio must be a number"),
        ({"validation_ratio": 1}, "validation_ratio must be a number in [0, 1)"),
        ({"validation_ratio": -0.1}, "validation_ratio must be a number in [0, 1)"),
        ({"random_state": -1}, "random_state must be an integer in [0, 2**32 - 1], got -1"),
        ({"random_state": 1.5}, "random_state must be an integer"),
        ({"random_state": True}, "random_state must be an integer"),
        ({"label_column": " "}, "label_column must be a non-empty column name"),
        ({"stratify": "yes"}, "stratify must be true or false"),
        ({"uci_schema": "no"}, "uci_schema must be true, false or None"),
        (
            {"standard_scaled": ("A",), "minmax_scaled": ("A",)},
            "columns ['A'] are in both standard_scaled and minmax_scaled",
        ),
        ({"standard_scaled": ("Label",)}, "standard_scaled must not contain the label column 'Label'"),
        (
            {"label_column": "y", "minmax_scaled": ("y",)},
            "minmax_scaled must not contain the label column 'y'",
        ),
        (
            {"standard_scaled": "PAY_AMT1"},
            "standard_scaled must be a sequence of column names, got the string",
        ),
        ({"drop_columns": ("ID", "ID")}, "drop_columns lists ['ID'] more than once"),
        ({"drop_columns": ("ID", 3)}, "drop_columns contains 3, which is not a column name"),
        ({"minmax_scaled": 5}, "minmax_scaled must be a sequence of column names, got 5"),
    ],
)
def test_invalid_values_are_rejected_clearly(kwargs, expected):
    with pytest.raises(ConfigError) as info:
        DatasetConfig(**kwargs)
    assert expected in str(info.value)
    assert str(info.value).startswith("invalid DatasetConfig")


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        DatasetConfig(split_ratio=2, validation_ratio=2)
    assert "split_ratio" in str(info.value) and "validation_ratio" in str(info.value)
