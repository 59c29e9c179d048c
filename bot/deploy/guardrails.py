"""The guardrails' decisions: freezing and unfreezing (and freezing after a failure), approval
requests (asked, approved, rejected, and whether an approval still holds), and the queue of
deploys waiting for the lock (queued, cancelled, each turn taken and checked again). Stored in
the guardrail store (bot/deploy/guards.py); the rules are bot/rules.py's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot.deploy.aws import aws_errors
from bot.deploy.guards import AlreadyQueued, QueueFull
from bot.deploy.lock import Locking
from bot.deploy.parts import Parts, Stage
from bot.deploy.plan_diff import summary_line
from bot.deploy.plan_diff import text_lines as shown_plan
from bot.deploy.planning import Planner
from bot.deploy.reads import Reads
from bot.deploy.records import (
    Approval,
    ApprovalRequest,
    DeploymentRecord,
    News,
    Plan,
    QueuedItem,
    QueueMode,
    Requester,
    RequestState,
    Turn,
    Via,
    short_digest,
)
from bot.deploy.rollout import Snapshot
from bot.errors import BadTag, DeployError, DeployRefused, LockHeld, NoSuchRequest
from bot.rules import (
    Action,
    Door,
    Facts,
    Freeze,
    Rule,
    RuleRefused,
    check,
    freeze_after_failure,
    lapsed_approval,
    missing_approvals,
)
from bot.tags import TagError, parse_tag

log = logging.getLogger("deploybot.engine")

# The plan's lines a request keeps to show (its message has room for a section of them).
PLAN_LINES_KEPT = 40


class Guardrails(Stage):
    """The freeze, approvals and queue of one target."""

    def __init__(self, parts: Parts, reads: Reads, lock: Locking, planner: Planner) -> None:
        super().__init__(parts)
        self.reads = reads
        self.lock = lock
        self.planner = planner

    def freeze(self, requester: Requester, reason: str, *, via: Via | None = None) -> Freeze:
        """Freeze the target: deploys, redeploys, promotions and approvals are refused until
        unfreeze; rollback and abort still go (and say so). Refused if it is frozen already."""
        reason = " ".join(reason.split())
        if not reason:
            raise DeployRefused(
                f"Say why {self.target.name} is frozen (an incident, a release freeze): it is "
                "what everyone who is refused reads."
            )
        via = via or Via.of(requester)
        self.planner.check(Action.FREEZE, requester, via)
        freeze = Freeze(
            by=requester.who if via.door is not Door.CLI else requester.name,
            since=self.clock.now(),
            reason=reason[:500],
            via="cli" if via.door is Door.CLI else "slack",
        )
        already = self.guards.freeze(freeze)
        if already is not None:  # frozen by someone else between the check and the put
            self.planner.check(Action.FREEZE, requester, via)
            raise DeployRefused(f"{self.target.name} is already frozen: {already.reason}")
        log.warning(
            "%s frozen by %s: %s",
            self.target.name,
            requester.name,
            freeze.reason,
            extra={"service": self.service_name, "who": requester.who, "source": via.door.value},
        )
        return freeze

    def unfreeze(self, requester: Requester, *, via: Via | None = None) -> Freeze:
        """Lift the freeze; what it was. Refused if the target is not frozen."""
        via = via or Via.of(requester)
        self.planner.check(Action.UNFREEZE, requester, via)
        lifted = self.guards.unfreeze()
        if lifted is None:
            raise DeployRefused(f"{self.target.name} is not frozen")
        log.warning(
            "%s unfrozen by %s (frozen by %s: %s)",
            self.target.name,
            requester.name,
            lifted.by,
            lifted.reason,
            extra={"service": self.service_name, "who": requester.who, "source": via.door.value},
        )
        return lifted

    def after_settled(self, record: DeploymentRecord, final: Snapshot) -> None:
        """A record this process closed: freeze the target if its rules say a failure does."""
        if record.outcome is None:
            return
        freeze = freeze_after_failure(
            self.target,
            outcome=record.outcome.value,
            image=record.tag,
            deployment=record.id,
            at=self.clock.now(),
        )
        if freeze is not None and self.guards.freeze(freeze) is None:
            log.warning("frozen after a failure: %s", freeze.reason, extra=record.log_fields)
            # Whichever process closed it (a terminal, a bot), the channel hears of it.
            try:
                self.ledger.add_news(
                    News(
                        "freeze-after-failure",
                        freeze.by,
                        freeze.since,
                        reason=freeze.reason,
                        deployment_id=record.id,
                        tag=record.tag,
                    )
                )
            except DeployError as exc:
                log.warning("the freeze is not told to the channel: %s", exc)

    def request_approval(self, plan: Plan, channel: str = "", source: str = "") -> ApprovalRequest:
        """Record an approval request for ``plan`` (made with ``Via(asking=True)``): who asked
        for what, from which image to which, until when; ``source``: promote's source target."""
        now = self.clock.now()
        task = plan.task
        return self.guards.new_request(
            ApprovalRequest(
                id="",
                kind=plan.kind,
                tag=plan.tag,
                digest=plan.digest,
                from_tag=plan.current.tag,
                from_digest=plan.current.digest,
                from_task_definition=plan.current.task_definition,
                requester=plan.requester,
                reason=plan.reason,
                requested_at=now,
                expires_at=now + self.target.approval_expiry,
                channel=channel,
                source=source or plan.source,
                fingerprint=task.fingerprint if task else "",
                plan=tuple(shown_plan(task)[:PLAN_LINES_KEPT]) if task else (),
                plan_summary=summary_line(task.diff) if task else "",
                newer=task.newer if task else "",
            )
        )

    def request(self, request_id: str) -> ApprovalRequest:
        """The request ``request_id`` of this target; NoSuchRequest when there is none (a
        button whose value was changed, or a request removed long after it expired)."""
        found = self.guards.request(request_id)
        if found is None:
            raise NoSuchRequest(
                f"No approval request {request_id[:64]!r} for {self.target.name}: nothing was "
                f"changed. Ask again with `{self.hints.in_slack_words().deploy(self.target.name)}`."
            )
        return found

    def approve(
        self,
        request_id: str,
        approver: Requester,
        *,
        via: Via,
        replan: Callable[[ApprovalRequest, Via], Plan] | None = None,
    ) -> Approval:
        """Count ``approver``'s approval of a request, after the rules (who, expiry, freeze,
        windows) and the request's premise (what runs and the image are still what it
        showed). With enough approvals, the plan of the change, made again through the
        rules with the approvals (by ``replan`` when the transport knows more than this
        engine: promotion's source): the transport shows it, then starts it."""
        request = self.request(request_id)
        self._decided(request)
        premise = self._premise(request)
        facts = Facts(
            image=request.tag,
            source=request.source or via.source,
            completed_on_source=via.completed_on_source,
            freeze=self.guards.current_freeze(),
            approved_by=request.approved_by,
            requested=Action(request.kind),
            requested_by=request.requester.who,
            requested_at=request.requested_at,
            premise_changed=premise,
        )
        check(
            self.target,
            Action.APPROVE,
            door=via.door,
            who=approver.who,
            channel=via.channel,
            now=self.clock.now(),
            facts=facts,
        ).raise_if_refused()
        counted = self.guards.add_approval(request, approver.who)
        if counted is None:
            self._decided(self.request(request_id))
            raise NoSuchRequest("You approved this request already.")
        missing = missing_approvals(self.target, counted.requester.who, counted.approved_by)
        if missing:
            return Approval(counted, missing)
        again = replace(
            via,
            approved_by=counted.approved_by,
            request_id=counted.id,
            source=counted.source or via.source,
        )
        try:
            plan = (replan or self._plan_request)(counted, again)
        except (LockHeld, RuleRefused) as exc:
            if isinstance(exc, RuleRefused) and exc.rule is not Rule.QUEUE:
                raise
            # Approved all the same: it waits for its turn, in the queue, with its approvals.
            if not self.guards.decide(counted, RequestState.APPROVED, approver.who):
                self._decided(self.request(request_id))
            return Approval(replace(counted, state=RequestState.APPROVED), 0, None, exc)
        if plan.digest != counted.digest:
            raise NoSuchRequest(
                f"This request no longer holds: it would now deploy {plan.tag} "
                f"({plan.short_digest}), not {counted.tag} ({short_digest(counted.digest)}). "
                "Ask again."
            )
        task = plan.task
        changed = self._plan_changed(counted, task.fingerprint, task.newer) if task else None
        if changed is not None:
            log.warning("approval void: %s", changed, extra={"request": counted.id})
            raise RuleRefused(
                lapsed_approval(self.target, plan.kind, plan.tag, changed, self.hints)
            )
        if not self.guards.decide(counted, RequestState.APPROVED, approver.who):
            self._decided(self.request(request_id))
        return Approval(replace(counted, state=RequestState.APPROVED), 0, plan)

    def reject(self, request_id: str, who: Requester) -> ApprovalRequest:
        """Reject a pending request: an approver, or the requester withdrawing it."""
        request = self.request(request_id)
        self._decided(request)
        # Rejecting changes nothing on the target: the requester may withdraw, an approver
        # may say no, whatever the clock, the freeze or the premise.
        if who.who != request.requester.who and not self.target.may_approve(who.who):
            raise NoSuchRequest(
                f"Only {self.target.name}'s approvers, or {request.requester.name} who asked, "
                "may reject this request."
            )
        if not self.guards.decide(request, RequestState.REJECTED, who.who):
            self._decided(self.request(request_id))
        return replace(request, state=RequestState.REJECTED, decided_by=who.who)

    def _decided(self, request: ApprovalRequest) -> None:
        if request.state is RequestState.PENDING:
            return
        by = f" by {request.decided_by}" if request.decided_by else ""
        raise NoSuchRequest(f"This request was {request.state.value}{by} already.")

    def _premise(self, request: ApprovalRequest) -> str | None:
        """What changed since the request was made, for a person; None when nothing did."""
        raw = self.reads.service()
        running_td = str(raw.get("taskDefinition", ""))
        if running_td != request.from_task_definition:
            current, _ = self.reads.running(raw, self.reads.recorded(20))
            return f"{self.target.name} runs {current.describe()} now, not {request.from_tag}"
        with aws_errors("looking the image up in ECR"):
            found = self.aws.image_by_digest(request.digest) if request.digest else None
        if found is None:
            return f"the image {request.tag} ({short_digest(request.digest)}) is gone from ECR"
        if request.kind == "deploy":
            with aws_errors("looking the image up in ECR"):
                tagged = self.aws.image(request.tag)
            if tagged is None or str(tagged.get("imageDigest", "")) != request.digest:
                return f"{request.tag} points to another image now"
        return None

    def _plan_request(self, request: ApprovalRequest, via: Via) -> Plan:
        if request.kind == "redeploy":
            return self.planner.plan_redeploy(request.requester, request.reason, via=via)
        return self.planner.plan_deploy(request.tag, request.requester, request.reason, via=via)

    def approval_lapsed(self, request_id: str, digest: str, plan: Plan | None = None) -> str | None:
        """Why an approval no longer counts for the change about to start (its request
        expired, is no longer approved, or its premise changed: what runs is not what it
        showed, the image is another, or the plan's fingerprint, read again now, is not the
        one the request showed: ``plan``, the change about to start), for a person; None when
        it still holds."""
        request = self.guards.request(request_id)
        if request is None or request.state is not RequestState.APPROVED:
            return f"its approval request {request_id[:64]} is not approved"
        if request.expired(self.clock.now()):
            return (
                f"its approval request expired at {request.expires_at:%H:%M:%S} UTC "
                f"(requests last {self.target.approval_expiry_minutes} minutes)"
            )
        if digest != request.digest:
            return (
                f"it was approved for {request.tag} ({short_digest(request.digest)}), not "
                f"{short_digest(digest)}"
            )
        premise = self._premise(request)
        if premise is not None or plan is None or plan.task is None or not request.fingerprint:
            return premise
        image = plan.image if plan.task.diff.registers else ""
        now, newer = self.planner.fingerprint_now(image)
        return self._plan_changed(request, now, newer)

    def _plan_changed(self, request: ApprovalRequest, now: str, newer: str) -> str | None:
        """Why the plan now (its fingerprint ``now``, the family's ``newer`` revision) is not
        the one the request showed, for a person; None when it is (or the request has no
        fingerprint: one from before them). Asked after the premise: what runs and the image
        are the same by then."""
        if not request.fingerprint or now == request.fingerprint:
            return None
        if newer and newer != request.newer:
            return (
                f"a new revision of the task definition family, {newer}, was registered "
                "since the approval was asked (not by deploybot): the plan it showed is not the "
                "plan now"
            )
        return (
            "the task definition the change would register is not the one the approval showed "
            "(its plan changed)"
        )

    def enqueue(
        self,
        requester: Requester,
        *,
        mode: QueueMode = QueueMode.DEPLOY,
        kind: str = "deploy",
        tag: str = "",
        reason: str = "",
        via: Via | None = None,
        thread: str = "",
    ) -> tuple[QueuedItem, int]:
        """Queue a deploy for when the lock is free (or a person to tell then); the item and
        its position (1: next). The deploy is checked again when its turn comes. ``thread``:
        the message in whose thread its requester is told (CI's notice: no person)."""
        via = via or Via.of(requester)
        if mode is QueueMode.DEPLOY and kind == "deploy":
            try:
                tag = parse_tag(tag, self.settings.image_tag_suffix).value
            except TagError as exc:
                raise BadTag(str(exc)) from None
        wanted = QueuedItem(
            id="",
            mode=mode,
            kind=kind if mode is QueueMode.DEPLOY else "",
            tag=tag,
            requester=requester,
            queued_at=self.clock.now(),
            channel=via.channel or "",
            reason=reason,
            approved_by=via.approved_by,
            request_id=via.request_id,
            source=via.source or "",
            thread=thread,
        )
        name = self.target.name
        try:
            item = self.guards.enqueue(wanted, self.target.queue_limit)
        except AlreadyQueued as already:
            found = self.guards.find(already.sort_key)
            place = self.guards.position(found) if found is not None else 0
            what = f"{kind} of {tag}" if mode is QueueMode.DEPLOY else "a notice"
            number = f" as number {place}" if place else ""
            raise DeployRefused(
                f"Already queued{number}: {what} for {requester.name} on {name}. Nothing "
                "was added; cancel it from its message to take it out."
            ) from None
        except QueueFull as full:
            raise DeployRefused(
                f"{requester.name} has {full.limit} deploys queued for {name} already "
                f"(queue_limit = {full.limit}): nothing was added. Cancel one, or wait for "
                "their turns."
            ) from None
        return item, self.queue_position(item)

    def queue(self) -> list[QueuedItem]:
        return self.guards.queue()

    def queue_position(self, item: QueuedItem) -> int:
        """1-based place among the queued items of the same mode; 0 when gone."""
        return self.guards.position(item)

    def cancel_queued(self, item_id: str, requester: Requester) -> QueuedItem:
        """Remove a queued item; only the person who queued it may, or, for an image CI's
        notice queued (deploy on push: no person), anyone who may deploy to the target or
        approve its deploys."""
        item = next((q for q in self.queue() if q.id == item_id), None)
        if item is None:
            raise NoSuchRequest(
                f"Nothing queued as {item_id[:64]!r} on {self.target.name}: it ran, was "
                "cancelled, or never was."
            )
        if item.requester.on_push:
            allowed = self.target.may_deploy(requester.who) or self.target.may_approve(
                requester.who
            )
            refusal = (
                f"Only someone who may deploy to {self.target.name} may cancel CI's deploy on "
                "push (or it has just been taken off the queue)."
            )
        else:
            allowed = item.requester.who == requester.who
            refusal = (
                f"Only {item.requester.name}, who queued it, may cancel it (or it has just "
                "been taken off the queue)."
            )
        # The table's condition: still queued, and (a person's own) still theirs.
        owner = item.requester.who if item.requester.on_push else requester.who
        if not allowed or not self.guards.take(item, owner):
            raise NoSuchRequest(refusal)
        log.info(
            "queued item cancelled",
            extra={"target": self.target.name, "item": item.id, "by": requester.who},
        )
        return item

    def next_turn(self, replan: Callable[[QueuedItem, Via], Plan] | None = None) -> Turn | None:
        """Take the first queued deploy when the lock is free, and check it again (rules,
        image, freeze, window, approvals) as a new request through the queue's door, by
        ``replan`` when the transport knows more than this engine (whether an image
        completed on the target it must come from). None when the queue is empty, the lock
        is held, or another process took it first. An approved one deploys only the image
        its approvers saw."""
        head = self.guards.head()
        if head is None:
            return None
        try:
            self.lock.check_lock()
        except LockHeld:
            return None
        if not self.guards.take(head):
            return None
        via = Via(
            door=Door.QUEUE,
            channel=head.channel or None,
            approved_by=head.approved_by,
            request_id=head.request_id,
            source=head.source or None,
        )
        try:
            plan = (replan or self._plan_queued)(head, via)
            if head.request_id:
                self._as_approved(head, plan)
        except LockHeld:
            self.guards.requeue(head)  # taken meanwhile: it keeps its place
            return None
        except DeployRefused as exc:
            return Turn(head, None, exc)
        return Turn(head, plan)

    def _plan_queued(self, item: QueuedItem, via: Via) -> Plan:
        if item.kind == "redeploy":
            return self.planner.plan_redeploy(item.requester, item.reason, via=via)
        return self.planner.plan_deploy(item.tag, item.requester, item.reason, via=via)

    def _as_approved(self, item: QueuedItem, plan: Plan) -> None:
        """A queued deploy that was approved goes only while its approval holds, exactly as
        for a direct approval: the request approved and not expired, what runs still what it
        showed ("from"), and the image the one it showed (the tag may have moved while it
        waited); else nothing."""
        why = self.approval_lapsed(item.request_id, plan.digest, plan)
        if why is not None:
            raise RuleRefused(lapsed_approval(self.target, plan.kind, plan.tag, why, self.hints))

    def lock_free_waiters(self) -> list[QueuedItem]:
        """Once the lock is free: the people who asked to be told, each taken off the queue
        by exactly one process (the transport tells them)."""
        waiting = self.guards.tells()
        if not waiting:
            return []
        try:
            self.lock.check_lock()
        except LockHeld:
            return []
        return [q for q in waiting if self.guards.take(q)]
