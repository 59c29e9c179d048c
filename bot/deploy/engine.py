"""The engine: plan a deploy, redeploy or rollback, start it, follow it. boto3 only.

A change goes in two steps, so a transport can show it before AWS is touched:

    plan = engine.plan_deploy("v4.4.0", requester)   # reads only; refuses (DeployRefused)
    record = engine.start(plan, message_ref)          # takes the lock, changes AWS, follows

``deploy`` / ``redeploy`` / ``rollback`` do both at once. Every refusal happens before any
change and says what to do next. Open records are reconciled with ECS by any engine call that
reads the service.

``Engine`` is the facade the doors call; each of its methods is one stage's (bot/deploy/
parts.py lists them: reads, measure, lock, planning, guardrails, starting, aborting), and the
values it takes and returns are bot/deploy/records.py's. Its base (bot/deploy/doors.py) is the
bookkeeping the doors do beside rendering; its supervisor (bot/deploy/supervisor.py) runs the
loops and publishes what happens on ``events``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.aborting import Aborter
from bot.deploy.alarms import AlarmView
from bot.deploy.aws import AwsClient
from bot.deploy.changes import ChangeSummary
from bot.deploy.digests import DigestClaims
from bot.deploy.doors import ForTheDoors
from bot.deploy.events import Settled
from bot.deploy.guardrails import Guardrails
from bot.deploy.lock import Locking
from bot.deploy.measure import STATS_GITHUB_ASKS, Measure
from bot.deploy.parts import Parts
from bot.deploy.pausing import Pause, PauseDecision, Pauser
from bot.deploy.planning import Planner
from bot.deploy.poller import Watch
from bot.deploy.progressive import Shift
from bot.deploy.reads import Reads
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
    Requester,
    Status,
    Surroundings,
    Turn,
    Via,
)
from bot.deploy.rollout import Outcome
from bot.deploy.starting import Starter
from bot.deploy.stats import FourKeys
from bot.deploy.table import Precondition
from bot.hints import Door as HintsDoor
from bot.hints import Hints
from bot.rules import Freeze
from bot.settings import Settings
from bot.target import Target

Images = list[dict[str, Any]]  # DescribeImages' details: one listing several reads share


def _follower_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Engine(ForTheDoors):
    """One engine per target and process; transports call it and render what it returns."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        aws: AwsClient | None = None,
        target: Target | None = None,
    ) -> None:
        # The target this engine deploys, with its rules; without one, the settings' service
        # under DEPLOY_TARGET's name and no rules beyond who and where.
        target = target or Target(
            name=settings.deploy_target,
            cluster=settings.ecs_cluster,
            service=settings.ecs_service,
            repository=settings.ecr_repository,
            container=settings.ecs_container,
            deployers=settings.deploy_allowed_users,
            channels=settings.deploy_allowed_channels,
        )
        aws = aws or AwsClient(settings, target=target, clock=clock)
        parts = Parts(settings, clock, aws, target, _follower_id())
        self.parts = parts
        self.settings, self.clock, self.aws, self.target = settings, clock, parts.aws, target
        self.ledger, self.guards = parts.ledger, parts.guards
        self.poller, self.reconciler, self.github = parts.poller, parts.reconciler, parts.github
        self.reads = Reads(parts)
        self.measure = Measure(parts, self.reads)
        self.lock = Locking(parts, self.reads)
        self.planner = Planner(parts, self.reads, self.lock)
        self.guardrails = Guardrails(parts, self.reads, self.lock, self.planner)
        self.starter = Starter(parts, self.reads, self.lock, self.guardrails)
        self.aborter = Aborter(parts, self.reads, self.planner)
        self.pauser = Pauser(parts, self.planner, self.aborter)
        # What happens to this target's deployments, for the supervisor and the doors.
        self.events = self.reconciler.events
        self.events.subscribe(Settled, lambda e: self.guardrails.after_settled(e.record, e.final))
        self.github_deployments = github = parts.github_deployments
        if github.enabled:
            self.events.subscribe(Settled, lambda e: github.settled(e.record, e.final))

    def retarget(self, target: Target) -> None:
        """The same service under new rules (a configuration read again, user groups read
        again): what every plan and check asks from now on. A change already started keeps
        what was decided for it; the lock's own checks (rules.at_start) ask the new rules."""
        self.parts.target = target
        self.target = target

    @property
    def door(self) -> HintsDoor:
        """The door whose words this engine's refusals speak (bot/hints.py)."""
        return self.parts.door

    @door.setter
    def door(self, door: HintsDoor) -> None:
        self.parts.door = door

    @property
    def hints(self) -> Hints:
        return self.parts.hints

    @property
    def service_name(self) -> str:
        return self.parts.service_name

    @property
    def console_url(self) -> str:
        return self.parts.console_url

    # Reading (reads.py, measure.py) ----------------------------------------------------------
    def status(
        self, history: int = 5, max_age: float = 0.0, records: list[DeploymentRecord] | None = None
    ) -> Status:
        return self.reads.status(history, max_age, records)

    def recorded(self, limit: int = 20) -> list[DeploymentRecord]:
        return self.reads.recorded(limit)

    def history(self, limit: int = 10, *, leave_followed: bool = False) -> list[DeploymentRecord]:
        return self.reads.history(limit, leave_followed=leave_followed)

    def look_around(
        self, limit: int = 20, *, describe: bool = False, outside_since: datetime | None = None
    ) -> Surroundings:
        return self.reads.look_around(limit, describe=describe, outside_since=outside_since)

    def reconcile(self, limit: int = 20) -> list[DeploymentRecord]:
        return self.reads.reconcile(limit)

    def image_of(self, task_definition: str) -> str:
        return self.reads.image_of(task_definition)

    def ecr_images(self) -> Images:
        return self.reads.ecr_images()

    def recent_tags(self, limit: int = 5, images: Images | None = None) -> list[str]:
        return self.reads.recent_tags(limit, images)

    def recent_images(self, limit: int = 5, images: Images | None = None) -> list[ImageInfo]:
        return self.reads.recent_images(limit, images)

    def recent_changes(self, limit: int = 5) -> tuple[list[ImageInfo], dict[str, ChangeSummary]]:
        return self.reads.recent_changes(limit)

    def change_between(
        self, current: str | None, target: str, images: Images | None = None
    ) -> ChangeSummary:
        return self.reads.change_between(current, target, images)

    def change_to(self, target: str) -> ChangeSummary:
        return self.reads.change_to(target)

    def stats(
        self, since: datetime, until: datetime, *, github_asks: int = STATS_GITHUB_ASKS
    ) -> FourKeys:
        return self.measure.stats(since, until, github_asks=github_asks)

    def claim_digest(self, due: datetime, holder: str) -> bool:
        """Take the weekly digest due at ``due`` for ``holder`` (bot/deploy/digests.py)."""
        claims = DigestClaims(self.ledger.table, self.clock)
        return claims.claim(due, holder, self.settings.lock_lease_seconds)

    def digest_posted(self, due: datetime, holder: str) -> None:
        DigestClaims(self.ledger.table, self.clock).posted(due, holder)

    def tell_channel(self, news: News) -> News:
        """Record ``news`` (done from a terminal) for a bot to announce in the channel."""
        return self.ledger.add_news(news)

    # The lock (lock.py) ----------------------------------------------------------------------
    def acquire(
        self,
        requester: Requester,
        tag: str,
        deployment_id: str,
        record_sk: str = "",
        checks: Sequence[Precondition] = (),
    ) -> Lock:
        return self.lock.acquire(requester, tag, deployment_id, record_sk, checks)

    def check_lock(self) -> None:
        self.lock.check_lock()

    def unlock(self, by: Requester | None = None, *, only_if_idle: bool = False) -> Lock | None:
        return self.lock.unlock(by, only_if_idle=only_if_idle)

    # Planning (planning.py) ------------------------------------------------------------------
    def resolve(
        self, tag_text: str, images: Images | None = None, recent: Sequence[str] | None = None
    ) -> tuple[str, str]:
        return self.planner.resolve(tag_text, images, recent)

    def plan_deploy(
        self,
        tag_text: str,
        requester: Requester,
        reason: str = "",
        *,
        via: Via | None = None,
        images: Images | None = None,
    ) -> Plan:
        return self.planner.plan_deploy(tag_text, requester, reason, via=via, images=images)

    def plan_image(
        self,
        kind: str,
        tag: str,
        digest: str,
        requester: Requester,
        reason: str = "",
        *,
        via: Via | None = None,
        images: Images | None = None,
    ) -> Plan:
        return self.planner.plan_image(kind, tag, digest, requester, reason, via=via, images=images)

    def plan_redeploy(
        self, requester: Requester, reason: str = "", *, via: Via | None = None
    ) -> Plan:
        return self.planner.plan_redeploy(requester, reason, via=via)

    def plan_rollback(
        self, requester: Requester, reason: str = "", of: str = "", *, via: Via | None = None
    ) -> Plan:
        return self.planner.plan_rollback(requester, reason, of, via=via)

    # Changing (starting.py, aborting.py) -----------------------------------------------------
    def start(self, plan: Plan, message_ref: str = "", follow: bool = True) -> DeploymentRecord:
        return self.starter.start(plan, message_ref, follow)

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

    def rolling_out(self) -> DeploymentRecord | None:
        return self.aborter.rolling_out()

    def abort(
        self, requester: Requester, *, via: Via | None = None, of: str = ""
    ) -> DeploymentRecord:
        return self.aborter.abort(requester, via=via, of=of)

    def follow_abort(
        self, record: DeploymentRecord, on_wait: Callable[[], None] | None = None
    ) -> tuple[Outcome | None, str]:
        return self.aborter.follow_abort(record, on_wait)

    # A deployment ECS paused at a hook (pausing.py) -----------------------------------------
    def paused(self, of: str = "") -> Pause | None:
        """The deployment rolling out, when ECS awaits a decision on it (with its check)."""
        return self.pauser.find(of)

    def pause_of(self, record: DeploymentRecord, shift: Shift) -> Pause:
        """What a follower shows of a pause it saw (``shift``: its snapshot's): the test
        listener and its check (asked once per hook), a decision taken already."""
        return self.pauser.described(record, shift, self.reads.service(max_age=5.0))

    def claim_pause_notice(self, hook_id: str) -> bool:
        return self.pauser.claim_pause_notice(hook_id)

    def decide_pause(
        self,
        requester: Requester,
        action: str,
        *,
        via: Via,
        of: str = "",
        hook_id: str = "",
        confirmed: bool = False,
    ) -> PauseDecision:
        return self.pauser.decide(
            requester, action, via=via, of=of, hook_id=hook_id, confirmed=confirmed
        )

    # The guardrails (guardrails.py) ----------------------------------------------------------
    def freeze(self, requester: Requester, reason: str, *, via: Via | None = None) -> Freeze:
        return self.guardrails.freeze(requester, reason, via=via)

    def unfreeze(self, requester: Requester, *, via: Via | None = None) -> Freeze:
        return self.guardrails.unfreeze(requester, via=via)

    def request_approval(self, plan: Plan, channel: str = "", source: str = "") -> ApprovalRequest:
        return self.guardrails.request_approval(plan, channel, source)

    def approve(
        self,
        request_id: str,
        approver: Requester,
        *,
        via: Via,
        replan: Callable[[ApprovalRequest, Via], Plan] | None = None,
    ) -> Approval:
        return self.guardrails.approve(request_id, approver, via=via, replan=replan)

    def reject(self, request_id: str, who: Requester) -> ApprovalRequest:
        return self.guardrails.reject(request_id, who)

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
        return self.guardrails.enqueue(
            requester, mode=mode, kind=kind, tag=tag, reason=reason, via=via, thread=thread
        )

    def queue(self) -> list[QueuedItem]:
        return self.guardrails.queue()

    def queue_position(self, item: QueuedItem) -> int:
        return self.guardrails.queue_position(item)

    def cancel_queued(self, item_id: str, requester: Requester) -> QueuedItem:
        return self.guardrails.cancel_queued(item_id, requester)

    def next_turn(self, replan: Callable[[QueuedItem, Via], Plan] | None = None) -> Turn | None:
        return self.guardrails.next_turn(replan)

    def lock_free_waiters(self) -> list[QueuedItem]:
        return self.guardrails.lock_free_waiters()

    # Watching (the follower: poller.py) ------------------------------------------------------
    def follow(self, record: DeploymentRecord) -> bool:
        """Follow ``record`` to its outcome in this process; False when another process holds
        its follower lease (it follows it)."""
        return self.poller.follow(record)

    def followed_elsewhere(self, record: DeploymentRecord) -> bool:
        return self.reads.followed_elsewhere(record)

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
        return self.reads.open_deployments()

    def alarms_now(self, names: Sequence[str]) -> list[AlarmView]:
        """CloudWatch's alarms ``names`` now (bot/deploy/alarms.py): when one that failed a
        deployment went to ALARM, for its message. DeployError when CloudWatch cannot say."""
        return self.planner.alarms.now(names)

    def annotate(self, record: DeploymentRecord, message_ref: str) -> DeploymentRecord:
        return self.ledger.annotate(record, message_ref)

    def close(self) -> None:
        self.poller.stop()
        self.github_deployments.close()
        self.parts.beside.shutdown(wait=False)
