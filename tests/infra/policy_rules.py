"""Rules every synthesized template must follow, and the one place that lists accepted exceptions.

Adding a resource that needs a new exception means adding it here, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Actions whose only valid resource is "*" (no resource-level permissions in IAM). Any other action
# on Resource "*" fails the policy test.
STAR_RESOURCE_ACTIONS: dict[str, str] = {
    "ecr:GetAuthorizationToken": "docker login to ECR; the API has no resource-level permissions",
    "cloudwatch:PutMetricData": "no resource-level permissions; scoped by the cloudwatch:namespace condition",
    # X-Ray tracing of the state machine and the Lambda: the X-Ray write/sampling APIs take no resource.
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions for sending traces",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions for sending traces",
    "xray:GetSamplingRules": "X-Ray has no resource-level permissions for sampling rules",
    "xray:GetSamplingTargets": "X-Ray has no resource-level permissions for sampling rules",
    # Step Functions logging to CloudWatch Logs goes through vended log delivery, whose APIs only
    # accept "*" (AWS Step Functions developer guide, "IAM policies for logging to CloudWatch Logs").
    "logs:CreateLogDelivery": "vended log delivery (state machine logging): '*' only",
    "logs:GetLogDelivery": "vended log delivery (state machine logging): '*' only",
    "logs:UpdateLogDelivery": "vended log delivery (state machine logging): '*' only",
    "logs:DeleteLogDelivery": "vended log delivery (state machine logging): '*' only",
    "logs:ListLogDeliveries": "vended log delivery (state machine logging): '*' only",
    "logs:PutResourcePolicy": "vended log delivery writes the log group resource policy: '*' only",
    "logs:DescribeResourcePolicies": "vended log delivery reads the log group resource policies: '*' only",
    "logs:DescribeLogGroups": "vended log delivery lists log groups: '*' only",
}

_AUTO_DELETE_HANDLER = r"^CustomS3AutoDeleteObjectsCustomResourceProviderHandler[0-9A-F]{8}$"
_PREPARE_FUNCTION = r"^[A-Za-z0-9]*PrepareFunction[0-9A-F]{8}$"

# checkov findings accepted on specific resources: (check id, logical-id regex) -> reason. This is the
# only place: no resource carries checkov skip metadata (test_no_checkov_skips_in_templates), and the
# table "Accepted checkov findings" of docs/deploy.md lists exactly these entries.
CHECKOV_ACCEPTED: dict[tuple[str, str], str] = {
    ("CKV_AWS_18", r"^StorageAccessLogBucket[0-9A-F]{8}$"): (
        "The access-log bucket is the server-access-log target of the other buckets; logging its own "
        "access would write into itself or need another bucket."
    ),
    ("CKV_AWS_115", _AUTO_DELETE_HANDLER): (
        "CDK's own auto-delete-objects provider Lambda (removal_policy=destroy only): runs once on stack "
        "deletion; a reserved-concurrency limit has nothing to protect."
    ),
    ("CKV_AWS_116", _AUTO_DELETE_HANDLER): (
        "CDK's own auto-delete-objects provider Lambda: invoked synchronously by CloudFormation, which "
        "reports its failure; a dead-letter queue would never receive anything."
    ),
    ("CKV_AWS_117", _AUTO_DELETE_HANDLER): (
        "CDK's own auto-delete-objects provider Lambda only calls the S3 API; a VPC would need NAT or "
        "endpoints for no gain."
    ),
    ("CKV_AWS_115", _PREPARE_FUNCTION): (
        "The Prepare Lambda runs once per pipeline run; reserved concurrency would take from the "
        "account's unreserved pool, which fails deployment in accounts with the default limit of 10."
    ),
    ("CKV_AWS_116", _PREPARE_FUNCTION): (
        "The Prepare Lambda is invoked synchronously by Step Functions only, which catches and reports "
        "failures; a dead-letter queue applies to asynchronous invocations."
    ),
    ("CKV_AWS_117", _PREPARE_FUNCTION): (
        "The Prepare Lambda is pure input validation without network access: a VPC would only add ENIs."
    ),
}

# cfn-lint findings accepted: (rule id, message regex, resource-path regex) -> reason. cfn-lint runs
# with no other ignore (tests/infra/helpers.py run_cfn_lint).
CFN_LINT_ACCEPTED: dict[tuple[str, str, str], str] = {
    (
        "E3030",
        r"^'nodejs24\.x' is not one of",
        r"^Resources/CustomS3AutoDeleteObjectsCustomResourceProviderHandler[0-9A-F]{8}/Properties/Runtime$",
    ): (
        "cfn-lint 1.40.2 predates the nodejs24.x Lambda runtime that aws-cdk-lib 2.275 uses for its "
        "auto-delete-objects provider (removal_policy=destroy only)."
    ),
    (
        "W3005",
        r"^'CustomS3AutoDeleteObjectsCustomResourceProviderRole[0-9A-F]{8}' dependency already enforced",
        r"^Resources/CustomS3AutoDeleteObjectsCustomResourceProviderHandler[0-9A-F]{8}/DependsOn/\d+$",
    ): (
        "CDK's own auto-delete-objects provider (removal_policy=destroy only) renders a DependsOn on "
        "its role next to the Role GetAtt; the template is generated by aws-cdk-lib, not by this project."
    ),
}


def checkov_accepted_reason(check_id: str, logical_id: str) -> str | None:
    """Why a failed checkov check on ``logical_id`` is accepted, or None when it is not."""
    for (accepted_id, pattern), reason in CHECKOV_ACCEPTED.items():
        if accepted_id == check_id and re.match(pattern, logical_id):
            return reason
    return None


def cfn_lint_location(match: dict[str, Any]) -> str:
    return "/".join(str(p) for p in match["Location"]["Path"])


def cfn_lint_accepted_reason(match: dict[str, Any]) -> str | None:
    """Why a cfn-lint finding (one entry of its JSON output) is accepted, or None when it is not."""
    rule, message, location = match["Rule"]["Id"], match["Message"], cfn_lint_location(match)
    for (rule_id, message_pattern, location_pattern), reason in CFN_LINT_ACCEPTED.items():
        if rule == rule_id and re.search(message_pattern, message) and re.search(location_pattern, location):
            return reason
    return None


IDENTITY_POLICY_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}


@dataclass(frozen=True)
class Statement:
    logical_id: str
    resource_type: str
    kind: str  # "identity" or "resource"
    body: dict[str, Any]

    @property
    def actions(self) -> list[str]:
        raw = self.body.get("Action", [])
        return [raw] if isinstance(raw, str) else list(raw)

    @property
    def resources(self) -> list[Any]:
        raw = self.body.get("Resource", [])
        return raw if isinstance(raw, list) else [raw]

    @property
    def allows(self) -> bool:
        return self.body.get("Effect") == "Allow"


def statements(template: dict[str, Any]) -> Iterator[Statement]:
    """Every policy statement of a template: identity policies (IAM policies and inline role policies)
    and resource policies (key, bucket, repository, topic, queue policies, trust policies excluded)."""
    for logical_id, resource in template.get("Resources", {}).items():
        rtype = resource.get("Type", "")
        props = resource.get("Properties", {}) or {}
        documents: list[tuple[str, dict[str, Any]]] = []
        if rtype in IDENTITY_POLICY_TYPES:
            documents.append(("identity", props.get("PolicyDocument", {})))
        elif rtype in {"AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"}:
            documents += [("identity", p.get("PolicyDocument", {})) for p in props.get("Policies", [])]
        else:
            for key in ("KeyPolicy", "PolicyDocument", "RepositoryPolicyText"):
                if isinstance(props.get(key), dict):
                    documents.append(("resource", props[key]))
        for kind, document in documents:
            raw = document.get("Statement", [])
            for body in [raw] if isinstance(raw, dict) else raw:
                yield Statement(logical_id, rtype, kind, body)


def is_wildcard_action(action: str) -> bool:
    return "*" in action or "?" in action


def exempt_wildcard_reason(statement: Statement, template: dict[str, Any]) -> str | None:
    """Why a resource-policy Allow with a wildcard action is acceptable, or None."""
    principal = statement.body.get("Principal", {})
    if (
        statement.resource_type == "AWS::KMS::Key"
        and statement.actions == ["kms:*"]
        and _is_account_root(principal.get("AWS") if isinstance(principal, dict) else None)
    ):
        return "default key policy: delegates key permissions to IAM policies of this account"
    if statement.resource_type == "AWS::S3::BucketPolicy" and isinstance(principal, dict):
        role = principal.get("AWS")
        if (
            isinstance(role, dict)
            and "Fn::GetAtt" in role
            and re.fullmatch(
                r"CustomS3AutoDeleteObjectsCustomResourceProviderRole[0-9A-F]{8}", role["Fn::GetAtt"][0]
            )
            and template["Resources"][role["Fn::GetAtt"][0]]["Type"] == "AWS::IAM::Role"
        ):
            return (
                "CDK's auto-delete-objects provider (removal_policy=destroy) empties the bucket on deletion"
            )
    return None


def _is_account_root(value: Any) -> bool:
    rendered = repr(value)
    return ":root" in rendered and "AWS::AccountId" in rendered


def role_trusts(template: dict[str, Any], logical_id: str, service: str) -> bool:
    resource = template["Resources"].get(logical_id, {})
    if resource.get("Type") != "AWS::IAM::Role":
        return False
    trust = resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    return any(s.get("Principal", {}).get("Service") == service for s in trust)


def pass_role_violations(template: dict[str, Any]) -> list[str]:
    """iam:PassRole must name only roles trusted by SageMaker and carry iam:PassedToService=sagemaker."""
    problems = []
    for st in statements(template):
        if not st.allows or "iam:PassRole" not in st.actions:
            continue
        where = f"{st.logical_id}: {st.body}"
        if st.actions != ["iam:PassRole"]:
            problems.append(f"iam:PassRole must be alone in its statement: {where}")
        condition = st.body.get("Condition", {}).get("StringEquals", {})
        if condition.get("iam:PassedToService") != "sagemaker.amazonaws.com":
            problems.append(
                f"iam:PassRole without StringEquals iam:PassedToService=sagemaker.amazonaws.com: {where}"
            )
        for resource in st.resources:
            target = resource.get("Fn::GetAtt", [None])[0] if isinstance(resource, dict) else None
            if target is None or not role_trusts(template, target, "sagemaker.amazonaws.com"):
                problems.append(f"iam:PassRole on {resource!r}, not on a SageMaker execution role: {where}")
    return problems


def wildcard_violations(template: dict[str, Any]) -> list[str]:
    """Wildcard actions in Allow statements, and "*" resources on actions outside the allow-list."""
    problems = []
    for st in statements(template):
        if not st.allows:
            continue  # Deny statements (e.g. "s3:*" without TLS) are the strict kind of wildcard
        wildcards = [a for a in st.actions if is_wildcard_action(a)]
        if wildcards and not (st.kind == "resource" and exempt_wildcard_reason(st, template)):
            problems.append(
                f"{st.logical_id} ({st.kind} policy) allows wildcard actions {wildcards}: {st.body}"
            )
        if st.kind == "identity" and "*" in st.resources:
            extra = [a for a in st.actions if a not in STAR_RESOURCE_ACTIONS]
            if extra:
                problems.append(f"{st.logical_id} allows {extra} on Resource '*': {st.body}")
    return problems
