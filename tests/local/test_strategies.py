"""ECS's traffic-shifting strategies in the simulation (BLUE_GREEN, CANARY, LINEAR), their
lifecycle stages, traffic weights, PAUSE hooks and ContinueServiceDeployment, seen only through
boto3 over HTTP; every answer walked against botocore's model (``wire`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.stack import add_deployment_alarm, set_deployment_strategy
from tests.conftest import LocalStack
from tests.local.shapes import Wire, follow, latest, statuses
from tests.local.test_simulator import _deploy, _service

STAGES = (
    "RECONCILE_SERVICE",
    "PRE_SCALE_UP",
    "SCALE_UP",
    "POST_SCALE_UP",
    "TEST_TRAFFIC_SHIFT",
    "POST_TEST_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
    "BAKE_TIME",
    "CLEAN_UP",
)
NEW = "v4.4.0-ecr-ecs-fargate"


def _stages(seen: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for d in seen:
        stage = d.get("lifecycleStage")
        if stage and (not out or out[-1] != stage):
            out.append(stage)
    return out


def _weights(d: dict[str, Any]) -> tuple[float, float, float]:
    """(green's test weight, green's production weight, blue's production weight)."""
    target = d["targetServiceRevision"]
    [blue] = d["sourceServiceRevisions"]
    return (
        target["requestedTestTrafficWeight"],
        target["requestedProductionTrafficWeight"],
        blue["requestedProductionTrafficWeight"],
    )


def _until_paused(
    wire: Wire, sim: RolloutSimulator, arn: str, max_ticks: int = 60
) -> dict[str, Any]:
    """Tick until a hook awaits action; the deployment then."""
    for _ in range(max_ticks):
        d = wire.get(arn)
        if any(h["status"] == "AWAITING_ACTION" for h in d.get("lifecycleHookDetails", [])):
            return d
        assert d["status"] in ("PENDING", "IN_PROGRESS"), d
        sim.tick()
    raise AssertionError(f"no pause within {max_ticks} ticks: {wire.get(arn)}")


def _awaiting(d: dict[str, Any]) -> dict[str, Any]:
    [hook] = [h for h in d["lifecycleHookDetails"] if h["status"] == "AWAITING_ACTION"]
    return dict(hook)


def test_blue_green_walks_every_stage_and_shifts_the_traffic(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    set_deployment_strategy(stack.info, stack.settings, "BLUE_GREEN", bake_minutes=2)
    sim = RolloutSimulator(aws, minute_ticks=2)
    task_definition, _ = _deploy(stack, NEW)
    arn = latest(wire, stack)
    seen = follow(wire, sim, arn)
    assert statuses(seen) == ["PENDING", "IN_PROGRESS", "SUCCESSFUL"]
    assert _stages(seen) == [s for s in STAGES if s != "RECONCILE_SERVICE"]
    by_stage = {d["lifecycleStage"]: d for d in seen if d["status"] == "IN_PROGRESS"}
    assert _weights(by_stage["POST_SCALE_UP"]) == (0.0, 0.0, 100.0)
    assert _weights(by_stage["POST_TEST_TRAFFIC_SHIFT"]) == (100.0, 0.0, 100.0)
    assert _weights(by_stage["BAKE_TIME"]) == (100.0, 100.0, 0.0)
    # Blue keeps its tasks until CLEAN_UP: both revisions run through the bake.
    baking = [d for d in seen if d.get("lifecycleStage") == "BAKE_TIME"]
    assert len(baking) == 2 * 2 + 1  # bakeTimeInMinutes x minute_ticks, and the step ending it
    assert {d["sourceServiceRevisions"][0]["runningTaskCount"] for d in baking} == {3}
    assert {d["targetServiceRevision"]["runningTaskCount"] for d in baking} == {3}
    final = seen[-1]
    assert final["lifecycleStage"] == "CLEAN_UP"
    assert final["sourceServiceRevisions"][0]["runningTaskCount"] == 0
    assert "lifecycleHookDetails" not in final
    service = _service(stack)
    assert [(d["taskDefinition"], d["rolloutState"]) for d in service["deployments"]] == [
        (task_definition, "COMPLETED")
    ]


def test_canary_pauses_before_each_shift_and_continue_goes_on(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    set_deployment_strategy(
        stack.info,
        stack.settings,
        "CANARY",
        canary_percent=10.0,
        canary_bake_minutes=3,
        pause_at=["PRE_PRODUCTION_TRAFFIC_SHIFT"],
        pause_timeout_minutes=30,
    )
    sim = RolloutSimulator(aws, minute_ticks=2)
    _deploy(stack, NEW)
    arn = latest(wire, stack)

    # Before the canary step (PRE_PRODUCTION_TRAFFIC_SHIFT runs before every shift step).
    first = _until_paused(wire, sim, arn)
    assert first["status"] == "IN_PROGRESS"
    assert first["lifecycleStage"] == "PRODUCTION_TRAFFIC_SHIFT"
    assert _weights(first) == (100.0, 0.0, 100.0)
    hook = _awaiting(first)
    assert hook["hookId"].startswith("ecs-pause-") and len(hook["hookId"]) == 53
    assert hook["targetType"] == "PAUSE" and hook["timeoutAction"] == "ROLLBACK"
    assert hook["expiresAt"] > datetime.now(UTC)
    sim.tick(5)
    assert _awaiting(wire.get(arn))["hookId"] == hook["hookId"]  # it waits
    answer = wire.ecs.continue_service_deployment(
        serviceDeploymentArn=arn, hookId=hook["hookId"], action="CONTINUE"
    )
    assert answer["serviceDeploymentArn"] == arn
    [done] = wire.get(arn)["lifecycleHookDetails"]
    assert done["status"] == "SUCCEEDED"

    # After the canary and its bake: the pause a person decides on.
    seen = []
    second = _until_paused(wire, sim, arn)
    assert _weights(second) == (100.0, 10.0, 90.0)
    assert second["lifecycleStage"] == "PRODUCTION_TRAFFIC_SHIFT"
    canary_hook = _awaiting(second)
    assert canary_hook["hookId"] != hook["hookId"]
    wire.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=canary_hook["hookId"])
    seen = follow(wire, sim, arn)
    assert seen[-1]["status"] == "SUCCESSFUL"
    assert {h["status"] for h in seen[-1]["lifecycleHookDetails"]} == {"SUCCEEDED"}
    assert (100.0, 100.0, 0.0) in [_weights(d) for d in seen if d["status"] == "IN_PROGRESS"]
    assert _service(stack)["deployments"][0]["rolloutState"] == "COMPLETED"


def test_a_canary_bake_lasts_its_minutes(stack: LocalStack, aws: MotoServer, wire: Wire) -> None:
    set_deployment_strategy(
        stack.info, stack.settings, "CANARY", canary_percent=20.0, canary_bake_minutes=3
    )
    sim = RolloutSimulator(aws, minute_ticks=2)
    _deploy(stack, NEW)
    seen = follow(wire, sim, latest(wire, stack))
    canary = [d for d in seen if d["status"] == "IN_PROGRESS" and _weights(d)[1] == 20.0]
    assert len(canary) >= 3 * 2  # canaryBakeTimeInMinutes x minute_ticks
    assert seen[-1]["status"] == "SUCCESSFUL"


def test_continue_with_rollback_restores_the_blue_revision(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    set_deployment_strategy(
        stack.info, stack.settings, "BLUE_GREEN", pause_at=["POST_TEST_TRAFFIC_SHIFT"]
    )
    sim = RolloutSimulator(aws)
    [first] = wire.arns(stack)
    _deploy(stack, NEW)
    arn = latest(wire, stack)
    paused = _until_paused(wire, sim, arn)
    assert paused["lifecycleStage"] == "POST_TEST_TRAFFIC_SHIFT"
    hook = _awaiting(paused)
    wire.ecs.continue_service_deployment(
        serviceDeploymentArn=arn, hookId=hook["hookId"], action="ROLLBACK"
    )
    asked = wire.get(arn)
    assert asked["status"] == "ROLLBACK_REQUESTED"
    assert asked["lifecycleHookDetails"][0]["status"] == "FAILED"
    seen = follow(wire, sim, arn)
    assert statuses(seen) == ["ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL"]
    final = seen[-1]
    assert "ContinueServiceDeployment" in final["rollback"]["reason"]
    blue = wire.get(first)["targetServiceRevision"]["arn"]
    assert final["rollback"]["serviceRevisionArn"] == blue
    assert _weights(final) == (0.0, 0.0, 100.0)
    assert final["targetServiceRevision"]["runningTaskCount"] == 0
    service = _service(stack)
    assert service["taskDefinition"] == stack.info.task_definition_arn
    assert [d["rolloutState"] for d in service["deployments"]] == ["COMPLETED"]
    assert service["runningCount"] == 3


@pytest.mark.parametrize("action", ["ROLLBACK", "CONTINUE"])
def test_a_pause_nobody_answers_takes_its_timeout_action(
    stack: LocalStack, aws: MotoServer, wire: Wire, action: str
) -> None:
    set_deployment_strategy(
        stack.info,
        stack.settings,
        "BLUE_GREEN",
        pause_at=["POST_SCALE_UP"],
        pause_timeout_minutes=2,
        pause_timeout_action=action,
    )
    sim = RolloutSimulator(aws, minute_ticks=3)
    _deploy(stack, NEW)
    arn = latest(wire, stack)
    _until_paused(wire, sim, arn)
    seen = follow(wire, sim, arn)
    paused = [
        d for d in seen if d["status"] == "IN_PROGRESS" and d["lifecycleStage"] == "POST_SCALE_UP"
    ]
    assert len(paused) >= 2 * 3 - 1  # timeoutInMinutes x minute_ticks
    final = seen[-1]
    [hook] = final["lifecycleHookDetails"]
    assert hook["status"] == "TIMED_OUT"
    if action == "ROLLBACK":
        assert final["status"] == "ROLLBACK_SUCCESSFUL"
        assert hook["hookId"] in final["rollback"]["reason"]
        assert "timed out" in final["statusReason"]
    else:
        assert final["status"] == "SUCCESSFUL"


def test_linear_shifts_in_steps(stack: LocalStack, aws: MotoServer, wire: Wire) -> None:
    set_deployment_strategy(
        stack.info, stack.settings, "LINEAR", linear_step_percent=25.0, linear_step_bake_minutes=1
    )
    sim = RolloutSimulator(aws, minute_ticks=2)
    _deploy(stack, NEW)
    seen = follow(wire, sim, latest(wire, stack))
    production = []
    for d in seen:
        if d["status"] == "IN_PROGRESS" and (not production or production[-1] != _weights(d)[1]):
            production.append(_weights(d)[1])
    assert production == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert seen[-1]["status"] == "SUCCESSFUL"


def test_a_broken_green_is_rolled_back_before_any_traffic(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    set_deployment_strategy(stack.info, stack.settings, "CANARY")
    sim = RolloutSimulator(aws, broken={"v4.5.0-ecr-ecs-fargate"})
    _deploy(stack, "v4.5.0-ecr-ecs-fargate")
    seen = follow(wire, sim, latest(wire, stack))
    assert seen[-1]["status"] == "ROLLBACK_SUCCESSFUL"
    assert seen[-1]["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    assert {_weights(d)[1] for d in seen if "targetServiceRevision" in d} == {0.0}
    assert {d["sourceServiceRevisions"][0]["runningTaskCount"] for d in seen} == {3}
    assert _service(stack)["taskDefinition"] == stack.info.task_definition_arn


def test_an_alarm_in_the_canary_bake_rolls_back(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    add_deployment_alarm(stack.info, stack.settings)
    set_deployment_strategy(stack.info, stack.settings, "CANARY", bake_minutes=4)
    sim = RolloutSimulator(aws, minute_ticks=2)
    sim.mark_alarming(NEW)  # fires halfway through the final bake
    _deploy(stack, NEW)
    seen = follow(wire, sim, latest(wire, stack))
    final = seen[-1]
    assert final["status"] == "ROLLBACK_SUCCESSFUL"
    assert final["alarms"]["status"] == "TRIGGERED"
    assert "BAKE_TIME" in _stages(seen)
    assert _weights(final)[1] == 0.0
    assert _service(stack)["taskDefinition"] == stack.info.task_definition_arn


def test_continue_refuses_what_does_not_await_action(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    set_deployment_strategy(stack.info, stack.settings, "BLUE_GREEN", pause_at=["PRE_SCALE_UP"])
    sim = RolloutSimulator(aws)
    _deploy(stack, NEW)
    arn = latest(wire, stack)
    hook = _awaiting(_until_paused(wire, sim, arn))

    def code(**kwargs: Any) -> str:
        with pytest.raises(ClientError) as refused:
            wire.ecs.continue_service_deployment(serviceDeploymentArn=arn, **kwargs)
        return str(refused.value.response["Error"]["Code"])

    assert code(hookId="ecs-pause-" + "x" * 43) == "InvalidParameterException"
    wire.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=hook["hookId"])
    # Pressed twice: the second finds nothing awaiting.
    assert code(hookId=hook["hookId"]) == "InvalidParameterException"
    assert code(hookId=hook["hookId"], action="ROLLBACK") == "InvalidParameterException"
    assert follow(wire, sim, arn)[-1]["status"] == "SUCCESSFUL"


def test_a_pause_where_ecs_allows_none_is_refused(stack: LocalStack, wire: Wire) -> None:
    with pytest.raises(ClientError) as refused:
        set_deployment_strategy(
            stack.info, stack.settings, "CANARY", pause_at=["PRODUCTION_TRAFFIC_SHIFT"]
        )
    assert refused.value.response["Error"]["Code"] == "InvalidParameterException"
    wire.arns(stack)  # the fixture wants an answer to walk


def test_a_rolling_deployment_pauses_before_its_scale_up(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    """Pause hooks work with ROLLING too (pause-lifecycle-hooks.html): nothing new starts
    before the Continue."""
    set_deployment_strategy(stack.info, stack.settings, "ROLLING", pause_at=["PRE_SCALE_UP"])
    sim = RolloutSimulator(aws)
    task_definition, _ = _deploy(stack, NEW)
    arn = latest(wire, stack)
    paused = _until_paused(wire, sim, arn)
    sim.tick(4)
    paused = wire.get(arn)
    assert paused["lifecycleStage"] == "PRE_SCALE_UP"
    assert paused["targetServiceRevision"]["runningTaskCount"] == 0
    assert "requestedProductionTrafficWeight" not in paused["targetServiceRevision"]
    primary = _service(stack)["deployments"][0]
    assert (primary["taskDefinition"], primary["runningCount"]) == (task_definition, 0)
    wire.ecs.continue_service_deployment(
        serviceDeploymentArn=arn, hookId=_awaiting(paused)["hookId"]
    )
    seen = follow(wire, sim, arn)
    assert seen[-1]["status"] == "SUCCESSFUL"
    assert "SCALE_UP" in _stages(seen)
    assert _service(stack)["taskDefinition"] == task_definition


def test_a_rolling_pause_that_times_out_rolls_back(
    stack: LocalStack, aws: MotoServer, wire: Wire
) -> None:
    set_deployment_strategy(
        stack.info,
        stack.settings,
        "ROLLING",
        pause_at=["POST_SCALE_UP"],
        pause_timeout_minutes=1,
    )
    sim = RolloutSimulator(aws, minute_ticks=3)
    _deploy(stack, NEW)
    arn = latest(wire, stack)
    paused = _until_paused(wire, sim, arn)
    assert paused["lifecycleStage"] == "POST_SCALE_UP"
    assert paused["targetServiceRevision"]["runningTaskCount"] == 3
    seen = follow(wire, sim, arn)
    assert statuses(seen)[-2:] == ["ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL"]
    assert seen[-1]["lifecycleHookDetails"][0]["status"] == "TIMED_OUT"
    assert _service(stack)["taskDefinition"] == stack.info.task_definition_arn
