"""The pipeline state machine: prepare, ensure the image, lineage, the SageMaker jobs, the quality gate.

The SageMaker requests are not spelled out here: the Prepare Lambda (`ml.pipeline_input.prepare`)
computes every request of the run from `ml.jobs`, and each SageMaker task passes its request on
key by key (`ml.jobs.state_machine_parameters`). So the state machine, the local runner and the
tests all run the same job definitions.

Flow (docs/running.md describes it for operators)::

    Prepare -> [rebuild_image?] -> FindImage --(Ecr.ImageNotFoundException)--> BuildImage
            -> CreateExperiment -> CreateTrial -> Preprocessing -> Training -> CreateModel
            -> Transform -> Evaluation -> ReadEvaluation -> QualityGate -> NotifySuccess

A job SageMaker accepted and then failed for capacity or an internal error (FailureReason
matching `ml.jobs.RELAUNCH_FAILURE_PATTERNS`) is relaunched under `<name>-r<attempt>` after a
wait, up to `ml.jobs.MAX_JOB_LAUNCHES` launches (`_relaunch`); the run state keeps the current
launch of each job at `$.run.attempts.<kind>`.

Any other failure is caught, turned into a readable message (SageMaker's FailureReason, the Prepare
step's validation message, or the quality-gate verdict), published to the SNS topic, and ends in
the `PipelineFailed` Fail state with the same error and message. A run Step Functions itself
stops (TIMED_OUT, ABORTED) runs no Catch: an EventBridge rule publishes it to the same topic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aws_cdk import Annotations, Aws, CfnResource, Duration, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from cdk_nag import RegexAppliesTo
from constructs import Construct

from infra.config import PipelineSettings
from infra.image_build import ContainerImageBuild
from infra.nag import suppress
from infra.policies import encrypted_log_group, grant_key_use, unique_log_group_name
from infra.prepare_function import PrepareFunction
from infra.sagemaker_role import SageMakerExecutionRole
from infra.storage import PipelineStorage
from ml import jobs, pipeline_input

REQUESTS_PATH: Final[str] = "$.run.requests"
# `ml.pipeline_input.prepare` writes the first launch of each relaunchable job here.
ATTEMPTS_PATH: Final[str] = "$.run.attempts"
# Request fields whose value is only known while the execution runs: a relaunched training job
# writes its model under its own name, so the model takes the artefact the Training task
# reported (its ResultSelector keeps it at $.training.model_artifact), not the one Prepare derived
# from the first training job's name. (Job names are overridden per relaunchable kind.)
PARAMETER_OVERRIDES: Final[dict[str, dict[str, str]]] = {
    "model": {"PrimaryContainer.ModelDataUrl": "$.training.model_artifact"},
}
# Upper bound of `max_runtime_seconds` and `max_wait_seconds` in ml.pipeline_input (5 days): no
# SageMaker job of a run may take longer (spot training's MaxWaitTimeInSeconds includes its run time).
MAX_JOB_SECONDS: Final[int] = 432_000
# Jobs of a run bounded by those limits: preprocessing, training, transform, evaluation.
_BOUNDED_JOBS: Final[int] = 4
# Image build, lineage, API retries and notifications, generously.
_OTHER_STEPS_SECONDS: Final[int] = 24 * 3600
# The execution timeout is a backstop, never the limit a valid run hits first: every job may use
# its whole allowed time on each of its launches, with the relaunch waits in between
# (docs/running.md, "How long a run may take").
DEFAULT_TIMEOUT: Final[Duration] = Duration.seconds(
    _BOUNDED_JOBS * (jobs.MAX_JOB_LAUNCHES * MAX_JOB_SECONDS + sum(jobs.RELAUNCH_WAIT_SECONDS))
    + _OTHER_STEPS_SECONDS
)


@dataclass(frozen=True)
class SageMakerStep:
    """One SageMaker task of the pipeline: the `ml.jobs` kind, the API and how to read its result."""

    kind: str
    state_name: str
    action: str  # optimised integration action, e.g. createTrainingJob
    sync: bool
    arn_type: str  # SageMaker ARN resource type of what the action creates
    result: Mapping[str, str]


SAGEMAKER_STEPS: Final[tuple[SageMakerStep, ...]] = (
    SageMakerStep(
        "preprocessing",
        "Preprocessing",
        "createProcessingJob",
        True,
        "processing-job",
        {"job_name.$": "$.ProcessingJobName", "status.$": "$.ProcessingJobStatus"},
    ),
    SageMakerStep(
        "training",
        "Training",
        "createTrainingJob",
        True,
        "training-job",
        {
            "job_name.$": "$.TrainingJobName",
            "status.$": "$.TrainingJobStatus",
            "model_artifact.$": "$.ModelArtifacts.S3ModelArtifacts",
        },
    ),
    SageMakerStep("model", "CreateModel", "createModel", False, "model", {"model_arn.$": "$.ModelArn"}),
    SageMakerStep(
        "transform",
        "Transform",
        "createTransformJob",
        True,
        "transform-job",
        {"job_name.$": "$.TransformJobName", "status.$": "$.TransformJobStatus"},
    ),
    SageMakerStep(
        "evaluation",
        "Evaluation",
        "createProcessingJob",
        True,
        "processing-job",
        {"job_name.$": "$.ProcessingJobName", "status.$": "$.ProcessingJobStatus"},
    ),
)

# The actions each SageMaker resource type needs for its integration (.sync polls Describe* and
# stops the job when the execution is stopped; requests carry Tags, hence AddTags/ListTags).
_SAGEMAKER_ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    "processing-job": ("CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob"),
    "training-job": ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob"),
    "transform-job": ("CreateTransformJob", "DescribeTransformJob", "StopTransformJob"),
    "model": ("CreateModel",),
}
# EventBridge rules Step Functions manages for `.sync` SageMaker tasks.
_SYNC_RULES: Final[dict[str, str]] = {
    "processing-job": "StepFunctionsGetEventsForSageMakerProcessingJobsRule",
    "training-job": "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
    "transform-job": "StepFunctionsGetEventsForSageMakerTransformJobsRule",
}

# Errors of the SageMaker API worth waiting out: throttling and internal errors arrive as
# SageMaker.AmazonSageMakerException, account capacity limits as ResourceLimitExceeded.
THROTTLING_ERRORS: Final[tuple[str, ...]] = ("SageMaker.AmazonSageMakerException", "ThrottlingException")
CAPACITY_ERRORS: Final[tuple[str, ...]] = ("SageMaker.ResourceLimitExceededException",)
# Throttling and internal errors of the other tasks' integrations. aws-sdk integrations name an
# error `<Service>.<ErrorCode>` with an `Exception` suffix added when the code lacks one (Step
# Functions developer guide, "AWS SDK service integrations"); the optimised CodeBuild and SNS
# integrations report SDK exception names. Client errors (validation, not found, access denied)
# and States.Timeout are left out: retrying them cannot help.
TRANSIENT_ERRORS: Final[tuple[str, ...]] = (
    # lambda:invoke (Prepare): throttling, which CDK's retry_on_service_exceptions leaves out
    "Lambda.TooManyRequestsException",
    # aws-sdk:sagemaker (CreateExperiment, CreateTrial)
    "SageMaker.ThrottlingException",
    "SageMaker.InternalFailureException",
    "SageMaker.ServiceUnavailableException",
    # aws-sdk:ecr (FindImage)
    "Ecr.ThrottlingException",
    "Ecr.ServerException",
    # codebuild:startBuild.sync (BuildImage): unmodelled errors such as throttling
    "CodeBuild.AWSCodeBuildException",
    # aws-sdk:s3 (ReadEvaluation)
    "S3.SlowDownException",
    "S3.InternalErrorException",
    "S3.ServiceUnavailableException",
    # sns:publish (NotifySuccess, NotifyFailure)
    "SNS.ThrottledException",
    "SNS.KMSThrottlingException",
    "SNS.InternalErrorException",
    "Sns.ThrottledException",
    "Sns.KmsThrottlingException",
    "Sns.InternalErrorException",
)
# Causes of a throttled SageMaker call reported under the generic SageMaker.SageMakerException.
THROTTLED_CAUSES: Final[tuple[str, ...]] = ("*Rate exceeded*", "*hrottl*")
# How the SageMaker tasks wait out throttling and how every other task waits out TRANSIENT_ERRORS.
RETRY_INTERVAL: Final[Duration] = Duration.seconds(10)
RETRY_BACKOFF_RATE: Final[float] = 2
RETRY_MAX_ATTEMPTS: Final[int] = 5
RETRY_MAX_DELAY: Final[Duration] = Duration.minutes(5)
# Executions Step Functions ends without running any Catch: only EventBridge sees them end.
STOPPED_STATUSES: Final[tuple[str, ...]] = ("TIMED_OUT", "ABORTED")
IMAGE_NOT_FOUND: Final[str] = "Ecr.ImageNotFoundException"


def deploy_defaults(settings: PipelineSettings) -> dict[str, Any]:
    """The execution-input defaults a deployer chose in CDK context (those runs can override)."""
    candidates = {
        "processing_instance_type": settings.processing_instance_type,
        "training_instance_type": settings.training_instance_type,
        "training_instance_count": settings.training_instance_count,
        "transform_instance_type": settings.transform_instance_type,
        "transform_instance_count": settings.transform_instance_count,
        "max_runtime_seconds": settings.max_runtime_seconds,
        "quality_metric": settings.quality_metric,
        "quality_threshold": settings.quality_threshold,
    }
    return {name: value for name, value in candidates.items() if name in pipeline_input.INPUT_FIELDS}


class PipelineStateMachine(Construct):
    """A Step Functions standard workflow running the whole pipeline for one execution input.

    Inputs (keyword-only): ``storage`` (buckets and key), ``image_build`` (repository, CodeBuild
    project, image tag and URI), ``sagemaker_role`` (the jobs' execution role), ``settings``
    (deploy-time defaults, names, retention), ``topic`` (notifications; default: a topic
    encrypted with the storage key, with ``settings.notification_email`` subscribed when set),
    ``timeout`` of one execution (default ``DEFAULT_TIMEOUT``: long enough for every job to use
    its largest allowed run time on each launch).

    Attributes: ``state_machine``, ``topic``, ``log_group`` (execution history, all events,
    encrypted with the storage key), ``prepare_function`` (the Prepare Lambda),
    ``deploy_settings`` (what the Prepare Lambda receives), ``stopped_rule`` (EventBridge rule
    notifying the topic of timed-out and aborted executions).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: PipelineStorage,
        image_build: ContainerImageBuild,
        sagemaker_role: SageMakerExecutionRole,
        settings: PipelineSettings,
        topic: sns.ITopic | None = None,
        timeout: Duration = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._storage = storage
        self._image_build = image_build
        key = storage.key
        prefix = settings.name_prefix

        self.deploy_settings = jobs.DeploySettings(
            name_prefix=prefix,
            role_arn=sagemaker_role.role_arn,
            image_uri=image_build.image_uri,
            data_bucket=storage.data_bucket.bucket_name,
            artifact_bucket=storage.artifact_bucket.bucket_name,
            kms_key_arn=key.key_arn,
            processing_volume_gb=settings.processing_volume_size_gb,
            training_volume_gb=settings.training_volume_size_gb,
            defaults=deploy_defaults(settings),
        )
        # A sample plan (plain values instead of the deploy-time tokens) fixes the request keys the
        # SageMaker tasks pass on: they are the same for every input (ml/jobs.py holds its builders
        # to that). Planning it also checks the deployer's defaults at synth time.
        self._sample_settings = jobs.DeploySettings(
            name_prefix=prefix,
            role_arn="arn:aws:iam::123456789012:role/sample",
            image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/sample:tag",
            data_bucket="sample-data-bucket",
            artifact_bucket="sample-artifact-bucket",
            kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/sample",
            defaults=self.deploy_settings.defaults,
        )
        self._sample_plan = pipeline_input.plan_run({}, "sample-run", self._sample_settings)

        self.prepare_function = PrepareFunction(
            self,
            "Prepare",
            settings=self.deploy_settings.to_json_dict(),
            key=key,
            log_retention=settings.log_retention,
            removal_policy=settings.cdk_removal_policy,
        )

        if topic is None:
            created = sns.Topic(
                self,
                "Notifications",
                display_name="ML pipeline notifications",
                master_key=key,
                enforce_ssl=True,
            )
            if settings.notification_email:
                created.add_subscription(subscriptions.EmailSubscription(settings.notification_email))
            topic = created
        self.topic: sns.ITopic = topic

        self.log_group = encrypted_log_group(
            self,
            "Logs",
            log_group_name=unique_log_group_name(self, "/aws/vendedlogs/states/"),
            key=key,
            retention=settings.log_retention,
            removal_policy=settings.cdk_removal_policy,
        )

        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="XGBoost batch-transform pipeline: preprocessing, training, batch transform, evaluation",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition()),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        self._drop_redundant_role_dependency()
        self._grant(sagemaker_role, key)
        self.stopped_rule = self._notify_stopped_runs()

    def _drop_redundant_role_dependency(self) -> None:
        """Keep only the DependsOn on the role's policy (cfn-lint W3005).

        The state machine references its role's ARN, which already orders it after the role; the
        explicit DependsOn CDK adds on the role is redundant. The one on the role's default policy
        is not: the first execution must not start before the policy exists.
        """
        machine = self.state_machine.node.default_child
        policy = self.state_machine.role.node.try_find_child("DefaultPolicy")
        if not isinstance(machine, CfnResource) or policy is None:
            return
        policy_resource = policy.node.default_child
        if not isinstance(policy_resource, CfnResource):
            return
        machine.add_override("DependsOn", [Stack.of(self).get_logical_id(policy_resource)])

    def _notify_stopped_runs(self) -> events.Rule:
        """A run that times out or is aborted never reaches a Catch: EventBridge reports it instead."""
        rule = events.Rule(
            self,
            "StoppedRunRule",
            description="Notify the pipeline topic of executions that timed out or were aborted",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "stateMachineArn": [self.state_machine.state_machine_arn],
                    "status": list(STOPPED_STATUSES),
                },
            ),
        )
        name = events.EventField.from_path("$.detail.name")
        status = events.EventField.from_path("$.detail.status")
        machine_arn = events.EventField.from_path("$.detail.stateMachineArn")
        execution_arn = events.EventField.from_path("$.detail.executionArn")
        # The target gets the topic by ARN only: given the topic itself, CDK would add a key policy
        # statement with the wildcard action kms:GenerateDataKey* and an unconditioned topic policy
        # statement. Both are written out below instead, explicit and limited to this rule.
        target_topic = sns.Topic.from_topic_arn(self, "StoppedRunTopic", self.topic.topic_arn)
        rule.add_target(
            targets.SnsTopic(
                target_topic,
                message=events.RuleTargetInput.from_text(
                    f"ML pipeline run {name} ended {status} without finishing (state machine "
                    f"{machine_arn}, execution {execution_arn}). TIMED_OUT: the execution ran longer "
                    "than the state machine timeout; ABORTED: someone stopped it. Step Functions stops "
                    "the running SageMaker job or image build with it."
                ),
            )
        )
        published = self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.rule_arn}},
            )
        ).statement_added
        if not published:
            Annotations.of(self).add_warning_v2(
                "ml-pipeline:imported-topic",
                "The notification topic is imported: its owner must let events.amazonaws.com publish "
                f"to it (sns:Publish, aws:SourceArn = the {rule.node.path} rule), or timed-out and "
                "aborted runs are not notified.",
            )
        # SNS encrypts what EventBridge publishes with the topic's key, on EventBridge's behalf.
        topic_key = getattr(self.topic, "master_key", None)
        if topic_key is not None:
            allowed = topic_key.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],  # in a key policy "*" means this key
                )
            ).statement_added
            if not allowed:
                Annotations.of(self).add_warning_v2(
                    "ml-pipeline:imported-topic-key",
                    "The notification topic's KMS key is imported: its owner must allow "
                    "events.amazonaws.com kms:Decrypt and kms:GenerateDataKey in the key policy, "
                    "or timed-out and aborted runs are not notified.",
                )
        return rule

    def _retry_transient(self, state: sfn.TaskStateBase | sfn.CustomState, errors: tuple[str, ...]) -> None:
        """The one retry policy for throttling and internal errors: exponential backoff, full jitter."""
        state.add_retry(
            errors=list(errors),
            interval=RETRY_INTERVAL,
            backoff_rate=RETRY_BACKOFF_RATE,
            max_attempts=RETRY_MAX_ATTEMPTS,
            max_delay=RETRY_MAX_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )

    # ------------------------------------------------------------------------- definition

    def _definition(self) -> sfn.IChainable:
        self._failure_entry = self._failure_chain()

        prepare = tasks.LambdaInvoke(
            self,
            "PrepareStep",
            state_name="Prepare",
            comment="Validate the input, merge it with the defaults, derive run id, job names and requests",
            lambda_function=self.prepare_function.function,
            payload=sfn.TaskInput.from_object(
                {"input": sfn.JsonPath.entire_payload, "execution_name": sfn.JsonPath.execution_name}
            ),
            retry_on_service_exceptions=True,
            result_selector={"run.$": "$.Payload"},
            result_path="$",
        )
        self._retry_transient(prepare, TRANSIENT_ERRORS)
        # The raw input may not even be an object, so the error replaces the state here.
        prepare.add_catch(self._failed("Prepare", "$$.Execution.Name", error_path="$"), result_path="$")

        lineage = self._lineage()
        image = self._ensure_image(lineage)

        prepare.next(image)
        previous: sfn.INextable = lineage.end
        for step in SAGEMAKER_STEPS:
            state = self._sagemaker_task(step)
            previous.next(state)
            previous = state
        previous.next(self._quality_gate())
        return prepare

    def _failed(self, step: str, job_name: str, *, error_path: str = "$.error") -> sfn.Pass:
        """Record which step failed, on which job, with which error; then explain and notify.

        `job_name` is a JSONPath into the state when it starts with '$', else the name itself.
        """
        failure: dict[str, Any] = {"step": step, "error.$": error_path}
        if job_name.startswith(("$.", "$$.")):
            failure["job_name.$"] = job_name
        else:
            failure["job_name"] = job_name
        replace = error_path == "$"
        state = sfn.Pass(
            self,
            f"{step}Failed",
            comment=f"{step} failed: keep the step, job name and error for the notification",
            parameters={"failure": failure} if replace else failure,
            result_path="$" if replace else "$.failure",
        )
        state.next(self._failure_entry)
        return state

    def _failure_chain(self) -> sfn.IChainable:
        """$.failure {step, job_name, error{Error, Cause}} -> readable reason -> SNS -> Fail."""
        fail = sfn.Fail(
            self,
            "PipelineFailed",
            comment="Error and cause of the failed step, as published to the topic",
            error_path="$.failure.name",
            cause_path="$.notification.message",
        )
        notify = tasks.SnsPublish(
            self,
            "NotifyFailure",
            topic=self.topic,
            subject=sfn.JsonPath.string_at("$.notification.subject"),
            message=sfn.TaskInput.from_json_path_at("$.notification.message"),
            result_path=sfn.JsonPath.DISCARD,
        )
        self._retry_transient(notify, TRANSIENT_ERRORS)
        # A notification that cannot be sent must not hide the pipeline's own error.
        notify.add_catch(fail, result_path="$.notification_error")
        notify.next(fail)
        summarise = sfn.Pass(
            self,
            "SummariseFailure",
            parameters={
                # SNS subjects are limited to 100 characters: the run id goes in the message only.
                "subject.$": "States.Format('ML pipeline failed at {}', $.failure.step)",
                "message.$": (
                    "States.Format('ML pipeline run {} failed at step {} (job {}). {}: {} (execution {})', "
                    "$$.Execution.Name, $.failure.step, $.failure.job_name, $.failure.error.Error, "
                    "$.failure.reason, $$.Execution.Id)"
                ),
            },
            result_path="$.notification",
        )
        summarise.next(notify)

        # The execution's error: the step's own error name (InputError, QualityGateFailed), or
        # '<Step>Failed' where Step Functions reports a generic States.* error or a service error
        # such as SageMaker.AmazonSageMakerException (the message keeps the original name).
        generic_name = sfn.Pass(
            self,
            "NameAfterStep",
            parameters={"name.$": "States.Format('{}Failed', $.failure.step)"},
            result_path="$.failure.naming",
        )
        lift_name = sfn.Pass(
            self, "KeepStepName", input_path="$.failure.naming.name", result_path="$.failure.name"
        )
        generic_name.next(lift_name)
        lift_name.next(summarise)
        own_name = sfn.Pass(
            self, "KeepErrorName", input_path="$.failure.error.Error", result_path="$.failure.name"
        )
        own_name.next(summarise)
        name_error = (
            sfn.Choice(self, "NameError")
            .when(sfn.Condition.string_matches("$.failure.error.Error", "*.*"), generic_name)
            .otherwise(own_name)
        )

        def reason_from(state_id: str, path: str, comment: str) -> sfn.Pass:
            state = sfn.Pass(self, state_id, comment=comment, input_path=path, result_path="$.failure.reason")
            state.next(name_error)
            return state

        from_job = reason_from(
            "ReasonFromJob", "$.failure.details.FailureReason", "A failed SageMaker job: its FailureReason"
        )
        from_function = reason_from(
            "ReasonFromFunction", "$.failure.details.errorMessage", "A Lambda error: its message"
        )
        from_cause = reason_from("ReasonFromCause", "$.failure.error.Cause", "The cause is already text")
        from_error = reason_from(
            "ReasonFromError", "$.failure.error.Error", "No cause: the error name says it"
        )

        # A failed image build reports the whole build description: name the build and its status.
        describe_build = sfn.Pass(
            self,
            "DescribeFailedBuild",
            parameters={
                "text.$": (
                    "States.Format('CodeBuild build {} ended {}; its log is in CloudWatch Logs', "
                    "$.failure.details.Build.Id, $.failure.details.Build.BuildStatus)"
                )
            },
            result_path="$.failure.build",
        )
        describe_build.next(reason_from("ReasonFromBuild", "$.failure.build.text", "A failed image build"))
        pick = (
            sfn.Choice(self, "PickReason")
            .when(sfn.Condition.is_present("$.failure.details.FailureReason"), from_job)
            .when(sfn.Condition.is_present("$.failure.details.errorMessage"), from_function)
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.failure.details.Build.Id"),
                    sfn.Condition.is_present("$.failure.details.Build.BuildStatus"),
                ),
                describe_build,
            )
            .otherwise(from_cause)
        )
        parse = sfn.Pass(
            self,
            "ParseCause",
            comment="A failed .sync job reports its Describe* output, a Lambda its error payload, as JSON",
            parameters={"details.$": "States.StringToJson($.failure.error.Cause)"},
            result_path="$.failure.parsed",
        )
        # Parse into a scratch field, then lift it: PickReason tests fields of the parsed object.
        lift = sfn.Pass(
            self, "KeepParsedCause", input_path="$.failure.parsed.details", result_path="$.failure.details"
        )
        parse.next(lift)
        lift.next(pick)
        has_cause = sfn.Condition.and_(
            sfn.Condition.is_present("$.failure.error.Cause"),
            sfn.Condition.is_string("$.failure.error.Cause"),
        )
        return (
            sfn.Choice(self, "ExplainFailure", comment="Find the human-readable reason of the failure")
            .when(
                sfn.Condition.and_(has_cause, sfn.Condition.string_matches("$.failure.error.Cause", "{*")),
                parse,
            )
            .when(has_cause, from_cause)
            .otherwise(from_error)
        )

    def _ensure_image(self, lineage: _Lineage) -> sfn.IChainable:
        build = self._image_build
        build_image = tasks.CodeBuildStartBuild(
            self,
            "BuildImageStep",
            state_name="BuildImage",
            comment="Build the container image from the deployed build context and push it to ECR",
            project=build.project,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            result_selector={"build_id.$": "$.Build.Id", "status.$": "$.Build.BuildStatus"},
            result_path="$.image_build",
            # container/buildspec.yml replaces the existing tag when this is "true".
            environment_variables_override={
                "FORCE_REBUILD": codebuild.BuildEnvironmentVariable(
                    type=codebuild.BuildEnvironmentVariableType.PLAINTEXT,
                    value=sfn.JsonPath.format("{}", sfn.JsonPath.string_at("$.run.config.rebuild_image")),
                )
            },
        )
        self._retry_transient(build_image, TRANSIENT_ERRORS)
        build_image.add_catch(self._failed("BuildImage", build.project.project_name), result_path="$.error")
        build_image.next(lineage.start)

        find_image = tasks.CallAwsService(
            self,
            "FindImageStep",
            state_name="FindImage",
            comment="Is the image of this deployment's tag in ECR already?",
            service="ecr",
            action="describeImages",
            iam_action="ecr:DescribeImages",
            iam_resources=[build.repository.repository_arn],
            parameters={
                "RepositoryName": build.repository.repository_name,
                "ImageIds": [{"ImageTag": build.image_tag}],
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        self._retry_transient(find_image, TRANSIENT_ERRORS)
        find_image.add_catch(build_image, errors=[IMAGE_NOT_FOUND], result_path=sfn.JsonPath.DISCARD)
        find_image.add_catch(self._failed("FindImage", build.image_uri), result_path="$.error")
        find_image.next(lineage.start)

        return (
            sfn.Choice(self, "RebuildRequested", comment="rebuild_image in the input forces a build")
            .when(sfn.Condition.boolean_equals("$.run.config.rebuild_image", True), build_image)
            .otherwise(find_image)
        )

    def _lineage(self) -> _Lineage:
        """Experiment (one per pipeline) and trial (one per run); both may exist already."""
        stack = Stack.of(self)

        def create(
            state_id: str, action: str, arn_type: str, name_key: str, parameters: dict[str, Any]
        ) -> tuple[tasks.CallAwsService, sfn.Choice]:
            task = tasks.CallAwsService(
                self,
                f"{state_id}Step",
                state_name=state_id,
                service="sagemaker",
                action=action,
                iam_action=f"sagemaker:{action[0].upper()}{action[1:]}",
                iam_resources=[
                    stack.format_arn(
                        service="sagemaker",
                        resource=arn_type,
                        resource_name=f"{self._settings.name_prefix}-{name_key}*",
                    )
                ],
                parameters=parameters,
                result_path=sfn.JsonPath.DISCARD,
            )
            self._retry_transient(task, TRANSIENT_ERRORS)
            exists = sfn.Choice(self, f"{state_id}Exists", comment="SageMaker refuses a name that exists")
            task.add_catch(exists, result_path="$.error")
            self._retry_throttled_lineage(state_id, task, exists)
            exists.otherwise(self._failed(state_id, f"$.run.names.{name_key}"))
            return task, exists

        experiment, experiment_exists = create(
            "CreateExperiment",
            "createExperiment",
            "experiment",
            "experiment",
            {
                "ExperimentName.$": "$.run.names.experiment",
                "Description": "Runs of the XGBoost batch-transform pipeline",
            },
        )
        trial, trial_exists = create(
            "CreateTrial",
            "createTrial",
            "experiment-trial",
            "trial",
            {"TrialName.$": "$.run.names.trial", "ExperimentName.$": "$.run.names.experiment"},
        )
        already = sfn.Condition.string_matches("$.error.Cause", "*already exists*")
        experiment_exists.when(already, trial)
        experiment.next(trial)
        # The chain continues after CreateTrial, or after TrialExists when it already existed.
        join = sfn.Pass(self, "LineageReady", comment="Experiment and trial exist")
        trial_exists.when(already, join)
        trial.next(join)
        return _Lineage(start=experiment, end=join)

    def _retry_throttled_lineage(self, state_id: str, task: sfn.IChainable, caught: sfn.Choice) -> None:
        """Throttling of an aws-sdk SageMaker call that arrives under the generic error name.

        SageMaker does not model ThrottlingException, so the aws-sdk integration may report it as
        SageMaker.SageMakerException, the same name as "already exists", which every run but the
        first gets from CreateExperiment. A Retry on that name would delay every run; here the
        Catch's Cause tells them apart and the same policy is applied by hand: up to
        RETRY_MAX_ATTEMPTS waits, doubling from RETRY_INTERVAL, full jitter (States.MathRandom).
        """
        record = f"$.lineage_retry.{state_id}"
        caps = [
            min(RETRY_INTERVAL.to_seconds() * RETRY_BACKOFF_RATE**n, RETRY_MAX_DELAY.to_seconds())
            for n in range(RETRY_MAX_ATTEMPTS)
        ]
        cap_list = ", ".join(str(int(cap)) for cap in caps)
        wait = sfn.Wait(
            self,
            f"{state_id}WaitThrottled",
            comment="Wait out SageMaker's throttling before calling again",
            time=sfn.WaitTime.seconds_path(f"{record}.wait_seconds"),
        )
        wait.next(task)

        throttled = sfn.Condition.and_(
            sfn.Condition.is_present("$.error.Cause"),
            sfn.Condition.is_string("$.error.Cause"),
            sfn.Condition.or_(*(sfn.Condition.string_matches("$.error.Cause", p) for p in THROTTLED_CAUSES)),
        )
        first = sfn.Pass(
            self,
            f"{state_id}FirstThrottle",
            comment="First throttled call: attempt 1, wait drawn from [0, first cap]",
            parameters={"attempt": 1, "wait_seconds.$": f"States.MathRandom(0, {int(caps[0])})"},
            result_path=record,
        )
        first.next(wait)
        later = sfn.Pass(
            self,
            f"{state_id}NextThrottle",
            comment="Another throttled call: attempt + 1, wait drawn from [0, its cap]",
            parameters={
                "attempt.$": f"States.MathAdd({record}.attempt, 1)",
                "wait_seconds.$": (
                    f"States.MathRandom(0, States.ArrayGetItem(States.Array({cap_list}), {record}.attempt))"
                ),
            },
            result_path=record,
        )
        later.next(wait)
        caught.when(sfn.Condition.and_(throttled, sfn.Condition.is_not_present(record)), first)
        caught.when(
            sfn.Condition.and_(
                throttled, sfn.Condition.number_less_than(f"{record}.attempt", RETRY_MAX_ATTEMPTS)
            ),
            later,
        )

    def _sagemaker_task(self, step: SageMakerStep) -> sfn.CustomState:
        """One task per job kind, from the request the Prepare step computed, with shared Retry/Catch.

        A relaunchable job is named from its current launch record (`$.run.attempts.<kind>.name`)
        and its failures go through `_relaunch` first.
        """
        relaunchable = step.kind in jobs.RELAUNCHABLE_JOBS
        if relaunchable and not step.sync:
            raise ValueError(
                f"{step.state_name}: only a .sync task sees its job fail, so only .sync jobs can be "
                "relaunched; remove its kind from ml.jobs.RELAUNCHABLE_JOBS or make the step .sync"
            )
        overrides = dict(PARAMETER_OVERRIDES.get(step.kind, {}))
        job_name_path = f"$.run.names.{step.kind}"
        if relaunchable:
            job_name_path = f"{ATTEMPTS_PATH}.{step.kind}.name"
            overrides[jobs.JOB_NAME_KEYS[step.kind]] = job_name_path
        parameters = jobs.state_machine_parameters(
            step.kind,
            self._sample_plan,
            self._sample_settings,
            requests_path=REQUESTS_PATH,
            overrides=overrides,
        )
        suffix = ".sync" if step.sync else ""
        state = sfn.CustomState(
            self,
            step.state_name,
            state_json={
                "Type": "Task",
                "Comment": f"SageMaker {step.action} from ml.jobs ({step.kind})",
                "Resource": f"arn:{Aws.PARTITION}:states:::sagemaker:{step.action}{suffix}",
                "Parameters": parameters,
                "ResultSelector": dict(step.result),
                "ResultPath": f"$.{step.kind}",
            },
        )
        self._retry_transient(state, THROTTLING_ERRORS)
        state.add_retry(
            errors=list(CAPACITY_ERRORS),
            interval=Duration.minutes(1),
            backoff_rate=2,
            max_attempts=6,
            max_delay=Duration.minutes(30),
            jitter_strategy=sfn.JitterType.FULL,
        )
        # The notification names the launch that failed.
        failed = self._failed(step.state_name, job_name_path)
        if relaunchable:
            state.add_catch(
                self._relaunch(step, state, failed), errors=["States.TaskFailed"], result_path="$.error"
            )
        state.add_catch(failed, result_path="$.error")
        return state

    def _relaunch(self, step: SageMakerStep, task: sfn.CustomState, failed: sfn.IChainable) -> sfn.IChainable:
        """States.TaskFailed of a .sync job -> relaunch it under a new name, or fail the run.

        The task failed because its job ended Failed or Stopped; the Cause is the job's Describe*
        output. When its FailureReason is SageMaker's capacity or internal error and launches are
        left, the next launch record (attempt, `<name>-r<attempt>`, wait) replaces the current one,
        the run waits and the task runs again, named from the new record. Anything else goes to
        the failure chain unchanged (`$.error` still holds the task's error).
        """
        if len(jobs.RELAUNCH_WAIT_SECONDS) != jobs.MAX_JOB_LAUNCHES - 1:
            raise ValueError(
                f"ml.jobs.RELAUNCH_WAIT_SECONDS needs one wait per relaunch "
                f"({jobs.MAX_JOB_LAUNCHES - 1}), has {len(jobs.RELAUNCH_WAIT_SECONDS)}"
            )
        name, record = step.state_name, f"{ATTEMPTS_PATH}.{step.kind}"
        wait = sfn.Wait(
            self,
            f"{name}WaitBeforeRelaunch",
            comment="Give SageMaker time to find capacity or recover",
            time=sfn.WaitTime.seconds_path(f"{record}.wait_seconds"),
        )
        wait.next(task)
        next_attempt = f"States.MathAdd({record}.attempt, 1)"
        waits = ", ".join(str(seconds) for seconds in jobs.RELAUNCH_WAIT_SECONDS)
        reason = f"{record}.failed.FailureReason"
        next_launch = sfn.Pass(
            self,
            f"{name}NextLaunch",
            comment="The next launch: attempt + 1, a new job name (the failed one stays taken), its wait",
            parameters={
                "attempt.$": next_attempt,
                "name.$": f"States.Format('{jobs.RELAUNCH_NAME_FORMAT}', $.run.names.{step.kind}, {next_attempt})",
                "wait_seconds.$": f"States.ArrayGetItem(States.Array({waits}), {record}.attempt)",
                "previous_failure.$": reason,
            },
            result_path=record,
        )
        next_launch.next(wait)
        matches = [
            sfn.Condition.string_matches(reason, pattern) for pattern in jobs.RELAUNCH_FAILURE_PATTERNS
        ]
        decide = sfn.Choice(
            self, f"{name}CanRelaunch", comment="SageMaker's capacity or internal error, and launches left?"
        )
        # Rules are tried in order and a comparison on a missing path fails the execution: the
        # presence and type tests come first, as rules of their own (a Stopped job has no reason).
        for missing_or_not_text in _absent_or_not_string(reason):
            decide.when(missing_or_not_text, failed)
        decide.when(
            sfn.Condition.and_(
                matches[0] if len(matches) == 1 else sfn.Condition.or_(*matches),
                sfn.Condition.number_less_than(f"{record}.attempt", jobs.MAX_JOB_LAUNCHES - 1),
            ),
            next_launch,
        ).otherwise(failed)
        # The parsed Describe* output goes into the launch record, which the next launch replaces.
        read = sfn.Pass(
            self,
            f"{name}ReadFailure",
            comment="The failed job's Describe* output, parsed, next to its launch record",
            parameters={
                "attempt.$": f"{record}.attempt",
                "name.$": f"{record}.name",
                "failed.$": "States.StringToJson($.error.Cause)",
            },
            result_path=record,
        )
        read.next(decide)
        job_failed = sfn.Choice(self, f"{name}JobFailed", comment="Is the cause a job description (JSON)?")
        for missing_or_not_text in _absent_or_not_string("$.error.Cause"):
            job_failed.when(missing_or_not_text, failed)
        return job_failed.when(sfn.Condition.string_matches("$.error.Cause", "{*"), read).otherwise(failed)

    def _quality_gate(self) -> sfn.IChainable:
        storage = self._storage
        read = tasks.CallAwsService(
            self,
            "ReadEvaluationStep",
            state_name="ReadEvaluation",
            comment="Load evaluation.json written by the evaluation job",
            service="s3",
            action="getObject",
            iam_action="s3:GetObject",
            iam_resources=[
                storage.artifact_bucket.arn_for_objects(f"runs/*/evaluation/{jobs.EVALUATION_FILE}")
            ],
            parameters={"Bucket": storage.artifact_bucket.bucket_name, "Key.$": "$.run.uris.evaluation_key"},
            result_selector={"metrics.$": "States.StringToJson($.Body)"},
            result_path="$.evaluation",
        )
        self._retry_transient(read, TRANSIENT_ERRORS)
        read.add_catch(self._failed("ReadEvaluation", "$.run.names.evaluation"), result_path="$.error")

        too_low = sfn.Pass(
            self,
            "QualityTooLow",
            parameters={
                "step": "QualityGate",
                "job_name.$": "$.run.names.evaluation",
                "error": {
                    "Error": "QualityGateFailed",
                    "Cause.$": (
                        "States.Format('{} is {}, below the quality threshold {}', "
                        "$.run.config.quality_metric, $.quality_value, $.run.config.quality_threshold)"
                    ),
                },
            },
            result_path="$.failure",
        )
        too_low.next(self._failure_entry)
        missing = sfn.Pass(
            self,
            "QualityMetricMissing",
            parameters={
                "step": "QualityGate",
                "job_name.$": "$.run.names.evaluation",
                "error": {
                    "Error": "QualityMetricMissing",
                    "Cause.$": (
                        "States.Format('evaluation.json has no numeric {}; it has {}', "
                        "$.run.config.quality_metric, States.JsonToString($.evaluation.metrics))"
                    ),
                },
            },
            result_path="$.failure",
        )
        missing.next(self._failure_entry)

        success = self._success()
        gate = (
            sfn.Choice(self, "QualityGate", comment="quality_metric >= quality_threshold?")
            .when(
                sfn.Condition.number_greater_than_equals_json_path(
                    "$.quality_value", "$.run.config.quality_threshold"
                ),
                success,
            )
            .otherwise(too_low)
        )
        # Choice paths are static, so the configured metric is copied to $.quality_value first.
        select = sfn.Choice(
            self, "SelectQualityMetric", comment="Copy the configured metric to $.quality_value"
        )
        for metric in pipeline_input.QUALITY_METRICS:
            path = f"$.evaluation.metrics.{metric}"
            copy = sfn.Pass(self, f"Use{metric.capitalize()}", input_path=path, result_path="$.quality_value")
            copy.next(gate)
            select.when(
                sfn.Condition.and_(
                    sfn.Condition.string_equals("$.run.config.quality_metric", metric),
                    sfn.Condition.is_present(path),
                    sfn.Condition.is_numeric(path),
                ),
                copy,
            )
        select.otherwise(missing)
        read.next(select)
        return read

    def _success(self) -> sfn.IChainable:
        summarise = sfn.Pass(
            self,
            "SummariseSuccess",
            comment="The execution output: run id, metrics, where the results are",
            parameters={
                "run_id.$": "$.run.run_id",
                "evaluation": {
                    "metrics.$": "$.evaluation.metrics",
                    "quality_metric.$": "$.run.config.quality_metric",
                    "quality_value.$": "$.quality_value",
                    "quality_threshold.$": "$.run.config.quality_threshold",
                    "report.$": "$.run.uris.evaluation",
                },
                "model_name.$": "$.run.names.model",
                "model_artifact.$": "$.training.model_artifact",
                "predictions.$": "$.run.uris.transform_output",
                "jobs.$": "$.run.names",
                # The launch that produced each result: a relaunched job has its `-r<k>` name here.
                "launches.$": ATTEMPTS_PATH,
                "message.$": (
                    "States.Format('ML pipeline run {} succeeded: {} = {} (threshold {}). Metrics: {}. "
                    "Model: {}. Report: {}', $.run.run_id, $.run.config.quality_metric, $.quality_value, "
                    "$.run.config.quality_threshold, States.JsonToString($.evaluation.metrics), "
                    "$.run.names.model, $.run.uris.evaluation)"
                ),
            },
        )
        notify = tasks.SnsPublish(
            self,
            "NotifySuccess",
            topic=self.topic,
            subject="ML pipeline run succeeded",
            message=sfn.TaskInput.from_json_path_at("$.message"),
            result_path=sfn.JsonPath.DISCARD,
        )
        self._retry_transient(notify, TRANSIENT_ERRORS)
        # The run itself succeeded; a lost notification is logged in the history, not a failure.
        done = sfn.Succeed(self, "Succeeded")
        notify.add_catch(done, result_path="$.notification_error")
        return summarise.next(notify).next(done)

    # ------------------------------------------------------------------------- permissions

    def _grant(self, sagemaker_role: SageMakerExecutionRole, key: kms.IKey) -> None:
        machine = self.state_machine
        stack = Stack.of(self)
        prefix = self._settings.name_prefix

        def sagemaker_arn(arn_type: str, name: str) -> str:
            return stack.format_arn(service="sagemaker", resource=arn_type, resource_name=name)

        wildcard_resources: list[str] = []
        for arn_type, actions in _SAGEMAKER_ACTIONS.items():
            kinds = [s.kind for s in SAGEMAKER_STEPS if s.arn_type == arn_type]
            names = [f"{prefix}-{jobs.JOB_KINDS[kind]}-*" for kind in kinds]
            wildcard_resources += [f"{arn_type}/{name}" for name in names]
            machine.add_to_role_policy(
                iam.PolicyStatement(
                    actions=[f"sagemaker:{a}" for a in (*actions, "AddTags", "ListTags")],
                    resources=[sagemaker_arn(arn_type, name) for name in names],
                )
            )
        # Jobs created with an ExperimentConfig join the run's trial as trial components.
        trial_names = [
            ("experiment-trial", f"{prefix}-trial-*"),
            ("experiment-trial-component", f"{prefix}-*"),
        ]
        wildcard_resources += [f"{t}/{n}" for t, n in trial_names]
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:AssociateTrialComponent"],
                resources=[sagemaker_arn(t, n) for t, n in trial_names],
            )
        )
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(service="events", resource="rule", resource_name=rule)
                    for rule in _SYNC_RULES.values()
                ],
            )
        )
        sagemaker_role.grant_pass_role(machine)
        # Reading evaluation.json (SSE-KMS) and publishing to the encrypted topic.
        grant_key_use(key, machine, ("kms:Decrypt", "kms:GenerateDataKey"))
        topic_key = getattr(self.topic, "master_key", None)
        if topic_key is not None and topic_key is not key:
            grant_key_use(topic_key, machine, ("kms:Decrypt", "kms:GenerateDataKey"))
        # The job requests name this key (VolumeKmsKeyId, KmsKeyId). SageMaker's API reference asks
        # the execution role for key access but does not say what the caller of Create*Job needs;
        # services that attach a customer key to volumes on the caller's behalf (EBS, Rekognition,
        # Feature Store) check DescribeKey and create a grant as the caller. Both are granted here,
        # the grant only for AWS resources, so a missing permission cannot fail a run at create time.
        grant_key_use(key, machine, ("kms:DescribeKey",))
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant"],
                resources=[key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )

        arn_prefix = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
        job_resources = [r for r in wildcard_resources if not r.startswith("experiment-trial")]
        lineage_resources = [r for r in wildcard_resources if r.startswith("experiment-trial")]
        role = machine.role
        suppress(
            role,
            "AwsSolutions-IAM5",
            f"SageMaker job and model names are generated per run as '{prefix}-<kind>-<run id>' "
            "(relaunches add '-r<k>'); the prefix limits the state machine to this pipeline's jobs.",
            applies_to=[f"Resource::{arn_prefix}{resource}" for resource in job_resources],
            apply_to_children=True,
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            f"The run's trial '{prefix}-trial-<run id>' and the jobs' trial components are named per "
            f"run; the experiment and trial prefixes '{prefix}-experiment'/'{prefix}-trial' keep "
            "CreateExperiment, CreateTrial and AssociateTrialComponent to this pipeline's lineage.",
            applies_to=[
                *(f"Resource::{arn_prefix}{resource}" for resource in lineage_resources),
                f"Resource::{arn_prefix}experiment/{prefix}-experiment*",
                f"Resource::{arn_prefix}experiment-trial/{prefix}-trial*",
            ],
            apply_to_children=True,
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            f"ReadEvaluation reads runs/<run id>/evaluation/{jobs.EVALUATION_FILE} of the run being "
            "executed; the run id is only known at run time, the object name is fixed.",
            applies_to=[
                RegexAppliesTo(
                    regex=f"/^Resource::.+/runs\\/\\*\\/evaluation\\/{re.escape(jobs.EVALUATION_FILE)}$/"
                )
            ],
            apply_to_children=True,
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            "LambdaInvoke grants the Prepare function by ARN and its versions (':*'), so a published "
            "version or alias of the same function can be invoked; no other function is allowed.",
            applies_to=[
                RegexAppliesTo(regex="/^Resource::<[A-Za-z0-9]*PrepareFunction[A-F0-9]{8}\\.Arn>:\\*$/")
            ],
            apply_to_children=True,
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            "X-Ray trace upload (PutTraceSegments, PutTelemetryRecords, GetSampling*) and CloudWatch "
            "Logs vended delivery (logs:*LogDelivery, DescribeResourcePolicies, DescribeLogGroups) "
            "accept only the resource '*'.",
            applies_to=["Resource::*"],
            apply_to_children=True,
        )


def _absent_or_not_string(path: str) -> tuple[sfn.Condition, sfn.Condition]:
    """Choice rules, to be placed before any comparison on `path`, catching what it cannot compare."""
    return (
        sfn.Condition.not_(sfn.Condition.is_present(path)),
        sfn.Condition.not_(sfn.Condition.is_string(path)),
    )


@dataclass(frozen=True)
class _Lineage:
    start: sfn.IChainable
    end: sfn.INextable
