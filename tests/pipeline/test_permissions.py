"""The state machine role allows exactly what the resolved definition calls, and nothing more.

For every Task state of the resolved definition the test derives the IAM actions and resource ARNs
the call needs (for a sample run prepared by the real Prepare code), and looks for an Allow
statement of the synthesized role policy whose actions and resources match. The reverse check
keeps the policy to the listed actions. Also here: the stopped-run notification rule, the key
policy it needs, the DependsOn cfn-lint W3005 reports, and the execution timeout.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from infra import pipeline as pipeline_module
from ml import jobs, pipeline_input
from tests.support.cfn_resolve import ACCOUNT, PARTITION, REGION, resolver, resources_of_type

RUN_NAME = "perm-check"
SAGEMAKER_ARN = f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}"
EVENTS_RULE_ARN = f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:rule"
# EventBridge rules Step Functions manages for each .sync integration.
SYNC_RULES = {
    "createProcessingJob": "StepFunctionsGetEventsForSageMakerProcessingJobsRule",
    "createTrainingJob": "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
    "createTransformJob": "StepFunctionsGetEventsForSageMakerTransformJobsRule",
    "startBuild": "StepFunctionsGetEventForCodeBuildStartBuildRule",
}
SAGEMAKER_ARN_TYPES = {
    "createProcessingJob": ("processing-job", "ProcessingJob"),
    "createTrainingJob": ("training-job", "TrainingJob"),
    "createTransformJob": ("transform-job", "TransformJob"),
}
# Every action the role may have: the calls below, plus what CDK adds for the execution log
# (vended log delivery), X-Ray tracing and CodeBuild's report reading.
ALLOWED_ACTIONS = {
    "lambda:InvokeFunction",
    "ecr:DescribeImages",
    "codebuild:StartBuild",
    "codebuild:BatchGetBuilds",
    "codebuild:StopBuild",
    "codebuild:BatchGetReports",
    "events:PutTargets",
    "events:PutRule",
    "events:DescribeRule",
    "sagemaker:CreateExperiment",
    "sagemaker:CreateTrial",
    "sagemaker:AssociateTrialComponent",
    "sagemaker:AddTags",
    "sagemaker:ListTags",
    "sagemaker:CreateModel",
    *(
        f"sagemaker:{verb}{kind}"
        for _, kind in SAGEMAKER_ARN_TYPES.values()
        for verb in ("Create", "Describe", "Stop")
    ),
    "s3:GetObject",
    "sns:Publish",
    "iam:PassRole",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
    "kms:CreateGrant",
    "logs:CreateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:DescribeLogGroups",
    "logs:DescribeResourcePolicies",
    "logs:GetLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:UpdateLogDelivery",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:PutTelemetryRecords",
    "xray:PutTraceSegments",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def statements(synthesized) -> list[dict[str, Any]]:
    template = synthesized.template
    resolve = resolver(template)
    (machine_id,) = resources_of_type(template, "AWS::StepFunctions::StateMachine")
    role_ref = template["Resources"][machine_id]["Properties"]["RoleArn"]
    role_id = role_ref["Fn::GetAtt"][0]
    found = []
    for policy in resources_of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found += resolve(policy["Properties"]["PolicyDocument"]["Statement"])
    role = template["Resources"][role_id]["Properties"]
    assert "Policies" not in role and "ManagedPolicyArns" not in role, (
        "all of the role's rights are checked here"
    )
    assert found
    return found


@pytest.fixture(scope="module")
def run(synthesized) -> dict[str, Any]:
    """What Prepare computes for a sample execution, with the deployed settings."""
    template = synthesized.template
    resolve = resolver(template)
    (function_id,) = [lid for lid in resources_of_type(template, "AWS::Lambda::Function") if "Prepare" in lid]
    variables = resolve(template["Resources"][function_id]["Properties"])["Environment"]["Variables"]
    settings = jobs.DeploySettings.from_json_dict(json.loads(variables["PIPELINE_SETTINGS"]))
    return pipeline_input.prepare({}, RUN_NAME, settings)


def _path(run: dict[str, Any], path: str) -> Any:
    node: Any = {"run": run}
    for part in path.removeprefix("$.").split("."):
        node = node[part]
    return node


def _allowed(
    statements: list[dict[str, Any]], action: str, resource: str, condition: dict[str, Any] | None = None
) -> bool:
    for statement in statements:
        if statement["Effect"] != "Allow" or action not in _as_list(statement["Action"]):
            continue
        if statement.get("Condition") != condition:
            continue
        if any(fnmatchcase(resource, pattern) for pattern in _as_list(statement["Resource"])):
            return True
    return False


def required_calls(asl: dict[str, Any], run: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Task state -> the (action, resource ARN) pairs its integration calls for this run."""
    needed: dict[str, list[tuple[str, str]]] = {}
    for name, state in asl["States"].items():
        if state["Type"] != "Task":
            continue
        resource = state["Resource"]
        parameters = state["Parameters"]
        service_action = resource.removeprefix(f"arn:{PARTITION}:states:::").removeprefix("aws-sdk:")
        service, _, action = service_action.partition(":")
        action, _, pattern = action.partition(".")
        calls: list[tuple[str, str]]
        if (service, action) == ("lambda", "invoke"):
            calls = [("lambda:InvokeFunction", parameters["FunctionName"])]
        elif (service, action) == ("ecr", "describeImages"):
            repository = f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{parameters['RepositoryName']}"
            calls = [("ecr:DescribeImages", repository)]
        elif (service, action) == ("codebuild", "startBuild"):
            project = f"arn:{PARTITION}:codebuild:{REGION}:{ACCOUNT}:project/{parameters['ProjectName']}"
            calls = [(f"codebuild:{verb}", project) for verb in ("StartBuild", "BatchGetBuilds", "StopBuild")]
        elif (service, action) == ("sagemaker", "createExperiment"):
            experiment = _path(run, parameters["ExperimentName.$"])
            calls = [("sagemaker:CreateExperiment", f"{SAGEMAKER_ARN}:experiment/{experiment}")]
        elif (service, action) == ("sagemaker", "createTrial"):
            trial = _path(run, parameters["TrialName.$"])
            calls = [("sagemaker:CreateTrial", f"{SAGEMAKER_ARN}:experiment-trial/{trial}")]
        elif (service, action) == ("sagemaker", "createModel"):
            model = f"{SAGEMAKER_ARN}:model/{_path(run, parameters['ModelName.$'])}"
            calls = [("sagemaker:CreateModel", model), ("sagemaker:AddTags", model)]
        elif service == "sagemaker" and action in SAGEMAKER_ARN_TYPES:
            arn_type, kind = SAGEMAKER_ARN_TYPES[action]
            job_name = _path(run, parameters[f"{kind}Name.$"])
            # A relaunch adds -r<k> to the name; the last one must be allowed too.
            arns = [
                f"{SAGEMAKER_ARN}:{arn_type}/{job_name}",
                f"{SAGEMAKER_ARN}:{arn_type}/{job_name}-r{jobs.MAX_JOB_LAUNCHES - 1}",
            ]
            calls = [
                (f"sagemaker:{verb}{kind}", arn) for arn in arns for verb in ("Create", "Describe", "Stop")
            ]
            calls += [("sagemaker:AddTags", arn) for arn in arns]
            trial = run["names"]["trial"]
            calls += [
                ("sagemaker:AssociateTrialComponent", f"{SAGEMAKER_ARN}:experiment-trial/{trial}"),
                (
                    "sagemaker:AssociateTrialComponent",
                    f"{SAGEMAKER_ARN}:experiment-trial-component/{job_name}",
                ),
            ]
        elif (service, action) == ("s3", "getObject"):
            key = _path(run, parameters["Key.$"])
            assert key == f"runs/{run['run_id']}/evaluation/{jobs.EVALUATION_FILE}"
            calls = [("s3:GetObject", f"arn:{PARTITION}:s3:::{parameters['Bucket']}/{key}")]
        elif (service, action) == ("sns", "publish"):
            calls = [("sns:Publish", parameters["TopicArn"])]
        else:
            raise AssertionError(f"{name}: no IAM mapping for {resource}; add it to this test")
        if pattern == "sync":
            rule = SYNC_RULES[action]
            calls += [
                (f"events:{verb}", f"{EVENTS_RULE_ARN}/{rule}")
                for verb in ("PutTargets", "PutRule", "DescribeRule")
            ]
        needed[name] = calls
    return needed


def test_every_task_call_is_allowed(synthesized, statements, run):
    needed = required_calls(synthesized.asl, run)
    assert {"Prepare", "FindImage", "BuildImage", "CreateExperiment", "CreateTrial", "CreateModel"} <= set(
        needed
    )
    assert {"ReadEvaluation", "NotifySuccess", "NotifyFailure", "Training", "Transform"} <= set(needed)
    missing = [
        (state, action, arn)
        for state, calls in needed.items()
        for action, arn in calls
        if not _allowed(statements, action, arn)
    ]
    assert missing == []


def test_another_runs_or_pipelines_resources_are_not_allowed(synthesized, statements, run):
    # The wildcards stay inside this pipeline's names and this evaluation file.
    other_job = run["names"]["training"].replace(run["names"]["training"].split("-")[0], "other", 1)
    assert not _allowed(
        statements, "sagemaker:CreateTrainingJob", f"{SAGEMAKER_ARN}:training-job/{other_job}"
    )
    bucket = synthesized.asl["States"]["ReadEvaluation"]["Parameters"]["Bucket"]
    assert not _allowed(statements, "s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/runs/x/model.tar.gz")


def test_sagemaker_role_is_passed_only_to_sagemaker(statements, run):
    role_arn = run["requests"]["training"]["RoleArn"]
    condition = {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert _allowed(statements, "iam:PassRole", role_arn, condition)
    passes = [s for s in statements if "iam:PassRole" in _as_list(s["Action"])]
    assert all(s.get("Condition") == condition for s in passes)


def test_stack_key_use_including_what_sagemaker_jobs_need(statements, run):
    key_arn = run["requests"]["training"]["ResourceConfig"]["VolumeKmsKeyId"]
    # evaluation.json (SSE-KMS) and the encrypted topic
    for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"):
        assert _allowed(statements, action, key_arn), action
    # The jobs attach the key to their volumes: a grant, for AWS resources only.
    grant = {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert _allowed(statements, "kms:CreateGrant", key_arn, grant)
    grants = [s for s in statements if "kms:CreateGrant" in _as_list(s["Action"])]
    assert all(s.get("Condition") == grant for s in grants)


def test_no_statement_allows_more_than_the_listed_actions(statements):
    granted = {action for s in statements for action in _as_list(s["Action"])}
    assert granted <= ALLOWED_ACTIONS, granted - ALLOWED_ACTIONS
    assert not any("*" in action for action in granted)
    assert all(s["Effect"] == "Allow" for s in statements)
    # Only delivery and tracing actions, which take no resource, get '*'.
    for statement in statements:
        if "*" in _as_list(statement["Resource"]):
            assert all(a.startswith(("logs:", "xray:")) for a in _as_list(statement["Action"])), statement


# --------------------------------------------------------------------------- stopped runs


def test_timed_out_and_aborted_runs_are_notified(synthesized):
    template = synthesized.template
    (machine_id,) = resources_of_type(template, "AWS::StepFunctions::StateMachine")
    (topic_id,) = resources_of_type(template, "AWS::SNS::Topic")
    (rule,) = resources_of_type(template, "AWS::Events::Rule").values()
    props = rule["Properties"]
    assert props["State"] == "ENABLED"
    assert props["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"stateMachineArn": [{"Ref": machine_id}], "status": ["TIMED_OUT", "ABORTED"]},
    }
    (target,) = props["Targets"]
    assert target["Arn"] == {"Ref": topic_id}
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {
        "detail-name": "$.detail.name",
        "detail-status": "$.detail.status",
        "detail-stateMachineArn": "$.detail.stateMachineArn",
        "detail-executionArn": "$.detail.executionArn",
    }
    # What a subscriber reads for a sample event.
    message = json.loads(transformer["InputTemplate"])
    for placeholder, value in {
        "detail-name": "run-1",
        "detail-status": "TIMED_OUT",
        "detail-stateMachineArn": "arn:sm",
        "detail-executionArn": "arn:ex",
    }.items():
        message = message.replace(f"<{placeholder}>", value)
    assert message.startswith(
        "ML pipeline run run-1 ended TIMED_OUT without finishing (state machine arn:sm, "
    )
    # EventBridge may publish to the topic ...
    (topic_policy,) = resources_of_type(template, "AWS::SNS::TopicPolicy").values()
    publishers = [
        s
        for s in topic_policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and s.get("Principal") == {"Service": "events.amazonaws.com"}
    ]
    (rule_id,) = resources_of_type(template, "AWS::Events::Rule")
    assert [{k: v for k, v in s.items() if k != "Sid"} for s in publishers] == [
        {
            "Action": "sns:Publish",
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}},
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Resource": {"Ref": topic_id},
        }
    ]


def test_eventbridge_may_use_the_topic_key(synthesized):
    template = synthesized.template
    (topic,) = resources_of_type(template, "AWS::SNS::Topic").values()
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key_policy = template["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]
    (statement,) = [s for s in key_policy if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert statement["Effect"] == "Allow"
    assert sorted(_as_list(statement["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]


def test_state_machine_depends_only_on_its_role_policy(synthesized):
    # The RoleArn reference already orders it after the role (cfn-lint W3005 otherwise).
    template = synthesized.template
    (machine,) = resources_of_type(template, "AWS::StepFunctions::StateMachine").values()
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    (depends_on,) = machine["DependsOn"]
    assert template["Resources"][depends_on]["Type"] == "AWS::IAM::Policy"
    assert {"Ref": role_id} in template["Resources"][depends_on]["Properties"]["Roles"]


def test_execution_timeout_outlasts_every_allowed_job_time(synthesized):
    # MAX_JOB_SECONDS is ml.pipeline_input's upper bound of both job limits.
    settings = jobs.DeploySettings(
        name_prefix="p",
        role_arn="r",
        image_uri="i",
        data_bucket="data-bucket",
        artifact_bucket="artifact-bucket",
    )
    limit = pipeline_module.MAX_JOB_SECONDS
    longest = {"max_runtime_seconds": limit, "max_wait_seconds": limit, "spot_training": True}
    pipeline_input.plan_run(longest, "longest", settings)
    for field in ("max_runtime_seconds", "max_wait_seconds"):
        with pytest.raises(pipeline_input.InputError):
            pipeline_input.plan_run({**longest, field: limit + 1}, "too-long", settings)
    (machine,) = resources_of_type(synthesized.template, "AWS::StepFunctions::StateMachine").values()
    definition = synthesized.asl
    every_launch = 4 * (jobs.MAX_JOB_LAUNCHES * limit + sum(jobs.RELAUNCH_WAIT_SECONDS))
    assert definition["TimeoutSeconds"] > every_launch
    assert definition["TimeoutSeconds"] == pipeline_module.DEFAULT_TIMEOUT.to_seconds()
    assert definition["TimeoutSeconds"] <= 365 * 24 * 3600  # Step Functions' limit for a standard run
    assert machine["Type"] == "AWS::StepFunctions::StateMachine"
