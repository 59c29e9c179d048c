"""Two and three bot replicas on one table (issue 14): each deployment is followed by one of
them, whatever replica Slack sends a request to; the CI notice's Deploy button is claimed once;
a replica killed mid-rollout is replaced by another within one lease, on the same message.

Every bot is a real ``deploybot serve`` process on one moto and one Slack emulator. HTTP
replicas sit behind one Request URL (the emulator sends each request to the next replica in
turn); Socket Mode replicas each open their own connection and the emulator spreads envelopes
over every open connection, as Slack does. Slack calls are counted in the emulator's records.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from tests.conftest import ALICE, BOB, BOT_TOKEN, CAROL, DEPLOYS, LocalStack
from tests.reliability.conftest import report
from tests.slack.conftest import BotFactory, BotProcess, start_bots
from tests.slack.helpers import bot_messages, running_tag

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
    repeated_replies: int  # reply lines (ECS events, stopped tasks) said twice

    @property
    def total(self) -> int:
        return self.posts + self.updates + self.replies


def calls_on(emulator: SlackEmulator, msg: Message) -> SlackCalls:
    msg = emulator.message(msg.ts)
    updates = [c for c in emulator.calls_of("chat.update", ok=True) if c.params.get("ts") == msg.ts]
    contents = [(r.text, repr(r.blocks)) for r in msg.revisions]
    repeated = sum(a == b for a, b in itertools.pairwise(contents))
    replies = [r.text for r in msg.replies]
    # A reply says new ECS events and stopped tasks, a line each: a line said twice is a
    # second follower's (their replies may batch the lines differently).
    lines = [line for text in replies for line in text.splitlines()]
    return SlackCalls(
        posts=1,
        updates=len(updates),
        repeated_updates=repeated,
        replies=len(replies),
        repeated_replies=len(lines) - len(set(lines)),
    )


def final_message(emulator: SlackEmulator, timeout: float = 60) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if FINAL in m.all_text), None),
        timeout=timeout,
        what="the deployment's final message",
    )


def replicas(start_bot: BotFactory, mode: str, n: int, **env: str) -> list[BotProcess]:
    return start_bots(start_bot, n, mode, LOCK_LEASE_SECONDS=str(LEASE), **env)


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


@pytest.mark.parametrize("n", [2, 3])
def test_socket_replicas_share_envelopes_and_follow_each_deployment_once(
    n: int,
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    simulator.step_seconds = 0.4
    bots = replicas(start_bot, "socket", n)
    emulator.wait_socket_connected(count=n)
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS)
    msg = final_message(emulator)
    # Status asked of every connection: each answers (Slack sends an envelope to one of them).
    for _ in range(n):
        assert emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS).ok
    emulator.wait_for(lambda: len(emulator.ephemerals(user=CAROL)) == n, what="n answers")
    assert len({d.to for d in emulator.deliveries}) == n  # spread over every connection
    time.sleep(2 * LEASE)
    calls = calls_on(emulator, msg)
    report(f"{n} Socket Mode replicas, one deployment", **vars(calls))
    assert len(bot_messages(emulator)) == 1
    assert calls.repeated_updates == 0, calls
    assert calls.repeated_replies == 0, calls
    assert aws.requests.count("ecs", "UpdateService") == 1
    assert all(b.proc is not None and b.proc.poll() is None for b in bots)


def test_follower_killed_mid_rollout_is_replaced_within_a_lease(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Issue 14's scenario: deploy through replica A, start replica B (its resume must leave
    A's deployment alone), kill A mid-rollout; B finishes A's message, and /deploy-status
    answered by either of the replicas then running says the same."""
    simulator.step_seconds = 0.4
    a = start_bot("socket", LOCK_LEASE_SECONDS=str(LEASE))
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS)
    msg = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if m.updates >= 1), None),
        what="the progress message, updated once",
    )
    simulator.stop()  # ECS holds the rollout mid-way while B starts and A is killed
    b = start_bot("socket", LOCK_LEASE_SECONDS=str(LEASE))
    # B has resumed at start and made its first reconcile passes: A still follows alone.
    time.sleep(LEASE)
    before = calls_on(emulator, msg)
    assert before.repeated_updates == 0 and before.repeated_replies == 0, before
    assert FINAL not in emulator.message(msg.ts).all_text, "the rollout ended before the kill"
    a.kill()
    simulator.start()
    killed_at = time.time()
    final = final_message(emulator, timeout=60)
    assert final.ts == msg.ts  # the same message, finished by B
    first_after = min(
        c.at
        for c in emulator.calls
        if c.at > killed_at and c.method in ("chat.update", "chat.postMessage")
    )
    # A third replica starts meanwhile (its resume and passes must leave the message alone
    # too), for /deploy-status below.
    with ThreadPoolExecutor(1) as pool:
        third = pool.submit(start_bot, "socket", LOCK_LEASE_SECONDS=str(LEASE))
        time.sleep(2 * LEASE)
        third.result()
    calls = calls_on(emulator, msg)
    report(
        "follower killed mid-rollout, 2 Socket Mode replicas",
        takeover_s=round(first_after - killed_at, 1),
        lease_s=LEASE,
        **vars(calls),
    )
    assert len(bot_messages(emulator)) == 1
    assert calls.repeated_updates == 0, calls
    assert calls.repeated_replies == 0, calls
    # "Within about one lease": a lease, plus a reconcile pass and a poll, generous under load.
    assert first_after - killed_at < 4 * LEASE
    assert aws.requests.count("ecs", "UpdateService") == 1

    # /deploy-status from B and from the replica started since: the same truth.
    emulator.wait_socket_connected(count=2)
    sent = [emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS) for _ in "ab"]
    assert len({d.to for d in sent}) == 2 and all(d.ok for d in sent)
    answers = emulator.wait_for(
        lambda: e if len(e := emulator.ephemerals(user=CAROL)) == 2 else None, what="answers"
    )
    for answer in answers:
        assert "v4.4.0-ecr-ecs-fargate" in answer.all_text and "completed" in answer.all_text
        assert "free" in answer.all_text
    assert b.proc is not None and b.proc.poll() is None
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


def notify(emulator: SlackEmulator, tag: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(SLACK_API_URL=emulator.api_url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_CHANNEL=DEPLOYS)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "notify", "image-pushed", "--tag", tag],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_ci_notice_deploy_is_claimed_once_across_replicas(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Two people click the notice's Deploy at once, each click reaching another replica: one
    deploys, the other is told it was already clicked (a set in each process's memory let
    both through to the lock, and after the rollout a second deployment)."""
    simulator.step_seconds = 0.3
    bots = replicas(start_bot, "http", 2)
    notify(emulator, "v4.5.0-ecr-ecs-fargate")
    (notice,) = emulator.messages(DEPLOYS)
    with ThreadPoolExecutor(2) as pool:
        clicks = list(
            pool.map(
                lambda bw: emulator.click(
                    notice, "deploy_tag", user=bw[1], channel=DEPLOYS, url=bw[0].events_url
                ),
                zip(bots, (ALICE, BOB), strict=True),
            )
        )
    assert all(c.ok for c in clicks), clicks
    emulator.wait_for(
        lambda: any("Deployed v4.5.0" in m.all_text for m in bot_messages(emulator)),
        timeout=60,
        what="the deployment's final message",
    )
    refusals = emulator.wait_for(
        lambda: [e for e in emulator.ephemerals() if "already clicked Deploy" in e.text],
        what="the refusal of the other click",
    )
    assert len(refusals) == 1
    assert aws.requests.count("ecs", "UpdateService") == 1
    assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"


def test_socket_refresh_of_one_replica_drops_no_command(
    stack: LocalStack, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    """Slack asks one connection to refresh (``disconnect``, reason ``refresh_requested``) and
    is slow to accept the new one: the commands of that window go to the other replica's
    connection, none is lost, and the refreshed replica is connected again after it."""
    a = start_bot("socket")
    opened_a = emulator.sockets_opened
    start_bot("socket")
    emulator.wait_socket_connected(count=2)
    emulator.delay_socket_accept(2.0)
    assert emulator.refresh_sockets(close_after=1.0, only=opened_a) == 1
    sent = [
        emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS) for _ in range(6)
    ]
    assert all(d.ok for d in sent), [d.error for d in sent]
    assert f"socket#{opened_a}" not in {d.to for d in sent}
    emulator.wait_for(lambda: len(emulator.ephemerals(user=CAROL)) == 6, what="6 answers")
    # A reconnected by itself (a new connection), and gets envelopes again.
    emulator.wait_for(
        lambda: emulator.sockets_opened > opened_a + 1 and emulator.socket_count == 2,
        timeout=30,
        what="replica A's new connection",
    )
    after = [
        emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS) for _ in "ab"
    ]
    assert all(d.ok for d in after) and len({d.to for d in after}) == 2
    assert a.proc is not None and a.proc.poll() is None


def test_socket_disconnect_warning_with_one_connection_keeps_serving(
    stack: LocalStack, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    """One replica, told ``disconnect`` (reason ``warning``): the commands Slack sends to the
    warned connection before it closes are answered, and the bot opens a new one."""
    start_bot("socket")
    opened = emulator.sockets_opened
    assert emulator.refresh_sockets(reason="warning", close_after=5.0) == 1
    emulator.wait_for(
        lambda: emulator.sockets_opened > opened and emulator.socket_connected,
        timeout=30,
        what="the bot's new connection",
    )
    d = emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS)
    assert d.ok and d.to == f"socket#{opened + 1}", d
    emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="the answer")
