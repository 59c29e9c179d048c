"""Two and three bot replicas on one table (issue 14): each deployment is followed by one of
them, whatever replica Slack sends a request to; the CI notice's Deploy button is claimed once;
a replica killed mid-rollout is replaced by another within one lease, on the same message.

Every bot is a real ``deploybot serve`` process on one moto and one Slack emulator. HTTP
replicas sit behind one Request URL (the emulator sends each request to the next replica in
turn); Socket Mode replicas each open their own connection and the emulator spreads envelopes
over every open connection, as Slack does. Slack calls are counted in the emulator's records.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from bot.deploy.engine import Engine
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from tests.conftest import ALICE, BOB, CAROL, DEPLOYS, LocalStack
from tests.reliability.conftest import report
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages

pytestmark = pytest.mark.reliability

FINAL = "✅ Deployed"
LEASE = 3.0  # LOCK_LEASE_SECONDS of these bots: a takeover waits one lease


@dataclass(frozen=True)
class SlackCalls:
    """What the bots did to one deployment's message."""

    posts: int  # chat.postMessage of the message itself
    updates: int  # chat.update of it
    repeated_updates: int  # updates that left it as it was (a second follower's)
    replies: int  # thread replies
    repeated_replies: int  # replies saying what an earlier one said

    @property
    def total(self) -> int:
        return self.posts + self.updates + self.replies


def calls_on(emulator: SlackEmulator, msg: Message) -> SlackCalls:
    msg = emulator.message(msg.ts)
    updates = [
        c for c in emulator.calls_of("chat.update", ok=True) if c.params.get("ts") == msg.ts
    ]
    contents = [(r.text, repr(r.blocks)) for r in msg.revisions]
    repeated = sum(a == b for a, b in zip(contents, contents[1:], strict=False))
    replies = [r.text for r in msg.replies]
    return SlackCalls(
        posts=1,
        updates=len(updates),
        repeated_updates=repeated,
        replies=len(replies),
        repeated_replies=len(replies) - len(set(replies)),
    )


def final_message(emulator: SlackEmulator, timeout: float = 60) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if FINAL in m.all_text), None),
        timeout=timeout,
        what="the deployment's final message",
    )


def replicas(start_bot: BotFactory, mode: str, n: int, **env: str) -> list[BotProcess]:
    return [start_bot(mode, LOCK_LEASE_SECONDS=str(LEASE), **env) for _ in range(n)]


@pytest.mark.parametrize("n", [2, 3])
def test_http_replicas_behind_one_url_follow_each_deployment_once(
    n: int,
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    simulator.step_seconds = 0.4  # a rollout of about 3 s: several passes of every replica
    bots = replicas(start_bot, "http", n)
    emulator.request_urls = [b.events_url or "" for b in bots]
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS)
    msg = final_message(emulator)
    # Every replica makes a few passes after the end: none may touch the message again.
    time.sleep(2 * LEASE)
    calls = calls_on(emulator, msg)
    report(f"{n} HTTP replicas, one deployment", **vars(calls))
    assert len(bot_messages(emulator)) == 1
    assert calls.repeated_updates == 0, calls
    assert calls.repeated_replies == 0, calls
    assert aws.requests.count("ecs", "UpdateService") == 1
