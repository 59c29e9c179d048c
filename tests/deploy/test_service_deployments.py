"""ECS's service deployments (#26): the ARN on the record, the outcome from ECS, the fallback.

Against moto's server over HTTP with the rollout simulator; faults at the wire: moto's own
500 for operations it lacks, the fault proxy's AccessDeniedException.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord, Requester, new_deployment_id
from bot.deploy.rollout import Outcome, Snapshot
from bot.deploy.table import record_item
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from bot.settings import Settings
from tests.conftest import LocalStack

ALICE = Requester("alice", "cli", "Alice")
NEW_OPERATIONS = (
    "ListServiceDeployments",
    "DescribeServiceDeployments",
    "DescribeServiceRevisions",
)


@pytest.fixture
def engine(stack: LocalStack) -> Iterator[Engine]:
    eng = Engine(stack.settings)
    yield eng
    eng.close()


@pytest.fixture
def proxy(stack: LocalStack) -> Iterator[FaultProxy]:
    with FaultProxy(stack.info.endpoint_url) as faults:
        yield faults


def through(settings: Settings, proxy: FaultProxy) -> Settings:
    return settings.model_copy(update={"aws_endpoint_url": proxy.endpoint_url})


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "deploybot.service_deployments" and "refused" in r.getMessage()
    ]


def test_a_record_from_before_service_deployments_still_reads(
    stack: LocalStack, engine: Engine
) -> None:
    """An item written before #26 has no service_deployment_arn nor ecs_status: it reads with
    both empty (judged the old way); one written now keeps the ARN, once."""
    db = boto3.client(
        "dynamodb", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
    )
    now = engine.clock.now()
    old = DeploymentRecord(
        id=new_deployment_id(),
        service=stack.settings.ecs_service,
        kind="deploy",
        tag="v4.4.0",
        image="img",
        task_definition="td:2",
        previous_task_definition="td:1",
        previous_tag="v4.3.0",
        ecs_deployment_id="ecs-svc/1",
        who="alice",
        who_display="Alice",
        source="cli",
        reason="",
        started_at=now,
    )
    item = record_item(engine.ledger.keys.record(old.sort_key), old)
    del item["service_deployment_arn"]  # as a record written before #26 is
    db.put_item(TableName=stack.settings.deploy_table, Item=item)
    read = engine.ledger.get_record(old.sort_key)
    assert read is not None
    assert (read.service_deployment_arn, read.ecs_status) == ("", "")
    arn = "arn:aws:ecs:eu-west-1:123456789012:service-deployment/c/s/abc"
    engine.ledger.set_service_deployment(read, arn)
    other = engine.ledger.set_service_deployment(read, arn + "x")  # a second finder
    assert other.service_deployment_arn == arn
    again = engine.ledger.get_record(old.sort_key)
    assert again is not None and again.service_deployment_arn == arn


def _deploy_and_follow(engine: Engine, tag: str) -> list[Snapshot]:
    record = engine.deploy(tag, ALICE)
    return list(engine.watch(record))


def test_moto_500_falls_back_once_without_a_retry_storm(
    aws: MotoServer,
    stack: LocalStack,
    simulator: RolloutSimulator,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """moto's server answers HTTP 500 to operations it lacks: deploybot judges from
    DescribeServices as before, says so once, and asks once (botocore's retries would make a
    500 ten requests at every poll)."""
    caplog.set_level(logging.INFO)
    snaps = _deploy_and_follow(engine, "v4.4.0")
    assert snaps[-1].outcome is Outcome.COMPLETED
    assert all(s.service_deployment is None for s in snaps)
    asked = sum(aws.requests.count("ecs", op) for op in NEW_OPERATIONS)
    assert asked == 1, f"the refused operations were asked {asked} times"
    assert len(refusals(caplog)) == 1
    (last,) = engine.history(1)
    assert last.outcome is Outcome.COMPLETED and last.ecs_status == ""
    # A second deployment within the fallback's window does not ask again.
    snaps = _deploy_and_follow(engine, "v4.5.0")
    assert snaps[-1].outcome is Outcome.COMPLETED
    assert sum(aws.requests.count("ecs", op) for op in NEW_OPERATIONS) == 1
    assert len(refusals(caplog)) == 1


def test_access_denied_falls_back_and_says_so_once(
    stack: LocalStack,
    simulator: RolloutSimulator,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bot's role without the new actions: AccessDeniedException, the old judgement."""
    caplog.set_level(logging.INFO)
    for op in NEW_OPERATIONS:
        proxy.refuse("ecs", op, code="AccessDeniedException")
    engine = Engine(through(stack.settings, proxy))
    try:
        simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
        snaps = _deploy_and_follow(engine, "v4.5.0")
    finally:
        engine.close()
    final = snaps[-1]
    assert final.outcome is Outcome.ROLLED_BACK and final.service_deployment is None
    assert "circuit breaker" in final.outcome_reason
    asked = sum(proxy.count("ecs", op) for op in NEW_OPERATIONS)
    assert asked == 1
    (said,) = refusals(caplog)
    assert "AccessDeniedException" in said and "DescribeServices" in said
