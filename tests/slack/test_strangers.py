"""Strangers (#24): changes come only from the bot's own workspace, through every door.

A real bot process, the Slack emulator sending what Slack sends from another workspace, from
another Enterprise Grid org, from a Slack Connect channel, a DM and a group DM; moto behind.
With ``deployers = "*"`` and no channel list (the defaults a small team starts with), another
company's people could deploy before: now they may read, and nothing changes."""

from __future__ import annotations

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Ephemeral, SlackEmulator
from bot.slack import messages
from tests.conftest import ALICE, BOB, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages, final_message, no_aws_writes, running_tag

MALLORY = "U0MALLORY"  # of another company's workspace, in a channel shared with it
SHARED = "C0SHARED"  # a Slack Connect channel
GROUP = "G0GROUPDM"  # a group DM of alice and bob


def no_ecs_writes(aws: MotoServer) -> bool:
    """After a rollout the bot's follower still writes its own records (the lease, the lock's
    release): a refused click is held to ECS, where a change would show."""
    return all(
        aws.requests.count("ecs", op) == 0 for op in ("RegisterTaskDefinition", "UpdateService")
    )


def answer(
    emulator: SlackEmulator, bot: BotProcess, user: str, channel: str, command: str, text: str
) -> Ephemeral:
    """Send a slash command and wait for what it leads to: an ephemeral to ``user``, or (the
    old bot) a message of the bot's in the channel, which fails the test naming it."""
    seen = len(emulator.ephemerals(user=user))
    before = len(bot_messages(emulator, channel))
    emulator.slash_command(command, text, user=user, channel=channel, url=bot.events_url)
    emulator.wait_for(
        lambda: (
            len(emulator.ephemerals(user=user)) > seen
            or len(bot_messages(emulator, channel)) > before
        ),
        timeout=60,
        what=f"the answer to {command} {text} from {user} in {channel}",
    )
    posted = bot_messages(emulator, channel)[before:]
    assert not posted, f"{command} {text} from {user} in {channel} went ahead: {posted[0].text}"
    return emulator.ephemerals(user=user)[seen]


def test_a_change_from_another_workspace_a_shared_channel_or_a_dm_is_refused(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    emulator.add_user(MALLORY, "mallory", team="T0ACME")
    emulator.add_channel(SHARED, "shared-with-acme", shared=True)
    dm = emulator.dm_channel(ALICE)
    emulator.add_channel(dm, "@alice")
    emulator.add_group_dm(GROUP, [ALICE, BOB])
    bot = start_bot("http", DEPLOY_ALLOWED_USERS="*", DEPLOY_ALLOWED_CHANNELS="")
    aws.requests.clear()
    refused = {
        "another workspace's /deploy": (MALLORY, DEPLOYS, "/deploy", "v4.4.0"),
        "another workspace's /redeploy": (MALLORY, DEPLOYS, "/redeploy", "we own this"),
        "another workspace's freeze": (MALLORY, DEPLOYS, "/deploy", "freeze production x"),
        "another workspace's rollback": (MALLORY, SHARED, "/deploy", "rollback"),
        "a Slack Connect channel": (ALICE, SHARED, "/deploy", "v4.4.0"),
        "a DM": (ALICE, dm, "/deploy", "v4.4.0"),
        "a group DM": (BOB, GROUP, "/redeploy", ""),
    }
    words = {
        MALLORY: "this came from another workspace (T0ACME)",
        SHARED: "this channel is shared with another organisation (Slack Connect)",
        dm: "not in a direct message",
        GROUP: "not in a group DM",
    }
    for case, (user, channel, command, text) in refused.items():
        said = answer(emulator, bot, user, channel, command, text)
        expected = words[MALLORY] if user == MALLORY else words[channel]
        assert said.text.startswith("Nothing was changed"), (case, said.text)
        assert expected in said.text, (case, said.text)
    assert no_aws_writes(aws)
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"

    # Reading is not a change: the stranger's status and history answer.
    status = answer(emulator, bot, MALLORY, SHARED, "/deploy-status", "")
    assert "v4.3.0" in status.all_text and "Nothing was changed" not in status.text
    history = answer(emulator, bot, MALLORY, DEPLOYS, "/deploy", "history")
    assert "Nothing was changed" not in history.text

    # The workspace's own people in its own channels change things as before; a stranger's
    # click on the result (Rollback) is refused like their commands.
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    done = final_message(emulator, "Deployed v4.4.0", timeout=120)
    assert any(b.get("action_id") == messages.ROLLBACK_ACTION for b in done.buttons)
    aws.requests.clear()
    seen = len(emulator.ephemerals(user=MALLORY))
    emulator.click(done, messages.ROLLBACK_ACTION, user=MALLORY, url=bot.events_url)
    said = emulator.wait_for(
        lambda: emulator.ephemerals(user=MALLORY)[seen:],
        what="the answer to the stranger's Rollback click",
    )[0]
    assert words[MALLORY] in said.text, said.text
    assert no_ecs_writes(aws)
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


def test_a_dm_a_target_lists_takes_changes(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    dm = emulator.dm_channel(ALICE)
    emulator.add_channel(dm, "@alice")
    bot = start_bot("http", DEPLOY_ALLOWED_CHANNELS=f"{DEPLOYS},{dm}")
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=dm, url=bot.events_url)
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in bot_messages(emulator, dm)),
        timeout=120,
        what="the deploy from the listed DM",
    )


SISTER = "W0SISTER"  # of another workspace of the same Enterprise Grid org
OUTSIDER = "W0OUTSIDER"  # of another org altogether


def test_on_enterprise_grid_the_org_and_the_workspace_are_both_checked(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    emulator.join_enterprise("E0HOME")  # auth.test names the org; the bot learns it at start
    emulator.add_user(SISTER, "sister", team="T0SISTER", enterprise="E0HOME")
    emulator.add_user(OUTSIDER, "outsider", team="T0GLOBEX", enterprise="E0GLOBEX")
    bot = start_bot("http", DEPLOY_ALLOWED_USERS="*", DEPLOY_ALLOWED_CHANNELS="")
    aws.requests.clear()
    sister = answer(emulator, bot, SISTER, DEPLOYS, "/deploy", "v4.4.0")
    assert "this came from another workspace (T0SISTER)" in sister.text, sister.text
    outsider = answer(emulator, bot, OUTSIDER, DEPLOYS, "/redeploy", "")
    assert "this came from another workspace (T0GLOBEX)" in outsider.text, outsider.text
    assert no_aws_writes(aws)
    # The org's own workspace: its commands carry enterprise_id, its clicks the org's id as
    # user.team_id; both are the bot's own.
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    done = final_message(emulator, "Deployed v4.4.0", timeout=120)
    seen = len(emulator.ephemerals(user=SISTER))
    aws.requests.clear()
    emulator.click(done, messages.ROLLBACK_ACTION, user=SISTER, url=bot.events_url)
    said = emulator.wait_for(
        lambda: emulator.ephemerals(user=SISTER)[seen:], what="the answer to the sister's click"
    )[0]
    assert "another workspace (T0SISTER)" in said.text, said.text
    assert no_ecs_writes(aws)
    # The org's own click goes through to the engine: the rollback starts.
    before = len(bot_messages(emulator))
    emulator.click(done, messages.ROLLBACK_ACTION, user=ALICE, url=bot.events_url)
    emulator.wait_for(
        lambda: len(bot_messages(emulator)) > before, timeout=60, what="alice's rollback"
    )
    assert not [e for e in emulator.ephemerals(user=ALICE) if "workspace" in e.text]
    final_message(emulator, "v4.3.0", timeout=120)
