"""The AWS actions in-process AwsClients call (botocore hooks), held against bot.yml's role.

Every test's calls are checked when it ends (tests/conftest.py's ``_calls_are_granted``): an
action the engine calls that the bot's task role does not grant fails that test, whichever
worker ran it. tests/infra/test_permissions.py walks every engine path for the other half:
nothing granted that the engine never calls.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from bot.deploy.aws import CALL_OBSERVERS

Call = tuple[str, str]  # (signing name, operation), e.g. ("ecs", "UpdateService")

# What AWS authorises for a call beyond its own action.
IMPLIED = {
    # RegisterTaskDefinition with tags= needs TagResource; with roles in it, PassRole.
    "ecs:RegisterTaskDefinition": {"ecs:TagResource", "iam:PassRole"},
}
# No IAM action of its own: a transaction is authorised as the operations it holds, a
# ConditionCheck as dynamodb:ConditionCheckItem (DynamoDB Developer Guide, "Using IAM with
# DynamoDB transactions").
TRANSACTION_ITEMS = {
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
}
TRANSACTIONS = {"dynamodb:TransactWriteItems": set(TRANSACTION_ITEMS.values())}
# Where IAM's service prefix is not the name botocore signs with: CloudWatch's API is signed
# and addressed as "monitoring", its actions are "cloudwatch:..." (Service Authorization
# Reference, Amazon CloudWatch: service prefix cloudwatch).
IAM_PREFIXES = {"monitoring": "cloudwatch"}


def iam_action(service: str, operation: str) -> str:
    """The IAM action of a call botocore names (signing name, operation)."""
    return f"{IAM_PREFIXES.get(service, service)}:{operation}"


# What AWS answers whatever the role grants: GetCallerIdentity "No permissions are required to
# perform this operation" (https://docs.aws.amazon.com/STS/latest/APIReference/
# API_GetCallerIdentity.html). A terminal asks it once per process for its caller's ARN.
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


@contextmanager
def recorded() -> Iterator[set[Call]]:
    """The calls any in-process AwsClient makes while the block runs (any thread)."""
    seen: set[Call] = set()

    def record(service: str, operation: str) -> None:
        seen.add((service, operation))

    CALL_OBSERVERS.append(record)
    try:
        yield seen
    finally:
        CALL_OBSERVERS.remove(record)


def needed(calls: Iterable[Call]) -> set[str]:
    """The IAM actions ``calls`` need: each call's own, what it implies, a transaction's items."""
    called = {iam_action(service, operation) for service, operation in calls} - NEEDS_NO_PERMISSION
    actions = called - set(TRANSACTIONS)
    for action in called:
        actions |= IMPLIED.get(action, set()) | TRANSACTIONS.get(action, set())
    return actions


# bot.yml for a bot with targets in other accounts (TargetRoleArns set: its role also assumes
# those roles, #30): the widest role, which every test's calls are held against.
TARGET_ROLES = {"TargetRoleArns": "arn:aws:iam::222222222222:role/deploybot-target"}


@functools.cache
def granted() -> frozenset[str]:
    """The actions bot.yml's task role grants, with target accounts (the template is read
    once a process)."""
    from tests.infra.templates import (  # cfn-lint's loader: when needed
        bot_task_role_actions,
        bot_task_role_statements,
    )

    return frozenset(bot_task_role_actions(bot_task_role_statements(TARGET_ROLES)))


def ungranted(calls: Iterable[Call]) -> list[str]:
    """The actions ``calls`` need that bot.yml's role does not grant, sorted."""
    need = needed(calls)
    return sorted(need - granted()) if need else []
