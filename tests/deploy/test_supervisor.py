"""The supervisor with no door subscribed (a process without Slack): it adopts what nobody
follows and takes the queue's turns, and says so in typed events; against moto's server and
the rollout simulator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from bot.deploy.engine import Engine
from bot.deploy.events import (
    Adopted,
    DeploymentStarted,
    Event,
    EventBus,
    LockFree,
    LockReleased,
    Looked,
    RolloutSnapshot,
    Settled,
    TurnRefused,
    TurnStarted,
    TurnStarting,
)
from bot.deploy.guards import QueueMode
from bot.deploy.rollout import Outcome
from bot.deploy.supervisor import Supervisor
from bot.local.simulator import RolloutSimulator
from bot.rules import Rule, RuleRefused
from tests.conftest import LocalStack
from tests.deploy.test_guards import (
    ANA,
    BEN,
    DAN,
    OPERATOR,
    _slow,
    engine_for,
    slack,
    slash,
    target_of,
)

KINDS: tuple[type[Event], ...] = (
    Adopted,
    DeploymentStarted,
    LockFree,
    LockReleased,
    Looked,
    RolloutSnapshot,
    Settled,
    TurnRefused,
    TurnStarted,
    TurnStarting,
)


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.close()


def heard(bus: EventBus) -> list[Event]:
    """Every event on ``bus`` from now on, in order (from any thread)."""
    seen: list[Event] = []
    for kind in KINDS:
        bus.subscribe(kind, seen.append)
    return seen


def of(kind: type[Event], events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def test_a_process_without_slack_adopts_a_deployment_nobody_follows(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    target = target_of(stack)
    starter = engine_for(stack, target)  # `deploybot deploy --no-wait`
    headless = engine_for(stack, target)  # a bot whose Slack is down, say
    engines += [starter, headless]
    record = starter.start(starter.plan_deploy("v4.4.0", OPERATOR), follow=False)
    supervisor = Supervisor(headless)
    events = heard(supervisor.events)

    asyncio.run(supervisor.pass_once())

    adopted = of(Adopted, events)
    assert [e.record.id for e in adopted] == [record.id], events  # type: ignore[attr-defined]
    assert record.id in headless.tracking()
    assert list(headless.watch(record))[-1].outcome == Outcome.COMPLETED
    (settled,) = of(Settled, events)
    assert settled.record.id == record.id  # type: ignore[attr-defined]
    assert [e.record.id for e in of(LockReleased, events)] == [record.id]  # type: ignore[attr-defined]
    # Followed here now: the next pass adopts nothing more.
    asyncio.run(supervisor.pass_once())
    assert len(of(Adopted, events)) == 1


def test_a_process_without_slack_takes_the_queues_turns(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    target = target_of(stack)
    engine = engine_for(stack, target)
    engines.append(engine)
    _slow(simulator)
    running = engine.deploy("v4.5.0", OPERATOR)
    frozen_out, _ = engine.enqueue(slack(BEN), tag="v4.3.0", via=slash())
    queued, _ = engine.enqueue(slack(ANA), tag="v4.4.0", reason="queued", via=slash())
    teller, _ = engine.enqueue(slack(DAN), mode=QueueMode.TELL, via=slash())
    supervisor = Supervisor(engine)
    events = heard(supervisor.events)

    asyncio.run(supervisor.take_turns())  # the lock is held: nobody's turn
    assert not of(LockFree, events) and not of(TurnStarting, events)

    engine.abort(OPERATOR)
    list(engine.watch(running))
    assert [e.record.id for e in of(LockReleased, events)] == [running.id]  # type: ignore[attr-defined]
    engine.freeze(OPERATOR, "hold on")
    asyncio.run(supervisor.take_turns())
    assert [e.item.id for e in of(LockFree, events)] == [teller.id]  # type: ignore[attr-defined]
    (refused,) = of(TurnRefused, events)
    assert isinstance(refused, TurnRefused) and refused.item.id == frozen_out.id
    assert isinstance(refused.refused, RuleRefused) and refused.refused.rule is Rule.FREEZE

    engine.unfreeze(OPERATOR)
    asyncio.run(supervisor.take_turns())
    (starting,) = of(TurnStarting, events)
    (started,) = of(TurnStarted, events)
    assert isinstance(starting, TurnStarting) and starting.item.id == queued.id
    assert isinstance(started, TurnStarted) and started.record.who == ANA
    assert [e.record.id for e in of(DeploymentStarted, events)] == [started.record.id]  # type: ignore[attr-defined]
    assert list(engine.watch(started.record))[-1].outcome == Outcome.COMPLETED
    assert engine.queue() == []


def test_a_subscriber_without_slack_hears_a_rollouts_snapshots_and_its_outcome(
    stack: LocalStack, simulator: RolloutSimulator, engines: list[Engine]
) -> None:
    """The snapshots a watcher gets are on the bus too, each once and in order (the same
    polls: no second DescribeServices), then Settled: a terminal, the requester's DM or a
    dashboard need no Slack message to hear how a rollout went."""
    engine = engine_for(stack, target_of(stack))
    engines.append(engine)
    supervisor = Supervisor(engine)
    snapshots: list[RolloutSnapshot] = []
    settled: list[Settled] = []
    ended = threading.Event()

    def snapshot(event: RolloutSnapshot) -> None:  # on the follower's thread
        snapshots.append(event)
        if event.snapshot.final:
            ended.set()

    supervisor.events.subscribe(RolloutSnapshot, snapshot)
    supervisor.events.subscribe(Settled, settled.append)

    record = supervisor.start(engine.plan_deploy("v4.4.0", OPERATOR))
    watched = list(engine.watch(record))
    assert ended.wait(30), f"no final snapshot on the bus: {snapshots}"

    assert len(watched) >= 2 and watched[-1].outcome == Outcome.COMPLETED, watched
    assert [e.snapshot for e in snapshots] == watched  # the watch's, each once, in order
    assert {e.record.id for e in snapshots} == {record.id}
    assert snapshots[-1].record.outcome == Outcome.COMPLETED  # the closed record with it
    (done,) = settled
    assert done.record.id == record.id and done.final.outcome == Outcome.COMPLETED
    assert settled[0].final.ended_at == watched[-1].ended_at


def test_a_failing_subscriber_stops_neither_the_others_nor_the_publisher() -> None:
    bus = EventBus()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("a renderer's bug")

    async def slow(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    bus.subscribe(Looked, broken)
    bus.subscribe(Looked, seen.append)
    bus.subscribe(Looked, slow)
    looked = Looked(())
    bus.publish(looked)  # an async subscriber cannot run from a thread: logged, skipped
    assert seen == [looked]
    asyncio.run(bus.deliver(looked))
    assert seen == [looked, looked, looked]
    unsubscribe = bus.subscribe(Settled, seen.append)
    unsubscribe()
    assert not bus.subscribed(Settled)
