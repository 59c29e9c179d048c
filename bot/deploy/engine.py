"""The engine: plan a deploy, redeploy or rollback, start it, follow it. boto3 only.

A change goes in two steps, so a transport can show it before AWS is touched:

    plan = engine.plan_deploy("v4.4.0", requester)   # reads only; refuses (DeployRefused)
    record = engine.start(plan, message_ref)          # takes the lock, changes AWS, follows

``deploy`` / ``redeploy`` / ``rollback`` do both at once. Every refusal happens before any
change and says what to do next. From the moment UpdateService is sent nothing is "refused":
if its answer is lost the record stays open, the lock held, and the poller adopts whatever
ECS did. Open records are reconciled with ECS by any engine call that reads the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, ParamValidationError

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy import links
from bot.deploy.aws import AwsClient, aws_errors, error_code
from bot.deploy.changes import (
    ChangeSummary,
    describe_change,
    images_from_ecr,
)
from bot.deploy.digests import DigestClaims
from bot.deploy.github_deploys import GitHubDeployments
from bot.deploy.guards import AlreadyQueued, GuardBook, QueueFull
from bot.deploy.ledger import Ledger
from bot.deploy.outside import unexplained
from bot.deploy.poller import ServicePoller, Watch
from bot.deploy.records import (
    Approval,
    ApprovalRequest,
    DeploymentRecord,
    ImageInfo,
    Lock,
    News,
    Plan,
    QueuedItem,
    QueueMode,
    ReleaseTasks,
    Requester,
    RequestState,
    Running,
    Status,
    Surroundings,
    TagRecord,
    Turn,
    Via,
    commit_of,
    new_deployment_id,
    short_digest,
)
from bot.deploy.rollout import (
    EcsDeployment,
    Outcome,
    ServiceState,
    Snapshot,
    Verdict,
    revision_of,
)
from bot.deploy.stats import FOLLOW_UP_WINDOW, MAX_WINDOW, FourKeys, four_keys
from bot.deploy.table import Precondition, PreconditionFailed, freeze_from_item
from bot.errors import (
    AbortedFirst,
    BadTag,
    DeployError,
    DeployRefused,
    ImageMissing,
    LockHeld,
    MovedTag,
    NoLongerRunning,
    NoSuchRequest,
    NothingToAbort,
    NothingToRollBack,
    ServiceMissing,
)
from bot.github import GitHubClient, Unavailable
from bot.hints import Door as HintsDoor
from bot.hints import Hints
from bot.rules import (
    CHANGES,
    Action,
    Decision,
    Door,
    Facts,
    Freeze,
    Rule,
    RuleRefused,
    at_start,
    check,
    freeze_after_failure,
    frozen_meanwhile,
    lapsed_approval,
    missing_approvals,
)
from bot.settings import Settings
from bot.tags import TagError, parse_tag
from bot.target import Target

log = logging.getLogger("deploybot.engine")

# Engine.stats: how many deployments' commits one call asks GitHub for at most (the newest
# first; the others' on later calls), and how many at once.
STATS_GITHUB_ASKS = 100
STATS_GITHUB_THREADS = 4


def _ships(rec: DeploymentRecord, since: datetime, until: datetime) -> bool:
    """A completed deploy started in [since, until): one whose commits lead time counts."""
    return (
        rec.kind == "deploy"
        and rec.outcome is Outcome.COMPLETED
        and since <= rec.started_at < until
    )


# The fields RegisterTaskDefinition takes that DescribeTaskDefinition returns: a new
# revision keeps every one of them and changes only the one container's image.
_REGISTER_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)
_EPOCH = datetime.fromtimestamp(0, UTC)
_TAG_VALUE = re.compile(r"[^\w .:/=+\-@]")
# The revision's tag naming the image tag users know. The image itself is pinned by digest:
# ECS takes "repository-url/image:tag" or "repository-url/image@digest", not both
# (ContainerDefinition.image, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
# API_ContainerDefinition.html), so the tag goes beside it.
TAG_KEY = "deploybot:tag"
_THROTTLED = ("ThrottlingException", "Throttling", "TooManyRequestsException")


def split_image(image: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of ``registry/repo:tag``, ``registry/repo@sha256:…`` or
    ``registry/repo:tag@sha256:…``; missing parts are ""."""
    base, _, digest = image.partition("@")
    slash = base.rfind("/")
    colon = base.rfind(":")
    if colon > slash:
        return base[:colon], base[colon + 1 :], digest
    return base, "", digest


def image_tag_of(image: str) -> str:
    """``v4.4.0-…`` from ``…/repo:v4.4.0-…``; the digest of an image pinned by digest only."""
    _, tag, digest = split_image(image)
    return tag or digest or "latest"


def repository_of(image: str) -> str:
    """``repo`` (or ``path/repo``) from an image reference, without registry and tag."""
    base = split_image(image)[0]
    return base.split("/", 1)[1] if "/" in base else base


def pinned(image: str, digest: str) -> str:
    """``registry/repo@sha256:…``: the image by digest, whatever the tag points to later."""
    return f"{split_image(image)[0]}@{digest}"


def _follower_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Engine:
    """One engine per process; transports call it and render what it returns."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        aws: AwsClient | None = None,
        target: Target | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.aws = aws or AwsClient(settings)
        self.ledger = Ledger(self.aws, settings.lock_lease_seconds, clock)
        # The target this engine deploys, with its rules; without one, the settings' service
        # under DEPLOY_TARGET's name and no rules beyond who and where.
        self.target = target or Target(
            name=settings.deploy_target,
            cluster=settings.ecs_cluster,
            service=settings.ecs_service,
            repository=settings.ecr_repository,
            container=settings.ecs_container,
            deployers=settings.deploy_allowed_users,
            channels=settings.deploy_allowed_channels,
        )
        self.guards = GuardBook(self.ledger.table, clock)
        # The door whose words this engine's refusals speak (bot/hints.py): the bot sets
        # "slack" (Fleet.speak), the Makefile's runs "make".
        self.door: HintsDoor = "cli"
        # The status's reads of the lock, the freeze and the queue run here, beside its reads
        # of the history and the service (threads made when first needed).
        self._beside = ThreadPoolExecutor(max_workers=4, thread_name_prefix="deploybot-status")
        self.poller = ServicePoller(
            self.aws,
            self.ledger,
            poll_seconds=settings.rollout_poll_seconds,
            timeout_seconds=settings.rollout_timeout_seconds,
            lease_seconds=settings.lock_lease_seconds,
            clock=clock,
            follower=_follower_id(),
            lost_seconds=settings.aws_lost_seconds,
        )
        self.reconciler = self.poller.reconciler
        self.reconciler.on_settled.append(self._after_settled)
        # GitHub: compare links and commit lists for plans; GitHub deployments as the
        # follow-through of every rollout this engine starts or settles.
        self.github = GitHubClient.from_settings(settings)
        self.github_deployments = GitHubDeployments(
            self.github, settings.deploy_target, self.console_url
        )
        if self.github_deployments.enabled:
            self.reconciler.on_settled.append(self.github_deployments.settled)

    @property
    def hints(self) -> Hints:
        """How this engine's texts spell the commands they suggest (the door's syntax, the
        configured slash-command names)."""
        return Hints.at(self.door, self.settings.slack_commands)

    @property
    def service_name(self) -> str:
        return f"{self.settings.ecs_cluster}/{self.settings.ecs_service}"

    @property
    def console_url(self) -> str:
        """The service's Deployments tab in the ECS console: where to look at a rollout."""
        s = self.settings
        return links.service_deployments_url(s.aws_region, s.ecs_cluster, s.ecs_service)

    # Reading -------------------------------------------------------------------------------
    def _service(self, max_age: float = 0.0) -> dict[str, Any]:
        with aws_errors("reading the service"):
            raw = self.aws.describe_service(max_age)
        if raw is None:
            raise ServiceMissing(
                f"Service {self.settings.ecs_service} was not found in cluster "
                f"{self.settings.ecs_cluster} ({self.settings.aws_region}). Check ECS_CLUSTER, "
                "ECS_SERVICE and AWS_REGION, or create the stack with `make infra`."
            )
        return raw

    def _container(self, task_definition: dict[str, Any]) -> dict[str, Any]:
        """The container that runs the service's image: ECS_CONTAINER (a target's
        ``container``) when set, else the one running ECR_REPOSITORY's image, else the only
        one."""
        repo = self.settings.ecr_repository
        containers = task_definition.get("containerDefinitions", [])
        named = self.settings.ecs_container
        if named:
            for container in containers:
                if container.get("name") == named:
                    return dict(container)
            names = ", ".join(str(c.get("name", "")) for c in containers) or "none"
            raise ServiceMissing(
                f"No container named {named} in "
                f"{revision_of(task_definition['taskDefinitionArn'])} (its containers: "
                f"{names}). Check ECS_CONTAINER (a target's `container` in deploybot.toml)."
            )
        for container in containers:
            if repository_of(str(container.get("image", ""))) == repo:
                return dict(container)
        if len(containers) == 1:
            return dict(containers[0])
        raise ServiceMissing(
            f"No container of {revision_of(task_definition['taskDefinitionArn'])} runs an image "
            f"from repository {repo}. Check ECR_REPOSITORY."
        )

    def _history(self, limit: int = 50) -> list[DeploymentRecord]:
        return self.ledger.history(limit)

    def _running(
        self,
        raw: dict[str, Any],
        history: list[DeploymentRecord],
        images: list[dict[str, Any]] | None = None,
    ) -> tuple[Running, dict[str, Any]]:
        """What runs now, and its task definition. The digest comes from the image when it is
        pinned, else from the deployment that put it there, else from ECR (what the tag
        points to now: the best guess left for a revision deploybot did not make), looked up
        in ``images`` when the caller has listed the repository for this question."""
        arn = str(raw["taskDefinition"])
        with aws_errors("reading the task definition"):
            td, tags = self.aws.describe_task_definition(arn)
        image = str(self._container(td).get("image", ""))
        _, tag, digest = split_image(image)
        tag = next((t["value"] for t in tags if t.get("key") == TAG_KEY), "") or tag
        record = next((r for r in history if r.task_definition == arn and r.digest), None)
        record = record or next((r for r in history if r.task_definition == arn), None)
        if not digest and record is not None:
            digest = record.digest
        commit = record.commit if record is not None and record.digest == digest else None
        if not digest and tag:
            if images is not None:
                found = next((i for i in images if tag in i.get("imageTags", ())), None)
            else:
                with aws_errors("looking the running image up in ECR"):
                    found = self.aws.image(tag)
            digest = str((found or {}).get("imageDigest", ""))
            commit = self._commit_in(found) if found else commit
        if not tag and digest:
            if images is not None:
                found = next((i for i in images if i.get("imageDigest") == digest), None)
            else:
                with aws_errors("looking the running image up in ECR"):
                    found = self.aws.image_by_digest(digest)
            tag = self._release_tag(found) if found else ""
            commit = self._commit_in(found) if found else commit
        primary = ServiceState.from_api(raw).primary
        return Running(
            arn, image, tag or digest, digest, record, commit, primary.id if primary else ""
        ), td

    def _commit_in(self, image: dict[str, Any]) -> str:
        """The commit of an image (DescribeImages' details): its sha- tag, "" if none."""
        return commit_of(images_from_ecr([image], self.settings.image_tag_suffix)[0]) or ""

    # What a change changes ---------------------------------------------------------------------
    def change_between(
        self, current: str | None, target: str, images: list[dict[str, Any]] | None = None
    ) -> ChangeSummary:
        """What moving the service from the image ``current`` (None: nothing runs) to
        ``target`` changes, each named by digest, tag or image URI: the direction among the
        releases in ECR, the compare link of the commits (GITHUB_REPOSITORY) and, with
        GITHUB_TOKEN, the commits themselves. One DescribeImages (every page) and at most one
        GitHub compare; GitHub's failures are the summary's ``gap`` (the link stays), never
        raised. Raises DeployError when ECR cannot be read.

        The reusable piece: a plan carries it (``Plan.change``), and a promotion or an
        approval request shows the same for its two images. ``images``: a listing already
        made for this question (``ecr_images``)."""
        suffix = self.settings.image_tag_suffix
        found = images_from_ecr(images if images is not None else self.ecr_images(), suffix)
        return describe_change(found, current, target, self.github, suffix)

    def change_to(self, target: str) -> ChangeSummary:
        """``change_between`` what runs now and ``target`` (the CI notice)."""
        return self.changes_to([target])[target]

    def changes_to(
        self, targets: Sequence[str], images: list[dict[str, Any]] | None = None
    ) -> dict[str, ChangeSummary]:
        """``change_to`` for several images (the Deploy buttons of /deploy's list): one read
        of what runs and of ECR (or ``images``, a listing made for this question); the
        GitHub compares side by side, each bounded by GitHub's timeout."""
        listing = images if images is not None else self.ecr_images()
        records = self._history(20)  # before the service: see _prepare
        current, _ = self._running(self._service(), records, listing)
        return self._changes_from(current, targets, listing)

    def recent_changes(self, limit: int = 5) -> tuple[list[ImageInfo], dict[str, ChangeSummary]]:
        """The recent release images and what deploying each would change (/deploy's list
        and its Deploy buttons): the repository is listed beside the reads of what runs.
        When what runs cannot be read the list comes without changes (still worth showing);
        when ECR cannot be read, DeployError."""
        listing = self._beside.submit(self.ecr_images)
        try:
            records = self._history(20)  # before the service: see _prepare
            raw: dict[str, Any] | None = self._service()
        except DeployError as exc:
            log.warning("no change summaries for the list of images: %s", exc)
            raw = None
        except BaseException:
            if not listing.cancel():
                wait([listing])
            raise
        found = listing.result()
        images = self.recent_images(limit, found)
        if raw is None:
            return images, {}
        try:
            current, _ = self._running(raw, records, found)
        except DeployError as exc:
            log.warning("no change summaries for the list of images: %s", exc)
            return images, {}
        return images, self._changes_from(current, [i.tags[0] for i in images], found)

    def _changes_from(
        self, current: Running, targets: Sequence[str], listing: list[dict[str, Any]]
    ) -> dict[str, ChangeSummary]:
        before = current.digest or current.image or None
        suffix = self.settings.image_tag_suffix
        known = images_from_ecr(listing, suffix)

        def one(target: str) -> ChangeSummary:
            return describe_change(known, before, target, self.github, suffix)

        if len(targets) < 2 or not (self.github.configured and self.github.has_token):
            # No GitHub call to wait for: threads would only cost their start.
            return {t: one(t) for t in targets}
        with ThreadPoolExecutor(max_workers=min(5, len(targets))) as pool:
            found = list(pool.map(one, targets))
        return dict(zip(targets, found, strict=True))

    def _plan_change(
        self, current: Running, target: str, images: list[dict[str, Any]] | None = None
    ) -> ChangeSummary | None:
        """A plan's summary; a plan never fails for want of one."""
        try:
            return self.change_between(current.digest or current.image or None, target, images)
        except DeployError as exc:
            log.warning("no change summary for the plan: %s", exc)
            return None

    def _release_tag(self, image: dict[str, Any]) -> str:
        names = list(image.get("imageTags", []))
        for name in names:
            try:
                if parse_tag(name, self.settings.image_tag_suffix).kind == "version":
                    return str(name)
            except TagError:
                continue
        return str(names[0]) if names else ""

    def ecr_images(self) -> list[dict[str, Any]]:
        """Every image of the repository (DescribeImages' details, one paginated listing):
        what a tag resolves to, the recent tags and the change summaries, from one read that
        several of them can share."""
        with aws_errors("listing the images in ECR"):
            return self.aws.images()

    def recent_tags(self, limit: int = 5, images: list[dict[str, Any]] | None = None) -> list[str]:
        """The most recently pushed release tags (vX.Y.Z), newest first."""
        return [info.tags[0] for info in self.recent_images(limit, images)]

    def recent_images(
        self, limit: int = 5, images: list[dict[str, Any]] | None = None
    ) -> list[ImageInfo]:
        """The most recently pushed release images, newest first (from ``images``, a listing
        made for this question, else a new one)."""
        images = list(images if images is not None else self.ecr_images())
        images.sort(key=lambda i: i.get("imagePushedAt") or _EPOCH, reverse=True)
        out: list[ImageInfo] = []
        suffix = self.settings.image_tag_suffix
        for image in images:
            tags = []
            for t in image.get("imageTags", []):
                try:
                    tags.append(parse_tag(t, suffix))
                except TagError:
                    continue
            tags.sort(key=lambda t: ("version", "minor", "major", "sha").index(t.kind))
            if tags and tags[0].kind == "version":
                out.append(
                    ImageInfo(
                        tags=tuple(t.value for t in tags),
                        pushed_at=image.get("imagePushedAt"),
                        digest=str(image.get("imageDigest", "")),
                    )
                )
            if len(out) >= limit:
                break
        return out

    def status(
        self,
        history: int = 5,
        max_age: float = 0.0,
        records: list[DeploymentRecord] | None = None,
    ) -> Status:
        """What runs; open deployments are reconciled with ECS on the way. ``max_age`` and
        ``records``: the status of every target (bot/fleet.py) reads the histories first, then
        every service in one batch, then gives each target its records and lets it take the
        batch's description (never older than the records: see _prepare)."""
        # The lock, the freeze and the queue are read beside the history and the service (no
        # order between them matters): the status waits for the longest read, not for all.
        guard = self._beside.submit(self._guard_state)
        beside: list[Future[Any]] = [guard]
        try:
            if records is None:
                # The history too. A record is only judged against a description read after
                # it (see _prepare): when the history has one to judge, the service is
                # described again once the history is in (a rollout: one call more).
                asked = self._beside.submit(self._history, max(history, 20))
                beside.append(asked)
                raw = self._service(max_age)
                records = asked.result()
                tracking = set(self.poller.tracking())
                if any(not r.settled and r.id not in tracking for r in records):
                    raw = self._service()
            else:
                raw = self._service(max_age)
            state = ServiceState.from_api(raw)
            judged = self._reconcile(state, records)
            # Settling a deployment releases its lock (and a failure may freeze the target):
            # the lock, the freeze and the queue shown are then read again, after it.
            settled = any(
                new.settled and not old.settled for new, old in zip(judged, records, strict=True)
            )
            records = judged
            running, _ = self._running(raw, records)
            commit = running.commit
            if commit is None and running.digest:
                try:
                    with aws_errors("looking the running image up in ECR"):
                        found = self.aws.image_by_digest(running.digest)
                    commit = self._commit_in(found) if found else None
                except DeployError as exc:  # the status is still worth showing without it
                    log.warning("could not read the running image's commit: %s", exc)
        except BaseException:
            # The reads beside end (or never start) before the status's own failure is told.
            wait([f for f in beside if not f.cancel()])
            raise
        lock, freeze, queue = guard.result()
        if settled:
            lock, freeze, queue = self._guard_state()
        return Status(
            lock=_held_lock(lock, records, self.clock.now()),
            cluster=self.settings.ecs_cluster,
            service=self.settings.ecs_service,
            tag=running.tag,
            image=running.image,
            task_definition=state.task_definition,
            desired=state.desired,
            running=state.running,
            pending=state.pending,
            rollout=state.rolling_out,
            deployments=state.deployments,
            recent=tuple(records[:history]),
            digest=running.digest,
            deployed_by=running.record,
            freeze=freeze,
            queue=queue,
            commit=commit,
            tasks=_tasks_by_release(state, running, records),
        )

    def _guard_state(self) -> tuple[Lock | None, Freeze | None, tuple[QueuedItem, ...]]:
        """The lock item, the freeze and the queue: a status's other reads."""
        return self.ledger.lock_item(), self.guards.current_freeze(), tuple(self.guards.queue())

    def recorded(self, limit: int = 20) -> list[DeploymentRecord]:
        """The recent records as the table holds them (no reconciling): read before a
        service description that will judge them (``status(records=...)``)."""
        return self._history(limit)

    def history(self, limit: int = 10, *, leave_followed: bool = False) -> list[DeploymentRecord]:
        """Recent deployments, newest first; open ones reconciled with ECS first. With
        ``leave_followed`` (a bot's periodic pass), records another process follows are left
        to it: their follower reconciles them at every poll."""
        records = self._history(limit)
        skip = set(self.poller.tracking())
        if leave_followed:
            self.poller.leases.keep_only({r.id for r in records})
            skip |= {r.id for r in records if self.followed_elsewhere(r)}
        if all(r.settled or r.id in skip for r in records):
            return records
        try:
            state = ServiceState.from_api(self._service())
        except DeployError as exc:  # history is still worth showing without ECS
            log.warning("could not reconcile open deployments: %s", exc)
            return records
        return self._reconcile(state, records, skip)

    def claim_digest(self, due: datetime, holder: str) -> bool:
        """Take the weekly digest due at ``due`` for ``holder`` (one replica posts it: a lease
        in the table, bot/deploy/digests.py); False when another has it or it was posted."""
        claims = DigestClaims(self.ledger.table, self.clock)
        return claims.claim(due, holder, self.settings.lock_lease_seconds)

    def digest_posted(self, due: datetime, holder: str) -> None:
        DigestClaims(self.ledger.table, self.clock).posted(due, holder)

    def stats(
        self, since: datetime, until: datetime, *, github_asks: int = STATS_GITHUB_ASKS
    ) -> FourKeys:
        """DORA's four keys of this target over [since, until) (bot/deploy/stats.py): one
        Query of its history by time range (and FOLLOW_UP_WINDOW past it, to see what followed
        the last deployments) reading each record's brief (``Ledger.stats_history``), the
        commits of each completed deploy asked of GitHub once ever and cached on its record
        (the image's push time, read from ECR once and cached, where GitHub cannot tell), and
        a brief written on each settled record read whole. Open deployments are not
        reconciled: they count when settled.

        GitHub is asked about ``github_asks`` deployments at most in one call, the newest
        first, STATS_GITHUB_THREADS at a time, so a first ``stats`` over a long history answers
        in seconds; the others' push times stand in (said so) until a later call asks."""
        if until - since > MAX_WINDOW:
            raise DeployRefused(
                f"A window of {(until - since).days} days is longer than stats reads "
                f"({MAX_WINDOW.days} days): the history is kept that long."
            )
        records, whole = self.ledger.stats_history(since, until + FOLLOW_UP_WINDOW)
        shipped = self._ask_github([r for r in records if _ships(r, since, until)], github_asks)
        pushed: dict[str, datetime] | None = None
        out: list[DeploymentRecord] = []
        for rec in records:
            read = rec
            if _ships(rec, since, until):
                rec = self._lead_inputs(rec, shipped)
                if rec.shipped is None and rec.image_pushed_at is None and rec.digest:
                    if pushed is None:
                        pushed = self._pushed_times()
                    if rec.digest in pushed:
                        rec = self.ledger.cache_lead_inputs(rec, image_pushed_at=pushed[rec.digest])
            if rec is read and rec.id in whole:  # nothing cached on it yet: its brief
                self.ledger.remember_brief(rec)
            out.append(rec)
        return four_keys(out, target=self.target.name, since=since, until=until)

    def _ask_github(
        self, deploys: list[DeploymentRecord], most: int
    ) -> dict[str, tuple[tuple[str, datetime], ...]]:
        """The commits GitHub says each of (at most ``most``, the newest) ``deploys`` not yet
        asked shipped, by deployment id; those GitHub could not answer are left out (asked
        again by a later ``stats``)."""
        if not self.github.has_token or most <= 0:
            return {}
        wanted = sorted(
            (
                r
                for r in deploys
                if r.shipped is None
                and r.commit
                and r.previous_commit
                and r.commit != r.previous_commit
            ),
            key=lambda r: r.started_at,
            reverse=True,
        )[:most]
        if not wanted:
            return {}
        with ThreadPoolExecutor(
            max_workers=min(STATS_GITHUB_THREADS, len(wanted)),
            thread_name_prefix="deploybot-stats",
        ) as pool:
            answers = list(
                pool.map(
                    lambda r: self.github.shipped(str(r.previous_commit), str(r.commit)), wanted
                )
            )
        found: dict[str, tuple[tuple[str, datetime], ...]] = {}
        for rec, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, Unavailable):
                log.info("lead time of %s: %s", rec.id, answer.reason, extra=rec.log_fields)
            else:
                found[rec.id] = answer
        return found

    def _lead_inputs(
        self, rec: DeploymentRecord, shipped: dict[str, tuple[tuple[str, datetime], ...]]
    ) -> DeploymentRecord:
        """``rec`` with the commits it shipped cached on it: none shipped when both images
        have the same commit; GitHub's answer (``shipped``) when it was asked and answered;
        else unchanged (no token, a commit unknown, GitHub unavailable or not asked yet)."""
        if rec.shipped is not None or not rec.commit or not rec.previous_commit:
            return rec
        if rec.commit == rec.previous_commit:
            return self.ledger.cache_lead_inputs(rec, shipped=())
        if rec.id in shipped:
            return self.ledger.cache_lead_inputs(rec, shipped=shipped[rec.id])
        return rec

    def _pushed_times(self) -> dict[str, datetime]:
        """Each image's push time to ECR, by digest (one paginated listing)."""
        try:
            images = self.ecr_images()
        except DeployError as exc:  # lead time is unknown without it; the rest stands
            log.warning("could not read the images' push times: %s", exc)
            return {}
        return {
            str(i["imageDigest"]): i["imagePushedAt"].astimezone(UTC)
            for i in images
            if i.get("imageDigest") and isinstance(i.get("imagePushedAt"), datetime)
        }

    def look_around(
        self,
        limit: int = 20,
        *,
        describe: bool = False,
        outside_since: datetime | None = None,
    ) -> Surroundings:
        """A bot's periodic pass: the newest records and the news from terminals (one Query);
        open records reconciled with ECS, those another process follows left to it (as
        ``history(leave_followed=True)``). With ``describe`` the service is described even
        when no record needs it (one DescribeServices, which also judges the records), and with
        ``outside_since`` the deployments no record explains are found in it (see
        bot/deploy/outside.py)."""
        read_at = self.clock.now()
        records, news = self.ledger.history_and_news(limit)
        skip = set(self.poller.tracking())
        self.poller.leases.keep_only({r.id for r in records})
        skip |= {r.id for r in records if self.followed_elsewhere(r)}
        judge = not all(r.settled or r.id in skip for r in records)
        if not (judge or describe or outside_since is not None):
            return Surroundings(records, news)
        try:
            state = ServiceState.from_api(self._service())
        except DeployError as exc:  # the news is still worth announcing without ECS
            log.warning("could not read the service: %s", exc)
            return Surroundings(records, news)
        if judge:
            records = self._reconcile(state, records, skip)
        outside: tuple[EcsDeployment, ...] = ()
        if outside_since is not None:
            outside = tuple(unexplained(state, records, read_at=read_at, since=outside_since))
        return Surroundings(records, news, outside, state)

    def image_of(self, task_definition: str) -> str:
        """The image tag (or image) a task definition runs, "" when it cannot be read: to name
        what a deployment started outside deploybot runs."""
        try:
            with aws_errors("reading the task definition"):
                td, tags = self.aws.describe_task_definition(task_definition)
            image = str(self._container(td).get("image", ""))
        except DeployError as exc:
            log.warning("could not read %s: %s", task_definition, exc)
            return ""
        tag = split_image(image)[1]
        return next((t["value"] for t in tags if t.get("key") == TAG_KEY), "") or tag or image

    def tell_channel(self, news: News) -> News:
        """Record ``news`` (done from a terminal) for a bot to announce in the target's
        channel: the terminal needs no Slack token."""
        return self.ledger.add_news(news)

    def reconcile(self, limit: int = 20) -> list[DeploymentRecord]:
        """Settle every recent record that is not settled and not followed here, from one
        DescribeServices; returns the records that changed (a bot's periodic pass)."""
        records = self._history(limit)
        tracking = set(self.poller.tracking())
        if all(r.settled or r.id in tracking for r in records):
            return []
        state = ServiceState.from_api(self._service())
        updated = self._reconcile(state, records)
        return [new for new, old in zip(updated, records, strict=True) if new != old]

    def _reconcile(
        self, state: ServiceState, records: list[DeploymentRecord], skip: set[str] | None = None
    ) -> list[DeploymentRecord]:
        now = self.clock.now()
        tracking = set(self.poller.tracking()) | (skip or set())
        out = list(records)
        for i, record in enumerate(records):
            if record.settled or record.id in tracking:
                continue
            try:
                reading = self.reconciler.read(record, state, now)
                out[i] = reading.record
                if reading.verdict is None:
                    continue
                final = self.reconciler.final_snapshot(
                    reading.record, reading.verdict, now, reading.ours, base=record.final
                )
                out[i], _ = self.reconciler.settle(reading.record, final)
                log.info(
                    "reconciled: %s (%s)",
                    reading.verdict.outcome.label,
                    reading.verdict.reason,
                    extra=record.log_fields,
                )
            except DeployError as exc:
                log.warning("could not reconcile: %s", exc, extra=record.log_fields)
        return out

    def _lock_held(self, held: Lock, why: str, text: str = "") -> LockHeld:
        return LockHeld(
            text
            or f"Deploys are locked: {held.describe()}{why}. Wait for it to finish, or break a "
            f"stale lock with `{self.hints.unlock(self.target.name)}`.",
            holder=held.holder,
            tag=held.tag,
            since=held.acquired_at,
            deployment_id=held.deployment_id,
        )

    def _rolling_refusal(
        self, held: Lock, ecs_id: str, counts: EcsDeployment | Snapshot
    ) -> LockHeld:
        """The refusal while ECS shows the holder rolling out: no stale lock to break, a
        deployment to wait for or abort (Slack offers the queue beside it)."""
        return self._lock_held(
            held,
            "",
            f"Deploys are locked: {held.tag} is still rolling out since "
            f"{held.acquired_at:%H:%M} UTC ({held.deployment_id} by {held.holder}, ECS "
            f"{ecs_id or '?'}), {counts.running}/{counts.desired} running. Wait for it to end, "
            f"or abort it (`{self.hints.abort(self.target.name)}`); nothing was changed.",
        )

    def unlock(self, by: Requester | None = None, *, only_if_idle: bool = False) -> Lock | None:
        """Break the lock, saying whose it was (None: it was free). ``only_if_idle`` (Slack's
        Unlock, where no one sees ECS for themselves): only when ECS shows nothing rolling
        out, else LockHeld saying what is; a lock whose holder is done is freed either way."""
        if only_if_idle:
            held = self.ledger.lock_item()
            if held is None:
                return None
            if self._free_if_done(held) is None:  # its holder was done: freed
                lock: Lock | None = held
            else:
                rolling = ServiceState.from_api(self._service()).rolling_out
                if rolling is not None:
                    raise LockHeld(
                        f"Not unlocked: {held.describe()}{_rolling_out(rolling.id, rolling)}. "
                        "Wait for it to finish, or stop it "
                        f"(`{self.hints.abort(self.target.name)}`). Nothing was changed.",
                        holder=held.holder,
                        tag=held.tag,
                        since=held.acquired_at,
                        deployment_id=held.deployment_id,
                    )
                lock = self.ledger.break_lock()
        else:
            lock = self.ledger.break_lock()
        if lock is not None:
            log.warning(
                "lock broken by %s; it was %s's",
                by.name if by else "someone at a terminal",
                lock.holder,
                extra={
                    "deployment_id": lock.deployment_id,
                    "service": self.service_name,
                    "tag": lock.tag,
                    "who": lock.holder,
                    "source": lock.source,
                },
            )
        return lock

    # The lock ------------------------------------------------------------------------------
    def acquire(
        self,
        requester: Requester,
        tag: str,
        deployment_id: str,
        record_sk: str = "",
        checks: Sequence[Precondition] = (),
    ) -> Lock:
        """Take the service's lock, or raise LockHeld naming the holder.

        A held lock is taken over only when its holder is proven done, whatever the clocks
        say: its record settled, or ECS shows its deployment finished (or never started). A
        lock with no record is taken over once its lease has lapsed by CLOCK_SKEW's margin.
        At most two conditional puts, one read of the holder's record and one
        DescribeServices: never a spin."""
        for _ in range(2):
            taken, held = self.ledger.try_acquire(requester, tag, deployment_id, record_sk, checks)
            if taken:
                return held
            refusal = self._free_if_done(held)
            if refusal is not None:
                raise refusal
        # Its holder was done, and someone else took the lock first: they hold it now.
        raise self._lock_held(held, "")

    def _free_if_done(self, held: Lock) -> LockHeld | None:
        """Take ``held`` over if its holder is done (None), else the refusal naming it.
        Done is about the holder; whether the takeover won a race is the next put's to say.
        The holder's record is judged against a DescribeServices read after it (never an
        earlier one: see _prepare); this costs one call, and only when the lock is held."""
        now = self.clock.now()
        followed = self.poller.last(held.deployment_id)
        if followed is not None:  # this process follows it: it is live until the poller says
            return self._rolling_refusal(held, followed.ecs_deployment_id, followed)
        record = self.ledger.get_record(held.record_sk) if held.record_sk else None
        if record is None:
            if held.lapsed(now):
                self.ledger.take_over(held)
                return None
            return self._lock_held(held, "")
        if record.settled:
            self.ledger.take_over(held)  # its holder closed it and died before releasing
            return None
        # Open, or left "still rolling out" / "unknown" by a watch that ended before ECS did:
        # the lock is its until ECS is seen to end it, whatever its lease says.
        state = ServiceState.from_api(self._service())
        reading = self.reconciler.read(record, state, now)
        if reading.verdict is not None:
            final = self.reconciler.final_snapshot(
                reading.record, reading.verdict, now, reading.ours, base=record.final
            )
            self.reconciler.settle(reading.record, final, release=False)
            self.ledger.take_over(held)
            return None
        if not record.open:  # nobody follows it: keep the lock from the table's TTL
            self.reconciler.keep_lock(record)
        if reading.ours is not None:
            return self._rolling_refusal(held, reading.ours.id, reading.ours)
        return self._lock_held(held, "; it is starting (ECS shows no deployment of it yet)")

    def check_lock(self) -> None:
        """Refuse (LockHeld) if the lock is held by a live rollout; a lock whose holder is
        done is released on the way. Reads only (but for that release)."""
        held = self.ledger.lock_item()
        if held is None:
            return
        refusal = self._free_if_done(held)
        if refusal is not None:
            raise refusal

    # Planning ------------------------------------------------------------------------------
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
        images = images if images is not None else self.ecr_images()
        tag, digest = self.resolve(tag_text, images)
        via = via or Via.of(requester)
        decision = self._check(Action.DEPLOY, requester, via, image=tag)
        records = self._history(50)  # before the service: see _prepare
        raw = self._service()
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
            recent = list(recent) if recent is not None else self.recent_tags(5, images)
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
        decision = self._check(Action(kind), requester, via, image=tag)
        records = self._history(50)  # before the service: see _prepare
        raw = self._service()
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
        return Plan(
            kind=kind,
            service=self.service_name,
            tag=tag,
            digest=digest,
            image=pinned(current.image, digest),
            current=current,
            requester=requester,
            reason=reason,
            base=td,
            change=self._plan_change(current, digest, images),
            tag_state=tag_state,
            tag_was=tag_was,
            **_guarded(decision, via),
        )

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
        decision = self._check(Action.REDEPLOY, requester, via)
        records = self._history(50)
        raw = self._service()
        current, td, _ = self._prepare(raw, records)
        self._require_image(
            current.digest,
            current.tag,
            f"The image that runs now ({current.tag}, {current.short_digest}) is no longer in "
            f"ECR repository {self.settings.ecr_repository}: new tasks could not pull it. "
            "Deploy a tag that exists instead.",
        )
        return Plan(
            kind="redeploy",
            service=self.service_name,
            tag=current.tag,
            digest=current.digest,
            image=current.image,
            current=current,
            requester=requester,
            reason=reason,
            base=td,
            **_guarded(decision, via),
            change=self._plan_change(current, current.digest or current.image),
        )

    def plan_rollback(
        self, requester: Requester, reason: str = "", of: str = "", *, via: Via | None = None
    ) -> Plan:
        """Check a rollback. With ``of`` (a deployment id: a message's Rollback button) it
        restores the image that ran before that deployment, and only while that deployment is
        what runs. Without, it goes to the newest release that completed and was not later
        rolled back from, never toggling between two releases."""
        via = via or Via.of(requester)
        decision = self._check(Action.ROLLBACK, requester, via)
        records = self._history(100)
        raw = self._service()
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
        return Plan(
            kind="rollback",
            service=self.service_name,
            tag=tag,
            digest=digest,
            image=pinned(current.image, digest),
            current=current,
            requester=requester,
            reason=why,
            rollback_of=rollback_of,
            base=td,
            **_guarded(decision, via),
            change=self._plan_change(current, digest),
        )

    def _check(
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
            queued=self._queued() if action in CHANGES and via.door is not Door.QUEUE else 0,
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
        records = self._reconcile(state, records)
        self.check_lock()
        current, td = self._running(raw, records, images)
        return current, td, records

    def _require_image(self, digest: str, tag: str, message: str) -> None:
        with aws_errors("looking the image up in ECR"):
            found = self.aws.image_by_digest(digest) if digest else self.aws.image(tag)
        if found is None:
            raise ImageMissing(message, tag=tag, recent=())

    # Changing ------------------------------------------------------------------------------
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
            bypassed=tuple(b.message for b in plan.decision.bypassed),
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
        td = plan.base or None  # the new revision's log configuration is the same
        try:
            if plan.kind != "redeploy":
                if not td:
                    with aws_errors("reading the task definition"):
                        td, _ = self.aws.describe_task_definition(current.task_definition)
                container = self._container(td)
                with aws_errors("registering the new task definition"):
                    registered = self.aws.register_task_definition(
                        **_register_kwargs(td, container["name"], plan.image),
                        tags=_revision_tags(plan, record.id),
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
            try:
                self.ledger.release(record.id)
            except DeployError as exc:
                log.warning("could not release the lock: %s", exc, extra=record.log_fields)
            raise
        if fresh is not None and fresh.aborted_by:
            self._stand_down(replace(record, aborted_by=fresh.aborted_by))
        # From here on ECS may change. Nothing below says "nothing changed" unless ECS's own
        # answer proves it; everything else is followed to what ECS did.
        try:
            updated = self.aws.update_service(record.task_definition, force=plan.kind == "redeploy")
        except Exception as exc:
            asked_at = self.clock.monotonic()
            if _refused_outright(exc):
                self._undo_record(record)
                with aws_errors("updating the service"):
                    raise exc
            problem = _describe_failure(exc)
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
                state = ServiceState.from_api(self._service())
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
            self.acquire(plan.requester, plan.tag, record.id, record.sort_key, checks)
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
            why = self._approval_lapsed(plan.request_id, plan.digest)
        except BaseException:
            self.ledger.release(record.id)
            raise
        if why is not None:
            self.ledger.release(record.id)
            raise RuleRefused(lapsed_approval(self.target, plan.kind, plan.tag, why, self.hints))

    def _approval_lapsed(self, request_id: str, digest: str) -> str | None:
        """Why an approval no longer counts for the change about to start (its request
        expired, is no longer approved, or its premise changed: what runs is not what it
        showed, the image is another), for a person; None when it still holds."""
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
        return self._premise(request)

    def _undo_record(self, record: DeploymentRecord) -> None:
        try:
            self.ledger.forget(record)
            self.ledger.release(record.id)
        except DeployError as exc:  # a reconcile closes it as never started later
            log.warning("could not remove the record: %s", exc, extra=record.log_fields)

    def deploy(
        self, tag_text: str, requester: Requester, reason: str = "", message_ref: str = ""
    ) -> DeploymentRecord:
        """plan_deploy, then start."""
        return self.start(self.plan_deploy(tag_text, requester, reason), message_ref)

    def redeploy(
        self, requester: Requester, reason: str = "", message_ref: str = ""
    ) -> DeploymentRecord:
        """plan_redeploy, then start."""
        return self.start(self.plan_redeploy(requester, reason), message_ref)

    def rollback(
        self, requester: Requester, reason: str = "", of: str = "", message_ref: str = ""
    ) -> DeploymentRecord:
        """plan_rollback, then start."""
        return self.start(self.plan_rollback(requester, reason, of), message_ref)

    # Freeze --------------------------------------------------------------------------------
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
        self._check(Action.FREEZE, requester, via)
        freeze = Freeze(
            by=requester.who if via.door is not Door.CLI else requester.name,
            since=self.clock.now(),
            reason=reason[:500],
            via="cli" if via.door is Door.CLI else "slack",
        )
        already = self.guards.freeze(freeze)
        if already is not None:  # frozen by someone else between the check and the put
            self._check(Action.FREEZE, requester, via)
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
        self._check(Action.UNFREEZE, requester, via)
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

    def _after_settled(self, record: DeploymentRecord, final: Snapshot) -> None:
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

    # Abort ---------------------------------------------------------------------------------
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
        """Stop the rollout: put the previous task definition back at once (UpdateService),
        and follow that to its end; the deployment closes ABORTED. Refused when nothing is
        rolling out, or (``of``: a Stop button's deployment) when that one no longer is.
        Returns the aborted record (``abort_ecs_deployment_id`` once ECS said)."""
        via = via or Via.of(requester)
        decision = self._check(Action.ABORT, requester, via)
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
        self._ended_before_abort(record)
        marked = self.ledger.mark_aborted(record, requester.name)
        if marked is None:
            raise NothingToAbort(
                f"{record.kind} {record.id} of {record.tag} ended, or is being aborted, "
                f"meanwhile; nothing was changed. `{self.hints.status(name)}` shows what runs."
            )
        try:
            updated = self.aws.update_service(record.previous_task_definition)
        except Exception as exc:
            if _refused_outright(exc):
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
                _describe_failure(exc),
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
            "aborted by %s: putting %s back%s",
            requester.name,
            record.previous_tag,
            "; " + "; ".join(b.message for b in decision.bypassed) if decision.bypassed else "",
            extra={**record.log_fields, "aborted_by": requester.name},
        )
        return marked

    def _ended_before_abort(self, record: DeploymentRecord) -> None:
        """Read ECS before marking ``record`` aborted: a deployment ECS has already ended (the
        circuit breaker failed it and is rolling back, it completed, someone replaced it) is
        closed with what ECS did, which may freeze the target (freeze_after_failure), and the
        abort is refused (NothingToAbort) saying so. A deployment ECS still rolls out: None."""
        state = ServiceState.from_api(self._service())
        now = self.clock.now()
        reading = self.reconciler.read(record, state, now)
        verdict = reading.verdict
        if verdict is None:
            return
        final = self.reconciler.final_snapshot(
            reading.record, verdict, now, reading.ours, base=record.final
        )
        closed, _ = self.reconciler.settle(reading.record, final)
        outcome = closed.outcome if closed.outcome is not None else verdict.outcome
        reason = (closed.outcome_reason or verdict.reason).rstrip(".")
        what = f"{record.kind} {record.id} of {record.tag}"
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
                    state = ServiceState.from_api(self._service())
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

    # Approval ------------------------------------------------------------------------------
    def request_approval(self, plan: Plan, channel: str = "", source: str = "") -> ApprovalRequest:
        """Record an approval request for ``plan`` (made with ``Via(asking=True)``): who asked
        for what, from which image to which, until when; ``source``: promote's source target."""
        now = self.clock.now()
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
        raw = self._service()
        running_td = str(raw.get("taskDefinition", ""))
        if running_td != request.from_task_definition:
            current, _ = self._running(raw, self._history(20))
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
            return self.plan_redeploy(request.requester, request.reason, via=via)
        return self.plan_deploy(request.tag, request.requester, request.reason, via=via)

    # The queue -----------------------------------------------------------------------------
    def enqueue(
        self,
        requester: Requester,
        *,
        mode: QueueMode = QueueMode.DEPLOY,
        kind: str = "deploy",
        tag: str = "",
        reason: str = "",
        via: Via | None = None,
    ) -> tuple[QueuedItem, int]:
        """Queue a deploy for when the lock is free (or a person to tell then); the item and
        its position (1: next). The deploy is checked again when its turn comes."""
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

    def _queued(self) -> int:
        """How many deploys wait in the queue (people waiting to be told are no deploys):
        one read of the queue's count, however long the queue."""
        return self.guards.queued()

    def queue_position(self, item: QueuedItem) -> int:
        """1-based place among the queued items of the same mode; 0 when gone."""
        return self.guards.position(item)

    def cancel_queued(self, item_id: str, requester: Requester) -> QueuedItem:
        """Remove a queued item; only the person who queued it may."""
        item = next((q for q in self.queue() if q.id == item_id), None)
        if item is None:
            raise NoSuchRequest(
                f"Nothing queued as {item_id[:64]!r} on {self.target.name}: it ran, was "
                "cancelled, or never was."
            )
        if item.requester.who != requester.who or not self.guards.take(item, requester.who):
            raise NoSuchRequest(
                f"Only {item.requester.name}, who queued it, may cancel it (or it has just "
                "been taken off the queue)."
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
            self.check_lock()
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
            return self.plan_redeploy(item.requester, item.reason, via=via)
        return self.plan_deploy(item.tag, item.requester, item.reason, via=via)

    def _as_approved(self, item: QueuedItem, plan: Plan) -> None:
        """A queued deploy that was approved goes only while its approval holds, exactly as
        for a direct approval: the request approved and not expired, what runs still what it
        showed ("from"), and the image the one it showed (the tag may have moved while it
        waited); else nothing."""
        why = self._approval_lapsed(item.request_id, plan.digest)
        if why is not None:
            raise RuleRefused(lapsed_approval(self.target, plan.kind, plan.tag, why, self.hints))

    def lock_free_waiters(self) -> list[QueuedItem]:
        """Once the lock is free: the people who asked to be told, each taken off the queue
        by exactly one process (the transport tells them)."""
        waiting = self.guards.tells()
        if not waiting:
            return []
        try:
            self.check_lock()
        except LockHeld:
            return []
        return [q for q in waiting if self.guards.take(q)]

    # Watching ------------------------------------------------------------------------------
    def follow(self, record: DeploymentRecord) -> bool:
        """Follow ``record`` to its outcome in this process (no watcher needed); False when
        another process holds its follower lease (it follows it)."""
        return self.poller.follow(record)

    def followed_elsewhere(self, record: DeploymentRecord) -> bool:
        """Another process holds ``record``'s follower lease and renews it (as this process
        has seen it: a lease nobody renewed for a whole lease has lapsed)."""
        if self.poller.owns(record.id):
            return False
        return not self.poller.leases.lapsed(record, self.poller.follower)

    def own(self, record: DeploymentRecord) -> bool:
        """Hold ``record``'s follower lease, to finish what its message shows; False when
        another process holds it. ``disown`` when done (it is renewed meanwhile)."""
        return self.poller.own(record)

    def disown(self, record: DeploymentRecord) -> None:
        self.poller.disown(record)

    def watch(
        self, record: DeploymentRecord, loop: asyncio.AbstractEventLoop | None = None
    ) -> Watch:
        """Follow ``record`` (if not yet) and return a watcher of its snapshots."""
        return self.poller.track(record, loop)

    def open_deployments(self) -> list[DeploymentRecord]:
        """Deployments to follow after a restart: open, or closed "unknown" (the rollout may
        still run), that nobody follows: a live follower lease elsewhere is left alone (the
        periodic pass takes it over if it lapses). A lock left by a settled deployment is
        released on the way."""
        records = self._history(50)
        held = self.ledger.lock_item()
        if held is not None:
            holder = next((r for r in records if r.id == held.deployment_id), None)
            if holder is not None and holder.settled:
                self.ledger.take_over(held)
        return [
            r
            for r in records
            if (r.open or r.outcome == Outcome.UNKNOWN) and not self.followed_elsewhere(r)
        ]

    def annotate(self, record: DeploymentRecord, message_ref: str) -> DeploymentRecord:
        return self.ledger.annotate(record, message_ref)

    def close(self) -> None:
        self.poller.stop()
        self.github_deployments.close()
        self._beside.shutdown(wait=False)


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


def _tasks_by_release(
    state: ServiceState, running: Running, records: list[DeploymentRecord]
) -> tuple[ReleaseTasks, ...]:
    """One entry per ECS deployment, named by its release: the service's task definition is
    what runs' (``running``), others by the records that started or replaced them."""

    def tag_of(task_definition: str) -> str:
        if task_definition == running.task_definition:
            return running.tag
        for r in records:
            if r.task_definition == task_definition and r.tag:
                return r.tag
        for r in records:
            if r.previous_task_definition == task_definition and r.previous_tag:
                return r.previous_tag
        return revision_of(task_definition)

    return tuple(
        ReleaseTasks(
            tag=tag_of(d.task_definition),
            revision=revision_of(d.task_definition),
            new=d.status == "PRIMARY",
            running=d.running,
            pending=d.pending,
            desired=d.desired,
        )
        for d in sorted(state.deployments, key=lambda d: d.status != "PRIMARY")
    )


def _rolling_out(ecs_id: str, counts: EcsDeployment | Snapshot) -> str:
    return (
        f"; its ECS deployment {ecs_id or '?'} is still rolling out "
        f"({counts.running}/{counts.desired} running)"
    )


def _held_lock(lock: Lock | None, records: list[DeploymentRecord], now: datetime) -> Lock | None:
    """The lock as a status shows it: held while its lease runs, and past it while its
    holder's record is not settled (a watch ended before ECS did: Engine._free_if_done
    refuses over it whatever the lease says)."""
    if lock is None or lock.expires_at >= now:
        return lock
    holder = next((r for r in records if r.id == lock.deployment_id), None)
    return lock if holder is not None and not holder.settled else None


def _refused_outright(exc: BaseException) -> bool:
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


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")
    if isinstance(exc, DeployError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


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


def _register_kwargs(current: dict[str, Any], container: str, image: str) -> dict[str, Any]:
    kwargs = {k: current[k] for k in _REGISTER_FIELDS if current.get(k) not in (None, [], {})}
    kwargs["containerDefinitions"] = [
        {**c, "image": image} if c.get("name") == container else c
        for c in current["containerDefinitions"]
    ]
    return kwargs


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
