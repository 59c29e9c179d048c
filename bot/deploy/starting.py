"""Starting a plan: the lock with the checks that must hold with it (windows, freeze, queue,
an approval's premise), the new revision, the record, then UpdateService. From the moment
UpdateService is sent nothing is "refused": if its answer is lost the record stays open, the
lock held, and the follower adopts whatever ECS did."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import timedelta

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, ParamValidationError

from bot.deploy.aws import aws_errors, error_code
from bot.deploy.guardrails import Guardrails
from bot.deploy.lock import Locking
from bot.deploy.parts import Parts, Stage
from bot.deploy.plan_diff import registration
from bot.deploy.reads import TAG_KEY, Reads
from bot.deploy.records import DeploymentRecord, Plan, Requester, new_deployment_id
from bot.deploy.rollout import Outcome, ServiceState, Verdict, revision_of
from bot.deploy.table import Precondition, PreconditionFailed, freeze_from_item
from bot.errors import AbortedFirst, DeployError
from bot.rules import (
    CHANGES,
    Action,
    Door,
    Facts,
    RuleRefused,
    at_start,
    frozen_meanwhile,
    lapsed_approval,
)

log = logging.getLogger("deploybot.engine")

_TAG_VALUE = re.compile(r"[^\w .:/=+\-@]")
_THROTTLED = ("ThrottlingException", "Throttling", "TooManyRequestsException")


class Starter(Stage):
    """Starts the plans of one target."""

    def __init__(self, parts: Parts, reads: Reads, lock: Locking, guardrails: Guardrails) -> None:
        super().__init__(parts)
        self.reads = reads
        self.lock = lock
        self.guardrails = guardrails

    def start(self, plan: Plan, message_ref: str = "", follow: bool = True) -> DeploymentRecord:
        """Take the lock, register the revision, record the deployment, ask ECS; then the
        poller follows it (unless ``follow`` is False: ``--no-wait``; any later engine call
        reconciles it). Raises LockHeld (or AWS trouble) only before ECS was asked."""
        current = plan.current
        started_at = self.clock.now()
        record = DeploymentRecord(
            id=new_deployment_id(self.clock),
            service=self.service_name,
            kind=plan.kind,
            tag=plan.tag,
            image=plan.image,
            task_definition=current.task_definition,
            previous_task_definition=current.task_definition,
            previous_tag=current.tag,
            ecs_deployment_id="",
            who=plan.requester.who,
            who_display=plan.requester.name,
            who_arn=self._caller_arn(plan.requester),
            source=plan.requester.source,
            reason=plan.reason,
            started_at=started_at,
            message_ref=message_ref,
            digest=plan.digest,
            previous_image=current.image,
            previous_digest=current.digest,
            previous_ecs_deployment_id=current.ecs_deployment_id,
            rollback_of=plan.rollback_of,
            approved_by=plan.approved_by,
            approval_request=plan.request_id,
            break_glass=plan.break_glass,
            bypassed=tuple(b.message for b in plan.decision.bypassed) + plan.alarm_notes,
            commit=plan.commit,
            previous_commit=plan.previous_commit,
        )
        if plan.decision.needs_approval and not plan.decision.allowed:
            raise RuleRefused(plan.decision)  # a plan made for an approval request
        if follow:  # followed from its first write: no other process takes it meanwhile
            record = replace(
                record,
                follower=self.poller.follower,
                follower_until=started_at + timedelta(seconds=self.settings.lock_lease_seconds),
                follower_beat=1,
            )
        self._take_lock(plan, record)
        # The change's calls under a session named for its requester: in a target account
        # (Target.role_arn) its CloudTrail shows who (bot/deploy/aws.py, session_name).
        aws = self.aws.acting_for(plan.requester.who)
        td = plan.base or None  # the new revision's log configuration is the same
        try:
            if plan.kind != "redeploy":
                if not td:
                    with aws_errors("reading the task definition"):
                        td, _ = aws.describe_task_definition(current.task_definition)
                # What the plan showed, when it has it (bot/deploy/plan_diff.py): the same
                # function made it from the same revision.
                if plan.task is not None and plan.task.diff.registers:
                    kwargs = plan.task.registration
                else:
                    kwargs = registration(td, self.reads.container(td)["name"], plan.image)
                with aws_errors("registering the new task definition"):
                    registered = aws.register_task_definition(
                        **kwargs, tags=_revision_tags(plan, record.id)
                    )
                record = replace(record, task_definition=str(registered["taskDefinitionArn"]))
            # Recorded before ECS is asked: a process that dies in between leaves a record
            # that a reconcile finishes (or proves never started), never a lock nobody knows.
            self.ledger.record(record)
            if plan.tag_state:  # the image this release tag names, from its first deploy
                self.ledger.remember_tag(
                    self.settings.ecr_repository,
                    plan.tag,
                    plan.digest,
                    record.id,
                    moved_from=plan.tag_was if plan.tag_state == "moved" else None,
                )
            # An abort may come once the record is written: it finds it open with no ECS
            # deployment, marks it and puts back the task definition ECS still runs. Asking
            # ECS after that would roll the image out after the abort said the previous one
            # was back (#31, the randomized soak, seed 247036231: the record's put answered
            # late). One consistent read; an abort marked after it finds our ECS deployment.
            fresh = self.ledger.get_record(record.sort_key)
        except BaseException:
            # ECS was not asked: the record (if its put was applied) goes with the lock, as
            # for a refused UpdateService. Left open, it stood in the history as "starting"
            # until a reconcile proved it never started.
            self._undo_record(record)
            raise
        if fresh is not None and fresh.aborted_by:
            self._stand_down(replace(record, aborted_by=fresh.aborted_by))
        # From here on ECS may change. Nothing below says "nothing changed" unless ECS's own
        # answer proves it; everything else is followed to what ECS did.
        try:
            updated = aws.update_service(record.task_definition, force=plan.kind == "redeploy")
        except Exception as exc:
            asked_at = self.clock.monotonic()
            if refused_outright(exc):
                self._undo_record(record)
                with aws_errors("updating the service"):
                    raise exc
            problem = describe_failure(exc)
            log.warning(
                "UpdateService's answer is unknown (%s): following what ECS does",
                problem,
                extra=record.log_fields,
            )
            record = replace(
                record,
                start_error=f"ECS may have started the deployment (UpdateService: {problem}); "
                "following it",
            )
            self.github_deployments.started(record)
            if follow:
                self.poller.follow(
                    record,
                    asked_ecs_at=asked_at,
                    note=record.start_error,
                    started_here=True,
                    task_definition=td,
                )
                return record
            return self._started_or_not(record, asked_at)
        asked_at = self.clock.monotonic()
        primary = ServiceState.from_api(updated).primary
        ecs_id = primary.id if primary else ""
        try:
            record = self.ledger.set_ecs_deployment(record, ecs_id)
        except DeployError as exc:
            log.warning("could not record the ECS deployment id: %s", exc, extra=record.log_fields)
            record = replace(
                record,
                ecs_deployment_id=ecs_id,
                start_error=f"ECS started deployment {ecs_id}, but recording it failed "
                f"({exc.message}); following it all the same",
            )
        log.info(
            "%s of %s started by %s",
            plan.kind,
            plan.tag,
            plan.requester.name,
            extra={**record.log_fields, "kind": plan.kind, "ecs_deployment_id": ecs_id},
        )
        self.github_deployments.started(record)
        if follow:
            self.poller.follow(record, asked_ecs_at=asked_at, started_here=True, task_definition=td)
        return record

    def _stand_down(self, record: DeploymentRecord) -> None:
        """``record`` was aborted before ECS was asked: close it NOT_STARTED (the abort's
        watch reads that: nothing changed), release the lock, and refuse (AbortedFirst)."""
        back = record.previous_tag or revision_of(record.previous_task_definition)
        reason = (
            f"aborted by {record.aborted_by} before ECS was asked; nothing changed, "
            f"{back} still runs"
        )
        now = self.clock.now()
        final = self.reconciler.final_snapshot(
            record, Verdict(Outcome.NOT_STARTED, reason), now, None
        )
        self.reconciler.settle(record, final)
        log.warning("%s of %s %s", record.kind, record.tag, reason, extra=record.log_fields)
        raise AbortedFirst(f"{record.kind.capitalize()} {record.id} of {record.tag} was {reason}.")

    def _caller_arn(self, requester: Requester) -> str:
        """Who AWS says made a terminal's change (its credentials' ARN), beside the name it
        declared; asked only once a change starts (a refusal costs no STS call), once per
        process. A bot's changes are its Slack users': their ids say who."""
        if requester.aws_identity or requester.source != "cli":
            return requester.aws_identity
        return self.aws.caller_arn()

    def _started_or_not(self, record: DeploymentRecord, asked_at: float) -> DeploymentRecord:
        """A start nobody will follow (``--no-wait``) whose UpdateService answer was lost: read
        ECS until it shows the deployment (adopted) or proves none started (closed NOT_STARTED,
        the lock released), a few polls (the reconciler's start grace). Left open, such a
        record would hold the lock until NEVER_STARTED_AFTER (minutes) let another process
        judge it (#31, found by the randomized lifecycle test). AWS not answering meanwhile:
        left to the next reader, as before."""
        grace = self.reconciler.start_grace.total_seconds()
        deadline = asked_at + grace + 30
        while True:
            try:
                state = ServiceState.from_api(self.reads.service())
                now = self.clock.now()
                reading = self.reconciler.read(record, state, now, asked_ecs_at=asked_at)
                verdict = reading.verdict
                if verdict is not None and verdict.outcome is Outcome.NOT_STARTED:
                    final = self.reconciler.final_snapshot(reading.record, verdict, now, None)
                    closed, _ = self.reconciler.settle(reading.record, final)
                    return replace(closed, start_error="")
                if reading.record.ecs_deployment_id:
                    return replace(
                        reading.record,
                        start_error="UpdateService's answer was lost, but ECS had started the "
                        f"deployment ({reading.record.ecs_deployment_id})",
                    )
            except DeployError as exc:
                log.warning("could not read the start: %s", exc, extra=record.log_fields)
            if self.clock.monotonic() >= deadline:
                return record
            self.clock.wait(self.settings.rollout_poll_seconds)

    def _take_lock(self, plan: Plan, record: DeploymentRecord) -> None:
        """Take the lock for ``plan``, judging with it what may have changed since the plan:
        for a change (deploy, redeploy, promote) the windows by the clock of this moment,
        then the freeze and the queue in the lock's own transaction (a freeze written after
        the plan read none refuses it; one written after this is after it); an approved
        change, once the lock is held, its request's expiry and premise."""
        via, action = plan.via, Action(plan.kind)
        checks: list[Precondition] = []
        facts = Facts(break_glass=via.break_glass)
        if action in CHANGES:
            at_start(
                self.target,
                action,
                door=via.door,
                who=plan.requester.who,
                channel=via.channel,
                now=self.clock.now(),
                facts=facts,
                hints=self.hints,
            ).raise_if_refused()
            checks.append(self.guards.freeze_absent())
            if via.door is not Door.QUEUE and not via.break_glass:
                checks.append(self.guards.queue_empty())
        try:
            self.lock.acquire(plan.requester, plan.tag, record.id, record.sort_key, checks)
        except PreconditionFailed as failed:
            now = self.clock.now()
            if failed.check.name == "freeze" and failed.item:
                frozen = freeze_from_item(failed.item)
                decision = frozen_meanwhile(self.target, frozen, now=now, hints=self.hints)
            else:
                queued = int((failed.item or {}).get("deploys", {}).get("N", "1"))
                decision = at_start(
                    self.target,
                    action,
                    door=via.door,
                    who=plan.requester.who,
                    channel=via.channel,
                    now=now,
                    facts=replace(facts, queued=max(1, queued)),
                    hints=self.hints,
                )
            log.warning(
                "%s of %s refused as the lock was taken: %s",
                plan.kind,
                plan.tag,
                decision.message,
                extra=record.log_fields,
            )
            raise RuleRefused(decision) from None
        if not plan.request_id:
            return
        try:
            why = self.guardrails.approval_lapsed(plan.request_id, plan.digest, plan)
        except BaseException:
            self.ledger.release(record.id)
            raise
        if why is not None:
            self.ledger.release(record.id)
            raise RuleRefused(lapsed_approval(self.target, plan.kind, plan.tag, why, self.hints))

    def _undo_record(self, record: DeploymentRecord) -> None:
        try:
            self.ledger.forget(record)
            self.ledger.release(record.id)
        except DeployError as exc:  # a reconcile closes it as never started later
            log.warning("could not remove the record: %s", exc, extra=record.log_fields)


def refused_outright(exc: BaseException) -> bool:
    """True only when the exception proves ECS did not apply the call: it was never sent,
    or its one and only attempt was answered with a client error. An error after botocore
    retried never proves an earlier attempt was not applied."""
    if isinstance(exc, NoCredentialsError | NoRegionError | ParamValidationError):
        return True
    if not isinstance(exc, ClientError):
        return False
    meta = exc.response.get("ResponseMetadata", {})
    status = int(meta.get("HTTPStatusCode", 0))
    return (
        meta.get("RetryAttempts") == 0 and 400 <= status < 500 and error_code(exc) not in _THROTTLED
    )


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")
    if isinstance(exc, DeployError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _revision_tags(plan: Plan, deployment_id: str) -> list[dict[str, str]]:
    def clean(value: str) -> str:
        return _TAG_VALUE.sub("_", value)[:256] or "-"

    tags = [
        {"key": "deploybot:deployment", "value": deployment_id},
        {"key": TAG_KEY, "value": clean(plan.tag)},
        {"key": "deploybot:deployed-by", "value": clean(plan.requester.name)},
        {"key": "deploybot:source", "value": clean(plan.requester.source)},
    ]
    if plan.reason:
        tags.append({"key": "deploybot:reason", "value": clean(plan.reason)})
    if plan.rollback_of:
        tags.append({"key": "deploybot:rollback-of", "value": plan.rollback_of})
    return tags
