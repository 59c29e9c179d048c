"""Reading a target: what runs, its status and history (open records reconciled with ECS on
the way), the images in ECR and what moving from one to another changes. Writes nothing but
what reconciling settles."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bot.deploy.aws import aws_errors
from bot.deploy.changes import ChangeSummary, describe_change, images_from_ecr
from bot.deploy.outside import unexplained
from bot.deploy.parts import Stage
from bot.deploy.plan_diff import diff, registration, summary_line
from bot.deploy.records import (
    DeploymentRecord,
    ImageInfo,
    Lock,
    QueuedItem,
    ReleaseTasks,
    Running,
    Status,
    Surroundings,
    commit_of,
)
from bot.deploy.rollout import EcsDeployment, Outcome, ServiceState, revision_of
from bot.errors import DeployError, ServiceMissing
from bot.rules import Freeze
from bot.tags import TagError, parse_tag

log = logging.getLogger("deploybot.engine")

_EPOCH = datetime.fromtimestamp(0, UTC)
# The revision's tag naming the image tag users know. The image itself is pinned by digest:
# ECS takes "repository-url/image:tag" or "repository-url/image@digest", not both
# (ContainerDefinition.image, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
# API_ContainerDefinition.html), so the tag goes beside it.
TAG_KEY = "deploybot:tag"


class Reads(Stage):
    """What a target runs and ran, read from ECS, ECR and the table."""

    def service(self, max_age: float = 0.0) -> dict[str, Any]:
        with aws_errors("reading the service"):
            raw = self.aws.describe_service(max_age)
        if raw is None:
            raise ServiceMissing(
                f"Service {self.settings.ecs_service} was not found in cluster "
                f"{self.settings.ecs_cluster} ({self.aws.region}). Check ECS_CLUSTER, "
                "ECS_SERVICE and AWS_REGION, or create the stack with `make infra`."
            )
        return raw

    def container(self, task_definition: dict[str, Any]) -> dict[str, Any]:
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

    def recorded(self, limit: int = 50) -> list[DeploymentRecord]:
        return self.ledger.history(limit)

    def running(
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
        image = str(self.container(td).get("image", ""))
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
            commit = self.commit_in(found) if found else commit
        if not tag and digest:
            if images is not None:
                found = next((i for i in images if i.get("imageDigest") == digest), None)
            else:
                with aws_errors("looking the running image up in ECR"):
                    found = self.aws.image_by_digest(digest)
            tag = self._release_tag(found) if found else ""
            commit = self.commit_in(found) if found else commit
        primary = ServiceState.from_api(raw).primary
        return Running(
            arn, image, tag or digest, digest, record, commit, primary.id if primary else ""
        ), td

    def commit_in(self, image: dict[str, Any]) -> str:
        """The commit of an image (DescribeImages' details): its sha- tag, "" if none."""
        return commit_of(images_from_ecr([image], self.settings.image_tag_suffix)[0]) or ""

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
        records = self.recorded(20)  # before the service: see Planner._prepare
        current, td = self.running(self.service(), records, listing)
        return self._changes_from(current, targets, listing, td)

    def recent_changes(self, limit: int = 5) -> tuple[list[ImageInfo], dict[str, ChangeSummary]]:
        """The recent release images and what deploying each would change (/deploy's list
        and its Deploy buttons): the repository is listed beside the reads of what runs.
        When what runs cannot be read the list comes without changes (still worth showing);
        when ECR cannot be read, DeployError."""
        listing = self.parts.beside.submit(self.ecr_images)
        try:
            records = self.recorded(20)  # before the service: see Planner._prepare
            raw: dict[str, Any] | None = self.service()
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
            current, td = self.running(raw, records, found)
        except DeployError as exc:
            log.warning("no change summaries for the list of images: %s", exc)
            return images, {}
        return images, self._changes_from(current, [i.tags[0] for i in images], found, td)

    def _changes_from(
        self,
        current: Running,
        targets: Sequence[str],
        listing: list[dict[str, Any]],
        td: dict[str, Any] | None = None,
    ) -> dict[str, ChangeSummary]:
        before = current.digest or current.image or None
        suffix = self.settings.image_tag_suffix
        known = images_from_ecr(listing, suffix)

        def one(target: str) -> ChangeSummary:
            summary = describe_change(known, before, target, self.github, suffix)
            if td is None or summary.target is None:
                return summary
            return replace(summary, task_line=self._task_line(current, td, summary.target.digest))

        if len(targets) < 2 or not (self.github.configured and self.github.has_token):
            # No GitHub call to wait for: threads would only cost their start.
            return {t: one(t) for t in targets}
        with ThreadPoolExecutor(max_workers=min(5, len(targets))) as pool:
            found = list(pool.map(one, targets))
        return dict(zip(targets, found, strict=True))

    def _task_line(self, current: Running, td: dict[str, Any], digest: str) -> str:
        """The task definition's one line for deploying ``digest`` over what runs (``td``):
        the revision a deploy would register, compared with it (no AWS call: the checks come
        with the plan)."""
        try:
            container = str(self.container(td).get("name", ""))
        except DeployError:
            return ""
        new = registration(td, container, pinned(current.image, digest))
        return summary_line(diff(td, new, base=revision_of(current.task_definition)))

    def plan_change(
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
        batch's description (never older than the records: see Planner._prepare)."""
        # The lock, the freeze and the queue are read beside the history and the service (no
        # order between them matters): the status waits for the longest read, not for all.
        guard = self.parts.beside.submit(self._guard_state)
        beside: list[Future[Any]] = [guard]
        try:
            if records is None:
                # The history too. A record is only judged against a description read after
                # it (see Planner._prepare): when the history has one to judge, the service is
                # described again once the history is in (a rollout: one call more).
                asked = self.parts.beside.submit(self.recorded, max(history, 20))
                beside.append(asked)
                raw = self.service(max_age)
                records = asked.result()
                tracking = set(self.poller.tracking())
                if any(not r.settled and r.id not in tracking for r in records):
                    raw = self.service()
            else:
                raw = self.service(max_age)
            state = ServiceState.from_api(raw)
            judged = self.judge(state, records)
            # Settling a deployment releases its lock (and a failure may freeze the target):
            # the lock, the freeze and the queue shown are then read again, after it.
            settled = any(
                new.settled and not old.settled for new, old in zip(judged, records, strict=True)
            )
            records = judged
            running, _ = self.running(raw, records)
            commit = running.commit
            if commit is None and running.digest:
                try:
                    with aws_errors("looking the running image up in ECR"):
                        found = self.aws.image_by_digest(running.digest)
                    commit = self.commit_in(found) if found else None
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

    def history(self, limit: int = 10, *, leave_followed: bool = False) -> list[DeploymentRecord]:
        """Recent deployments, newest first; open ones reconciled with ECS first. With
        ``leave_followed`` (a bot's periodic pass), records another process follows are left
        to it: their follower reconciles them at every poll."""
        records = self.recorded(limit)
        skip = set(self.poller.tracking())
        if leave_followed:
            self.poller.leases.keep_only({r.id for r in records})
            skip |= {r.id for r in records if self.followed_elsewhere(r)}
        if all(r.settled or r.id in skip for r in records):
            return records
        try:
            state = ServiceState.from_api(self.service())
        except DeployError as exc:  # history is still worth showing without ECS
            log.warning("could not reconcile open deployments: %s", exc)
            return records
        return self.judge(state, records, skip)

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
            state = ServiceState.from_api(self.service())
        except DeployError as exc:  # the news is still worth announcing without ECS
            log.warning("could not read the service: %s", exc)
            return Surroundings(records, news)
        if judge:
            records = self.judge(state, records, skip)
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
            image = str(self.container(td).get("image", ""))
        except DeployError as exc:
            log.warning("could not read %s: %s", task_definition, exc)
            return ""
        tag = split_image(image)[1]
        return next((t["value"] for t in tags if t.get("key") == TAG_KEY), "") or tag or image

    def reconcile(self, limit: int = 20) -> list[DeploymentRecord]:
        """Settle every recent record that is not settled and not followed here, from one
        DescribeServices; returns the records that changed (a bot's periodic pass)."""
        records = self.recorded(limit)
        tracking = set(self.poller.tracking())
        if all(r.settled or r.id in tracking for r in records):
            return []
        state = ServiceState.from_api(self.service())
        updated = self.judge(state, records)
        return [new for new, old in zip(updated, records, strict=True) if new != old]

    def judge(
        self, state: ServiceState, records: list[DeploymentRecord], skip: set[str] | None = None
    ) -> list[DeploymentRecord]:
        """``records`` reconciled with ``state`` (a description read after them): each one
        ECS has ended is settled; those followed here or in ``skip`` are left to their
        follower."""
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

    def followed_elsewhere(self, record: DeploymentRecord) -> bool:
        """Another process holds ``record``'s follower lease and renews it (as this process
        has seen it: a lease nobody renewed for a whole lease has lapsed)."""
        if self.poller.owns(record.id):
            return False
        return not self.poller.leases.lapsed(record, self.poller.follower)

    def open_deployments(self) -> list[DeploymentRecord]:
        """Deployments to follow after a restart: open, or closed "unknown" (the rollout may
        still run), that nobody follows: a live follower lease elsewhere is left alone (the
        periodic pass takes it over if it lapses). A lock left by a settled deployment is
        released on the way."""
        records = self.recorded(50)
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


def split_image(image: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of ``registry/repo:tag``, ``registry/repo@sha256:…`` or
    ``registry/repo:tag@sha256:…``; missing parts are ""."""
    base, _, digest = image.partition("@")
    slash = base.rfind("/")
    colon = base.rfind(":")
    if colon > slash:
        return base[:colon], base[colon + 1 :], digest
    return base, "", digest


def repository_of(image: str) -> str:
    """``repo`` (or ``path/repo``) from an image reference, without registry and tag."""
    base = split_image(image)[0]
    return base.split("/", 1)[1] if "/" in base else base


def pinned(image: str, digest: str) -> str:
    """``registry/repo@sha256:…``: the image by digest, whatever the tag points to later."""
    return f"{split_image(image)[0]}@{digest}"


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


def _held_lock(lock: Lock | None, records: list[DeploymentRecord], now: datetime) -> Lock | None:
    """The lock as a status shows it: held while its lease runs, and past it while its
    holder's record is not settled (a watch ended before ECS did: Locking._free_if_done
    refuses over it whatever the lease says)."""
    if lock is None or lock.expires_at >= now:
        return lock
    holder = next((r for r in records if r.id == lock.deployment_id), None)
    return lock if holder is not None and not holder.settled else None
