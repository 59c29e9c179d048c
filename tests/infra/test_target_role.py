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
        assert "Condition" not in trust  # AWS::NoValue: resolve_conditions drops it


def _registry_policies(parameters: dict[str, str]) -> dict[str, Any]:
    template = resolve_conditions(load_template("target-role"), parameters)
    return {
        k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::ECR::RegistryPolicy"
    }


def test_it_lets_the_bots_account_replicate_into_this_registry() -> None:
    (policy,) = _registry_policies({}).values()
    (statement,) = policy["Properties"]["PolicyText"]["Statement"]
    assert statement["Action"] == ["ecr:CreateRepository", "ecr:ReplicateImage"]
    # The bot's account is the account of the bot's task role: nothing else to type.
    pattern, names = statement["Principal"]["AWS"]["Fn::Sub"]
    assert pattern == "arn:${AWS::Partition}:iam::${BotAccount}:root"
    assert names == {
        "BotAccount": {"Fn::Select": [4, {"Fn::Split": [":", {"Ref": "BotTaskRoleArn"}]}]}
    }
    assert _registry_policies({"RepositoryHere": "false"}) == {}
    assert _registry_policies({"ReplicationFrom": "false"}) == {}


def test_the_bots_account_replicates_the_repository_ci_pushes_to_when_asked() -> None:
    bot = load_template("bot")
    assert "Replication" not in resolve_conditions(bot, {})["Resources"]
    replication = resolve_conditions(bot, {"ReplicateTo": "222222222222:us-east-1"})["Resources"][
        "Replication"
    ]
    (rule,) = replication["Properties"]["ReplicationConfiguration"]["Rules"]
    (destination,) = rule["Destinations"]
    split = {"Fn::Split": [":", {"Ref": "ReplicateTo"}]}
    assert destination == {
        "RegistryId": {"Fn::Select": [0, split]},
        "Region": {"Fn::Select": [1, split]},
    }
    assert rule["RepositoryFilters"] == [
        {"Filter": {"Ref": "ServiceStackName"}, "FilterType": "PREFIX_MATCH"}
    ]


def test_a_service_stack_may_run_another_accounts_repository() -> None:
    """The cross-account pull's target side: service.yml with RepositoryName and
    RepositoryAccount runs that account's images, and its execution role pulls them there."""
    parameters = {"RepositoryName": STACK, "RepositoryAccount": "111111111111"}
    service = resolve_conditions(load_template("service"), parameters)
    (container,) = resource(service, "TaskDefinition")["ContainerDefinitions"]
    uri = "${RepositoryAccount}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${RepositoryName}"
    assert container["Image"] == {"Fn::Sub": f"{uri}:${{ImageTag}}"}
    pulls = [
        s
        for p in resource(service, "ExecutionRole")["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if s.get("Sid") == "PullImage"
    ]
    arn = (
        "arn:${AWS::Partition}:ecr:${AWS::Region}:${RepositoryAccount}:repository/${RepositoryName}"
    )
    assert [s["Resource"] for s in pulls] == [{"Fn::Sub": arn}]
