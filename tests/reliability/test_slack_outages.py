"""Points 4, 5 (and 6's Slack side) of issue 13, issue 19's buttons: Slack is only a watcher.

The bot is ``deploybot serve --http`` (a child process); the Slack emulator fails its calls
on the wire (connections dropped, ``not_in_channel``, ``channel_not_found``, 5xx), or
answers late. The rollout's bookkeeping (the record closed, the lock released) must not wait
for Slack, the message must catch up with the final state when Slack answers again, and a
deployment nobody in Slack could see must not start.
"""

from __future__ import annotations

import threading
import time

import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import Requester, Via
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.rules import Door
from tests.conftest import ALICE, BOB, DEPLOYS, LocalStack
from tests.reliability.conftest import cli, report, wait_until
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages, has_button, no_aws_writes

pytestmark = pytest.mark.reliability
V44, V45 = "v4.4.0-ecr-ecs-fargate", "v4.5.0-ecr-ecs-fargate"
FINAL = "✅ Deployed"


def bookkeeping_done(engine: Engine) -> bool:
    records = engine.ledger.history(1)
    return bool(records) and not records[0].open and engine.ledger.lock_item() is None


def final(emulator: SlackEmulator, words: str = FINAL, timeout: float = 90) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if words in m.all_text), None),
        timeout=timeout,
        what=f"a message saying {words!r}",
    )


OUTAGES = {
    "connections dropped": lambda emu, s: emu.fail_for(s, "*", drop=True),
    "channel_not_found": lambda emu, s: emu.fail_for(s, "*", status=200, error="channel_not_found"),
    "bot removed from the channel": lambda emu, s: emu.remove_bot(DEPLOYS),
    "thread replies dropped": lambda emu, s: emu.fail_for(s, "chat.postMessage", drop=True),
}


def failed_updates(emulator: SlackEmulator) -> int:
    return len(emulator.calls_of("chat.update", ok=False))


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_a_slack_outage_mid_rollout_delays_the_message_never_the_bookkeeping(
    outage: str,
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    simulator.step_seconds = 0.3  # a rollout of a few seconds
    engine = Engine(stack.settings)
    bot = start_bot("http")
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    (message,) = emulator.wait_for(lambda: bot_messages(emulator), what="the deployment message")
    started = time.monotonic()
    OUTAGES[outage](emulator, 600)
    try:
        # While Slack fails, the engine still closes the record and releases the lock.
        wait_until(lambda: bookkeeping_done(engine), 60, "record closed and lock released")
        closed_after = time.monotonic() - started
        assert FINAL not in emulator.message(message.ts).all_text or outage.startswith("thread")
        if not outage.startswith("thread"):
            # Longer than slack_sdk's own retries: the final update has failed through them.
            failed = failed_updates(emulator)
            emulator.wait_for(lambda: failed_updates(emulator) >= failed + 4, timeout=60)
    finally:
        emulator.clear_faults()
        emulator.add_bot(DEPLOYS)
        engine.close()
    shown = final(emulator)
    report(
        f"Slack outage mid-rollout: {outage}",
        **{"record closed during the outage after s": round(closed_after, 1)},
        **{"final shown once back": shown.ts == message.ts, "bot alive": bot.proc.poll() is None},  # type: ignore[union-attr]
    )
    assert shown.ts == message.ts and len(bot_messages(emulator)) == 1
    assert "Completed in" in shown.all_text
    assert bot.proc is not None and bot.proc.poll() is None


def test_no_deployment_starts_where_its_message_cannot_be_posted(
    stack: LocalStack,
    aws: MotoServer,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """A DM, a channel the bot is not in, Slack not taking the post: the old bot deployed
    anyway and nobody heard of it. Now: an ephemeral saying what to do, nothing changed."""
    dm = "D0ALICEDM"
    emulator.add_channel(dm, "alice-and-deploybot")
    # Listed: a DM no target lists takes no changes (tests/slack/test_strangers.py).
    bot = start_bot("http", DEPLOY_ALLOWED_CHANNELS=f"{DEPLOYS},{dm}")
    aws.requests.clear()
    cases = {
        "a DM": (dm, lambda: emulator.remove_bot(dm), "channel_not_found"),
        "a channel the bot is not in": (
            DEPLOYS,
            lambda: emulator.remove_bot(DEPLOYS),
            "/invite @deploybot",
        ),
        "Slack not answering": (
            DEPLOYS,
            lambda: emulator.fail_for(600, "chat.postMessage", drop=True),
            "Slack did not take the deployment's message",
        ),
    }
    for n, (where, (channel, fault, expected)) in enumerate(cases.items(), start=1):
        emulator.add_bot(DEPLOYS)
        emulator.clear_faults()
        fault()
        emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=channel, url=bot.events_url)
        answers = emulator.wait_for(
            lambda n=n: (
                len(emulator.ephemerals(user=ALICE)) >= n and emulator.ephemerals(user=ALICE)
            ),
            timeout=60,
            what=f"the answer in {where}",
        )
        assert answers[-1].text.startswith("Nothing was deployed"), (where, answers[-1].text)
        assert expected in answers[-1].text, (where, answers[-1].text)
        assert no_aws_writes(aws), where
        assert bot_messages(emulator, channel) == [], where


def test_a_start_refused_after_the_message_was_posted_says_so_in_it(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """The lock is free when /deploy is checked and taken (by the CLI, say) while the
    message is being posted: the message says the deploy was refused, nothing changed."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V45)
    engine = Engine(stack.settings)
    bot = start_bot("http")
    # The bot's post is held until the CLI's deploy below has taken the lock (at most 25 s:
    # under slack_sdk's 30 s).
    go_on = emulator.slow("chat.postMessage", seconds=25)
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    try:
        # The bot checked the lock and is posting its message; then someone else deploys.
        wait_until(lambda: emulator.faults_left("chat.postMessage") == 0, 30, "the bot's post")
        other = engine.deploy("v4.5.0", Requester("bob", "cli", "Bob"))
        go_on()
        updates = aws.requests.count("ecs", "UpdateService")
        refused = final(emulator, f"{V44} was not deployed")
        assert "Refused before any change" in refused.all_text and "Bob" in refused.all_text
        assert not has_button(refused, "rollback")
        (told,) = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE))
        assert "Deploys are locked" in told.text
        assert aws.requests.count("ecs", "UpdateService") == updates  # alice changed nothing
        simulator.slow_ticks = 2
        assert list(engine.watch(other))[-1].outcome == Outcome.COMPLETED
    finally:
        engine.close()


def test_a_bot_started_while_slack_is_down_follows_what_is_open_and_posts_later(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """It used to exit at start (resume's first post failed) and crash-loop."""
    simulator.step_seconds = 0.3
    engine = Engine(stack.settings)
    try:
        started = cli("deploy", "v4.4.0", "--no-wait")
        assert started.returncode == 0, started.stdout + started.stderr
        emulator.fail_for(600, "*", drop=True)
        bot = start_bot("http")  # waits for /healthz: up while Slack is down
        wait_until(lambda: bookkeeping_done(engine), 60, "record closed and lock released")
        assert bot.proc is not None and bot.proc.poll() is None
        assert bot_messages(emulator) == []
        emulator.clear_faults()
        shown = final(emulator)  # in SLACK_CHANNEL, where CLI deployments are shown
        assert "Completed in" in shown.all_text and "operator@laptop" in shown.all_text
        wait_until(
            lambda: engine.ledger.history(1)[0].message_ref.endswith(shown.ts), 30, "its place"
        )
        assert engine.ledger.history(1)[0].outcome == Outcome.COMPLETED
    finally:
        emulator.clear_faults()
        engine.close()


def test_a_queued_deploy_whose_turn_comes_while_slack_is_away_starts_and_is_shown_later(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Bob queued behind a slow rollout; it ends while Slack does not answer at all. His turn
    is the supervisor's, not Slack's: his deploy starts (nobody waits at a screen for a queued
    one), and its message is posted once Slack answers. It used to be taken off the queue,
    refused for want of a message, and lost: nothing deployed, nobody told."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V45)
    engine = Engine(stack.settings)
    try:
        running = engine.deploy("v4.5.0", Requester("operator@laptop", "cli"))
        bob = Requester(BOB, "slack", "bob")
        engine.enqueue(bob, tag="v4.4.0", via=Via(door=Door.SLASH, channel=DEPLOYS))
        emulator.fail_for(600, "*", drop=True)
        start_bot("http")  # waits for /healthz: up while Slack is away
        engine.abort(Requester("operator@laptop", "cli"))
        simulator.slow_ticks = 2
        assert list(engine.watch(running))[-1].outcome == Outcome.ABORTED

        def bobs() -> bool:
            return any(r.who == BOB and r.tag == V44 for r in engine.ledger.history(5))

        wait_until(bobs, 60, "Bob's queued deploy started while Slack was away")
        assert engine.queue() == []
        assert bot_messages(emulator) == []
        emulator.clear_faults()
        shown = final(emulator, "Deployed v4.4.0")
        assert "bob" in shown.all_text.lower() or BOB in shown.all_text
        wait_until(
            lambda: engine.ledger.history(1)[0].message_ref.endswith(shown.ts), 30, "its place"
        )
    finally:
        emulator.clear_faults()
        engine.close()


def test_lost_sight_in_slack_then_the_real_outcome_when_aws_answers(
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Point 6 in Slack (the message says it lost sight) and issue 19's real outcome: the
    bot's periodic reconcile settles it and the same message shows "Deployed"."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    bot = start_bot("http", ROLLOUT_TIMEOUT_SECONDS="4")  # through the proxy (its env)

    def expire_after_update() -> None:
        wait_until(lambda: aws.requests.count("ecs", "UpdateService") > 0, 60, "UpdateService")
        proxy.refuse("*", code="ExpiredTokenException", message="The security token expired")

    threading.Thread(target=expire_after_update, daemon=True).start()
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    lost = final(emulator, "Lost sight of the rollout")
    assert "ECS may still be rolling out" in lost.all_text
    assert not has_button(lost, "rollback")
    proxy.clear()
    simulator.slow_ticks = 2
    shown = final(emulator)
    assert shown.ts == lost.ts and "Completed in" in shown.all_text


def test_buttons_only_where_they_make_sense(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Issue 19: Rollback only on a deployment that completed and changed the image; a failed
    or rolled-back one, or a redeploy, offers nothing that changes production."""
    simulator.mark_broken(V45)
    bot = start_bot("http")
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    done = final(emulator, f"Deployed {V44}")
    assert has_button(done, "rollback")
    emulator.slash_command("/deploy", "v4.5.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    failed = final(emulator, f"Deployment of {V45} failed")
    assert "circuit breaker" in failed.all_text
    assert failed.buttons == []
    emulator.slash_command("/redeploy", "", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    redeployed = emulator.wait_for(
        lambda: next(
            (
                m
                for m in bot_messages(emulator)
                if "Redeployed" in m.all_text and "redeploy" in m.all_text
            ),
            None,
        ),
        timeout=60,
    )
    assert redeployed.buttons == []
