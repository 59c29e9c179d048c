"""Aborting a rollout (Stop): ECS rolls its service deployment back (StopServiceDeployment with
stopType ROLLBACK, #26), or, where ECS refuses that, the previous task definition goes back at
once (UpdateService); either is followed to its end and the deployment closes ABORTED. A
deployment ECS has already ended is recorded as ECS ended it, and the abort refused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot.deploy import service_deployments
from bot.deploy.aws import aws_errors
from bot.deploy.parts import Parts, Stage
from bot.deploy.planning import Planner
from bot.deploy.reads import Reads
from bot.deploy.records import (
    ABORT_BY_STOP,
    ABORT_BY_UPDATE,
    DeploymentRecord,
    Requester,
    Via,
)
from bot.deploy.rollout import Outcome, ServiceState, revision_of
from bot.deploy.starting import describe_failure, refused_outright
from bot.errors import DeployError, NothingToAbort
from bot.rules import Action

log = logging.getLogger("deploybot.engine")

# A service deployment ECS is already undoing (its monitors, or someone's stop): nothing to abort.
_ECS_UNDOING = ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "STOP_REQUESTED")


class Aborter(Stage):
    """Stops the rollouts of one target."""

    def __init__(self, parts: Parts, reads: Reads, planner: Planner) -> None:
        super().__init__(parts)
        self.reads = reads
        self.planner = planner

    def rolling_out(self) -> DeploymentRecord | None:
        """The deployment rolling out now, if deploybot started one: the lock's holder's record
        while it is not settled (open, or left "still rolling out" by a watch that ended
        first), else the newest open record."""
        held = self.ledger.lock_item()
        if held is not None and held.record_sk:
            record = self.ledger.get_record(held.record_sk)
            if record is not None and not record.settled:
                return record
        return next(iter(self.ledger.open_records(20)), None)

    def abort(
        self, requester: Requester, *, via: Via | None = None, of: str = ""
    ) -> DeploymentRecord:
        """Stop the rollout: ECS rolls its service deployment back (StopServiceDeployment),
        else the previous task definition goes back at once (UpdateService); followed to its
        end, the deployment closes ABORTED (``abort_via`` says which way ECS was asked).
        Refused when nothing is rolling out, or (``of``: a Stop button's deployment) when that
        one no longer is.
        Returns the aborted record (``abort_ecs_deployment_id`` once ECS said)."""
        via = via or Via.of(requester)
        decision = self.planner.check(Action.ABORT, requester, via)
        record = self.rolling_out()
        name = self.target.name
        if of and (record is None or record.id != of):
            now = f"; {record.kind} {record.id} of {record.tag} is" if record else ""
            raise NothingToAbort(
                f"Deployment {of} is no longer rolling out{now}. Nothing was changed."
            )
        if record is None:
            raise NothingToAbort(
                f"Nothing is rolling out on {name}: nothing to abort. To go back from what "
                f"runs, roll back (`{self.hints.rollback(name)}`)."
            )
        if record.aborted_by:
            raise NothingToAbort(
                f"{record.kind} {record.id} of {record.tag} is already being aborted by "
                f"{record.aborted_by}."
            )
        if record.task_definition == record.previous_task_definition:
            raise NothingToAbort(
                f"{record.kind} {record.id} runs the task definition that ran before it "
                f"({revision_of(record.previous_task_definition)}): there is nothing to put "
                "back. Roll back instead."
            )
        record = self._ended_before_abort(record)
        marked = self.ledger.mark_aborted(record, requester.name)
        if marked is None:
            raise NothingToAbort(
                f"{record.kind} {record.id} of {record.tag} ended, or is being aborted, "
                f"meanwhile; nothing was changed. `{self.hints.status(name)}` shows what runs."
            )
        # How ECS is asked is recorded before it is asked: whoever closes the record at the
        # restore's end (the deploy's own watch, another replica) may read it before this
        # process hears ECS's answer, and the history says how (seen under load at 1325714).
        stopping = self._asked(marked, ABORT_BY_STOP) if self._can_stop(record) else None
        if stopping is not None and self._stop_in_ecs(stopping):
            marked = stopping
            log.warning(
                "aborted by %s: ECS rolls the service deployment back to %s "
                "(StopServiceDeployment)%s",
                requester.name,
                record.previous_tag,
                "; " + "; ".join(b.message for b in decision.bypassed) if decision.bypassed else "",
                extra={**record.log_fields, "aborted_by": requester.name},
            )
            return marked
        marked = self._asked(marked, ABORT_BY_UPDATE)
        try:
            # Under a session named for who aborts (bot/deploy/aws.py, session_name).
            updated = self.aws.acting_for(requester.who).update_service(
                record.previous_task_definition
            )
        except Exception as exc:
            if refused_outright(exc):
                try:
                    self.ledger.unmark_aborted(record)
                except DeployError as undo:
                    log.warning("could not undo the abort mark: %s", undo, extra=record.log_fields)
                with aws_errors("putting the previous task definition back"):
                    raise exc
            # Its answer is lost: ECS may be putting it back; whoever follows the record
            # adopts the deployment of the previous task definition (Reconciler._aborting).
            log.warning(
                "abort: UpdateService's answer is unknown (%s)",
                describe_failure(exc),
                extra=record.log_fields,
            )
        else:
            primary = ServiceState.from_api(updated).primary
            if primary is not None:
                try:
                    marked = self.ledger.set_abort_deployment(marked, primary.id)
                except DeployError as exc:
                    log.warning("could not record the abort: %s", exc, extra=record.log_fields)
        log.warning(
            "aborted by %s: putting %s back with UpdateService%s",
            requester.name,
            record.previous_tag,
            "; " + "; ".join(b.message for b in decision.bypassed) if decision.bypassed else "",
            extra={**record.log_fields, "aborted_by": requester.name},
        )
        return marked

    def _stop_in_ecs(self, record: DeploymentRecord) -> bool:
        """Ask ECS to roll ``record``'s service deployment back (StopServiceDeployment,
        stopType ROLLBACK: "rolls back the service deployment to the previous service
        revision", https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
        API_StopServiceDeployment.html), which restores the whole previous revision and is
        recorded as a rollback in ECS's history. False when it cannot be asked (no service
        deployment known, the operations refused) or ECS did not take it: any failure, a lost
        answer included, is followed by UpdateService with the previous task definition, as
        before #26. Both put the same revision back; if both land, the restore is followed
        either way (Reconciler._aborting) and the record still closes ABORTED."""
        if not self._can_stop(record):
            return False
        arn = record.service_deployment_arn
        try:
            self.aws.stop_service_deployment(arn, "ROLLBACK")
        except Exception as exc:
            log.warning(
                "abort: ECS did not take StopServiceDeployment(ROLLBACK) (%s): putting the "
                "previous task definition back with UpdateService",
                describe_failure(exc),
                extra=record.log_fields,
            )
            return False
        return True

    def _can_stop(self, record: DeploymentRecord) -> bool:
        """Whether StopServiceDeployment can be asked: a service deployment is known, and
        the operations are not refused (the fallback)."""
        return bool(record.service_deployment_arn) and not self.aws.service_deployments.refused

    def _asked(self, record: DeploymentRecord, via: str) -> DeploymentRecord:
        try:
            return self.ledger.set_abort_via(record, via)
        except DeployError as exc:  # the outcome names the way only if recorded
            log.warning("could not record how ECS was asked: %s", exc, extra=record.log_fields)
            return replace(record, abort_via=via)

    def _ended_before_abort(self, record: DeploymentRecord) -> DeploymentRecord:
        """Read ECS before marking ``record`` aborted: a deployment ECS has already ended (the
        circuit breaker failed it and is rolling back, it completed, someone replaced it) is
        closed with what ECS did, which may freeze the target (freeze_after_failure), and the
        abort is refused (NothingToAbort) saying so; so is one ECS is already rolling back or
        stopping (its service deployment says so: it closes when ECS is done). A deployment ECS
        still rolls out: the record as read (its service deployment's ARN once found)."""
        state = ServiceState.from_api(self.reads.service())
        now = self.clock.now()
        reading = self.reconciler.read(record, state, now)
        verdict = reading.verdict
        what = f"{record.kind} {record.id} of {record.tag}"
        sd = reading.service_deployment or {}
        if verdict is None and sd.get("status") in _ECS_UNDOING:
            back = record.previous_tag or revision_of(record.previous_task_definition)
            monitors = (sd.get("deploymentCircuitBreaker") or {}).get("status")
            who = (
                "the circuit breaker was"
                if monitors == "TRIGGERED"
                and not (sd.get("alarms") or {}).get("triggeredAlarmNames")
                else "ECS was"
            )
            doing = "stopping" if sd.get("status") == "STOP_REQUESTED" else "rolling back"
            raise NothingToAbort(
                f"Nothing to abort: {who} already {doing} {what}"
                + (f" to {back}" if doing != "stopping" else "")
                + f" ({service_deployments.why_rolled_back(sd)}). Nothing was changed; it is "
                "recorded as ECS ends it."
            )
        if verdict is None:
            return reading.record
        final = self.reconciler.final_snapshot(
            reading.record, verdict, now, reading.ours, base=record.final
        )
        closed, _ = self.reconciler.settle(reading.record, final)
        outcome = closed.outcome if closed.outcome is not None else verdict.outcome
        reason = (closed.outcome_reason or verdict.reason).rstrip(".")
        if outcome is Outcome.ROLLED_BACK:
            back = final.rollback_tag or revision_of(final.rollback_task_definition)
            raise NothingToAbort(
                f"Nothing to abort: the circuit breaker was already rolling back {what} to "
                f"{back} ({reason}). It is recorded as rolled back; nothing was changed."
            )
        raise NothingToAbort(
            f"Nothing to abort: ECS had already ended {what} ({outcome.label}: {reason}). It is "
            f"recorded so; nothing was changed. `{self.hints.status(self.target.name)}` shows "
            "what runs."
        )

    def follow_abort(
        self, record: DeploymentRecord, on_wait: Callable[[], None] | None = None
    ) -> tuple[Outcome | None, str]:
        """The abort's own short watch: follow ECS from the abort's UpdateService to the
        restore's end, with its own timeout (ROLLOUT_TIMEOUT_SECONDS from now, not from the
        aborted deployment's start). Each poll reads ECS (one DescribeServices) and the record
        (one GetItem), whoever holds the record's follower lease: the restore's end closes it
        here (conditionally: a live follower that closed it first is read, not overwritten),
        which releases the lock; a dead follower's record is so taken over. Returns the outcome
        and its reason, or (None, why) at the timeout: the record stays open and the lock held
        while ECS still restores (any later reader closes it once ECS is done)."""
        poll = self.settings.rollout_poll_seconds
        deadline = self.clock.monotonic() + self.settings.rollout_timeout_seconds
        problem = ""
        while True:
            try:
                fresh = self.ledger.get_record(record.sort_key) or record
                if fresh.settled and fresh.outcome is not None:
                    return fresh.outcome, fresh.outcome_reason
                if fresh.id not in self.poller.tracking():  # else this process's poller closes it
                    state = ServiceState.from_api(self.reads.service())
                    now = self.clock.now()
                    reading = self.reconciler.read(fresh, state, now)
                    if reading.verdict is not None:
                        final = self.reconciler.final_snapshot(
                            reading.record, reading.verdict, now, reading.ours, base=fresh.final
                        )
                        closed, _ = self.reconciler.settle(reading.record, final)
                        if closed.settled and closed.outcome is not None:
                            return closed.outcome, closed.outcome_reason
                        return reading.verdict.outcome, reading.verdict.reason
                problem = ""
            except DeployError as exc:  # AWS not answering: keep trying until the timeout
                log.warning("abort: could not read the restore: %s", exc, extra=record.log_fields)
                problem = exc.message
            if self.clock.monotonic() >= deadline:
                return None, problem
            if on_wait is not None:
                on_wait()
            self.clock.wait(poll)
