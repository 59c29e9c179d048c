"""CI's image-pushed notice, its Deploy button, rollback and history, through the emulator."""

from __future__ import annotations

import os
import subprocess
import sys

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from tests.conftest import ALICE, BOB, BOT_TOKEN, CAROL, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import has_button, running_tag


def notify(
    emulator: SlackEmulator | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    if emulator is not None:
        full.update(
            SLACK_API_URL=emulator.api_url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_CHANNEL=DEPLOYS
        )
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", "notify", "image-pushed", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def progress_messages(emulator: SlackEmulator) -> list[Message]:
    """The deployments' live messages (the CI notices are the other bot messages)."""
    return [m for m in emulator.messages(DEPLOYS) if m.bot_id and "ECS `" in m.all_text]


def wait_final(emulator: SlackEmulator, words: str, count: int = 1) -> Message:
    return emulator.wait_for(
        lambda: (
            [m for m in emulator.messages(DEPLOYS) if m.bot_id and words in m.all_text][count - 1 :]
            or [None]
        )[0],
        timeout=60,
        what=f"a message saying {words!r}",
    )


def test_notify_then_click_deploys_exactly_that_tag_once(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http")
    done = notify(
        emulator,
        "--tag",
        "v4.5.0-ecr-ecs-fargate",
        "--sha",
        "abc1234def5678",
        "--run-url",
        "https://ci.example/run/1",
    )
    assert done.returncode == 0, done.stderr
    (notice,) = emulator.messages(DEPLOYS)
    assert "v4.5.0-ecr-ecs-fargate" in notice.all_text and "abc1234def56" in notice.all_text
    assert "https://ci.example/run/1" in str(notice.blocks)
    button = notice.button("deploy_tag")
    assert button is not None and button["value"] == "v4.5.0-ecr-ecs-fargate"
    assert "confirm" in button

    # Someone not allowed: refused, nothing written.
    emulator.click(notice, "deploy_tag", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="refusal")[0]
    assert "you may not deploy to production" in refusal.text
    assert aws.requests.count("ecs", "UpdateService") == 0

    # Alice clicks twice: one deployment of exactly that tag; the notice says who.
    emulator.click(notice, "deploy_tag", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    emulator.click(notice, "deploy_tag", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    final = wait_final(emulator, "Deployed v4.5.0-ecr-ecs-fargate")
    assert "ci-button" in final.all_text
    claimed = emulator.message(notice.ts)
    assert "is deploying `v4.5.0-ecr-ecs-fargate`" in claimed.all_text
    assert not has_button(claimed, "deploy_tag")
    assert aws.requests.count("ecs", "UpdateService") == 1
    assert len(progress_messages(emulator)) == 1
    second = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="2nd click answer")
    assert "already clicked Deploy" in second[0].text or "locked" in second[0].text
    assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"


def test_click_while_locked_is_refused_like_deploy(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    simulator.step_seconds = 1.0  # bob still holds the lock at the click
    bot = start_bot("http")
    assert notify(emulator, "--tag", "v4.5.0-ecr-ecs-fargate").returncode == 0
    (notice,) = emulator.messages(DEPLOYS)
    emulator.slash_command("/deploy", "v4.4.0", user=BOB, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(lambda: progress_messages(emulator), what="bob's progress message")
    emulator.click(notice, "deploy_tag", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="refusal")[0]
    assert "Deploys are locked" in refusal.text and "bob" in refusal.text
    assert has_button(emulator.message(notice.ts), "deploy_tag")  # still deployable
    wait_final(emulator, "Deployed v4.4.0")


def test_notify_without_slack_settings_is_a_notice_and_exit_0() -> None:
    done = notify(None, "--tag", "v4.4.0-ecr-ecs-fargate")
    assert done.returncode == 0
    assert "no Slack notice" in done.stdout and "SLACK_BOT_TOKEN" in done.stdout


def test_notify_with_a_rejected_token_fails_clearly(emulator: SlackEmulator) -> None:
    done = notify(emulator, "--tag", "v4.4.0-ecr-ecs-fargate", SLACK_BOT_TOKEN="xoxb-wrong-token")
    assert done.returncode != 0
    assert "invalid_auth" in done.stderr and "Traceback" not in done.stderr
    assert "xoxb-wrong-token" not in done.stderr + done.stdout
    done = notify(emulator, "--tag", "v4.4.0-ecr-ecs-fargate", SLACK_CHANNEL="C0NOPE")
    assert done.returncode != 0 and "C0NOPE" in done.stderr and "invite the bot" in done.stderr


def test_rollback_button_and_command_go_back_once_and_never_toggle(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """v4.4.0 → v4.5.0 → Rollback on v4.5.0's message → v4.4.0. Then the same button again,
    and `/deploy rollback`, are refused: they used to roll forward to v4.5.0 (issue 13)."""
    bot = start_bot("socket")
    emulator.slash_command("/deploy", "rollback", user=ALICE, channel=DEPLOYS)
    nothing = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="answer")[0]
    assert "Nothing to roll back to" in nothing.text
    assert aws.requests.count("ecs", "UpdateService") == 0

    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS)
    wait_final(emulator, "Deployed v4.4.0")
    emulator.slash_command("/deploy", "v4.5.0", user=BOB, channel=DEPLOYS)
    second = wait_final(emulator, "Deployed v4.5.0")
    emulator.click(second, "rollback", user=ALICE, channel=DEPLOYS)
    back = wait_final(emulator, "Rolled back to v4.4.0")
    assert "rollback" in back.all_text
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"
    updates = aws.requests.count("ecs", "UpdateService")

    # The same button again, from a client still showing it: the bot retires buttons that no
    # longer apply (issue 29), so the message may have lost it by now.
    emulator.click(second, "rollback", user=BOB, channel=DEPLOYS, as_seen=True)
    again = emulator.wait_for(lambda: emulator.ephemerals(user=BOB), what="refusal")[0]
    assert "is no longer what runs" in again.text and "v4.4.0-ecr-ecs-fargate" in again.text
    emulator.slash_command("/deploy", "rollback", user=BOB, channel=DEPLOYS)
    emulator.wait_for(lambda: len(emulator.ephemerals(user=BOB)) == 2, what="second refusal")
    assert "Nothing to roll back to" in emulator.ephemerals(user=BOB)[1].text
    assert aws.requests.count("ecs", "UpdateService") == updates
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"

    emulator.slash_command("/deploy", "history", user=CAROL, channel=DEPLOYS)
    history = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="history")[0]
    assert history.text.count("completed") == 3
    assert "rollback by" in history.text and "<@U0ALICE>" in history.text
    assert bot.proc is not None and bot.proc.poll() is None
