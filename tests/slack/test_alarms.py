"""A deploy held back by a firing alarm, through Slack (bot/deploy/alarms.py, the Slack door's
offer): a real bot process, the Slack emulator and moto's CloudWatch. ``/deploy`` is refused
naming the alarm, since when and its console link, with **Deploy anyway** behind a confirm;
the click deploys past that alarm, on the record of the deployment's message."""

from __future__ import annotations

import re

import boto3

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.local.stack import add_deployment_alarm
from bot.slack import guards
from tests.conftest import ALICE, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import final_message, running_tag

FIVE_XX = "hello-world-5xx"


def test_a_firing_alarm_refuses_a_slack_deploy_until_deploy_anyway(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    s = stack.settings
    cw = boto3.client("cloudwatch", endpoint_url=aws.endpoint_url, region_name=stack.info.region)
    cw.put_metric_alarm(
        AlarmName=FIVE_XX,
        Namespace="hello-world",
        MetricName="5xx",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cw.set_alarm_state(AlarmName=FIVE_XX, StateValue="ALARM", StateReason="Threshold Crossed")
    config = (
        f'[targets.production]\ncluster = "{s.ecs_cluster}"\nservice = "{s.ecs_service}"\n'
        f'repository = "{s.ecr_repository}"\nalarms = ["{FIVE_XX}"]\n'
    )
    bot = start_bot("http", DEPLOYBOT_CONFIG_TEXT=config)
    before = running_tag(s)

    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    offer = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=ALICE) if "in ALARM" in e.text), None),
        timeout=60,
        what="the firing alarm's refusal",
    )
    shown = str(offer.blocks)
    assert "#alarmsV2:alarm/hello-world-5xx|hello-world-5xx>" in shown, shown
    assert "Threshold Crossed" in shown and "Nothing was changed" in shown
    assert aws.requests.count("ecs", "UpdateService") == 0 and running_tag(s) == before

    emulator.click(offer, guards.ALARM_ANYWAY_ACTION, user=ALICE, url=bot.events_url)
    done = final_message(emulator, "Deployed v4.4.0", timeout=120)
    assert f"deployed while alarm {FIVE_XX} is in ALARM" in done.all_text, done.all_text
    assert running_tag(s).startswith("v4.4.0")


def test_an_alarm_in_the_bake_says_rolled_back_which_and_when_in_the_message(
    stack: LocalStack,
    aws: MotoServer,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    alarm = add_deployment_alarm(stack.info, stack.settings)
    sim = RolloutSimulator(aws, step_seconds=0.2, bake_ticks=10)
    sim.mark_alarming("v4.4.0-ecr-ecs-fargate")
    bot = start_bot("http")
    with sim:
        emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
        verifying = final_message(emulator, "verifying: alarms OK", timeout=120)
        assert "stage: BAKE_TIME" in verifying.all_text, verifying.all_text
        done = final_message(emulator, "v4.4.0-ecr-ecs-fargate failed", timeout=120)
    text = done.all_text
    assert re.search(rf"rolled back:\* alarm {alarm} went to ALARM at \d\d:\d\d", text), text
    assert f"#alarmsV2:alarm/{alarm}|the alarm in the console>" in text
    assert "ECS rolled the service back to" in text and "circuit breaker" not in text
