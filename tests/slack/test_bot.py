"""/deploy, /redeploy, /deploy-status through the Slack emulator, in HTTP and Socket Mode."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, BOB, BOT_TOKEN, CAROL, DEPLOYS, RANDOM, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages, final_message, no_aws_writes, running_tag

MODES = ["http", "socket"]


@pytest.mark.parametrize("mode", MODES)
def test_deploy_end_to_end(
    mode: str,
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot(mode)
    delivery = emulator.slash_command(
        "/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    assert delivery.ok and delivery.latency is not None and delivery.latency < 3
    msg = final_message(emulator, "Deployed v4.4.0-ecr-ecs-fargate")
    assert "Completed in" in msg.all_text
    assert len(bot_messages(emulator)) == 1  # one message, updated in place
    assert msg.updates >= 1
    assert any("IN_PROGRESS" in r.text or "STARTING" in r.text for r in msg.revisions)
    assert msg.button("rollback") is not None
    assert any("steady state" in reply.text for reply in msg.replies)
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


@pytest.mark.parametrize(
    "forgery", [{"signature": "v0=" + "0" * 64}, {"timestamp": int(time.time()) - 301}]
)
def test_forged_or_stale_requests_are_401(
    forgery: dict[str, object],
    stack: LocalStack,
    aws: MotoServer,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http")
    aws.requests.clear()
    delivery = emulator.slash_command(
        "/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url, **forgery
    )
    assert delivery.status == 401
    time.sleep(1)
    assert no_aws_writes(aws)
    assert bot_messages(emulator) == []


@pytest.mark.parametrize("mode", MODES)
def test_not_allowed_user_or_channel_is_refused(
    mode: str,
    stack: LocalStack,
    aws: MotoServer,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot(mode, DEPLOY_ALLOWED_CHANNELS=DEPLOYS)
    aws.requests.clear()
    emulator.slash_command("/deploy", "v4.4.0", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="a refusal")[0]
    assert "you may not deploy to production" in refusal.text and CAROL in refusal.text
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=RANDOM, url=bot.events_url)
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="a refusal")[0]
    assert "is not handled in this channel" in refusal.text
    emulator.slash_command("/redeploy", "", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(lambda: len(emulator.ephemerals(user=CAROL)) == 2, what="2nd refusal")
    assert no_aws_writes(aws)
    assert bot_messages(emulator) == []


def test_bad_and_missing_tags_get_a_useful_answer(
    stack: LocalStack, aws: MotoServer, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    aws.requests.clear()
    emulator.slash_command(
        "/deploy", "v1;rm -rf /", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    emulator.slash_command("/deploy", "v9.9.9", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    answers = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=ALICE)) and len(e) == 2 and e, what="two answers"
    )
    texts = sorted(a.text for a in answers)
    assert any("is not an image tag" in t and "v4.4.0" in t for t in texts)
    assert any("No image tagged v9.9.9-ecr-ecs-fargate" in t and "v4.5.0" in t for t in texts)
    assert not any("Traceback" in t for t in texts)
    assert no_aws_writes(aws)


def test_two_users_at_once_one_deploys_one_is_told_who_holds_the_lock(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    threads = [
        threading.Thread(
            target=emulator.slash_command,
            args=("/deploy", tag),
            kwargs={"user": user, "channel": DEPLOYS, "url": bot.events_url},
        )
        for user, tag in ((ALICE, "v4.4.0"), (BOB, "v4.5.0"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refusal = emulator.wait_for(
        lambda: emulator.ephemerals(user=ALICE) + emulator.ephemerals(user=BOB), what="refusal"
    )
    assert len(refusal) == 1
    assert "Deploys are locked" in refusal[0].text
    holder = "bob" if refusal[0].user == ALICE else "alice"
    assert holder in refusal[0].text
    final_message(emulator, "✅ Deployed")
    assert len(bot_messages(emulator)) == 1


@pytest.mark.parametrize("mode", MODES)
def test_bot_killed_mid_rollout_finishes_its_message_after_restart(
    mode: str,
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    simulator.step_seconds = 1.0  # about 6 s a rollout: slow enough to kill the bot mid-way
    bot = start_bot(mode)
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    # Killed once the message shows the rollout moving (the record knows where the message is).
    msg = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if m.updates >= 1), None),
        what="the progress message, updated once",
    )
    bot.kill()
    assert "Deployed" not in emulator.message(msg.ts).all_text
    bot.start(emulator)
    final = final_message(emulator, "Deployed v4.4.0-ecr-ecs-fargate", timeout=60)
    assert final.ts == msg.ts  # the same message, finished
    assert len(bot_messages(emulator)) == 1


def test_slack_429_and_500_during_a_rollout(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    simulator.step_seconds = 0.5
    bot = start_bot("http")
    emulator.fail("chat.postMessage", status=500, times=1)
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(lambda: bot_messages(emulator), what="the progress message")
    emulator.fail("chat.update", status=429, retry_after=1, times=2)  # the next two updates
    final = final_message(emulator, "Deployed v4.4.0-ecr-ecs-fargate", timeout=60)
    assert "Completed in" in final.all_text
    assert emulator.calls_of("chat.update", ok=False)
    assert len(bot_messages(emulator)) == 1


def test_status_during_and_after_a_rollout(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    simulator.step_seconds = 1.0  # the rollout must still run at the second status
    bot = start_bot("http")
    emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    first = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="status")[0]
    assert "v4.3.0-ecr-ecs-fargate" in first.text and "none in progress" in first.text
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    (posted,) = emulator.wait_for(lambda: bot_messages(emulator), what="the progress message")
    # The message is posted before anything changes (the lock and the record come after it):
    # ask once the rollout has been reported in it, i.e. it is under way.
    emulator.wait_for(lambda: emulator.message(posted.ts).updates >= 1, what="the rollout")
    emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    during = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=CAROL)) and len(e) == 2 and e[1], what="status"
    )
    assert "alice is deploying v4.4.0-ecr-ecs-fargate" in during.all_text
    final_message(emulator, "Deployed v4.4.0")
    emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    after = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=CAROL)) and len(e) == 3 and e[2], what="status"
    )
    assert "Lock*\nfree" in after.all_text or "free" in after.all_text
    assert "completed" in after.all_text and "v4.4.0-ecr-ecs-fargate" in after.all_text


# A stand-in for the container health checks (docker/bot.Dockerfile, cloudformation/bot.yml):
# probe /healthz every PROBE_SECONDS; RETRIES failures in a row and the task is replaced. Slack
# stays away for OUTAGE_SECONDS, several such windows.
PROBE_SECONDS, RETRIES = 0.5, 3
OUTAGE_SECONDS = 10.0


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_slack_outage_longer_than_the_health_window_keeps_the_bot_alive(
    stack: LocalStack, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    """Liveness does not depend on Slack (issue 19): /healthz stays 200, /readyz says the
    socket is down, and the bot reconnects and answers once Slack is back."""
    assert OUTAGE_SECONDS > PROBE_SECONDS * RETRIES * 2
    bot = start_bot("socket")
    assert get(bot.url + "/healthz") == (
        200,
        {
            "status": "ok",
            "mode": "socket",
            "slack": "connected",
            "following": 0,
            "follower_alive": True,
            "seconds_since_follower_pass": None,
        },
    )
    assert get(bot.url + "/readyz")[0] == 200
    emulator.drop_socket_connections(refuse_for=OUTAGE_SECONDS)
    started = time.monotonic()
    health: list[tuple[int, object]] = []
    ready: list[int] = []
    while time.monotonic() - started < OUTAGE_SECONDS:
        code, body = get(bot.url + "/healthz")
        health.append((code, body["slack"]))
        ready.append(get(bot.url + "/readyz")[0])
        time.sleep(PROBE_SECONDS)
    assert all(code == 200 for code, _ in health), health
    assert (200, "disconnected") in health and 503 in ready
    assert bot.proc is not None and bot.proc.poll() is None
    emulator.wait_socket_connected(timeout=60)
    assert get(bot.url + "/readyz")[0] == 200
    assert get(bot.url + "/healthz")[1]["slack"] == "connected"
    delivery = emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS)
    assert delivery.ok, delivery
    emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="the status answer")


def test_an_outcome_no_bot_showed_is_shown_after_a_restart(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    """A bot killed after the poller closed the record but before its final chat.update."""
    from slack_sdk import WebClient

    from bot.deploy.engine import Engine
    from bot.deploy.records import Requester
    from bot.slack.progress import message_ref

    # Play the bot that died: post the message, start and follow the deploy, never show it.
    posted = WebClient(token=BOT_TOKEN, base_url=emulator.api_url).chat_postMessage(
        channel=DEPLOYS, text="🚀 Deploying v4.4.0-ecr-ecs-fargate"
    )
    engine = Engine(stack.settings)
    record = engine.deploy("v4.4.0", Requester(ALICE, "slack", "alice"))
    record = engine.annotate(record, message_ref(DEPLOYS, str(posted["ts"])))
    assert list(engine.watch(record))[-1].final
    engine.close()
    assert "Deployed" not in emulator.message(str(posted["ts"])).all_text

    start_bot("http")
    final = final_message(emulator, "Deployed v4.4.0-ecr-ecs-fargate")
    assert final.ts == posted["ts"] and "Completed in" in final.all_text
    assert "<@U0ALICE>" in final.all_text
