"""The fleet: one engine per target, rules before plans, promotion by digest, batched reads.

Three targets against moto (tests/conftest.py's ``fleet_stack``): staging in a cluster of its
own; production (``after = "staging"``) and billing as two services of one cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord, Requester
from bot.deploy.rollout import Outcome
from bot.errors import ImageMissing, LockHeld, ServiceMissing
from bot.fleet import Ask, Fleet, NothingToPromote
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from bot.local.stack import _manifest, add_service
from bot.rules import Action, Door, Rule, RuleRefused
from bot.settings import Settings
from bot.targets import UnknownTarget
from tests.conftest import BILLING_SERVICE, STAGING_CLUSTER, STAGING_SERVICE, FleetStack, LocalStack

CLI = Ask.at(Door.CLI, Requester("operator", "cli"))


@pytest.fixture
def fleet(fleet_stack: FleetStack) -> Iterator[Fleet]:
    f = Fleet(fleet_stack.settings)
    yield f
    f.close()


def ecs(settings: Settings) -> Any:
    return boto3.client("ecs", endpoint_url=settings.aws_endpoint_url, region_name="eu-west-1")


def running_image(settings: Settings, cluster: str, service: str) -> str:
    client = ecs(settings)
    svc = client.describe_services(cluster=cluster, services=[service])["services"][0]
    td = client.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
    return str(td["containerDefinitions"][0]["image"])


def run(fleet: Fleet, target: str, action: Action, **kwargs: Any) -> DeploymentRecord:
    """Plan through the rules, start on the target's engine, follow to the end."""
    plan = fleet.plan(fleet.target(target), action, CLI, **kwargs)
    engine = fleet.engine(target)
    record = engine.start(plan)
    snaps = list(engine.watch(record))
    assert snaps, "no snapshot"
    return engine.ledger.get(record.id) or record


def test_one_engine_per_target_sharing_one_client(fleet: Fleet) -> None:
    staging, production = fleet.engine("staging"), fleet.engine("production")
    assert staging is fleet.engine("staging")
    assert (staging.aws.cluster, staging.aws.service) == (STAGING_CLUSTER, STAGING_SERVICE)
    assert production.aws.service == "hello-world-ecr-ecs-fargate"
    # One session and its boto3 clients, one batched DescribeServices; the table is shared.
    assert staging.aws.ecs is production.aws.ecs
    assert staging.aws.descriptions is production.aws.descriptions
    assert staging.settings.deploy_table == production.settings.deploy_table
    with pytest.raises(UnknownTarget) as unknown:
        fleet.target("stagin")
    assert "staging" in unknown.value.message and "production" in unknown.value.message


def test_promotion_deploys_the_digest_staging_ran_even_after_the_tag_moved(
    fleet_stack: FleetStack, fleet: Fleet, simulator: RolloutSimulator, aws: MotoServer
) -> None:
    settings = fleet_stack.settings
    done = run(fleet, "staging", Action.DEPLOY, tag="v4.4.0")
    assert done.outcome == Outcome.COMPLETED
    staged = fleet_stack.info.release("v4.4.0").digest
    assert done.digest == staged
    # The tag moves on in ECR after staging ran it: production must still get staging's image.
    ecr = boto3.client("ecr", endpoint_url=settings.aws_endpoint_url, region_name="eu-west-1")
    moved = ecr.put_image(
        repositoryName=settings.ecr_repository,
        imageManifest=_manifest("v4.4.0-rebuilt"),
        imageTag="v4.4.0-ecr-ecs-fargate",
    )["image"]["imageId"]["imageDigest"]
    assert moved != staged

    promoted = run(fleet, "production", Action.PROMOTE, source="staging")
    assert promoted.kind == "promote" and promoted.outcome == Outcome.COMPLETED
    assert promoted.digest == staged
    assert running_image(settings, settings.ecs_cluster, settings.ecs_service).endswith(
        "@" + staged
    )
    assert f"promoted from staging ({done.id})" in promoted.reason
    # Billing, in production's cluster, was not touched; its history and lock are its own.
    assert fleet.engine("billing").history(5) == []
    assert running_image(settings, settings.ecs_cluster, BILLING_SERVICE).endswith(
        ":v4.3.0-ecr-ecs-fargate"
    )


def test_production_takes_only_images_that_completed_on_staging(
    fleet_stack: FleetStack, fleet: Fleet, simulator: RolloutSimulator, aws: MotoServer
) -> None:
    aws.requests.clear()
    with pytest.raises(RuleRefused) as refused:
        fleet.plan(fleet.target("production"), Action.DEPLOY, CLI, tag="v4.4.0")
    assert refused.value.rule == Rule.AFTER
    assert "completed on staging" in refused.value.message
    assert aws.requests.count("ecs", "UpdateService") == 0
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
    # Once it completed on staging, a direct deploy of that image is allowed.
    run(fleet, "staging", Action.DEPLOY, tag="v4.4.0")
    plan = fleet.plan(fleet.target("production"), Action.DEPLOY, CLI, tag="v4.4.0")
    assert plan.digest == fleet_stack.info.release("v4.4.0").digest


def test_promotion_refused_when_staging_has_nothing_good(
    fleet_stack: FleetStack, fleet: Fleet, simulator: RolloutSimulator, aws: MotoServer
) -> None:
    production = fleet.target("production")
    with pytest.raises(NothingToPromote) as nothing:
        fleet.plan(production, Action.PROMOTE, CLI, source="staging")
    assert "staging has no deployments yet" in nothing.value.message
    # Staging's last deployment failed: refused, naming the rule, nothing written.
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    failed = run(fleet, "staging", Action.DEPLOY, tag="v4.5.0")
    assert failed.outcome != Outcome.COMPLETED
    aws.requests.clear()
    with pytest.raises(RuleRefused) as refused:
        fleet.plan(production, Action.PROMOTE, CLI, source="staging")
    assert refused.value.rule in (Rule.AFTER, Rule.PROMOTION), refused.value.rule
    assert aws.requests.count("ecs", "UpdateService") == 0


def test_promotion_refused_when_the_digest_is_gone_from_ecr(
    fleet_stack: FleetStack, fleet: Fleet, simulator: RolloutSimulator, aws: MotoServer
) -> None:
    settings = fleet_stack.settings
    done = run(fleet, "staging", Action.DEPLOY, tag="v4.4.0")
    ecr = boto3.client("ecr", endpoint_url=settings.aws_endpoint_url, region_name="eu-west-1")
    ecr.batch_delete_image(
        repositoryName=settings.ecr_repository, imageIds=[{"imageDigest": done.digest}]
    )
    aws.requests.clear()
    with pytest.raises(ImageMissing) as gone:
        fleet.plan(fleet.target("production"), Action.PROMOTE, CLI, source="staging")
    assert "no longer in ECR" in gone.value.message
    assert aws.requests.count("ecs", "UpdateService") == 0


def test_locks_are_per_target(
    fleet_stack: FleetStack, fleet: Fleet, simulator: RolloutSimulator
) -> None:
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    plan = fleet.plan(fleet.target("staging"), Action.DEPLOY, CLI, tag="v4.4.0")
    fleet.engine("staging").start(plan, follow=False)
    # Staging's lock is held: a second deploy there is refused; billing is free.
    with pytest.raises(LockHeld):
        fleet.engine("staging").start(
            fleet.plan(fleet.target("staging"), Action.DEPLOY, CLI, tag="v4.5.0"), follow=False
        )
    billing = run(fleet, "billing", Action.DEPLOY, tag="v4.5.0")
    assert billing.outcome == Outcome.COMPLETED


def test_status_of_every_target_is_one_describe_services_per_cluster(
    fleet_stack: FleetStack, fleet: Fleet, aws: MotoServer
) -> None:
    aws.requests.clear()
    rows = fleet.statuses()
    assert [r.target.name for r in rows] == ["staging", "production", "billing"]
    assert all(r.status is not None and r.status.tag == "v4.3.0-ecr-ecs-fargate" for r in rows)
    # Two clusters: staging's, and production's with billing beside it.
    assert aws.requests.count("ecs", "DescribeServices") == 2


def test_engine_changes_the_container_ecs_container_names(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """Two containers run the repository's image (web and worker); ECS_CONTAINER says which
    one the deploys change. Without it the first one would be changed."""
    settings = stack.settings
    client = ecs(settings)
    td = client.describe_task_definition(taskDefinition=stack.info.task_definition_arn)[
        "taskDefinition"
    ]
    web = td["containerDefinitions"][0]
    worker = {**web, "name": "worker", "portMappings": []}
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "cpu", "memory")
    two = client.register_task_definition(
        **{k: td[k] for k in keep},
        requiresCompatibilities=["FARGATE"],
        containerDefinitions=[web, worker],
    )["taskDefinition"]["taskDefinitionArn"]
    client.update_service(
        cluster=settings.ecs_cluster, service=settings.ecs_service, taskDefinition=two
    )
    engine = Engine(settings.model_copy(update={"ecs_container": "worker"}))
    try:
        record = engine.deploy("v4.4.0", Requester("operator", "cli"))
        list(engine.watch(record))
        new = client.describe_task_definition(
            taskDefinition=engine.ledger.get(record.id).task_definition
        )["taskDefinition"]
        images = {c["name"]: c["image"] for c in new["containerDefinitions"]}
        assert images["worker"].endswith("@" + stack.info.release("v4.4.0").digest)
        assert images[web["name"]] == web["image"]
    finally:
        engine.close()
    missing = Engine(settings.model_copy(update={"ecs_container": "sidecar"}))
    try:
        with pytest.raises(ServiceMissing) as named:
            missing.plan_deploy("v4.4.0", Requester("operator", "cli"))
        assert (
            "No container named sidecar" in named.value.message and "worker" in named.value.message
        )
    finally:
        missing.close()


def test_describe_services_takes_ten_a_call(
    fleet_stack: FleetStack, fleet: Fleet, aws: MotoServer
) -> None:
    """Eleven services of one cluster: two calls (the API takes at most ten a call)."""
    settings = fleet_stack.settings
    more = [f"hello-world-extra-{i}" for i in range(9)]
    for name in more:
        add_service(fleet_stack.info, settings, cluster=settings.ecs_cluster, service=name)
    keys = [(settings.ecs_cluster, s) for s in (settings.ecs_service, BILLING_SERVICE, *more)]
    aws.requests.clear()
    found = fleet.engine("production").aws.descriptions.many(keys)
    assert len(found) == 11 and all(found.values())
    assert aws.requests.count("ecs", "DescribeServices") == 2


def test_pollers_of_one_cluster_share_their_describe_services(
    fleet_stack: FleetStack, fleet: Fleet, simulator: RolloutSimulator, aws: MotoServer
) -> None:
    """Production and billing roll out at once, each engine polling its own service: one
    DescribeServices serves both (a poll loop per service would make one per poll)."""
    run(fleet, "staging", Action.DEPLOY, tag="v4.4.0")
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    # A poll interval well above a moto call's time, as in production (5 s).
    slow = Fleet(fleet_stack.settings.model_copy(update={"rollout_poll_seconds": 0.25}))
    try:
        plans = [
            slow.plan(slow.target("production"), Action.PROMOTE, CLI, source="staging"),
            slow.plan(slow.target("billing"), Action.DEPLOY, CLI, tag="v4.5.0"),
        ]
        engines = [slow.engine("production"), slow.engine("billing")]
        for engine, plan in zip(engines, plans, strict=True):
            engine.start(plan)
        deadline = time.monotonic() + 30
        while min(e.poller.polls for e in engines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        aws.requests.clear()
        polls = sum(e.poller.polls for e in engines)
        time.sleep(3.0)
        polls = sum(e.poller.polls for e in engines) - polls
        calls = aws.requests.count("ecs", "DescribeServices")
    finally:
        slow.close()
    assert polls >= 10, polls
    # Unbatched, calls == polls; batched, about half (one call serves both pollers).
    assert calls <= 0.75 * polls, (calls, polls)


def test_an_answer_from_before_a_write_is_not_kept_for_the_next_poll(
    fleet_stack: FleetStack, aws: MotoServer
) -> None:
    """Billing's poll carries production along; its answer left ECS before production's
    UpdateService and arrives after it (delayed on the wire). The next poll of production
    must see the write, not that answer."""
    settings = fleet_stack.settings
    with FaultProxy(aws.endpoint_url) as proxy:
        fleet = Fleet(settings.model_copy(update={"aws_endpoint_url": proxy.endpoint_url}))
        try:
            billing, production = fleet.engine("billing").aws, fleet.engine("production").aws
            production.describe_service(max_age=60)  # watched: it rides along
            client = ecs(settings)
            td = client.describe_task_definition(
                taskDefinition=fleet_stack.info.task_definition_arn
            )
            keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "cpu", "memory")
            new = client.register_task_definition(
                **{k: td["taskDefinition"][k] for k in keep},
                requiresCompatibilities=["FARGATE"],
                containerDefinitions=td["taskDefinition"]["containerDefinitions"],
            )["taskDefinition"]["taskDefinitionArn"]
            proxy.delay_answer("ecs", "DescribeServices", seconds=2.0)
            poll = threading.Thread(target=lambda: billing.describe_service(max_age=60))
            poll.start()
            deadline = time.monotonic() + 10
            while proxy.count("ecs", "DescribeServices", "delay") < 1:
                assert time.monotonic() < deadline, "the delayed poll never went out"
                time.sleep(0.01)
            time.sleep(0.3)  # moto has answered it: the answer waits in the proxy
            production.update_service(new)
            poll.join(timeout=30)
            after = production.describe_service(max_age=60)
            assert after is not None and after["taskDefinition"] == new
        finally:
            fleet.close()
