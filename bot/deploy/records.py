"""The deployment domain's value types: what the engine returns and the doors render.

Frozen dataclasses only, no I/O: a deployment's record, who asked (``Requester``) and
through which door (``Via``), a plan, the lock as read, a status, the guardrails' items
(approval requests, the queue) and what deciding on them gave (``Approval``, ``Turn``).
The doors (Slack, the terminal) import these; the repositories that store them
(bot/deploy/ledger.py, bot/deploy/guards.py) and the engine's stages make them.

Who asks through which door is two types, not one, because they live differently:
``Requester`` (who, and the door's name as ``source``) is stored with everything a person
starts (a record, an approval request, a queued item) and outlives the request; ``Via`` (the
door, the channel, approvals and break-glass brought, a promotion's source) is what one
request brings to one decision and is never stored (the fleet's ``Ask`` is the pair of them,
no third copy of their fields). The rules' own input, ``rules.Facts``, stays in bot/rules.py,
which imports nothing of the engine; the planner makes it from a ``Via`` (``Planner.check``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.changes import ChangeSummary, Image, commit_text
from bot.deploy.plan_diff import TaskPlan
from bot.deploy.rollout import EcsDeployment, Outcome, ServiceState, Snapshot, revision_of
from bot.errors import DeployRefused
from bot.rules import Decision, Door, Freeze

# How far apart two machines' clocks may be (the issue's bound). A lease is judged expired by
# another process's clock only this long after its holder's ``expires_at``.
CLOCK_SKEW = timedelta(minutes=5)


# DeploymentRecord.abort_via: the two ways an abort asks ECS to put the previous revision back.
ABORT_BY_STOP = "StopServiceDeployment"
ABORT_BY_UPDATE = "UpdateService"


def stamp(value: datetime) -> str:
    """A time as the table writes it: UTC, to the microsecond, sortable as text (a record's
    sort key begins with its start)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unstamp(value: str) -> datetime:
    """The time ``stamp`` wrote."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_deployment_id(clock: Clock = SYSTEM_CLOCK) -> str:
    """Short, sortable, unique: ``d-20261126-222731-3f9a``."""
    return f"d-{clock.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def short_digest(digest: str) -> str:
    """``sha256:1a2b3c4d5e6f`` from a full digest (12 hex digits, as docker shows ids)."""
    algo, _, hexes = digest.partition(":")
    return f"{algo}:{hexes[:12]}" if hexes else digest


@dataclass(frozen=True)
class Requester:
    """Who asked, and through which door: ``slack``, ``cli`` or ``ci-button``. At a terminal
    ``who`` is declared (DEPLOYBOT_USER); ``aws_identity`` is what AWS says the caller is (STS
    GetCallerIdentity's ARN), recorded beside it."""

    who: str
    source: str
    display: str = ""
    aws_identity: str = ""

    @property
    def name(self) -> str:
        return self.display or self.who

    @property
    def on_push(self) -> bool:
        """CI's notice, deploying on push (auto_deploy, bot/slack/auto.py): no person."""
        return self.source == "ci-auto"


@dataclass(frozen=True)
class News:
    """Something done to a target from a terminal (freeze, unfreeze, abort, break-glass) that
    its Slack channel is to hear of: the terminal records it, a bot announces it, once, so no
    laptop needs the bot's Slack token. ``who`` is declared (DEPLOYBOT_USER), ``aws_identity``
    what AWS said the caller is."""

    kind: str  # freeze, unfreeze, abort, break-glass; freeze-after-failure (any process)
    who: str
    at: datetime
    aws_identity: str = ""
    reason: str = ""  # why (a freeze's, a break-glass's); an unfreeze: the freeze it lifted
    deployment_id: str = ""  # abort, break-glass: the deployment
    tag: str = ""  # abort, break-glass: its image tag
    detail: str = ""  # abort: what goes back; break-glass: the change and the rules bypassed
    sort_key: str = ""


@dataclass(frozen=True)
class Lock:
    holder: str
    source: str
    tag: str
    deployment_id: str
    acquired_at: datetime
    expires_at: datetime
    record_sk: str = ""  # the holder's history record, when it has one (``make infra`` has none)
    version: int = 0  # bumped by every renewal: a takeover deletes exactly the lease it judged

    def describe(self) -> str:
        if self.source == "make-infra":
            return (
                f"{self.holder} is updating the infrastructure (`make infra`, "
                f"{self.deployment_id}, since {self.acquired_at:%H:%M:%S} UTC)"
            )
        return (
            f"{self.holder} is deploying {self.tag} (deployment {self.deployment_id}, "
            f"since {self.acquired_at:%H:%M:%S} UTC)"
        )

    def lapsed(self, now: datetime) -> bool:
        """Expired even if the reader's clock runs CLOCK_SKEW ahead of the holder's."""
        return self.expires_at + CLOCK_SKEW < now


@dataclass(frozen=True)
class TagRecord:
    """The image an exact release (or ``sha-``) tag named when deploybot first deployed it;
    ``moves``: earlier digests it was allowed to move from (``digest at when``), oldest first."""

    tag: str
    digest: str
    deployed_at: datetime
    deployment: str
    moves: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentRecord:
    """One deployment in the history; ``outcome`` is empty while it is open."""

    id: str
    service: str
    kind: str  # deploy, redeploy, rollback
    tag: str
    image: str
    task_definition: str
    previous_task_definition: str
    previous_tag: str
    ecs_deployment_id: str
    who: str
    who_display: str
    source: str
    reason: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: Outcome | None = None
    outcome_reason: str = ""
    # ECS's own record of the deployment (#26): its service deployment's ARN, found right
    # after UpdateService (bot/deploy/service_deployments.py); "" for a record from before
    # service deployments, or while none is found (the judgement is DescribeServices' then).
    service_deployment_arn: str = ""
    # ECS's status of that service deployment when the record closed (SUCCESSFUL,
    # ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED, STOPPED…), shown beside ``outcome`` in history;
    # "" when ECS was not asked (the fallback) or the record is open.
    ecs_status: str = ""
    rollback_tag: str = ""
    message_ref: str = ""  # where a transport shows it (e.g. a Slack channel and ts)
    final: Snapshot | None = None  # the last snapshot, kept when the record is closed
    shown: bool = False  # the transport showed the final snapshot at message_ref
    digest: str = ""  # the image digest deployed (sha256:…): what runs, whatever the tag does
    previous_image: str = ""  # the image reference that ran before
    previous_digest: str = ""  # its digest: what a rollback of this deployment restores
    # The ECS deployment that ran it (the service's PRIMARY when the change was planned): never
    # this record's own, though a redeploy's task definition is the same (Reconciler._started).
    previous_ecs_deployment_id: str = ""
    rollback_of: str = ""  # for a rollback: the deployment it undoes
    # The commits of the image deployed and of the one before, from their ``sha-`` tags in
    # ECR: the short sha, "" when the image had no sha tag, None when not known (a record
    # from before commits were kept, or an image ECR did not have).
    commit: str | None = None
    previous_commit: str | None = None
    # Which process follows it to its outcome, and until when (a lease on the record); the beat
    # grows at every claim and renewal, so a lease that stopped moving can be seen to have.
    follower: str = ""
    follower_until: datetime | None = None
    follower_beat: int = 0
    # The process that started it, when it followed it from its first write (a terminal that
    # waits, a bot): while it still follows it, a bot shows it without following it.
    starter: str = ""
    # ECS events and stopped tasks its thread already has a reply for: a follower that takes
    # over does not say them again.
    replied: frozenset[str] = frozenset()
    # The guardrails (bot/rules.py): who approved it (Slack user ids) and the request they
    # approved; the reason given with --break-glass and the rules it bypassed.
    approved_by: tuple[str, ...] = ()
    approval_request: str = ""
    break_glass: str = ""
    bypassed: tuple[str, ...] = ()
    # Abort (Stop): who aborted it, when, and the ECS deployment that puts the previous task
    # definition back (followed to its end before the record closes ABORTED).
    aborted_by: str = ""
    aborted_at: datetime | None = None
    abort_ecs_deployment_id: str = ""
    # How ECS was asked to put the previous revision back (#26): "StopServiceDeployment" (ECS's
    # own rollback of the service deployment) or "UpdateService" (the previous task definition,
    # where ECS refused the first); "" before the ask, or for a record from before #26.
    abort_via: str = ""
    # The AWS identity (an ARN) that made the change from a terminal, beside the declared ``who``.
    who_arn: str = ""
    # Not stored: what went wrong once UpdateService was sent, as a sentence for the person who
    # started it ("ECS may have started the deployment (…); following it").
    start_error: str = ""
    # Lead time's inputs (bot/deploy/stats.py), cached by the first ``stats`` that needed them so
    # GitHub is asked once per deployment ever: the commits it shipped (full sha, committer's
    # date) from GitHub's compare, None until asked; the image's push time to ECR, None until read.
    shipped: tuple[tuple[str, datetime], ...] | None = None
    image_pushed_at: datetime | None = None
    # The decisions taken on it while ECS paused it at a hook (bot/deploy/pausing.py), oldest
    # first: "Continue by alice (slack) at 14:03:07 UTC", one line each.
    decisions: tuple[str, ...] = ()

    @property
    def abort_how(self) -> str:
        """How the abort asked ECS, as a person reads it ("" when not known)."""
        return {
            ABORT_BY_STOP: "ECS rolls the service deployment back (StopServiceDeployment)",
            ABORT_BY_UPDATE: "the previous task definition with UpdateService",
        }.get(self.abort_via, "")

    @property
    def open(self) -> bool:
        return self.outcome is None

    @property
    def settled(self) -> bool:
        """Closed with what ECS did; an open, still-rolling-out or unknown record is not."""
        return self.outcome is not None and self.outcome.settled

    @property
    def outcome_text(self) -> str:
        """The outcome as history views show it: its label ("in progress" while open); a
        replaced deployment names what replaced it."""
        if self.outcome is None:
            return "in progress"
        if self.outcome is Outcome.REPLACED and self.outcome_reason.startswith("replaced"):
            return self.outcome_reason
        return self.outcome.label

    @property
    def short_digest(self) -> str:
        return short_digest(self.digest)

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def requester(self) -> Requester:
        return Requester(self.who, self.source, self.who_display, self.who_arn)

    @property
    def log_fields(self) -> dict[str, str]:
        """What every log line about this deployment carries (``extra=``), so one filter on
        ``deployment_id`` follows it end to end."""
        return {
            "deployment_id": self.id,
            "service": self.service,
            "tag": self.tag,
            "who": self.who,
            "source": self.source,
        }

    @property
    def sort_key(self) -> str:
        return f"{stamp(self.started_at)}#{self.id}"


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # enough approvals: its deploy was started (or is being)
    REJECTED = "rejected"


@dataclass(frozen=True)
class ApprovalRequest:
    """A change waiting for approval: who asked for what, from which image to which."""

    id: str
    kind: str  # deploy, redeploy, promote
    tag: str
    digest: str
    from_tag: str
    from_digest: str
    from_task_definition: str  # what ran when it was asked: the premise
    requester: Requester
    reason: str
    requested_at: datetime
    expires_at: datetime
    approved_by: tuple[str, ...] = ()
    state: RequestState = RequestState.PENDING
    decided_by: str = ""
    channel: str = ""
    message_ref: str = ""
    source: str = ""  # promote: the target the image comes from
    deployment_id: str = ""  # the deployment it started, once approved
    # The plan it showed (bot/deploy/plan_diff.py): its fingerprint, which an approval is
    # bound to (a plan that differs at the start voids it), the task definition's lines as
    # shown, and the family's newer revision it named ("" none).
    fingerprint: str = ""
    plan: tuple[str, ...] = ()
    plan_summary: str = ""  # one line, for the Approve button's dialog
    newer: str = ""

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class QueueMode(StrEnum):
    DEPLOY = "deploy"  # deploy when the lock is free
    TELL = "tell"  # tell the person when the lock is free


@dataclass(frozen=True)
class QueuedItem:
    """One entry of a target's queue, in the order it was queued."""

    id: str
    mode: QueueMode
    kind: str  # deploy, redeploy, promote ("" for TELL)
    tag: str
    requester: Requester
    queued_at: datetime
    channel: str = ""
    reason: str = ""
    approved_by: tuple[str, ...] = ()
    request_id: str = ""
    source: str = ""
    # The message in whose thread its requester is told (CI's notice, for a deploy on push:
    # no person to tell); "" for a person, told by an ephemeral in ``channel``.
    thread: str = ""
    sort_key: str = ""
    counted: bool = False  # its mark and counts are in the table (bot/deploy/guards.py)


@dataclass(frozen=True)
class Running:
    """What the service runs now: its task definition, image, tag and digest, and the
    deployment that put it there when deploybot did."""

    task_definition: str
    image: str
    tag: str
    digest: str
    record: DeploymentRecord | None
    # Its commit (the sha- tag beside it in ECR): "" when it has none, None when not known.
    commit: str | None = None
    ecs_deployment_id: str = ""  # the service's PRIMARY ECS deployment when read

    @property
    def short_digest(self) -> str:
        return short_digest(self.digest)

    def describe(self) -> str:
        """``v4.4.0-… (abc1234, sha256:1a2b3c4d5e6f, family:12), deployed by bob (rollback
        d-…)``; "no sha tag" in place of the commit when the image has none."""
        commit = commit_text(self.commit)
        what = f"{self.tag} ({commit + ', ' if commit else ''}"
        what += f"{self.short_digest + ', ' if self.digest else ''}"
        what += f"{revision_of(self.task_definition)})"
        r = self.record
        if r is None:
            return f"{what}, put there outside deploybot"
        return f"{what}, put there by {r.who_display or r.who} ({r.kind} {r.id})"


_DOORS = {
    "slack": Door.SLASH,
    "ci-button": Door.CI_BUTTON,
    "ci-auto": Door.CI_AUTO,
    "cli": Door.CLI,
    "queue": Door.QUEUE,
}


@dataclass(frozen=True)
class Via:
    """The door a request came through, and what it brings to the rules (bot/rules.py).

    ``channel``: the Slack channel (None at the CLI). ``approved_by``: approvals already
    given (an approved request, a queued deploy that was approved). ``asking``: the plan is
    for an approval request, so the want of approvals is the point, not a refusal.
    ``source``/``completed_on_source``: where a promoted (or ``after``-guarded) image comes
    from and whether it completed there, as the transport that knows the targets found it."""

    door: Door = Door.CLI
    channel: str | None = None
    break_glass: str | None = None
    approved_by: tuple[str, ...] = ()
    request_id: str = ""
    asking: bool = False
    source: str | None = None
    completed_on_source: bool | None = None
    source_runs: str | None = None  # what the source runs again after its last was undone
    # A release tag that names another image than the one deployed under it before: "any"
    # (the CLI's --allow-moved-tag) or the digest a person confirmed in Slack.
    allow_moved_tag: str = ""
    # Alarms in ALARM a person confirmed deploying past (Slack's Deploy anyway): those names
    # only; the terminal's --break-glass goes past any (bot/deploy/alarms.py).
    allow_alarms: tuple[str, ...] = ()

    @classmethod
    def of(cls, requester: Requester) -> Via:
        """The door a caller that says none came through, from the requester's source; a
        caller that checked who and where itself passes no channel."""
        door = _DOORS.get(requester.source, Door.CLI)
        slack = (Door.SLASH, Door.BUTTON, Door.CI_BUTTON, Door.CI_AUTO)
        return cls(door=Door.CLI if door in slack else door)


@dataclass(frozen=True)
class Plan:
    """A change checked and ready to start: nothing is written until ``Engine.start``."""

    kind: str  # deploy, redeploy, rollback
    service: str
    tag: str  # the tag users know
    digest: str  # what will run, pinned
    image: str  # the image of the new revision (``repo@sha256:…``)
    current: Running
    requester: Requester
    reason: str
    rollback_of: str = ""  # the deployment a rollback undoes
    # What the door says with the change (rules it went past, bot/rules.py's bypasses); the
    # reason records them too.
    notes: tuple[str, ...] = ()
    # The running task definition as DescribeTaskDefinition gave it: the new revision's base.
    base: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # What the rules said (bot/rules.py), kept in the record: approvals, --break-glass, and
    # the rules it went past (a rollback during a freeze, break-glass outside the windows).
    decision: Decision = field(default_factory=lambda: Decision(True), compare=False)
    approved_by: tuple[str, ...] = ()
    request_id: str = ""
    break_glass: str = ""
    source: str = ""  # promote: the target the image comes from
    # What it changes: direction, compare link, commits (Engine.change_between); None when
    # ECR's list of images could not be read. Transports show it before starting.
    change: ChangeSummary | None = field(default=None, compare=False)
    # The door it came through: what start judges again with the lock (bot/rules.py at_start).
    via: Via = field(default_factory=lambda: Via(), compare=False)
    # An exact release tag's record (Planner._tag_check): "new" (first deploy: record it),
    # "moved" (a move the person allowed: ``tag_was`` is replaced), "" (nothing to write).
    tag_state: str = ""
    tag_was: TagRecord | None = field(default=None, compare=False)
    # The task definition side (bot/deploy/plan_diff.py): what the new revision changes from
    # what runs, what it needs checked, the fingerprint an approval is bound to. None: a plan
    # that could not read it (never for a plan a door starts: the planner makes one).
    task: TaskPlan | None = field(default=None, compare=False)
    # The alarms it was forced past (bot/deploy/alarms.py): said before it starts, recorded in
    # its history record's ``bypassed`` beside the rules it went past.
    alarm_notes: tuple[str, ...] = ()

    @property
    def short_digest(self) -> str:
        return short_digest(self.digest)

    @property
    def commit(self) -> str | None:
        """The commit of the image it deploys: the short sha, "" (no sha tag), None (unknown)."""
        return commit_of(self.change.target) if self.change else None

    @property
    def previous_commit(self) -> str | None:
        """The commit of the image that runs now."""
        if self.change is not None and self.change.current is not None:
            return commit_of(self.change.current)
        return self.current.commit


@dataclass(frozen=True)
class ReleaseTasks:
    """The tasks of one ECS deployment of the service, named by the release they run: during
    a rollout the new release's and the old one's are counted apart."""

    tag: str
    revision: str
    new: bool  # the PRIMARY deployment: what the service is being moved to
    running: int
    pending: int
    desired: int

    def describe(self) -> str:
        """``v4.6.0 (new): 0/3 running, 3 pending`` / ``v4.5.0 (old): 3 running``."""
        pending = f", {self.pending} pending" if self.pending else ""
        if self.new:
            return f"{self.tag} (new): {self.running}/{self.desired} running{pending}"
        return f"{self.tag} (old): {self.running} running{pending}"


@dataclass(frozen=True)
class Status:
    cluster: str
    service: str
    tag: str
    image: str
    task_definition: str
    desired: int
    running: int
    pending: int
    rollout: EcsDeployment | None
    deployments: tuple[EcsDeployment, ...]
    lock: Lock | None
    recent: tuple[DeploymentRecord, ...]
    digest: str = ""
    deployed_by: DeploymentRecord | None = None
    freeze: Freeze | None = None
    queue: tuple[QueuedItem, ...] = ()
    commit: str | None = None  # what runs: its commit ("" no sha tag, None unknown)
    # The tasks by release, one entry per ECS deployment (newest first).
    tasks: tuple[ReleaseTasks, ...] = ()

    @property
    def revision(self) -> str:
        return revision_of(self.task_definition)

    @property
    def mixed(self) -> bool:
        """Tasks of more than one release run (a rollout): ``tag`` is the one it goes to,
        not what all of them run."""
        return len(self.tasks) > 1

    def tasks_text(self) -> str:
        """``3/3 running, 0 pending``; during a rollout each release apart: ``v4.6.0 (new):
        0/3 running, 3 pending; v4.5.0 (old): 3 running``."""
        if not self.mixed:
            return f"{self.running}/{self.desired} running, {self.pending} pending"
        return "; ".join(t.describe() for t in self.tasks)

    @property
    def short_digest(self) -> str:
        return short_digest(self.digest)


@dataclass(frozen=True)
class Approval:
    """What approving did: the request as it is now, how many approvals it still lacks, and
    the plan to start once it lacks none (the transport shows it, then starts it). ``wait``:
    approved, but its turn has not come (the lock is held, or deploys are queued before it):
    why, for the transport to queue it for the requester."""

    request: ApprovalRequest
    missing: int
    plan: Plan | None = None
    wait: DeployRefused | None = None


@dataclass(frozen=True)
class Turn:
    """A queued deploy whose turn came: taken off the queue, re-checked, and either a plan
    to start or the refusal to tell its requester."""

    item: QueuedItem
    plan: Plan | None = None
    refused: DeployRefused | None = None


@dataclass(frozen=True)
class ImageInfo:
    tags: tuple[str, ...]
    pushed_at: datetime | None
    digest: str


@dataclass(frozen=True)
class Surroundings:
    """What a bot's periodic pass sees of a target (Engine.look_around)."""

    records: list[DeploymentRecord]  # the newest, open ones reconciled with ECS
    news: list[News]  # from terminals, waiting to be announced
    outside: tuple[EcsDeployment, ...] = ()  # ECS deployments no record explains
    state: ServiceState | None = None  # the service, when it was described


def commit_of(image: Image | None) -> str | None:
    """The commit of an image as a record keeps it: the short sha, "" (no sha tag), None
    (not known)."""
    if image is None:
        return None
    return image.sha or ""
