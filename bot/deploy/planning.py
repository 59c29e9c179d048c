"""Planning a change: a deploy, an image by digest (promote), a redeploy, a rollback, each
through the one rules check (bot/rules.py, ``Planner.check``) and the reads every plan shares.
A plan writes nothing but reconciliation; ``starting`` takes it from there."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.deploy.alarms import Alarms
from bot.deploy.aws import aws_errors
from bot.deploy.lock import Locking
from bot.deploy.parts import Parts, Stage
from bot.deploy.plan_checks import PlanCheckFailed, check_revision, refusal
from bot.deploy.plan_diff import TaskPlan, as_registered, diff, fingerprint, registration
from bot.deploy.reads import TAG_KEY, Reads, pinned
from bot.deploy.records import (
    DeploymentRecord,
    Plan,
    Requester,
    Running,
    TagRecord,
    Via,
    short_digest,
)
from bot.deploy.rollout import Outcome, ServiceState, revision_of
from bot.errors import (
    BadTag,
    DeployError,
    ImageMissing,
    MovedTag,
    NoLongerRunning,
    NothingToRollBack,
)
from bot.rules import CHANGES, Action, Decision, Door, Facts, RuleRefused, check
from bot.tags import TagError, parse_tag

log = logging.getLogger("deploybot.engine")


class Planner(Stage):
    """The plans of one target."""

    def __init__(self, parts: Parts, reads: Reads, lock: Locking) -> None:
        super().__init__(parts)
        self.reads = reads
        self.lock = lock
        self.alarms = Alarms(parts)

    def plan_deploy(
        self,
        tag_text: str,
        requester: Requester,
        reason: str = "",
        *,
        via: Via | None = None,
        images: list[dict[str, Any]] | None = None,
    ) -> Plan:
        """Check a deploy of ``tag_text`` (the tag and its digest in ECR, the rules, the
        service, the lock); refuse (DeployRefused) if it cannot go. Writes nothing but
        reconciliation.

        The tag first, from one listing of the repository (``images``: one made for this
        question): a tag ECR does not have is refused from that one call, which also names
        the recent tags; the plan's change summary reads the same listing."""
        images = images if images is not None else self.reads.ecr_images()
        tag, digest = self.resolve(tag_text, images)
        via = via or Via.of(requester)
        decision = self.check(Action.DEPLOY, requester, via, image=tag)
        records = self.reads.recorded(50)  # before the service: see _prepare below
        raw = self.reads.service()
        return self._plan_image(
            "deploy", tag, digest, requester, reason, raw, records, decision, via, images
        )

    def _parse(self, tag_text: str) -> str:
        try:
            return parse_tag(tag_text, self.settings.image_tag_suffix).value
        except TagError as exc:
            raise BadTag(str(exc)) from None

    def resolve(
        self,
        tag_text: str,
        images: list[dict[str, Any]] | None = None,
        recent: Sequence[str] | None = None,
    ) -> tuple[str, str]:
        """(tag, digest) ``tag_text`` names in ECR now (``images``: a listing made for this
        question; without, one DescribeImages of the tag); BadTag or ImageMissing (naming the
        recent tags: ``recent``, when the caller has them from ``images``) otherwise. Reads
        only."""
        tag = self._parse(tag_text)
        if images is None:
            with aws_errors("looking the image up in ECR"):
                image = self.aws.image(tag)
        else:
            image = next((i for i in images if tag in i.get("imageTags", ())), None)
        if image is None:
            recent = list(recent) if recent is not None else self.reads.recent_tags(5, images)
            hint = (
                f" Recent tags: {', '.join(recent)}."
                if recent
                else " The repository has no release images yet."
            )
            raise ImageMissing(
                f"No image tagged {tag} in ECR repository {self.settings.ecr_repository}.{hint}",
                tag=tag,
                recent=recent,
            )
        return tag, str(image["imageDigest"])

    def plan_image(
        self,
        kind: str,
        tag: str,
        digest: str,
        requester: Requester,
        reason: str = "",
        *,
        via: Via | None = None,
        images: list[dict[str, Any]] | None = None,
    ) -> Plan:
        """Check a deploy of one image by digest (``kind`` ``promote``: another target's
        digest; ``deploy``: a tag resolved before the rules were asked, from ``images``, a
        listing the change summary reads too); refused by the rules, or when ECR no longer
        has it. ``tag`` is the name people know it by."""
        via = via or Via.of(requester)
        decision = self.check(Action(kind), requester, via, image=tag)
        records = self.reads.recorded(50)  # before the service: see _prepare below
        raw = self.reads.service()
        self._require_image(
            digest,
            tag,
            f"The image {tag} ({short_digest(digest) or 'no digest'}) is no longer in ECR "
            f"repository {self.settings.ecr_repository}. Nothing was changed; deploy a tag "
            "that exists instead.",
        )
        return self._plan_image(
            kind, tag, digest, requester, reason, raw, records, decision, via, images
        )

    def _plan_image(
        self,
        kind: str,
        tag: str,
        digest: str,
        requester: Requester,
        reason: str,
        raw: dict[str, Any],
        records: list[DeploymentRecord],
        decision: Decision,
        via: Via,
        images: list[dict[str, Any]] | None = None,
    ) -> Plan:
        current, td, _ = self._prepare(raw, records, images)
        tag_state, tag_was = self._tag_check(kind, tag, digest, via, images)
        image = pinned(current.image, digest)
        plan = Plan(
            kind=kind,
            service=self.service_name,
            tag=tag,
            digest=digest,
            image=image,
            task=self.task_plan(current, td, image, tag, digest),
            current=current,
            requester=requester,
            reason=reason,
            base=td,
            change=self.reads.plan_change(current, digest, images),
            tag_state=tag_state,
            tag_was=tag_was,
            **_guarded(decision, via),
        )
        # The alarms last: the one read that only a plan that would otherwise go needs.
        return self.alarms.judge(plan, raw)

    def _tag_check(
        self,
        kind: str,
        tag: str,
        digest: str,
        via: Via,
        images: list[dict[str, Any]] | None,
    ) -> tuple[str, TagRecord | None]:
        """A release tag keeps its image (#24): an exact tag (``vX.Y.Z-…``, ``sha-…``) that
        now names another digest than the one deployed under it before is refused (MovedTag)
        unless the door allows it. Moving tags (``v4.4-…``, ``v4-…``) are meant to move. One
        GetItem by the tag's key. Returns the plan's ``tag_state`` and the record read."""
        if kind != "deploy":
            return "", None
        try:
            parsed = parse_tag(tag, self.settings.image_tag_suffix)
        except TagError:
            return "", None
        if parsed.is_moving:
            return "", None
        seen = self.ledger.tag_record(self.settings.ecr_repository, tag)
        if seen is None:
            return "new", None
        if seen.digest == digest:
            return "", seen
        if via.allow_moved_tag in ("any", digest):
            return "moved", seen
        pushed = next(
            (i.get("imagePushedAt") for i in images or () if i.get("imageDigest") == digest),
            None,
        )
        since = f" since {pushed:%Y-%m-%d %H:%M} UTC" if isinstance(pushed, datetime) else ""
        raise MovedTag(
            f"{tag} now names a different image ({short_digest(digest)}{since}) than the one "
            f"deployed on {seen.deployed_at:%Y-%m-%d} ({short_digest(seen.digest)}, "
            f"deployment {seen.deployment}). Nothing was changed. A release tag should keep "
            "its image: if this one was re-pushed on purpose, deploy it with "
            "--allow-moved-tag (or confirm in Slack).",
            tag=tag,
            digest=digest,
            recorded=seen.digest,
        )

    def plan_redeploy(
        self, requester: Requester, reason: str = "", *, via: Via | None = None
    ) -> Plan:
        """Check a forced new deployment of what runs now (its image must still be in ECR)."""
        via = via or Via.of(requester)
        decision = self.check(Action.REDEPLOY, requester, via)
        records = self.reads.recorded(50)
        raw = self.reads.service()
        current, td, _ = self._prepare(raw, records)
        self._require_image(
            current.digest,
            current.tag,
            f"The image that runs now ({current.tag}, {current.short_digest}) is no longer in "
            f"ECR repository {self.settings.ecr_repository}: new tasks could not pull it. "
            "Deploy a tag that exists instead.",
        )
        plan = Plan(
            kind="redeploy",
            service=self.service_name,
            tag=current.tag,
            digest=current.digest,
            image=current.image,
            task=self.task_plan(current, td, "", current.tag, current.digest),
            current=current,
            requester=requester,
            reason=reason,
            base=td,
            **_guarded(decision, via),
            change=self.reads.plan_change(current, current.digest or current.image),
        )
        return self.alarms.judge(plan, raw)

    def plan_rollback(
        self, requester: Requester, reason: str = "", of: str = "", *, via: Via | None = None
    ) -> Plan:
        """Check a rollback. With ``of`` (a deployment id: a message's Rollback button) it
        restores the image that ran before that deployment, and only while that deployment is
        what runs. Without, it goes to the newest release that completed and was not later
        rolled back from, never toggling between two releases."""
        via = via or Via.of(requester)
        decision = self.check(Action.ROLLBACK, requester, via)
        records = self.reads.recorded(100)
        raw = self.reads.service()
        current, td, history = self._prepare(raw, records)
        if of:
            undo = next((r for r in history if r.id == of), None)
            if undo is None:
                raise NothingToRollBack(f"No deployment {of} in the recent history.")
            if undo.task_definition != current.task_definition:
                raise NoLongerRunning(
                    f"Not rolled back: {undo.kind} {undo.id} of {undo.tag} is no longer what "
                    f"runs. What runs now: {current.describe()}. Nothing was changed. To go "
                    "back from what runs now, use its own message's Rollback button or "
                    f"`{self.hints.in_slack_words().rollback(self.target.name)}`."
                )
            if _same_image(undo.previous_digest, undo.previous_tag, current):
                raise NothingToRollBack(
                    f"Nothing to roll back to: {undo.kind} {undo.id} started the image that "
                    f"ran before it ({current.tag}). Deploy a tag instead."
                )
            tag, digest = undo.previous_tag, undo.previous_digest
            why = reason or f"rollback of {undo.id} ({undo.tag}) to {tag}"
            rollback_of = undo.id
        else:
            target = _last_good(history, current)
            if target is None:
                raise NothingToRollBack(
                    f"Nothing to roll back to: no earlier completed release other than "
                    f"{current.tag} that was not already rolled back from. Deploy a tag "
                    f"instead (`{self.hints.deploy(self.target.name)}`)."
                )
            tag, digest = target.tag, target.digest
            why = reason or f"rollback to {tag} (as deployment {target.id})"
            rollback_of = current.record.id if current.record else ""
        if not digest:  # a record from before digests were kept: the tag is all there is
            with aws_errors("looking the image up in ECR"):
                found = self.aws.image(tag)
            digest = str((found or {}).get("imageDigest", ""))
        self._require_image(
            digest,
            tag,
            f"The image to roll back to ({tag}, {short_digest(digest) or 'no digest'}) is no "
            f"longer in ECR repository {self.settings.ecr_repository}. Nothing was changed; "
            "deploy a tag that exists instead.",
        )
        image = pinned(current.image, digest)
        return Plan(
            kind="rollback",
            service=self.service_name,
            tag=tag,
            digest=digest,
            image=image,
            task=self.task_plan(current, td, image, tag, digest),
            current=current,
            requester=requester,
            reason=why,
            rollback_of=rollback_of,
            base=td,
            **_guarded(decision, via),
            change=self.reads.plan_change(current, digest),
        )

    def task_plan(
        self, current: Running, td: dict[str, Any], image: str, tag: str, digest: str
    ) -> TaskPlan:
        """The task definition side of a plan: the revision ``image`` makes of what runs
        (``td``; ``image`` "": a redeploy, the same revision again), its diff from what runs,
        the checks of what it needs (PlanCheckFailed when one is missing: nothing changed),
        and the fingerprint an approval is bound to."""
        container = str(self.reads.container(td).get("name", ""))
        base = revision_of(str(td.get("taskDefinitionArn", current.task_definition)))
        registered = registration(td, container, image) if image else as_registered(td)
        changes = diff(
            td,
            registered,
            base=base,
            image_before=_image_label(current.tag, current.digest),
            image_after=_image_label(tag, digest),
            registers=bool(image),
        )
        checks = check_revision(self.aws, registered, _image_label(tag, digest), self.aws.region)
        newer = self._newer_revision(td)
        task = TaskPlan(
            diff=changes,
            checks=checks,
            fingerprint=fingerprint(current.task_definition, registered, newer),
            registration=registered,
            newer=newer,
        )
        if task.missing:
            raise PlanCheckFailed(refusal(task.checks, str(td.get("family", base))))
        return task

    def fingerprint_now(self, image: str) -> tuple[str, str]:
        """The fingerprint a plan of ``image`` ("": a redeploy) would have now, and the
        family's newer revision it would name: what runs read again (its revision is
        described once per process), the registration made from it, the family's newest.
        For an approved change about to start (Guardrails.approval_lapsed)."""
        raw = self.reads.service()
        arn = str(raw.get("taskDefinition", ""))
        with aws_errors("reading the task definition"):
            td, _ = self.aws.describe_task_definition(arn)
        if image:
            registered = registration(td, str(self.reads.container(td).get("name", "")), image)
        else:
            registered = as_registered(td)
        newer = self._newer_revision(td)
        return fingerprint(arn, registered, newer), newer

    def _newer_revision(self, td: dict[str, Any]) -> str:
        """``family:14`` when the family's newest ACTIVE revision is newer than what runs and
        deploybot did not register it (someone's change that does not run); "" otherwise, or
        when it cannot be read. DescribeTaskDefinition by family name: "the latest ACTIVE
        revision is used" (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
        API_DescribeTaskDefinition.html)."""
        family = str(td.get("family", ""))
        if not family:
            return ""
        try:
            with aws_errors("reading the task definition family"):
                newest, tags = self.aws.describe_task_definition(family)
        except DeployError as exc:
            log.warning("could not read the newest revision of %s: %s", family, exc)
            return ""
        if int(newest.get("revision", 0)) <= int(td.get("revision", 0)):
            return ""
        if any(t.get("key") in ("deploybot:deployment", TAG_KEY) for t in tags):
            return ""  # one of deploybot's own: a deploy that was rolled back, say
        return revision_of(str(newest.get("taskDefinitionArn", "")))

    def check(
        self, action: Action, requester: Requester, via: Via, image: str | None = None
    ) -> Decision:
        """The rules (bot/rules.py), asked once for every plan, whatever the door: the one
        place a deploy, redeploy, rollback, promote, abort or freeze is allowed or refused.
        Raises RuleRefused (exit 2) before anything is read from ECS."""
        facts = Facts(
            image=image,
            source=via.source,
            completed_on_source=via.completed_on_source,
            source_runs=via.source_runs,
            freeze=self.guards.current_freeze(),
            approved_by=via.approved_by,
            break_glass=via.break_glass,
            queued=self.guards.queued() if action in CHANGES and via.door is not Door.QUEUE else 0,
            on_push=requester.on_push,
        )
        decision = check(
            self.target,
            action,
            door=via.door,
            who=requester.who,
            channel=via.channel,
            now=self.clock.now(),
            facts=facts,
            hints=self.hints,
        )
        if not decision.allowed and not (via.asking and decision.needs_approval):
            raise RuleRefused(decision)
        return decision

    def _prepare(
        self,
        raw: dict[str, Any],
        records: list[DeploymentRecord],
        images: list[dict[str, Any]] | None = None,
    ) -> tuple[Running, dict[str, Any], list[DeploymentRecord]]:
        """The reads every plan shares: open records reconciled, the lock free, what runs
        (and its task definition).

        ``records`` must have been read *before* ``raw``: a record is only ever judged
        against an ECS read taken after it. Read the other way round, a deployment that
        reached ECS between the two reads is named by its record but missing from the
        service, and would be closed as "replaced" (or "not started") while it rolls out,
        its lock taken over (seen with two replicas: tests/reliability/test_stale_reads.py)."""
        state = ServiceState.from_api(raw)
        records = self.reads.judge(state, records)
        self.lock.check_lock()
        current, td = self.reads.running(raw, records, images)
        return current, td, records

    def _require_image(self, digest: str, tag: str, message: str) -> None:
        with aws_errors("looking the image up in ECR"):
            found = self.aws.image_by_digest(digest) if digest else self.aws.image(tag)
        if found is None:
            raise ImageMissing(message, tag=tag, recent=())


def _guarded(decision: Decision, via: Via) -> dict[str, Any]:
    """The Plan fields the rules and the door give."""
    return {
        "decision": decision,
        "approved_by": via.approved_by,
        "request_id": via.request_id,
        "break_glass": (via.break_glass or "") if decision.bypassed else "",
        "source": via.source or "",
        "notes": tuple(b.message for b in decision.bypassed),
        "via": via,
    }


def _image_label(tag: str, digest: str) -> str:
    """``v4.4.0-ecr-ecs-fargate (sha256:1a2b3c4d5e6f)``: an image as a plan names it."""
    short = short_digest(digest)
    if tag and short and tag != digest:
        return f"{tag} ({short})"
    return tag or short or "an unknown image"


def _same_image(digest: str, tag: str, running: Running) -> bool:
    if digest and running.digest:
        return digest == running.digest
    return bool(tag) and tag == running.tag


def _image_key(digest: str, tag: str) -> str:
    return digest or f"tag:{tag}"


def _last_good(history: list[DeploymentRecord], current: Running) -> DeploymentRecord | None:
    """The newest completed release of another image that no later rollback went back from.

    Walking from the newest: a completed rollback marks the image it replaced as "rolled
    back from", and older releases of that image are skipped. So v4.4 → v4.5 → rollback
    (to v4.4) → rollback again finds nothing, instead of toggling back to v4.5."""
    rolled_back_from: set[str] = set()
    for record in history:
        if record.outcome != Outcome.COMPLETED:
            continue
        if record.kind == "rollback":
            rolled_back_from.add(_image_key(record.previous_digest, record.previous_tag))
        if _image_key(record.digest, record.tag) in rolled_back_from:
            continue
        if _same_image(record.digest, record.tag, current):
            continue
        return record
    return None
