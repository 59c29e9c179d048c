"""A moved release tag through Slack (#24): refused with a confirm, deployed once confirmed.

A real bot process, the Slack emulator and moto: ``v4.4.0-…`` is re-pointed at another image
after its first deploy; ``/deploy v4.4.0`` is refused naming both images, with a "Deploy it
anyway" button behind a confirm that deploys the image the tag names now, and only that."""

from __future__ import annotations

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.slack import guards
from tests.bot.test_cli_tags import V440, repush
from tests.conftest import ALICE, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import final_message, running_release


def test_a_moved_release_tag_is_refused_and_deployed_once_confirmed(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http")
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    final_message(emulator, "Deployed v4.4.0", timeout=120)
    first = running_release(stack.settings)[1]
    moved = repush(stack, [V440])
    updates = aws.requests.count("ecs", "UpdateService")

    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    offer = emulator.wait_for(
        lambda: next(
            (e for e in emulator.ephemerals(user=ALICE) if "now names a different image" in e.text),
            None,
        ),
        timeout=60,
        what="the moved tag's refusal",
    )
    assert first[:19] in offer.text and moved[:19] in offer.text, offer.text
    assert aws.requests.count("ecs", "UpdateService") == updates
    assert running_release(stack.settings)[1] == first

    emulator.click(offer, guards.MOVED_TAG_ACTION, user=ALICE, url=bot.events_url)
    emulator.wait_for(
        lambda: running_release(stack.settings)[1] == moved,
        timeout=120,
        what="the confirmed image deployed",
    )
