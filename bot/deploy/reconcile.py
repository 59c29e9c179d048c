"""Reconcile, don't remember: judge one history record against one DescribeServices.

Any process can do it (the poller that follows a rollout, ``status``, ``history``, the next
``deploy``, a bot's periodic pass): find the ECS deployment a record started (adopt it), say
what ECS did (settle it), or prove it never started. Every write is conditional, so two
processes reconciling the same record agree and the second one's writes change nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.deploy import service_deployments
from bot.deploy.aws import RETRY_CONFIG, AwsClient, aws_errors
from bot.deploy.events import EventBus, LockReleased, Settled
from bot.deploy.ledger import Ledger
from bot.deploy.records import CLOCK_SKEW, DeploymentRecord
from bot.deploy.rollout import (
    EcsDeployment,
    Outcome,
    ServiceState,
    Snapshot,
    Verdict,
    judge,
)
from bot.errors import DeployError

log = logging.getLogger("deploybot.reconcile")


def _update_call_bound() -> timedelta:
    """The longest one UpdateService call can take, botocore's retries included: every
    attempt may wait connect + read timeout, and the backoff between attempts is capped at
    20 s (botocore's standard and adaptive modes). Past it, no attempt can still land."""
    retries = RETRY_CONFIG.retries or {}
    attempts = int(retries.get("max_attempts", 10))
    per_try = float(RETRY_CONFIG.connect_timeout or 60) + float(RETRY_CONFIG.read_timeout or 60)
    return timedelta(seconds=attempts * per_try + (attempts - 1) * 20)


# A record with no ECS deployment may be judged "never started" by a process other than the
# one that asked ECS only once that process's call cannot still be retrying, by any clock.
NEVER_STARTED_AFTER = _update_call_bound() + CLOCK_SKEW
# The lease of a lock kept by a deployment nobody follows (its watch ended before ECS did):
# the lock is judged by its record, never by this lease; the lease only keeps DynamoDB's TTL
# from deleting the item ("items are typically deleted within a few days of their
# expiration", https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/TTL.html).
# Whoever finds the rollout still going pushes it out again.
KEPT_LOCK = timedelta(days=2)
# How far behind our clock ECS's createdAt may be and still be the deployment a record made.
ECS_CLOCK_SLACK = timedelta(seconds=5)


@dataclass(frozen=True)
class Reading:
    """What one reconcile pass concluded for one record."""

    record: DeploymentRecord
    verdict: Verdict | None = None
    ours: EcsDeployment | None = None
    adopted: bool = False
    # ECS's service deployment of the record, as read in this pass; None under the fallback.
    service_deployment: dict[str, Any] | None = None
    # The service as read again in this pass (its events and counts newer than the caller's
    # read); None when the caller's read was judged.
    state: ServiceState | None = None


class Reconciler:
    """The one place a record meets ECS's state; the poller and the engine both use it."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        start_grace: timedelta,
        aws: AwsClient | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.start_grace = start_grace
        # ECS's service deployments (#26), read through ``aws``; None: DescribeServices only.
        self.aws = aws
        # Records whose service deployment was looked for and not found: since when (monotonic).
        # Looked for again at each read until start_grace passed; then judged the old way.
        self._unfound: dict[str, float] = {}
        # Each record this process closed (Settled: GitHub deployments, a freeze after a
        # failure) and each lock it released (LockReleased: the queue's turn) is published
        # here; the close is conditional, so once per outcome across processes.
        self.events = EventBus()

    def read(
        self,
        record: DeploymentRecord,
        state: ServiceState,
        now: datetime,
        *,
        asked_ecs_at: float | None = None,
        max_age: float = 0.0,
    ) -> Reading:
        """Adopt, settle or leave ``record``. ``asked_ecs_at`` (monotonic) is when this
        process's own UpdateService call for it ended; None for anyone else's record.
        ``max_age``: how old a description of its service deployment may be (a poll's)."""
        adopted = False
        if not record.ecs_deployment_id:
            found = self._started(record, state)
            if found is None:
                if self._never_started(record, now, asked_ecs_at):
                    return Reading(
                        record,
                        Verdict(
                            Outcome.NOT_STARTED,
                            "ECS shows no deployment of it: UpdateService never reached ECS "
                            "(deploybot stopped or failed before ECS was asked); nothing changed",
                        ),
                    )
                return Reading(record)
            record, adopted = self._adopt(record, found), True
        record, sd = self.service_deployment(record, state, max_age)
        ours = state.deployment(record.ecs_deployment_id)
        ended = sd is not None and sd.get("status") in service_deployments.ENDED
        reread: ServiceState | None = None
        if not record.aborted_by and (ours is None or ours.status != "PRIMARY" or ended):
            # Someone else's deployment is over ours, or has already replaced it (ECS lists a
            # deployment no more once another completed over it: an abort's restore can be
            # over between two polls), or ECS says it ended: was it an abort (Stop), perhaps
            # from another process? The record says so (one read, only then).
            record = self.with_abort(record)
        if sd is not None:
            if (
                sd.get("status") == "STOPPED"
                and not record.aborted_by
                and ours is not None
                and ours.status == "PRIMARY"
                and self.aws is not None
            ):
                # ECS stopped ours, but the DescribeServices read before it still shows ours
                # on top: a newer deployment (what replaced it) shows in a read after it.
                state = reread = self._fresh_state(state)
                ours = state.deployment(record.ecs_deployment_id)
            elif (
                sd.get("status") == "SUCCESSFUL"
                and not record.aborted_by
                and ours is not None
                and (ours.running < ours.desired or ours.rollout_state != "COMPLETED")
                and self.aws is not None
            ):
                # ECS says ours succeeded, but the DescribeServices read before it (or one a
                # batch kept from earlier in the interval) still shows it rolling out: the
                # final snapshot's counts come from a read after it, not from the stale one.
                state = reread = self._fresh_state(state)
                ours = state.deployment(record.ecs_deployment_id) or ours
            verdict = service_deployments.judge(
                sd,
                aborted_by=record.aborted_by,
                previous_task_definition=record.previous_task_definition,
                previous_tag=record.previous_tag,
                state=state,
                ecs_deployment_id=record.ecs_deployment_id,
                describe_other=self._describe_other,
            )
            # An abort through UpdateService (StopServiceDeployment refused) stops ours and
            # starts the restore as a deployment of its own: followed by DescribeServices.
            restoring = record.aborted_by and sd.get("status") in ("STOPPED", "SUCCESSFUL")
            if not restoring:
                return Reading(record, verdict, ours, adopted, sd, reread)
        if record.aborted_by:
            aborting = self._aborting(record, state, ours)
            if aborting is not None:
                return replace(aborting, adopted=adopted, service_deployment=sd, state=reread)
        verdict = judge(state, record.ecs_deployment_id, self._describe_other)
        return Reading(record, verdict, ours, adopted, sd, reread)

    def _fresh_state(self, state: ServiceState) -> ServiceState:
        assert self.aws is not None
        try:
            with aws_errors("reading the service"):
                raw = self.aws.describe_service()
        except DeployError:
            return state
        return ServiceState.from_api(raw) if raw else state

    def service_deployment(
        self, record: DeploymentRecord, state: ServiceState, max_age: float = 0.0
    ) -> tuple[DeploymentRecord, dict[str, Any] | None]:
        """``record`` (with its service deployment's ARN once found) and ECS's service
        deployment of it; None under the fallback: the operations refused or failing now,
        none found (yet), or a record from before them."""
        if self.aws is None or not record.ecs_deployment_id:
            return record, None
        try:
            if not record.service_deployment_arn:
                record = self._find_service_deployment(record, state)
                if not record.service_deployment_arn:
                    return record, None
            return record, self.aws.service_deployment(record.service_deployment_arn, max_age)
        except service_deployments.Unavailable:
            return record, None  # said once by the reads (a refusal); a passing fault: next poll

    def _find_service_deployment(
        self, record: DeploymentRecord, state: ServiceState
    ) -> DeploymentRecord:
        """Find the service deployment ``record``'s UpdateService started (its answer, or a
        lost one, alike: ECS's list is read either way) and keep its ARN on the record:
        ListServiceDeployments since the record's start, then the target revisions' task
        definitions (DescribeServiceRevisions, once per revision). Looked for at each read
        until ``start_grace`` after the first try; then the record is judged the old way."""
        assert self.aws is not None
        first = self._unfound.get(record.id)
        now = self.clock.monotonic()
        if first is not None and now - first >= self.start_grace.total_seconds():
            return record
        since = service_deployments.since_for(record.started_at, ECS_CLOCK_SLACK)
        briefs = self.aws.list_service_deployments(since)
        exclude: set[str] = set()
        if record.task_definition == record.previous_task_definition:
            # A redeploy: the service deployment that ran before it rolled out the same
            # revision. Those other records found are not its own.
            exclude = {r.service_deployment_arn for r in self._recent() if r.id != record.id}
        wanted = service_deployments.candidates(briefs, since, exclude)
        revisions = self.aws.revision_task_definitions(wanted) if wanted else {}
        arn = service_deployments.find(briefs, revisions, record.task_definition, since, exclude)
        if not arn:
            if record.id not in self._unfound:
                self._unfound[record.id] = now
                log.info(
                    "ECS lists no service deployment of it (yet): judged from DescribeServices "
                    "until one is found",
                    extra=record.log_fields,
                )
            return record
        self._unfound.pop(record.id, None)
        try:
            found = self.ledger.set_service_deployment(record, arn)
        except DeployError as exc:  # kept in memory; closing the record writes it too
            log.warning("could not record the service deployment: %s", exc)
            found = replace(record, service_deployment_arn=arn)
        log.info(
            "its service deployment: %s", found.service_deployment_arn, extra=record.log_fields
        )
        return found

    def _recent(self) -> list[DeploymentRecord]:
        try:
            return self.ledger.history(20)
        except DeployError:
            return []

    def with_abort(self, record: DeploymentRecord) -> DeploymentRecord:
        """``record`` with the abort the table says it has (one read), if any."""
        fresh = self._reread(record)
        if not fresh.aborted_by:
            return record
        return replace(
            record,
            aborted_by=fresh.aborted_by,
            aborted_at=fresh.aborted_at,
            abort_ecs_deployment_id=fresh.abort_ecs_deployment_id,
            abort_via=fresh.abort_via,
        )

    def _aborting(
        self, record: DeploymentRecord, state: ServiceState, ours: EcsDeployment | None
    ) -> Reading | None:
        """An aborted record follows the deployment that puts the previous task definition
        back, and closes ABORTED when that one ends. None while the abort's UpdateService has
        not landed (ours is still what ECS rolls out): judged as any record then."""
        restore_id = record.abort_ecs_deployment_id
        if not restore_id:
            primary = state.primary
            if (
                primary is None
                or primary.id == record.ecs_deployment_id
                or primary.task_definition != record.previous_task_definition
                # Never the deployment that ran before ours, nor one ECS made before the abort:
                # a read of ECS from before the deploy shows that one PRIMARY, and adopting it
                # as the restore judged the real restore "replaced by" our own deployment
                # (CI's fresh-clone run at 3c5c12f, under load).
                or primary.id == record.previous_ecs_deployment_id
                or _made_before(primary, record.aborted_at)
            ):
                return None
            restore_id = primary.id
            try:
                record = self.ledger.set_abort_deployment(record, restore_id)
            except DeployError as exc:  # kept in memory; the next reader adopts it again
                log.warning("could not record the abort's deployment: %s", exc)
                record = replace(record, abort_ecs_deployment_id=restore_id)
        restore = state.deployment(restore_id)
        verdict = judge(state, restore_id, self._describe_other)
        if verdict is None:
            return Reading(record, None, restore)
        if not record.abort_via:
            # Read when the abort had marked the record but not yet written how ECS was asked
            # (it does so once UpdateService answers): the restore's end is read once more
            # for it, so the history says how (seen under load at 1325714).
            record = self.with_abort(record)
        back = record.previous_tag or record.previous_task_definition.rsplit("/", 1)[-1]
        how = f" ({record.abort_how})" if record.abort_how else ""
        if verdict.outcome is Outcome.COMPLETED:
            why = f"aborted by {record.aborted_by}{how}; {back} is back"
        else:
            why = (
                f"aborted by {record.aborted_by}{how}; putting {back} back "
                f"{verdict.outcome.label}: {verdict.reason}"
            )
        aborted = Verdict(
            Outcome.ABORTED,
            why,
            rollback_deployment=restore_id,
            rollback_task_definition=record.previous_task_definition,
            ended_at=verdict.ended_at,
        )
        return Reading(record, aborted, restore)

    def _started(self, record: DeploymentRecord, state: ServiceState) -> EcsDeployment | None:
        """The ECS deployment ``record`` started, by task definition and creation time; never
        the one that ran before it: a redeploy's task definition is the one already running,
        and a deployment of it created moments before the record is not the redeploy's (#31,
        the soak's seed 247036231 round 27: a reader in the redeploy's record -> UpdateService
        gap closed it COMPLETED on that one and freed the lock, two rollouts at once)."""
        since = record.started_at - ECS_CLOCK_SLACK
        started = [
            d
            for d in state.deployments
            if d.task_definition == record.task_definition
            and d.id != record.previous_ecs_deployment_id
            and d.created_at is not None
            and _aware(d.created_at) >= since
        ]
        if not started:
            return None
        return max(started, key=lambda d: _aware(d.created_at or since))

    def _adopt(self, record: DeploymentRecord, found: EcsDeployment) -> DeploymentRecord:
        try:
            adopted = self.ledger.set_ecs_deployment(record, found.id)
        except DeployError as exc:  # kept in memory; closing the record writes it too
            log.warning("could not record the adopted ECS deployment: %s", exc)
            adopted = replace(record, ecs_deployment_id=found.id)
        log.info("adopted ECS deployment %s", found.id, extra=record.log_fields)
        return adopted

    def _never_started(
        self, record: DeploymentRecord, now: datetime, asked_ecs_at: float | None
    ) -> bool:
        if asked_ecs_at is not None:
            # Our own call has ended: no attempt of it can land later. ECS shows a deployment
            # within moments of accepting the call; a few polls without one prove it never did.
            return self.clock.monotonic() - asked_ecs_at >= self.start_grace.total_seconds()
        if now - record.started_at < NEVER_STARTED_AFTER:
            return False
        lock = self.ledger.lock_item()
        return lock is None or lock.deployment_id != record.id or lock.lapsed(now)

    def _describe_other(self, other: EcsDeployment) -> str:
        try:
            records = self.ledger.history(20)
        except DeployError:
            records = []
        for r in records:
            if r.ecs_deployment_id == other.id or (
                not r.ecs_deployment_id
                and r.task_definition == other.task_definition
                and r.previous_ecs_deployment_id != other.id
            ):
                return f"(deploybot deployment {r.id} of {r.tag} by {r.who_display or r.who})"
        return "(not started by deploybot)"

    def final_snapshot(
        self,
        record: DeploymentRecord,
        verdict: Verdict,
        now: datetime,
        ours: EcsDeployment | None,
        base: Snapshot | None = None,
    ) -> Snapshot:
        """The final snapshot of a settled record, from what ECS shows of its deployment."""
        rollback_tag = ""
        if verdict.rollback_task_definition:
            rollback_tag = (
                record.previous_tag
                if verdict.rollback_task_definition == record.previous_task_definition
                else verdict.rollback_task_definition.rsplit("/", 1)[-1]
            )
        started = record.started_at
        # ECS's clock, within what ours allows: never before the start, never after now.
        ended = min(max(_aware(verdict.ended_at or now), started), now)
        return Snapshot(
            deployment_id=record.id,
            ecs_deployment_id=record.ecs_deployment_id,
            at=now,
            elapsed=(ended - started).total_seconds(),
            ended_at=ended,
            rollout_state=ours.rollout_state if ours else (base.rollout_state if base else ""),
            rollout_reason=ours.rollout_reason if ours else (base.rollout_reason if base else ""),
            desired=ours.desired if ours else (base.desired if base else 0),
            pending=ours.pending if ours else (base.pending if base else 0),
            running=ours.running if ours else (base.running if base else 0),
            failed=max(ours.failed if ours else 0, base.failed if base else 0),
            outcome=verdict.outcome,
            outcome_reason=verdict.reason,
            rollback_deployment=verdict.rollback_deployment,
            rollback_task_definition=verdict.rollback_task_definition,
            rollback_tag=rollback_tag,
            log_url=base.log_url if base else "",
            service_deployment=verdict.service_deployment
            or (base.service_deployment if base else None),
        )

    def settle(
        self, record: DeploymentRecord, final: Snapshot, *, release: bool = True
    ) -> tuple[DeploymentRecord, str]:
        """Record ``final`` and release the lock; never raises. Returns the record (closed,
        or as it was when the write failed) and a note for the reader when it failed."""
        note = ""
        closed = record
        if final.outcome is not None and final.outcome.settled:
            self._unfound.pop(record.id, None)
        if final.outcome is not None:
            try:
                done = self.ledger.close(record, final)
            except DeployError as exc:
                log.warning("could not close the record: %s", exc, extra=record.log_fields)
                note = (
                    f"could not record the outcome ({exc.message}); the next deploybot "
                    "command that reaches AWS records it"
                )
            else:  # None: settled meanwhile by another process; read what it wrote
                closed = done if done is not None else self._reread(record)
                if done is not None:
                    self.events.publish(Settled(done, final))
        if release:
            try:
                released = self.ledger.release(record.id)
            except DeployError as exc:
                log.warning("could not release the lock: %s", exc, extra=record.log_fields)
            else:
                if released:
                    self.events.publish(LockReleased(record))
        return closed, note

    def keep_lock(self, record: DeploymentRecord) -> None:
        """``record`` is not settled and nobody follows it any more: its lock stays, with a
        lease long enough that the table's TTL (``expires_at``) does not delete it before
        someone sees ECS end the rollout. Never raises: a lock the write missed is still
        judged by its record (Locking._free_if_done)."""
        try:
            self.ledger.renew(record.id, KEPT_LOCK.total_seconds())
        except DeployError as exc:
            log.warning("could not keep the lock: %s", exc, extra=record.log_fields)

    def _reread(self, record: DeploymentRecord) -> DeploymentRecord:
        try:
            return self.ledger.get_record(record.sort_key) or record
        except DeployError:
            return record


def _made_before(deployment: EcsDeployment, moment: datetime | None) -> bool:
    """Whether ECS created ``deployment`` before ``moment`` (by more than ECS_CLOCK_SLACK: the
    two clocks differ); False when either is unknown."""
    if deployment.created_at is None or moment is None:
        return False
    return _aware(deployment.created_at) < _aware(moment) - ECS_CLOCK_SLACK


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
