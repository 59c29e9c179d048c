"""The bot under contention and faults: ten /deploy at once, an AWS throttling storm with a
burst of Slack 429s, and the bot killed (SIGKILL) at random points of rollouts."""

from __future__ import annotations

import random
import threading
import time

import pytest

from bot.deploy.engine import Engine
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.slack.progress import parse_ref
from tests.conftest import ALICE, BOB, DEPLOYS, LocalStack
from tests.helpers import wait_until
from tests.reliability.conftest import report
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages

pytestmark = pytest.mark.reliability

FINAL = "✅ Deployed"


def test_ten_simultaneous_deploys_one_deployment_nine_refusals(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http")
    aws.requests.clear()
    gate = threading.Barrier(10)
    users = [ALICE, BOB] * 5

    def deploy(user: str, tag: str) -> None:
        gate.wait()
        emulator.slash_command("/deploy", tag, user=user, channel=DEPLOYS, url=bot.events_url)

    threads = [
        threading.Thread(target=deploy, args=(user, ("v4.4.0", "v4.5.0")[i % 2]))
        for i, user in enumerate(users)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refusals = emulator.wait_for(
        lambda: (e := emulator.ephemerals()) and len(e) >= 9 and e,
        timeout=30,  # nine refusals, each a DynamoDB transaction: slower on a loaded machine
        what="nine refusals",
    )
    final = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if FINAL in m.all_text), None),
        timeout=30,
        what="the deployment's final message",
    )
    # The holder is the one the message names (a mention); refusals name them by display name.
    holder = "alice" if f"<@{ALICE}>" in final.all_text else "bob"
    named = [r for r in refusals if "Deploys are locked" in r.all_text and holder in r.all_text]
    report(
        "ten simultaneous /deploy",
        deployments=aws.requests.count("ecs", "UpdateService"),
        refusals=len(refusals),
        **{"refusals naming the holder": len(named)},
    )
    assert len(refusals) == 9
    assert len(named) == 9
    assert aws.requests.count("ecs", "UpdateService") == 1
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 1
    assert len(bot_messages(emulator)) == 1


def test_throttling_storm_and_slack_429s_during_a_rollout(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    simulator.step_seconds = 0.5
    bot = start_bot("http")
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(lambda: bot_messages(emulator), what="the progress message")
    # Every DescribeServices throttled for 3 s; the next two chat.update calls (whenever the
    # poller sees a change again, the final one at the latest) answered 429.
    aws.faults.throttle("ecs", "DescribeServices", seconds=3)
    emulator.fail("chat.update", status=429, retry_after=1, times=2)
    final = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if FINAL in m.all_text), None),
        timeout=60,
        what="the final message",
    )
    throttled = aws.requests.count("ecs", "DescribeServices", throttled=True)
    rejected = len(emulator.calls_of("chat.update", ok=False))
    report(
        "throttling storm",
        **{"DescribeServices throttled": throttled, "chat.update 429s": rejected},
        **{"messages": len(bot_messages(emulator)), "final": "Completed in" in final.all_text},
    )
    assert "Deployed v4.4.0-ecr-ecs-fargate" in final.all_text
    assert "Completed in" in final.all_text
    assert throttled > 0 and rejected > 0
    assert len(bot_messages(emulator)) == 1
    assert Engine(stack.settings).ledger.current_lock() is None


KILLS = 10


def test_bot_killed_at_random_points_of_rollouts(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """Each round: /deploy, SIGKILL at a random delay after UpdateService reached AWS, restart,
    then every deployment must be closed, its message final, and the lock free.

    The message is posted before anything changes and the record is written with its place,
    so no message can be orphaned (``orphaned messages`` must be 0; it was the one window
    left before). A deployment is recorded before UpdateService, so a lock nobody knows of,
    ``orphaned locks``, should stay 0. A recorded message left unfinished is a failure
    (``unfinished messages``).
    """
    simulator.step_seconds = 0.4  # a rollout of about 3 s
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    engine = Engine(stack.settings)
    bot = start_bot("http")
    orphaned_locks = killed_before_final = 0
    unfinished: set[str] = set()
    delays = []
    for round_ in range(KILLS):
        tag = ("v4.4.0", "v4.5.0")[round_ % 2]
        updates = aws.requests.count("ecs", "UpdateService")
        emulator.slash_command("/deploy", tag, user=ALICE, channel=DEPLOYS, url=bot.events_url)
        wait_until(
            lambda n=updates: aws.requests.count("ecs", "UpdateService") > n, 10, "UpdateService"
        )
        delay = rng.uniform(0, 3.0)
        delays.append(round(delay, 2))
        time.sleep(delay)
        bot.kill()
        killed_before_final += sum(FINAL in m.all_text for m in bot_messages(emulator)) <= round_
        bot.start(emulator)

        def settled() -> bool:
            records = engine.history(50)
            return len(records) > 0 and not any(r.open for r in records)

        try:
            wait_until(settled, 30, "every deployment closed")
        except TimeoutError:
            lock = engine.ledger.current_lock()
            known = {r.id for r in engine.history(50)}
            if lock is None or lock.deployment_id in known:
                raise
            orphaned_locks += 1  # the second window: break the lock, wait out the rollout
            engine.unlock()
            wait_until(simulator.idle, 30, "the orphan rollout's end")
            continue
        refs = {where[1] for r in engine.history(50) if (where := parse_ref(r.message_ref))}

        def finished(refs: set[str] = refs - unfinished) -> bool:
            return all(FINAL in emulator.message(ts).all_text for ts in refs)

        try:
            wait_until(finished, 10, "every recorded message final")
        except TimeoutError:
            unfinished |= {ts for ts in refs if FINAL not in emulator.message(ts).all_text}
        assert engine.ledger.current_lock() is None
    records = engine.history(50)
    refs = {where[1] for r in records if (where := parse_ref(r.message_ref))}
    orphans = [m for m in bot_messages(emulator) if m.ts not in refs]
    report(
        "bot killed mid-rollout",
        kills=KILLS,
        **{"killed before the message was final": killed_before_final},
        **{"deployments closed": sum(not r.open for r in records), "seed": seed},
        **{"unfinished messages": len(unfinished), "orphaned messages": len(orphans)},
        **{"orphaned locks": orphaned_locks, "delays s": "/".join(map(str, delays))},
    )
    engine.close()
    assert orphans == [], f"{len(orphans)} messages of no deployment"
    assert all(parse_ref(r.message_ref) for r in records), "a deployment without its message"
    assert sum(not r.open for r in records) == KILLS - orphaned_locks
    assert not unfinished, f"{len(unfinished)} messages never reached their final state"
