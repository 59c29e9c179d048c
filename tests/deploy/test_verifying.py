"""What the live message says of ECS's service deployment (bot/deploy/verifying.py), from
ServiceDeployment dicts in botocore's shape (each one checked against botocore's ECS model
first, so a test cannot feed a field ECS does not have)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest

from bot.deploy.verifying import progress_lines, rolled_back_line, verifying_line

T0 = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
REGION = "eu-west-1"
_MODEL = botocore.session.get_session().get_service_model("ecs")


def _conforms(value: Any, shape: Any, path: str = "ServiceDeployment") -> None:
    """``value`` has only members ``shape`` has, of its types (botocore's model)."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(value, dict), path
        for key, item in value.items():
            assert key in shape.members, f"{path}.{key} is not in botocore's model"
            _conforms(item, shape.members[key], f"{path}.{key}")
    elif kind == "list":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _conforms(item, shape.member, f"{path}[{i}]")
    elif kind == "timestamp":
        assert isinstance(value, datetime), path
    elif kind in ("integer", "long"):
        assert isinstance(value, int), path
    elif kind == "boolean":
        assert isinstance(value, bool), path
    elif kind == "string":
        assert isinstance(value, str), path
        assert not shape.enum or value in shape.enum, f"{path}: {value} not in {shape.enum}"


def deployment(**changes: Any) -> dict[str, Any]:
    """A rolling service deployment of 3 tasks with its alarm and circuit breaker watching."""
    sd: dict[str, Any] = {
        "serviceDeploymentArn": "arn:aws:ecs:eu-west-1:123456789012:service-deployment/c/s/abc",
        "status": "IN_PROGRESS",
        "lifecycleStage": "SCALE_UP",
        "createdAt": T0,
        "startedAt": T0,
        "updatedAt": T0 + timedelta(minutes=1),
        "targetServiceRevision": {
            "arn": "arn:aws:ecs:eu-west-1:123456789012:service-revision/c/s/2",
            "requestedTaskCount": 3,
            "runningTaskCount": 1,
            "pendingTaskCount": 2,
        },
        "sourceServiceRevisions": [
            {
                "arn": "arn:aws:ecs:eu-west-1:123456789012:service-revision/c/s/1",
                "requestedTaskCount": 0,
                "runningTaskCount": 3,
                "pendingTaskCount": 0,
            }
        ],
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "alarms": {"alarmNames": ["hello-world-5xx"], "enable": True, "rollback": True},
            "bakeTimeInMinutes": 6,
        },
        "deploymentCircuitBreaker": {"status": "MONITORING", "failureCount": 1, "threshold": 3},
        "alarms": {
            "status": "MONITORING",
            "alarmNames": ["hello-world-5xx"],
            "triggeredAlarmNames": [],
        },
    }
    for key, value in changes.items():
        if value is None:
            sd.pop(key, None)
        elif isinstance(value, dict) and isinstance(sd.get(key), dict):
            sd[key] = {**sd[key], **value}
        else:
            sd[key] = value
    _conforms(sd, _MODEL.shape_for("ServiceDeployment"))
    return sd


WHOLE = {"runningTaskCount": 3, "pendingTaskCount": 0}
GONE = [{"arn": "arn:aws:ecs:eu-west-1:123456789012:service-revision/c/s/1", "runningTaskCount": 0}]


def test_while_it_scales_up_the_stage_and_the_circuit_breakers_count() -> None:
    lines = progress_lines(deployment(), T0 + timedelta(minutes=2), REGION)
    assert lines == [
        "stage: SCALE_UP",
        "circuit breaker: 1 of 3 failed tasks before ECS rolls back",
    ]
    no_rollback = deployment(
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": False}}
    )
    assert "before ECS stops it" in progress_lines(no_rollback, T0, REGION)[-1]
    healthy = deployment(
        deploymentCircuitBreaker={"status": "MONITORING", "failureCount": 0, "threshold": 3}
    )
    assert progress_lines(healthy, T0 + timedelta(minutes=2), REGION) == ["stage: SCALE_UP"]


def test_while_ecs_bakes_alarms_ok_minutes_of_the_bake_time() -> None:
    baking = deployment(
        lifecycleStage="BAKE_TIME", targetServiceRevision=WHOLE, sourceServiceRevisions=GONE
    )
    now = T0 + timedelta(minutes=4, seconds=10)  # the bake began at updatedAt, T0 + 1 min
    assert progress_lines(baking, now, REGION) == [
        "verifying: alarms OK, 3 of ~6 min",
        "stage: BAKE_TIME",
        "circuit breaker: 1 of 3 failed tasks before ECS rolls back",
    ]
    # Under a minute in: seconds. Never past the bake time, whatever the clocks say.
    assert verifying_line(baking, T0 + timedelta(minutes=1, seconds=40)) == (
        "verifying: alarms OK, 40 s of ~6 min"
    )
    assert verifying_line(baking, T0 + timedelta(hours=1)) == "verifying: alarms OK, 6 of ~6 min"
    # The reader saw the bake before ECS's last update: the earlier counts.
    assert verifying_line(baking, now, seen_since=T0) == "verifying: alarms OK, 4 of ~6 min"


def test_whole_in_tasks_and_in_progress_with_alarms_watching_is_verifying_too() -> None:
    # No lifecycle stage (or one ECS does not say): every task new, none old, still going.
    whole = deployment(
        lifecycleStage=None, targetServiceRevision=WHOLE, sourceServiceRevisions=GONE
    )
    assert verifying_line(whole, T0 + timedelta(minutes=3)) == "verifying: alarms OK, 2 of ~6 min"
    assert verifying_line(deployment(lifecycleStage=None), T0) is None  # still scaling


def test_without_a_bake_time_ecs_sets_it_from_the_alarms() -> None:
    config = {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "alarms": {"alarmNames": ["hello-world-5xx"], "enable": True, "rollback": True},
    }
    sd = deployment(lifecycleStage="BAKE_TIME", deploymentConfiguration=config)
    sd["deploymentConfiguration"] = config
    assert verifying_line(sd, T0 + timedelta(minutes=3)) == (
        "verifying: alarms OK, 2 min so far (ECS sets the bake time from the alarms)"
    )


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("ROLLBACK_IN_PROGRESS", "rolling back: alarm hello-world-5xx went to ALARM at 14:03"),
        ("ROLLBACK_SUCCESSFUL", "rolled back: alarm hello-world-5xx went to ALARM at 14:03"),
        ("STOPPED", "stopped: alarm hello-world-5xx went to ALARM at 14:03"),
    ],
)
def test_failed_by_an_alarm_says_which_and_when(status: str, said: str) -> None:
    fired = deployment(
        status=status,
        alarms={"status": "TRIGGERED", "triggeredAlarmNames": ["hello-world-5xx"]},
        rollback={"reason": "alarm", "startedAt": T0 + timedelta(minutes=3, seconds=20)},
    )
    assert rolled_back_line(fired, REGION) == said
    # The alarm's own time, when the door read it while it was in ALARM, comes first.
    went = {"hello-world-5xx": T0 + timedelta(minutes=2, seconds=59)}
    assert rolled_back_line(fired, REGION, went).endswith("went to ALARM at 14:02")
    assert rolled_back_line(deployment(status=status), REGION) is None
