"""Every loop of one target's deployments: start, follow, adopt what nobody follows, the
queue's turns; what happens goes out as events (bot/deploy/events.py) that doors render.

A door plans (the rules decide, once) and starts through ``Supervisor.start``; from there the
engine's poller follows the rollout in its thread, holding the follower lease in the table and
renewing it as it polls, says what each poll saw that a reader would see change
(RolloutSnapshot: the snapshots ``Engine.watch`` gives, from the same polls), and closes the
record and releases the lock at the outcome (Settled, LockReleased on the bus). What no process
follows any more (a ``--no-wait`` deploy, a process that died, one that ended before this one
started) is found by ``adopt_forever``'s passes and followed here (Adopted); each pass also
says what it saw (Looked: the records, what terminals did, ECS deployments no record
explains), for the doors to show. ``queue_forever`` gives each queued deploy its turn once the
lock is free (re-checked as a new request through the queue's door): at once when this process
released the lock, else every few polls.

Nothing here needs Slack: a process with no door subscribed (or one whose Slack is down)
follows, adopts and takes turns all the same. A door that must show a start before it happens
(Slack posts the deployment's message first) sets ``starter``; without one a turn starts
directly. From taking a turn off the queue to its start no other start of this process goes
(``starting``, shared with the doors' starts): a direct deploy planned meanwhile, when the
queue looked empty, finds the lock held and is offered the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from bot.deploy.engine import Engine
from bot.deploy.events import (
    Adopted,
    BreakGlassUsed,
    DeploymentStarted,
    LockFree,
    LockReleased,
    Looked,
    RolloutSnapshot,
    TurnRefused,
    TurnStarted,
    TurnStarting,
)
from bot.deploy.records import DeploymentRecord, News, Plan, QueuedItem, Via
from bot.deploy.rollout import Snapshot
from bot.errors import DeployError, LockHeld

log = logging.getLogger("deploybot.supervisor")

Replan = Callable[[QueuedItem, Via], Plan]
# A door's way to start a queued deploy (shown first); None when it did not start (the door
# said why to its requester).
Starter = Callable[[QueuedItem, Plan], Awaitable[DeploymentRecord | None]]
MAX_RETRY_SECONDS = 60.0


class Supervisor:
    """The loops of ``engine``'s target; ``replan`` re-checks a queued deploy at its turn
    (through the fleet, which knows what one engine cannot: where an image completed)."""

    def __init__(
        self,
        engine: Engine,
        *,
        replan: Replan | None = None,
        starting: asyncio.Lock | None = None,
    ) -> None:
        self.engine = engine
        self.events = engine.events
        self.replan = replan
        self.starting = starting or asyncio.Lock()
        self.starter: Starter | None = None
        # Whether a door needs ECS's state at each pass even when no record does (it shows a
        # deployment another process follows): asked before each pass.
        self.wants_state: Callable[[], bool] = lambda: False
        # When the passes began: what ended before is history, not news.
        self.since: datetime | None = None
        # Each rollout followed here: the snapshots its watchers get, on the bus too (from
        # the follower's thread, once each: no second DescribeServices).
        engine.poller.on_snapshot = self._snapshot

    def _snapshot(self, record: DeploymentRecord, snapshot: Snapshot) -> None:
        self.events.publish(RolloutSnapshot(record, snapshot))

    # --- starting ---------------------------------------------------------------------------
    def start(self, plan: Plan, message_ref: str = "", *, follow: bool = True) -> DeploymentRecord:
        """Start ``plan`` (the engine: lock, record, ECS), followed here unless ``follow`` is
        False; DeploymentStarted, and BreakGlassUsed when a rule was bypassed (recorded in the
        table for the target's channel: a terminal has no Slack token). From any thread."""
        record = self.engine.start(plan, message_ref, follow=follow)
        self.events.publish(DeploymentStarted(record))
        if record.break_glass:
            self._break_glass(record)
        return record

    def _break_glass(self, record: DeploymentRecord) -> None:
        what = "; ".join(record.bypassed) or "the rules"
        news = News(
            kind="break-glass",
            who=record.who_display or record.who,
            at=self.engine.clock.now(),
            aws_identity=record.who_arn,
            reason=record.break_glass,
            deployment_id=record.id,
            tag=record.tag,
            detail=f"{record.kind} of {record.tag}, bypassing {what}",
        )
        unrecorded = ""
        try:
            self.engine.tell_channel(news)
        except DeployError as exc:  # the deploy goes on: its history has the break-glass
            unrecorded = exc.message
        self.events.publish(BreakGlassUsed(record, news, unrecorded))

    # --- adopting ---------------------------------------------------------------------------
    async def resume(self) -> list[str]:
        """Follow every deployment a previous process left open and nobody follows (Adopted),
        then say what the recent history shows (Looked). Needs AWS (raises DeployError
        without it), never a door."""
        records = await asyncio.to_thread(self.engine.open_deployments)
        resumed = []
        for record in records:
            # False when another replica took it meanwhile.
            if await asyncio.to_thread(self.engine.follow, record):
                await self.events.deliver(Adopted(record))
                resumed.append(record.id)
        history = await asyncio.to_thread(self.engine.history, 20, leave_followed=True)
        await self.events.deliver(Looked(tuple(history), at=self.engine.clock.now()))
        return resumed

    async def resume_until_done(self) -> None:
        """``resume``, retried with backoff while AWS cannot be read."""
        delay = 1.0
        extra = {"target": self.engine.target.name}
        while True:
            try:
                resumed = await self.resume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "could not resume open deployments (%s); retrying in %.0f s",
                    exc,
                    delay,
                    extra=extra,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            if resumed:
                log.info("resumed %d open deployments", len(resumed), extra=extra)
            return

    async def adopt_forever(self, interval: float, outside_every: float = 60.0) -> None:
        """Every ``interval``: one pass (``pass_once``); every ``outside_every``, it also looks
        for ECS deployments started outside deploybot since the passes began. Never stops for
        AWS or a door's trouble."""
        since = self.since = self.engine.clock.now()
        next_outside = self.engine.clock.monotonic() + outside_every
        while True:
            due = self.engine.clock.monotonic() >= next_outside
            if due:
                next_outside = self.engine.clock.monotonic() + outside_every
            try:
                await self.pass_once(outside_since=since if due else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reconcile pass failed: %s", exc)
            await asyncio.sleep(interval)

    async def pass_once(self, outside_since: datetime | None = None) -> None:
        """Reconcile the open records with ECS (one Query of the records and the news, and a
        DescribeServices only when a record needs judging, a door wants ECS's state, or
        ``outside_since`` asks for deployments started outside deploybot); say what was seen
        (Looked); follow the open deployments nobody follows (Adopted)."""
        looking = self.events.subscribed(Looked)
        describe = looking and self.wants_state()
        outside = outside_since if looking else None
        seen = await asyncio.to_thread(
            lambda: self.engine.look_around(20, describe=describe, outside_since=outside)
        )
        await self.events.deliver(
            Looked(
                tuple(seen.records),
                tuple(seen.news),
                seen.state,
                seen.outside,
                at=self.engine.clock.now(),
            )
        )
        for record in self._unfollowed(seen.records):
            if await asyncio.to_thread(self.engine.follow, record):
                await self.events.deliver(Adopted(record))

    def _unfollowed(self, records: list[DeploymentRecord]) -> list[DeploymentRecord]:
        """Open records nobody follows: no lease (a ``--no-wait`` deploy), or one its holder
        stopped renewing (it died). A record is written with its follower's lease, so a
        deployment a moment old is never taken from the process that started it."""
        tracking = set(self.engine.tracking())
        return [
            record
            for record in records
            if record.open
            and record.id not in tracking
            and not self.engine.followed_elsewhere(record)
        ]

    # --- the queue's turns ------------------------------------------------------------------
    async def take_turns(self) -> None:
        """One pass: the people waiting for a free lock (LockFree), then the first queued
        deploy, re-checked now: TurnStarting, started, TurnStarted; or TurnRefused."""
        engine = self.engine
        for item in await asyncio.to_thread(engine.lock_free_waiters):
            await self.events.deliver(LockFree(item))
        async with self.starting:
            turn = await asyncio.to_thread(engine.next_turn, self.replan)
            if turn is None:
                return
            if turn.plan is not None:
                await self._start_turn(turn.item, turn.plan)
                return
        await self.events.deliver(TurnRefused(turn.item, turn.refused))

    async def _start_turn(self, item: QueuedItem, planned: Plan) -> None:
        """Say it starts, then start it (the caller holds ``starting``)."""
        await self.events.deliver(TurnStarting(item, planned.tag))
        try:
            if self.starter is not None:
                record = await self.starter(item, planned)
            else:
                record = await asyncio.to_thread(self.start, planned)
        except LockHeld:
            await asyncio.to_thread(self.engine.requeue, item)  # it keeps its place
            return
        except DeployError as exc:
            await self.events.deliver(TurnRefused(item, exc, at_start=True))
            return
        if record is not None:
            log.info("a queued deploy started", extra={"service": self.engine.service_name})
            await self.events.deliver(TurnStarted(item, record))

    async def queue_forever(self, interval: float) -> None:
        """``take_turns`` at once when this process released the lock, else every
        ``interval`` (a lock released by a terminal or another replica). Never stops for AWS
        or a door's trouble; the queue is in the table, so a restart picks it up."""
        loop = asyncio.get_running_loop()
        released = asyncio.Event()

        def kick(event: LockReleased) -> None:  # on the follower's thread
            loop.call_soon_threadsafe(released.set)

        unsubscribe = self.events.subscribe(LockReleased, kick)
        try:
            while True:
                released.clear()
                try:
                    await self.take_turns()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("queue pass for %s failed: %s", self.engine.target.name, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), interval)
        finally:
            unsubscribe()

    # --- all of it --------------------------------------------------------------------------
    async def run(self, *, pass_every: float, outside_every: float, queue_every: float) -> None:
        """Every loop until cancelled: resume (retrying while AWS is away), then the passes;
        the queue's turns meanwhile."""
        queue = asyncio.create_task(self.queue_forever(queue_every))
        try:
            await self.resume_until_done()
            await self.adopt_forever(pass_every, outside_every)
        finally:
            queue.cancel()
            await asyncio.gather(queue, return_exceptions=True)
