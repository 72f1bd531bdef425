"""Resolve the CloudFormation intrinsics in a synthesized template with deterministic fake values.

Used to turn a state machine's `DefinitionString` (a `Fn::Join` of strings and tokens) into a
concrete ASL document moto can run, and to read other resources' properties (a Lambda's
environment, a CodeBuild project's settings) the same way CloudFormation would see them.

Every resource gets the physical name `logical_id.lower()` and the ARN its type would have
in account 123456789012 / us-east-1, so a test can create the matching moto resource
(`physical_name(...)`, `arn_of(...)`). Only what CDK emits for this project is handled (Ref,
Fn::GetAtt, Fn::Join, Fn::Select, Fn::Split, Fn::Sub, pseudo parameters,
DefinitionSubstitutions); anything else raises, so a template change that needs more support
fails loudly instead of producing a wrong definition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
PSEUDO: dict[str, Any] = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "TestStack",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/TestStack/fake",
    "AWS::NoValue": None,
}

# Ref returns the ARN for these types, the physical name / id otherwise.
_REF_IS_ARN = frozenset({"AWS::SNS::Topic", "AWS::StepFunctions::StateMachine", "AWS::IAM::ManagedPolicy"})


def physical_name(logical_id: str) -> str:
    """The physical name we pretend CloudFormation generated for `logical_id`."""
    return logical_id.lower()


def arn_of(resource_type: str, logical_id: str) -> str:
    n = physical_name(logical_id)
    arns = {
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{n}",
        "AWS::IAM::ManagedPolicy": f"arn:aws:iam::{ACCOUNT}:policy/{n}",
        "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{n}",
        "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n}",
        "AWS::S3::Bucket": f"arn:aws:s3:::{n}",
        "AWS::ECR::Repository": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{n}",
        "AWS::CodeBuild::Project": f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{n}",
        "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n}",
        "AWS::StepFunctions::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{n}",
        "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{n}",
        "AWS::KMS::Alias": f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/{n}",
        "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{n}:*",
    }
    return arns.get(resource_type, f"arn:aws:fake:{REGION}:{ACCOUNT}:{n}")


def resolver(template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Callable[[Any], Any]:
    """Return a function that resolves every intrinsic in a template fragment.

    `overrides` maps "LogicalId" (for Ref) or "LogicalId.Attribute" (for Fn::GetAtt) to a value.
    """
    resources: Mapping[str, Any] = template.get("Resources", {})
    parameters: Mapping[str, Any] = template.get("Parameters", {})
    fixed = dict(overrides or {})

    def ref(logical_id: str) -> Any:
        if logical_id in fixed:
            return fixed[logical_id]
        if logical_id in PSEUDO:
            return PSEUDO[logical_id]
        if logical_id in parameters:
            return parameters[logical_id].get("Default", f"param-{logical_id}")
        if logical_id not in resources:
            raise KeyError(f"Ref to unknown resource or parameter {logical_id!r}")
        rtype = resources[logical_id]["Type"]
        if rtype == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical_name(logical_id)}"
        return arn_of(rtype, logical_id) if rtype in _REF_IS_ARN else physical_name(logical_id)

    def getatt(logical_id: str, attr: str) -> Any:
        key = f"{logical_id}.{attr}"
        if key in fixed:
            return fixed[key]
        if logical_id not in resources:
            raise KeyError(f"Fn::GetAtt on unknown resource {logical_id!r}")
        rtype = resources[logical_id]["Type"]
        n = physical_name(logical_id)
        if attr == "Arn":
            return arn_of(rtype, logical_id)
        if attr == "RepositoryUri":
            return f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{n}"
        if attr in ("TopicName", "QueueName", "Name", "RoleId", "KeyId"):
            return n
        if attr == "TopicArn":
            return arn_of(rtype, logical_id)
        if attr in ("DomainName", "RegionalDomainName"):
            return f"{n}.s3.amazonaws.com"
        if attr == "QueueUrl":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{n}"
        raise KeyError(
            f"no fake value for Fn::GetAtt {key} ({rtype}); add one to tests/support/cfn_resolve.py"
        )

    def sub(text: str, env: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name in env:
                return str(env[name])
            if "." in name and not name.startswith("AWS::"):
                return str(getatt(*name.split(".", 1)))
            return str(ref(name))

        # ${!Literal} is an escaped literal and stays as ${Literal}.
        return re.sub(r"\$\{!([^}]*)\}", r"${\1}", re.sub(r"\$\{([^!}][^}]*)\}", one, text))

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(x) for x in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return ref(value)
            if key == "Fn::GetAtt":
                logical_id, attr = value if isinstance(value, list) else value.split(".", 1)
                return getatt(logical_id, attr)
            if key == "Fn::Join":
                return resolve(value[0]).join(str(x) for x in resolve(value[1]))
            if key == "Fn::Select":
                return resolve(value[1])[int(resolve(value[0]))]
            if key == "Fn::Split":
                return resolve(value[1]).split(resolve(value[0]))
            if key == "Fn::Sub":
                text, env = (value, {}) if isinstance(value, str) else (value[0], resolve(value[1]))
                return sub(text, env)
            if key.startswith("Fn::") or key == "Condition":
                raise NotImplementedError(f"{key} is not supported by tests/support/cfn_resolve.py")
        return {k: resolve(v) for k, v in node.items()}

    return resolve


def api_case(node: Any) -> Any:
    """CloudFormation / Step Functions PascalCase names as the camelCase of APIs such as ECR and
    CodeBuild (`RepositoryName` -> `repositoryName`)."""
    if isinstance(node, list):
        return [api_case(item) for item in node]
    if isinstance(node, dict):
        renamed = {"BuildSpec": "buildspec"}  # the one name here whose API form is not camelCase of it
        return {renamed.get(k, k[0].lower() + k[1:]): api_case(v) for k, v in node.items()}
    return node


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, Any]:
    return {lid: r for lid, r in template.get("Resources", {}).items() if r["Type"] == resource_type}


def concrete_asl(
    template: Mapping[str, Any], logical_id: str | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return a state machine's definition as a dict with every token replaced by a fake value."""
    machines = resources_of_type(template, "AWS::StepFunctions::StateMachine")
    if not machines:
        raise KeyError("the template has no AWS::StepFunctions::StateMachine")
    if logical_id is None:
        if len(machines) != 1:
            raise KeyError(f"several state machines, pass logical_id: {sorted(machines)}")
        logical_id = next(iter(machines))
    props = machines[logical_id]["Properties"]
    resolve = resolver(template, overrides)
    if "DefinitionString" in props:
        asl = json.loads(resolve(props["DefinitionString"]))
    else:
        asl = resolve(props["Definition"])
    substitutions = resolve(props.get("DefinitionSubstitutions", {}))
    if substitutions:
        text = json.dumps(asl)
        for key, value in substitutions.items():
            text = text.replace("${" + key + "}", str(value))
        asl = json.loads(text)
    return asl
