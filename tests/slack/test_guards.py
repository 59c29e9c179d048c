"""The guardrails through Slack: a real bot process, the Slack emulator and moto.

Freeze and unfreeze by slash command, approval requests with Approve/Reject (the requester's
own click, a non-approver's, a tampered and an expired button, a changed premise), Stop on the
live message, and the queue (Deploy when free, Tell me when free) across a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from bot.deploy.engine import Engine
from bot.deploy.records import Requester, Via
from bot.deploy.rollout import Outcome
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.rules import Door
from bot.slack import guards
from tests.conftest import ALICE, BOB, CAROL, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages, has_button, running_tag


def config(tmp_path: Path, stack: LocalStack, rules: str = "") -> str:
    s = stack.settings
    path = tmp_path / "deploybot.toml"
    path.write_text(
        f"""
[targets.production]
cluster = "{s.ecs_cluster}"
service = "{s.ecs_service}"
repository = "{s.ecr_repository}"
deployers = ["{ALICE}", "{BOB}"]
channels = ["{DEPLOYS}"]
{rules}
"""
    )
    return str(path)


APPROVAL = f'approvals = 1\napprovers = ["{CAROL}", "{BOB}"]'


def slash(emulator: SlackEmulator, bot: BotProcess, text: str, user: str = ALICE) -> None:
    emulator.slash_command("/deploy", text, user=user, channel=DEPLOYS, url=bot.events_url)


def said_to(emulator: SlackEmulator, user: str, words: str, timeout: float = 90) -> Any:
    return emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=user) if words in e.all_text), None),
        timeout=timeout,
        what=f"an ephemeral to {user} saying {words!r}",
    )


def posted(emulator: SlackEmulator, words: str, timeout: float = 120) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if words in m.all_text), None),
        timeout=timeout,
        what=f"a message saying {words!r}",
    )


def engine_of(stack: LocalStack) -> Engine:
    return Engine(stack.settings)


def test_freeze_by_slash_command_refuses_every_deploy_door_until_unfrozen(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(tmp_path, stack))
    slash(emulator, bot, "freeze")
    said_to(emulator, ALICE, "Say why")
    slash(emulator, bot, "freeze production incident <!here> 1234")
    posted(emulator, "froze *production*")
    slash(emulator, bot, "v4.4.0", user=BOB)
    refusal = said_to(emulator, BOB, "production is frozen by")
    assert f"<@{ALICE}>" in refusal.text and "incident &lt;!here&gt; 1234" in refusal.text
    emulator.slash_command("/redeploy", "", user=BOB, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(
        lambda: len([e for e in emulator.ephemerals(user=BOB) if "is frozen" in e.text]) == 2,
        what="the redeploy refused",
        timeout=90,
    )
    slash(emulator, bot, "status")
    status = said_to(emulator, ALICE, "Frozen")
    assert "incident" in status.all_text
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    slash(emulator, bot, "unfreeze production", user=BOB)
    posted(emulator, "unfroze *production*")
    slash(emulator, bot, "v4.4.0", user=BOB)
    posted(emulator, "Deployed v4.4.0")


def _request(emulator: SlackEmulator) -> Message:
    return posted(emulator, "approval needed")


def test_an_approval_request_is_approved_by_someone_else_and_deploys(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(tmp_path, stack, APPROVAL))
    slash(emulator, bot, "v4.4.0", user=BOB)
    request = _request(emulator)
    assert "v4.3.0-ecr-ecs-fargate" in request.all_text  # from
    assert "v4.4.0-ecr-ecs-fargate" in request.all_text  # to
    assert f"<@{BOB}>" in request.all_text
    assert has_button(request, guards.APPROVE_ACTION) and has_button(request, guards.REJECT_ACTION)
    value = request.button(guards.APPROVE_ACTION)["value"]

    # The requester cannot approve their own request; Alice is no approver.
    emulator.click(request, guards.APPROVE_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, BOB, "you asked for this")
    emulator.click(request, guards.APPROVE_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, ALICE, "may approve changes to production")
    # A tampered button: another request id, another target.
    for tampered in (value + "x", "staging|" + value.split("|")[1], "junk"):
        emulator.click(
            request,
            guards.APPROVE_ACTION,
            user=CAROL,
            channel=DEPLOYS,
            value=tampered,
            url=bot.events_url,
        )
    emulator.wait_for(
        lambda: len(emulator.ephemerals(user=CAROL)) >= 3,
        what="the tampered clicks refused",
        timeout=90,
    )
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"

    emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    posted(emulator, "Deployed v4.4.0")
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"
    shown = emulator.message(request.ts)
    assert "Approved" in shown.all_text and not has_button(shown, guards.APPROVE_ACTION)
    engine = engine_of(stack)
    try:
        last = engine.history(1)[0]
    finally:
        engine.close()
    assert last.approved_by == (CAROL,) and last.who == BOB


def test_expired_and_premise_changed_requests_are_refused(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(tmp_path, stack, APPROVAL))
    slash(emulator, bot, "v4.4.0", user=ALICE)
    request = _request(emulator)
    # Forty minutes pass (the request's time, moved back in the table).
    request_id = request.button(guards.APPROVE_ACTION)["value"].split("|")[1]
    table = boto3.client("dynamodb", endpoint_url=stack.settings.aws_endpoint_url)
    old = (datetime.now(UTC) - timedelta(minutes=40)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    key = f"{stack.settings.ecs_cluster}/{stack.settings.ecs_service}"
    table.update_item(
        TableName=stack.settings.deploy_table,
        Key={"pk": {"S": f"REQUEST#{key}"}, "sk": {"S": request_id}},
        UpdateExpression="SET requested_at = :t",
        ExpressionAttributeValues={":t": {"S": old}},
    )
    emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, CAROL, "this request expired")
    emulator.wait_for(
        lambda: "Expired" in emulator.message(request.ts).all_text,
        what="the request expired",
        timeout=90,
    )

    # Another request; then something else is deployed before it is approved.
    emulator.clear()
    slash(emulator, bot, "v4.4.0", user=ALICE)
    request = _request(emulator)
    engine = engine_of(stack)
    try:
        glass = engine.plan_deploy(
            "v4.5.0", Requester("ops@laptop", "cli"), via=Via(break_glass="hotfix")
        )
        list(engine.watch(engine.start(glass)))
    finally:
        engine.close()
    emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    refusal = said_to(emulator, CAROL, "this request no longer holds")
    assert "v4.5.0-ecr-ecs-fargate" in refusal.text
    assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"

    # Rejected by an approver: its buttons go, and approving it later is refused.
    emulator.click(request, guards.REJECT_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(
        lambda: "Rejected" in emulator.message(request.ts).all_text,
        what="the rejection",
        timeout=90,
    )


def test_stop_on_the_live_message_aborts_a_slow_rollout(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    bot = start_bot("http")
    slash(emulator, bot, "abort")
    said_to(emulator, ALICE, "Nothing is rolling out")
    slash(emulator, bot, "v4.5.0")
    live = emulator.wait_for(
        lambda: next(
            (m for m in bot_messages(emulator) if has_button(m, guards.STOP_ACTION)), None
        ),
        timeout=60,
        what="the live message's Stop button",
    )
    assert "confirm" in live.button(guards.STOP_ACTION)
    emulator.click(live, guards.STOP_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    announced = posted(emulator, "goes back now")
    final = posted(emulator, "Aborted after")
    # Issue 31: the abort is its own short watch, as the terminal's (Engine.follow_abort): its
    # announcement says how the restore ended.
    emulator.wait_for(
        lambda: "v4.3.0-ecr-ecs-fargate` is back" in emulator.message(announced.ts).all_text,
        timeout=60,
        what="the abort's announcement saying v4.3.0 is back",
    )
    assert "v4.3.0-ecr-ecs-fargate is back" in final.all_text
    # Issue 29 (7): the restore's state is not the aborted deployment's.
    assert "*Rollout:* ABORTED" in final.all_text and "COMPLETED" not in final.all_text
    assert not has_button(emulator.message(final.ts), guards.STOP_ACTION)
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    slash(emulator, bot, "abort production", user=BOB)
    said_to(emulator, BOB, "Nothing is rolling out")


def test_the_queue_survives_a_restart_and_runs_in_order(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    bot = start_bot("http")
    slash(emulator, bot, "v4.5.0", user=ALICE)
    posted(emulator, "Deploying v4.5.0")
    slash(emulator, bot, "v4.4.0", user=BOB)
    offer = said_to(emulator, BOB, "Deploys are locked")
    emulator.click(offer, guards.QUEUE_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    queued = said_to(emulator, BOB, "number 1 in the queue")
    slash(emulator, bot, "v4.3.0", user=ALICE)
    # Bob's is queued: Alice's would go after his (the lock is held too).
    offer = said_to(emulator, ALICE, "1 deploy is queued for production; yours would be second")
    emulator.click(offer, guards.TELL_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, ALICE, "I will tell you")
    # Someone else cannot cancel Bob's.
    emulator.click(
        queued, guards.CANCEL_QUEUED_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    said_to(emulator, ALICE, "Only bob")

    # The bot restarts; the queue is in the table.
    bot.stop()
    bot = start_bot("http")
    slash(emulator, bot, "status", user=BOB)
    said_to(emulator, BOB, "Queue")
    slash(emulator, bot, "abort", user=ALICE)
    posted(emulator, "queued deploy of `v4.4.0-ecr-ecs-fargate`")
    said_to(emulator, ALICE, "deploy lock is free now")
    posted(emulator, "Deployed v4.4.0")
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


def test_a_deployment_that_outlived_its_watch_is_named_and_the_queue_offered(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    """Issue 29 (1): a terminal deploy whose watch timed out (exit 3) used to leave the lock
    free, and Slack deployed over its live rollout. Now /deploy is refused naming it, with
    the queue offered; the queued deploy runs once the bot sees ECS end the first."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    quick = Engine(stack.settings.model_copy(update={"rollout_timeout_seconds": 0.5}))
    try:
        first = quick.deploy("v4.4.0", Requester("operator@laptop", "cli"))
        assert list(quick.watch(first))[-1].outcome == Outcome.STILL_ROLLING_OUT
    finally:
        quick.close()
    bot = start_bot("http")
    slash(emulator, bot, "v4.5.0", user=BOB)
    offer = said_to(emulator, BOB, "v4.4.0-ecr-ecs-fargate is still rolling out since")
    assert first.id in offer.all_text and "unlock" not in offer.all_text
    assert has_button(offer, guards.QUEUE_ACTION)
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"  # nothing went over it
    # Status says what runs (issue 29, 7): the old release's tasks apart from the new one's.
    slash(emulator, bot, "status", user=BOB)
    status = said_to(emulator, BOB, "rolling out v4.4.0-ecr-ecs-fargate")
    assert "v4.4.0-ecr-ecs-fargate (new): 0/3 running, 3 pending" in status.all_text
    assert "v4.3.0-ecr-ecs-fargate (old): 3 running" in status.all_text
    assert "*Running*" not in status.all_text
    emulator.click(offer, guards.QUEUE_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, BOB, "number 1 in the queue")
    simulator.slow_ticks = 2  # ECS ends the first rollout; the bot's pass sees it
    posted(emulator, "Deployed v4.5.0")
    outcomes = {r.id: r.outcome for r in engine_of(stack).ledger.history(2)}
    assert outcomes[first.id] == Outcome.COMPLETED


def test_the_ci_notice_says_its_target_is_frozen(
    stack: LocalStack, emulator: SlackEmulator, tmp_path: Path
) -> None:
    """`deploybot notify image-pushed` (CI's notice) on a frozen target says who froze it,
    since when and why, and that its Deploy button is refused until unfrozen; the button
    stays, for once it is lifted. Unfrozen, the next notice says nothing of it."""
    from bot.fleet import Fleet
    from tests.slack.test_ci_notice_and_rollback import notify

    toml = config(tmp_path, stack)
    fleet = Fleet(stack.settings.model_copy(update={"deploybot_config": Path(toml)}))
    engine = fleet.engine("production")
    try:
        engine.freeze(
            Requester(ALICE, "slack", "alice"),
            "incident <1234>",
            via=Via(door=Door.SLASH, channel=DEPLOYS),
        )
        done = notify(emulator, "--tag", "v4.5.0-ecr-ecs-fargate", DEPLOYBOT_CONFIG=toml)
        assert done.returncode == 0, done.stderr
        notice = posted(emulator, "A new image is in ECR: v4.5.0", timeout=30)
        assert f"production is frozen by <@{ALICE}> since <!date^" in notice.all_text
        assert "incident &lt;1234&gt;" in notice.all_text  # the reason, as text
        assert "refused until `/deploy unfreeze production`" in notice.all_text
        assert "(production frozen)" in notice.text  # the notification's text says it too
        assert has_button(notice, "deploy_tag")

        engine.unfreeze(Requester(BOB, "slack", "bob"), via=Via(door=Door.SLASH, channel=DEPLOYS))
        done = notify(emulator, "--tag", "v4.4.0-ecr-ecs-fargate", DEPLOYBOT_CONFIG=toml)
        assert done.returncode == 0, done.stderr
        notice = posted(emulator, "A new image is in ECR: v4.4.0", timeout=30)
        assert "frozen" not in notice.all_text.lower()
        assert has_button(notice, "deploy_tag")
    finally:
        fleet.close()


def test_a_direct_deploy_waits_behind_the_queue_which_goes_as_soon_as_the_lock_is_free(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    """Bob queued behind Alice's slow rollout; Alice stops it and, the moment the lock is
    free, deploys again directly: she is refused (the queue goes first) and Bob's queued
    deploy starts at once, not at the queue's next periodic pass (every six polls: 12 s
    here, 30 s at the default poll)."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    bot = start_bot("http", ROLLOUT_POLL_SECONDS="2", LOCK_LEASE_SECONDS="10")
    slash(emulator, bot, "v4.5.0", user=ALICE)
    posted(emulator, "Deploying v4.5.0")
    slash(emulator, bot, "v4.4.0", user=BOB)
    offer = said_to(emulator, BOB, "Deploys are locked")
    emulator.click(offer, guards.QUEUE_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, BOB, "number 1 in the queue")

    engine = engine_of(stack)
    try:
        held = engine.ledger.current_lock()
        assert held is not None
        slash(emulator, bot, "abort", user=ALICE)
        deadline = time.monotonic() + 90
        while (now := engine.ledger.current_lock()) is not None and (
            now.deployment_id == held.deployment_id
        ):
            assert time.monotonic() < deadline, "the aborted deployment's lock was not released"
            time.sleep(0.05)
        released = datetime.now(UTC)
        slash(emulator, bot, "v4.3.0", user=ALICE)

        def answer() -> Any:
            deploying = [m for m in bot_messages(emulator) if "Deploying v4.3.0" in m.all_text]
            refused = [
                e
                for e in emulator.ephemerals(user=ALICE)
                if "queued for production" in e.all_text or "Deploys are locked" in e.all_text
            ]
            return (deploying or refused or [None])[0]

        refusal = emulator.wait_for(answer, timeout=90, what="Alice's direct deploy answered")
        assert "Deploying" not in refusal.all_text, "Alice's direct deploy went before the queue"
        assert has_button(refusal, guards.QUEUE_ACTION)  # she may queue behind Bob
        posted(emulator, "queued deploy of `v4.4.0-ecr-ecs-fargate`")
        posted(emulator, "Deployed v4.4.0")
        # Bob's queued deploy came right after the aborted one; Alice's never started.
        bobs, aborted = engine.history(10)[:2]
        assert aborted.outcome == Outcome.ABORTED and aborted.tag == "v4.5.0-ecr-ecs-fargate"
        assert bobs.who == BOB and bobs.tag == "v4.4.0-ecr-ecs-fargate"
        assert not [r for r in engine.history(10) if r.tag == "v4.3.0-ecr-ecs-fargate"]
        delay = (bobs.started_at - released).total_seconds()
        print(f"release -> queued deploy started: {delay:.2f} s")
        assert delay < 5, f"the queue took its turn {delay:.1f} s after the release"
    finally:
        engine.close()


def test_an_approval_given_while_deploys_are_queued_queues_the_deploy_for_its_requester(
    stack: LocalStack,
    aws: Any,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    """Carol approves Bob's request while a deploy waits in the queue (the lock free, its
    turn not yet come): the approval counts, and Bob's deploy joins the queue behind it, for
    Bob (told, with Cancel), not as an offer to Carol, who could not take it. The queue's
    pass here is every 30 s (six polls of 5 s): it does not come in between."""
    toml = config(tmp_path, stack, APPROVAL)
    bot = start_bot(
        "http", DEPLOYBOT_CONFIG=toml, ROLLOUT_POLL_SECONDS="5", LOCK_LEASE_SECONDS="30"
    )
    slash(emulator, bot, "v4.4.0", user=BOB)
    request = _request(emulator)
    engine = engine_of(stack)
    try:
        # Alice's deploy joins the queue, as Deploy when free does.
        queued, _ = engine.enqueue(
            Requester(ALICE, "slack", "alice"),
            tag="v4.3.0",
            via=Via(door=Door.BUTTON, channel=DEPLOYS),
        )
        emulator.click(
            request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url
        )
        emulator.wait_for(
            lambda: "queued as number 2" in emulator.message(request.ts).all_text,
            timeout=90,
            what="the request approved and queued",
        )
        told = said_to(emulator, BOB, "number 2 in the queue")
        assert has_button(told, guards.CANCEL_QUEUED_ACTION)
        assert not emulator.ephemerals(user=CAROL)  # nothing for Carol to act on
        first, second = engine.queue()
        assert first.id == queued.id
        assert (second.requester.who, second.tag) == (BOB, "v4.4.0-ecr-ecs-fargate")
        assert second.approved_by == (CAROL,) and second.request_id
        assert aws.requests.count("ecs", "UpdateService") == 0
    finally:
        engine.close()


# --- every door ---------------------------------------------------------------------------


def _count(emulator: SlackEmulator, user: str, words: str) -> int:
    return sum(words in e.all_text for e in emulator.ephemerals(user=user))


def _requests(emulator: SlackEmulator) -> int:
    return sum("approval needed" in m.all_text for m in bot_messages(emulator))


def test_every_door_refuses_a_frozen_target_and_an_unapproved_deploy(
    stack: LocalStack,
    aws: Any,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    """The doors that change a target: /deploy TAG, /redeploy, a CI notice's Deploy, /deploy's
    list of images' Deploy, Approve, a queued deploy's turn, and the CLI's deploy and
    redeploy. Frozen, each refuses naming the freeze; unfrozen, production needs an approval:
    Slack's doors post a request instead of deploying, the queue and the CLI refuse."""
    from tests.bot.test_cli_guards import cli
    from tests.slack.test_ci_notice_and_rollback import notify

    toml = config(tmp_path, stack, APPROVAL)
    bot = start_bot("http", DEPLOYBOT_CONFIG=toml)
    engine = engine_of(stack)
    url = bot.events_url

    def slash_deploy() -> None:
        slash(emulator, bot, "v4.4.0", user=BOB)

    def redeploy() -> None:
        emulator.slash_command("/redeploy", "", user=BOB, channel=DEPLOYS, url=url)

    def ci_notice() -> None:
        assert notify(emulator, "--tag", "v4.5.0-ecr-ecs-fargate").returncode == 0
        notice = emulator.wait_for(
            lambda: next(
                (m for m in reversed(emulator.messages(DEPLOYS)) if has_button(m, "deploy_tag")),
                None,
            ),
            what="the CI notice",
            timeout=90,
        )
        emulator.click(notice, "deploy_tag", user=BOB, channel=DEPLOYS, url=url)

    def image_list() -> None:
        before = len(emulator.ephemerals(user=BOB))
        slash(emulator, bot, "", user=BOB)
        listing = emulator.wait_for(
            lambda: next(
                (e for e in emulator.ephemerals(user=BOB)[before:] if has_button(e, "deploy_tag")),
                None,
            ),
            what="/deploy's list of images",
            timeout=90,
        )
        emulator.click(listing, "deploy_tag", user=BOB, channel=DEPLOYS, url=url)

    def queued() -> None:
        via = Via(door=Door.SLASH, channel=DEPLOYS)
        engine.enqueue(Requester(BOB, "slack", "bob"), tag="v4.4.0", via=via)

    slack_doors = {
        "/deploy TAG": slash_deploy,
        "/redeploy": redeploy,
        "a CI notice's Deploy": ci_notice,
        "/deploy's list Deploy": image_list,
        "a queued deploy's turn": queued,
    }
    cli_doors = {
        "deploybot deploy": ("deploy", "v4.4.0"),
        "deploybot redeploy": ("redeploy",),
    }
    try:
        # A request made before the freeze: its Approve is a door too.
        slash_deploy()
        request = _request(emulator)

        slash(emulator, bot, "freeze production incident 42", user=ALICE)
        posted(emulator, "froze *production*")
        for name, door in slack_doors.items():
            seen = _count(emulator, BOB, "production is frozen")
            door()
            emulator.wait_for(
                lambda seen=seen: _count(emulator, BOB, "production is frozen") > seen,
                timeout=90,
                what=f"{name} refused for the freeze",
            )
        emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=url)
        said_to(emulator, CAROL, "production is frozen")
        for name, args in cli_doors.items():
            done = cli(*args, DEPLOYBOT_CONFIG=toml)
            assert done.returncode == 2 and "production is frozen" in done.stderr, name
        assert aws.requests.count("ecs", "UpdateService") == 0

        slash(emulator, bot, "unfreeze production", user=ALICE)
        posted(emulator, "unfroze *production*")
        for name, door in slack_doors.items():
            requests = _requests(emulator)
            told = _count(emulator, BOB, "needs 1 approval")
            door()
            emulator.wait_for(
                lambda requests=requests, told=told: (
                    _requests(emulator) > requests
                    or _count(emulator, BOB, "needs 1 approval") > told
                ),
                timeout=90,
                what=f"{name} asking for approval",
            )
        for name, args in cli_doors.items():
            done = cli(*args, DEPLOYBOT_CONFIG=toml)
            assert done.returncode == 2 and "needs 1 approval" in done.stderr, name
        assert aws.requests.count("ecs", "UpdateService") == 0
        assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    finally:
        engine.close()


def test_promotion_doors_refuse_a_frozen_target_and_an_unapproved_promotion(
    fleet_stack: Any,
    aws: Any,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    """The doors of issue 15's promotion: `/deploy promote staging to production`, staging's
    Promote button and `deploybot promote`; frozen, then wanting an approval."""
    from tests.bot.test_cli_guards import cli

    toml = tmp_path / "deploybot.toml"
    toml.write_text(
        Path(fleet_stack.config)
        .read_text(encoding="utf-8")
        .replace('after = "staging"\n', f'after = "staging"\n{APPROVAL}\n'),
        encoding="utf-8",
    )
    bot = start_bot("http", DEPLOYBOT_CONFIG=str(toml))
    url = bot.events_url
    emulator.slash_command("/deploy", "v4.4.0 to staging", user=ALICE, channel=DEPLOYS, url=url)
    done = posted(emulator, "Deployed v4.4.0-ecr-ecs-fargate to staging")
    updates = aws.requests.count("ecs", "UpdateService")

    def slash_promote() -> None:
        slash(emulator, bot, "promote staging to production", user=BOB)

    def button() -> None:
        emulator.click(done, "promote:production", user=BOB, channel=DEPLOYS, url=url)

    doors = {"/deploy promote": slash_promote, "staging's Promote button": button}
    slash(emulator, bot, "freeze production incident 7", user=ALICE)
    posted(emulator, "froze *production*")
    for name, door in doors.items():
        seen = _count(emulator, BOB, "production is frozen")
        door()
        emulator.wait_for(
            lambda seen=seen: _count(emulator, BOB, "production is frozen") > seen,
            timeout=90,
            what=f"{name} refused for the freeze",
        )
    done_cli = cli("promote", "staging", "production", DEPLOYBOT_CONFIG=str(toml))
    assert done_cli.returncode == 2 and "production is frozen" in done_cli.stderr

    slash(emulator, bot, "unfreeze production", user=ALICE)
    posted(emulator, "unfroze *production*")
    for name, door in doors.items():
        requests = _requests(emulator)
        door()
        emulator.wait_for(
            lambda requests=requests: _requests(emulator) > requests,
            timeout=90,
            what=f"{name} asking for approval",
        )
    done_cli = cli("promote", "staging", "production", DEPLOYBOT_CONFIG=str(toml))
    assert done_cli.returncode == 2 and "needs 1 approval" in done_cli.stderr
    assert aws.requests.count("ecs", "UpdateService") == updates

    # Approved by Carol, the promotion deploys staging's digest to production.
    request = next(m for m in bot_messages(emulator) if "approval needed" in m.all_text)
    emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=url)
    posted(emulator, "Deployed v4.4.0-ecr-ecs-fargate to production")
    assert running_tag(fleet_stack.settings) == "v4.4.0-ecr-ecs-fargate"
