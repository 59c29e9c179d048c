"""cloudformation/target-role.yml: the role a target account makes for the bot (#30).

It trusts the bot's task role alone (with the ExternalId when one is set) and grants on that
account's service stack what bot.yml's task role grants on a stack of the bot's own account,
statement for statement: test_permissions.py proves those are exactly what the engine calls.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.templates import (
    PRODUCTION_STACK,
    deploy_policy_id,
    load_template,
    resolve_conditions,
    resource,
    task_role_policies,
)

STACK = PRODUCTION_STACK  # bot.yml's default DeployStackNames; target-role.yml's default stack


def _role(parameters: dict[str, str]) -> dict[str, Any]:
    return resource(resolve_conditions(load_template("target-role"), parameters), "TargetRole")


def _statements(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (policy,) = role["Policies"]
    return {
        s["Sid"]: s
        for s in policy["PolicyDocument"]["Statement"]
        if s != {"Ref": "AWS::NoValue"}  # a statement Fn::If left out
    }


def _as_text(statement: dict[str, Any]) -> str:
    return json.dumps(statement, sort_keys=True).replace("${ServiceStackName}", STACK)


def test_it_grants_what_the_bot_role_grants_on_a_stack_of_its_own_account() -> None:
    bot = task_role_policies(load_template("bot"))
    mine = {s["Sid"]: s for s in bot[deploy_policy_id(STACK)]}
    (shared,) = [s for s in bot["deploy-shared"] if s["Sid"] == "TaskDefinitionsReadAndRegister"]
    mine[shared["Sid"]] = shared
    theirs = _statements(_role({}))
    assert sorted(theirs) == sorted(mine)
    for sid, statement in theirs.items():
        assert _as_text(statement) == _as_text(mine[sid]), sid


def test_pulling_from_the_bots_account_it_reads_no_repository_here() -> None:
    assert "ImageLookup" not in _statements(_role({"RepositoryHere": "false"}))


@pytest.mark.parametrize("external_id", ["", "deploybot-7f3a"])
def test_it_trusts_the_bots_task_role_alone(external_id: str) -> None:
    (trust,) = _role({"ExternalId": external_id})["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow" and trust["Action"] == "sts:AssumeRole"
    assert trust["Principal"] == {"AWS": {"Ref": "BotTaskRoleArn"}}
    if external_id:
        assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    else:
        assert trust["Condition"] == {"Ref": "AWS::NoValue"}
