"""The engine against moto's server over HTTP, with the rollout simulator moving ECS."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest

from bot.clock import Clock
from bot.deploy.engine import Engine
from bot.deploy.ledger import Ledger
from bot.deploy.records import DeploymentRecord, Requester, new_deployment_id
from bot.deploy.rollout import Outcome, Snapshot
from bot.errors import BadTag, ImageMissing, LockHeld, NothingToRollBack
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.settings import Settings
from tests.conftest import LocalStack
from tests.helpers import wait_until
from tests.slack.helpers import running_tag

ALICE = Requester("alice", "cli", "Alice")
BOB = Requester("bob", "cli", "Bob")
# Fields a new revision may differ in; every other field must be kept.
VOLATILE = {"taskDefinitionArn", "revision", "registeredAt", "registeredBy", "status"}


def ecs(settings: Settings) -> Any:
    return boto3.client("ecs", endpoint_url=settings.aws_endpoint_url, region_name="eu-west-1")


def revisions(settings: Settings) -> list[str]:
    return list(ecs(settings).list_task_definitions()["taskDefinitionArns"])


def follow(engine: Engine, record: Any) -> list[Snapshot]:
    return list(engine.watch(record))


@pytest.fixture
def engine(stack: LocalStack) -> Any:
    eng = Engine(stack.settings)
    yield eng
    eng.close()


def test_deploy_completes_and_keeps_every_other_field(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    settings = stack.settings
    before = ecs(settings).describe_task_definition(taskDefinition=stack.info.task_definition_arn)
    record = engine.deploy("v4.4.0", ALICE, reason="ship it")
    snaps = follow(engine, record)
    final = snaps[-1]
    assert final.outcome == Outcome.COMPLETED, final
    assert final.running == final.desired == 3
    assert running_tag(settings) == "v4.4.0-ecr-ecs-fargate"
    # Progress was seen before the end, and the ECS events came through.
    assert any(s.running < s.desired for s in snaps[:-1])
    assert any("steady state" in e.message for s in snaps for e in s.new_events)

    after = ecs(settings).describe_task_definition(
        taskDefinition=record.task_definition, include=["TAGS"]
    )
    old, new = before["taskDefinition"], after["taskDefinition"]
    for key in set(old) | set(new):
        if key in VOLATILE:
            continue
        if key == "containerDefinitions":
            for a, b in zip(old[key], new[key], strict=True):
                assert {**a, "image": None} == {**b, "image": None}
        else:
            assert old.get(key) == new.get(key), key
    # Pinned by digest, the tag users know beside it (ECS takes one or the other).
    release = stack.info.release("v4.4.0")
    assert (
        new["containerDefinitions"][0]["image"] == f"{stack.info.repository_uri}@{release.digest}"
    )
    tags = {t["key"]: t["value"] for t in after["tags"]}
    assert tags["deploybot:tag"] == "v4.4.0-ecr-ecs-fargate"
    assert tags["deploybot:deployed-by"] == "Alice"
    assert tags["deploybot:source"] == "cli"
    assert tags["deploybot:reason"] == "ship it"

    (last,) = engine.history(1)
    assert (last.id, last.who, last.tag, last.outcome) == (
        record.id,
        "alice",
        "v4.4.0-ecr-ecs-fargate",
        Outcome.COMPLETED,
    )
    assert last.duration is not None and last.duration > 0
    assert last.previous_tag == "v4.3.0-ecr-ecs-fargate"
    assert (last.digest, last.previous_digest) == (
        release.digest,
        stack.info.release("v4.3.0").digest,
    )
    assert engine.ledger.current_lock() is None


@pytest.mark.parametrize("text", ["v1;rm -rf /", "", "x" * 300, "v4.4.0\u00e9", "latest"])
def test_bad_tags_are_refused_before_any_change(
    stack: LocalStack, aws: MotoServer, engine: Engine, text: str
) -> None:
    before = revisions(stack.settings)
    with pytest.raises(BadTag) as err:
        engine.deploy(text, ALICE)
    assert "v4.4.0" in str(err.value) or "characters" in str(err.value)
    assert revisions(stack.settings) == before
    assert engine.ledger.current_lock() is None
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
    assert aws.requests.count("dynamodb", "PutItem") == 0


def test_missing_image_lists_recent_tags(stack: LocalStack, engine: Engine) -> None:
    before = revisions(stack.settings)
    with pytest.raises(ImageMissing) as err:
        engine.deploy("v9.9.9", ALICE)
    assert err.value.recent[:3] == (
        "v4.5.0-ecr-ecs-fargate",
        "v4.4.0-ecr-ecs-fargate",
        "v4.3.0-ecr-ecs-fargate",
    )
    assert "v4.5.0-ecr-ecs-fargate" in err.value.message
    assert revisions(stack.settings) == before
    assert engine.ledger.current_lock() is None


def test_broken_image_fails_and_names_the_rollback(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", ALICE)
    snaps = follow(engine, record)
    final = snaps[-1]
    assert final.outcome == Outcome.ROLLED_BACK
    assert "circuit breaker" in final.outcome_reason
    assert final.rollback_tag == "v4.3.0-ecr-ecs-fargate"
    assert final.rollback_deployment and final.rollback_deployment != record.ecs_deployment_id
    assert any(t.reason for s in snaps for t in s.stopped_tasks)
    assert engine.ledger.current_lock() is None
    (last,) = engine.history(1)
    assert last.outcome == Outcome.ROLLED_BACK and last.rollback_tag == "v4.3.0-ecr-ecs-fargate"


def test_slow_rollout_is_still_rolling_out_at_the_timeout(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    engine = Engine(stack.settings.model_copy(update={"rollout_timeout_seconds": 1.0}))
    try:
        record = engine.deploy("v4.4.0", ALICE)
        final = follow(engine, record)[-1]
    finally:
        engine.close()
    assert final.outcome == Outcome.STILL_ROLLING_OUT
    assert final.outcome.exit_code == 3
    # ECS carries on: the lock stays with it until someone sees ECS end it (issue 29).
    lock = engine.ledger.current_lock()
    assert lock is not None and lock.deployment_id == record.id


def test_lock_refuses_a_second_deploy_naming_the_holder(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    record = engine.deploy("v4.4.0", ALICE)
    with pytest.raises(LockHeld) as err:
        engine.deploy("v4.5.0", BOB)
    assert err.value.holder == "Alice"
    assert "Alice" in err.value.message and "v4.4.0-ecr-ecs-fargate" in err.value.message
    follow(engine, record)
    assert engine.ledger.current_lock() is None


def test_concurrent_deploys_exactly_one_proceeds(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    # The first rollout stays in progress while the others ask (a simulated rollout of a
    # few tenths of a second could end before a laggard thread asks, and then its lock is
    # rightly free again); released once every answer is in.
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    engines = [Engine(stack.settings) for _ in range(8)]
    barrier = threading.Barrier(len(engines))
    results: list[object] = [None] * len(engines)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = engines[i].deploy("v4.4.0", Requester(f"user{i}", "cli"))
        except LockHeld as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if not isinstance(r, LockHeld)]
    refused = [r for r in results if isinstance(r, LockHeld)]
    assert len(started) == 1 and len(refused) == len(engines) - 1
    holder = started[0].who  # type: ignore[attr-defined]
    assert all(r.holder == holder for r in refused)
    simulator.slow_ticks = 2
    follow(engines[0], started[0])
    for e in engines:
        e.close()


class ShiftedClock(Clock):
    """A machine whose clock is ``by`` off (a process that ran long ago, or a skewed one)."""

    def __init__(self, by: timedelta) -> None:
        self.by = by

    def now(self) -> datetime:
        return super().now() + self.by


def test_a_deployment_settled_late_takes_as_long_as_ecs_took_not_until_someone_looked(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """Issue 29 (7): a --no-wait deployment judged two minutes after ECS finished it was
    recorded as taking "122 s" (until someone looked). Its duration ends when ECS says the
    deployment ended (the deployment's updatedAt, the event, what replaced it)."""
    record = engine.start(engine.plan_deploy("v4.4.0", ALICE), follow=False)
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    ecs_took = (datetime.now(record.started_at.tzinfo) - record.started_at).total_seconds()
    late = Engine(stack.settings, clock=ShiftedClock(timedelta(minutes=2)))
    try:
        (settled,) = late.history(1)
    finally:
        late.close()
    assert settled.id == record.id and settled.outcome == Outcome.COMPLETED
    assert settled.duration is not None and settled.final is not None
    assert 0 <= settled.duration <= ecs_took, (settled.duration, ecs_took)
    assert settled.final.elapsed == settled.duration
    assert engine.ledger.current_lock() is None


def test_a_dead_holders_lease_is_taken_over_only_past_the_clock_skew(
    stack: LocalStack, engine: Engine
) -> None:
    """A lock with no record (its holder died at once) is taken over when its lease lapsed
    by more than CLOCK_SKEW: a lease 4 minutes stale may be a live holder's clock."""
    tag = "v4.4.0-ecr-ecs-fargate"
    recent = Ledger(engine.aws, lease_seconds=1, clock=ShiftedClock(-timedelta(minutes=4)))
    recent.try_acquire(Requester("ghost", "cli"), tag, "d-dead")
    with pytest.raises(LockHeld):
        engine.acquire(ALICE, tag, "d-next")
    engine.unlock()
    long_ago = Ledger(engine.aws, lease_seconds=1, clock=ShiftedClock(-timedelta(minutes=6)))
    long_ago.try_acquire(Requester("ghost", "cli"), tag, "d-dead")
    lock = engine.acquire(ALICE, tag, "d-next")
    assert lock.holder == "Alice"
    broken = engine.unlock()
    assert broken is not None and broken.holder == "Alice" and broken.deployment_id == "d-next"
    assert engine.ledger.current_lock() is None


def test_throttling_does_not_stop_a_deploy(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engine: Engine
) -> None:
    aws.faults.throttle("ecs", "UpdateService", times=2)
    aws.faults.throttle("ecs", "DescribeServices", seconds=1.5)
    record = engine.deploy("v4.4.0", ALICE)
    final = follow(engine, record)[-1]
    assert final.outcome == Outcome.COMPLETED
    assert aws.requests.count("ecs", "DescribeServices", throttled=True) > 0
    assert aws.requests.count("ecs", "UpdateService", throttled=True) == 2


def test_one_poller_however_many_watchers(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engine: Engine
) -> None:
    record = engine.deploy("v4.4.0", ALICE)  # followed from here: the poller is already on
    before, polls = aws.requests.count("ecs", "DescribeServices"), engine.poller.polls
    watches = [engine.watch(record) for _ in range(6)]
    finals = [list(w)[-1] for w in watches]
    assert {f.outcome for f in finals} == {Outcome.COMPLETED}
    calls = aws.requests.count("ecs", "DescribeServices") - before
    polls = engine.poller.polls - polls
    assert polls >= 2
    # One DescribeServices per poll, not one per watcher (±1: a poll in flight at the count).
    assert abs(calls - polls) <= 1


def test_redeploy_forces_a_new_deployment_of_the_same_revision(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    record = engine.redeploy(ALICE)
    assert record.task_definition == stack.info.task_definition_arn
    assert record.ecs_deployment_id
    final = follow(engine, record)[-1]
    assert final.outcome == Outcome.COMPLETED
    assert record.kind == "redeploy"


def test_rollback_goes_to_the_last_completed_other_image(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    with pytest.raises(NothingToRollBack):
        engine.rollback(ALICE)
    follow(engine, engine.deploy("v4.4.0", ALICE))
    follow(engine, engine.deploy("v4.5.0", BOB))
    record = engine.rollback(ALICE)
    assert record.kind == "rollback" and record.tag == "v4.4.0-ecr-ecs-fargate"
    assert follow(engine, record)[-1].outcome == Outcome.COMPLETED
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


def test_status_tells_what_runs(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    st = engine.status()
    assert (st.tag, st.running, st.desired, st.rollout, st.lock) == (
        "v4.3.0-ecr-ecs-fargate",
        3,
        3,
        None,
        None,
    )
    record = engine.deploy("v4.4.0", ALICE)
    during = engine.status()
    assert during.lock is not None and during.lock.holder == "Alice"
    assert during.rollout is not None
    follow(engine, record)
    after = engine.status()
    assert after.tag == "v4.4.0-ecr-ecs-fargate" and after.lock is None
    assert after.recent[0].id == record.id


def test_a_lock_left_by_a_closed_deployment_is_released(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """The holder died between closing its record and releasing its lock."""
    record = engine.deploy("v4.4.0", ALICE)
    follow(engine, record)
    # the lock it failed to release
    engine.ledger.try_acquire(ALICE, record.tag, record.id, record.sort_key)
    assert engine.ledger.current_lock() is not None
    engine.open_deployments()  # what a bot does when it starts
    assert engine.ledger.current_lock() is None

    engine.ledger.try_acquire(ALICE, record.tag, record.id, record.sort_key)
    second = engine.deploy("v4.5.0", BOB)  # taken over at once, not after the lease
    assert engine.ledger.current_lock().deployment_id == second.id  # type: ignore[union-attr]
    follow(engine, second)


def _record_before_update(
    engine: Engine, task_definition: str, ago: timedelta = timedelta(0)
) -> DeploymentRecord:
    """What a process leaves when it dies after recording a deployment, around UpdateService
    (``ago``: how long ago, by its clock)."""
    ghost = Ledger(engine.aws, lease_seconds=120, clock=ShiftedClock(-ago))
    record = DeploymentRecord(
        id=new_deployment_id(),
        service=engine.service_name,
        kind="redeploy",
        tag="v4.3.0-ecr-ecs-fargate",
        image="",
        task_definition=task_definition,
        previous_task_definition=task_definition,
        previous_tag="v4.3.0-ecr-ecs-fargate",
        ecs_deployment_id="",
        who="ghost",
        who_display="ghost",
        source="cli",
        reason="",
        started_at=ghost.clock.now(),
    )
    ghost.try_acquire(Requester("ghost", "cli"), record.tag, record.id, record.sort_key)
    ghost.record(record)
    return record


def _unused_revision(engine: Engine, stack: LocalStack) -> str:
    td, _ = engine.aws.describe_task_definition(stack.info.task_definition_arn)
    return str(
        engine.aws.register_task_definition(
            **{k: td[k] for k in ("family", "containerDefinitions", "networkMode", "cpu", "memory")}
        )["taskDefinitionArn"]
    )  # registered, but ECS was never asked to run it


def test_a_record_whose_process_died_before_asking_ecs_is_closed_as_never_started(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    """Once its process cannot still be asking ECS (its lock lapsed, its call's longest
    retries over): NOT_STARTED, nothing changed, the lock released."""
    _record_before_update(engine, _unused_revision(engine, stack), ago=timedelta(minutes=20))
    (open_record,) = engine.open_deployments()
    final = follow(engine, open_record)[-1]
    assert final.outcome == Outcome.NOT_STARTED and "nothing changed" in final.outcome_reason
    assert final.outcome.exit_code == 2
    assert engine.ledger.lock_item() is None
    assert not engine.history(1)[0].open


def test_a_record_whose_process_may_still_be_asking_ecs_stays_open(
    stack: LocalStack, engine: Engine
) -> None:
    """A record without an ECS deployment whose process may still be retrying UpdateService
    is left open, its lock held: no reconcile calls it "never started"."""
    record = _record_before_update(engine, _unused_revision(engine, stack))
    assert engine.reconcile() == []
    (listed,) = engine.history(1)
    assert listed.id == record.id and listed.open
    with pytest.raises(LockHeld) as err:
        engine.deploy("v4.4.0", ALICE)
    assert "starting" in err.value.message


def test_a_record_whose_process_died_after_asking_ecs_is_adopted_and_finished(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    record = _record_before_update(engine, stack.info.task_definition_arn)
    engine.aws.update_service(stack.info.task_definition_arn, force=True)  # then it died
    (open_record,) = engine.open_deployments()
    final = follow(engine, open_record)[-1]
    assert final.outcome == Outcome.COMPLETED
    (closed,) = engine.history(1)
    assert closed.id == record.id and closed.ecs_deployment_id.startswith("ecs-svc/")
    assert engine.ledger.current_lock() is None
