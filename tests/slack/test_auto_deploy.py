"""Deploy on push (issue 30 item 2): CI's notice deploys its image at once to a target with
``auto_deploy``, through the same rules, once per notice across two bot replicas.

Real ``deploybot serve`` processes behind one Request URL, the Slack emulator sending the
notice's ``message_metadata_posted`` event (and Slack's retry of it, to the other replica),
moto and the rollout simulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.local.stack import add_service
from bot.settings import Settings
from bot.slack.messages import NOTICE_EVENT
from bot.targets import BadConfig, load_targets
from tests.conftest import (
    ALICE,
    DEPLOYS,
    STAGING_CLUSTER,
    STAGING_SERVICE,
    LocalStack,
)
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages
from tests.slack.test_ci_notice_and_rollback import notify

V45 = "v4.5.0-ecr-ecs-fargate"

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
