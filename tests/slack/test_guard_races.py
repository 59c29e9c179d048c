"""Issue 24 through Slack: a real bot, the Slack emulator and moto.

A freeze written while a deploy is being prepared (the bot posting its message: the
emulator's slowed chat.postMessage) refuses it when the lock is taken, at every Slack door;
an approval whose start meets a lock taken meanwhile is queued for its requester; a queued
approval whose premise changed deploys nothing at its turn and says so; a signed request
replayed within Slack's five minutes changes nothing twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Delivery, SlackEmulator
from bot.slack import guards
from bot.slack.messages import DEPLOY_ACTION
from tests.conftest import ALICE, BOB, CAROL, DEPLOYS, SIGNING_SECRET, LocalStack
from tests.helpers import wait_until
from tests.slack.conftest import BotFactory
from tests.slack.helpers import has_button, running_tag
from tests.slack.test_guards import APPROVAL, config, posted, said_to, slash

OPS = Requester("ops@laptop", "cli")
V44 = "v4.4.0-ecr-ecs-fargate"
# How long the bot's post may be held while the test writes its freeze or lock (the test lets
# it go on as soon as that is written, ``hold``): under slack_sdk's 30 s.
SLOW = 25


def replay(url: str, delivery: Delivery) -> int:
    """Send ``delivery``'s interactive payload again, signed as Slack signs it (v0, HMAC
    SHA-256 of ``v0:timestamp:body``: api.slack.com/authentication/verifying-requests-from-
    slack), with a timestamp inside the five minutes Slack allows: a replayed request."""
    body = urlencode({"payload": json.dumps(delivery.payload)})
    stamp = str(int(time.time()))
    signature = hmac.new(
        SIGNING_SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256
    ).hexdigest()
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={signature}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def hold(emulator: SlackEmulator, text: str = "🚀 ") -> Callable[[], None]:
    """Hold the bot's next chat.postMessage whose text has ``text`` (a deployment's message,
    "🚀 Deploying …", posted before the start; a queued turn's announcement) up to SLOW
    seconds; the function returned lets it go on. Only that post: another one that comes
    first under load (a terminal deploy's news) must not be the one held."""
    return emulator.slow("chat.postMessage", seconds=SLOW, text=text)


def _posting(emulator: SlackEmulator) -> None:
    """Wait until the bot's held chat.postMessage is under way (it planned, and is posting
    the deployment's message, before the start)."""
    wait_until(lambda: emulator.faults_left("chat.postMessage") == 0, 60, "the bot's post")


def _freeze(engine: Engine, why: str) -> str:
    frozen = engine.freeze(OPS, why)
    return f"was frozen by ops@laptop at {frozen.since:%H:%M:%S} UTC while this was being prepared"


def test_a_freeze_while_the_message_is_posted_refuses_the_deploy_at_every_door(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    """Slash command, a Deploy button, and a queued turn: each planned with no freeze, the
    freeze written while its message is being posted; the lock is not taken, nothing reaches
    ECS, the message and the person say why. Then a freeze after a start: Stop is offered."""
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(tmp_path, stack))
    engine = Engine(stack.settings)
    try:
        # The slash command.
        go_on = hold(emulator)
        slash(emulator, bot, "v4.4.0", user=ALICE)
        _posting(emulator)
        said = _freeze(engine, "incident 1")
        go_on()
        updates = aws.requests.count("ecs", "UpdateService")
        posted(emulator, f"{V44} was not deployed")
        told = said_to(emulator, ALICE, said)
        assert "Traceback" not in told.text
        assert engine.ledger.lock_item() is None and engine.history(1) == []
        engine.unfreeze(OPS)

        # A Deploy button (the list /deploy answers with).
        slash(emulator, bot, "", user=BOB)
        listing = emulator.wait_for(
            lambda: next(
                (e for e in emulator.ephemerals(user=BOB) if has_button(e, DEPLOY_ACTION)), None
            ),
            timeout=90,
            what="the list of images",
        )
        go_on = hold(emulator)
        emulator.click(listing, DEPLOY_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
        _posting(emulator)
        said = _freeze(engine, "incident 2")
        go_on()
        said_to(emulator, BOB, said)
        assert engine.ledger.lock_item() is None and engine.history(1) == []
        engine.unfreeze(OPS)

        # A queued turn: queued behind a slow CLI deploy; frozen as its turn is announced.
        simulator.slow_ticks = 100_000
        simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
        cli_deploy = engine.deploy("v4.5.0", OPS)
        slash(emulator, bot, "v4.4.0", user=ALICE)
        offer = said_to(emulator, ALICE, "Deploys are locked")
        emulator.click(offer, guards.QUEUE_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url)
        said_to(emulator, ALICE, "number 1 in the queue")
        go_on = hold(emulator, "The queued deploy of")
        simulator.slow_ticks = 2
        list(engine.watch(cli_deploy))
        _posting(emulator)  # the turn's announcement: planned, not started
        said = _freeze(engine, "incident 3")
        go_on()
        said_to(emulator, ALICE, said, timeout=120)
        assert engine.ledger.lock_item() is None and engine.queue() == []
        assert aws.requests.count("ecs", "UpdateService") == updates + 1  # the CLI's only
        assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"
        engine.unfreeze(OPS)

        # A freeze after the lock was taken: the deploy goes on; the freezer may Stop it.
        simulator.slow_ticks = 100_000
        simulator.mark_slow(V44)
        slash(emulator, bot, "v4.4.0", user=ALICE)
        posted(emulator, "Deploying v4.4.0")
        slash(emulator, bot, "freeze production incident 4", user=BOB)
        stop = said_to(emulator, BOB, "A deploy started before the freeze is still rolling out")
        assert has_button(stop, guards.STOP_ACTION)
        emulator.click(stop, guards.STOP_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
        posted(emulator, "stopped deploy")
    finally:
        simulator.slow_ticks = 2
        engine.close()


def test_an_approval_meeting_a_lock_is_queued_for_its_requester_and_its_premise_checked(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    """Bob asks for v4.4.0 (from v4.3.0); Carol approves; while the deployment's message is
    posted an operator's deploy of v4.5.0 takes the lock: Bob's deploy is queued for Bob
    (told, with Cancel), the request says so (never "deploying"). Replayed, Carol's click
    changes nothing. At its turn v4.5.0 runs, not the request's "from": nothing is deployed,
    Bob is told why with a button to ask again, the request says so. Asked again, approved,
    and frozen while its message is posted: refused at the approval's door too."""
    toml = config(tmp_path, stack, APPROVAL)
    bot = start_bot("http", DEPLOYBOT_CONFIG=toml)
    assert bot.events_url is not None
    engine = Engine(stack.settings)
    try:
        slash(emulator, bot, "v4.4.0", user=BOB)
        request = posted(emulator, "approval needed")
        simulator.slow_ticks = 100_000
        simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
        go_on = hold(emulator)
        click = emulator.click(
            request, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url
        )
        _posting(emulator)
        other = engine.deploy("v4.5.0", OPS)  # takes the lock meanwhile
        go_on()
        told = said_to(emulator, BOB, "number 1 in the queue")
        assert has_button(told, guards.CANCEL_QUEUED_ACTION)
        shown = emulator.wait_for(
            lambda: (
                emulator.message(request.ts)
                if "queued as number 1 behind" in emulator.message(request.ts).all_text
                else None
            ),
            timeout=90,
            what="the request saying it is queued",
        )
        assert other.id in shown.all_text and "deploying" not in shown.all_text.lower()
        assert not any(has_button(e, guards.QUEUE_ACTION) for e in emulator.ephemerals(CAROL))
        (queued,) = engine.queue()
        assert (queued.requester.who, queued.tag, queued.approved_by) == (BOB, V44, (CAROL,))

        # The same signed request again: counted once, queued once.
        assert click.ok
        assert replay(bot.events_url, click) == 200
        said_to(emulator, CAROL, "was approved")
        assert [q.id for q in engine.queue()] == [queued.id]

        # Its turn, after v4.5.0 completed: the premise (v4.3.0 runs) no longer holds.
        simulator.slow_ticks = 2
        list(engine.watch(other))
        refused = said_to(emulator, BOB, "no longer holds", timeout=120)
        assert "v4.5.0-ecr-ecs-fargate" in refused.all_text
        assert has_button(refused, DEPLOY_ACTION)
        emulator.wait_for(
            lambda: "Not deployed at its turn" in emulator.message(request.ts).all_text,
            timeout=60,
            what="the request saying it was not deployed",
        )
        assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"

        # Bob asks again from that button; Carol approves; frozen while it is being posted.
        emulator.click(refused, DEPLOY_ACTION, user=BOB, channel=DEPLOYS, url=bot.events_url)
        again = emulator.wait_for(
            lambda: next(
                (
                    m
                    for m in emulator.messages(DEPLOYS)
                    if "approval needed" in m.all_text and m.ts != request.ts
                ),
                None,
            ),
            timeout=90,
            what="a new approval request",
        )
        go_on = hold(emulator)
        emulator.click(
            again, guards.APPROVE_ACTION, user=CAROL, channel=DEPLOYS, url=bot.events_url
        )
        _posting(emulator)
        said = _freeze(engine, "incident 5")
        go_on()
        said_to(emulator, CAROL, said)
        assert running_tag(stack.settings) == "v4.5.0-ecr-ecs-fargate"
        assert engine.ledger.lock_item() is None
    finally:
        simulator.slow_ticks = 2
        engine.close()


def test_a_double_click_on_deploy_when_free_queues_once(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=config(tmp_path, stack, "queue_limit = 1"))
    assert bot.events_url is not None
    engine = Engine(stack.settings)
    try:
        simulator.slow_ticks = 100_000
        simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
        holder = engine.deploy("v4.5.0", OPS)
        slash(emulator, bot, "v4.4.0", user=ALICE)
        offer = said_to(emulator, ALICE, "Deploys are locked")
        first = emulator.click(
            offer, guards.QUEUE_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url
        )
        said_to(emulator, ALICE, "number 1 in the queue")
        emulator.click(offer, guards.QUEUE_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url)
        said_to(emulator, ALICE, "Already queued as number 1")
        assert replay(bot.events_url, first) == 200  # the signed request, replayed
        wait_until(
            lambda: sum("Already queued" in e.all_text for e in emulator.ephemerals(ALICE)) == 2,
            60,
            "the replay answered",
        )
        slash(emulator, bot, "v4.3.0", user=ALICE)
        offer = said_to(emulator, ALICE, "yours would be second")
        emulator.click(offer, guards.QUEUE_ACTION, user=ALICE, channel=DEPLOYS, url=bot.events_url)
        said_to(emulator, ALICE, "queue_limit = 1")
        assert len(engine.queue()) == 1 and engine.guards.queued() == 1
        _ = holder
    finally:
        simulator.slow_ticks = 2
        engine.close()
