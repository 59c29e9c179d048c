"""Load the CloudFormation templates (with cfn-lint's decoder) and read the facts tests check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

from tools.cfn_expand import expand_template

TEMPLATES = Path(__file__).resolve().parents[2] / "cloudformation"
# Two service stacks, as `make infra` and `make infra ENV=staging` name them.
PRODUCTION_STACK = "hello-world-ecr-ecs-fargate"
STAGING_STACK = "hello-world-ecr-ecs-fargate-staging"
TWO_STACKS = {"DeployStackNames": f"{PRODUCTION_STACK},{STAGING_STACK}"}


def load_template(name: str, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """``service`` or ``bot`` (or a path) as plain dicts; intrinsics stay ``{"Ref": ...}`` etc.

    Fn::ForEach loops are expanded as CloudFormation would for ``parameters`` (the rest
    take their defaults): bot.yml's per-stack policies become one resource each.
    """
    path = Path(name) if name.endswith((".yml", ".yaml", ".json")) else TEMPLATES / f"{name}.yml"
    # cfn-lint's loader knows !Ref/!Sub/!GetAtt; the JSON round trip drops its node classes.
    raw = json.loads(json.dumps(cfn_yaml.load(str(path))))
    return expand_template(raw, parameters)


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """One resource's ``Properties`` (empty dict when it has none)."""
    return dict(template["Resources"][logical_id].get("Properties", {}))


def resources_of_type(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource, for every resource of ``type_name``."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


def deployments_table_schema() -> dict[str, Any]:
    """The lock-and-history table's key schema in ``create_table``'s shape (from bot.yml).

    ``dynamodb.create_table(TableName=..., **deployments_table_schema())`` makes the
    same table the stack makes, keys and billing mode included.
    """
    table = resource(load_template("bot"), "DeploymentsTable")
    return {
        "AttributeDefinitions": table["AttributeDefinitions"],
        "KeySchema": table["KeySchema"],
        "BillingMode": table["BillingMode"],
    }


def deployments_table_ttl_attribute() -> str:
    """The attribute DynamoDB's TTL expires items by (the lock's lease)."""
    ttl = resource(load_template("bot"), "DeploymentsTable")["TimeToLiveSpecification"]
    if not ttl.get("Enabled"):
        raise AssertionError("bot.yml's DeploymentsTable has TTL disabled")
    return str(ttl["AttributeName"])


def task_role_policies(
    template: dict[str, Any], parameters: dict[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Policy -> statements, for the bot's task role: its inline policies by name, and each
    managed policy attached to it (one per service stack it deploys) by logical id. A policy
    whose Condition ``parameters`` make false (the rest: their defaults) is not attached."""
    role = resource(template, "TaskRole")
    policies = {p["PolicyName"]: p["PolicyDocument"]["Statement"] for p in role["Policies"]}
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for logical_id, policy in resources_of_type(template, kind).items():
            if "Condition" in policy and not _condition(
                template, policy["Condition"], parameters or {}
            ):
                continue
            properties = policy["Properties"]
            if properties.get("Roles") != [{"Ref": "TaskRole"}]:
                raise AssertionError(f"{logical_id} is attached to another role")
            policies[logical_id] = properties["PolicyDocument"]["Statement"]
    return policies


def deploy_policy_id(stack: str) -> str:
    """The logical id bot.yml's loop gives the policy of ``stack`` (``&{Stack}``: alphanumerics)."""
    return "DeployStack" + re.sub(r"[^A-Za-z0-9]", "", stack)


def bot_task_role_statements(parameters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every statement of every policy of the bot's task role (bot.yml with ``parameters``)."""
    policies = task_role_policies(load_template("bot", parameters), parameters)
    return [statement for statements in policies.values() for statement in statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def render(value: Any) -> str:
    """A resource as readable text: ``!Sub`` patterns verbatim, other intrinsics as ``${...}``.

    ``!GetAtt T.Arn`` -> ``${T.Arn}``, ``!Ref X`` -> ``${X}``,
    ``!ImportValue !Sub "${S}-RoleArn"`` -> ``ImportValue(${S}-RoleArn)``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), *_ = value.items()
        if fn == "Fn::Sub":
            return render(arg[0] if isinstance(arg, list) else arg)
        if fn == "Ref":
            return f"${{{arg}}}"
        if fn == "Fn::GetAtt":
            return "${" + (".".join(arg) if isinstance(arg, list) else str(arg)) + "}"
        if fn == "Fn::ImportValue":
            return f"ImportValue({render(arg)})"
    raise ValueError(f"cannot render {value!r}")


def bot_task_role_actions(
    statements: list[dict[str, Any]] | None = None,
) -> dict[str, list[str]]:
    """Each action the bot's task role allows -> its resources, rendered by :func:`render`.

    ``statements`` defaults to :func:`bot_task_role_statements` (bot.yml's role, deploying
    one stack). Raises if an action is in two statements, or a statement is not an Allow:
    the role keeps one statement per action and stack, so this map is the whole truth.
    """
    actions: dict[str, list[str]] = {}
    for statement in bot_task_role_statements() if statements is None else statements:
        if statement.get("Effect") != "Allow":
            raise ValueError(f"statement {statement.get('Sid')} is not an Allow")
        resources = [render(r) for r in _as_list(statement["Resource"])]
        for action in _as_list(statement["Action"]):
            if action in actions:
                raise ValueError(f"{action} is granted by more than one statement")
            actions[action] = resources
    return actions


def role_statements(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    """Every statement of every inline policy of the role ``logical_id``."""
    role = resource(template, logical_id)
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def role_actions(statements: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each action the statements allow -> its resources, rendered; one statement per action."""
    return bot_task_role_actions(statements)


def substitute(pattern: str, parameters: dict[str, str]) -> str:
    """A ``!Sub`` pattern with each ``${Name}`` replaced from ``parameters`` (all must be there)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise KeyError(f"no value for ${{{name}}} in {pattern!r}")
        return parameters[name]

    return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", one, pattern)


def _condition(template: dict[str, Any], name: str, parameters: dict[str, str]) -> bool:
    return bool(_evaluate(template["Conditions"][name], template, parameters))


def _evaluate(node: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """Conditions' functions over parameter values (the few our templates use)."""
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), *_ = node.items()
        if fn == "Ref" and arg in template.get("Parameters", {}):
            return parameters.get(arg, template["Parameters"][arg].get("Default"))
        if fn == "Fn::Equals":
            left, right = (_evaluate(a, template, parameters) for a in arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not _evaluate(arg[0], template, parameters)
        if fn == "Fn::And":
            return all(_evaluate(a, template, parameters) for a in arg)
        if fn == "Fn::Or":
            return any(_evaluate(a, template, parameters) for a in arg)
        if fn == "Fn::Join":  # over a CommaDelimitedList's Ref: its value, comma-separated
            separator, values = arg[0], _evaluate(arg[1], template, parameters)
            items = values.split(",") if isinstance(values, str) else values
            return separator.join(str(_evaluate(v, template, parameters)) for v in items)
        if fn == "Condition":
            return _condition(template, arg, parameters)
    return node


def resolve_conditions(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The template as these parameters make it: resources and outputs whose Condition is
    false dropped, every ``Fn::If`` replaced by its chosen branch, and what a branch made
    ``AWS::NoValue`` removed (the property, or the list item), as CloudFormation does."""
    no_value = {"Ref": "AWS::NoValue"}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, when_true, when_false = node["Fn::If"]
                return walk(when_true if _condition(template, name, parameters) else when_false)
            made = {k: walk(v) for k, v in node.items()}
            return {k: v for k, v in made.items() if v != no_value}
        if isinstance(node, list):
            return [item for item in (walk(i) for i in node) if item != no_value]
        return node

    resolved = walk({k: v for k, v in template.items() if k != "Conditions"})
    for section in ("Resources", "Outputs"):
        resolved[section] = {
            k: {key: value for key, value in v.items() if key != "Condition"}
            for k, v in resolved.get(section, {}).items()
            if "Condition" not in v or _condition(template, v["Condition"], parameters)
        }
    return dict(resolved)
