"""What a deploy changes and where to look, in Slack; the requester hears back (issue 17).

A real bot process against the Slack emulator, moto with the rollout simulator, and the GitHub
stand-in holding the history the releases were built from.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.deploy.rollout import Outcome
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.local.stack import fake_sha
from bot.slack.messages import CONFIRM_TEXT_LIMIT
from bot.slack.progress import message_ref
from tests.conftest import ALICE, BOB, DEPLOYS, GitHub, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import final_message
from tests.slack.test_ci_notice_and_rollback import notify

V43, V44, V45 = (fake_sha(v)[:7] for v in ("v4.3.0", "v4.4.0", "v4.5.0"))
COMPARE = "https://github.com/octo-org/hello-world/compare"


def confirm_text(button: dict[str, Any]) -> str:
    text = button["confirm"]["text"]
    assert text["type"] == "plain_text", "people's commit titles are shown as typed"
    assert len(text["text"]) <= CONFIRM_TEXT_LIMIT
    return str(text["text"])


def dms(emulator: SlackEmulator, user: str) -> list[Message]:
    """The bot's DMs to ``user`` (none before its first)."""
    channel = emulator.dm_channel(user)
    return emulator.messages(channel) if channel in emulator.store.channels else []


def test_a_deploy_shows_what_it_changes_and_its_requester_hears_back(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    github: GitHub,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http")
    send = functools.partial(
        emulator.slash_command, user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    assert send("/deploy", "v4.5.0").ok
    done = final_message(emulator, "Deployed v4.5.0", timeout=60)

    # Before anything changed, the message said what would: direction, link, commits.
    starting = done.revisions[0]
    said = starting.text + json.dumps(starting.blocks, ensure_ascii=False)
    assert "Forward 2 releases: v4.3.0 (" in said
    assert f"<{COMPARE}/{V43}...{V45}|compare>" in said
    assert "15 commits, newest first:" in said and "… and 5 more" in said
    assert f"({V45}, sha256:" in said  # the commit of the image, beside its digest
    # Commit titles are people's text: escaped, never a mention or markup.
    assert "<!here>" not in said
    # It still says so once done, and its Rollback dialog says what going back takes out.
    assert "Forward 2 releases" in done.all_text
    rollback = confirm_text(done.button("rollback"))
    assert "the image that ran before this deployment" in rollback
    assert "Backward: this goes back 2 releases, v4.5.0 (" in rollback
    assert "Takes out 15 commits" in rollback and "• " in rollback

    # The requester hears back in a DM, once, with the way to the channel's message.
    (dm,) = emulator.wait_for(lambda: dms(emulator, ALICE), timeout=30, what="the DM")
    assert "completed" in dm.all_text and "v4.5.0-ecr-ecs-fargate" in dm.all_text
    assert f"/archives/{DEPLOYS}/p{done.ts.replace('.', '')}" in dm.all_text
    assert emulator.calls_of("chat.getPermalink", ok=True)

    # /deploy alone lists the images; each Deploy button's dialog says what it changes.
    assert send("/deploy").ok
    listing = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=ALICE) if "Usage" in e.all_text), None),
        what="the list of images",
    )
    buttons = {b["value"]: b for b in listing.buttons}
    assert f"`v4.4.0-ecr-ecs-fargate` ({V44})" in listing.all_text
    v44 = confirm_text(buttons["v4.4.0-ecr-ecs-fargate"])
    assert "Backward: this goes back 1 release" in v44 and "Takes out 12 commits" in v44
    assert len(dms(emulator, ALICE)) == 1  # still one DM

    # The rollback's own message says before it starts what going back takes out.
    emulator.click(done, "rollback", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    back = final_message(emulator, "✅ Rolled back to v4.3.0", timeout=60)
    said = back.revisions[0].text + json.dumps(back.revisions[0].blocks, ensure_ascii=False)
    assert "*Backward: this goes back 2 releases, v4.5.0 (" in said
    assert "Takes out 15 commits, newest first:" in said


def test_a_failure_says_where_to_look_and_a_closed_messages_tab_gets_an_ephemeral(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    github: GitHub,
    start_bot: BotFactory,
) -> None:
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    emulator.set_messages_tab(False)
    github.emulator.drop("compare", times=None)  # GitHub away: the deploy goes on all the same
    bot = start_bot("http")
    assert emulator.slash_command(
        "/deploy", "v4.5.0", user=ALICE, channel=DEPLOYS, url=bot.events_url
    ).ok
    failed = final_message(emulator, "Deployment of v4.5.0-ecr-ecs-fargate failed", timeout=60)
    text = failed.all_text
    assert f"<{COMPARE}/{V43}...{V45}|compare>" in text
    assert "Commits not listed: GitHub could not be reached" in text
    assert "*Where to look:* <https://eu-west-1.console.aws.amazon.com/cloudwatch/home" in text
    assert "|the last stopped task's logs>" in text
    assert (
        "<https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/hello-world-ecr-ecs-fargate/"
        "services/hello-world-ecr-ecs-fargate/deployments?region=eu-west-1|" in text
    )
    # Each stopped task's thread reply links its log stream and its page.
    replies = "\n".join(r.text for r in emulator.message(failed.ts, DEPLOYS).replies)
    assert "stopped: Essential container in task exited" in replies
    assert "|logs>" in replies and "/ecs/v2/clusters/hello-world-ecr-ecs-fargate/tasks/" in replies

    # DMs refused (messages_tab_disabled): an ephemeral in the channel instead.
    told = emulator.wait_for(
        lambda: [e for e in emulator.ephemerals(user=ALICE) if "failed and rolled back" in e.text],
        timeout=30,
        what="the ephemeral to the requester",
    )
    assert len(told) == 1 and told[0].channel == DEPLOYS
    refused = emulator.calls_of("chat.postMessage", ok=False)
    assert [c.error for c in refused] == ["messages_tab_disabled"]


def test_the_ci_notice_shows_the_change_and_no_dm_when_turned_off(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    github: GitHub,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http", DEPLOY_NOTIFY_REQUESTER="false")
    done = notify(emulator, "--tag", "v4.4.0-ecr-ecs-fargate", **github.env)
    assert done.returncode == 0, done.stderr
    (notice,) = emulator.messages(DEPLOYS)
    assert "Forward 1 release: v4.3.0 (" in notice.all_text
    assert f"<{COMPARE}/{V43}...{V44}|compare>" in notice.all_text
    dialog = confirm_text(notice.button("deploy_tag"))
    assert dialog.startswith("Deploy v4.4.0-ecr-ecs-fargate to ")
    assert "3 commits, newest first:" in dialog and "release: v4.4.0 (alice)" in dialog

    emulator.click(notice, "deploy_tag", user=BOB, channel=DEPLOYS, url=bot.events_url)
    final_message(emulator, "Deployed v4.4.0", timeout=60)
    bot.stop()  # every reply is sent by now
    assert dms(emulator, BOB) == []
    assert not [c for c in emulator.calls_of("chat.postMessage") if c.params.get("channel") == BOB]


def test_an_outcome_settled_where_nobody_could_tell_is_told_once_by_the_bot(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    github: GitHub,
    start_bot: BotFactory,
) -> None:
    """A Slack deploy whose process closed its record and ended before telling its requester
    (it died; here an engine with no Slack): the bot that finishes its message tells her,
    once. The DM renders Settled, which that process alone heard: the bot tells from its pass
    (Looked) what the board finishes."""
    posted = emulator.store.post(
        DEPLOYS, emulator.who.bot_user_id, "Deploying v4.4.0…", [], bot_id=emulator.who.bot_id
    )
    engine = Engine(stack.settings)
    try:
        plan = engine.plan_deploy("v4.4.0", Requester(ALICE, "slack", "alice"))
        record = engine.start(plan, message_ref(DEPLOYS, posted.ts))
        assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    finally:
        engine.close()
    assert dms(emulator, ALICE) == []

    bot = start_bot("http")
    final_message(emulator, "Deployed v4.4.0", timeout=60)
    (dm,) = emulator.wait_for(lambda: dms(emulator, ALICE), timeout=30, what="the DM")
    assert "completed" in dm.all_text
    assert f"/archives/{DEPLOYS}/p{posted.ts.replace('.', '')}" in dm.all_text
    bot.stop()  # every reply is sent by now
    assert len(dms(emulator, ALICE)) == 1
