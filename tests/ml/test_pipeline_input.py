"""Execution input: validation, defaults, run ids and job names."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from ml import jobs
from ml.hyperparameters import DEFAULT_HYPERPARAMETERS
from ml.pipeline_input import (
    DATASET_SCHEMAS,
    INPUT_FIELDS,
    SETTINGS_ENV,
    InputError,
    handler,
    job_names,
    prepare,
    run_id_for,
    validate_input,
)
from tests.support.deploy_settings import EXAMPLE_DEPLOY_SETTINGS as SETTINGS

DATA = {"data_uri": "s3://data-bucket/datasets/default/"}
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def test_empty_input_runs_with_defaults() -> None:
    state = prepare({}, "exec-1", SETTINGS)
    config = state["config"]
    assert config["data_uri"] == "s3://data-bucket/datasets/default/"
    assert config["hyperparameters"] == DEFAULT_HYPERPARAMETERS
    assert config["split_ratio"] == 0.2
    assert config["random_state"] == 0
    assert set(config) == set(INPUT_FIELDS)
    assert state["run_id"] == "exec-1"
    assert set(state["requests"]) == set(jobs.BUILDERS)
    json.dumps(state)  # the state machine keeps it as JSON


def test_none_input_is_the_same_as_empty() -> None:
    defaults = {"data_uri": "s3://data-bucket/datasets/default/"}
    assert validate_input(None, defaults) == validate_input({}, defaults)


def test_missing_data_location_says_how_to_set_it() -> None:
    with pytest.raises(InputError, match="'data_uri' has no default here; set it in the input"):
        validate_input({})


def test_overrides_are_merged_and_typed() -> None:
    config = validate_input(
        {
            "hyperparameters": {"max_depth": 7, "eta": "0.1"},
            "split_ratio": 0.25,
            "training_instance_count": 2,
            "spot_training": True,
            "data_uri": "s3://other-bucket/credit/",
        },
        DATA,
    )
    assert config["hyperparameters"]["max_depth"] == "7"  # SageMaker takes strings only
    assert config["hyperparameters"]["eta"] == "0.1"
    assert config["hyperparameters"]["gamma"] == DEFAULT_HYPERPARAMETERS["gamma"]
    assert config["split_ratio"] == 0.25
    assert config["training_instance_count"] == 2
    assert config["spot_training"] is True


def test_deploy_time_defaults_apply_below_the_input() -> None:
    config = validate_input({}, {**DATA, "training_instance_type": "ml.c5.2xlarge"})
    assert config["training_instance_type"] == "ml.c5.2xlarge"
    config = validate_input(
        {"training_instance_type": "ml.m5.large"}, {**DATA, "training_instance_type": "ml.c5.2xlarge"}
    )
    assert config["training_instance_type"] == "ml.m5.large"


@pytest.mark.parametrize(
    ("execution_input", "expected"),
    [
        ({"split_ratoi": 0.3}, "unknown key 'split_ratoi' (did you mean 'split_ratio'?)"),
        ({"split_ratio": "0.3"}, "'split_ratio' must be a number, got \"0.3\""),
        ({"split_ratio": 1.5}, "'split_ratio' must be in (0, 1), got 1.5"),
        ({"spot_training": "yes"}, "'spot_training' must be true or false"),
        ({"training_instance_count": 2.5}, "'training_instance_count' must be an integer"),
        ({"training_instance_count": True}, "'training_instance_count' must be an integer"),
        ({"training_instance_type": "m5.xlarge"}, "must look like 'ml.m5.xlarge'"),
        ({"data_uri": "/tmp/data.csv"}, "must be an S3 URI"),
        ({"quality_metric": "loss"}, "'quality_metric' must be one of"),
        ({"standard_scaled": "PAY_AMT1"}, "'standard_scaled' must be a list of column names"),
        ({"hyperparameters": {"max_depth": "-1"}}, "max_depth"),
        ({"hyperparameters": {"etaa": "0.1"}}, "etaa"),
        ({"hyperparameters": {"eta": [0.1]}}, "hyperparameter 'eta' must be a string or number"),
        ({"hyperparameters": "max_depth=5"}, "'hyperparameters' must be an object"),
        (
            {"spot_training": True, "max_runtime_seconds": 7200, "max_wait_seconds": 3600},
            "'max_wait_seconds' (3600) must be at least 'max_runtime_seconds' (7200)",
        ),
    ],
)
def test_bad_input_names_the_problem(execution_input: dict[str, object], expected: str) -> None:
    with pytest.raises(InputError) as caught:
        validate_input(execution_input, DATA)
    assert expected in str(caught.value)


def test_dataset_schema_is_validated_and_matches_the_dataset_config_names() -> None:
    from ml.config import DATASET_SCHEMAS as CONFIG_SCHEMAS

    assert tuple(CONFIG_SCHEMAS) == DATASET_SCHEMAS
    assert validate_input({}, DATA)["dataset_schema"] == "auto"
    assert validate_input({"dataset_schema": "generic"}, DATA)["dataset_schema"] == "generic"
    with pytest.raises(InputError) as caught:
        validate_input({"dataset_schema": "csv"}, DATA)
    assert "'dataset_schema' must be one of ['auto', 'uci', 'generic'], got \"csv\"" in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InputError) as caught:
        validate_input({"nope": 1, "split_ratio": -1, "threshold": "high"}, DATA)
    assert len(caught.value.problems) == 3


def test_input_must_be_an_object() -> None:
    with pytest.raises(InputError, match="must be a JSON object"):
        validate_input([1, 2], DATA)


@pytest.mark.parametrize(
    "execution_name",
    [
        "6f1c1a3e-1234-4bcd-9def-0123456789ab",
        "My_Run.With Spaces",
        "x" * 80,
        "---",
        "a_b",
    ],
)
def test_job_names_are_valid_for_any_execution_name(execution_name: str) -> None:
    run_id = run_id_for(execution_name, "pipeline-prefix1")
    names = job_names(run_id, "pipeline-prefix1")
    for kind, name in names.items():
        limit = 120 if kind in ("experiment", "trial") else 63
        assert len(name) <= limit, name
        assert JOB_NAME.match(name), name
    # A relaunched job is renamed `<name>-r<attempt>`: those names must be valid too.
    for kind in jobs.RELAUNCHABLE_JOBS:
        for attempt in range(1, jobs.MAX_JOB_LAUNCHES):
            relaunched = jobs.relaunch_name(names[kind], attempt)
            assert len(relaunched) <= 63 and JOB_NAME.match(relaunched), relaunched


def test_longest_kept_execution_name_leaves_room_for_the_last_relaunch() -> None:
    prefix = "pipeline-prefix1"
    longest_tag = max(jobs.JOB_KINDS.values(), key=len)
    budget = 63 - len(f"{prefix}-{longest_tag}-") - jobs.relaunch_suffix_length()
    assert run_id_for("a" * budget, prefix) == "a" * budget
    shortened = run_id_for("a" * (budget + 1), prefix)
    assert shortened != "a" * (budget + 1) and len(shortened) <= budget


def test_prepare_records_the_first_launch_of_each_relaunchable_job() -> None:
    state = prepare({}, "exec-1", SETTINGS)
    assert state["attempts"] == {
        kind: {"attempt": 0, "name": state["names"][kind]} for kind in jobs.RELAUNCHABLE_JOBS
    }
    for kind, record in state["attempts"].items():
        assert state["requests"][kind][jobs.JOB_NAME_KEYS[kind]] == record["name"]


def test_run_ids_do_not_collide() -> None:
    names = ["a_b", "a-b", "A-B", "x" * 79 + "1", "x" * 79 + "2"]
    run_ids = {run_id_for(name, "xgb") for name in names}
    assert len(run_ids) == len(names)


def test_console_execution_names_are_kept() -> None:
    assert run_id_for("6f1c1a3e-1234-4bcd-9def-0123456789ab", "xgb") == "6f1c1a3e-1234-4bcd-9def-0123456789ab"


def test_bad_name_prefix_is_rejected() -> None:
    settings = jobs.DeploySettings(**{**SETTINGS.to_json_dict(), "name_prefix": "Bad_Prefix"})
    with pytest.raises(ValueError, match="name prefix 'Bad_Prefix'"):
        prepare({}, "e", settings)


def test_lambda_handler_reads_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(SETTINGS.to_json_dict()))
    state = handler({"input": {"threshold": 0.4}, "execution_name": "run-7"}, None)
    assert state["config"]["threshold"] == 0.4
    assert state["names"]["training"] == "xgb-train-run-7"


def test_lambda_handler_without_settings_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    with pytest.raises(RuntimeError, match=SETTINGS_ENV):
        handler({"input": {}, "execution_name": "e"}, None)


def test_lambda_modules_import_without_numpy() -> None:
    """The Prepare Lambda ships the stdlib-only modules: importing them must not need numpy."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'numpy', 'pandas', 'xgboost', 'sklearn', 'boto3'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import ml.pipeline_input\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
