"""The plan in Slack (issue 26 item 5): each Deploy button's dialog and the Approve dialog say
what the task definition does in one line; the approval request and the deployment's first
message show its diff and the checks; an approval whose plan changed before the start (a
revision of the family registered over moto's API between the request and the click) is void,
the request says so and its requester is told in its thread. A real bot process, the Slack
emulator and moto."""

from __future__ import annotations

import json
from pathlib import Path

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.slack import guards
from tests.conftest import BOB, CAROL, DEPLOYS, LocalStack
from tests.deploy.test_plan_approval import FAMILY, new_revision
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages, running_tag
from tests.slack.test_guards import APPROVAL, config, posted, said_to, slash


def test_the_request_shows_the_plan_and_a_changed_plan_voids_the_approval(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(tmp_path, stack, APPROVAL))
    # /deploy alone: each Deploy button's dialog says what the task definition does.
    slash(emulator, bot, "", user=BOB)
    helped = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=BOB) if "Usage" in e.all_text), None),
        timeout=60,
        what="the help",
    )
    dialogs = [b["confirm"]["text"]["text"] for b in helped.buttons if "confirm" in b]
    assert dialogs and all("Task definition: only the image changes." in d for d in dialogs)
    assert all(len(d) <= 300 for d in dialogs)

    slash(emulator, bot, "v4.4.0", user=BOB)
    request = posted(emulator, "approval needed")
    shown = request.all_text
    assert f"Task definition: a new revision from {FAMILY}:1 (nothing else changes):" in shown
    assert "image: v4.3.0-ecr-ecs-fargate (sha256:" in shown
    assert f"✓ log group /ecs/{FAMILY} exists" in shown
    assert f"✓ task role {FAMILY}-task exists" in shown
    dialog = request.button(guards.APPROVE_ACTION)["confirm"]["text"]["text"]
    assert dialog.endswith("Task definition: only the image changes.") and len(dialog) <= 300

    new_revision(stack)  # someone registers a revision of the family meanwhile
    emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    refusal = said_to(emulator, CAROL, "no longer holds")
    assert f"{FAMILY}:2, was registered" in refusal.text
    told = emulator.wait_for(
        lambda: next(
            (r for r in emulator.message(request.ts).replies if f"<@{BOB}>" in r.text), None
        ),
        timeout=60,
        what="the requester told in the request's thread",
    )
    assert "was not started" in told.text and f"{FAMILY}:2, was registered" in told.text
    emulator.wait_for(
        lambda: "No longer holds" in emulator.message(request.ts).all_text,
        timeout=60,
        what="the request saying it no longer holds",
    )
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    assert ("ecs", "UpdateService") not in {(r.service, r.operation) for r in aws.requests}

    # Asked again: the new request's plan names the newer revision; approved, it deploys, and
    # the deployment's first message (before any write) showed the plan too.
    slash(emulator, bot, "v4.4.0", user=BOB)
    again = emulator.wait_for(
        lambda: next(
            (
                m
                for m in bot_messages(emulator)
                if "approval needed" in m.all_text and m.ts != request.ts
            ),
            None,
        ),
        timeout=60,
        what="the second request",
    )
    assert f"note: {FAMILY}:2 was registered after {FAMILY}:1" in again.all_text
    emulator.click(again, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    done = posted(emulator, "Deployed v4.4.0")
    first = done.revisions[0]
    said = first.text + json.dumps(first.blocks, ensure_ascii=False)
    assert f"Task definition: a new revision from {FAMILY}:1 (nothing else changes):" in said
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"
