"""Production guardrails in the engine, against moto's server: freeze, approval requests,
abort, deploy windows and the queue, each through the one rules check of every plan."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from bot.clock import Clock
from bot.deploy.engine import Engine
from bot.deploy.records import QueuedItem, QueueMode, Requester, RequestState, Via
from bot.deploy.rollout import Outcome
from bot.errors import DeployRefused, LockHeld, NoSuchRequest, NothingToAbort
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.rules import Door, Rule, RuleRefused
from bot.target import Target
from bot.windows import DAY_NAMES, parse_window
from tests.conftest import LocalStack
from tests.reliability.test_rollback_truth import move_tag
from tests.slack.helpers import running_tag

ANA, BEN, CARA, DAN = "U0ANA", "U0BEN", "U0CARA", "U0DAN"
DEPLOYS = "C0DEPLOYS"
OPERATOR = Requester("operator@laptop", "cli")


def slack(who: str) -> Requester:
    return Requester(who, "slack", who.lower())


def slash(**kw: Any) -> Via:
    return Via(door=Door.SLASH, channel=DEPLOYS, **kw)


def button(**kw: Any) -> Via:
    return Via(door=Door.BUTTON, channel=DEPLOYS, **kw)


class ShiftedClock(Clock):
    """The system clock, moved forward by ``shift`` (tests move it past an expiry)."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def now(self) -> datetime:
        return super().now() + self.shift


def target_of(stack: LocalStack, **rules: Any) -> Target:
    s = stack.settings
    rules.setdefault("deployers", frozenset({ANA, BEN, CARA}))
    return Target(
        name="production",
        cluster=s.ecs_cluster,
        service=s.ecs_service,
        repository=s.ecr_repository,
        channels=frozenset({DEPLOYS}),
        **rules,
    )


def engine_for(stack: LocalStack, target: Target, clock: Clock | None = None) -> Engine:
    kwargs = {"clock": clock} if clock else {}
    return Engine(target.settings(stack.settings), target=target, **kwargs)


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.close()


def closed_window_now() -> str:
    """A window open all day on a weekday three days from today: closed now."""
    day = DAY_NAMES[(datetime.now(UTC).weekday() + 3) % 7]
    return f"{day} 00:00-24:00 UTC"


def test_freeze_refuses_changes_and_lets_rollback_through(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack))
    engines.append(engine)
    first = engine.deploy("v4.4.0", OPERATOR)
    list(engine.watch(first))
    engine.freeze(slack(ANA), "incident 1234", via=slash())
    with pytest.raises(RuleRefused) as refused:
        engine.plan_deploy("v4.5.0", slack(BEN), via=slash())
    assert refused.value.rule is Rule.FREEZE
    assert "production is frozen by" in refused.value.decision.message
    assert "incident 1234" in refused.value.decision.message
    assert f"<@{ANA}>" in refused.value.decision.mrkdwn
    for plan in (
        lambda: engine.plan_redeploy(slack(BEN), via=slash()),
        lambda: engine.plan_deploy("v4.5.0", OPERATOR),
    ):
        with pytest.raises(RuleRefused):
            plan()
    with pytest.raises(RuleRefused, match="already frozen"):
        engine.freeze(OPERATOR, "again")
    # Rollback goes ahead, and says it went past the freeze (kept in the record).
    plan = engine.plan_rollback(slack(BEN), of=first.id, via=slash())
    assert [b.rule for b in plan.decision.bypassed] == [Rule.FREEZE]
    record = engine.start(plan)
    assert any("bypass" in b or "goes ahead" in b for b in record.bypassed)
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    assert engine.history(1)[0].bypassed == record.bypassed
    lifted = engine.unfreeze(OPERATOR)
    assert lifted.reason == "incident 1234" and lifted.by == ANA
    assert engine.status().freeze is None
    with pytest.raises(RuleRefused, match="not frozen"):
        engine.unfreeze(OPERATOR)
    engine.plan_deploy("v4.5.0", OPERATOR)  # allowed again


def test_a_failure_freezes_a_target_that_says_so(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack, freeze_after_failure=True))
    engines.append(engine)
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", OPERATOR)
    assert list(engine.watch(record))[-1].outcome in (Outcome.ROLLED_BACK, Outcome.FAILED)
    freeze = engine.status().freeze
    assert freeze is not None and freeze.deployment == record.id and freeze.via == "bot"
    assert record.id in freeze.reason and "v4.5.0" in freeze.reason
    with pytest.raises(RuleRefused) as refused:
        engine.plan_deploy("v4.4.0", OPERATOR)
    assert refused.value.rule is Rule.FREEZE and record.id in str(refused.value)


def test_a_failure_does_not_freeze_a_target_without_the_rule(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack))
    engines.append(engine)
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    list(engine.watch(engine.deploy("v4.5.0", OPERATOR)))
    assert engine.status().freeze is None


def _protected(stack: LocalStack, clock: Clock | None = None) -> Engine:
    target = target_of(stack, approvals=1, approvers=(CARA, DAN), approval_expiry_minutes=30)
    return engine_for(stack, target, clock)


def test_approval_request_approved_by_another_starts_the_deploy(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = _protected(stack)
    engines.append(engine)
    # Cara deploys and approves: her own deploy needs Dan.
    with pytest.raises(RuleRefused) as refused:
        engine.plan_deploy("v4.4.0", slack(CARA), via=slash())
    assert refused.value.decision.needs_approval and refused.value.rule is Rule.APPROVALS
    plan = engine.plan_deploy("v4.4.0", slack(CARA), "release", via=slash(asking=True))
    with pytest.raises(RuleRefused):
        engine.start(plan)  # a plan made for a request starts nothing by itself
    request = engine.request_approval(plan, DEPLOYS)
    assert (request.tag, request.digest) == ("v4.4.0-ecr-ecs-fargate", plan.digest)
    assert request.from_digest == stack.info.release("v4.3.0").digest
    assert request.expires_at - request.requested_at == timedelta(minutes=30)
    # The requester cannot approve their own request, nor can a non-approver.
    with pytest.raises(RuleRefused, match="you asked for this"):
        engine.approve(request.id, slack(CARA), via=button())
    with pytest.raises(RuleRefused, match="only"):
        engine.approve(request.id, slack(BEN), via=button())
    approval = engine.approve(request.id, slack(DAN), via=button())
    assert approval.missing == 0 and approval.plan is not None
    record = engine.start(approval.plan)
    assert record.approved_by == (DAN,) and record.approval_request == request.id
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    (last,) = engine.history(1)
    assert last.approved_by == (DAN,) and last.approval_request == request.id
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"
    with pytest.raises(NoSuchRequest, match="approved"):
        engine.approve(request.id, slack(CARA), via=button())


def test_expired_and_unknown_requests_are_refused(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    clock = ShiftedClock()
    engine = _protected(stack, clock)
    engines.append(engine)
    plan = engine.plan_deploy("v4.4.0", slack(ANA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    for tampered in ("r-nope", request.id + "x", "", "x" * 500):
        with pytest.raises(NoSuchRequest):
            engine.approve(tampered, slack(CARA), via=button())
    clock.shift = timedelta(minutes=31)
    with pytest.raises(RuleRefused) as refused:
        engine.approve(request.id, slack(CARA), via=button())
    assert refused.value.rule is Rule.EXPIRY and "expired" in str(refused.value)
    assert engine.ledger.current_lock() is None and engine.history(1) == []


def test_approval_after_the_premise_changed_is_refused(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = _protected(stack)
    engines.append(engine)
    plan = engine.plan_deploy("v4.4.0", slack(ANA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    # Another deploy happened meanwhile (a break-glass one from a terminal).
    glass = engine.plan_deploy("v4.5.0", OPERATOR, via=Via(break_glass="hotfix"))
    list(engine.watch(engine.start(glass)))
    with pytest.raises(RuleRefused) as refused:
        engine.approve(request.id, slack(CARA), via=button())
    assert refused.value.rule is Rule.PREMISE and "v4.5.0" in str(refused.value)

    # The image is gone from ECR.
    plan = engine.plan_deploy("v4.4.0", slack(ANA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    ecr = boto3.client("ecr", endpoint_url=stack.settings.aws_endpoint_url)
    ecr.batch_delete_image(
        repositoryName=stack.settings.ecr_repository,
        imageIds=[{"imageDigest": plan.digest}],
    )
    with pytest.raises(RuleRefused, match="gone from ECR"):
        engine.approve(request.id, slack(CARA), via=button())

    # The target froze.
    plan = engine.plan_deploy("v4.3.0", slack(ANA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    engine.freeze(slack(DAN), "incident 99", via=slash())
    with pytest.raises(RuleRefused) as refused:
        engine.approve(request.id, slack(CARA), via=button())
    assert refused.value.rule is Rule.FREEZE


def test_two_approvals_are_two_people(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    target = target_of(stack, approvals=2, approvers=(CARA, DAN, BEN))
    engine = engine_for(stack, target)
    engines.append(engine)
    plan = engine.plan_deploy("v4.4.0", slack(ANA), via=slash(asking=True))
    request = engine.request_approval(plan, DEPLOYS)
    first = engine.approve(request.id, slack(CARA), via=button())
    assert first.missing == 1 and first.plan is None
    with pytest.raises(RuleRefused, match="approved this already"):
        engine.approve(request.id, slack(CARA), via=button())
    second = engine.approve(request.id, slack(DAN), via=button())
    assert second.plan is not None and second.plan.approved_by == (CARA, DAN)
    rejected = engine.request_approval(
        engine.plan_deploy("v4.5.0", slack(ANA), via=slash(asking=True)), DEPLOYS
    )
    with pytest.raises(NoSuchRequest):
        engine.reject(rejected.id, slack("U0STRANGER"))
    engine.reject(rejected.id, slack(DAN))
    with pytest.raises(NoSuchRequest, match="rejected"):
        engine.approve(rejected.id, slack(CARA), via=button())


def test_break_glass_passes_approval_and_windows_on_the_record(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    target = target_of(
        stack, approvals=1, approvers=(CARA,), windows=(parse_window(closed_window_now()),)
    )
    engine = engine_for(stack, target)
    engines.append(engine)
    with pytest.raises(RuleRefused) as refused:
        engine.plan_deploy("v4.4.0", OPERATOR)
    assert refused.value.rule is Rule.WINDOWS and "the next opens" in str(refused.value)
    with pytest.raises(RuleRefused) as refused:
        engine.plan_deploy("v4.4.0", slack(ANA), via=Via(Door.SLASH, DEPLOYS, break_glass="x"))
    assert refused.value.rule is Rule.BREAK_GLASS
    plan = engine.plan_deploy("v4.4.0", OPERATOR, via=Via(break_glass="site down, INC-7"))
    assert {b.rule for b in plan.decision.bypassed} == {Rule.WINDOWS, Rule.APPROVALS}
    record = engine.start(plan)
    assert record.break_glass == "site down, INC-7" and len(record.bypassed) == 2
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    (last,) = engine.history(1)
    assert last.break_glass == "site down, INC-7" and last.bypassed == record.bypassed
    # Rollback passes the window, saying so.
    plan = engine.plan_rollback(OPERATOR, of=record.id)
    assert [b.rule for b in plan.decision.bypassed] == [Rule.WINDOWS]


def _slow(simulator: RolloutSimulator) -> None:
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")


def test_abort_during_a_slow_rollout_puts_the_previous_one_back(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack, freeze_after_failure=True))
    other = engine_for(stack, target_of(stack))  # another process: Stop in Slack, say
    engines += [engine, other]
    with pytest.raises(NothingToAbort, match="Nothing is rolling out"):
        other.abort(OPERATOR)
    _slow(simulator)
    record = engine.deploy("v4.5.0", OPERATOR)
    watch = engine.watch(record)
    assert _first_with_tasks(watch)
    with pytest.raises(RuleRefused, match="you may not abort"):
        other.abort(slack("U0STRANGER"), via=slash())
    aborted = other.abort(slack(CARA), via=slash())
    assert aborted.aborted_by == "u0cara"  # the display name
    with pytest.raises(NothingToAbort, match="already being aborted"):
        other.abort(OPERATOR)
    snaps = list(watch)
    final = snaps[-1]
    assert final.outcome == Outcome.ABORTED and final.outcome.exit_code == 1
    assert final.outcome_reason.endswith("v4.3.0-ecr-ecs-fargate is back"), final
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    (last,) = engine.history(1)
    assert last.outcome == Outcome.ABORTED and last.aborted_by
    assert engine.ledger.current_lock() is None
    assert engine.status().freeze is None  # an abort is not a failure


def test_abort_from_the_process_that_follows_it(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack))
    engines.append(engine)
    _slow(simulator)
    record = engine.deploy("v4.5.0", OPERATOR)
    watch = engine.watch(record)
    assert _first_with_tasks(watch)
    engine.abort(OPERATOR)
    assert list(watch)[-1].outcome == Outcome.ABORTED
    engine.plan_deploy("v4.4.0", OPERATOR)  # the lock is free again


def test_an_abort_over_before_the_next_poll_is_still_an_abort(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    """The previous task definition is back, and ECS has dropped the aborted deployment,
    before its follower polls again (a poll of a second, a restore of a few simulator steps):
    the follower, which did not send the abort, still reads the record's abort and closes it
    aborted, not "replaced by a deployment deploybot did not start"."""
    target = target_of(stack)
    settings = target.settings(stack.settings).model_copy(
        update={"rollout_poll_seconds": 1.0, "lock_lease_seconds": 10.0}
    )
    engine = Engine(settings, target=target)
    other = engine_for(stack, target)  # another process: Stop in Slack, say
    engines += [engine, other]
    _slow(simulator)
    record = engine.deploy("v4.5.0", OPERATOR)
    watch = engine.watch(record)
    assert _first_with_tasks(watch)
    other.abort(OPERATOR)
    final = list(watch)[-1]
    assert final.outcome == Outcome.ABORTED, final.outcome_reason
    assert final.outcome_reason.endswith("v4.3.0-ecr-ecs-fargate is back")


def _first_with_tasks(watch: Any) -> bool:
    """Wait until the new deployment has launched something (the rollout is under way)."""
    for snap in watch:
        if snap.ecs_deployment_id and (snap.pending or snap.running):
            return True
        if snap.final:
            return False
    return False


def test_the_queue_keeps_order_survives_a_restart_and_rechecks(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    target = target_of(stack)
    engine = engine_for(stack, target)
    engines.append(engine)
    _slow(simulator)
    record = engine.deploy("v4.5.0", OPERATOR)
    with pytest.raises(LockHeld):
        engine.plan_deploy("v4.4.0", slack(ANA), via=slash())
    first, place = engine.enqueue(slack(ANA), tag="v4.4.0", via=slash())
    assert place == 1
    second, place = engine.enqueue(slack(BEN), tag="v4.3.0", via=slash())
    assert place == 2
    teller, _ = engine.enqueue(slack(DAN), mode=QueueMode.TELL, via=slash())
    assert engine.next_turn() is None  # the lock is held
    assert engine.lock_free_waiters() == []
    with pytest.raises(NoSuchRequest, match="Only"):
        engine.cancel_queued(second.id, slack(ANA))

    # A restart: a new engine reads the queue from the table.
    engine.close()
    restarted = engine_for(stack, target)
    engines.append(restarted)
    assert [q.id for q in restarted.status().queue] == [first.id, second.id, teller.id]
    restarted.abort(OPERATOR)
    list(restarted.watch(record))
    assert [q.id for q in restarted.lock_free_waiters()] == [teller.id]

    # Ana's turn: checked again, through the queue's door, and frozen meanwhile.
    restarted.freeze(OPERATOR, "hold on")
    turn = restarted.next_turn()
    assert turn is not None and turn.item.id == first.id and turn.plan is None
    assert isinstance(turn.refused, RuleRefused) and turn.refused.rule is Rule.FREEZE
    restarted.unfreeze(OPERATOR)
    # Ben cancels his; the queue is empty.
    restarted.cancel_queued(second.id, slack(BEN))
    assert restarted.next_turn() is None and restarted.queue() == []


def test_a_queued_deploy_starts_when_its_turn_comes(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack))
    engines.append(engine)
    _slow(simulator)
    record = engine.deploy("v4.5.0", OPERATOR)
    item, _ = engine.enqueue(slack(ANA), tag="v4.4.0", reason="queued", via=slash())
    engine.abort(OPERATOR)
    list(engine.watch(record))
    turn = engine.next_turn()
    assert turn is not None and turn.plan is not None and turn.item.id == item.id
    assert turn.plan.requester.who == ANA and turn.plan.tag == "v4.4.0-ecr-ecs-fargate"
    started = engine.start(turn.plan)
    assert list(engine.watch(started))[-1].outcome == Outcome.COMPLETED
    assert engine.queue() == []


def test_a_direct_deploy_does_not_overtake_the_queue(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    """Between a lock's release and the queue's next turn, the lock is free and deploys are
    queued: every door but the queue's is refused (the queue goes first), but for a rollback,
    an abort and --break-glass; the queue's own door takes them in order."""
    engine = engine_for(stack, target_of(stack))
    engines.append(engine)
    earlier = engine.deploy("v4.4.0", OPERATOR)
    list(engine.watch(earlier))
    _slow(simulator)
    record = engine.deploy("v4.5.0", OPERATOR)
    first, _ = engine.enqueue(slack(ANA), tag="v4.4.0", via=slash())
    second, _ = engine.enqueue(slack(BEN), tag="v4.3.0", via=slash())
    engine.enqueue(slack(DAN), mode=QueueMode.TELL, via=slash())  # waiting to be told: no deploy
    engine.abort(OPERATOR)
    list(engine.watch(record))
    assert engine.ledger.current_lock() is None

    ci = Via(door=Door.CI_BUTTON, channel=DEPLOYS)
    doors: list[tuple[str, Any]] = [
        ("/deploy", lambda: engine.plan_deploy("v4.3.0", slack(CARA), via=slash())),
        ("/redeploy", lambda: engine.plan_redeploy(slack(CARA), via=slash())),
        ("a button", lambda: engine.plan_deploy("v4.3.0", slack(CARA), via=button())),
        ("a CI notice", lambda: engine.plan_deploy("v4.3.0", slack(CARA), via=ci)),
        ("the CLI", lambda: engine.plan_deploy("v4.3.0", OPERATOR)),
    ]
    for name, plan in doors:
        with pytest.raises(RuleRefused) as refused:
            plan()
        assert refused.value.rule == "queue", name
        assert "2 deploys are queued for production; yours would be third" in str(
            refused.value.message
        ), name
    assert "--break-glass" in str(refused.value.message)  # the CLI's way past it
    # Rollback and --break-glass go past it (the latter on the record).
    engine.plan_rollback(slack(CARA), of=earlier.id, via=slash())
    glass = engine.plan_deploy("v4.3.0", OPERATOR, via=Via(break_glass="site down"))
    assert [b.rule for b in glass.decision.bypassed] == ["queue"]

    # The queue's own door, in order: Ana first; Ben is still waiting, so a direct deploy
    # would be second behind him.
    turn = engine.next_turn()
    assert turn is not None and turn.plan is not None and turn.item.id == first.id
    with pytest.raises(
        RuleRefused, match="1 deploy is queued for production; yours would be second"
    ):
        engine.plan_deploy("v4.3.0", slack(CARA), via=slash())
    started = engine.start(turn.plan)
    assert list(engine.watch(started))[-1].outcome == Outcome.COMPLETED
    turn = engine.next_turn()
    assert turn is not None and turn.plan is not None and turn.item.id == second.id
    list(engine.watch(engine.start(turn.plan)))
    # The queue is empty (but for the person to tell): direct deploys go again.
    engine.plan_deploy("v4.4.0", slack(CARA), via=slash())


def _approved_while_queued(engine: Engine, tag: str) -> tuple[Any, Any]:
    """Ben asks for ``tag``; Ana's deploy is queued meanwhile; Dan approves: the approval
    counts, and the deploy waits (the queue goes first). Returns the request and the approval."""
    asked = engine.plan_deploy(tag, slack(BEN), via=slash(asking=True))
    request = engine.request_approval(asked, DEPLOYS)
    engine.enqueue(slack(ANA), tag="v4.3.0", via=slash())
    approval = engine.approve(request.id, slack(DAN), via=button())
    return request, approval


def test_an_approval_given_while_deploys_are_queued_waits_its_turn_for_its_image(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    engine = _protected(stack)
    engines.append(engine)
    request, approval = _approved_while_queued(engine, "v4.4.0")
    assert approval.missing == 0 and approval.plan is None
    assert isinstance(approval.wait, RuleRefused) and approval.wait.rule is Rule.QUEUE
    assert approval.request.state is RequestState.APPROVED
    with pytest.raises(NoSuchRequest, match="approved"):
        engine.approve(request.id, slack(CARA), via=button())
    # Queued for Ben with its approval (as the Slack side does), second in line.
    via = button(approved_by=(DAN,), request_id=request.id)
    item, place = engine.enqueue(slack(BEN), tag=request.tag, via=via)
    assert place == 2
    # Ana's turn: at the queue's door her deploy needs an approval it never had.
    turn = engine.next_turn()
    assert turn is not None and turn.plan is None and turn.refused is not None
    assert "needs 1 approval" in turn.refused.message
    # Ben's: approved, it deploys the image the request showed.
    turn = engine.next_turn()
    assert turn is not None and turn.plan is not None and turn.item.id == item.id
    assert turn.plan.digest == request.digest
    record = engine.start(turn.plan)
    assert record.approved_by == (DAN,) and record.approval_request == request.id
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED

    # Approved for v4.5.0, which CI then pushes again under the same tag: it deploys nothing.
    request, approval = _approved_while_queued(engine, "v4.5.0")
    assert approval.wait is not None
    engine.cancel_queued(engine.queue()[0].id, slack(ANA))
    via = button(approved_by=(DAN,), request_id=request.id)
    engine.enqueue(slack(BEN), tag=request.tag, via=via)
    move_tag(stack, "v4.5.0-ecr-ecs-fargate", "7")
    turn = engine.next_turn()
    assert turn is not None and turn.plan is None and turn.refused is not None
    assert "approved for v4.5.0-ecr-ecs-fargate" in turn.refused.message
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


# --- Issue 24: judged when the lock is taken; an approval counts only for what it approved --


def test_a_freeze_written_after_the_plan_refuses_its_start(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    """The plan read no freeze; another process froze the target before the start: the lock's
    transaction refuses it (no lock, no record, nothing sent to ECS)."""
    engine, other = engine_for(stack, target_of(stack)), engine_for(stack, target_of(stack))
    engines += [engine, other]
    for door, plan in (
        ("/deploy", lambda: engine.plan_deploy("v4.4.0", slack(ANA), via=slash())),
        ("a button", lambda: engine.plan_deploy("v4.4.0", slack(ANA), via=button())),
        ("/redeploy", lambda: engine.plan_redeploy(slack(ANA), via=slash())),
        ("the CLI", lambda: engine.plan_deploy("v4.4.0", OPERATOR)),
    ):
        planned = plan()
        other.freeze(slack(BEN), "incident 77", via=slash())
        frozen_at = other.status().freeze
        assert frozen_at is not None
        aws.requests.clear()
        with pytest.raises(RuleRefused) as refused:
            engine.start(planned)
        assert refused.value.rule is Rule.FREEZE, door
        said = refused.value.decision
        at = f"{frozen_at.since:%H:%M:%S}"
        assert f"production was frozen by {BEN} at {at} UTC while this was" in said.message
        assert f"<@{BEN}>" in said.mrkdwn and "incident 77" in said.message
        assert aws.requests.count("ecs") == 0, door  # nothing reached ECS
        assert engine.ledger.lock_item() is None and engine.history(1) == [], door
        other.unfreeze(OPERATOR)
    # A rollback goes past a freeze at its start as at its plan.
    first = engine.deploy("v4.4.0", OPERATOR)
    list(engine.watch(first))
    planned = engine.plan_rollback(slack(ANA), of=first.id, via=slash())
    other.freeze(slack(BEN), "incident 78", via=slash())
    list(engine.watch(engine.start(planned)))
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"


def test_a_window_closing_or_a_deploy_queued_after_the_plan_refuses_its_start(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    today = DAY_NAMES[datetime.now(UTC).weekday()]
    clock = ShiftedClock()
    windowed = target_of(stack, windows=(parse_window(f"{today} 00:00-24:00 UTC"),))
    engine = engine_for(stack, windowed, clock)
    engines.append(engine)
    planned = engine.plan_deploy("v4.4.0", slack(ANA), via=slash())
    clock.shift = timedelta(days=1)  # the window closed while it was being prepared
    with pytest.raises(RuleRefused) as refused:
        engine.start(planned)
    assert refused.value.rule is Rule.WINDOWS
    assert engine.ledger.lock_item() is None
    clock.shift = timedelta()

    planned = engine.plan_deploy("v4.4.0", slack(ANA), via=slash())
    engine.enqueue(slack(BEN), tag="v4.3.0", via=slash())  # queued meanwhile
    with pytest.raises(RuleRefused, match="1 deploy is queued for production") as refused:
        engine.start(planned)
    assert refused.value.rule is Rule.QUEUE and engine.ledger.lock_item() is None
    # --break-glass goes ahead of it, as at the plan.
    glass = engine.plan_deploy("v4.4.0", OPERATOR, via=Via(break_glass="site down"))
    list(engine.watch(engine.start(glass)))
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


def test_a_queued_approval_whose_premise_changed_deploys_nothing_at_its_turn(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    """Issue 24's story: v4.3.0 → v4.4.0 asked and approved while a slow deploy holds the
    lock (queued for its requester); a v4.5.0 hotfix goes out with --break-glass; at the
    turn, v4.4.0 must not go over the hotfix. Then: a queued approval that expired."""
    clock = ShiftedClock()
    engine = _protected(stack, clock)
    engines.append(engine)
    asked = engine.plan_deploy("v4.4.0", slack(BEN), via=slash(asking=True))
    request = engine.request_approval(asked, DEPLOYS)
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.3.0-ecr-ecs-fargate")
    slow = engine.start(engine.plan_redeploy(OPERATOR, via=Via(break_glass="slow redeploy")))
    approval = engine.approve(request.id, slack(DAN), via=button())
    assert isinstance(approval.wait, LockHeld) and approval.plan is None
    via = button(approved_by=(DAN,), request_id=request.id)
    engine.enqueue(slack(BEN), tag=request.tag, via=via)
    simulator.slow_ticks = 2
    list(engine.watch(slow))
    hotfix = engine.plan_deploy("v4.5.0", OPERATOR, via=Via(break_glass="hotfix"))
    list(engine.watch(engine.start(hotfix)))
    turn = engine.next_turn()
    assert turn is not None and turn.plan is None and isinstance(turn.refused, RuleRefused)
    assert turn.refused.rule is Rule.PREMISE
    assert "no longer holds" in turn.refused.message
    assert "runs v4.5.0-ecr-ecs-fargate" in turn.refused.message
    assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"

    # Asked from v4.5.0, approved while a deploy is queued; the request expires meanwhile.
    asked = engine.plan_deploy("v4.4.0", slack(BEN), via=slash(asking=True))
    request = engine.request_approval(asked, DEPLOYS)
    engine.enqueue(slack(ANA), tag="v4.3.0", via=slash())
    engine.approve(request.id, slack(DAN), via=button())
    engine.enqueue(
        slack(BEN), tag=request.tag, via=button(approved_by=(DAN,), request_id=request.id)
    )
    engine.cancel_queued(engine.queue()[0].id, slack(ANA))
    clock.shift = timedelta(minutes=31)
    turn = engine.next_turn()
    assert turn is not None and turn.plan is None and turn.refused is not None
    assert "expired" in turn.refused.message
    assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"


def test_the_queue_limits_each_person_and_counts_each_image_once(
    stack: LocalStack, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack, queue_limit=2))
    engines.append(engine)
    first, place = engine.enqueue(slack(ANA), tag="v4.4.0", via=slash())
    assert place == 1
    with pytest.raises(DeployRefused, match="Already queued as number 1"):
        engine.enqueue(slack(ANA), tag="v4.4.0", via=button())  # a second click
    engine.enqueue(slack(BEN), tag="v4.4.0", via=slash())  # another person: their own
    engine.enqueue(slack(ANA), tag="v4.3.0", via=slash())
    with pytest.raises(DeployRefused, match=r"queue_limit = 2"):
        engine.enqueue(slack(ANA), tag="v4.5.0", via=slash())
    assert [q.tag for q in engine.queue()] == [
        "v4.4.0-ecr-ecs-fargate",
        "v4.4.0-ecr-ecs-fargate",
        "v4.3.0-ecr-ecs-fargate",
    ]
    assert engine.guards.queued() == 3
    # Taken out, a place is free again, and the same image may be queued again.
    engine.cancel_queued(first.id, slack(ANA))
    again, place = engine.enqueue(slack(ANA), tag="v4.4.0", via=slash())
    assert place == 3 and engine.guards.queued() == 3
    assert engine.queue_position(again) == 3


def test_positions_are_right_and_a_check_reads_one_item_at_600_queued(
    stack: LocalStack, aws: MotoServer, engines: list[Engine]
) -> None:
    engine = engine_for(stack, target_of(stack, deployers=frozenset({"*"})))
    engines.append(engine)
    people = [slack(f"U{n:04d}") for n in range(600)]
    items = [engine.guards.enqueue(_queued_item(p)) for p in people]
    assert engine.guards.queued() == 600
    for n in (0, 1, 499, 500, 507, 599):
        assert engine.queue_position(items[n]) == n + 1, n
    assert [q.id for q in engine.queue()] == [i.id for i in items]
    head = engine.guards.head()
    assert head is not None and head.id == items[0].id
    aws.requests.clear()
    with pytest.raises(RuleRefused, match="600 deploys are queued"):
        engine.plan_deploy("v4.4.0", slack(ANA), via=slash())
    queue_reads = [r for r in aws.requests if r.service == "dynamodb" and r.operation == "Query"]
    assert queue_reads == []  # the count, not the queue


def _queued_item(who: Requester) -> QueuedItem:
    return QueuedItem(
        id="",
        mode=QueueMode.DEPLOY,
        kind="deploy",
        tag="v4.4.0-ecr-ecs-fargate",
        requester=who,
        queued_at=datetime.now(UTC),
        channel=DEPLOYS,
    )
