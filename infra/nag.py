"""cdk-nag wiring: the rule pack every app runs, and one way to write a suppression.

Suppressions are added next to the resource they concern (in the construct that creates it), each
with the rule id, the ``applies_to`` findings when the rule reports them, and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aspects, IAspect
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import IConstruct


def add_security_checks(scope: IConstruct, *, verbose: bool = True) -> IAspect:
    """Run the AWS Solutions rule pack on ``scope`` (usually the ``App``) during synthesis.

    Findings become error/warning annotations: ``npx cdk synth`` fails on an unsuppressed error and
    the tests assert that no error or warning is left.
    """
    checks = AwsSolutionsChecks(verbose=verbose)
    Aspects.of(scope).add(checks)
    return checks


def suppress(
    construct: IConstruct,
    rule_id: str,
    reason: str,
    *,
    applies_to: Sequence[str | RegexAppliesTo] = (),
    apply_to_children: bool = False,
) -> None:
    """Suppress one cdk-nag finding on ``construct`` with a reason a reviewer can check.

    ``applies_to`` narrows rules that report individual findings (IAM5 wildcards, IAM4 managed
    policies) to exactly those findings, e.g. ``"Action::kms:GenerateDataKey*"`` or
    ``"Resource::<Bucket.Arn>/runs/*"``.
    """
    if len(reason) < 10:
        raise ValueError(f"cdk-nag suppression of {rule_id} needs a real reason (at least 10 characters)")
    suppression = NagPackSuppression(id=rule_id, reason=reason, applies_to=list(applies_to) or None)
    NagSuppressions.add_resource_suppressions(construct, [suppression], apply_to_children)
