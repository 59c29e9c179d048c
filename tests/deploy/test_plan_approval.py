"""An approval is bound to the plan it showed (issue 26 item 5): the request keeps the plan's
fingerprint and lines; when the plan changes between the approval and the start (a new
revision of the family registered by someone, what runs moved, the image's digest moved),
the approval is void and nothing changes. The changes are made over moto's API, as the
service's stack or CI would make them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.plan_diff import as_registered
from bot.deploy.records import Via
from bot.deploy.rollout import Outcome
from bot.errors import NoSuchRequest
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.rules import Rule, RuleRefused
from tests.conftest import LocalStack
from tests.deploy.test_guards import CARA, DAN, DEPLOYS, OPERATOR, _protected, button, slack, slash
from tests.reliability.test_rollback_truth import move_tag
from tests.slack.helpers import running_tag

FAMILY = "hello-world-ecr-ecs-fargate"


@pytest.fixture
def engine(stack: LocalStack) -> Iterator[Engine]:
    made = _protected(stack)
    yield made
    made.close()


def ecs(stack: LocalStack) -> Any:
    return boto3.client("ecs", endpoint_url=stack.info.endpoint_url, region_name=stack.info.region)


def register_revision(stack: LocalStack, **environment: str) -> str:
    """A revision of the family registered outside deploybot (the service's stack, a
    person at the console), with ``environment`` in its container: its ARN."""
    client = ecs(stack)
    td = client.describe_task_definition(taskDefinition=stack.info.task_definition_arn)
    live = td["taskDefinition"]
    kwargs = as_registered(live)
    container = dict(live["containerDefinitions"][0])
    container["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
    kwargs["containerDefinitions"] = [container]
    return str(client.register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"])


def new_revision(stack: LocalStack) -> None:
    register_revision(stack, LOG_LEVEL="debug")


def live_moved(stack: LocalStack) -> None:
    arn = register_revision(stack, LOG_LEVEL="debug")
    ecs(stack).update_service(
        cluster=stack.settings.ecs_cluster, service=stack.settings.ecs_service, taskDefinition=arn
    )


def digest_moved(stack: LocalStack) -> None:
    move_tag(stack, "v4.4.0-ecr-ecs-fargate", "e")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            new_revision,
            f"a new revision of the task definition family, {FAMILY}:2, was registered since "
            "the approval was asked",
        ),
        (live_moved, "runs v4.3.0-ecr-ecs-fargate ("),
        (digest_moved, "v4.4.0-ecr-ecs-fargate points to another image now"),
    ],
    ids=["new revision of the family", "what runs changed", "the digest moved"],
)
def test_an_approval_is_void_when_the_plan_changes_between_approval_and_start(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    engine: Engine,
    change: Callable[[LocalStack], None],
    why: str,
) -> None:
    plan = engine.plan_deploy("v4.4.0", slack(CARA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    approval = engine.approve(request.id, slack(DAN), via=button())
    assert approval.plan is not None
    change(stack)
    aws.requests.clear()
    with pytest.raises(RuleRefused) as refused:
        engine.start(approval.plan)
    assert refused.value.rule is Rule.PREMISE
    assert "no longer holds" in refused.value.message and why in refused.value.message
    assert "Nothing was changed" in refused.value.message
    writes = [r.operation for r in aws.requests if r.service == "ecs"]
    assert "RegisterTaskDefinition" not in writes and "UpdateService" not in writes
    assert engine.history(1) == [] and engine.status().lock is None


def test_the_request_keeps_the_plan_it_showed(stack: LocalStack, engine: Engine) -> None:
    plan = engine.plan_deploy("v4.4.0", slack(CARA), via=slash(asking=True))
    assert plan.task is not None
    request = engine.request_approval(plan, DEPLOYS)
    stored = engine.find_request(request.id)
    assert stored is not None
    assert stored.fingerprint == plan.task.fingerprint != ""
    assert stored.plan_summary == "Task definition: only the image changes."
    assert any(line.startswith("  image: v4.3.0-ecr-ecs-fargate (sha256:") for line in stored.plan)
    assert f"  ✓ log group /ecs/{FAMILY} exists" in stored.plan


def test_an_approval_given_after_the_plan_changed_is_refused(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    plan = engine.plan_deploy("v4.4.0", slack(CARA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    new_revision(stack)
    with pytest.raises(RuleRefused) as refused:
        engine.approve(request.id, slack(DAN), via=button())
    assert refused.value.rule is Rule.PREMISE
    assert f"{FAMILY}:2, was registered" in refused.value.message
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    # Asked again, the new plan names the newer revision, and holds.
    again = engine.plan_deploy("v4.4.0", slack(CARA), via=slash(asking=True))
    assert again.task is not None and again.task.newer == f"{FAMILY}:2"
    approval = engine.approve(engine.request_approval(again, DEPLOYS).id, slack(DAN), via=button())
    assert approval.plan is not None
    record = engine.start(approval.plan)
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    with pytest.raises((RuleRefused, NoSuchRequest)):  # the void request stays void
        engine.approve(request.id, slack(DAN), via=button())


def test_a_revision_deploybot_registered_does_not_void_anything(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """A deploy that ECS rolled back leaves its revision newest in the family: not someone
    else's change, so no plan names it."""
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    failed = engine.start(engine.plan_deploy("v4.5.0", OPERATOR, via=Via(break_glass="test")))
    assert list(engine.watch(failed))[-1].outcome in (Outcome.ROLLED_BACK, Outcome.FAILED)
    plan = engine.plan_deploy("v4.4.0", slack(CARA), via=slash(asking=True))
    assert plan.task is not None and plan.task.newer == ""
