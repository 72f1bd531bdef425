"""The Prepare Lambda construct: dependency ordering, accepted checks in one place, nag suppressions."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from infra.nag import add_security_checks
from infra.policies import depend_on_role_policy_only
from infra.prepare_function import PrepareFunction
from tests.infra.helpers import nag_findings, new_stack, resources_of_type, the_resource
from tests.infra.policy_rules import checkov_accepted_reason


class Built:
    def __init__(self) -> None:
        self.app, self.stack = new_stack()
        key = kms.Key(self.stack, "Key", enable_key_rotation=True)
        self.construct = PrepareFunction(self.stack, "Prepare", settings={"name_prefix": "xgb"}, key=key)
        add_security_checks(self.app)
        self.template: dict[str, Any] = Template.from_stack(self.stack).to_json()
        self.function_id, self.function = the_resource(self.template, "AWS::Lambda::Function")
        (self.policy_id, self.policy) = next(
            iter(resources_of_type(self.template, "AWS::IAM::Policy").items())
        )
        self.role_id = self.stack.get_logical_id(self.construct.role.node.default_child)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def built() -> Built:
    return Built()


def test_no_cdk_nag_findings(built: Built) -> None:
    assert nag_findings(built.stack) == []


def test_function_waits_for_the_role_policy_but_not_redundantly_for_the_role(built: Built) -> None:
    assert len(resources_of_type(built.template, "AWS::IAM::Policy")) == 1
    assert built.function["DependsOn"] == [built.policy_id]
    assert built.function["Properties"]["Role"] == {"Fn::GetAtt": [built.role_id, "Arn"]}
    assert built.policy["Properties"]["Roles"] == [{"Ref": built.role_id}]


def test_checkov_findings_are_accepted_in_policy_rules_not_in_metadata(built: Built) -> None:
    assert "checkov" not in (built.function.get("Metadata") or {})
    # In the app the construct is "Pipeline/Prepare", here "Prepare": the accepted pattern covers both.
    for check_id in ("CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"):
        assert checkov_accepted_reason(check_id, built.function_id), check_id
        assert checkov_accepted_reason(check_id, "PipelinePrepareFunction75B40A37"), check_id
    assert checkov_accepted_reason("CKV_AWS_173", built.function_id) is None


def test_the_only_iam5_suppression_is_xray_which_takes_only_star(built: Built) -> None:
    suppressions = built.policy["Metadata"]["cdk_nag"]["rules_to_suppress"]
    assert [(s["id"], s["applies_to"]) for s in suppressions] == [("AwsSolutions-IAM5", ["Resource::*"])]
    assert "xray" in suppressions[0]["reason"]


def test_logs_go_to_the_functions_own_log_group_only(built: Built) -> None:
    log_group_id, _ = the_resource(built.template, "AWS::Logs::LogGroup")
    statements = built.policy["Properties"]["PolicyDocument"]["Statement"]
    (logs_statement,) = [s for s in statements if any(a.startswith("logs:") for a in s["Action"])]
    assert set(logs_statement["Action"]) >= {"logs:CreateLogStream", "logs:PutLogEvents"}
    # LogGroup.Arn is "arn:...:log-group:<name>:*": the group and its streams, nothing else.
    assert logs_statement["Resource"] == {"Fn::GetAtt": [log_group_id, "Arn"]}


def test_depending_on_a_role_without_policy_names_the_problem() -> None:
    _, stack = new_stack()
    role = iam.Role(stack, "Bare", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    topic = sns.CfnTopic(stack, "Topic")
    with pytest.raises(ValueError, match="Bare has no default policy"):
        depend_on_role_policy_only(topic, role)
