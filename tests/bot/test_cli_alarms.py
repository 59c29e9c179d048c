"""The terminal door and alarms, against moto and the rollout simulator: ``deploybot deploy``
refused while an alarm is in ALARM (``--break-glass`` goes past, on the record); while ECS
bakes, "verifying: alarms OK", its stage and the circuit breaker's count; an image whose 5xx
alarm fires in the bake ends "rolled back: alarm … went to ALARM at HH:MM" with the console
link."""

from __future__ import annotations

import re

import boto3

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.stack import add_deployment_alarm
from tests.conftest import LocalStack
from tests.helpers import deploybot
from tests.slack.helpers import running_tag

CONSOLE = "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"


def test_a_firing_alarm_refuses_the_deploy_and_break_glass_goes_past(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    alarm = add_deployment_alarm(stack.info, stack.settings)
    boto3.client("cloudwatch").set_alarm_state(
        AlarmName=alarm, StateValue="ALARM", StateReason="Threshold Crossed: 7 >= 5"
    )
    updates = aws.requests.count("ecs", "UpdateService")  # the alarm's own, above
    refused = deploybot("deploy", "v4.4.0", "--yes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"alarm {alarm} is in ALARM since" in refused.stderr
    assert f"{CONSOLE}#alarmsV2:alarm/{alarm}" in refused.stderr
    assert '--break-glass "why"' in refused.stderr and "Traceback" not in refused.stderr
    assert aws.requests.count("ecs", "UpdateService") == updates

    forced = deploybot("deploy", "v4.4.0", "--yes", "--break-glass", "INC-9: the fix")
    assert f"deployed while alarm {alarm} is in ALARM" in forced.stderr, forced.stderr
    # ECS itself does not watch its alarms for a deployment that starts with one in ALARM;
    # the simulation fails it as ECS would here, so only the attempt and its record count.
    assert aws.requests.count("ecs", "UpdateService") == updates + 1
    history = deploybot("history", "--json")
    assert "INC-9: the fix" in history.stdout and f"deployed while alarm {alarm}" in history.stdout


def test_an_alarm_in_the_bake_rolls_back_saying_which_and_when(
    stack: LocalStack, aws: MotoServer
) -> None:
    alarm = add_deployment_alarm(stack.info, stack.settings)
    sim = RolloutSimulator(aws, step_seconds=0.1, bake_ticks=10)
    sim.mark_alarming("v4.4.0-ecr-ecs-fargate")
    with sim:
        done = deploybot("deploy", "v4.4.0", "--yes")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "verifying: alarms OK, " in out and "stage: BAKE_TIME" in out, out
    # Its tasks are healthy: the circuit breaker's count is shown only once a task failed.
    assert "circuit breaker:" not in out, out
    said = re.search(rf"rolled back: alarm {alarm} went to ALARM at (\d\d:\d\d)", out)
    assert said, out
    assert f"alarm {alarm} in the console: {CONSOLE}#alarmsV2:alarm/{alarm}" in out
    assert "ECS rolled the service back to" in out and "circuit breaker rolled" not in out
    assert running_tag(stack.settings).startswith("v4.3.0")
