"""Security checks on every stack of the app (infra.app.build_app), in each configuration variant.

New stacks and constructs are checked automatically; accepted exceptions live in policy_rules.py.
"""

from __future__ import annotations

import csv
import re
from typing import Any

from infra.stack import PROJECT_ROOT
from tests.infra.helpers import SynthesizedApp, all_errors_and_warnings, run_cfn_lint, run_checkov
from tests.infra.policy_rules import (
    CFN_LINT_ACCEPTED,
    CHECKOV_ACCEPTED,
    STAR_RESOURCE_ACTIONS,
    cfn_lint_accepted_reason,
    cfn_lint_location,
    checkov_accepted_reason,
    pass_role_violations,
    statements,
    wildcard_violations,
)

DEPLOY_DOC = PROJECT_ROOT / "docs" / "deploy.md"


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
    problems = [
        f"{name}: {match['Rule']['Id']} {cfn_lint_location(match)}: {match['Message']}"
        for name, path in synthesized_app.template_paths.items()
        for match in run_cfn_lint(path)
        if cfn_lint_accepted_reason(match) is None
    ]
    assert problems == []


def _failed_checkov_checks(app: SynthesizedApp) -> list[tuple[str, str, dict[str, Any]]]:
    failed = []
    for name, path in app.template_paths.items():
        report = run_checkov(path)
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        assert report["summary"]["passed"] > 0, "checkov checked nothing"
        failed += [(name, f["resource"].split(".", 1)[1], f) for f in report["results"]["failed_checks"]]
    return failed


def test_checkov_passes_except_accepted_findings(synthesized_app: SynthesizedApp) -> None:
    problems = [
        f"{name}: {failed['check_id']} {failed['resource']}: {failed['check_name']}"
        for name, logical_id, failed in _failed_checkov_checks(synthesized_app)
        if checkov_accepted_reason(failed["check_id"], logical_id) is None
    ]
    assert problems == []


def test_no_checkov_skips_in_templates(synthesized_app: SynthesizedApp) -> None:
    # CHECKOV_ACCEPTED is the one list of accepted findings: a skip in a resource's Metadata would
    # hide a finding from it (and from the table in docs/deploy.md).
    skipping = [
        f"{name}: {logical_id}"
        for name, template in synthesized_app.templates.items()
        for logical_id, resource in template["Resources"].items()
        if "checkov" in (resource.get("Metadata") or {})
    ]
    assert skipping == []


def test_every_accepted_finding_still_occurs(all_apps: list[SynthesizedApp]) -> None:
    # An entry nothing matches any more would accept a future finding unseen: remove it instead.
    unused_checkov = set(CHECKOV_ACCEPTED)
    unused_cfn_lint = set(CFN_LINT_ACCEPTED)
    for app in all_apps:
        for _, logical_id, failed in _failed_checkov_checks(app):
            unused_checkov -= {
                (check_id, pattern)
                for check_id, pattern in CHECKOV_ACCEPTED
                if check_id == failed["check_id"] and re.match(pattern, logical_id)
            }
        for path in app.template_paths.values():
            for match in run_cfn_lint(path):
                unused_cfn_lint -= {
                    key
                    for key in CFN_LINT_ACCEPTED
                    if key[0] == match["Rule"]["Id"]
                    and re.search(key[1], match["Message"])
                    and re.search(key[2], cfn_lint_location(match))
                }
    assert unused_checkov == set()
    assert unused_cfn_lint == set()


def test_checkov_accepted_list_has_reasons() -> None:
    for (check_id, pattern), reason in CHECKOV_ACCEPTED.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check_id)
        assert len(reason) > 40 and pattern.startswith("^") and pattern.endswith("$")
    for (rule_id, message, location), reason in CFN_LINT_ACCEPTED.items():
        assert re.fullmatch(r"[EWI]\d{4}", rule_id)
        assert message.startswith("^") and location.startswith("^Resources/")
        assert len(reason) > 40


def _doc_table_rows(heading: str) -> list[tuple[str, str]]:
    """(rule id, logical-id prefix) of each row of the table right below ``heading``: the first
    backticked word of the first and second cells."""
    lines = DEPLOY_DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip() and rows:
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or set(cells[0]) <= {"-", " "} or cells[0] in {"check", "rule"}:
            continue
        rule = re.match(r"`([A-Z0-9_]+)`", cells[0])
        resource = re.search(r"`([A-Za-z0-9]+)`", cells[1])
        assert rule and resource, f"docs/deploy.md row without a `RULE` and a `LogicalIdPrefix`: {line}"
        rows.append((rule.group(1), resource.group(1)))
    return rows


def _matches_prefix(pattern: str, prefix: str) -> bool:
    # The doc names the logical id without CDK's 8-character hash suffix.
    return re.match(pattern, prefix + "0A1B2C3D") is not None


def test_deploy_doc_lists_exactly_the_accepted_checkov_findings() -> None:
    rows = _doc_table_rows("Accepted checkov findings (`CHECKOV_ACCEPTED`):")
    assert len(rows) == len(CHECKOV_ACCEPTED)
    for check_id, pattern in CHECKOV_ACCEPTED:
        assert any(c == check_id and _matches_prefix(pattern, r) for c, r in rows), (check_id, pattern)


def test_deploy_doc_lists_exactly_the_accepted_cfn_lint_findings() -> None:
    rows = _doc_table_rows("Accepted cfn-lint findings (`CFN_LINT_ACCEPTED`):")
    assert len(rows) == len(CFN_LINT_ACCEPTED)
    for rule_id, _, location in CFN_LINT_ACCEPTED:
        resource_pattern = "^" + location.split("/")[1]
        assert any(c == rule_id and _matches_prefix(resource_pattern, r) for c, r in rows), rule_id


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
