"""Least privilege, proven: the bot task role in bot.yml grants exactly what the engine calls.

The engine's AWS calls are recorded through botocore's ``before-call`` event hook (every
AwsClient registers it): all calls of the test session so far, plus a scenario run here that
walks every engine path, against a table created from the template's own key schema.
"""

from __future__ import annotations

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.errors import ImageMissing, NothingToRollBack
from bot.deploy.ledger import ATTRIBUTE_DEFINITIONS, KEY_SCHEMA, TTL_ATTRIBUTE, Requester
from bot.local.simulator import RolloutSimulator
from tests.aws_calls import CALLED
from tests.conftest import LocalStack
from tests.infra.templates import (
    bot_task_role_actions,
    deployments_table_schema,
    deployments_table_ttl_attribute,
)

WHO = Requester("permission-test", "cli")
# What AWS authorises for a call beyond its own action.
IMPLIED = {
    # RegisterTaskDefinition with tags= needs TagResource; with roles in it, PassRole.
    "ecs:RegisterTaskDefinition": {"ecs:TagResource", "iam:PassRole"},
}


def test_ledger_speaks_the_templates_key_schema() -> None:
    schema = deployments_table_schema()
    assert schema["KeySchema"] == KEY_SCHEMA
    assert sorted(schema["AttributeDefinitions"], key=str) == sorted(ATTRIBUTE_DEFINITIONS, key=str)
    assert deployments_table_ttl_attribute() == TTL_ATTRIBUTE


def _table_from_template(stack: LocalStack) -> None:
    db = boto3.client(
        "dynamodb", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
    )
    db.delete_table(TableName=stack.settings.deploy_table)
    db.create_table(TableName=stack.settings.deploy_table, **deployments_table_schema())
    db.update_time_to_live(
        TableName=stack.settings.deploy_table,
        TimeToLiveSpecification={
            "Enabled": True,
            "AttributeName": deployments_table_ttl_attribute(),
        },
    )


def _every_engine_path(stack: LocalStack, simulator: RolloutSimulator) -> None:
    engine = Engine(stack.settings)
    try:
        with pytest.raises(NothingToRollBack):
            engine.rollback(WHO)
        with pytest.raises(ImageMissing):
            engine.deploy("v9.9.9", WHO)
        list(engine.watch(engine.deploy("v4.4.0", WHO)))
        simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
        list(engine.watch(engine.deploy("v4.5.0", WHO)))  # stopped tasks: ListTasks etc.
        list(engine.watch(engine.redeploy(WHO)))
        engine.status()
        engine.history(5)
        engine.recent_images()
        engine.unlock()
        list(engine.watch(engine.deploy("v4.3.0", WHO)))
        list(engine.watch(engine.rollback(WHO)))  # back to v4.4.0
    finally:
        engine.close()


def test_the_bot_role_grants_exactly_what_the_engine_calls(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    _table_from_template(stack)
    _every_engine_path(stack, simulator)
    called = {f"{service}:{operation}" for service, operation in CALLED}
    needed = set(called)
    for action in called:
        needed |= IMPLIED.get(action, set())
    granted = set(bot_task_role_actions())
    assert sorted(needed - granted) == [], "the engine calls these but bot.yml does not grant them"
    assert sorted(granted - needed) == [], "bot.yml grants these but the engine never calls them"
