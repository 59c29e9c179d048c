"""The alarms a deploy is judged by before anything changes (bot/deploy/alarms.py), against
moto's server: CloudWatch's DescribeAlarms, ECS's deploymentConfiguration.alarms, and
DescribeAlarms refused or unanswered at the wire (the fault proxy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from bot.deploy.alarms import AlarmFiring
from bot.deploy.engine import Engine
from bot.deploy.records import Requester, Via
from bot.deploy.rollout import Outcome
from bot.errors import DeployRefused
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from bot.rules import Door
from bot.target import Target
from tests.conftest import LocalStack
from tests.slack.helpers import running_tag

OPERATOR = Requester("operator@laptop", "cli")
FIVE_XX = "hello-world-5xx"
CONSOLE = "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"


def cloudwatch(stack: LocalStack) -> Any:
    return boto3.client(
        "cloudwatch", endpoint_url=stack.info.endpoint_url, region_name=stack.info.region
    )


def alarm(stack: LocalStack, name: str, state: str = "OK", reason: str = "") -> None:
    cw = cloudwatch(stack)
    cw.put_metric_alarm(
        AlarmName=name,
        Namespace="hello-world",
        MetricName="5xx",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=3,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    if state != "OK":
        cw.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason or state)


def target_of(stack: LocalStack, *alarms: str) -> Target:
    s = stack.settings
    return Target(
        name="production",
        cluster=s.ecs_cluster,
        service=s.ecs_service,
        repository=s.ecr_repository,
        deployers=frozenset({"U0ANA"}),
        alarms=alarms,
    )


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.close()


def engine_for(
    stack: LocalStack, engines: list[Engine], *alarms: str, endpoint: str = ""
) -> Engine:
    target = target_of(stack, *alarms)
    settings = target.settings(stack.settings)
    if endpoint:
        settings = settings.model_copy(update={"aws_endpoint_url": endpoint})
    engine = Engine(settings, target=target)
    engines.append(engine)
    return engine


def watch_alarms_in_ecs(stack: LocalStack, *names: str, enable: bool = True) -> None:
    """The service's deploymentConfiguration names ``names`` as its deployment alarms."""
    ecs = boto3.client("ecs", endpoint_url=stack.info.endpoint_url, region_name=stack.info.region)
    ecs.update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "alarms": {"alarmNames": list(names), "enable": enable, "rollback": True},
        },
    )


def test_a_deploy_names_the_alarm_that_does_not_exist(
    stack: LocalStack, engines: list[Engine]
) -> None:
    alarm(stack, FIVE_XX)
    engine = engine_for(stack, engines, FIVE_XX, "hello-world-latency")
    before = running_tag(stack.settings)
    with pytest.raises(DeployRefused) as refused:
        engine.plan_deploy("v4.4.0", OPERATOR)
    said = refused.value.message
    assert "no CloudWatch alarm hello-world-latency (named in targets.production.alarms)" in said
    assert FIVE_XX not in said and "Nothing was changed" in said
    assert running_tag(stack.settings) == before and engine.lock_item() is None


def test_a_deploy_is_refused_while_an_alarm_is_in_alarm_saying_since_when_and_where(
    stack: LocalStack, engines: list[Engine]
) -> None:
    name = "hello world/5xx"  # a name the console link must encode
    alarm(stack, FIVE_XX)
    alarm(stack, name, "ALARM", "Threshold Crossed: 3 datapoints were >= 1.0")
    engine = engine_for(stack, engines, FIVE_XX, name)
    with pytest.raises(AlarmFiring) as refused:
        engine.plan_deploy("v4.4.0", OPERATOR)
    firing = refused.value
    assert [v.name for v in firing.firing] == [name]
    (view,) = firing.firing
    assert view.since is not None
    said = firing.message
    assert f"alarm {name} is in ALARM since {view.since:%H:%M} UTC" in said
    assert "Threshold Crossed: 3 datapoints" in said
    assert f"{CONSOLE}#alarmsV2:alarm/{quote(name, safe='')}" in said
    assert "hello%20world%2F5xx" in said
    assert '--break-glass "why"' in said and "Nothing was changed" in said
    # A redeploy is held back the same way; a rollback never is: it is what one does.
    with pytest.raises(AlarmFiring):
        engine.plan_redeploy(OPERATOR)


def test_break_glass_goes_past_a_firing_alarm_on_the_record(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    alarm(stack, FIVE_XX, "ALARM", "Threshold Crossed")
    engine = engine_for(stack, engines, FIVE_XX)
    plan = engine.plan_deploy("v4.4.0", OPERATOR, via=Via(break_glass="INC-7: the fix"))
    assert plan.break_glass == "INC-7: the fix"
    assert any(f"deployed while alarm {FIVE_XX} is in ALARM" in n for n in plan.notes)
    record = engine.start(plan)
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    (last,) = engine.history(1)
    assert last.break_glass == "INC-7: the fix"
    assert [b for b in last.bypassed if FIVE_XX in b] == [n for n in plan.notes if FIVE_XX in n]
    # With the alarm back to OK nothing is bypassed, and a rollback never asked.
    cloudwatch(stack).set_alarm_state(AlarmName=FIVE_XX, StateValue="OK", StateReason="ok")
    assert engine.plan_deploy("v4.5.0", OPERATOR).notes == ()


def test_a_slack_confirm_goes_past_the_alarms_it_showed_only(
    stack: LocalStack, engines: list[Engine]
) -> None:
    alarm(stack, FIVE_XX, "ALARM")
    alarm(stack, "hello-world-latency")
    engine = engine_for(stack, engines, FIVE_XX, "hello-world-latency")
    ana = Requester("U0ANA", "slack", "ana")
    button = Via(door=Door.BUTTON, channel="C0DEPLOYS", allow_alarms=(FIVE_XX,))
    plan = engine.plan_deploy("v4.4.0", ana, via=button)
    assert plan.alarm_notes and not plan.break_glass
    # Another alarm went off since it was shown: refused again, naming that one.
    cloudwatch(stack).set_alarm_state(
        AlarmName="hello-world-latency", StateValue="ALARM", StateReason="slow"
    )
    with pytest.raises(AlarmFiring) as refused:
        engine.plan_deploy("v4.4.0", ana, via=button)
    assert "Deploy anyway, below" in refused.value.message
    assert {v.name for v in refused.value.firing} == {FIVE_XX, "hello-world-latency"}


def test_a_rollback_goes_whatever_the_alarms_say_unread(
    stack: LocalStack, simulator: RolloutSimulator, aws: MotoServer, engines: list[Engine]
) -> None:
    engine = engine_for(stack, engines, FIVE_XX)
    alarm(stack, FIVE_XX)
    record = engine.start(engine.plan_deploy("v4.4.0", OPERATOR))
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    cloudwatch(stack).set_alarm_state(AlarmName=FIVE_XX, StateValue="ALARM", StateReason="x")
    aws.requests.clear()
    plan = engine.plan_rollback(OPERATOR, of=record.id)
    assert plan.tag.startswith("v4.3.0") and plan.notes == ()
    assert aws.requests.count("monitoring") == 0


def test_the_alarms_ecs_watches_are_checked_too_while_enabled(
    stack: LocalStack, aws: MotoServer, engines: list[Engine]
) -> None:
    engine = engine_for(stack, engines)  # the target names none
    watch_alarms_in_ecs(stack, FIVE_XX)
    with pytest.raises(DeployRefused) as refused:
        engine.plan_deploy("v4.4.0", OPERATOR)
    assert f"no CloudWatch alarm {FIVE_XX} (named in the service's deploymentConfiguration" in (
        refused.value.message
    )
    alarm(stack, FIVE_XX, "ALARM", "5xx")
    with pytest.raises(AlarmFiring) as firing:
        engine.plan_deploy("v4.4.0", OPERATOR)
    assert firing.value.firing[0].watched_by_ecs
    assert "ECS does not watch its deployment alarms for a deployment that starts while" in (
        firing.value.message
    )
    # Turned off in ECS: not judged, not even read.
    watch_alarms_in_ecs(stack, FIVE_XX, enable=False)
    aws.requests.clear()
    engine.plan_deploy("v4.4.0", OPERATOR)
    assert aws.requests.count("monitoring") == 0


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("refuse", "AWS refused access while reading the CloudWatch alarms"),
        ("reset", "Could not reach AWS while reading the CloudWatch alarms"),
    ],
)
def test_describe_alarms_refused_or_unanswered_refuses_clearly(
    stack: LocalStack, engines: list[Engine], fault: str, words: str
) -> None:
    alarm(stack, FIVE_XX)
    with FaultProxy(stack.info.endpoint_url) as proxy:
        if fault == "refuse":
            proxy.refuse("monitoring", "DescribeAlarms", code="AccessDenied")
        else:
            proxy.reset_answer("monitoring", "DescribeAlarms", forward=False, times=None)
        engine = engine_for(stack, engines, FIVE_XX, endpoint=proxy.endpoint_url)
        with pytest.raises(DeployRefused) as refused:
            engine.plan_deploy("v4.4.0", OPERATOR)
        assert proxy.count("monitoring", "DescribeAlarms") >= 1
    said = refused.value.message
    assert said.startswith("Not deployed to production: its alarms could not be checked: ")
    assert words in said and "cloudwatch:DescribeAlarms" in said
    assert "Nothing was changed" in said and "Traceback" not in said


def test_an_approvals_start_is_refused_while_an_alarm_fires(
    stack: LocalStack, engines: list[Engine]
) -> None:
    alarm(stack, FIVE_XX)
    s = stack.settings
    target = Target(
        name="production",
        cluster=s.ecs_cluster,
        service=s.ecs_service,
        repository=s.ecr_repository,
        deployers=frozenset({"U0ANA"}),
        approvals=1,
        approvers=("U0CARA",),
        alarms=(FIVE_XX,),
    )
    engine = Engine(target.settings(s), target=target)
    engines.append(engine)
    ana, cara = Requester("U0ANA", "slack", "ana"), Requester("U0CARA", "slack", "cara")
    asking = Via(door=Door.SLASH, channel="C0DEPLOYS", asking=True)
    request = engine.request_approval(engine.plan_deploy("v4.4.0", ana, via=asking), "C0DEPLOYS")
    cloudwatch(stack).set_alarm_state(AlarmName=FIVE_XX, StateValue="ALARM", StateReason="5xx")
    approve = Via(door=Door.BUTTON, channel="C0DEPLOYS")
    with pytest.raises(AlarmFiring) as refused:
        engine.approve(request.id, cara, via=approve)
    assert f"alarm {FIVE_XX} is in ALARM since" in refused.value.message
    # Nothing started: as for any refusal at an approval's start, the request says so in
    # Slack ("Approved, not deployed: …") and the requester asks again once it is OK.
    assert engine.lock_item() is None and engine.history(1) == []
