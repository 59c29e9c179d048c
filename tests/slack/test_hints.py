"""Slack users find their way: with the slash commands renamed (SLACK_*_COMMAND), every text
the bot says names the configured commands and the target, never ``/deploy``; ``help`` lists
every subcommand the person may use; a stale lock is broken from Slack by a deployer, after a
confirm dialog, only when ECS shows nothing rolling out. A real bot process, the Slack
emulator and moto."""

from __future__ import annotations

import json
import re

import boto3
import yaml

from bot.command_names import CommandNames
from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.slack.guards import UNLOCK_ACTION
from bot.slack.manifest import render_manifest
from bot.slack.messages import ROLLBACK_ACTION
from tests.conftest import ALICE, CAROL, DEPLOYS, FleetStack, LocalStack
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages, has_button
from tests.slack.test_guards import said_to

NAMES = {
    "SLACK_DEPLOY_COMMAND": "/ship",
    "SLACK_REDEPLOY_COMMAND": "/reship",
    "SLACK_STATUS_COMMAND": "/ship-status",
}
# A slash command of the default names in a text ("/deploy", "/redeploy", "/deploy-status"),
# never a URL's path ("…/services/x/deployments").
PROMOTE = "promote:production"
DEFAULT_NAMES = re.compile(r"(?<![\w./-])/(re)?deploy\b")


def ship(emulator: SlackEmulator, bot: BotProcess, text: str, user: str = ALICE) -> None:
    emulator.slash_command("/ship", text, user=user, channel=DEPLOYS, url=bot.events_url)


def announced(emulator: SlackEmulator, words: str) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if words in m.all_text), None),
        timeout=60,
        what=f"a message saying {words!r}",
    )


def test_renamed_commands_every_text_names_them_and_the_target(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http", **NAMES)

    # Help: every subcommand a deployer may use (freeze, unfreeze, abort, unlock were missing).
    ship(emulator, bot, "")
    helped = said_to(emulator, ALICE, "*Usage*").all_text
    for usage in (
        "`/ship TAG`",
        "`/ship rollback`",
        "`/reship [reason]`",
        "`/ship abort`",
        "`/ship freeze REASON`",
        "`/ship unfreeze`",
        "`/ship unlock`",
        "`/ship history`",
        "`/ship stats [30d]`",
        "`/ship-status`",
    ):
        assert usage in helped, (usage, helped)
    # Someone who may not change anything sees only what they may use.
    ship(emulator, bot, "help", user=CAROL)
    reads = said_to(emulator, CAROL, "*Usage*").all_text
    assert "`/ship history`" in reads and "`/ship-status`" in reads
    assert "`/ship stats [30d]`" in reads  # a read: everyone's
    assert "freeze" not in reads and "`/ship TAG`" not in reads and "unlock" not in reads

    # Freeze, and what a frozen target answers: the configured command, naming the target.
    ship(emulator, bot, "freeze release train")
    assert "`/ship unfreeze production`" in announced(emulator, "froze").all_text
    ship(emulator, bot, "v4.4.0")
    said_to(emulator, ALICE, "Once it is safe: `/ship unfreeze production`")
    ship(emulator, bot, "unfreeze")
    announced(emulator, "unfroze")

    # Nothing to abort: roll back, with this door's command (was "/deploy rollback …,
    # deploybot rollback").
    ship(emulator, bot, "abort")
    said_to(emulator, ALICE, "roll back (`/ship rollback production`)")

    # A stale lock: the refusal names Slack's way to break it, not `deploybot unlock`.
    engine = Engine(stack.settings)
    taken, _ = engine.ledger.try_acquire(Requester("bob@laptop", "cli"), "v4.4.0", "d-stale")
    assert taken
    ship(emulator, bot, "v4.4.0")
    said_to(emulator, ALICE, "break a stale lock with `/ship unlock production`")
    ship(emulator, bot, "unlock")
    offer = said_to(emulator, ALICE, "deploy lock is held")
    button = offer.button(UNLOCK_ACTION)
    assert button["confirm"]["title"]["text"] == "Break production's lock?"
    assert "bob@laptop" in button["confirm"]["text"]["text"]
    # Someone who may not deploy may not break it either.
    emulator.click(offer, UNLOCK_ACTION, user=CAROL, url=bot.events_url)
    said_to(emulator, CAROL, "you may not break production's deploy lock")
    assert engine.ledger.lock_item() is not None
    emulator.click(offer, UNLOCK_ACTION, user=ALICE, url=bot.events_url)
    broke = announced(emulator, "broke *production*'s deploy lock").all_text
    assert "bob@laptop" in broke and "d-stale" in broke
    assert engine.ledger.lock_item() is None

    # While ECS rolls something out, the lock is not broken from Slack: it says what runs.
    simulator.mark_slow("v4.3.0-ecr-ecs-fargate")
    boto3.client(
        "ecs", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
    ).update_service(
        cluster=stack.settings.ecs_cluster,
        service=stack.settings.ecs_service,
        forceNewDeployment=True,
    )
    taken, _ = engine.ledger.try_acquire(Requester("bob@laptop", "cli"), "v4.3.0", "d-live")
    assert taken
    ship(emulator, bot, "unlock production")
    live = emulator.wait_for(
        lambda: next(
            (e for e in emulator.ephemerals(user=ALICE) if "d-live" in e.all_text and e.buttons),
            None,
        ),
        timeout=60,
        what="the offer to break the live lock",
    )
    emulator.click(live, UNLOCK_ACTION, user=ALICE, url=bot.events_url)
    said_to(emulator, ALICE, "Not unlocked:")
    assert engine.ledger.lock_item() is not None
    engine.close()

    # Nothing the bot said names the default commands.
    everything = json.dumps(emulator.snapshot(), ensure_ascii=False)
    assert "/ship unfreeze production" in everything and "Not unlocked" in everything
    found = [
        everything[max(0, m.start() - 80) : m.end()] for m in DEFAULT_NAMES.finditer(everything)
    ]
    assert not found, found[:5]


def test_buttons_go_from_messages_they_no_longer_apply_to(
    fleet_stack: FleetStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http")

    def deploy(text: str) -> None:
        emulator.slash_command("/deploy", text, user=ALICE, channel=DEPLOYS, url=bot.events_url)

    def now(message: Message) -> Message:
        return emulator.message(message.ts, DEPLOYS)

    deploy("v4.4.0 to staging")
    first = announced(emulator, "✅ Deployed v4.4.0-ecr-ecs-fargate to staging")
    assert has_button(first, PROMOTE) and has_button(first, ROLLBACK_ACTION)

    # A later deployment starts: v4.4.0 is no longer staging's last, its Promote would be
    # refused. The breaker rolls v4.5.0 back to v4.4.0: v4.4.0 runs, its Rollback stays.
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    deploy("v4.5.0 to staging")
    announced(emulator, "Deployment of v4.5.0-ecr-ecs-fargate to staging failed")
    kept = emulator.wait_for(
        lambda: next((m for m in [now(first)] if not has_button(m, PROMOTE)), None),
        timeout=60,
        what="v4.4.0's message without its Promote",
    )
    assert has_button(kept, ROLLBACK_ACTION), kept.buttons
    assert "this one's Promote no longer applies" in kept.all_text
    assert "v4.5.0-ecr-ecs-fargate" in kept.all_text

    # A later one completes: v4.4.0 no longer runs, its Rollback goes too.
    deploy("v4.3.0 to staging")
    announced(emulator, "✅ Deployed v4.3.0-ecr-ecs-fargate to staging")
    gone = emulator.wait_for(
        lambda: next((m for m in [now(first)] if not m.buttons), None),
        timeout=60,
        what="v4.4.0's message without buttons",
    )
    assert "this one's Promote and Rollback no longer apply" in gone.all_text
    last = announced(emulator, "✅ Deployed v4.3.0-ecr-ecs-fargate to staging")
    assert has_button(now(last), ROLLBACK_ACTION)


def test_the_manifests_usage_hints_name_targets() -> None:
    manifest = yaml.safe_load(render_manifest(CommandNames("/ship", "/reship", "/ship-status")))
    hints = {c["command"]: c.get("usage_hint", "") for c in manifest["features"]["slash_commands"]}
    # Were "v4.4.0-ecr-ecs-fargate | v4.4 | sha-abc1234 | rollback | history | status" and
    # "[reason]", though a first word naming a target is the target.
    assert hints["/ship"].startswith("TAG [to TARGET] | promote FROM to TO")
    for sub in ("rollback", "abort", "unfreeze", "unlock", "history", "stats", "status", "freeze"):
        assert sub in hints["/ship"], sub
    assert hints["/reship"] == "[TARGET] [reason]"
    assert hints["/ship-status"] == "[TARGET]"
