"""The local stack and the ECS rollout simulator, seen only through boto3 over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bot.local.aws import MotoServer
from bot.local.simulator import (
    CIRCUIT_BREAKER_REASON,
    CRASH_REASON,
    RolloutSimulator,
    failure_threshold,
)
from bot.local.stack import DEPLOY_TABLE_SCHEMA, SERVICE_CONTAINER, push_image
from tests.conftest import LocalStack

DEPLOYMENT_ID = re.compile(r"ecs-svc/\d{19}")
TASK_DEFINITION_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "runtimePlatform",
)


def _ecs() -> Any:
    return boto3.client("ecs")


def _service(stack: LocalStack) -> dict[str, Any]:
    settings = stack.settings
    answer = _ecs().describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
    return dict(answer["services"][0])


def _deploy(stack: LocalStack, tag: str) -> tuple[str, str]:
    """What the engine will do: a new revision with the image swapped, then update_service.
    Returns the new task definition's ARN and the new deployment's id."""
    ecs = _ecs()
    current = ecs.describe_task_definition(taskDefinition=_service(stack)["taskDefinition"])
    definition = current["taskDefinition"]
    containers = [
        {**c, "image": stack.info.image(tag)} if c["name"] == SERVICE_CONTAINER else c
        for c in definition["containerDefinitions"]
    ]
    arn = ecs.register_task_definition(
        **{k: definition[k] for k in TASK_DEFINITION_FIELDS if k in definition},
        containerDefinitions=containers,
    )["taskDefinition"]["taskDefinitionArn"]
    service = ecs.update_service(
        cluster=stack.settings.ecs_cluster, service=stack.settings.ecs_service, taskDefinition=arn
    )["service"]
    primary = [d for d in service["deployments"] if d["status"] == "PRIMARY"]
    assert len(primary) == 1
    return arn, primary[0]["id"]


def _run(sim: RolloutSimulator, stack: LocalStack, max_ticks: int = 60) -> list[dict[str, Any]]:
    """Tick until no deployment is IN_PROGRESS; every describe_services seen on the way."""
    seen = []
    for _ in range(max_ticks):
        sim.tick()
        service = _service(stack)
        seen.append(service)
        if all(d["rolloutState"] != "IN_PROGRESS" for d in service["deployments"]):
            return seen
    raise AssertionError(f"still rolling out after {max_ticks} ticks: {seen[-1]['deployments']}")


def _tasks(stack: LocalStack, desired_status: str) -> list[dict[str, Any]]:
    ecs = _ecs()
    arns = ecs.list_tasks(
        cluster=stack.settings.ecs_cluster,
        serviceName=stack.settings.ecs_service,
        desiredStatus=desired_status,
    )["taskArns"]
    if not arns:
        return []
    return list(ecs.describe_tasks(cluster=stack.settings.ecs_cluster, tasks=arns)["tasks"])


def _messages(service: dict[str, Any]) -> list[str]:
    return [e["message"] for e in service["events"]]


# --- the stack ----------------------------------------------------------------------------------


def test_stack_starts_settled(stack: LocalStack) -> None:
    service = _service(stack)
    assert service["desiredCount"] == service["runningCount"] == 3
    assert service["pendingCount"] == 0
    [deployment] = service["deployments"]
    assert deployment["status"] == "PRIMARY"
    assert DEPLOYMENT_ID.fullmatch(deployment["id"])
    assert deployment["rolloutState"] == "COMPLETED"
    assert deployment["rolloutStateReason"] == f"ECS deployment {deployment['id']} completed."
    assert deployment["taskDefinition"] == stack.info.task_definition_arn
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }
    assert service["launchType"] == "FARGATE"
    running = _tasks(stack, "RUNNING")
    assert len(running) == 3
    assert {t["lastStatus"] for t in running} == {"RUNNING"}
    assert {t["startedBy"] for t in running} == {deployment["id"]}


def test_stack_task_definition_is_the_services(stack: LocalStack) -> None:
    definition = _ecs().describe_task_definition(taskDefinition=stack.info.task_definition_arn)[
        "taskDefinition"
    ]
    assert definition["family"] == stack.settings.ecs_service
    assert definition["networkMode"] == "awsvpc"
    assert "FARGATE" in definition["requiresCompatibilities"]
    assert definition["executionRoleArn"] == stack.info.execution_role_arn
    assert definition["taskRoleArn"] == stack.info.task_role_arn
    [container] = definition["containerDefinitions"]
    assert container["name"] == "hello-world"
    region, repo = stack.info.region, stack.settings.ecr_repository
    assert container["image"] == (
        f"{stack.info.account_id}.dkr.ecr.{region}.amazonaws.com/{repo}:v4.3.0-ecr-ecs-fargate"
    )
    assert container["portMappings"][0]["containerPort"] == 49000
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["environment"]
    iam = boto3.client("iam")
    for arn in (stack.info.execution_role_arn, stack.info.task_role_arn):
        assert iam.get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]["Arn"] == arn


def test_stack_images_are_pushed_as_ci_pushes_them(stack: LocalStack) -> None:
    ecr = boto3.client("ecr")
    images = ecr.describe_images(repositoryName=stack.settings.ecr_repository)["imageDetails"]
    assert len(images) == 3
    by_tag = {tag: image for image in images for tag in image["imageTags"]}
    for version, minor in (("v4.3.0", "v4.3"), ("v4.4.0", "v4.4"), ("v4.5.0", "v4.5")):
        release = stack.info.release(version)
        assert by_tag[f"{version}-ecr-ecs-fargate"]["imageDigest"] == release.digest
        assert by_tag[f"{minor}-ecr-ecs-fargate"]["imageDigest"] == release.digest
        assert by_tag[f"sha-{release.sha[:7]}-ecr-ecs-fargate"]["imageDigest"] == release.digest
    # The moving major tag ends on the newest release; pushes are ordered by pushedAt.
    assert by_tag["v4-ecr-ecs-fargate"]["imageDigest"] == stack.info.release("v4.5.0").digest
    newest_first = sorted(images, key=lambda i: i["imagePushedAt"], reverse=True)
    assert [i["imageDigest"] for i in newest_first] == [
        stack.info.release(v).digest for v in ("v4.5.0", "v4.4.0", "v4.3.0")
    ]

    release = push_image(stack.info.endpoint_url, stack.settings, "v4.6.0")
    by_tag = {
        tag: image
        for image in ecr.describe_images(repositoryName=stack.settings.ecr_repository)[
            "imageDetails"
        ]
        for tag in image["imageTags"]
    }
    assert by_tag["v4-ecr-ecs-fargate"]["imageDigest"] == release.digest
    assert by_tag["v4.5-ecr-ecs-fargate"]["imageDigest"] == stack.info.release("v4.5.0").digest
    assert by_tag["v4.6.0-ecr-ecs-fargate"]["imagePushedAt"] >= newest_first[0]["imagePushedAt"]


def test_stack_deploy_table(stack: LocalStack) -> None:
    dynamodb = boto3.client("dynamodb")
    table = dynamodb.describe_table(TableName=stack.settings.deploy_table)["Table"]
    assert table["KeySchema"] == DEPLOY_TABLE_SCHEMA["KeySchema"]
    assert (
        sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"])
        == (DEPLOY_TABLE_SCHEMA["AttributeDefinitions"])
    )
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=stack.settings.deploy_table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"


# --- rollouts -----------------------------------------------------------------------------------


def test_healthy_rollout_completes_on_the_new_image(stack: LocalStack, aws: MotoServer) -> None:
    sim = RolloutSimulator(aws)
    old_id = _service(stack)["deployments"][0]["id"]
    arn, new_id = _deploy(stack, "v4.4.0-ecr-ecs-fargate")

    # update_service answers with the new deployment already there, as ECS does.
    service = _service(stack)
    assert DEPLOYMENT_ID.fullmatch(new_id) and new_id != old_id
    assert [(d["id"], d["status"]) for d in service["deployments"]] == [
        (new_id, "PRIMARY"),
        (old_id, "ACTIVE"),
    ]
    primary = service["deployments"][0]
    assert primary["rolloutState"] == "IN_PROGRESS"
    assert primary["rolloutStateReason"] == f"ECS deployment {new_id} in progress."
    assert primary["taskDefinition"] == arn == service["taskDefinition"]
    assert (primary["desiredCount"], primary["runningCount"], primary["failedTasks"]) == (3, 0, 0)
    assert primary["createdAt"] <= primary["updatedAt"]

    seen = _run(sim, stack)
    assert len(seen) > 3, "a rollout takes several steps"
    assert any(s["deployments"][0]["pendingCount"] > 0 for s in seen)
    # Old tasks drain only as new ones are healthy: never fewer running than desired.
    assert min(s["runningCount"] for s in seen) >= 3
    final = seen[-1]
    [deployment] = final["deployments"]
    assert (deployment["id"], deployment["status"]) == (new_id, "PRIMARY")
    assert deployment["rolloutState"] == "COMPLETED"
    assert deployment["rolloutStateReason"] == f"ECS deployment {new_id} completed."
    assert (final["runningCount"], final["pendingCount"]) == (3, 0)
    assert final["taskDefinition"] == arn

    messages = _messages(final)
    name = stack.settings.ecs_service
    assert messages[0] == f"(service {name}) has reached a steady state."
    assert messages[1] == f"(service {name}) (deployment {new_id}) deployment completed."
    assert any(
        re.fullmatch(rf"\(service {name}\) has started 1 tasks: \(task [0-9a-f]{{32}}\)\.", m)
        for m in messages
    )
    assert any(
        m.startswith(f"(service {name}) has stopped 1 running tasks: (task ") for m in messages
    )

    running = _tasks(stack, "RUNNING")
    assert {t["startedBy"] for t in running} == {new_id}
    assert {t["containers"][0]["image"] for t in running} == {
        stack.info.image("v4.4.0-ecr-ecs-fargate")
    }
    stopped = _tasks(stack, "STOPPED")
    assert len(stopped) == 3
    assert {t["stoppedReason"] for t in stopped} == {
        f"Scaling activity initiated by (deployment {new_id})"
    }
    assert {t["startedBy"] for t in stopped} == {old_id}


def test_broken_image_trips_the_circuit_breaker_and_rolls_back(
    stack: LocalStack, aws: MotoServer
) -> None:
    broken = "v4.5.0-ecr-ecs-fargate"
    sim = RolloutSimulator(aws, broken={broken})
    old_id = _service(stack)["deployments"][0]["id"]
    old_arn = stack.info.task_definition_arn
    _, new_id = _deploy(stack, broken)

    seen = _run(sim, stack)

    def deployment(service: dict[str, Any], deployment_id: str) -> dict[str, Any] | None:
        return next((d for d in service["deployments"] if d["id"] == deployment_id), None)

    failed = [d for s in seen if (d := deployment(s, new_id)) and d["rolloutState"] == "FAILED"]
    assert failed, "the failed deployment shows as FAILED while the rollback runs"
    assert failed[0]["status"] == "ACTIVE"
    assert failed[0]["rolloutStateReason"] == CIRCUIT_BREAKER_REASON
    assert failed[0]["failedTasks"] >= failure_threshold(3) == 3
    # The rollback is a new deployment of the old task definition, not the old one revived.
    rollback_ids = {
        d["id"] for s in seen for d in s["deployments"] if d["id"] not in (old_id, new_id)
    }
    assert len(rollback_ids) == 1
    [rollback_id] = rollback_ids
    final = seen[-1]
    [primary] = final["deployments"]
    assert primary["id"] == rollback_id and primary["status"] == "PRIMARY"
    assert primary["rolloutState"] == "COMPLETED"
    assert primary["taskDefinition"] == final["taskDefinition"] == old_arn
    assert (final["runningCount"], final["pendingCount"]) == (3, 0)
    assert min(s["runningCount"] for s in seen) >= 3

    name = stack.settings.ecs_service
    messages = _messages(final)
    assert f"(service {name}) (deployment {new_id}) deployment failed: tasks failed to start." in (
        messages
    )
    assert f"(service {name}) rolling back to deployment {old_id}." in messages
    assert messages.index(f"(service {name}) rolling back to deployment {old_id}.") < (
        messages.index(
            f"(service {name}) (deployment {new_id}) deployment failed: tasks failed to start."
        )
    ), "events are newest first"

    crashed = [t for t in _tasks(stack, "STOPPED") if t["startedBy"] == new_id]
    reasons = [t["stoppedReason"] for t in crashed]
    assert reasons.count(CRASH_REASON) >= 3
    assert all(t["lastStatus"] == "STOPPED" and t.get("stoppedAt") for t in crashed)
    assert {
        t["containers"][0]["exitCode"] for t in crashed if t["stoppedReason"] == CRASH_REASON
    } == {1}
    assert {t["startedBy"] for t in _tasks(stack, "RUNNING")} == {rollback_id}


def test_broken_by_predicate(stack: LocalStack, aws: MotoServer) -> None:
    sim = RolloutSimulator(aws, broken=lambda tag: tag.startswith("v4.5"))
    _, new_id = _deploy(stack, "v4.5-ecr-ecs-fargate")
    final = _run(sim, stack)[-1]
    assert final["deployments"][0]["id"] != new_id
    assert final["taskDefinition"] == stack.info.task_definition_arn


def test_a_failed_rollback_is_not_rolled_back_again(stack: LocalStack, aws: MotoServer) -> None:
    sim = RolloutSimulator(aws, broken={"v4.5.0-ecr-ecs-fargate"})
    old_id = _service(stack)["deployments"][0]["id"]
    _, new_id = _deploy(stack, "v4.5.0-ecr-ecs-fargate")
    sim.tick()
    sim.mark_broken("v4.3.0-ecr-ecs-fargate")  # the old image breaks too, say its secrets went
    final = _run(sim, stack)[-1]
    states = {d["id"]: (d["status"], d["rolloutState"]) for d in final["deployments"]}
    assert states.pop(old_id) == ("ACTIVE", "COMPLETED")
    assert states.pop(new_id) == ("ACTIVE", "FAILED")
    assert list(states.values()) == [("PRIMARY", "FAILED")]
    # The old tasks were never drained.
    assert [t["startedBy"] for t in _tasks(stack, "RUNNING")].count(old_id) == 3


def test_force_new_deployment_redeploys_the_same_task_definition(
    stack: LocalStack, aws: MotoServer
) -> None:
    sim = RolloutSimulator(aws)
    old_id = _service(stack)["deployments"][0]["id"]
    service = _ecs().update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        forceNewDeployment=True,
    )["service"]
    [new_id] = [d["id"] for d in service["deployments"] if d["status"] == "PRIMARY"]
    assert new_id != old_id and DEPLOYMENT_ID.fullmatch(new_id)
    assert {d["taskDefinition"] for d in service["deployments"]} == {stack.info.task_definition_arn}
    final = _run(sim, stack)[-1]
    assert [(d["id"], d["rolloutState"]) for d in final["deployments"]] == [(new_id, "COMPLETED")]
    assert {t["startedBy"] for t in _tasks(stack, "RUNNING")} == {new_id}


def test_update_without_change_makes_no_deployment(stack: LocalStack) -> None:
    before = _service(stack)["deployments"]
    _ecs().update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        taskDefinition=stack.info.task_definition_arn,
    )
    assert [d["id"] for d in _service(stack)["deployments"]] == [d["id"] for d in before]


def test_slow_image_stays_pending(stack: LocalStack, aws: MotoServer) -> None:
    sim = RolloutSimulator(aws, slow_ticks=50)
    sim.mark_slow("v4.4.0-ecr-ecs-fargate")
    _, new_id = _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    sim.tick(30)
    service = _service(stack)
    primary = service["deployments"][0]
    assert (primary["id"], primary["rolloutState"]) == (new_id, "IN_PROGRESS")
    assert (primary["runningCount"], primary["pendingCount"]) == (0, 3)
    assert service["runningCount"] == 3  # the old tasks keep serving
    final = _run(sim, stack)[-1]
    assert final["deployments"][0]["rolloutState"] == "COMPLETED"


def test_simulator_thread_finishes_a_rollout_quickly(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    _, new_id = _deploy(stack, "v4.4.0-ecr-ecs-fargate")
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        deployments = _service(stack)["deployments"]
        if [(d["id"], d["rolloutState"]) for d in deployments] == [(new_id, "COMPLETED")]:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"not COMPLETED within 2 s at step {simulator.step_seconds}s")


# --- the server: throttling and the request log ---------------------------------------------


def test_throttling_refuses_then_adaptive_retries_get_through(
    stack: LocalStack, aws: MotoServer
) -> None:
    cluster, name = stack.settings.ecs_cluster, stack.settings.ecs_service
    aws.faults.throttle("ecs", "DescribeServices", times=3)
    no_retries = boto3.client(
        "ecs", config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )
    with pytest.raises(ClientError) as refused:
        no_retries.describe_services(cluster=cluster, services=[name])
    assert refused.value.response["Error"]["Code"] == "ThrottlingException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Other operations are not throttled.
    no_retries.list_services(cluster=cluster)

    adaptive = boto3.client("ecs", config=Config(retries={"max_attempts": 5, "mode": "adaptive"}))
    answer = adaptive.describe_services(cluster=cluster, services=[name])
    assert answer["services"][0]["serviceName"] == name
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert aws.requests.count("ecs", "DescribeServices") == 4
    assert aws.requests.count("ecs", "DescribeServices", throttled=True) == 3


def test_throttling_for_a_duration(stack: LocalStack, aws: MotoServer) -> None:
    table = stack.settings.deploy_table
    aws.faults.throttle("dynamodb", "GetItem", seconds=0.5)
    no_retries = boto3.client(
        "dynamodb", config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )
    key = {"pk": {"S": "lock"}, "sk": {"S": "lock"}}
    with pytest.raises(ClientError) as refused:
        no_retries.get_item(TableName=table, Key=key)
    assert refused.value.response["Error"]["Code"] == "ThrottlingException"
    adaptive = boto3.client(
        "dynamodb", config=Config(retries={"max_attempts": 10, "mode": "adaptive"})
    )
    started = time.monotonic()
    adaptive.get_item(TableName=table, Key=key)
    assert aws.requests.count("dynamodb", "GetItem", throttled=True) >= 1
    assert time.monotonic() - started < 10
    aws.faults.clear()
    no_retries.get_item(TableName=table, Key=key)


def test_request_log_counts_calls_from_this_and_other_processes(
    stack: LocalStack, aws: MotoServer
) -> None:
    cluster, name = stack.settings.ecs_cluster, stack.settings.ecs_service
    assert aws.requests.count("ecs", "DescribeServices") == 0
    for _ in range(3):
        _service(stack)
    _ecs().list_services(cluster=cluster)
    assert aws.requests.count("ecs", "DescribeServices") == 3
    assert aws.requests.count("ecs", "ListServices") == 1
    assert aws.requests.count("ecs") == 4
    child = (
        "import boto3; c = boto3.client('ecs'); "
        f"[c.describe_services(cluster={cluster!r}, services=[{name!r}]) for _ in range(2)]"
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    assert aws.requests.count("ecs", "DescribeServices") == 5
    entries = aws.requests.entries()
    assert [(e.service, e.operation) for e in entries][:4] == [("ecs", "DescribeServices")] * 3 + [
        ("ecs", "ListServices")
    ]
    aws.reset()
    assert len(aws.requests) == 0


def test_failure_threshold_is_ecs_rule() -> None:
    assert [failure_threshold(n) for n in (1, 3, 6, 7, 10, 400, 1000)] == [3, 3, 3, 4, 5, 200, 200]
