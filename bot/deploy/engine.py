"""The engine: deploy(tag), redeploy(), rollback(), status(). boto3 only; no Slack, no terminal.

Every refusal happens before any change and says what to do next. A started deployment is
followed by the service's one poller (``watch``) to its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.aws import AwsClient, aws_errors
from bot.deploy.errors import (
    AwsTrouble,
    BadTag,
    DeployError,
    ImageMissing,
    NothingToRollBack,
    ServiceMissing,
)
from bot.deploy.ledger import (
    DeploymentRecord,
    Ledger,
    Lock,
    Requester,
    new_deployment_id,
)
from bot.deploy.poller import ServicePoller, Watch
from bot.deploy.rollout import EcsDeployment, Outcome, ServiceState, revision_of
from bot.settings import Settings
from bot.tags import TagError, parse_tag

log = logging.getLogger("deploybot.engine")

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


def image_tag_of(image: str) -> str:
    """``v4.4.0-…`` from ``123.dkr.ecr.eu-west-1.amazonaws.com/repo:v4.4.0-…``."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return name.split("@", 1)[1]
    return name.split(":", 1)[1] if ":" in name else "latest"


def repository_of(image: str) -> str:
    """``repo`` (or ``path/repo``) from an image reference, without registry and tag."""
    path = image.split("/", 1)[1] if "/" in image else image
    path = path.split("@", 1)[0]
    return path.rsplit(":", 1)[0] if ":" in path.rsplit("/", 1)[-1] else path


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

    @property
    def revision(self) -> str:
        return revision_of(self.task_definition)


@dataclass(frozen=True)
class ImageInfo:
    tags: tuple[str, ...]
    pushed_at: datetime | None
    digest: str


class Engine:
    """One engine per process; transports call it and render what it returns."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        aws: AwsClient | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.aws = aws or AwsClient(settings)
        self.ledger = Ledger(self.aws, settings.lock_lease_seconds, clock)
        self.poller = ServicePoller(
            self.aws,
            self.ledger,
            poll_seconds=settings.rollout_poll_seconds,
            timeout_seconds=settings.rollout_timeout_seconds,
            lease_seconds=settings.lock_lease_seconds,
            clock=clock,
        )
        self._start_lock = threading.Lock()

    @property
    def service_name(self) -> str:
        return f"{self.settings.ecs_cluster}/{self.settings.ecs_service}"

    # Reading -------------------------------------------------------------------------------
    def _service(self) -> dict[str, Any]:
        with aws_errors("reading the service"):
            raw = self.aws.describe_service()
        if raw is None:
            raise ServiceMissing(
                f"Service {self.settings.ecs_service} was not found in cluster "
                f"{self.settings.ecs_cluster} ({self.settings.aws_region}). Check ECS_CLUSTER, "
                "ECS_SERVICE and AWS_REGION, or create the stack with `make infra`."
            )
        return raw

    def _container(self, task_definition: dict[str, Any]) -> dict[str, Any]:
        repo = self.settings.ecr_repository
        containers = task_definition.get("containerDefinitions", [])
        for container in containers:
            if repository_of(str(container.get("image", ""))) == repo:
                return dict(container)
        if len(containers) == 1:
            return dict(containers[0])
        raise ServiceMissing(
            f"No container of {revision_of(task_definition['taskDefinitionArn'])} runs an image "
            f"from repository {repo}. Check ECR_REPOSITORY."
        )

    def recent_tags(self, limit: int = 5) -> list[str]:
        """The most recently pushed release tags (vX.Y.Z), newest first."""
        return [info.tags[0] for info in self.recent_images(limit)]

    def recent_images(self, limit: int = 5) -> list[ImageInfo]:
        with aws_errors("listing the images in ECR"):
            images = self.aws.images()
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

    def status(self, history: int = 5) -> Status:
        raw = self._service()
        state = ServiceState.from_api(raw)
        with aws_errors("reading the task definition"):
            td, _ = self.aws.describe_task_definition(state.task_definition)
        image = str(self._container(td).get("image", ""))
        return Status(
            cluster=self.settings.ecs_cluster,
            service=self.settings.ecs_service,
            tag=image_tag_of(image),
            image=image,
            task_definition=state.task_definition,
            desired=state.desired,
            running=state.running,
            pending=state.pending,
            rollout=state.rolling_out,
            deployments=state.deployments,
            lock=self.ledger.current_lock(),
            recent=tuple(self.ledger.history(history)),
        )

    def history(self, limit: int = 10) -> list[DeploymentRecord]:
        return self.ledger.history(limit)

    def unlock(self) -> Lock | None:
        lock = self.ledger.break_lock()
        if lock is not None:
            log.warning(
                "lock broken; it was %s's",
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

    # Changing ------------------------------------------------------------------------------
    def deploy(self, tag_text: str, requester: Requester, reason: str = "") -> DeploymentRecord:
        """Start deploying ``tag_text``; refuse (DeployRefused) before any change if we can't."""
        try:
            tag = parse_tag(tag_text, self.settings.image_tag_suffix)
        except TagError as exc:
            raise BadTag(str(exc)) from None
        raw = self._service()
        with aws_errors("looking the image up in ECR"):
            image = self.aws.image(tag.value)
        if image is None:
            recent = self.recent_tags()
            hint = (
                f" Recent tags: {', '.join(recent)}."
                if recent
                else " The repository has no release images yet."
            )
            raise ImageMissing(
                f"No image tagged {tag.value} in ECR repository "
                f"{self.settings.ecr_repository}.{hint}",
                tag=tag.value,
                recent=recent,
            )
        return self._start(raw, "deploy", tag.value, requester, reason)

    def redeploy(self, requester: Requester, reason: str = "") -> DeploymentRecord:
        """Force a new deployment of the task definition that runs now."""
        raw = self._service()
        return self._start(raw, "redeploy", None, requester, reason)

    def rollback_target(self, raw_service: dict[str, Any] | None = None) -> DeploymentRecord:
        """The last completed deployment of an image other than the one running now."""
        raw = raw_service or self._service()
        with aws_errors("reading the task definition"):
            td, _ = self.aws.describe_task_definition(str(raw["taskDefinition"]))
        running = image_tag_of(str(self._container(td).get("image", "")))
        for record in self.ledger.history(100):
            if record.outcome == Outcome.COMPLETED and record.tag != running:
                return record
        raise NothingToRollBack(
            f"Nothing to roll back to: no earlier completed deployment of an image other than "
            f"{running}. Deploy a tag instead (`/deploy TAG`, `make deploy TAG=…`)."
        )

    def rollback(self, requester: Requester, reason: str = "") -> DeploymentRecord:
        """Deploy the image of the last deployment that completed before the current one."""
        raw = self._service()
        target = self.rollback_target(raw)
        why = reason or f"rollback to {target.tag} (deployment {target.id})"
        return self._start(raw, "rollback", target.tag, requester, why)

    def _start(
        self,
        raw_service: dict[str, Any],
        kind: str,
        tag: str | None,
        requester: Requester,
        reason: str,
    ) -> DeploymentRecord:
        current_arn = str(raw_service["taskDefinition"])
        with aws_errors("reading the task definition"):
            current, _ = self.aws.describe_task_definition(current_arn)
        container = self._container(current)
        current_image = str(container["image"])
        current_tag = image_tag_of(current_image)
        target_tag = tag or current_tag
        deployment_id = new_deployment_id(self.clock)
        self.ledger.acquire(requester, target_tag, deployment_id)
        changed = recorded = False
        try:
            if kind == "redeploy":
                new_arn, new_image = current_arn, current_image
            else:
                new_image = _swap_tag(current_image, target_tag)
                with aws_errors("registering the new task definition"):
                    registered = self.aws.register_task_definition(
                        **_register_kwargs(current, container["name"], new_image),
                        tags=_revision_tags(requester, deployment_id, reason),
                    )
                new_arn = str(registered["taskDefinitionArn"])
            started_at = self.clock.now()
            record = DeploymentRecord(
                id=deployment_id,
                service=self.service_name,
                kind=kind,
                tag=target_tag,
                image=new_image,
                task_definition=new_arn,
                previous_task_definition=current_arn,
                previous_tag=current_tag,
                ecs_deployment_id="",
                who=requester.who,
                who_display=requester.name,
                source=requester.source,
                reason=reason,
                started_at=started_at,
            )
            # Recorded before ECS is asked: a process that dies in between leaves a record that
            # a restart finishes (or closes as never started), never a lock nobody knows of.
            self.ledger.record(record)
            recorded = True
            with aws_errors("updating the service"):
                updated = self.aws.update_service(new_arn, force=kind == "redeploy")
            changed = True
            primary = ServiceState.from_api(updated).primary
            ecs_id = primary.id if primary else ""
            record = self.ledger.set_ecs_deployment(record, ecs_id)
        except BaseException as exc:
            if not changed:
                if recorded:
                    self.ledger.forget(record)  # nothing happened: no history entry either
                self.ledger.release(deployment_id)
            if isinstance(exc, AwsTrouble) and changed:
                exc.changed, exc.exit_code = True, 1
            raise
        log.info(
            "%s of %s started by %s",
            kind,
            target_tag,
            requester.name,
            extra={**record.log_fields, "kind": kind, "ecs_deployment_id": ecs_id},
        )
        return record

    def hold(self, record: DeploymentRecord) -> None:
        """Keep the lock for the whole timeout: nobody watches a --no-wait deployment."""
        self.ledger.renew(record.id, seconds=self.settings.rollout_timeout_seconds)

    # Watching ------------------------------------------------------------------------------
    def watch(
        self, record: DeploymentRecord, loop: asyncio.AbstractEventLoop | None = None
    ) -> Watch:
        """Follow ``record`` to its outcome through the service's one poller."""
        return self.poller.track(record, loop)

    def open_deployments(self) -> list[DeploymentRecord]:
        """Deployments started but never closed (the watcher died): resume these. A lock
        left by a deployment that was closed is released on the way."""
        self.ledger.release_stale()
        return self.ledger.open_records()

    def annotate(self, record: DeploymentRecord, message_ref: str) -> DeploymentRecord:
        return self.ledger.annotate(record, message_ref)

    def close(self) -> None:
        self.poller.stop()


def _swap_tag(image: str, tag: str) -> str:
    base = image.split("@", 1)[0]
    if ":" in base.rsplit("/", 1)[-1]:
        base = base.rsplit(":", 1)[0]
    return f"{base}:{tag}"


def _register_kwargs(current: dict[str, Any], container: str, image: str) -> dict[str, Any]:
    kwargs = {k: current[k] for k in _REGISTER_FIELDS if current.get(k) not in (None, [], {})}
    kwargs["containerDefinitions"] = [
        {**c, "image": image} if c.get("name") == container else c
        for c in current["containerDefinitions"]
    ]
    return kwargs


def _revision_tags(requester: Requester, deployment_id: str, reason: str) -> list[dict[str, str]]:
    def clean(value: str) -> str:
        return _TAG_VALUE.sub("_", value)[:256] or "-"

    tags = [
        {"key": "deploybot:deployment", "value": deployment_id},
        {"key": "deploybot:deployed-by", "value": clean(requester.name)},
        {"key": "deploybot:source", "value": clean(requester.source)},
    ]
    if reason:
        tags.append({"key": "deploybot:reason", "value": clean(reason)})
    return tags


__all__ = ["DeployError", "Engine", "ImageInfo", "Status", "image_tag_of"]
