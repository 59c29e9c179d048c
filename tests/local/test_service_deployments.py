"""ECS service deployments in the simulation, seen only through boto3 over HTTP.

Every answer the simulation gives for the service-deployment operations is checked against
botocore's own ECS model by the shape walker of tests/local/shapes.py (the ``wire`` fixture):
member names, types, enums and required members, recursively, on the raw JSON body as it crossed
the wire; error answers must be among the operation's documented errors. Nothing here is a
hand-written expectation of a shape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator, failure_threshold
from bot.local.stack import add_deployment_alarm
from tests.conftest import LocalStack
from tests.local.shapes import (
    DEPLOYMENT_ARN,
    MODEL,
    OPERATIONS,
    REVISION_ARN,
    Wire,
    follow,
    latest,
    statuses,
    walk,
)
from tests.local.test_simulator import _deploy, _service

ALARM = "hello-world-ecr-ecs-fargate-5xx"


def _with_alarms(stack: LocalStack, *, rollback: bool = True) -> None:
    """A 5xx alarm in CloudWatch (OK) and the service's deployment alarms naming it."""
    assert add_deployment_alarm(stack.info, stack.settings, rollback=rollback) == ALARM


def _set_alarm(state: str) -> None:
    boto3.client("cloudwatch").set_alarm_state(
        AlarmName=ALARM, StateValue=state, StateReason=f"test sets {state}"
    )


# --- the walker itself can fail ------------------------------------------------------------------


def test_the_walker_finds_what_the_model_does_not_allow() -> None:
    shape = MODEL.operation_model("DescribeServiceDeployments").output_shape
    good = {
        "serviceDeployments": [
            {"serviceDeploymentArn": "a", "status": "SUCCESSFUL", "createdAt": 1.5}
        ],
        "failures": [{"arn": "b", "reason": "MISSING"}],
    }
    assert walk(shape, good) == []
    bad = {
        "serviceDeployments": [
            {
                "serviceDeploymentArn": 1,
                "status": "DONE",
                "createdAt": "today",
                "deploymentCircuitBreaker": {"failureCount": "3"},
                "colour": "blue",
            }
        ],
        "failures": {},
    }
    problems = walk(shape, bad)
    for expected in (
        "wants a string",
        "'DONE' is not one of",
        "wants epoch seconds",
        "wants an integer",
        "no member 'colour'",
        "wants a list",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    missing = walk(MODEL.shape_for("DeploymentAlarms"), {"enable": True})
    assert any("required member 'alarmNames'" in p for p in missing), missing


# --- scenarios -----------------------------------------------------------------------------------


def test_the_service_starts_with_a_successful_service_deployment(
    stack: LocalStack, wire: Wire
) -> None:
    [arn] = wire.arns(stack)
    assert DEPLOYMENT_ARN.fullmatch(arn)
    cluster, service = stack.settings.ecs_cluster, stack.settings.ecs_service
    assert f":service-deployment/{cluster}/{service}/" in arn
    deployment = wire.get(arn)
    assert deployment["status"] == "SUCCESSFUL"
    assert deployment["sourceServiceRevisions"] == []
    revision = wire.revision(deployment["targetServiceRevision"]["arn"])
    assert REVISION_ARN.fullmatch(revision["serviceRevisionArn"])
    assert revision["taskDefinition"] == stack.info.task_definition_arn
    [image] = revision["containerImages"]
    assert image["imageDigest"] == stack.info.release("v4.3.0").digest


def test_a_healthy_rollout_is_a_successful_service_deployment(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    sim = RolloutSimulator(aws)
    [first] = wire.arns(stack)
    task_definition, _ = _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    assert arn != first and DEPLOYMENT_ARN.fullmatch(arn)
    seen = follow(wire, sim, arn)
    assert statuses(seen) == ["PENDING", "IN_PROGRESS", "SUCCESSFUL"]
    final = seen[-1]
    assert final["createdAt"] <= final["startedAt"] <= final["finishedAt"]
    assert "stoppedAt" not in final and "rollback" not in final
    assert final["deploymentCircuitBreaker"] == {
        "status": "MONITORING_COMPLETE",
        "failureCount": 0,
        "threshold": failure_threshold(3),
    }
    assert final["alarms"]["status"] == "DISABLED"
    [source] = final["sourceServiceRevisions"]
    assert source["arn"] == wire.get(first)["targetServiceRevision"]["arn"]
    assert source["runningTaskCount"] == 0
    assert final["targetServiceRevision"]["runningTaskCount"] == 3
    in_flight = [d for d in seen if d["status"] == "IN_PROGRESS"]
    assert {d["lifecycleStage"] for d in in_flight} == {"SCALE_UP"}
    assert any(0 < d["targetServiceRevision"]["runningTaskCount"] < 3 for d in in_flight)
    revision = wire.revision(final["targetServiceRevision"]["arn"])
    assert revision["taskDefinition"] == task_definition
    assert revision["containerImages"][0]["imageDigest"] == stack.info.release("v4.4.0").digest
    assert _service(stack)["deployments"][0]["rolloutState"] == "COMPLETED"


def test_the_circuit_breaker_rolls_the_service_deployment_back(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    sim = RolloutSimulator(aws, broken={"v4.5.0-ecr-ecs-fargate"})
    [first] = wire.arns(stack)
    _deploy(stack, "v4.5.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    seen = follow(wire, sim, arn)
    assert statuses(seen) == [
        "PENDING",
        "IN_PROGRESS",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_SUCCESSFUL",
    ]
    final = seen[-1]
    breaker = final["deploymentCircuitBreaker"]
    assert breaker["status"] == "TRIGGERED"
    assert breaker["failureCount"] >= breaker["threshold"] == failure_threshold(3)
    source = wire.get(first)["targetServiceRevision"]["arn"]
    assert final["rollback"]["serviceRevisionArn"] == source
    assert "circuit breaker" in final["rollback"]["reason"]
    assert final["statusReason"] == final["rollback"]["reason"]
    assert final["startedAt"] <= final["rollback"]["startedAt"] <= final["finishedAt"]
    # The rollback is the same service deployment, not one of its own (service-deployment.html).
    assert wire.arns(stack) == [arn, first]
    service = _service(stack)
    assert service["taskDefinition"] == stack.info.task_definition_arn
    # DescribeServices tells the same story as before.
    assert [d["rolloutState"] for d in service["deployments"]] == ["COMPLETED"]


def test_a_rollback_that_fails_ends_rollback_failed(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    sim = RolloutSimulator(aws, broken={"v4.5.0-ecr-ecs-fargate"})
    _deploy(stack, "v4.5.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    sim.tick()
    sim.mark_broken("v4.3.0-ecr-ecs-fargate")
    final = follow(wire, sim, arn)[-1]
    assert final["status"] == "ROLLBACK_FAILED"
    assert final["rollback"]["serviceRevisionArn"]
    assert "rollback failed" in final["statusReason"]


def test_an_alarm_during_the_bake_rolls_back(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    _with_alarms(stack)
    sim = RolloutSimulator(aws, bake_ticks=50)
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    seen = [wire.get(arn)]
    while seen[-1].get("lifecycleStage") != "BAKE_TIME":
        assert len(seen) < 60, seen[-1]
        sim.tick()
        seen.append(wire.get(arn))
    baking = seen[-1]
    assert baking["status"] == "IN_PROGRESS"
    assert baking["alarms"] == {
        "status": "MONITORING",
        "alarmNames": [ALARM],
        "triggeredAlarmNames": [],
    }
    assert baking["targetServiceRevision"]["runningTaskCount"] == 3
    assert _service(stack)["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    sim.tick(3)
    assert wire.get(arn)["status"] == "IN_PROGRESS"  # still baking: nothing fired

    _set_alarm("ALARM")
    seen = follow(wire, sim, arn)
    assert statuses(seen) == ["IN_PROGRESS", "ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL"]
    final = seen[-1]
    assert final["alarms"] == {
        "status": "TRIGGERED",
        "alarmNames": [ALARM],
        "triggeredAlarmNames": [ALARM],
    }
    assert ALARM in final["statusReason"] and ALARM in final["rollback"]["reason"]
    service = _service(stack)
    assert service["taskDefinition"] == stack.info.task_definition_arn
    assert any("alarm detected" in e["message"] for e in service["events"])


def test_a_bake_without_alarm_ends_successful_after_the_bake_time(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    _with_alarms(stack)
    sim = RolloutSimulator(aws, bake_ticks=4)
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    seen = follow(wire, sim, arn)
    baking = [
        d for d in seen if d.get("lifecycleStage") == "BAKE_TIME" and d["status"] == "IN_PROGRESS"
    ]
    assert len(baking) == 4
    assert seen[-1]["status"] == "SUCCESSFUL"
    assert seen[-1]["alarms"]["status"] == "MONITORING_COMPLETE"


def test_an_alarming_image_fires_its_alarm_during_the_bake(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    """The playground's "healthy, but its 5xx alarm fires after start": the scale-up completes,
    the alarm goes to ALARM in the bake, ECS rolls back, and the alarm is OK again after."""
    _with_alarms(stack)
    sim = RolloutSimulator(aws, bake_ticks=6)
    sim.mark_alarming("v4.4.0-ecr-ecs-fargate")
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    seen = follow(wire, sim, arn)
    assert statuses(seen) == [
        "PENDING",
        "IN_PROGRESS",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_SUCCESSFUL",
    ]
    baked = [
        d for d in seen if d.get("lifecycleStage") == "BAKE_TIME" and d["status"] == "IN_PROGRESS"
    ]
    assert 1 <= len(baked) <= 4  # fired halfway through the bake, not at once
    assert all(d["targetServiceRevision"]["runningTaskCount"] == 3 for d in baked)
    assert seen[-1]["alarms"]["triggeredAlarmNames"] == [ALARM]
    cloudwatch = boto3.client("cloudwatch")
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"]
    assert alarm["StateValue"] == "OK"
    assert alarm["StateReason"].startswith("Threshold Crossed")


def test_an_alarm_without_rollback_stops_the_deployment(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    _with_alarms(stack, rollback=False)
    _set_alarm("ALARM")
    sim = RolloutSimulator(aws)
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    final = follow(wire, sim, arn)[-1]
    assert final["status"] == "STOPPED"
    assert final["alarms"]["triggeredAlarmNames"] == [ALARM]
    assert "rollback" not in final
    assert _service(stack)["deployments"][0]["rolloutState"] == "FAILED"


def test_stop_with_rollback_restores_the_source_revision(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    sim = RolloutSimulator(aws)
    [first] = wire.arns(stack)
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    sim.tick(3)
    assert (
        wire.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")[
            "serviceDeploymentArn"
        ]
        == arn
    )
    assert wire.get(arn)["status"] == "ROLLBACK_REQUESTED"
    # Asked again while it rolls back: it carries on (stop-service-deployment.html).
    wire.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")
    seen = follow(wire, sim, arn)
    assert statuses(seen) == ["ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL"]
    final = seen[-1]
    assert (
        final["rollback"]["serviceRevisionArn"] == wire.get(first)["targetServiceRevision"]["arn"]
    )
    assert "StopServiceDeployment" in final["rollback"]["reason"]
    assert _service(stack)["taskDefinition"] == stack.info.task_definition_arn
    # Finished: a second stop is a conflict.
    with pytest.raises(ClientError) as refused:
        wire.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")
    assert refused.value.response["Error"]["Code"] == "ConflictException"


def test_stop_with_abort_stops_where_it_is(stack: LocalStack, aws: MotoServer, wire: Wire) -> None:
    sim = RolloutSimulator(aws)
    task_definition, _ = _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    arn = latest(wire, stack)
    sim.tick(3)
    wire.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ABORT")
    assert wire.get(arn)["status"] == "STOP_REQUESTED"
    final = follow(wire, sim, arn)[-1]
    assert final["status"] == "STOPPED"
    assert final["stoppedAt"] == final["finishedAt"]
    assert "rollback" not in final
    service = _service(stack)
    assert service["taskDefinition"] == task_definition
    assert service["deployments"][0]["rolloutState"] == "FAILED"


def test_a_newer_deployment_stops_the_one_in_flight(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    sim = RolloutSimulator(aws)
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    older = latest(wire, stack)
    sim.tick(2)
    _deploy(stack, "v4.5.0-ecr-ecs-fargate")
    newer = latest(wire, stack)
    assert newer != older
    assert wire.get(older)["status"] == "STOPPED"
    final = follow(wire, sim, newer)[-1]
    assert final["status"] == "SUCCESSFUL"
    assert len(final["sourceServiceRevisions"]) == 2


def test_errors_and_failures_as_ecs_answers_them(stack: LocalStack, wire: Wire) -> None:
    [arn] = wire.arns(stack)
    unknown = arn[:-22] + "A" * 22
    answer = wire.ecs.describe_service_deployments(serviceDeploymentArns=[arn, unknown])
    assert [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]] == [arn]
    assert answer["failures"] == [{"arn": unknown, "reason": "MISSING"}]
    revision = wire.get(arn)["targetServiceRevision"]["arn"]
    answer = wire.ecs.describe_service_revisions(serviceRevisionArns=[revision, unknown])
    assert answer["failures"] == [{"arn": unknown, "reason": "MISSING"}]

    def code(call: Any, **kwargs: Any) -> str:
        with pytest.raises(ClientError) as refused:
            call(**kwargs)
        return str(refused.value.response["Error"]["Code"])

    ecs = wire.ecs
    assert code(ecs.describe_service_deployments, serviceDeploymentArns=[arn] * 21) == (
        "InvalidParameterException"
    )
    assert code(ecs.stop_service_deployment, serviceDeploymentArn=unknown) == (
        "ServiceDeploymentNotFoundException"
    )
    assert code(ecs.stop_service_deployment, serviceDeploymentArn="nonsense") == (
        "InvalidParameterException"
    )
    assert code(ecs.stop_service_deployment, serviceDeploymentArn=arn) == "ConflictException"
    assert code(ecs.continue_service_deployment, serviceDeploymentArn=arn, hookId="h") == (
        "InvalidParameterException"
    )
    assert code(ecs.continue_service_deployment, serviceDeploymentArn=unknown, hookId="h") == (
        "ServiceDeploymentNotFoundException"
    )
    assert (
        code(ecs.list_service_deployments, cluster=stack.settings.ecs_cluster, service="nope")
        == "ServiceNotFoundException"
    )
    assert code(ecs.list_service_deployments, cluster="nope", service="nope") == (
        "ClusterNotFoundException"
    )


def test_list_filters_and_pages(stack: LocalStack, aws: MotoServer, wire: Wire) -> None:
    sim = RolloutSimulator(aws)
    [first] = wire.arns(stack)
    _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    second = latest(wire, stack)
    follow(wire, sim, second)
    _deploy(stack, "v4.5.0-ecr-ecs-fargate")
    third = latest(wire, stack)
    assert wire.arns(stack) == [third, second, first]
    assert wire.arns(stack, status=["PENDING"]) == [third]
    assert wire.arns(stack, status=["SUCCESSFUL"]) == [second, first]
    created = wire.get(second)["createdAt"]
    assert wire.arns(stack, createdAt={"after": created}) == [third, second]
    assert wire.arns(stack, createdAt={"before": created - timedelta(microseconds=1)}) == [first]
    assert wire.arns(stack, createdAt={"after": datetime.now(UTC) + timedelta(days=1)}) == []
    pages, token = [], None
    while True:
        kwargs = {"maxResults": 1} | ({"nextToken": token} if token else {})
        answer = wire.ecs.list_service_deployments(
            cluster=stack.settings.ecs_cluster, service=stack.settings.ecs_service, **kwargs
        )
        pages.append([d["serviceDeploymentArn"] for d in answer["serviceDeployments"]])
        token = answer.get("nextToken")
        if not token:
            break
    assert pages == [[third], [second], [first]]
    # A deployment started between two pages neither repeats one nor hides one.
    answer = wire.ecs.list_service_deployments(
        cluster=stack.settings.ecs_cluster, service=stack.settings.ecs_service, maxResults=1
    )
    assert [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]] == [third]
    _deploy(stack, "v4.3.0-ecr-ecs-fargate")
    fourth = latest(wire, stack)
    answer = wire.ecs.list_service_deployments(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        maxResults=1,
        nextToken=answer["nextToken"],
    )
    assert [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]] == [second]
    assert wire.arns(stack)[:2] == [fourth, third]


# --- the switch that refuses the new operations --------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_refused_operations_answer_access_denied(
    stack: LocalStack, aws: MotoServer, wire: Wire, operation: str
) -> None:
    [arn] = wire.arns(stack)
    aws.faults.refuse("ecs", operation)
    calls: dict[str, Callable[[], Any]] = {
        "ListServiceDeployments": lambda: wire.arns(stack),
        "DescribeServiceDeployments": lambda: wire.get(arn),
        "DescribeServiceRevisions": lambda: wire.revision(arn),
        "StopServiceDeployment": lambda: wire.ecs.stop_service_deployment(serviceDeploymentArn=arn),
        "ContinueServiceDeployment": lambda: wire.ecs.continue_service_deployment(
            serviceDeploymentArn=arn, hookId="h"
        ),
    }
    with pytest.raises(ClientError) as refused:
        calls[operation]()
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"ecs:{operation}" in refused.value.response["Error"]["Message"]
    assert aws.requests.count("ecs", operation, throttled=True) == 1
    _service(stack)  # DescribeServices, the fallback, still answers


def test_unimplemented_operations_answer_as_moto_does(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    [arn] = wire.arns(stack)
    aws.faults.unimplement("ecs", "DescribeServiceDeployments")
    with pytest.raises(ClientError) as refused:
        wire.get(arn)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Internal Server Error" in str(refused.value)
    wire.seen.clear()  # moto's 500 page is not an ECS answer; the rest are
    aws.faults.clear()
    assert wire.get(arn)["status"] == "SUCCESSFUL"
