"""Point 3 of issue 13: "nothing changed" only when provably nothing changed.

``deploybot deploy`` (a real process) talks to moto through the fault proxy, which breaks
UpdateService's answer on the wire after moto applied it, or the ledger write after it. The
user must be told "ECS may have started the deployment; following it", never "refused", and
the deployment followed to what ECS did: record closed with the real outcome, lock released.
"""

from __future__ import annotations

import pytest

from bot.deploy.engine import Engine
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.helpers import deploybot, wait_until
from tests.reliability.conftest import cli, report
from tests.slack.helpers import running_tag

pytestmark = pytest.mark.reliability
V44 = "v4.4.0-ecr-ecs-fargate"


def settled(stack: LocalStack) -> tuple[Outcome | None, bool, bool]:
    """(outcome of the newest record, is it open, is the lock held), read past the proxy."""
    engine = Engine(stack.settings)
    try:
        (last,) = engine.ledger.history(1)
        return last.outcome, last.open, engine.ledger.lock_item() is not None
    finally:
        engine.close()


@pytest.mark.parametrize(
    "fault",
    ["answer dropped, retry denied", "connection reset, token expired on retry"],
)
def test_a_lost_update_service_answer_is_followed_not_refused(
    fault: str,
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    simulator: RolloutSimulator,
) -> None:
    if fault.startswith("answer dropped"):
        proxy.drop_answer("ecs", "UpdateService", times=1)
        proxy.refuse("ecs", "UpdateService", code="AccessDeniedException")
    else:
        proxy.reset_answer("ecs", "UpdateService", times=1)
        proxy.refuse("ecs", "UpdateService", code="ExpiredTokenException")
    done = cli("deploy", "v4.4.0")
    out = done.stdout + done.stderr
    assert "ECS may have started the deployment" in out and "following it" in out
    assert "✗" not in out and "refused before" not in out
    assert done.returncode == 0, out
    assert f"✓ Deployed {V44}" in done.stdout
    assert aws.requests.count("ecs", "UpdateService") == 1  # moto applied the first one
    assert running_tag(stack.settings) == V44
    outcome, still_open, locked = settled(stack)
    report(
        f"UpdateService {fault}",
        **{"exit code": done.returncode, "outcome": outcome, "lock held": locked},
    )
    assert (outcome, still_open, locked) == (Outcome.COMPLETED, False, False)


def test_access_denied_on_the_ledger_write_after_update_service_is_followed(
    stack: LocalStack, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """UpdateService went through; recording its ECS deployment id was denied. The old code
    said "refused" (exit 2) while ECS rolled out with nobody watching."""
    proxy.refuse("dynamodb", "UpdateItem", code="AccessDeniedException", times=1)
    done = cli("deploy", "v4.4.0")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "✗" not in out and "recording it failed" in out
    assert f"✓ Deployed {V44}" in done.stdout
    assert settled(stack) == (Outcome.COMPLETED, False, False)


def test_update_service_refused_outright_is_a_refusal_and_changes_nothing(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy
) -> None:
    """The only attempt answered AccessDenied: ECS's own answer proves nothing changed."""
    proxy.refuse("ecs", "UpdateService", code="AccessDeniedException", times=1)
    done = cli("deploy", "v4.4.0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "AWS refused access while updating the service" in done.stderr
    assert aws.requests.count("ecs", "UpdateService") == 0
    engine = Engine(stack.settings)
    try:
        assert engine.ledger.history(5) == [] and engine.ledger.lock_item() is None
    finally:
        engine.close()


def test_a_request_lost_before_ecs_then_denied_is_proven_not_started(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """The first attempt never reached ECS (reset on the way), the retry was denied: the
    client cannot tell, so deploybot follows; ECS shows no deployment of it, so it ends "not
    started, nothing changed" with exit 2, the record closed and the lock free."""
    proxy.reset_answer("ecs", "UpdateService", times=1, forward=False)
    proxy.refuse("ecs", "UpdateService", code="AccessDeniedException")
    done = cli("deploy", "v4.4.0")
    out = done.stdout + done.stderr
    assert "ECS may have started the deployment" in out
    assert done.returncode == 2, out
    assert "was not deployed" in done.stdout and "nothing changed" in done.stdout
    assert aws.requests.count("ecs", "UpdateService") == 0
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    assert settled(stack) == (Outcome.NOT_STARTED, False, False)


def test_a_deploys_update_service_is_not_sent_again_after_a_lost_answer(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """Found by the randomized lifecycle test (issue 31): a deploy of a broken image whose
    UpdateService answer was reset; botocore sent it again after its backoff, by when the
    circuit breaker had rolled the first attempt's deployment back, and the retry started the
    broken task definition a second time (a deployment no record knew). Sent once now."""
    proxy.reset_answer("ecs", "UpdateService", times=1)
    done = cli("deploy", "v4.4.0")
    out = done.stdout + done.stderr
    assert aws.requests.count("ecs", "UpdateService") == 1, "UpdateService sent again: " + out
    assert done.returncode == 0, out
    assert "ECS may have started the deployment" in out
    assert settled(stack) == (Outcome.COMPLETED, False, False)


@pytest.mark.parametrize("fault", ["answer dropped", "connection reset"])
def test_a_redeploy_whose_answer_is_lost_starts_one_ecs_deployment(
    fault: str,
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    simulator: RolloutSimulator,
) -> None:
    """Issue 31, 1: forceNewDeployment starts a deployment each time it reaches ECS. Its
    answer is lost after moto applied it: the old code sent it again (botocore's retry of a
    connection error) and ECS started a second deployment over the first. Sent once now,
    and the lost answer followed to the one deployment ECS started."""
    if fault == "answer dropped":
        proxy.drop_answer("ecs", "UpdateService", times=1)
    else:
        proxy.reset_answer("ecs", "UpdateService", times=1)
    done = cli("redeploy")
    out = done.stdout + done.stderr
    assert aws.requests.count("ecs", "UpdateService") == 1, "UpdateService sent again: " + out
    assert "ECS may have started the deployment" in out and "following it" in out, out
    assert done.returncode == 0, out
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    engine = Engine(stack.settings)
    try:
        (last,) = engine.ledger.history(1)
        service = engine.aws.describe_service()
    finally:
        engine.close()
    assert service is not None
    (only,) = service["deployments"]
    assert (last.kind, last.outcome, last.open) == ("redeploy", Outcome.COMPLETED, False)
    assert last.ecs_deployment_id == only["id"]
    report(f"redeploy, UpdateService {fault}", **{"UpdateService calls": 1, "exit code": 0})


def test_a_lost_answer_to_taking_the_lock_does_not_lock_the_deploy_out(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """Found by the randomized lifecycle test (issue 31): the lock's PutItem was applied and
    its answer reset; botocore's retry then failed its condition on our own lock, and the
    deploy was refused ("Deploys are locked: operator@laptop is deploying v4.4.0", exit 2)
    with its own lock left held, blocking every deploy until its lease lapsed."""
    proxy.reset_answer("dynamodb", "PutItem", times=1)
    done = cli("deploy", "v4.4.0")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"✓ Deployed {V44}" in done.stdout
    assert settled(stack) == (Outcome.COMPLETED, False, False)


@pytest.mark.parametrize("reached_ecs", [False, True])
def test_a_no_wait_deploy_whose_answer_is_lost_says_whether_it_started(
    reached_ecs: bool,
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    simulator: RolloutSimulator,
) -> None:
    """Found by the randomized lifecycle test (issue 31): `deploy --no-wait` whose
    UpdateService was lost on its way said "Started" (exit 0) and left its record open and
    the lock held, nobody following it: every deploy was refused ("it is starting (ECS shows
    no deployment of it yet)") until NEVER_STARTED_AFTER, minutes later. It now reads ECS
    for a few polls: not started (exit 2, lock free), or started (adopted, exit 0)."""
    proxy.reset_answer("ecs", "UpdateService", times=1, forward=reached_ecs)
    done = cli("deploy", "v4.4.0", "--no-wait")
    out = done.stdout + done.stderr
    engine = Engine(stack.settings)
    try:
        (record,) = engine.ledger.history(1)
        locked = engine.ledger.lock_item() is not None
    finally:
        engine.close()
    if reached_ecs:
        assert done.returncode == 0, out
        assert "ECS had started the deployment" in out, out
        assert record.ecs_deployment_id and locked
    else:
        assert done.returncode == 2, out
        assert "was not deployed" in done.stdout and "nothing changed" in done.stdout, out
        assert (record.outcome, locked) == (Outcome.NOT_STARTED, False)
        assert aws.requests.count("ecs", "UpdateService") == 0
    simulator.mark_healthy("v4.5.0-ecr-ecs-fargate")
    wait_until(simulator.idle, 60, "ECS still")
    second = cli("deploy", "v4.5.0")
    assert second.returncode == 0, second.stdout + second.stderr


@pytest.mark.parametrize("put", ["the history record", "the release tag's image"])
def test_a_start_write_whose_answer_never_comes_is_read_back_and_the_deploy_goes_on(
    put: str, stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """A PutItem of the start applied by DynamoDB whose answer never comes (held past the
    client's read timeout, which is not retried: bot/deploy/aws.py). The history record: seen
    in CI's run at ba580bb under load, the start failed and released the lock over its own
    open record. The release tag's image (what the tag named at its first deploy, for the
    moved-tag guard): the deploy failed, exit 2, "Could not reach AWS while recording the
    release tag's image", its record left open for a reconcile to prove it never started.
    Each is now read back, consistently, and the deploy goes on."""
    # The start's PutItems: the history record, then the release tag's image.
    proxy.delay_answer(
        "dynamodb", "PutItem", seconds=7, after=0 if put == "the history record" else 1
    )
    done = deploybot("deploy", "v4.4.0", DEPLOYBOT_USER="operator@laptop", COLUMNS="160")
    out = done.stdout + done.stderr
    assert [p.operation for p in proxy.log if p.action == "delay"] == ["PutItem"], out
    assert done.returncode == 0, out
    assert f"Deployed {V44}" in done.stdout, out
    assert settled(stack) == (Outcome.COMPLETED, False, False)
    assert aws.requests.count("ecs", "UpdateService") == 1
    engine = Engine(stack.settings)
    try:
        remembered = engine.ledger.tag_record(stack.settings.ecr_repository, V44)
    finally:
        engine.close()
    assert remembered is not None and remembered.digest.startswith("sha256:")


def test_a_start_that_fails_before_ecs_is_asked_leaves_no_open_record(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """The start's last read before ECS (the record read back for an abort that came
    meanwhile) gets no answer: the deploy fails, honestly, before ECS is asked. It left its
    record open in the history ("starting", no lock, no ECS deployment) until a reconcile
    proved it never started; now the record goes with the lock, as for a refused
    UpdateService."""
    # The start's DynamoDB calls: reads, the lock (TransactWriteItems), the history record
    # and the release tag's image (PutItem), then that read (the fifth GetItem).
    proxy.delay_answer("dynamodb", "GetItem", seconds=7, after=4)
    done = deploybot("deploy", "v4.4.0", DEPLOYBOT_USER="operator@laptop", COLUMNS="160")
    out = done.stdout + done.stderr
    calls = [p.operation for p in proxy.log if p.service == "dynamodb"]
    held = calls.index("GetItem", calls.index("PutItem"))
    assert proxy.log and [p.action for p in proxy.log if p.service == "dynamodb"][held] == "delay"
    assert done.returncode == 2, out
    assert "Could not reach AWS" in out and "Traceback" not in out, out
    assert aws.requests.count("ecs", "UpdateService") == 0
    engine = Engine(stack.settings)
    try:
        assert engine.ledger.history(5) == [], "an open record of a start ECS never heard of"
        assert engine.ledger.lock_item() is None
    finally:
        engine.close()
