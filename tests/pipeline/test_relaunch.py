"""Relaunch of jobs SageMaker accepted and then failed for capacity or an internal error.

The generated states are checked for every relaunchable job, then executions in moto show that
such a failure relaunches the job under `<name>-r<attempt>` after the configured wait, up to the
maximum, and that an ordinary job failure is not relaunched. Waits are recorded by
`WaitClock` and not actually waited.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from ml import aws_commands, jobs, pipeline_input
from tests.pipeline.test_state_machine import SAGEMAKER_STATES, fake_runners, notification, plan
from tests.support import moto_sfn_sagemaker
from tests.support.cfn_resolve import ACCOUNT, REGION, resolver, resources_of_type
from tests.support.moto_sfn_extras import WaitClock
from tests.support.moto_sfn_sagemaker import JobFailedError

CAPACITY = (
    "CapacityError: Unable to provision requested ML compute capacity. "
    "Please retry using a different ML instance type."
)
INTERNAL = "InternalServerError: We encountered an internal error. Please try again."
RELAUNCH_STATES = ("JobFailed", "ReadFailure", "CanRelaunch", "NextLaunch", "WaitBeforeRelaunch")


def created(action: str, name_key: str) -> list[str]:
    return [request[name_key] for called, request in moto_sfn_sagemaker.CALLS if called == action]


# --------------------------------------------------------------------------- generated states


@pytest.mark.parametrize("kind", jobs.RELAUNCHABLE_JOBS)
def test_relaunch_states_of_each_job(synthesized, kind):
    state_name = next(name for name, k in SAGEMAKER_STATES.items() if k == kind)
    states = synthesized.asl["States"]
    record = f"$.run.attempts.{kind}"
    reason = f"{record}.failed.FailureReason"

    failed = f"{state_name}Failed"

    def guards(path: str) -> list[dict[str, Any]]:
        # Presence and type are tested by rules of their own, before any comparison on the path.
        return [
            {"Not": {"Variable": path, "IsPresent": True}, "Next": failed},
            {"Not": {"Variable": path, "IsString": True}, "Next": failed},
        ]

    job_failed = states[f"{state_name}JobFailed"]
    assert job_failed["Default"] == failed
    assert job_failed["Choices"] == [
        *guards("$.error.Cause"),
        {"Variable": "$.error.Cause", "StringMatches": "{*", "Next": f"{state_name}ReadFailure"},
    ]

    read = states[f"{state_name}ReadFailure"]
    assert read["Parameters"]["failed.$"] == "States.StringToJson($.error.Cause)"
    assert read["ResultPath"] == record
    assert read["Next"] == f"{state_name}CanRelaunch"

    decide = states[f"{state_name}CanRelaunch"]
    assert decide["Default"] == failed
    assert decide["Choices"] == [
        *guards(reason),
        {
            "And": [
                {"Or": [{"Variable": reason, "StringMatches": p} for p in jobs.RELAUNCH_FAILURE_PATTERNS]},
                {"Variable": f"{record}.attempt", "NumericLessThan": jobs.MAX_JOB_LAUNCHES - 1},
            ],
            "Next": f"{state_name}NextLaunch",
        },
    ]

    launch = states[f"{state_name}NextLaunch"]["Parameters"]
    assert launch["attempt.$"] == f"States.MathAdd({record}.attempt, 1)"
    assert launch["name.$"] == (
        f"States.Format('{jobs.RELAUNCH_NAME_FORMAT}', $.run.names.{kind}, States.MathAdd({record}.attempt, 1))"
    )
    waits = ", ".join(map(str, jobs.RELAUNCH_WAIT_SECONDS))
    assert launch["wait_seconds.$"] == f"States.ArrayGetItem(States.Array({waits}), {record}.attempt)"
    assert states[f"{state_name}NextLaunch"]["ResultPath"] == record

    wait = states[f"{state_name}WaitBeforeRelaunch"]
    assert wait == {
        "Type": "Wait",
        "Comment": wait["Comment"],
        "SecondsPath": f"{record}.wait_seconds",
        "Next": state_name,
    }
    # The notification of a job that failed names the launch that failed.
    assert states[f"{state_name}Failed"]["Parameters"]["job_name.$"] == f"{record}.name"


def test_only_relaunchable_jobs_get_relaunch_states(synthesized):
    states = synthesized.asl["States"]
    for suffix in RELAUNCH_STATES:
        owners = {name.removesuffix(suffix) for name in states if name.endswith(suffix)}
        assert owners == {name for name, kind in SAGEMAKER_STATES.items() if kind in jobs.RELAUNCHABLE_JOBS}
    assert states["CreateModelFailed"]["Parameters"]["job_name.$"] == "$.run.names.model"


def test_state_machine_may_create_describe_and_stop_relaunched_jobs(synthesized):
    """The role's SageMaker permissions are scoped to job-name prefixes: relaunch names too."""
    template = synthesized.template
    resolve = resolver(template)
    (machine,) = resources_of_type(template, "AWS::StepFunctions::StateMachine").values()
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in resources_of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in resolve(policy["Properties"]["PolicyDocument"])["Statement"]
        if statement["Effect"] == "Allow"
    ]
    (function,) = [
        f for lid, f in resources_of_type(template, "AWS::Lambda::Function").items() if "Prepare" in lid
    ]
    environment = resolve(function["Properties"]["Environment"]["Variables"])
    settings = jobs.DeploySettings.from_json_dict(json.loads(environment[pipeline_input.SETTINGS_ENV]))
    # The longest execution name Step Functions allows gives the longest job names.
    names = pipeline_input.plan_run({}, "x" * 80, settings).names
    api = {"preprocessing": "ProcessingJob", "training": "TrainingJob", "transform": "TransformJob"}
    api["evaluation"] = api["preprocessing"]
    arn_type = {
        "ProcessingJob": "processing-job",
        "TrainingJob": "training-job",
        "TransformJob": "transform-job",
    }

    def allowed(action: str, arn: str) -> bool:
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if action in actions and any(fnmatch.fnmatchcase(arn, resource) for resource in resources):
                return True
        return False

    for kind in jobs.RELAUNCHABLE_JOBS:
        for attempt in range(1, jobs.MAX_JOB_LAUNCHES):
            name = jobs.relaunch_name(names[kind], attempt)
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{arn_type[api[kind]]}/{name}"
            for verb in ("Create", "Describe", "Stop"):
                assert allowed(f"sagemaker:{verb}{api[kind]}", arn), (verb, arn)
            assert not allowed(
                f"sagemaker:Create{api[kind]}", arn.replace(names[kind], "other-" + names[kind])
            )


# --------------------------------------------------------------------------- executions


def test_training_relaunched_after_capacity_error_and_model_uses_its_artefact(pipeline):
    fake_runners(pipeline)
    launches: list[str] = []

    def short_of_capacity_once(request: dict[str, Any]) -> None:
        launches.append(request["TrainingJobName"])
        if len(launches) == 1:
            raise JobFailedError(CAPACITY)

    moto_sfn_sagemaker.RUNNERS["training"] = short_of_capacity_once
    execution = pipeline.run("capacity-once")
    assert execution.status == "SUCCEEDED", execution.description
    expected = plan(pipeline, "capacity-once")
    first = expected["names"]["training"]
    assert launches == [first, f"{first}-r1"]
    assert WaitClock.seconds == [jobs.RELAUNCH_WAIT_SECONDS[0]] == [60]
    entered = execution.entered_states()
    assert entered.count("Training") == 2
    relaunch = entered.index("TrainingJobFailed")
    assert entered[relaunch : relaunch + 6] == [
        "TrainingJobFailed",
        "TrainingReadFailure",
        "TrainingCanRelaunch",
        "TrainingNextLaunch",
        "TrainingWaitBeforeRelaunch",
        "Training",
    ]
    # Both launches are the same request but for the name.
    (first_request, second_request) = [r for a, r in moto_sfn_sagemaker.CALLS if a == "createTrainingJob"]
    assert {**second_request, "TrainingJobName": first} == first_request == expected["requests"]["training"]
    assert second_request["RetryStrategy"] == {"MaximumRetryAttempts": jobs.TRAINING_RETRY_ATTEMPTS}
    # The model is the relaunched job's, not the one Prepare derived from the first name.
    ((_, model),) = [c for c in moto_sfn_sagemaker.CALLS if c[0] == "createModel"]
    relaunched_artifact = f"{expected['uris']['models']}{first}-r1/output/model.tar.gz"
    assert model["PrimaryContainer"]["ModelDataUrl"] == relaunched_artifact
    assert model["PrimaryContainer"]["ModelDataUrl"] != expected["uris"]["model_artifact"]
    assert model == {
        **expected["requests"]["model"],
        "PrimaryContainer": {
            **expected["requests"]["model"]["PrimaryContainer"],
            "ModelDataUrl": relaunched_artifact,
        },
    }
    output = execution.output
    assert output["model_artifact"] == relaunched_artifact
    assert output["launches"]["training"] == {
        "attempt": 1,
        "name": f"{first}-r1",
        "wait_seconds": 60,
        "previous_failure": CAPACITY,
    }
    assert output["launches"]["preprocessing"] == {"attempt": 0, "name": expected["names"]["preprocessing"]}
    assert notification(pipeline)["Subject"] == "ML pipeline run succeeded"
    # `python -m ml status` shows each launch with its own job name.
    report = aws_commands.execution_report(pipeline.clients["stepfunctions"], execution.arn)
    assert [
        (step.job_name, step.status, step.reason) for step in report.steps if step.name == "Training"
    ] == [
        (first, "caught", CAPACITY),
        (f"{first}-r1", "succeeded", None),
    ]


def test_processing_job_with_internal_errors_is_relaunched_up_to_the_maximum_then_notified(pipeline):
    fake_runners(pipeline, fail={"preprocessing": INTERNAL})
    execution = pipeline.run("internal-always")
    assert execution.status == "FAILED"
    first = plan(pipeline, "internal-always")["names"]["preprocessing"]
    last = f"{first}-r{jobs.MAX_JOB_LAUNCHES - 1}"
    assert created("createProcessingJob", "ProcessingJobName") == [
        first,
        *(jobs.relaunch_name(first, k) for k in range(1, jobs.MAX_JOB_LAUNCHES)),
    ]
    assert WaitClock.seconds == list(jobs.RELAUNCH_WAIT_SECONDS) == [60, 300]
    assert execution.description["error"] == "PreprocessingFailed"
    cause = execution.description["cause"]
    assert f"failed at step Preprocessing (job {last})" in cause
    assert f"States.TaskFailed: {INTERNAL}" in cause
    entered = execution.entered_states()
    assert entered.count("Preprocessing") == jobs.MAX_JOB_LAUNCHES
    assert entered.count("PreprocessingNextLaunch") == jobs.MAX_JOB_LAUNCHES - 1
    last_decision = len(entered) - 1 - entered[::-1].index("PreprocessingCanRelaunch")
    assert entered[last_decision + 1] == "PreprocessingFailed"
    assert entered[-3:] == ["SummariseFailure", "NotifyFailure", "PipelineFailed"]
    assert "Training" not in entered
    message = notification(pipeline)
    assert message["Subject"] == "ML pipeline failed at Preprocessing"
    assert message["Message"] == cause


@pytest.mark.parametrize(
    "reason",
    [
        "AlgorithmError: ExecuteUserScriptError: num_round must be >= 1",
        # A container message that merely mentions an error SageMaker relaunches for.
        "AlgorithmError: the scoring service answered InternalServerError: retry later",
    ],
)
def test_ordinary_job_failure_is_not_relaunched(pipeline, reason):
    fake_runners(pipeline, fail={"training": reason})
    execution = pipeline.run("algorithm-error")
    assert execution.status == "FAILED"
    name = plan(pipeline, "algorithm-error")["names"]["training"]
    assert created("createTrainingJob", "TrainingJobName") == [name]
    assert WaitClock.seconds == []
    entered = execution.entered_states()
    assert entered[entered.index("TrainingJobFailed") :][:4] == [
        "TrainingJobFailed",
        "TrainingReadFailure",
        "TrainingCanRelaunch",
        "TrainingFailed",
    ]
    assert "TrainingNextLaunch" not in entered
    assert execution.description["error"] == "TrainingFailed"
    assert (
        f"failed at step Training (job {name}). States.TaskFailed: {reason}" in execution.description["cause"]
    )
    assert notification(pipeline)["Subject"] == "ML pipeline failed at Training"
