"""What people and CI type lands in Slack as text: no <!here>, no <@U…>, no <url|label> of theirs.

Through the Slack emulator and a real ``deploybot serve``: every ``<…>`` sequence in anything
the bot posted (messages, their updates and replies, ephemerals) must be one the bot built
itself: a mention of a user id Slack gave it, a date, a link to a CI run.
"""

from __future__ import annotations

import re

from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.mrkdwn import escape, link, mention
from tests.bot.test_cli import cli
from tests.conftest import ALICE, BOB, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import final_message
from tests.slack.test_ci_notice_and_rollback import notify

HOSTILE = "<!here> <!channel> <!everyone> <@U0BOB> <#C0RANDOM> <http://evil.example|click> & co"
MALLORY = "U0MALLORY"
# What the bot itself may write between < and >: mentions of ids, dates, links it made.
OURS = re.compile(r"<(@U0[A-Z]+|!date\^[^>]*|https://ci\.example/run/1\|open the run)>")


def texts(node: object) -> list[str]:
    """Every ``text`` string of a Block Kit structure: what Slack renders (not button values)."""
    if isinstance(node, dict):
        own = [node["text"]] if isinstance(node.get("text"), str) else []
        return own + [t for k, v in node.items() if k != "text" for t in texts(v)]
    if isinstance(node, list):
        return [t for item in node for t in texts(item)]
    return []


def sequences(emulator: SlackEmulator) -> list[str]:
    """Every <…> in every text the bot sent, that the bot did not build itself."""
    shown: list[str] = []
    for m in emulator.messages(DEPLOYS):
        for revision in m.revisions:
            shown += [revision.text, *texts(revision.blocks)]
        shown += [reply.all_text for reply in m.replies]
    shown += [t for e in emulator.ephemerals() for t in (e.text, *texts(e.blocks))]
    return [s for t in shown for s in re.findall(r"<[^<>]*>", t) if not OURS.fullmatch(s)]


def test_escape_and_our_own_mentions() -> None:
    assert escape("<!here> & <@U1|x>") == "&lt;!here&gt; &amp; &lt;@U1|x&gt;"
    assert mention("U0ALICE") == "<@U0ALICE>"
    assert mention("<!here>") == "&lt;!here&gt;"
    assert link("https://ci.example/run/1", "open") == "<https://ci.example/run/1|open>"
    assert link("http://x|<!here>", "open") == "http://x|&lt;!here&gt;"


def test_a_redeploy_reason_lands_as_text(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    emulator.slash_command("/redeploy", HOSTILE, user=ALICE, channel=DEPLOYS, url=bot.events_url)
    try:
        msg = final_message(emulator, "Completed in")
    except TimeoutError as exc:  # what Alice was told instead (CI's run at 3c5c12f: a reply)
        told = [e.text for e in emulator.ephemerals(user=ALICE)]
        raise AssertionError(f"{exc}; Alice was told {told}") from exc
    assert escape(HOSTILE) in msg.all_text  # shown as typed, once Slack decodes the entities
    assert f"<@{ALICE}>" in msg.all_text  # the mention we build from Slack's id still works
    assert sequences(emulator) == []


def test_display_names_and_ci_text_land_as_text(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    emulator.add_user(MALLORY, HOSTILE)  # a display name is whatever its owner typed
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    bot = start_bot("http", DEPLOY_ALLOWED_USERS=f"{ALICE},{BOB},{MALLORY}")

    # CI's notice, with a run URL that tries to smuggle a mention into its link.
    done = notify(emulator, "--tag", "v4.4.0-ecr-ecs-fargate", "--run-url", "http://x|<!here>")
    assert done.returncode == 0, done.stderr
    done = notify(emulator, "--tag", HOSTILE, "--run-url", "https://ci.example/run/1")
    assert done.returncode == 0, done.stderr
    first = emulator.messages(DEPLOYS)[0]

    # Mallory claims the first notice: it says who is deploying, by name.
    emulator.click(first, "deploy_tag", user=MALLORY, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(lambda: emulator.message(first.ts).updates >= 1, what="the claimed notice")
    # While Mallory's rollout holds the lock, Alice is told whose it is, and /status says it.
    emulator.slash_command("/deploy", "v4.5.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    emulator.slash_command("/deploy", "status", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    # A tag that is all markup is refused, quoting it back.
    emulator.slash_command("/deploy", HOSTILE, user=ALICE, channel=DEPLOYS, url=bot.events_url)
    answers = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=ALICE)) and len(e) >= 3 and e, what="3 answers"
    )
    said = "\n".join(a.text + str(a.blocks) for a in answers)
    assert "is still rolling out since" in said and f" by {escape(HOSTILE)}, ECS " in said
    assert "is not an image tag" in said
    assert escape(HOSTILE) in emulator.message(first.ts).text  # the claimed notice's text
    assert sequences(emulator) == []


def test_a_cli_user_and_reason_land_as_text_in_the_channel(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    # A CLI deployment left to run; the bot posts it in SLACK_CHANNEL when it starts.
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    done = cli("deploy", "v4.4.0", "--no-wait", "--reason", HOSTILE, DEPLOYBOT_USER=HOSTILE)
    assert done.returncode == 0, done.stderr
    start_bot("http")
    msg = final_message(emulator, "v4.4.0-ecr-ecs-fargate")
    assert escape(HOSTILE) in msg.all_text
    assert sequences(emulator) == []
