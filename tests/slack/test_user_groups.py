"""Slack user groups in deployers and approvers (issue 30 item 3): their members read through
usergroups.list / usergroups.users.list (the Slack emulator's groups), a person removed from a
group losing the right within SLACK_GROUPS_SECONDS, a disabled or unknown group said once as
a configuration problem. A real ``deploybot serve`` against the emulator and moto."""

from __future__ import annotations

from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, CAROL, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages

GROUP, OTHER = "S0DEPLOYERS", "S0NOSUCHGROUP"


def reads_after(emulator: SlackEmulator, since: int, count: int = 2) -> None:
    """Wait for ``count`` more readings of the groups (usergroups.list) after ``since``."""
    emulator.wait_for(
        lambda: len(emulator.calls_of("usergroups.list", ok=True)) >= since + count,
        timeout=20,
        what=f"{count} more readings of the user groups",
    )


def test_a_group_member_deploys_and_loses_the_right_once_removed(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    emulator.add_usergroup(GROUP, "deployers", [CAROL])
    bot = start_bot("http", DEPLOY_ALLOWED_USERS=f"{ALICE},{GROUP}", SLACK_GROUPS_SECONDS="1")
    assert emulator.slash_command("/deploy", "v4.4.0", user=CAROL, url=bot.events_url).ok
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in bot_messages(emulator)),
        timeout=60,
        what="carol's deploy, as a member of the group",
    )
    assert emulator.calls_of("usergroups.users.list", ok=True)

    before = len(bot_messages(emulator))
    emulator.set_usergroup_users(GROUP, [ALICE])
    reads_after(emulator, len(emulator.calls_of("usergroups.list", ok=True)))
    assert emulator.slash_command("/deploy", "v4.3.0", user=CAROL, url=bot.events_url).ok
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="the refusal")[-1]
    assert "you may not deploy to production" in refusal.text, refusal.text
    assert f"<!subteam^{GROUP}>" in refusal.text, refusal.text
    assert len(bot_messages(emulator)) == before  # no deployment's message


def test_a_disabled_or_unknown_group_is_said_once_and_gives_no_right(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    emulator.add_usergroup(GROUP, "deployers", [CAROL])
    emulator.disable_usergroup(GROUP)
    bot = start_bot(
        "http", DEPLOY_ALLOWED_USERS=f"{ALICE},{GROUP},{OTHER}", SLACK_GROUPS_SECONDS="1"
    )
    reads_after(emulator, 0, count=3)
    said = [m.text for m in bot_messages(emulator) if "configuration" in m.text]
    assert len(said) == 2, said  # one each, however many readings
    disabled = next(t for t in said if GROUP in t)
    assert "@deployers" in disabled and "disabled in Slack" in disabled, disabled
    unknown = next(t for t in said if OTHER in t)
    assert "which this workspace does not have" in unknown, unknown
    assert "DEPLOY_ALLOWED_USERS" in unknown
    assert emulator.slash_command("/deploy", "v4.3.0", user=CAROL, url=bot.events_url).ok
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="the refusal")[-1]
    assert "you may not deploy" in refusal.text
