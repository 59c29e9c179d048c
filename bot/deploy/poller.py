"""The watch: one poller per service, one DescribeServices per interval, however many watchers.

Every tracked deployment is judged on each poll (``Reconciler.read``); a snapshot goes to its
watchers only when something a reader would see has changed. At the outcome the poller closes
the history record and releases the lock, once, whoever is watching, and whether or not AWS
answers: the watch always ends (UNKNOWN at the timeout when AWS stopped answering).

Across processes (bot replicas, a terminal) a deployment is followed by the one that holds the
follower lease on its record: the poller claims it before following, renews it as it polls,
keeps it while its watchers finish showing the outcome, and releases it when they are done or
the process stops. A lease that another process stopped renewing is taken over.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.deploy import links
from bot.deploy.aws import AwsClient, aws_errors
from bot.deploy.ledger import Ledger
from bot.deploy.reconcile import Reconciler
from bot.deploy.records import CLOCK_SKEW, DeploymentRecord
from bot.deploy.rollout import (
    EcsDeployment,
    Outcome,
    ServiceEvent,
    ServiceState,
    Snapshot,
    StoppedTask,
    Verdict,
)
from bot.errors import DeployError

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
    """A watcher's view of one deployment: iterate (threads) or async-iterate (asyncio).

    The iteration ends at the final snapshot, or without one when another process took the
    deployment's follow-through over (``handed_over``): that process shows it from then on.
    """

    def __init__(
        self,
        poller: ServicePoller,
        deployment_id: str,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.deployment_id = deployment_id
        self._poller = poller
        self._loop = loop
        self._queue: queue.Queue[Snapshot | None] = queue.Queue()
        self._aqueue: asyncio.Queue[Snapshot | None] | None = asyncio.Queue() if loop else None
        self.last: Snapshot | None = None
        self.handed_over = False

    def put(self, snapshot: Snapshot | None) -> None:
        """The next snapshot; None: the deployment is followed elsewhere now."""
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
        if snap is None:
            self.handed_over = True
            return None
        self.last = snap
        return snap

    def __iter__(self) -> Iterator[Snapshot]:
        while not self.handed_over:
            snap = self.get()
            if snap is None:
                return
            yield snap
            if snap.final:
                return

    async def __aiter__(self) -> AsyncIterator[Snapshot]:
        assert self._aqueue is not None, "create the watch with a loop to iterate it in asyncio"
        while not self.handed_over:
            snap = await self._aqueue.get()
            if snap is None:
                self.handed_over = True
                return
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
    # Every snapshot so far: a watcher that subscribes late (the rollout is followed from the
    # moment it starts) still sees each event and stopped task once.
    sent: list[Snapshot] = field(default_factory=list)
    seen_events: set[str] = field(default_factory=set)
    seen_tasks: set[str] = field(default_factory=set)
    last_failed: int = 0
    renewed_at: float = float("-inf")
    events_since: datetime | None = None
    # When this process's own UpdateService call for it ended (monotonic); None when the
    # record was resumed or adopted from another process.
    asked_ecs_at: float | None = None
    note: str = ""  # said on every snapshot until it no longer holds (see Snapshot.note)
    aws_error: str = ""  # the last AWS failure, while AWS keeps failing
    # When AWS last answered a poll of it (monotonic); the watch's start before the first.
    answered_at: float = float("-inf")
    claims_lock: bool = True
    started_here: bool = False
    # The deployment's task definition (DescribeTaskDefinition's), for its log configuration:
    # given by the process that registered it, else read once when a task first stops.
    task_definition: dict[str, Any] | None = None
    log_url: str = ""  # the newest stopped task's log stream (Snapshot.log_url)
    # When this watch first saw the record aborted (this process's clock): its window for the
    # restore counts from then (_aborted_later).
    abort_seen: datetime | None = None


@dataclass
class _Owned:
    """A deployment whose follower lease this process holds."""

    record: DeploymentRecord
    renewed_at: float  # monotonic
    # After the outcome: the watchers still showing it; the lease goes when they are done.
    holders: set[int] = field(default_factory=set)


class FollowerLeases:
    """Whether another process's follower lease on a record has lapsed, by this process's clock.

    A lease is judged by when this process saw it last change (its holder and beat), never by
    the holder's timestamps alone: clocks may disagree by minutes (CLOCK_SKEW), but a lease
    nobody renewed for a whole lease of our own monotonic clock has lapsed whatever the
    clocks say. Kubernetes' leader election judges leases the same way (client-go
    tools/leaderelection keeps the observed record and the local time it was observed).
    ``follower_until`` past by CLOCK_SKEW's margin is lapsed at first sight.
    """

    def __init__(self, lease_seconds: float, clock: Clock) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._seen: dict[str, tuple[str, int, float]] = {}
        self._lock = threading.Lock()

    def lapsed(self, record: DeploymentRecord, me: str) -> bool:
        """True when nobody but ``me`` holds ``record``'s lease, or its holder stopped renewing."""
        if not record.follower or record.follower == me:
            return True
        until = record.follower_until
        if until is not None and until + CLOCK_SKEW < self.clock.now():
            return True
        now = self.clock.monotonic()
        key = (record.follower, record.follower_beat)
        with self._lock:
            seen = self._seen.get(record.id)
            if seen is None or seen[:2] != key:
                self._seen[record.id] = (*key, now)
                return False
            return now - seen[2] >= self.lease_seconds

    def keep_only(self, ids: set[str]) -> None:
        """Forget what was seen of records no longer read."""
        with self._lock:
            for stale in set(self._seen) - ids:
                del self._seen[stale]


class ServicePoller:
    """Polls one service while any deployment of it is tracked; a daemon thread.

    The poller owns the follow-through of every rollout it tracks: lease renewals, closing
    the record, releasing the lock. Watchers only read its snapshots; none is needed.
    """

    def __init__(
        self,
        aws: AwsClient,
        ledger: Ledger,
        poll_seconds: float,
        timeout_seconds: float,
        lease_seconds: float,
        clock: Clock,
        follower: str = "",
        lost_seconds: float = 60.0,
    ) -> None:
        self.aws = aws
        self.ledger = ledger
        self.poll_seconds = poll_seconds
        self.timeout = timedelta(seconds=timeout_seconds)
        # AWS silent this long (no DescribeServices answered): the watch ends UNKNOWN.
        self.lost_seconds = lost_seconds
        self.lease_seconds = lease_seconds
        # How long after our own UpdateService call ended ECS may take to show its deployment
        # before we conclude the call never reached it.
        self.start_grace = timedelta(seconds=max(5.0, 3 * poll_seconds))
        self.clock = clock
        self.follower = follower
        self.reconciler = Reconciler(ledger, clock, self.start_grace, aws)
        self.leases = FollowerLeases(lease_seconds, clock)
        self.polls = 0
        self._tracked: dict[str, _Tracked] = {}
        self._owned: dict[str, _Owned] = {}
        # Deployments that ended here lately: a watcher that comes late gets the outcome.
        self._finished: OrderedDict[str, Snapshot] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat: float | None = None  # clock.monotonic() at the last pass's start or end
        self._failing = ""  # the last poll's AWS failure, while AWS keeps failing
        # Told each snapshot the watchers get, once, on this thread (the supervisor publishes
        # it: RolloutSnapshot); must return at once.
        self.on_snapshot: Callable[[DeploymentRecord, Snapshot], None] | None = None

    def follow(
        self,
        record: DeploymentRecord,
        *,
        asked_ecs_at: float | None = None,
        note: str = "",
        started_here: bool = False,
        task_definition: dict[str, Any] | None = None,
    ) -> bool:
        """Follow ``record`` to its outcome, whoever watches (idempotent). False when another
        process follows it (it holds the lease): then this one does nothing. A record started
        here carries this process's lease from its first write. ``task_definition``: the
        revision it runs, when known (the log links of stopped tasks come from it)."""
        with self._lock:
            if record.id in self._tracked or record.id in self._finished:
                return True
        if started_here:
            with self._lock:
                self._owned[record.id] = _Owned(record, self.clock.monotonic())
        elif not self.own(record):
            return False
        with self._lock:
            if record.id in self._tracked or record.id in self._finished:
                return True
            # The timeout is the watch's: a record followed again after its first watch ended
            # (an abort of one left "still rolling out", a restart) gets a whole one.
            deadline = max(record.started_at, self.clock.now()) + self.timeout
            self._tracked[record.id] = _Tracked(
                record=record,
                deadline=deadline,
                asked_ecs_at=asked_ecs_at,
                note=note,
                started_here=started_here,
                task_definition=task_definition,
                # A lock taken a moment ago needs no renewal yet; a resumed one may.
                renewed_at=self.clock.monotonic() if started_here else float("-inf"),
                answered_at=self.clock.monotonic(),
                # What its thread already says, when another process followed it before.
                seen_events=set(record.replied),
                seen_tasks=set(record.replied),
            )
            self._wake.set()  # poll now: a new deployment deserves a first snapshot
            self._ensure_thread()
        return True

    def _ensure_thread(self) -> None:
        """Start the poller thread if it is not running (with ``self._lock`` held)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"poller:{self.ledger.key}", daemon=True
            )
            self._thread.start()

    def own(self, record: DeploymentRecord) -> bool:
        """Hold ``record``'s follower lease (claim it, or take it over once it lapsed); False
        when another process holds it, or the claim could not be written."""
        with self._lock:
            if record.id in self._owned:
                return True
        if self.follower:
            lapsed = self.leases.lapsed(record, self.follower)
            try:
                taken = self.ledger.claim_follower(
                    record, self.follower, self.lease_seconds, lapsed=lapsed
                )
            except DeployError as exc:
                log.warning("could not claim the follower lease: %s", exc, extra=record.log_fields)
                return False
            if not taken:
                log.info("another process follows it", extra=record.log_fields)
                return False
            if record.follower and record.follower != self.follower:
                log.warning(
                    "took over from %s, whose lease lapsed",
                    record.follower,
                    extra=record.log_fields,
                )
        with self._lock:
            self._owned[record.id] = _Owned(record, self.clock.monotonic())
            self._ensure_thread()
        return True

    def owns(self, deployment_id: str) -> bool:
        with self._lock:
            return deployment_id in self._owned

    def disown(self, record: DeploymentRecord) -> None:
        """Give ``record``'s lease up (its watchers are done); not while it is followed here."""
        with self._lock:
            if record.id in self._tracked or self._owned.pop(record.id, None) is None:
                return
        self._release(record)

    def _release(self, record: DeploymentRecord) -> None:
        if not self.follower:
            return
        try:
            self.ledger.release_follower(record, self.follower)
        except DeployError as exc:  # it lapses by itself
            log.warning("could not release the follower lease: %s", exc, extra=record.log_fields)

    def track(
        self, record: DeploymentRecord, loop: asyncio.AbstractEventLoop | None = None
    ) -> Watch:
        """Follow ``record`` (if not yet) and return a new watcher of it; the watcher ends at
        once (``handed_over``) when another process follows it."""
        followed = self.follow(record)
        watch = Watch(self, record.id, loop)
        if not followed:
            watch.put(None)
            return watch
        with self._lock:
            tracked = self._tracked.get(record.id)
            if tracked is not None:
                tracked.watchers.append(watch)
                for snap in tracked.sent:
                    watch.put(snap)
                return watch
            final = self._finished.get(record.id)
        if final is not None:
            watch.put(final)
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        """The watcher is done; after the outcome, the last one done releases the lease."""
        with self._lock:
            tracked = self._tracked.get(watch.deployment_id)
            if tracked and watch in tracked.watchers:
                tracked.watchers.remove(watch)
                return
            owned = self._owned.get(watch.deployment_id)
            if owned is None or id(watch) not in owned.holders:
                return
            owned.holders.discard(id(watch))
            if owned.holders:
                return
            del self._owned[watch.deployment_id]
        self._release(owned.record)

    def tracking(self) -> list[str]:
        with self._lock:
            return list(self._tracked)

    def last(self, deployment_id: str) -> Snapshot | None:
        """The latest snapshot of a deployment followed here and not ended; None otherwise
        (a deployment just started, before its first poll, gives an empty snapshot)."""
        with self._lock:
            tracked = self._tracked.get(deployment_id)
            if tracked is None:
                return None
            if tracked.last is not None:
                return tracked.last
            record = tracked.record
        return Snapshot(
            deployment_id=record.id,
            ecs_deployment_id=record.ecs_deployment_id,
            at=record.started_at,
            elapsed=0.0,
            rollout_state="",
            rollout_reason="",
            desired=0,
            pending=0,
            running=0,
            failed=0,
        )

    def stop(self) -> None:
        """Stop following, and release every lease held: another process takes over at once."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            owned = list(self._owned.values())
            self._owned.clear()
        for entry in owned:
            self._release(entry.record)

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
                if not self._tracked and not self._owned:
                    self._thread = None
                    return
                polling = bool(self._tracked)
            try:
                self._renew_leases()
                if polling:  # leases alone (watchers finishing) need no DescribeServices
                    self.poll_once()
            except Exception:  # the poller must outlive any one bad poll
                log.exception("poll failed; trying again next interval")
            self._beat = self.clock.monotonic()
            self._wake.clear()
            self._wake.wait(self.poll_seconds)

    def poll_once(self) -> None:
        """One DescribeServices, judged for every tracked deployment."""
        error = ""
        try:
            with aws_errors("watching the rollout"):
                # Batched with the cluster's other watched services (bot/deploy/batch.py): a
                # description another poller fetched within this interval is good enough.
                raw = self.aws.describe_service(max_age=self.poll_seconds * 0.9)
            if raw is None:
                error = "the service is gone from ECS"
        except DeployError as exc:
            raw, error = None, exc.message
        if error and error != self._failing:  # said once, not at every poll while it lasts
            log.warning("describe_services failed: %s", error)
        elif self._failing and not error:
            log.info("AWS answers again")
        self._failing = error
        self.polls += 1
        with self._lock:
            items = list(self._tracked.values())
        state = ServiceState.from_api(raw) if raw else None
        now = self.clock.now()
        for tracked in items:
            try:
                self._judge(tracked, state, now, error)
            except Exception:  # one deployment's bad turn must not stop the others'
                log.exception("could not judge deployment", extra=tracked.record.log_fields)

    def _judge(
        self, tracked: _Tracked, state: ServiceState | None, now: datetime, error: str
    ) -> None:
        verdict: Verdict | None = None
        new_events: tuple[ServiceEvent, ...] = ()
        stopped: tuple[StoppedTask, ...] = ()
        ours = None
        service_deployment = tracked.last.service_deployment if tracked.last else None
        if state is None:
            tracked.aws_error = error
        else:
            tracked.aws_error = ""
            tracked.answered_at = self.clock.monotonic()
            # ECS's service deployment, batched with every other watched one of the process
            # (one DescribeServiceDeployments per poll interval for up to 20).
            reading = self.reconciler.read(
                tracked.record,
                state,
                now,
                asked_ecs_at=tracked.asked_ecs_at,
                max_age=self.poll_seconds * 0.9,
            )
            tracked.record, verdict, ours = reading.record, reading.verdict, reading.ours
            service_deployment = reading.service_deployment
            if reading.state is not None:  # read again after ECS's word: its events are newer
                state = reading.state
            if tracked.record.aborted_by and tracked.abort_seen is None:
                tracked.abort_seen = now
            if reading.adopted and tracked.note == tracked.record.start_error:
                tracked.note = (
                    "UpdateService's answer was lost, but ECS had started the deployment "
                    f"({tracked.record.ecs_deployment_id}): followed to its end"
                )
        record = tracked.record
        if state is not None and record.ecs_deployment_id:
            new_events = self._new_events(tracked, state, ours.created_at if ours else None)
            failed = ours.failed if ours else tracked.last_failed
            if failed > tracked.last_failed or (
                verdict is not None and verdict.outcome not in (Outcome.COMPLETED,)
            ):
                stopped = self._stopped_tasks(tracked)
            tracked.last_failed = max(tracked.last_failed, failed)
        silent = self.clock.monotonic() - tracked.answered_at
        if (
            verdict is None
            and state is None
            and (silent >= self.lost_seconds or now >= tracked.deadline)
        ):
            # A watch never waits out the rollout's timeout on an AWS that does not answer.
            verdict = Verdict(
                Outcome.UNKNOWN, f"AWS has not answered for {silent:.0f} s ({error.rstrip('.')})"
            )
        if verdict is None and now >= tracked.deadline and not self._aborted_later(tracked, now):
            waited = int(self.timeout.total_seconds())
            verdict = Verdict(
                Outcome.STILL_ROLLING_OUT,
                f"still rolling out after {waited} s; ECS carries on",
            )
        base = tracked.last
        note = tracked.note
        if tracked.aws_error and verdict is None:
            note = f"AWS is not answering ({tracked.aws_error}); still trying"
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
            note=note,
            log_url=tracked.log_url,
            service_deployment=service_deployment,
        )
        for task in stopped:
            log.warning(
                "task stopped: %s%s",
                task.reason,
                f" ({task.container_reason})" if task.container_reason else "",
                extra={**record.log_fields, "task": task.arn, "exit_code": task.exit_code},
            )
        if verdict is not None:
            snap = self._finish(tracked, snap, verdict, ours)
        else:
            self._maybe_renew(tracked)
            snap = replace(snap, note=note if tracked.aws_error else tracked.note)
            if base is not None and _view(snap) == _view(base) and not (new_events or stopped):
                return  # nothing a reader would see has changed
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
            if len(tracked.sent) >= 500:  # a very long rollout: keep the first and the latest
                del tracked.sent[1:250]
            tracked.sent.append(snap)
            watchers = list(tracked.watchers)
            release = False
            if snap.final:
                self._tracked.pop(record.id, None)
                self._finished[record.id] = snap
                while len(self._finished) > 200:
                    self._finished.popitem(last=False)
                # The lease stays while the watchers show the outcome (a Slack message may
                # take a while), so no other process shows it meanwhile.
                owned = self._owned.get(record.id)
                if owned is not None:
                    owned.record = tracked.record
                    owned.holders = {id(w) for w in watchers}
                    release = not owned.holders
                    if release:
                        del self._owned[record.id]
        for watch in watchers:
            watch.put(snap)
        if self.on_snapshot is not None:
            self.on_snapshot(tracked.record, snap)
        if release:
            self._release(tracked.record)

    def _finish(
        self, tracked: _Tracked, snap: Snapshot, verdict: Verdict, ours: EcsDeployment | None
    ) -> Snapshot:
        record = tracked.record
        final = self.reconciler.final_snapshot(record, verdict, snap.at, ours, base=snap)
        final = replace(final, new_events=snap.new_events, stopped_tasks=snap.stopped_tasks)
        # A watch that ends before ECS does (the timeout, AWS silent) keeps the lock: ECS may
        # still be rolling out, and the lock goes when someone sees ECS end it (the next
        # command, a bot's pass: Locking._free_if_done). Its lease is pushed out so the table's
        # TTL never deletes it meanwhile. Every settled outcome releases it.
        release = verdict.outcome.settled and tracked.claims_lock
        closed, note = self.reconciler.settle(record, final, release=release)
        if not verdict.outcome.settled and tracked.claims_lock:
            self.reconciler.keep_lock(record)
        tracked.record = closed
        if closed.final is not None and closed.outcome != final.outcome and closed.settled:
            final = replace(closed.final, new_events=final.new_events)  # someone settled it first
        if note and verdict.outcome.settled:
            # An outcome not recorded is worth a word; a watch that lost sight of it says
            # already that the next command records it (once, plainly).
            final = replace(final, note=note)
        if final.ecs_status == "ROLLBACK_FAILED":  # loudly: the service may be down
            log.error(
                "ECS could not roll back %s: the service may be down (%s)",
                record.tag,
                final.outcome_reason,
                extra={**record.log_fields, "ecs_status": final.ecs_status},
            )
        log.info(
            "deployment %s: %s (%s)",
            final.outcome.label if final.outcome else "?",
            record.tag,
            final.outcome_reason,
            extra={
                **record.log_fields,
                "outcome": final.outcome.value if final.outcome else "",
                "ecs_status": final.ecs_status,
            },
        )
        return final

    def _aborted_later(self, tracked: _Tracked, now: datetime) -> bool:
        """An aborted deployment is watched to the restore's end, with a timeout that counts
        from the abort (#31): its watch does not end while ECS puts the previous task
        definition back, nor does it release the lock then. One read of the record, at the
        deployment's own timeout, tells whether it was aborted meanwhile.

        The window counts from when this watch saw the abort, by this process's clock (most
        often at a poll once ECS replaced ours: after the abort's UpdateService, from which
        the abort's own watch counts, Engine.follow_abort). Not from the record's
        ``aborted_at``: the aborting process's clock, read before its UpdateService, and up
        to CLOCK_SKEW behind ours, so the window could end before the restore began."""
        if not tracked.record.aborted_by:
            tracked.record = self.reconciler.with_abort(tracked.record)
        if not tracked.record.aborted_by:
            return False
        if tracked.abort_seen is None:
            tracked.abort_seen = now
        tracked.deadline = max(tracked.deadline, tracked.abort_seen + self.timeout)
        return now < tracked.deadline

    def _renew_leases(self) -> None:
        """Renew every follower lease held here a third of a lease after the last renewal; a
        lease found taken over ends the following here (its watchers are told)."""
        if not self.follower:
            return
        now = self.clock.monotonic()
        with self._lock:
            due = [o for o in self._owned.values() if now - o.renewed_at >= self.lease_seconds / 3]
        for owned in due:
            owned.renewed_at = now
            record = owned.record
            try:
                ours = self.ledger.renew_follower(record, self.follower, self.lease_seconds)
            except DeployError as exc:  # still ours until it lapses; say so meanwhile
                log.warning("could not renew the follower lease: %s", exc, extra=record.log_fields)
                continue
            if not ours:
                self._handed_over(record)

    def _handed_over(self, record: DeploymentRecord) -> None:
        with self._lock:
            self._owned.pop(record.id, None)
            tracked = self._tracked.pop(record.id, None)
        log.warning(
            "another process took this deployment's follow-through over; stopping here",
            extra=record.log_fields,
        )
        for watch in tracked.watchers if tracked else ():
            watch.put(None)

    def _maybe_renew(self, tracked: _Tracked) -> None:
        if not tracked.claims_lock:
            return
        now = self.clock.monotonic()
        if now - tracked.renewed_at < self.lease_seconds / 3:
            return
        tracked.renewed_at = now
        record = tracked.record
        try:
            ours = self.ledger.renew(record.id)
        except DeployError as exc:
            # Not ours to give up yet: the lease runs until it lapses; say so meanwhile.
            log.warning("could not renew the deploy lock: %s", exc, extra=record.log_fields)
            return
        if ours:
            return
        tracked.claims_lock = False
        if not tracked.started_here:
            return  # a resumed deployment whose lock is already gone: nothing to claim
        try:
            holder = self.ledger.lock_item()
        except DeployError:
            holder = None
        who = f"{holder.holder} holds it now for {holder.tag}" if holder else "nobody holds it"
        log.warning(
            "lost the deploy lock (%s); following the rollout without claiming it",
            who,
            extra=record.log_fields,
        )
        tracked.note = (
            f"this deployment lost the deploy lock ({who}); still following the rollout, "
            "no longer claiming the lock"
        )

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

    def _stopped_tasks(self, tracked: _Tracked) -> tuple[StoppedTask, ...]:
        try:
            return self._new_stopped_tasks(tracked)
        except DeployError as exc:
            log.warning("could not read stopped tasks: %s", exc, extra=tracked.record.log_fields)
            return ()

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
            log_url, task_url = self._where_to_look(tracked, arn, str(container.get("name", "")))
            out.append(
                StoppedTask(
                    arn=arn,
                    reason=str(task.get("stoppedReason", "stopped")),
                    exit_code=container.get("exitCode"),
                    container_reason=str(container.get("reason", "")),
                    log_url=log_url,
                    task_url=task_url,
                )
            )
            tracked.log_url = log_url or tracked.log_url
        return tuple(out)

    def _where_to_look(self, tracked: _Tracked, task_arn: str, container: str) -> tuple[str, str]:
        """The stopped task's log stream and console page: built from its ARN, the region and
        the task definition's awslogs options (read once per deployment when not given)."""
        region = self.aws.region
        if tracked.task_definition is None:
            try:
                with aws_errors("reading the task definition's log configuration"):
                    tracked.task_definition, _ = self.aws.describe_task_definition(
                        tracked.record.task_definition
                    )
            except DeployError as exc:
                log.warning("no log links: %s", exc, extra=tracked.record.log_fields)
                tracked.task_definition = {}
        found = links.task_log_link(tracked.task_definition, task_arn, container or None, region)
        if found is None and container:  # the task's first container may log elsewhere
            found = links.task_log_link(tracked.task_definition, task_arn, None, region)
        return (found.url if found else ""), (links.ecs_task_url(task_arn, region=region) or "")


def _view(snap: Snapshot) -> tuple[object, ...]:
    """What a reader sees of a snapshot, without the events and tasks it brings once."""
    return replace(snap, new_events=(), stopped_tasks=()).content_key()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
