"""Deploy on push (issue 30 item 2): CI's notice deploys its image at once to a target with
``auto_deploy``, through the same rules, once per notice across two bot replicas.

Real ``deploybot serve`` processes behind one Request URL, the Slack emulator sending the
notice's ``message_metadata_posted`` event (and Slack's retry of it, to the other replica),
moto and the rollout simulator."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.local.stack import add_service
from bot.settings import Settings
from bot.slack import guards
from bot.slack.messages import DEPLOY_ACTION, NOTICE_EVENT
from bot.targets import BadConfig, load_targets
from tests.conftest import (
    ALICE,
    BOB,
    CAROL,
    DEPLOYS,
    STAGING_CLUSTER,
    STAGING_SERVICE,
    LocalStack,
)
from tests.helpers import wait_until
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages
from tests.slack.test_ci_notice_and_rollback import notify
from tests.slack.test_guards import posted, said_to

V43, V44, V45 = "v4.3.0-ecr-ecs-fargate", "v4.4.0-ecr-ecs-fargate", "v4.5.0-ecr-ecs-fargate"

AUTO_TOML = f"""
[targets.staging]
cluster = "{STAGING_CLUSTER}"
service = "{STAGING_SERVICE}"
repository = "hello-world-ecr-ecs-fargate"
auto_deploy = true

[targets.production]
cluster = "hello-world-ecr-ecs-fargate"
service = "hello-world-ecr-ecs-fargate"
repository = "hello-world-ecr-ecs-fargate"
after = "staging"
"""


@pytest.fixture
def config(stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    add_service(stack.info, stack.settings, cluster=STAGING_CLUSTER, service=STAGING_SERVICE)
    for name in ("DEPLOYBOT_CONFIG_TEXT", "DEPLOY_TARGET"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "deploybot.toml"
    path.write_text(AUTO_TOML, encoding="utf-8")
    monkeypatch.setenv("DEPLOYBOT_CONFIG", str(path))
    return path


def two_replicas(start_bot: BotFactory, emulator: SlackEmulator) -> list[BotProcess]:
    emulator.metadata_subscriptions.add(NOTICE_EVENT)
    bots = [start_bot("http", DEPLOY_TARGET="production") for _ in range(2)]
    emulator.request_urls = [b.events_url or "" for b in bots]
    return bots


def the_notice(emulator: SlackEmulator) -> Message:
    return next(m for m in emulator.messages(DEPLOYS) if "A new image is in ECR" in m.all_text)


def test_a_notice_deploys_to_staging_once_across_two_replicas_and_a_retry(
    config: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    two_replicas(start_bot, emulator)
    done = notify(emulator, "--tag", V45, DEPLOYBOT_CONFIG=str(config))
    assert done.returncode == 0, done.stderr
    notice = the_notice(emulator)
    assert notice.metadata == {"event_type": NOTICE_EVENT, "event_payload": {"tag": V45}}
    # No button for staging (it deploys on its own); production is promotion only.
    assert notice.buttons == [], notice.buttons
    assert "staging deploys this image on push" in notice.all_text
    final = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if f"Deployed {V45}" in m.all_text), None),
        timeout=60,
        what="staging's deployment on push, to its end",
    )
    assert "staging" in final.all_text and "CI (auto_deploy)" in final.all_text
    (first,) = emulator.events
    assert first.ok, first
    # Slack retries the event (its ack was late, say), to the other replica: no second deploy.
    again = emulator.redeliver(first)
    assert again.ok and again.to != first.to, (first.to, again.to)
    emulator.wait_for(lambda: len(emulator.events) == 2, what="the retry's delivery")
    progress = [m for m in bot_messages(emulator) if "ECS `" in m.all_text]
    assert len(progress) == 1, [m.all_text for m in progress]
    assert aws.requests.count("ecs", "UpdateService") == 1
    assert the_notice(emulator).replies == ()  # nothing refused, nothing said twice


def test_a_frozen_target_refuses_in_the_notices_thread_once(
    config: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    two_replicas(start_bot, emulator)
    froze = emulator.slash_command("/deploy", "freeze staging load test", user=ALICE,
                                   channel=DEPLOYS)  # fmt: skip
    assert froze.ok
    emulator.wait_for(
        lambda: any("froze" in m.all_text.lower() for m in bot_messages(emulator)),
        what="the freeze's announcement",
    )
    assert notify(emulator, "--tag", V45, DEPLOYBOT_CONFIG=str(config)).returncode == 0
    notice = emulator.wait_for(
        lambda: next((m for m in [the_notice(emulator)] if m.replies), None),
        what="the refusal in the notice's thread",
    )
    (reply,) = notice.replies
    assert "frozen" in reply.all_text and "load test" in reply.all_text, reply.all_text
    emulator.redeliver(emulator.events[0])
    emulator.wait_for(lambda: len(emulator.events) == 2, what="the retry's delivery")
    assert len(emulator.message(notice.ts).replies) == 1
    assert aws.requests.count("ecs", "UpdateService") == 0


def test_a_notice_another_app_posted_deploys_nothing(
    config: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Any app may post metadata of the notice's type: only deploybot's own token's counts."""
    two_replicas(start_bot, emulator)
    assert notify(emulator, "--tag", V45, DEPLOYBOT_CONFIG=str(config)).returncode == 0
    real = emulator.wait_for(lambda: emulator.events, what="the notice's event")[0]
    forged_event = {**real.payload["event"], "bot_id": "B0OTHERAPP", "message_ts": "1.000001"}
    forged = dataclasses.replace(real, payload={**real.payload, "event": forged_event})
    assert emulator.redeliver(forged).ok
    emulator.wait_for(
        lambda: any(f"Deployed {V45}" in m.all_text for m in bot_messages(emulator)),
        timeout=60,
        what="the real notice's deploy",
    )
    assert aws.requests.count("ecs", "UpdateService") == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('approvals = 1\napprovers = ["U0ALICE"]', "targets.staging.auto_deploy: this target "
         "needs approvals = 1, and a deploy on push has nobody to approve it"),
        ('after = "production"', "targets.staging.auto_deploy: this target takes images only "
         "from production (after)"),
    ],
)  # fmt: skip
def test_auto_deploy_with_approvals_or_after_is_a_bad_configuration(
    extra: str, says: str, tmp_path: Path
) -> None:
    path = tmp_path / "deploybot.toml"
    path.write_text(
        '[targets.staging]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
        f"auto_deploy = true\n{extra}\n"
        '[targets.production]\ncluster = "c"\nservice = "p"\nrepository = "r"\n',
        encoding="utf-8",
    )
    settings = Settings(_env_file=None, deploybot_config=path, deploy_target="production")  # type: ignore[call-arg]
    with pytest.raises(BadConfig) as raised:
        load_targets(settings)
    assert says in str(raised.value), str(raised.value)


def ci_image_behind_alices_rollout(
    config: Path, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> tuple[BotProcess, Message]:
    """A bot; Alice's slow rollout holding staging's lock (``simulator.slow_ticks`` high: the
    caller sets it back); CI's notice of v4.5.0, answered in its thread. The bot and the
    notice, with its reply."""
    emulator.metadata_subscriptions.add(NOTICE_EVENT)
    bot = start_bot("http", DEPLOY_TARGET="production")
    emulator.request_urls = [bot.events_url or ""]
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    assert emulator.slash_command("/deploy", f"{V44} to staging", user=ALICE,
                                  channel=DEPLOYS).ok  # fmt: skip
    emulator.wait_for(
        lambda: any(f"Deploying {V44}" in m.all_text for m in bot_messages(emulator)),
        timeout=30,
        what="Alice's slow rollout on staging",
    )
    assert notify(emulator, "--tag", V45, DEPLOYBOT_CONFIG=str(config)).returncode == 0
    notice = emulator.wait_for(
        lambda: next((m for m in [the_notice(emulator)] if m.replies), None),
        timeout=30,
        what="the notice's thread",
    )
    return bot, notice


def test_a_notice_meeting_a_busy_target_joins_its_queue_and_deploys_at_its_turn(
    config: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Alice's slow rollout holds staging's lock when CI's notice arrives: the image joins
    staging's queue by itself (nobody is there to press Deploy when free), and the notice's
    thread says so; Slack's retry of the event queues nothing more. Bob, asking next, is
    refused for the queue and queues behind it. Once Alice's rollout ends, CI's image goes
    (as CI), then Bob's deploy."""
    try:
        bot, notice = ci_image_behind_alices_rollout(config, simulator, emulator, start_bot)
        (said,) = notice.replies
        # Queued, not offered a button nobody would press: only Cancel, for a deployer.
        assert [b["action_id"] for b in said.buttons] == [guards.CANCEL_QUEUED_ACTION]
        assert re.fullmatch(
            rf"staging is busy with alice's rollout of `{V44}` \(`d-[0-9a-f-]+`\); this image "
            r"deploys when it is free: number 1 in the queue\. .*",
            said.text,
        ), said.text
        # Slack's retry of the event: the claim holds, nothing is queued or said again.
        emulator.redeliver(emulator.events[0])
        emulator.wait_for(lambda: len(emulator.events) == 2, what="the retry's delivery")
        # Bob asks next: CI's image is queued before him, he joins behind it.
        assert emulator.slash_command("/deploy", f"{V43} to staging", user=BOB,
                                      channel=DEPLOYS).ok  # fmt: skip
        offer = said_to(emulator, BOB, "1 deploy is queued for staging")
        emulator.click(offer, guards.QUEUE_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
        said_to(emulator, BOB, "number 2 in the queue")
    finally:
        simulator.slow_ticks = 2  # Alice's rollout ends
    final = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if f"Deployed {V43}" in m.all_text), None),
        timeout=90,
        what="the queued deploys, to their ends",
    )
    assert f"<@{BOB}>" in final.all_text, final.all_text
    ci = next(m for m in bot_messages(emulator) if f"Deployed {V45}" in m.all_text)
    assert "CI (auto_deploy)" in ci.all_text, ci.all_text
    turns = [m.text for m in bot_messages(emulator) if "The queued deploy of" in m.text]
    assert turns == [
        f"⏭️ The queued deploy of `{V45}` to staging by CI (auto_deploy) starts now.",
        f"⏭️ The queued deploy of `{V43}` to staging by <@{BOB}> starts now.",
    ], turns
    assert aws.requests.count("ecs", "UpdateService") == 3  # Alice's, CI's once, Bob's
    assert len(emulator.message(notice.ts).replies) == 1  # nothing more said in the thread


def test_a_deploy_on_push_waiting_in_the_queue_may_be_cancelled_by_a_deployer(
    config: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """CI's image queued behind Alice's slow rollout: the thread's message has a Cancel
    button. CI is no person to cancel it, so any deployer of the target may (Carol, who may
    not deploy, may not); the thread's message then says who cancelled it, and at the end of
    Alice's rollout nothing more is deployed."""
    try:
        _, notice = ci_image_behind_alices_rollout(config, simulator, emulator, start_bot)
        (said,) = notice.replies
        assert [b["action_id"] for b in said.buttons] == [guards.CANCEL_QUEUED_ACTION]
        emulator.click(said, guards.CANCEL_QUEUED_ACTION, user=CAROL, channel=DEPLOYS)
        assert "may cancel" in said_to(emulator, CAROL, "may cancel").text
        emulator.click(said, guards.CANCEL_QUEUED_ACTION, user=BOB, channel=DEPLOYS)
        cancelled = emulator.wait_for(
            lambda: next(
                (m for m in [emulator.store.find(DEPLOYS, said.ts)] if m and "Cancelled" in m.text),
                None,
            ),
            timeout=30,
            what="the thread's message saying it was cancelled",
        )
        assert f"<@{BOB}>" in cancelled.all_text and V45 in cancelled.all_text
        assert cancelled.buttons == []
    finally:
        simulator.slow_ticks = 2  # Alice's rollout ends
    posted(emulator, f"Deployed {V44}", timeout=60)
    wait_until(simulator.idle, 30, "ECS still")
    assert aws.requests.count("ecs", "UpdateService") == 1  # Alice's only
    assert not [m for m in bot_messages(emulator) if "The queued deploy of" in m.text]


def test_a_queued_deploy_on_push_refused_at_its_turn_is_told_in_the_notices_thread(
    config: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """CI's image queued behind Alice's slow rollout; Bob freezes staging meanwhile. At its
    turn the freeze refuses it: said in the notice's thread (CI is no person to be told in an
    ephemeral), with a Deploy button for whoever wants it later; nothing is deployed."""
    try:
        _, queued = ci_image_behind_alices_rollout(config, simulator, emulator, start_bot)
        assert "number 1 in the queue" in queued.replies[0].text
        assert emulator.slash_command("/deploy", "freeze staging load test", user=BOB,
                                      channel=DEPLOYS).ok  # fmt: skip
        emulator.wait_for(
            lambda: any("froze" in m.all_text.lower() for m in bot_messages(emulator)),
            what="the freeze's announcement",
        )
    finally:
        simulator.slow_ticks = 2  # Alice's rollout ends
    notice = emulator.wait_for(
        lambda: next((m for m in [the_notice(emulator)] if len(m.replies) == 2), None),
        timeout=60,
        what="the turn's refusal in the notice's thread",
    )
    refused = notice.replies[1]
    assert refused.text.startswith(
        f"The queued deploy of `{V45}` to staging did not start when its turn came: "
    ), refused.text
    assert "frozen" in refused.text and "load test" in refused.text, refused.text
    assert [b["action_id"] for b in refused.buttons] == [f"{DEPLOY_ACTION}:staging"]
    assert not [e for e in emulator.ephemerals() if "did not start" in e.all_text]
    assert aws.requests.count("ecs", "UpdateService") == 1  # Alice's only
