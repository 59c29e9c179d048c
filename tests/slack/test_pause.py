"""A deployment ECS paused at a hook, decided in Slack: real bot processes, the Slack emulator,
the ECS simulation (a blue/green service with a PAUSE hook after its test traffic shift) and
the test listener (the hello service under uvicorn on 127.0.0.1, the target's ``test_url``).

Continue by an approver (never the requester alone where approvals are needed) completes it,
over a red check only after a second confirmation; Roll back by a deployer rolls it back; a
double click on two replicas asks ECS once; the requester hears of the pause in a DM."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.local.aws import MotoServer
from bot.local.listener import TestListener
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.local.stack import set_deployment_strategy
from bot.slack import guards
from bot.slack.pause_view import CONTINUE_ACTION, CONTINUE_ANYWAY_ACTION, ROLLBACK_ACTION
from service.app import Release
from tests.conftest import ALICE, BOB, CAROL, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages, has_button, running_tag
from tests.slack.test_guards import config as guards_config

NEW, OLD = "v4.4.0-ecr-ecs-fargate", "v4.3.0-ecr-ecs-fargate"
MINUTE_TICKS = 20  # an ECS minute is a second of the simulation (0.05 s steps)


@pytest.fixture
def sim(aws: MotoServer) -> Iterator[RolloutSimulator]:
    simulator = RolloutSimulator(aws, step_seconds=0.05, minute_ticks=MINUTE_TICKS)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def listener(stack: LocalStack) -> Iterator[TestListener]:
    new = stack.info.release("v4.4.0")
    with TestListener(Release(new.tag, new.sha)) as running:
        yield running


def config(stack: LocalStack, tmp_path: Path, listener: TestListener, rules: str = "") -> str:
    set_deployment_strategy(
        stack.info,
        stack.settings,
        "BLUE_GREEN",
        bake_minutes=1,
        pause_at=["POST_TEST_TRAFFIC_SHIFT"],
        pause_timeout_minutes=120,
    )
    test = f'verify_path = "/health"\ntest_url = "{listener.url}"\n'
    return guards_config(tmp_path, stack, test + rules)


def slash(emulator: SlackEmulator, bot: BotProcess, text: str, user: str) -> None:
    emulator.slash_command("/deploy", text, user=user, channel=DEPLOYS, url=bot.events_url)


def posted(emulator: SlackEmulator, words: str, timeout: float = 120) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if words in m.all_text), None),
        timeout=timeout,
        what=f"a message saying {words!r}",
    )


def said_to(emulator: SlackEmulator, user: str, words: str, timeout: float = 90) -> str:
    return emulator.wait_for(
        lambda: next(
            (e.all_text for e in emulator.ephemerals(user=user) if words in e.all_text), None
        ),
        timeout=timeout,
        what=f"an ephemeral to {user} saying {words!r}",
    )


def paused_message(emulator: SlackEmulator) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if has_button(m, CONTINUE_ACTION)), None),
        timeout=120,
        what="the live message paused, with Continue",
    )


def dm_to(emulator: SlackEmulator, user: str, words: str) -> str:
    def found() -> str | None:
        channel = emulator.dm_channel(user)
        if channel not in emulator.store.channels:
            return None
        return next((m.all_text for m in emulator.messages(channel) if words in m.all_text), None)

    return emulator.wait_for(found, timeout=60, what=f"a DM to {user} saying {words!r}")


def test_continue_by_an_approver_over_a_red_check_completes_the_deployment(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
    aws: MotoServer,
) -> None:
    """Bob's deploy (approved by Carol) pauses; the old release still answers on the test
    listener: red. Bob alone cannot continue his own deploy; Carol's Continue asks again, and
    her Continue anyway completes it. Bob hears of the pause in a DM."""
    old = stack.info.release("v4.3.0")
    listener.answering(old.tag, old.sha)
    rules = f'approvals = 1\napprovers = ["{CAROL}"]'
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(stack, tmp_path, listener, rules))
    slash(emulator, bot, "v4.4.0", user=BOB)
    request = posted(emulator, "approval needed")
    emulator.click(request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)

    message = paused_message(emulator)
    text = message.all_text
    assert "Paused at POST_TEST_TRAFFIC_SHIFT" in text and "rolls back by itself at" in text
    assert f"<@{CAROL}> (an approval: not the requester)" in text
    assert "*Roll back:* anyone who may deploy to production" in text
    assert f"Test listener: `{listener.url}`" in text
    assert f"🔴 *the old release `{OLD}` still answers*" in text and "200 in " in text
    assert has_button(message, ROLLBACK_ACTION) and not has_button(message, guards.STOP_ACTION)
    assert "check is red" in message.button(CONTINUE_ACTION)["confirm"]["text"]["text"]
    assert "paused at POST_TEST_TRAFFIC_SHIFT" in dm_to(emulator, BOB, "is paused")

    emulator.click(message, CONTINUE_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    assert "someone else must continue it" in said_to(emulator, BOB, "this is your deployment")
    emulator.click(message, CONTINUE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, CAROL, "Continue anyway?")
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 0
    [again] = [e for e in emulator.ephemerals(user=CAROL) if "Continue anyway?" in e.all_text]
    emulator.click(again, CONTINUE_ANYWAY_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    posted(emulator, f"<@{CAROL}> continued")
    done = posted(emulator, f"Deployed {NEW}", timeout=180)
    assert not has_button(done, CONTINUE_ACTION)
    assert running_tag(stack.settings) == NEW
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 1


def test_roll_back_by_a_deployer_rolls_the_paused_deployment_back(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(stack, tmp_path, listener))
    emulator.set_messages_tab(False)  # Slack refuses the bot's DMs: messages_tab_disabled
    slash(emulator, bot, "v4.4.0", user=ALICE)
    message = paused_message(emulator)
    assert "✅ `" in message.all_text  # the new release answers on the test listener
    # Alice hears of the pause in an ephemeral beside the message instead of a DM.
    assert "paused at POST_TEST_TRAFFIC_SHIFT" in said_to(emulator, ALICE, "is paused")
    assert [e.channel for e in emulator.ephemerals(user=ALICE)] == [DEPLOYS]
    assert "anyone who may deploy to production" in message.all_text
    emulator.click(message, ROLLBACK_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url)
    said_to(emulator, CAROL, "you may not abort")  # Carol is no deployer here
    emulator.click(message, ROLLBACK_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
    posted(emulator, f"<@{BOB}> rolled back")
    final = posted(emulator, "failed", timeout=180)
    assert "rolled back" in final.all_text.lower()
    assert running_tag(stack.settings) == OLD


def test_a_double_click_on_two_replicas_asks_ecs_once(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
    aws: MotoServer,
) -> None:
    path = config(stack, tmp_path, listener)
    bots = [start_bot("http", DEPLOYBOT_CONFIG=path), start_bot("http", DEPLOYBOT_CONFIG=path)]
    slash(emulator, bots[0], "v4.4.0", user=ALICE)
    message = paused_message(emulator)
    clicks = [
        threading.Thread(
            target=emulator.click,
            args=(message, CONTINUE_ACTION),
            kwargs={"user": BOB, "channel": DEPLOYS, "url": bot.events_url},
        )
        for bot in (*bots, *bots)
    ]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join(timeout=60)
    posted(emulator, f"<@{BOB}> continued")
    emulator.wait_for(
        lambda: (
            len([e for e in emulator.ephemerals(user=BOB) if "ECS was asked already" in e.text])
            == 3
        ),
        timeout=90,
        what=f"three of four clicks told who decided: {[e.text for e in emulator.ephemerals()]}",
    )
    posted(emulator, f"Deployed {NEW}", timeout=180)
    # A click that arrives once ECS has moved on (a client that had not redrawn the message;
    # under load, the fourth of a double click) is still told who decided, not "not paused".
    emulator.click(
        message, CONTINUE_ACTION, user=BOB, channel=DEPLOYS, url=bots[1].events_url, as_seen=True
    )
    emulator.wait_for(
        lambda: len(emulator.ephemerals(user=BOB)) == 4,
        timeout=60,
        what="an answer to the late click",
    )
    assert "ECS was asked already" in emulator.ephemerals(user=BOB)[-1].text
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 1
    assert len([m for m in bot_messages(emulator) if "continued" in m.all_text]) == 1
