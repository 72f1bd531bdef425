"""Security checks on every stack of the app (infra.app.build_app), in each configuration variant.

New stacks and constructs are checked automatically; accepted exceptions live in policy_rules.py.
"""

from __future__ import annotations

import csv
import re

from tests.infra.helpers import SynthesizedApp, all_errors_and_warnings, run_cfn_lint, run_checkov
from tests.infra.policy_rules import (
    CFN_LINT_ACCEPTED,
    CHECKOV_ACCEPTED,
    STAR_RESOURCE_ACTIONS,
    pass_role_violations,
    statements,
    wildcard_violations,
)


def test_the_app_has_stacks(synthesized_app: SynthesizedApp) -> None:
    assert synthesized_app.stacks, "build_app() created no stack"
    assert set(synthesized_app.templates) == {s.stack_name for s in synthesized_app.stacks}


def test_cdk_nag_reports_no_unsuppressed_error_or_warning(synthesized_app: SynthesizedApp) -> None:
    findings = {stack.stack_name: all_errors_and_warnings(stack) for stack in synthesized_app.stacks}
    assert findings == {name: [] for name in findings}


def test_cdk_nag_ran_and_every_suppression_has_a_reason(synthesized_app: SynthesizedApp) -> None:
    for stack in synthesized_app.stacks:
        (report,) = synthesized_app.assembly_dir.glob(f"AwsSolutions-*{stack.artifact_id}-NagReport.csv")
        rows = list(csv.reader(report.read_text().splitlines()))
        assert rows[0][:3] == ["Rule ID", "Resource ID", "Compliance"], report
        assert len(rows) > 10, "cdk-nag checked almost nothing"
        for row in rows[1:]:
            assert row[2] != "Non-Compliant", row
            if row[2] == "Suppressed":
                assert len(row[3]) >= 30, f"suppression without a real reason: {row}"


def test_cfn_lint_is_clean(synthesized_app: SynthesizedApp) -> None:
    problems = []
    for name, path in synthesized_app.template_paths.items():
        for match in run_cfn_lint(path):
            rule = match["Rule"]["Id"]
            location = "/".join(str(p) for p in match["Location"]["Path"])
            accepted = any(
                rule == rule_id and re.search(message, match["Message"]) and re.search(where, location)
                for rule_id, message, where in CFN_LINT_ACCEPTED
            )
            if not accepted:
                problems.append(f"{name}: {rule} {location}: {match['Message']}")
    assert problems == []


def test_checkov_passes_except_accepted_findings(synthesized_app: SynthesizedApp) -> None:
    problems = []
    for name, path in synthesized_app.template_paths.items():
        report = run_checkov(path)
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        assert report["summary"]["passed"] > 0, "checkov checked nothing"
        for failed in report["results"]["failed_checks"]:
            logical_id = failed["resource"].split(".", 1)[1]
            accepted = CHECKOV_ACCEPTED.get(failed["check_id"])
            if accepted is None or not re.match(accepted[1], logical_id):
                problems.append(f"{name}: {failed['check_id']} {failed['resource']}: {failed['check_name']}")
    assert problems == []


def test_checkov_accepted_list_has_reasons() -> None:
    for check_id, (reason, pattern) in CHECKOV_ACCEPTED.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check_id)
        assert len(reason) > 40 and pattern.startswith("^")


def test_no_wildcard_actions_and_star_resources_only_where_required(synthesized_app: SynthesizedApp) -> None:
    problems = {name: wildcard_violations(t) for name, t in synthesized_app.templates.items()}
    assert problems == {name: [] for name in problems}


def test_star_resource_allow_list_is_used(synthesized_app: SynthesizedApp) -> None:
    # The allow-list is not a blanket: the app does use those actions on "*", each with a reason.
    used = {
        action
        for template in synthesized_app.templates.values()
        for st in statements(template)
        if st.allows and st.kind == "identity" and "*" in st.resources
        for action in st.actions
    }
    assert used <= set(STAR_RESOURCE_ACTIONS)
    assert "ecr:GetAuthorizationToken" in used


def test_pass_role_only_to_sagemaker_for_the_sagemaker_role(synthesized_app: SynthesizedApp) -> None:
    problems = {name: pass_role_violations(t) for name, t in synthesized_app.templates.items()}
    assert problems == {name: [] for name in problems}


def test_no_aws_managed_policies_or_inline_admin(synthesized_app: SynthesizedApp) -> None:
    for template in synthesized_app.templates.values():
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            managed = resource["Properties"].get("ManagedPolicyArns", [])
            # CDK's own auto-delete provider uses the basic Lambda logging policy (destroy variant only).
            if logical_id.startswith("CustomS3AutoDeleteObjectsCustomResourceProviderRole"):
                assert [str(m) for m in managed] == [
                    "{'Fn::Sub': 'arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole'}"
                ]
                continue
            assert managed == [], f"{logical_id} attaches managed policies {managed}"
