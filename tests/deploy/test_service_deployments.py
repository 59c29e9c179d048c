"""ECS's service deployments (#26): the ARN on the record, the outcome from ECS, the fallback.

Against moto's server over HTTP with the rollout simulator, which answers the service-deployment
operations as ECS does; faults at the wire: the simulation's refusal switch (AccessDenied, moto's
own 500 for operations it lacks), the fault proxy (a lost UpdateService answer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest

from bot.cli import main as cli_main
from bot.deploy.engine import Engine
from bot.deploy.reconcile import ECS_CLOCK_SLACK
from bot.deploy.records import (
    ABORT_BY_STOP,
    ABORT_BY_UPDATE,
    DeploymentRecord,
    Requester,
    new_deployment_id,
)
from bot.deploy.rollout import Outcome, Snapshot
from bot.deploy.table import record_item
from bot.fleet import Fleet
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from bot.settings import Settings
from bot.slack import messages
from tests.conftest import SIMULATOR_STEP_SECONDS, FleetStack, LocalStack
from tests.helpers import wait_until
from tests.slack.helpers import running_tag

ALICE = Requester("alice", "cli", "Alice")
BOB = Requester("bob", "cli", "Bob")
NEW_OPERATIONS = (
    "ListServiceDeployments",
    "DescribeServiceDeployments",
    "DescribeServiceRevisions",
)


@pytest.fixture
def engine(stack: LocalStack) -> Iterator[Engine]:
    eng = Engine(stack.settings)
    yield eng
    eng.close()


@pytest.fixture
def proxy(stack: LocalStack) -> Iterator[FaultProxy]:
    with FaultProxy(stack.info.endpoint_url) as faults:
        yield faults


def through(settings: Settings, proxy: FaultProxy) -> Settings:
    return settings.model_copy(update={"aws_endpoint_url": proxy.endpoint_url})


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "deploybot.service_deployments" and "refused" in r.getMessage()
    ]


def test_a_record_from_before_service_deployments_still_reads(
    stack: LocalStack, engine: Engine
) -> None:
    """An item written before #26 has no service_deployment_arn nor ecs_status: it reads with
    both empty (judged the old way); one written now keeps the ARN, once."""
    db = boto3.client(
        "dynamodb", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
    )
    now = engine.clock.now()
    old = DeploymentRecord(
        id=new_deployment_id(),
        service=stack.settings.ecs_service,
        kind="deploy",
        tag="v4.4.0",
        image="img",
        task_definition="td:2",
        previous_task_definition="td:1",
        previous_tag="v4.3.0",
        ecs_deployment_id="ecs-svc/1",
        who="alice",
        who_display="Alice",
        source="cli",
        reason="",
        started_at=now,
    )
    item = record_item(engine.ledger.keys.record(old.sort_key), old)
    del item["service_deployment_arn"]  # as a record written before #26 is
    db.put_item(TableName=stack.settings.deploy_table, Item=item)
    read = engine.ledger.get_record(old.sort_key)
    assert read is not None
    assert (read.service_deployment_arn, read.ecs_status) == ("", "")
    arn = "arn:aws:ecs:eu-west-1:123456789012:service-deployment/c/s/abc"
    engine.ledger.set_service_deployment(read, arn)
    other = engine.ledger.set_service_deployment(read, arn + "x")  # a second finder
    assert other.service_deployment_arn == arn
    again = engine.ledger.get_record(old.sort_key)
    assert again is not None and again.service_deployment_arn == arn


def _deploy_and_follow(engine: Engine, tag: str) -> tuple[DeploymentRecord, list[Snapshot]]:
    record = engine.deploy(tag, ALICE)
    return record, list(engine.watch(record))


def _asked(aws: MotoServer, *operations: str) -> int:
    return sum(aws.requests.count("ecs", op, throttled=False) for op in operations)


def _wait_ecs_status(engine: Engine, record: DeploymentRecord, status: str) -> None:
    def seen() -> bool:
        last = engine.poller.last(record.id)
        return last is not None and last.ecs_status == status

    wait_until(seen, 10, f"the service deployment {status}")


def _statuses(snaps: list[Snapshot]) -> list[str]:
    out: list[str] = []
    for s in snaps:
        if s.ecs_status and s.ecs_status not in out:
            out.append(s.ecs_status)
    return out


def test_a_deploy_completes_when_ecs_says_successful_and_history_shows_it(
    aws: MotoServer,
    stack: LocalStack,
    simulator: RolloutSimulator,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ARN is found right after UpdateService (one ListServiceDeployments, one
    DescribeServiceRevisions); every snapshot carries ECS's service deployment; the record
    closes COMPLETED with ECS's SUCCESSFUL beside it, in both doors' history."""
    record, snaps = _deploy_and_follow(engine, "v4.4.0")
    final = snaps[-1]
    assert final.outcome is Outcome.COMPLETED
    assert final.service_deployment is not None and final.ecs_status == "SUCCESSFUL"
    assert _statuses(snaps)[-1] == "SUCCESSFUL"
    assert _asked(aws, "ListServiceDeployments") == 1
    assert _asked(aws, "DescribeServiceRevisions") == 1
    (last,) = engine.history(1)
    assert last.service_deployment_arn == final.service_deployment["serviceDeploymentArn"]
    assert ":service-deployment/" in last.service_deployment_arn
    assert last.ecs_status == "SUCCESSFUL"
    assert last.final is not None and last.final.ecs_status == "SUCCESSFUL"
    assert "(ECS: `SUCCESSFUL`)" in messages.history_lines([last])[0]
    assert cli_main(["history", "-n", "1"]) == 0
    assert "ECS: SUCCESSFUL" in capsys.readouterr().out
    del record


def test_a_circuit_breaker_rollback_is_told_when_ecs_finished_it_with_its_count(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """ROLLBACK_SUCCESSFUL: rolled back, saying why (the circuit breaker and its count); the
    outcome waits for ECS to have put the previous revision back."""
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    _, snaps = _deploy_and_follow(engine, "v4.5.0")
    final = snaps[-1]
    assert final.outcome is Outcome.ROLLED_BACK, final.outcome_reason
    assert final.ecs_status == "ROLLBACK_SUCCESSFUL"
    assert "ROLLBACK_IN_PROGRESS" in _statuses(snaps)
    assert final.service_deployment is not None
    breaker = final.service_deployment["deploymentCircuitBreaker"]
    assert (
        f"circuit breaker tripped: {breaker['failureCount']} of {breaker['threshold']} tasks"
        in final.outcome_reason
    )
    assert final.rollback_tag == "v4.3.0-ecr-ecs-fargate"
    assert engine.ledger.current_lock() is None
    (last,) = engine.history(1)
    assert (last.outcome, last.ecs_status) == (Outcome.ROLLED_BACK, "ROLLBACK_SUCCESSFUL")


def test_a_rollback_that_fails_is_failed_and_loud(
    stack: LocalStack,
    simulator: RolloutSimulator,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ROLLBACK_FAILED: failed, saying the service may be down, and an error in the log."""
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", ALICE)
    simulator.mark_broken("v4.3.0-ecr-ecs-fargate")  # what the rollback would put back
    snaps = list(engine.watch(record))
    final = snaps[-1]
    assert final.outcome is Outcome.FAILED
    assert final.ecs_status == "ROLLBACK_FAILED"
    assert final.outcome_reason.startswith("ECS could not roll back: the service may be down")
    assert any(
        r.levelno == logging.ERROR and "may be down" in r.getMessage() for r in caplog.records
    )
    (last,) = engine.history(1)
    assert (last.outcome, last.ecs_status) == (Outcome.FAILED, "ROLLBACK_FAILED")


ALARM = "hello-world-5xx"


def test_an_alarm_rollback_names_the_alarm(aws: MotoServer, stack: LocalStack) -> None:
    """A deployment alarm in ALARM during the bake: ECS rolls back; the outcome names it."""
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName=ALARM,
        MetricName="5xx",
        Namespace="hello-world",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    boto3.client("ecs").update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "alarms": {"alarmNames": [ALARM], "enable": True, "rollback": True},
        },
    )
    sim = RolloutSimulator(
        aws, step_seconds=SIMULATOR_STEP_SECONDS, alarming={"v4.4.0-ecr-ecs-fargate"}
    )
    sim.start()
    engine = Engine(stack.settings)
    try:
        _, snaps = _deploy_and_follow(engine, "v4.4.0")
    finally:
        engine.close()
        sim.stop()
    final = snaps[-1]
    assert final.outcome is Outcome.ROLLED_BACK
    assert final.ecs_status == "ROLLBACK_SUCCESSFUL"
    assert f"alarm {ALARM} went to ALARM" in final.outcome_reason


def test_a_newer_deployment_replaces_ours_as_ecs_says(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """STOPPED by a newer deployment (someone's UpdateService): replaced, naming it."""
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", ALICE)
    watch = engine.watch(record)
    for snap in watch:
        if snap.ecs_status == "IN_PROGRESS":
            break
    boto3.client("ecs").update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        taskDefinition=stack.info.task_definition_arn,
    )
    final = [*watch][-1]
    assert final.outcome is Outcome.REPLACED, final.outcome_reason
    assert final.ecs_status == "STOPPED"
    assert "(not started by deploybot)" in final.outcome_reason


def test_abort_asks_ecs_to_roll_back(
    aws: MotoServer, stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """Stop: StopServiceDeployment(ROLLBACK), no second UpdateService; ABORTED once ECS has
    rolled back, and the outcome says which way ECS was asked."""
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", ALICE)
    _wait_ecs_status(engine, record, "IN_PROGRESS")
    aborted = engine.abort(BOB)
    assert aborted.abort_via == ABORT_BY_STOP
    assert "StopServiceDeployment" in aborted.abort_how
    outcome, why = engine.follow_abort(aborted)
    assert outcome is Outcome.ABORTED, why
    assert why.endswith("v4.3.0-ecr-ecs-fargate is back") and "StopServiceDeployment" in why
    assert _asked(aws, "StopServiceDeployment") == 1
    assert _asked(aws, "UpdateService") == 1  # the deploy's own: the abort sent none
    (last,) = engine.history(1)
    assert (last.outcome, last.ecs_status) == (Outcome.ABORTED, "ROLLBACK_SUCCESSFUL")
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"


def test_abort_falls_back_to_update_service_when_ecs_refuses_stop(
    aws: MotoServer, stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """StopServiceDeployment refused (AccessDenied): the previous task definition goes back
    with UpdateService, as before #26; ABORTED all the same, saying so."""
    aws.faults.refuse("ecs", "StopServiceDeployment")
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", ALICE)
    _wait_ecs_status(engine, record, "IN_PROGRESS")
    aborted = engine.abort(BOB)
    assert aborted.abort_via == ABORT_BY_UPDATE
    outcome, why = engine.follow_abort(aborted)
    assert outcome is Outcome.ABORTED, why
    assert why.endswith("v4.3.0-ecr-ecs-fargate is back") and "UpdateService" in why
    assert aws.requests.count("ecs", "StopServiceDeployment", throttled=False) == 0
    assert _asked(aws, "UpdateService") == 2
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"


def test_an_abort_read_before_it_recorded_how_still_says_how(
    aws: MotoServer, stack: LocalStack, simulator: RolloutSimulator, proxy: FaultProxy
) -> None:
    """Seen under load: the deploy's own watch read the record once the abort had marked it
    but before it recorded how ECS was asked (it does once UpdateService answers), and closed
    it at the restore's end as "aborted by Bob; v4.3.0 is back", without "(… UpdateService)".
    Here the abort's UpdateService answer is held 3 s at the wire (ECS applied it): the
    restore ends meanwhile, and the history still says how."""
    proxy.refuse("ecs", "StopServiceDeployment")
    proxy.delay_answer("ecs", "UpdateService", seconds=3, after=1)  # the abort's, not the deploy's
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    engine = Engine(through(stack.settings, proxy))
    try:
        record = engine.deploy("v4.5.0", ALICE)
        _wait_ecs_status(engine, record, "IN_PROGRESS")
        aborted = engine.abort(BOB)
        outcome, why = engine.follow_abort(aborted)
    finally:
        engine.close()
    assert [p.action for p in proxy.log if p.operation == "UpdateService"] == ["pass", "delay"]
    assert outcome is Outcome.ABORTED, why
    assert why.endswith("v4.3.0-ecr-ecs-fargate is back") and "UpdateService" in why, why
    (last,) = Engine(stack.settings).history(1)
    assert "UpdateService" in last.outcome_reason, last.outcome_reason


def test_a_lost_update_answer_is_found_the_same_way(
    aws: MotoServer, stack: LocalStack, simulator: RolloutSimulator, proxy: FaultProxy
) -> None:
    """UpdateService's answer lost: the reconciler adopts the ECS deployment and finds its
    service deployment as after any answer; the outcome is ECS's."""
    proxy.drop_answer("ecs", "UpdateService", times=1)
    engine = Engine(through(stack.settings, proxy))
    try:
        record, snaps = _deploy_and_follow(engine, "v4.4.0")
    finally:
        engine.close()
    assert record.start_error  # the answer was lost
    final = snaps[-1]
    assert final.outcome is Outcome.COMPLETED and final.ecs_status == "SUCCESSFUL"
    (last,) = Engine(stack.settings).history(1)
    assert last.service_deployment_arn and last.ecs_status == "SUCCESSFUL"
    assert _asked(aws, "UpdateService") == 1


# -- the fallback: one test per refusal path -------------------------------------------------


@pytest.mark.parametrize("fault", ["AccessDenied", "moto's 500"])
def test_refused_operations_fall_back_said_once_asked_once(
    fault: str,
    aws: MotoServer,
    stack: LocalStack,
    simulator: RolloutSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operations refused (the role lacks them; an endpoint without them, as moto's server
    answers: HTTP 500): deploybot judges from DescribeServices as before #26, says so once,
    and asks once (botocore's retries would make a 500 ten requests at every poll); a second
    deployment within the fallback's window asks nothing."""
    caplog.set_level(logging.INFO)
    for op in NEW_OPERATIONS:
        if fault == "AccessDenied":
            aws.faults.refuse("ecs", op)
        else:
            aws.faults.unimplement("ecs", op)
    engine = Engine(stack.settings)
    try:
        simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
        _, snaps = _deploy_and_follow(engine, "v4.5.0")
        _, again = _deploy_and_follow(engine, "v4.4.0")
    finally:
        engine.close()
    final = snaps[-1]
    assert final.outcome is Outcome.ROLLED_BACK and all(s.service_deployment is None for s in snaps)
    assert "circuit breaker" in final.outcome_reason
    assert again[-1].outcome is Outcome.COMPLETED
    asked = sum(aws.requests.count("ecs", op) for op in NEW_OPERATIONS)
    assert asked == 1, f"the refused operations were asked {asked} times"
    (said,) = refusals(caplog)
    assert "DescribeServices" in said
    assert ("AccessDenied" in said) if fault == "AccessDenied" else ("HTTP 500" in said)
    assert [r.ecs_status for r in engine.history(2)] == ["", ""]


@pytest.mark.parametrize("code", ["UnsupportedFeatureException", "UnknownOperationException"])
def test_a_region_without_the_operations_falls_back(
    code: str,
    stack: LocalStack,
    simulator: RolloutSimulator,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A region or partition without service deployments answers UnsupportedFeatureException
    (the operations' documented error) or does not know the operation: the old judgement,
    said once, asked once."""
    caplog.set_level(logging.INFO)
    for op in NEW_OPERATIONS:
        proxy.refuse("ecs", op, code=code)
    engine = Engine(through(stack.settings, proxy))
    try:
        _, snaps = _deploy_and_follow(engine, "v4.4.0")
    finally:
        engine.close()
    assert snaps[-1].outcome is Outcome.COMPLETED
    assert all(s.service_deployment is None for s in snaps)
    assert sum(proxy.count("ecs", op) for op in NEW_OPERATIONS) == 1
    (said,) = refusals(caplog)
    assert code in said


def test_a_deployment_ecs_has_no_service_deployment_for_is_judged_the_old_way(
    aws: MotoServer,
    stack: LocalStack,
    simulator: RolloutSimulator,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An open record of a deployment ECS lists no service deployment for (one from before
    they existed): judged from DescribeServices, said once; the operations stay in use."""
    caplog.set_level(logging.INFO)
    ecs = boto3.client("ecs")
    updated = ecs.update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        taskDefinition=stack.info.task_definition_arn,
        forceNewDeployment=True,
    )["service"]
    ecs_id = next(d["id"] for d in updated["deployments"] if d["status"] == "PRIMARY")
    # Its start past ECS's createdAt by more than the clock slack the finder allows: ECS's
    # list since then has nothing of it, as for a deployment from before service deployments.
    now = engine.clock.now() + ECS_CLOCK_SLACK + timedelta(seconds=1)
    old = DeploymentRecord(
        id=new_deployment_id(),
        service=stack.settings.ecs_service,
        kind="redeploy",
        tag="v4.3.0-ecr-ecs-fargate",
        image="img",
        task_definition=stack.info.task_definition_arn,
        previous_task_definition=stack.info.task_definition_arn,
        previous_tag="v4.3.0-ecr-ecs-fargate",
        ecs_deployment_id=ecs_id,
        who="alice",
        who_display="Alice",
        source="cli",
        reason="",
        started_at=now,
    )
    engine.ledger.record(old)
    final = [*engine.watch(old)][-1]
    assert final.outcome is Outcome.COMPLETED and final.service_deployment is None
    said = [
        r.getMessage() for r in caplog.records if "lists no service deployment" in r.getMessage()
    ]
    assert len(said) == 1
    assert engine.aws.service_deployments.refused == ""


# -- batched reads -----------------------------------------------------------------------------


def _service_deployment_arns(settings: Settings, services: list[tuple[str, str]]) -> list[str]:
    ecs = boto3.client("ecs", endpoint_url=settings.aws_endpoint_url, region_name="eu-west-1")
    return [
        str(b["serviceDeploymentArn"])
        for cluster, service in services
        for b in ecs.list_service_deployments(cluster=cluster, service=service)[
            "serviceDeployments"
        ]
    ]


def test_describe_service_deployments_is_batched_across_targets(
    aws: MotoServer, fleet_stack: FleetStack
) -> None:
    """Three targets' pollers asking within one poll interval cost one call: each fetch
    carries every ARN watched lately (up to DescribeServiceDeployments' 20), so the next
    asker finds its answer fresh."""
    fleet = Fleet(fleet_stack.settings)
    try:
        engines = [fleet.engine(name) for name in ("staging", "production", "billing")]
        services = [(e.aws.cluster, e.aws.service) for e in engines]
        arns = _service_deployment_arns(fleet_stack.settings, services)
        assert len(arns) == 3
        reads = engines[0].aws.service_deployments
        assert all(e.aws.service_deployments is reads for e in engines)  # one per place
        for engine, arn in zip(engines, arns, strict=True):  # each poller's first poll
            assert engine.aws.service_deployment(arn, max_age=60)["status"] == "SUCCESSFUL"
        aws.requests.clear()
        reads.forget(arns[0])  # the next poll of the first target finds its answer stale
        for engine, arn in zip(engines, arns, strict=True):  # the next interval's polls
            assert engine.aws.service_deployment(arn, max_age=60) is not None
        assert aws.requests.count("ecs", "DescribeServiceDeployments") == 1
    finally:
        fleet.close()


def test_more_than_twenty_watched_arns_take_one_call_each_twenty(
    aws: MotoServer, stack: LocalStack, engine: Engine
) -> None:
    """DescribeServiceDeployments takes at most 20 ARNs: a fetch carries the asked one and at
    most 19 riders; ECS's answer for an ARN it does not know is None (its failures)."""
    known = _service_deployment_arns(
        stack.settings, [(stack.settings.ecs_cluster, stack.settings.ecs_service)]
    )[0]
    unknown = [f"{known[:-6]}x{i:05d}" for i in range(24)]
    reads = engine.aws.service_deployments
    for arn in unknown:
        assert reads.get(arn, max_age=60) is None
    aws.requests.clear()
    reads.forget(known)
    assert reads.get(known, max_age=60) is not None
    # The asked ARN and 19 riders, the freshest kept: within the limit, one call.
    assert aws.requests.count("ecs", "DescribeServiceDeployments") == 1


def test_ecs_saying_successful_after_a_stale_service_read_ends_on_a_fresh_one(
    aws: MotoServer, stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """A poll reads DescribeServices, then DescribeServiceDeployments. When the rollout ends
    between the two, ECS's SUCCESSFUL meets a service read that still shows it rolling out: the
    final snapshot must not say "3 of 3 completed" with 1 running and no steady-state event.
    The fault: DescribeServiceDeployments held at the wire while the simulation finishes."""
    engine = Engine(stack.settings)
    try:
        record = engine.deploy("v4.4.0", Requester("alice", "cli", "Alice"))
        snaps: list[Snapshot] = []
        watcher = threading.Thread(target=lambda: snaps.extend(engine.watch(record)))
        watcher.start()
        wait_until(
            lambda: any(s.service_deployment and s.running < s.desired for s in snaps),
            30,
            "the rollout read with its service deployment, not yet running",
        )
        released = aws.faults.hold("ecs", "DescribeServiceDeployments")
        try:
            asked = aws.requests.count("ecs", "DescribeServiceDeployments")
            wait_until(
                lambda: aws.requests.count("ecs", "DescribeServiceDeployments") > asked,
                30,
                "a poll held at its service deployment read",
            )
            ecs_client = boto3.client(
                "ecs", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
            )

            def done() -> bool:
                svc = ecs_client.describe_services(
                    cluster=stack.settings.ecs_cluster, services=[stack.settings.ecs_service]
                )["services"][0]
                return [d["rolloutState"] for d in svc["deployments"]] == ["COMPLETED"]

            wait_until(done, 60, "the simulation to finish the rollout meanwhile")
        finally:
            released.set()
        watcher.join(60)
        final = snaps[-1]
        assert final.outcome == Outcome.COMPLETED, final
        assert final.running == final.desired == 3, final
        assert any("steady state" in e.message for s in snaps for e in s.new_events), [
            e.message for s in snaps for e in s.new_events
        ]
    finally:
        engine.close()
