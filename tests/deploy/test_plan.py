"""The plan, before anything changes (issue 26 item 5): ``deploybot deploy … --dry-run`` shows
the task definition's diff from what runs and the checks of what the new revision needs; a
check that finds something missing refuses the change before any write; a check AWS refuses
is "could not verify" and does not block. In-process CLI (``bot.cli.main``) against moto's
server, the fault proxy in front of it where AWS must refuse."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from bot.deploy.plan_diff import as_registered
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.helpers import deploybot

LOG_GROUP = "/ecs/hello-world-ecr-ecs-fargate"


def client(stack: LocalStack, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=stack.info.endpoint_url, region_name=stack.info.region
    )


def changes(aws: MotoServer) -> list[str]:
    """The writes a deploy makes to ECS: none, for a plan."""
    return [
        r.operation
        for r in aws.requests
        if (r.service, r.operation) in {("ecs", "RegisterTaskDefinition"), ("ecs", "UpdateService")}
    ]


def move_service(stack: LocalStack, **container: Any) -> str:
    """Register a revision of the family with the container's fields changed, and move the
    service to it, outside deploybot (as the service's stack would): its ARN."""
    ecs = client(stack, "ecs")
    td = ecs.describe_task_definition(taskDefinition=stack.info.task_definition_arn)
    live = td["taskDefinition"]
    kwargs = as_registered(live)
    kwargs["containerDefinitions"] = [{**live["containerDefinitions"][0], **container}]
    arn = str(ecs.register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"])
    ecs.update_service(
        cluster=stack.settings.ecs_cluster, service=stack.settings.ecs_service, taskDefinition=arn
    )
    return arn


def test_dry_run_shows_the_task_definitions_diff_and_the_checks_and_changes_nothing(
    stack: LocalStack, aws: MotoServer
) -> None:
    done = deploybot("deploy", "v4.4.0", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    v43, v44 = stack.info.release("v4.3.0").digest, stack.info.release("v4.4.0").digest
    assert "Task definition: a new revision from hello-world-ecr-ecs-fargate:1 (nothing else" in out
    assert (
        f"image: v4.3.0-ecr-ecs-fargate ({v43[:19]}) → v4.4.0-ecr-ecs-fargate ({v44[:19]})" in out
    )
    assert "✓ task role hello-world-ecr-ecs-fargate-task exists" in out
    assert "✓ execution role hello-world-ecr-ecs-fargate-execution exists" in out
    assert f"✓ log group {LOG_GROUP} exists" in out
    assert "✓ image v4.4.0-ecr-ecs-fargate" in out
    assert "Dry run: nothing was changed." in out
    assert changes(aws) == []
    status = json.loads(deploybot("status", "--json").stdout)
    assert status["recent"] == [] and status["lock"] is None


def test_a_missing_log_group_refuses_the_deploy_before_any_change(
    stack: LocalStack, aws: MotoServer
) -> None:
    client(stack, "logs").delete_log_group(logGroupName=LOG_GROUP)
    aws.requests.clear()
    for args in (("--dry-run",), ()):
        done = deploybot("deploy", "v4.4.0", *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"log group {LOG_GROUP} does not exist" in done.stderr
        assert "Nothing was changed" in done.stderr
        assert "Traceback" not in done.stdout + done.stderr
    assert changes(aws) == []
    assert json.loads(deploybot("status", "--json").stdout)["lock"] is None


def test_a_missing_role_or_secret_refuses_the_deploy_naming_each(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    iam = client(stack, "iam")
    task_role = stack.info.task_role_arn.rsplit("/", 1)[-1]
    iam.delete_role(RoleName=task_role)
    missing = f"arn:aws:secretsmanager:{stack.info.region}:{stack.info.account_id}:secret:db-AbCdEf"
    move_service(
        stack,
        secrets=[
            {"name": "DB_PASSWORD", "valueFrom": f"{missing}:password::"},
            {"name": "API_TOKEN", "valueFrom": "/hello/api-token"},
        ],
    )
    aws.requests.clear()
    done = deploybot("deploy", "v4.4.0")
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.replace("\n", " ")
    assert f"task role {task_role} does not exist" in said
    assert "secret DB_PASSWORD (db-AbCdEf) does not exist" in said
    assert "secret API_TOKEN (/hello/api-token) does not exist" in said
    assert changes(aws) == []
    # No value was read: metadata only.
    reads = {(r.service, r.operation) for r in aws.requests}
    assert ("secretsmanager", "GetSecretValue") not in reads
    assert not any(op.startswith("GetParameter") for _, op in reads)


def test_a_group_ecs_creates_and_secrets_that_exist_pass(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    secret = client(stack, "secretsmanager").create_secret(Name="db", SecretString="hunter2")
    client(stack, "ssm").put_parameter(Name="/hello/api-token", Value="t", Type="SecureString")
    move_service(
        stack,
        secrets=[
            {"name": "DB_PASSWORD", "valueFrom": secret["ARN"]},
            {"name": "API_TOKEN", "valueFrom": "/hello/api-token"},
        ],
        logConfiguration={
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": "/ecs/not-yet",
                "awslogs-region": stack.info.region,
                "awslogs-stream-prefix": "hello",
                "awslogs-create-group": "true",
            },
        },
    )
    done = deploybot("deploy", "v4.4.0", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ secret DB_PASSWORD (db-" in done.stdout
    assert "✓ secret API_TOKEN (/hello/api-token) exists" in done.stdout
    assert "✓ log group /ecs/not-yet is created by ECS (awslogs-create-group)" in done.stdout


def test_a_check_aws_refuses_is_unverified_and_does_not_block(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    with FaultProxy(aws.endpoint_url) as proxy:
        proxy.refuse("iam", "GetRole", code="AccessDenied", status=403)
        proxy.refuse("logs", "DescribeLogGroups", code="AccessDeniedException")
        done = deploybot("deploy", "v4.4.0", AWS_ENDPOINT_URL=proxy.endpoint_url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "? could not verify task role hello-world-ecr-ecs-fargate-task (AWS refused" in out
    assert f"? could not verify log group {LOG_GROUP} (AWS refused the read: AccessDenied)" in out
    assert "✓ Deployed v4.4.0-ecr-ecs-fargate" in out


def test_a_newer_revision_nobody_deployed_is_named(stack: LocalStack, aws: MotoServer) -> None:
    """Someone registered a revision of the family that does not run: the plan says the new
    revision builds on what runs, not on it."""
    ecs = client(stack, "ecs")
    live = ecs.describe_task_definition(taskDefinition=stack.info.task_definition_arn)
    td = live["taskDefinition"]
    ecs.register_task_definition(**as_registered(td))
    done = deploybot("deploy", "v4.4.0", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "note: hello-world-ecr-ecs-fargate:2 was registered after hello-world-ecr-ecs-fargate:1"
        in done.stdout
    )


@pytest.mark.parametrize("command", [("redeploy",), ("rollback",)])
def test_dry_run_of_the_other_changes(
    stack: LocalStack, aws: MotoServer, command: tuple[str, ...]
) -> None:
    done = deploybot(*command, "--dry-run")
    if command == ("rollback",):  # nothing to roll back to on a fresh stack: refused, exit 2
        assert done.returncode == 2 and "Nothing to roll back to" in done.stderr
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Task definition: hello-world-ecr-ecs-fargate:1 runs again" in done.stdout
        assert "Dry run: nothing was changed." in done.stdout
    assert changes(aws) == []
