"""Load the CloudFormation templates (with cfn-lint's decoder) and read the facts tests check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

TEMPLATES = Path(__file__).resolve().parents[2] / "cloudformation"


def load_template(name: str) -> dict[str, Any]:
    """``service`` or ``bot`` (or a path) as plain dicts; intrinsics stay ``{"Ref": ...}`` etc."""
    path = Path(name) if name.endswith((".yml", ".yaml", ".json")) else TEMPLATES / f"{name}.yml"
    # cfn-lint's loader knows !Ref/!Sub/!GetAtt; the JSON round trip drops its node classes.
    return json.loads(json.dumps(cfn_yaml.load(str(path))))


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


def bot_task_role_statements() -> list[dict[str, Any]]:
    """Every statement of every inline policy of the bot's task role."""
    role = resource(load_template("bot"), "TaskRole")
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


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

    ``statements`` defaults to :func:`bot_task_role_statements` (bot.yml's role).
    Raises if an action is in two statements, or a statement is not an Allow: the
    role keeps one statement per action so this map is the whole truth.
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
