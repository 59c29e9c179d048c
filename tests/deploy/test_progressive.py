"""Reading how ECS shifts traffic from its service deployment (bot/deploy/progressive.py):
every sample is held to botocore's own ServiceDeployment shape first, so the reading is of the
documented API's form, not of a form made up here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from bot.deploy.progressive import Shift, StepClock

NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
ARN = "arn:aws:ecs:eu-west-1:123456789012:service-deployment/hello/hello/AbCdEfGhIjKlMnOpQrStUv"
REVISION = "arn:aws:ecs:eu-west-1:123456789012:service-revision/hello/hello/"


def _shape() -> Any:
    return botocore.session.get_session().get_service_model("ecs").shape_for("ServiceDeployment")


def service_deployment(
    strategy: str,
    stage: str,
    new: float,
    *,
    config: dict[str, Any] | None = None,
    status: str = "IN_PROGRESS",
    hooks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ServiceDeployment as DescribeServiceDeployments gives it, checked against botocore."""
    sd: dict[str, Any] = {
        "serviceDeploymentArn": ARN,
        "status": status,
        "lifecycleStage": stage,
        "createdAt": NOW - timedelta(minutes=20),
        "targetServiceRevision": {
            "arn": REVISION + "2",
            "requestedTaskCount": 3,
            "runningTaskCount": 3,
            "pendingTaskCount": 0,
            "requestedProductionTrafficWeight": new,
            "requestedTestTrafficWeight": 100.0,
        },
        "sourceServiceRevisions": [
            {
                "arn": REVISION + "1",
                "requestedTaskCount": 3,
                "runningTaskCount": 3,
                "pendingTaskCount": 0,
                "requestedProductionTrafficWeight": 100.0 - new,
                "requestedTestTrafficWeight": 0.0,
            }
        ],
        "deploymentConfiguration": {"strategy": strategy, "bakeTimeInMinutes": 5, **(config or {})},
        "deploymentCircuitBreaker": {"status": "MONITORING", "failureCount": 1, "threshold": 3},
        "lifecycleHookDetails": hooks or [],
    }
    report = ParamValidator().validate(sd, _shape())
    assert not report.has_errors(), report.generate_report()
    return sd


CANARY = {"canaryConfiguration": {"canaryPercent": 10.0, "canaryBakeTimeInMinutes": 10}}
LINEAR = {"linearConfiguration": {"stepPercent": 10.0, "stepBakeTimeInMinutes": 3}}


def test_a_canary_baking_says_its_split_and_how_long_it_has_baked() -> None:
    shift = Shift.of(service_deployment("CANARY", "PRODUCTION_TRAFFIC_SHIFT", 10.0, config=CANARY))
    assert shift is not None and shift.shifts_traffic and not shift.paused
    since = NOW - timedelta(minutes=4, seconds=30)
    assert shift.describe("v4.4.0", "v4.3.0", since, NOW) == (
        "canary: 10% on v4.4.0, 90% on v4.3.0, baking 4 of 10 min"
    )
    assert (shift.failure_count, shift.failure_threshold) == (1, 3)


def test_linear_steps_are_counted_with_their_percentages() -> None:
    shift = Shift.of(service_deployment("LINEAR", "PRODUCTION_TRAFFIC_SHIFT", 30.0, config=LINEAR))
    assert shift is not None and (shift.step, shift.steps) == (3, 10)
    assert shift.describe("v4.4.0", "v4.3.0", NOW - timedelta(minutes=1), NOW) == (
        "linear, step 3 of 10: 30% on v4.4.0, 70% on v4.3.0, baking 1 of 3 min"
    )
    assert shift.reached("v4.4.0") == "step 3 of 10 (30% on v4.4.0)"


def test_the_deployments_bake_after_all_traffic_moved() -> None:
    shift = Shift.of(service_deployment("BLUE_GREEN", "BAKE_TIME", 100.0))
    assert shift is not None and shift.baking_minutes == 5
    assert shift.describe("v4.4.0", "v4.3.0", NOW - timedelta(minutes=2), NOW) == (
        "blue/green: 100% on v4.4.0, 0% on v4.3.0, baking 2 of 5 min"
    )


def test_a_pause_hook_awaiting_action_is_the_pause() -> None:
    expires = NOW + timedelta(minutes=30)
    hooks = [
        {"hookId": "ecs-lambda-x", "targetType": "AWS_LAMBDA", "status": "SUCCEEDED"},
        {
            "hookId": "ecs-pause-e7tK9G",
            "targetType": "PAUSE",
            "status": "AWAITING_ACTION",
            "expiresAt": expires,
            "timeoutAction": "ROLLBACK",
        },
    ]
    sd = service_deployment(
        "CANARY", "POST_PRODUCTION_TRAFFIC_SHIFT", 10.0, config=CANARY, hooks=hooks
    )
    shift = Shift.of(sd)
    assert shift is not None and shift.hook is not None
    assert (shift.hook.hook_id, shift.hook.expires_at, shift.hook.timeout_words) == (
        "ecs-pause-e7tK9G",
        expires,
        "rolls back",
    )
    assert shift.describe("v4.4.0", "v4.3.0", None, NOW) == (
        "canary: 10% on v4.4.0, 90% on v4.3.0, paused at POST_PRODUCTION_TRAFFIC_SHIFT"
    )
    # A hook decided, or a deployment no longer in progress, awaits nothing.
    hooks[1]["status"] = "SUCCEEDED"
    assert Shift.of(sd) is not None and Shift.of(sd).hook is None  # type: ignore[union-attr]
    hooks[1]["status"] = "AWAITING_ACTION"
    sd["status"] = "ROLLBACK_IN_PROGRESS"
    assert Shift.of(sd).hook is None  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", ["CANARY", "LINEAR"])
def test_a_rollback_is_reported_at_the_furthest_step_reached(strategy: str) -> None:
    config = CANARY if strategy == "CANARY" else LINEAR
    clock = StepClock()
    for minute, new in enumerate((0.0, 10.0, 20.0)):
        sd = service_deployment(strategy, "PRODUCTION_TRAFFIC_SHIFT", new, config=config)
        shift = Shift.of(sd)
        assert shift is not None
        clock.see(shift, NOW + timedelta(minutes=minute))
    back = service_deployment(
        strategy, "PRODUCTION_TRAFFIC_SHIFT", 0.0, config=config, status="ROLLBACK_IN_PROGRESS"
    )
    clock.see(Shift.of(back), NOW + timedelta(minutes=5))  # type: ignore[arg-type]
    assert clock.furthest is not None
    expected = "step 2 of 10 (20% on v4.4.0)" if strategy == "LINEAR" else "canary (20% on v4.4.0)"
    assert clock.furthest.reached("v4.4.0") == expected


def test_when_a_step_began_is_when_it_was_first_seen() -> None:
    clock = StepClock()
    sd = service_deployment("CANARY", "PRODUCTION_TRAFFIC_SHIFT", 10.0, config=CANARY)
    first = clock.see(Shift.of(sd), NOW)  # type: ignore[arg-type]
    again = clock.see(Shift.of(sd), NOW + timedelta(minutes=3))  # type: ignore[arg-type]
    assert first == again == NOW


def test_the_strategy_comes_from_the_service_when_the_deployment_has_none() -> None:
    sd = service_deployment("CANARY", "SCALE_UP", 0.0, config=CANARY)
    del sd["deploymentConfiguration"]
    service = {"deploymentConfiguration": {"strategy": "LINEAR", **LINEAR}}
    shift = Shift.of(sd, service)
    assert shift is not None and shift.strategy == "LINEAR" and shift.steps == 10
    assert Shift.of(None) is None
