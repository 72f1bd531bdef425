"""The synthesized state machine in moto, with every SageMaker job running the project's real
entry point (ml-preprocess, train, serve, ml-evaluate) through ml.local_sagemaker, reading and
writing moto's S3 at the URIs of the job requests. The data is the SYNTHETIC data set."""

from __future__ import annotations

import json

import pytest

from ml import aws_commands, jobs, pipeline_input
from ml.artifacts import S3ArtifactStore
from ml.data import synthetic_dataset
from ml.local_sagemaker import JobResult, LocalSageMaker
from tests.support import moto_sfn_sagemaker
from tests.support.sfn_harness import local_runners

pytestmark = pytest.mark.slow


@pytest.fixture
def real_jobs(pipeline, tmp_path):
    s3 = pipeline.clients["s3"]
    data = tmp_path / "credit.csv"
    synthetic_dataset(n_rows=800, seed=3).to_csv(data, index=False)
    s3.upload_file(str(data), pipeline.names["data_bucket"], "datasets/default/credit.csv")
    results: list[JobResult] = []
    executor = LocalSageMaker(S3ArtifactStore(s3), tmp_path / "work")
    moto_sfn_sagemaker.RUNNERS.update(local_runners(executor, results))
    return results


def run_plan(pipeline, name: str, execution_input: dict | None = None) -> dict:
    settings = jobs.DeploySettings.from_json_dict(json.loads(pipeline.names["settings"]))
    return pipeline_input.prepare(execution_input or {}, name, settings)


def test_real_jobs_run_end_to_end_and_evaluation_lands_in_s3(pipeline, real_jobs):
    execution = pipeline.run("happy-path", {"hyperparameters": {"num_round": 30}}, timeout_s=600)
    assert execution.status == "SUCCEEDED", execution.description
    assert [r.job_type for r in real_jobs] == ["processing", "training", "transform", "processing"]
    assert all(r.succeeded for r in real_jobs)

    plan = run_plan(pipeline, "happy-path", {"hyperparameters": {"num_round": 30}})
    s3 = pipeline.clients["s3"]
    bucket = pipeline.names["artifact_bucket"]
    evaluation = json.loads(s3.get_object(Bucket=bucket, Key=plan["uris"]["evaluation_key"])["Body"].read())
    output = execution.output
    assert output["evaluation"]["metrics"] == evaluation
    assert 0.5 < evaluation["auc"] <= 1.0
    assert output["evaluation"]["quality_value"] == evaluation["auc"] >= 0.7
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"runs/{plan['run_id']}/")["Contents"]}
    run = f"runs/{plan['run_id']}"
    assert f"{run}/processing/train/train_data.csv" in keys
    assert f"{run}/training/{plan['names']['training']}/output/model.tar.gz" in keys
    assert f"{run}/transform/{jobs.TRANSFORM_OUTPUT_FILE}" in keys
    assert {f"{run}/evaluation/confusion_matrix.png", f"{run}/evaluation/roc_curve.png"} <= keys

    # SageMaker-style metrics parsed from the real training log with the request's definitions.
    described = pipeline.clients["sagemaker"].describe_training_job(TrainingJobName=plan["names"]["training"])
    assert {m["MetricName"] for m in described["FinalMetricDataList"]} >= {"train:logloss"}

    (message,) = pipeline.inbox.messages()
    assert message["Subject"] == "ML pipeline run succeeded"
    assert f"auc = {evaluation['auc']}" in message["Message"]

    report = aws_commands.execution_report(pipeline.clients["stepfunctions"], execution.arn)
    text = aws_commands.format_report(report)
    for kind in ("preprocessing", "training", "transform", "evaluation"):
        assert plan["names"][kind] in text
    assert report.metrics == evaluation
    assert "auc" in text


def test_real_job_failure_is_notified_with_the_containers_reason(pipeline, real_jobs):
    execution = pipeline.run("wrong-label", {"label_column": "churned"}, timeout_s=300)
    assert execution.status == "FAILED"
    assert execution.description["error"] == "PreprocessingFailed"
    (failed,) = [r for r in real_jobs if not r.succeeded]
    assert failed.failure_reason
    reason_line = failed.failure_reason.splitlines()[0]
    (message,) = pipeline.inbox.messages()
    assert message["Subject"] == "ML pipeline failed at Preprocessing"
    assert reason_line in message["Message"]
    assert run_plan(pipeline, "wrong-label")["names"]["preprocessing"] in message["Message"]
    assert message["Message"].endswith(f"(execution {execution.arn})")
    # docs/running.md quotes this message (pytest -s shows it).
    print(json.dumps({"Subject": message["Subject"], "Message": message["Message"]}, indent=2))
