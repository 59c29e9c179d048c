"""The task definition's diff, field by field (bot/deploy/plan_diff.py): pure functions over
DescribeTaskDefinition's shape. Secret values never appear; plain values appear only when
neither the name nor the value looks like a secret."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.deploy.plan_diff import (
    Check,
    TaskPlan,
    clip_lines,
    diff,
    fingerprint,
    looks_secret,
    registration,
    summary_line,
    text_lines,
)

LIVE: dict[str, Any] = {
    "taskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/hello:7",
    "family": "hello",
    "revision": 7,
    "status": "ACTIVE",
    "taskRoleArn": "arn:aws:iam::123456789012:role/hello-task",
    "executionRoleArn": "arn:aws:iam::123456789012:role/hello-execution",
    "networkMode": "awsvpc",
    "cpu": "256",
    "memory": "512",
    "requiresCompatibilities": ["FARGATE"],
    "registeredAt": "2026-12-01T10:00:00Z",
    "containerDefinitions": [
        {
            "name": "hello",
            "image": "123.dkr.ecr.eu-west-1.amazonaws.com/hello:v4.3.0",
            "essential": True,
            "command": ["hello-world", "--port", "49000"],
            "portMappings": [{"containerPort": 49000, "hostPort": 49000, "protocol": "tcp"}],
            "environment": [
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "DB_PASSWORD", "value": "hunter2"},
                {"name": "DATABASE_URL", "value": "postgres://app:s3cret@db/app"},
            ],
            "secrets": [{"name": "API_TOKEN", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/a"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/a"}},
        }
    ],
}


def changed(**container: Any) -> dict[str, Any]:
    new = copy.deepcopy(LIVE)
    new["containerDefinitions"][0].update(container)
    return new


def texts(new: dict[str, Any]) -> list[str]:
    return [line.text for line in diff(LIVE, new, base="hello:7").lines]


def test_the_registration_is_what_runs_with_the_image_replaced_and_its_diff_only_that() -> None:
    new = registration(LIVE, "hello", "123.dkr.ecr.eu-west-1.amazonaws.com/hello@sha256:ab")
    assert "revision" not in new and "taskDefinitionArn" not in new and "status" not in new
    assert new["containerDefinitions"][0]["image"].endswith("@sha256:ab")
    d = diff(LIVE, new, base="hello:7", image_before="v4.3.0 (a)", image_after="v4.4.0 (b)")
    assert [line.text for line in d.lines] == ["image: v4.3.0 (a) → v4.4.0 (b)"]
    assert d.only_image


def test_environment_names_and_changed_values_but_never_a_secret_looking_one() -> None:
    env = [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "DB_PASSWORD", "value": "correct horse"},
        {"name": "DATABASE_URL", "value": "postgres://app:n3w@db/app"},
        {"name": "FEATURE", "value": "on"},
        {"name": "STRIPE_KEY", "value": "sk_live_123"},
    ]
    lines = texts(changed(environment=env))
    assert "environment: LOG_LEVEL: info → debug" in lines
    assert "environment: + FEATURE=on" in lines
    assert "environment: DB_PASSWORD changed (value hidden: it looks like a secret)" in lines
    assert "environment: DATABASE_URL changed (value hidden: it looks like a secret)" in lines
    assert "environment: + STRIPE_KEY (value hidden: it looks like a secret)" in lines
    shown = "\n".join(lines)
    for secret in ("hunter2", "correct horse", "s3cret", "n3w", "sk_live_123"):
        assert secret not in shown
    gone = texts(changed(environment=[{"name": "LOG_LEVEL", "value": "info"}]))
    assert "environment: - DB_PASSWORD" in gone and "environment: - DATABASE_URL" in gone


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("LOG_LEVEL", "info", False),
        ("PORT", "49000", False),
        ("MONKEY_COUNT", "3", False),  # "key" only as a word of its own
        ("GITHUB_TOKEN", "x", True),
        ("api-key", "x", True),
        ("SESSION_SECRET", "x", True),
        ("AWS_ACCESS_KEY_ID", "x", True),
        ("UPSTREAM", "https://user:pw@example.com", True),
        ("SLACK", "xoxb-123", True),
        ("CERT", "-----BEGIN CERTIFICATE-----", True),
    ],
)
def test_what_looks_like_a_secret(name: str, value: str, secret: bool) -> None:
    assert looks_secret(name, value) is secret


def test_command_arguments_that_look_secret_are_hidden() -> None:
    """A command or health check carries its secrets in the open as often as the environment
    does: ``--password=…``, ``--token …``, ``DB_PASSWORD=…``, a URL with a password, a token
    of a known form. Each such value is hidden; the rest of the command is shown."""
    command = [
        "hello-world",
        "--port",
        "49000",
        "--db-password=hunter2",
        "--api-token",
        "t0ps3cret",
        "STRIPE_KEY=sk_live_9",
        "--upstream",
        "https://user:pw@example.com/x",
        "--github",
        "ghp_abc123",
    ]
    health = {"command": ["CMD-SHELL", "curl -H auth=abc123 localhost"], "interval": 30}
    lines = texts(changed(command=command, healthCheck=health))
    shown = "\n".join(lines)
    for secret in ("hunter2", "t0ps3cret", "sk_live_9", "user:pw", "ghp_abc123"):
        assert secret not in shown, shown
    [line] = [x for x in lines if x.startswith("command: ")]
    assert "--port 49000 --db-password=••• --api-token ••• STRIPE_KEY=••• --upstream ••• " in line
    assert line.endswith("--github •••"), line


def test_secrets_by_name_only() -> None:
    lines = texts(
        changed(
            secrets=[
                {"name": "API_TOKEN", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/b"},
                {"name": "DB", "valueFrom": "arn:aws:secretsmanager:eu-west-1:1:secret:db-x"},
            ]
        )
    )
    assert "secrets: API_TOKEN changed (now from another secret)" in lines
    assert "secrets: + DB" in lines


def test_every_other_field_has_its_line_in_order() -> None:
    new = changed(
        image="123.dkr.ecr.eu-west-1.amazonaws.com/hello:v4.4.0",
        memory=1024,
        portMappings=[{"containerPort": 8080, "protocol": "tcp"}],
        healthCheck={"command": ["CMD", "true"], "interval": 10},
        entryPoint=["/bin/sh", "-c"],
        logConfiguration={"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/b"}},
        ulimits=[{"name": "nofile", "softLimit": 1, "hardLimit": 2}],
    )
    new["cpu"], new["executionRoleArn"], new["pidMode"] = "512", "arn:aws:iam::1:role/other", "task"
    d = diff(LIVE, new, base="hello:7")
    assert [line.kind for line in d.lines] == [
        "image",
        "resources",
        "resources",
        "roles",
        "ports",
        "health",
        "command",
        "logs",
        "other",
        "other",
    ]
    lines = [line.text for line in d.lines]
    assert "memory: unset → 1024" in lines
    assert "task cpu: 256 → 512" in lines
    assert "execution role: hello-execution → other" in lines
    assert "ports: 49000/tcp → 8080/tcp" in lines
    assert "health check: none → CMD true (interval 10)" in lines
    assert "entryPoint: unset → /bin/sh -c" in lines
    assert "log configuration: awslogs awslogs-group=/ecs/a → awslogs awslogs-group=/ecs/b" in lines
    assert "other fields changed: ulimits" in lines
    assert "other fields changed: pidMode" in lines
    assert not d.only_image
    summary = summary_line(d)
    assert summary.startswith("Task definition changes: image, resources (2), roles")


def test_what_describes_a_revision_is_not_a_difference() -> None:
    new = copy.deepcopy(LIVE)
    for key in ("taskDefinitionArn", "revision", "status", "registeredAt"):
        new.pop(key)
    new["compatibilities"] = ["EC2", "FARGATE"]
    new["containerDefinitions"][0]["mountPoints"] = []  # [] reads as missing
    new["volumes"] = []
    assert texts(new) == []


def test_the_fingerprint_moves_with_what_runs_what_registers_and_a_newer_revision() -> None:
    new = registration(LIVE, "hello", "hello@sha256:ab")
    one = fingerprint("hello:7", new)
    assert one == fingerprint("hello:7", copy.deepcopy(new))
    assert one != fingerprint("hello:8", new)
    assert one != fingerprint("hello:7", registration(LIVE, "hello", "hello@sha256:cd"))
    assert one != fingerprint("hello:7", new, newer="hello:9")


def test_the_text_puts_problems_first_and_clips_to_a_limit() -> None:
    d = diff(LIVE, LIVE, base="hello:7", registers=False)
    task = TaskPlan(
        d,
        (
            Check("task role", "t", "ok"),
            Check("log group", "/g", "unverified", "AccessDenied"),
            Check("secret", "S (s)", "missing"),
        ),
        "f",
    )
    lines = text_lines(task)
    assert lines[0] == "Task definition: hello:7 runs again (nothing in it changes)."
    assert lines[2:] == [
        "  ✗ secret S (s) does not exist",
        "  ? could not verify log group /g (AccessDenied)",
        "  ✓ task role t exists",
    ]
    many = [f"line {i}" for i in range(100)]
    clipped = clip_lines(many, 60)
    assert len(clipped) <= 60 and clipped.endswith("more")
    assert clip_lines(many[:2], 60) == "line 0\nline 1"


def test_the_new_revision_keeps_every_field_register_takes() -> None:
    """Found by the plan's "other fields changed" line: a revision with fault injection on (or
    a trusted execution configuration) lost it in the revision a deploy registered, as the
    fields kept were a hand-written list older than those fields."""
    live = {
        **copy.deepcopy(LIVE),
        "enableFaultInjection": True,
        "trustedExecutionConfiguration": {"type": "x"},
    }
    new = registration(live, "hello", "hello@sha256:ab")
    assert new["enableFaultInjection"] is True
    assert new["trustedExecutionConfiguration"] == {"type": "x"}
    assert [line.kind for line in diff(live, new, base="hello:7").lines] == ["image"]
