from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ml.hyperparameters import (
    DEFAULT_HYPERPARAMETERS,
    EVAL_METRICS,
    HYPERPARAMETERS,
    HyperparameterError,
    booster_params,
    parse_hyperparameters,
    spec_as_dict,
)

MODULE = Path(__file__).resolve().parents[2] / "ml" / "hyperparameters.py"


def test_module_imports_only_the_standard_library():
    tree = ast.parse(MODULE.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    import sys

    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_defaults_are_the_notebooks():
    assert DEFAULT_HYPERPARAMETERS == {
        "max_depth": "5",
        "eta": "0.2",
        "gamma": "4",
        "min_child_weight": "6",
        "subsample": "0.8",
        "verbosity": "0",
        "objective": "binary:logistic",
        "num_round": "100",
    }
    assert all(isinstance(v, str) for v in DEFAULT_HYPERPARAMETERS.values())


def test_empty_input_gives_typed_defaults():
    parsed = parse_hyperparameters({})
    assert parsed == {
        "num_round": 100,
        "max_depth": 5,
        "eta": 0.2,
        "gamma": 4.0,
        "min_child_weight": 6.0,
        "subsample": 0.8,
        "objective": "binary:logistic",
        "verbosity": 0,
        "eval_metric": ["logloss"],
        "tree_method": "hist",
        "seed": 0,
        "early_stopping_rounds": 10,
    }
    assert isinstance(parsed["max_depth"], int)
    assert isinstance(parsed["gamma"], float)
    assert parse_hyperparameters(DEFAULT_HYPERPARAMETERS) == parsed


def test_strings_numbers_and_json_quoted_strings_are_accepted():
    parsed = parse_hyperparameters(
        {
            "max_depth": " 7 ",
            "eta": 0.05,
            "num_round": "50.0",
            "objective": '"reg:logistic"',
            "eval_metric": "auc, logloss",
            "early_stopping_rounds": 10,
            "colsample_bytree": "1",
            "lambda": "1e-3",
        }
    )
    assert parsed["max_depth"] == 7
    assert parsed["eta"] == 0.05
    assert parsed["num_round"] == 50 and isinstance(parsed["num_round"], int)
    assert parsed["objective"] == "reg:logistic"
    assert parsed["eval_metric"] == ["auc", "logloss"]
    assert parsed["early_stopping_rounds"] == 10
    assert parsed["colsample_bytree"] == 1.0
    assert parsed["lambda"] == 0.001


def test_sagemaker_platform_keys_are_skipped():
    parsed = parse_hyperparameters(
        {"_tuning_objective_metric": "validation:auc", "sagemaker_program": "x", "eta": "0.3"}
    )
    assert parsed["eta"] == 0.3
    assert "_tuning_objective_metric" not in parsed and "sagemaker_program" not in parsed


def test_unknown_name_lists_known_names_and_suggests():
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters({"etaa": "0.1"})
    message = str(info.value)
    assert "unknown hyperparameter 'etaa'" in message
    assert "did you mean 'eta'" in message
    assert "known hyperparameters: alpha, colsample_bylevel" in message
    assert "num_round" in message and "max_depth" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("eta", "1.5", "eta='1.5' is invalid: eta must be a float in (0, 1]"),
        ("eta", "0", "eta must be a float in (0, 1]"),
        ("eta", "fast", "eta='fast' is invalid"),
        ("eta", "nan", "eta='nan' is invalid"),
        ("subsample", "0", "subsample must be a float in (0, 1]"),
        ("gamma", "-1", "gamma='-1' is invalid: gamma must be a float in [0, inf)"),
        ("max_depth", "2.5", "max_depth must be an int in [0, 64]"),
        ("max_depth", "65", "max_depth='65' is invalid: max_depth must be an int in [0, 64]"),
        ("num_round", "0", "num_round must be an int in [1, 100000]"),
        ("verbosity", "4", "verbosity must be an int in [0, 3]"),
        ("scale_pos_weight", "0", "scale_pos_weight must be a float in (0, inf)"),
        ("max_bin", "1", "max_bin must be an int in [2, 65536]"),
        ("objective", "multi:softmax", "objective must be one of: binary:logistic, reg:logistic"),
        ("tree_method", "gpu_hist", "tree_method must be one of: hist, approx, exact, auto"),
        ("eval_metric", "logloss,rmse", "eval_metric must be one or more (comma-separated) of: logloss, auc"),
        ("eval_metric", "", "eval_metric='' is invalid"),
        ("eval_metric", "auc,auc", "each metric at most once"),
        ("early_stopping_rounds", "-1", "early_stopping_rounds must be an int in [0, 100000]"),
    ],
)
def test_bad_values_name_parameter_value_and_range(name, value, expected):
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters({name: value})
    assert expected in str(info.value)


def test_values_xgboost_refuses_together_are_rejected_naming_both():
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters({"max_depth": "0", "tree_method": "exact"})
    assert "max_depth=0 (no depth limit) is not supported with tree_method=exact" in str(info.value)
    # Either one alone is fine: no limit with hist (the default), exact with a depth.
    assert parse_hyperparameters({"max_depth": "0"})["max_depth"] == 0
    assert parse_hyperparameters({"tree_method": "exact"})["max_depth"] == 5


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_non_scalar_values_are_rejected(value):
    with pytest.raises(HyperparameterError, match=r"max_depth=.* expected a string or a number"):
        parse_hyperparameters({"max_depth": value})


def test_all_problems_are_reported_at_once():
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters({"eta": "2", "max_depth": "-1", "bogus": "1"})
    assert len(info.value.errors) == 3
    message = str(info.value)
    assert "eta='2'" in message and "max_depth='-1'" in message and "'bogus'" in message


def test_non_mapping_input_is_rejected():
    with pytest.raises(HyperparameterError, match="must be a mapping"):
        parse_hyperparameters(["eta"])  # type: ignore[arg-type]


def test_bounds_are_inclusive_where_declared():
    assert parse_hyperparameters({"subsample": "1"})["subsample"] == 1.0
    assert parse_hyperparameters({"gamma": "0"})["gamma"] == 0.0
    assert parse_hyperparameters({"max_depth": "0"})["max_depth"] == 0


def test_spec_is_machine_readable_and_consistent():
    spec = spec_as_dict()
    json.dumps(spec)  # must be JSON-serialisable for the Lambda and docs
    assert set(spec) == set(HYPERPARAMETERS)
    assert spec["eta"] == {
        "type": "float",
        "default": "0.2",
        "description": spec["eta"]["description"],
        "allowed": "a float in (0, 1]",
        "minimum": 0,
        "maximum": 1,
        "minimum_inclusive": False,
        "maximum_inclusive": True,
    }
    assert spec["eval_metric"]["choices"] == list(EVAL_METRICS)
    for name, entry in spec.items():
        assert entry["description"], name
        if entry["default"] is not None:
            parse_hyperparameters({name: entry["default"]})  # every default is itself valid
    for name, value in DEFAULT_HYPERPARAMETERS.items():
        assert HYPERPARAMETERS[name].default == value


def test_booster_params_drop_loop_settings():
    parsed = parse_hyperparameters({"early_stopping_rounds": "5"})
    params = booster_params(parsed)
    assert "num_round" not in params and "early_stopping_rounds" not in params
    assert params["max_depth"] == 5 and params["objective"] == "binary:logistic"
