"""Issue 31, the soak's round 27: a redeploy's record is never matched to the deployment it
replaces.

A redeploy reuses the running task definition. Between its record and its UpdateService, an
open record with no ECS deployment id is matched by task definition and creation time to an
ECS deployment; the one already running, if it was created moments before, looked like the
redeploy's own. ECS moves only when the test ticks the rollout simulator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bot.cli import main
from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord, Requester
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.helpers import wait_until
from tests.reliability.conftest import through
from tests.reliability.test_abort_truth import newest, restore

pytestmark = pytest.mark.reliability
OPERATOR = Requester("operator@laptop", "cli")


@pytest.fixture
def ecs(aws: MotoServer) -> RolloutSimulator:
    """The rollout simulator, moved by the test alone (``ecs.tick()``)."""
    return RolloutSimulator(aws)


@pytest.fixture
def faults(stack: LocalStack) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto, for the redeploy's engine only (the readers in its
    gap talk to moto directly)."""
    with FaultProxy(stack.info.endpoint_url) as proxy:
        yield proxy


def records(stack: LocalStack, n: int) -> list[DeploymentRecord]:
    engine = Engine(stack.settings)
    try:
        return engine.ledger.history(n)
    finally:
        engine.close()


def redeploy_written(stack: LocalStack) -> bool:
    last, _ = newest(stack)
    return last is not None and last.kind == "redeploy"


def lock_holder(stack: LocalStack) -> str:
    engine = Engine(stack.settings)
    try:
        lock = engine.ledger.lock_item()
        return lock.deployment_id if lock is not None else ""
    finally:
        engine.close()


def in_progress(stack: LocalStack) -> list[str]:
    engine = Engine(stack.settings)
    try:
        service = engine.aws.describe_service()
        assert service is not None
        return [d["id"] for d in service["deployments"] if d.get("rolloutState") == "IN_PROGRESS"]
    finally:
        engine.close()


@pytest.mark.parametrize(
    "reader",
    [["status"], ["deploy", "v4.3.0", "--no-wait"]],
    ids=["status", "another deploy's lock check"],
)
def test_a_reader_in_a_redeploys_gap_leaves_it_its_lock(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    faults: FaultProxy,
    reader: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A deploy has just completed; a redeploy's record is written but its put answered late
    (the fault proxy holds the answer), so its UpdateService is not sent yet. A reader then
    took the completed deploy's ECS deployment (same task definition, created seconds before)
    as the redeploy's, closed the redeploy COMPLETED and freed its lock: `deploy` started
    v4.3.0 over the redeploy (two rollouts at once, soak seed 247036231 round 27)."""
    engine = Engine(stack.settings)
    redeployer = Engine(through(stack.settings, faults))
    starting: threading.Thread | None = None
    try:
        first = engine.start(engine.plan_deploy("v4.5.0", OPERATOR), follow=False)
        restore(ecs)
        plan = redeployer.plan_redeploy(OPERATOR)  # reconciles the deploy: COMPLETED
        faults.delay_answer("dynamodb", "PutItem", seconds=4)  # the record's put
        starting = threading.Thread(target=redeployer.start, args=(plan,), kwargs={"follow": False})
        starting.start()
        wait_until(lambda: redeploy_written(stack), 30, "the redeploy's record written")
        assert aws.requests.count("ecs", "UpdateService") == 1  # the deploy's only
        code = main(reader)
        said = capsys.readouterr()
        redeploy = next(r for r in records(stack, 3) if r.kind == "redeploy")
        holder = lock_holder(stack)
        assert (redeploy.open, redeploy.ecs_deployment_id, holder) == (True, "", redeploy.id), (
            f"`deploybot {' '.join(reader)}` in the redeploy's gap took the deploy's ECS "
            f"deployment ({first.ecs_deployment_id}) for the redeploy's: {redeploy.outcome} "
            f"{redeploy.ecs_deployment_id}, the lock now {holder or 'free'}",
            said.out,
        )
        if reader[0] == "deploy":
            assert code == 2, said.out + said.err
            assert "locked" in said.out + said.err, said.out + said.err
        starting.join(timeout=60)
        assert len(in_progress(stack)) <= 1, in_progress(stack)
        restore(ecs)
    finally:
        if starting is not None:
            starting.join(timeout=60)
        engine.close()
        redeployer.close()
    assert main(["status"]) == 0
    redeploy, deploy = records(stack, 2)
    assert (deploy.id, deploy.outcome) == (first.id, Outcome.COMPLETED)
    assert redeploy.kind == "redeploy" and redeploy.outcome is Outcome.COMPLETED, redeploy
    assert redeploy.ecs_deployment_id not in ("", first.ecs_deployment_id), redeploy
    assert aws.requests.count("ecs", "UpdateService") == 2  # the deploy's, the redeploy's
    assert newest(stack)[1] is False


def test_a_redeploy_lost_on_its_way_is_not_taken_for_the_deployment_before_it(
    stack: LocalStack, aws: MotoServer, ecs: RolloutSimulator, faults: FaultProxy
) -> None:
    """The neighbour of round 27 inside the redeploy's own process: its UpdateService never
    reaches ECS (reset on its way) moments after a deploy completed. Following the lost
    answer, it took the deploy's ECS deployment for its own ("ECS had started the
    deployment"), and closed COMPLETED a redeploy that never happened."""
    engine = Engine(stack.settings)
    redeployer = Engine(through(stack.settings, faults))
    try:
        first = engine.start(engine.plan_deploy("v4.5.0", OPERATOR), follow=False)
        restore(ecs)
        plan = redeployer.plan_redeploy(OPERATOR)
        faults.reset_answer("ecs", "UpdateService", times=1, forward=False)
        record = redeployer.start(plan, follow=False)
    finally:
        engine.close()
        redeployer.close()
    assert record.ecs_deployment_id != first.ecs_deployment_id, record.start_error
    assert (record.outcome, record.ecs_deployment_id) == (Outcome.NOT_STARTED, ""), record
    assert aws.requests.count("ecs", "UpdateService") == 1  # the deploy's
    assert lock_holder(stack) == ""
