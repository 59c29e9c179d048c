"""The watch: one poller per service, one DescribeServices per interval, however many watchers.

Every tracked deployment is judged on each poll; a snapshot goes to its watchers only when
something a reader would see has changed. At the outcome the poller closes the history
record and releases the lock, once, whoever is watching.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from bot.clock import Clock
from bot.deploy.aws import AwsClient, aws_errors
from bot.deploy.errors import DeployError
from bot.deploy.ledger import DeploymentRecord, Ledger
from bot.deploy.rollout import (
    Outcome,
    ServiceEvent,
    ServiceState,
    Snapshot,
    StoppedTask,
    Verdict,
    judge,
)

log = logging.getLogger("deploybot.poller")

# How long the follower may go without finishing a pass before it counts as stuck: well past one
# pass's worst case (each AWS call may take botocore's 10 attempts of up to 5 s to connect and
# 20 s to read, bot/deploy/aws.py), so slow AWS is never mistaken for a dead follower.
STUCK_AFTER_SECONDS = 600.0


@dataclass(frozen=True)
class FollowerHealth:
    """Whether the poller that follows rollouts to their outcome is alive: for /healthz."""

    following: int  # deployments tracked now
    alive: bool  # its thread runs (or nothing needs one)
    seconds_since_pass: float | None  # since its last pass began or ended; None: not running
    stuck_after: float

    @property
    def ok(self) -> bool:
        if not self.following:
            return True
        return self.alive and (self.seconds_since_pass or 0.0) <= self.stuck_after


class Watch:
    """A watcher's view of one deployment: iterate (threads) or async-iterate (asyncio)."""

    def __init__(
        self,
        poller: ServicePoller,
        deployment_id: str,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.deployment_id = deployment_id
        self._poller = poller
        self._loop = loop
        self._queue: queue.Queue[Snapshot] = queue.Queue()
        self._aqueue: asyncio.Queue[Snapshot] | None = asyncio.Queue() if loop else None
        self.last: Snapshot | None = None

    def put(self, snapshot: Snapshot) -> None:
        if self._loop is not None and self._aqueue is not None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._aqueue.put_nowait, snapshot)
        else:
            self._queue.put(snapshot)

    def get(self, timeout: float | None = None) -> Snapshot | None:
        """The next snapshot, or None after ``timeout`` seconds."""
        try:
            snap = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self.last = snap
        return snap

    def __iter__(self) -> Iterator[Snapshot]:
        while True:
            snap = self.get()
            assert snap is not None
            yield snap
            if snap.final:
                return

    async def __aiter__(self) -> AsyncIterator[Snapshot]:
        assert self._aqueue is not None, "create the watch with a loop to iterate it in asyncio"
        while True:
            snap = await self._aqueue.get()
            self.last = snap
            yield snap
            if snap.final:
                return

    def close(self) -> None:
        """Stop receiving; the deployment is still followed to its outcome."""
        self._poller.unsubscribe(self)


@dataclass
class _Tracked:
    record: DeploymentRecord
    deadline: datetime
    watchers: list[Watch] = field(default_factory=list)
    last: Snapshot | None = None
    seen_events: set[str] = field(default_factory=set)
    seen_tasks: set[str] = field(default_factory=set)
    last_failed: int = 0
    renewed_at: float = 0.0
    events_since: datetime | None = None


class ServicePoller:
    """Polls one service while any deployment of it is tracked; a daemon thread."""

    def __init__(
        self,
        aws: AwsClient,
        ledger: Ledger,
        poll_seconds: float,
        timeout_seconds: float,
        lease_seconds: float,
        clock: Clock,
    ) -> None:
        self.aws = aws
        self.ledger = ledger
        self.poll_seconds = poll_seconds
        self.timeout = timedelta(seconds=timeout_seconds)
        self.lease_seconds = lease_seconds
        # How long a record without an ECS deployment id may wait for its process to finish
        # asking ECS before it is judged never started.
        self.start_grace = timedelta(seconds=max(5.0, 3 * poll_seconds))
        self.clock = clock
        self.polls = 0
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat: float | None = None  # clock.monotonic() at the last pass's start or end

    def track(
        self, record: DeploymentRecord, loop: asyncio.AbstractEventLoop | None = None
    ) -> Watch:
        """Follow ``record`` to its outcome and return a new watcher of it."""
        watch = Watch(self, record.id, loop)
        with self._lock:
            tracked = self._tracked.get(record.id)
            if tracked is None:
                tracked = _Tracked(record=record, deadline=record.started_at + self.timeout)
                self._tracked[record.id] = tracked
                self._wake.set()  # poll now: a new deployment deserves a first snapshot
            tracked.watchers.append(watch)
            if tracked.last is not None:
                watch.put(tracked.last)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"poller:{self.ledger.key}", daemon=True
                )
                self._thread.start()
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        with self._lock:
            tracked = self._tracked.get(watch.deployment_id)
            if tracked and watch in tracked.watchers:
                tracked.watchers.remove(watch)

    def tracking(self) -> list[str]:
        with self._lock:
            return list(self._tracked)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def health(self, stuck_after: float = STUCK_AFTER_SECONDS) -> FollowerHealth:
        """Alive unless deployments are tracked and its thread died or hangs in a pass."""
        with self._lock:
            following = len(self._tracked)
            thread = self._thread
        beat = self._beat
        since = None if beat is None else max(0.0, self.clock.monotonic() - beat)
        alive = thread is not None and thread.is_alive()
        return FollowerHealth(following, alive or not following, since, stuck_after)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._beat = self.clock.monotonic()
            with self._lock:
                if not self._tracked:
                    self._thread = None
                    return
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any one bad poll
                log.exception("poll failed; trying again next interval")
            self._beat = self.clock.monotonic()
            self._wake.clear()
            self._wake.wait(self.poll_seconds)

    def poll_once(self) -> None:
        """One DescribeServices, judged for every tracked deployment."""
        try:
            with aws_errors("watching the rollout"):
                raw = self.aws.describe_service()
        except DeployError as exc:
            log.warning("describe_services failed: %s", exc)
            raw = None
        self.polls += 1
        with self._lock:
            items = list(self._tracked.values())
        state = ServiceState.from_api(raw) if raw else None
        now = self.clock.now()
        for tracked in items:
            try:
                self._judge(tracked, state, now)
            except DeployError as exc:
                log.warning("could not judge deployment: %s", exc, extra=tracked.record.log_fields)

    def _judge(self, tracked: _Tracked, state: ServiceState | None, now: datetime) -> None:
        verdict: Verdict | None = None
        new_events: tuple[ServiceEvent, ...] = ()
        stopped: tuple[StoppedTask, ...] = ()
        ours = None
        if state is not None and not tracked.record.ecs_deployment_id:
            verdict = self._adopt(tracked, state, now)
            if verdict is None and not tracked.record.ecs_deployment_id:
                return  # its process may still be asking ECS: look again next poll
        record = tracked.record
        if state is not None and verdict is None:
            ours = state.deployment(record.ecs_deployment_id)
            verdict = judge(state, record.ecs_deployment_id)
            new_events = self._new_events(tracked, state, ours.created_at if ours else None)
            failed = ours.failed if ours else tracked.last_failed
            if failed > tracked.last_failed or (verdict and verdict.outcome != Outcome.COMPLETED):
                stopped = self._new_stopped_tasks(tracked)
            tracked.last_failed = max(tracked.last_failed, failed)
        if verdict is None and now >= tracked.deadline:
            verdict = Verdict(
                Outcome.STILL_ROLLING_OUT,
                f"still rolling out after {int(self.timeout.total_seconds())} s; ECS carries on",
            )
        base = tracked.last
        snap = Snapshot(
            deployment_id=record.id,
            ecs_deployment_id=record.ecs_deployment_id,
            at=now,
            elapsed=(now - record.started_at).total_seconds(),
            rollout_state=ours.rollout_state if ours else (base.rollout_state if base else ""),
            rollout_reason=ours.rollout_reason if ours else (base.rollout_reason if base else ""),
            desired=ours.desired if ours else (base.desired if base else 0),
            pending=ours.pending if ours else (base.pending if base else 0),
            running=ours.running if ours else (base.running if base else 0),
            failed=tracked.last_failed,
            new_events=new_events,
            stopped_tasks=stopped,
        )
        for task in stopped:
            log.warning(
                "task stopped: %s%s",
                task.reason,
                f" ({task.container_reason})" if task.container_reason else "",
                extra={**record.log_fields, "task": task.arn, "exit_code": task.exit_code},
            )
        if verdict is not None:
            snap = self._finish(tracked, snap, verdict)
        elif (
            base is not None
            and snap.content_key()[:6] == base.content_key()[:6]
            and not (new_events or stopped)
        ):
            self._maybe_renew(tracked)
            return  # nothing a reader would see has changed
        else:
            self._maybe_renew(tracked)
            log.info(
                "rollout %s: %d/%d running, %d pending, %d failed",
                snap.rollout_state or "unknown",
                snap.running,
                snap.desired,
                snap.pending,
                snap.failed,
                extra={**record.log_fields, "rollout_state": snap.rollout_state},
            )
        tracked.last = snap
        with self._lock:
            watchers = list(tracked.watchers)
            if snap.final:
                self._tracked.pop(record.id, None)
        for watch in watchers:
            watch.put(snap)

    def _adopt(self, tracked: _Tracked, state: ServiceState, now: datetime) -> Verdict | None:
        """A record written just before UpdateService, whose process died around that call:
        find the ECS deployment it started, or, after a grace period, say it never started."""
        record = tracked.record
        since = record.started_at - timedelta(seconds=5)  # ECS's clock may run a little behind
        started = [
            d
            for d in state.deployments
            if d.task_definition == record.task_definition
            and d.created_at is not None
            and _aware(d.created_at) >= since
        ]
        if started:
            newest = max(started, key=lambda d: _aware(d.created_at or now))
            tracked.record = self.ledger.set_ecs_deployment(record, newest.id)
            log.info("adopted ECS deployment %s", newest.id, extra=record.log_fields)
            return None
        if now - record.started_at < self.start_grace:
            return None
        return Verdict(
            Outcome.FAILED,
            "never started: deploybot stopped before ECS was asked to deploy; nothing changed",
        )

    def _finish(self, tracked: _Tracked, snap: Snapshot, verdict: Verdict) -> Snapshot:
        record = tracked.record
        rollback_tag = ""
        if verdict.rollback_task_definition:
            rollback_tag = (
                record.previous_tag
                if verdict.rollback_task_definition == record.previous_task_definition
                else verdict.rollback_task_definition.rsplit("/", 1)[-1]
            )
        final = replace(
            snap,
            outcome=verdict.outcome,
            outcome_reason=verdict.reason,
            rollback_deployment=verdict.rollback_deployment,
            rollback_task_definition=verdict.rollback_task_definition,
            rollback_tag=rollback_tag,
        )
        closed = self.ledger.close(record, final)
        self.ledger.release(record.id)
        if closed is not None:
            tracked.record = closed
        log.info(
            "deployment %s: %s (%s)",
            verdict.outcome.label,
            record.tag,
            verdict.reason,
            extra={**record.log_fields, "outcome": verdict.outcome.value},
        )
        return final

    def _maybe_renew(self, tracked: _Tracked) -> None:
        now = self.clock.monotonic()
        if now - tracked.renewed_at >= self.lease_seconds / 3:
            tracked.renewed_at = now
            self.ledger.renew(tracked.record.id)

    def _new_events(
        self, tracked: _Tracked, state: ServiceState, created_at: datetime | None
    ) -> tuple[ServiceEvent, ...]:
        # ECS's own clock dates both the deployment and its events: the deployment's createdAt
        # is the cut-off that keeps the previous rollout's last events out of this one.
        if created_at is not None:
            tracked.events_since = _aware(created_at)
        since = tracked.events_since or tracked.record.started_at - timedelta(seconds=2)
        fresh = [
            e
            for e in state.events
            if e.id not in tracked.seen_events and _aware(e.created_at) >= since
        ]
        tracked.seen_events.update(e.id for e in fresh)
        return tuple(sorted(fresh, key=lambda e: e.created_at))

    def _new_stopped_tasks(self, tracked: _Tracked) -> tuple[StoppedTask, ...]:
        with aws_errors("reading stopped tasks"):
            tasks = self.aws.stopped_tasks(tracked.seen_tasks)
        out = []
        record = tracked.record
        for task in tasks:
            arn = str(task.get("taskArn", ""))
            tracked.seen_tasks.add(arn)
            started_by = str(task.get("startedBy", ""))
            if started_by and started_by != record.ecs_deployment_id:
                continue
            if not started_by and task.get("taskDefinitionArn") != record.task_definition:
                continue
            container = (task.get("containers") or [{}])[0]
            out.append(
                StoppedTask(
                    arn=arn,
                    reason=str(task.get("stoppedReason", "stopped")),
                    exit_code=container.get("exitCode"),
                    container_reason=str(container.get("reason", "")),
                )
            )
        return tuple(out)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
