"""A rollout as data: what DescribeServices says, the snapshots we emit, and the outcome.

The outcome is decided by the ECS deployment id we started, never by "the service is
stable": after a circuit-breaker rollback the service is stable too, on the old image.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.deploy.verifying import verifying_line
from bot.exit_codes import ExitCode


class Outcome(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"  # failed, and ECS's circuit breaker rolled the service back
    ABORTED = "ABORTED"  # someone pressed Stop: the previous task definition was put back
    # Another deployment took over (the console, CloudFormation, a deploy after `unlock`):
    # nothing of ours failed; the reason names what replaced it.
    REPLACED = "REPLACED"
    NOT_STARTED = "NOT_STARTED"  # ECS shows it never started: nothing changed
    # Not settled: a later reconcile (any engine call that reads the service) replaces these
    # with what ECS did in the end.
    STILL_ROLLING_OUT = "STILL_ROLLING_OUT"  # the timeout came first; ECS carries on
    UNKNOWN = "UNKNOWN"  # AWS stopped answering: lost sight of the rollout

    @property
    def exit_code(self) -> ExitCode:
        return {
            "COMPLETED": ExitCode.OK,
            "FAILED": ExitCode.FAILED,
            "ROLLED_BACK": ExitCode.FAILED,
            "ABORTED": ExitCode.FAILED,
            "REPLACED": ExitCode.FAILED,
            "NOT_STARTED": ExitCode.REFUSED,
            "STILL_ROLLING_OUT": ExitCode.STILL_ROLLING_OUT,
            "UNKNOWN": ExitCode.LOST,
        }[self.value]

    @property
    def label(self) -> str:
        return {
            "COMPLETED": "completed",
            "FAILED": "failed",
            "ROLLED_BACK": "failed and rolled back",
            "ABORTED": "aborted",
            "REPLACED": "replaced",
            "NOT_STARTED": "not started (nothing changed)",
            "STILL_ROLLING_OUT": "still rolling out",
            "UNKNOWN": "unknown (lost sight of it)",
        }[self.value]

    @property
    def settled(self) -> bool:
        """Final for good: what ECS did. The others are replaced once ECS is seen to finish."""
        return self not in (Outcome.STILL_ROLLING_OUT, Outcome.UNKNOWN)


@dataclass(frozen=True)
class ServiceEvent:
    id: str
    created_at: datetime
    message: str


@dataclass(frozen=True)
class StoppedTask:
    arn: str
    reason: str
    exit_code: int | None = None
    container_reason: str = ""
    # Where to look (bot/deploy/links.py): its container's CloudWatch Logs stream (or the log
    # group when no stream can be named), and its page in the ECS console; "" when unknown.
    log_url: str = ""
    task_url: str = ""

    @property
    def short_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1][:12]

    def describe(self) -> str:
        detail = self.container_reason or (
            f"exit code {self.exit_code}" if self.exit_code is not None else ""
        )
        return f"task {self.short_id} stopped: {self.reason}" + (f" ({detail})" if detail else "")


@dataclass(frozen=True)
class EcsDeployment:
    """One entry of a service's ``deployments`` list."""

    id: str
    status: str  # PRIMARY, ACTIVE, INACTIVE
    task_definition: str
    desired: int
    pending: int
    running: int
    failed: int
    rollout_state: str  # IN_PROGRESS, COMPLETED, FAILED ("" where ECS gives none)
    rollout_reason: str
    created_at: datetime | None
    # "The Unix timestamp for the time when the service deployment was last updated"
    # (Deployment.updatedAt, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
    # API_Deployment.html): for a deployment that completed or failed, when it did.
    updated_at: datetime | None = None

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> EcsDeployment:
        return cls(
            id=str(raw.get("id", "")),
            status=str(raw.get("status", "")),
            task_definition=str(raw.get("taskDefinition", "")),
            desired=int(raw.get("desiredCount", 0)),
            pending=int(raw.get("pendingCount", 0)),
            running=int(raw.get("runningCount", 0)),
            failed=int(raw.get("failedTasks", 0)),
            rollout_state=str(raw.get("rolloutState", "")),
            rollout_reason=str(raw.get("rolloutStateReason", "")),
            created_at=raw.get("createdAt"),
            updated_at=raw.get("updatedAt"),
        )


@dataclass(frozen=True)
class ServiceState:
    """The parts of DescribeServices a rollout is judged by."""

    name: str
    task_definition: str
    desired: int
    running: int
    pending: int
    deployments: tuple[EcsDeployment, ...]
    events: tuple[ServiceEvent, ...]  # newest first, as ECS gives them

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> ServiceState:
        return cls(
            name=str(raw.get("serviceName", "")),
            task_definition=str(raw.get("taskDefinition", "")),
            desired=int(raw.get("desiredCount", 0)),
            running=int(raw.get("runningCount", 0)),
            pending=int(raw.get("pendingCount", 0)),
            deployments=tuple(EcsDeployment.from_api(d) for d in raw.get("deployments", [])),
            events=tuple(
                ServiceEvent(
                    id=str(e.get("id", "")), created_at=e["createdAt"], message=e["message"]
                )
                for e in raw.get("events", [])
                if "createdAt" in e
            ),
        )

    def deployment(self, deployment_id: str) -> EcsDeployment | None:
        return next((d for d in self.deployments if d.id == deployment_id), None)

    @property
    def primary(self) -> EcsDeployment | None:
        return next((d for d in self.deployments if d.status == "PRIMARY"), None)

    @property
    def rolling_out(self) -> EcsDeployment | None:
        """The primary deployment while it is still in progress."""
        primary = self.primary
        if primary and (primary.rollout_state == "IN_PROGRESS" or len(self.deployments) > 1):
            return primary
        return None


def revision_of(task_definition_arn: str) -> str:
    """``family:12`` from a task-definition ARN."""
    return task_definition_arn.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    rollback_deployment: str = ""
    rollback_task_definition: str = ""
    # When it ended by ECS's own clock (the deployment's updatedAt, the event saying so, the
    # creation of what replaced it); None when ECS does not say: then "now". A deployment
    # judged long after it ended (nobody watched) must not take until someone looked.
    ended_at: datetime | None = None
    # ECS's service deployment it was judged with (bot/deploy/service_deployments.py), None
    # under the fallback: the final snapshot keeps it (Snapshot.service_deployment).
    service_deployment: dict[str, Any] | None = field(default=None, compare=False)


_FAILED_EVENT = re.compile(r"\(deployment (?P<id>ecs-svc/\d+)\) deployment failed: (?P<why>.*)")
_COMPLETED_EVENT = re.compile(r"\(deployment (?P<id>ecs-svc/\d+)\) deployment completed")

# How a deployment that replaced ours is named: "(deploybot deployment d-… of v4.5.0 by bob)"
# when deploybot started it, "(not started by deploybot)" when we know nothing of it.
DescribeOther = Callable[["EcsDeployment"], str]


def _not_ours(_: EcsDeployment) -> str:
    return "(not started by deploybot)"


def judge(
    state: ServiceState, deployment_id: str, describe_other: DescribeOther = _not_ours
) -> Verdict | None:
    """The outcome of our deployment as far as this state tells, or None while it runs.

    A circuit-breaker rollback is ECS failing *our* rollout and going back (our rolloutState
    FAILED, or ECS's "deployment failed" event naming ours); a newer deployment over ours
    that did not fail is someone's UpdateService (the console, ``make infra``, a deploy
    after ``unlock``): REPLACED, naming it; nothing of ours failed.
    """
    ours = state.deployment(deployment_id)
    primary = state.primary
    other = primary if primary and primary.id != deployment_id else None
    if ours is not None:
        if ours.rollout_state == "COMPLETED" or (
            not ours.rollout_state
            and ours.status == "PRIMARY"
            and len(state.deployments) == 1
            and ours.running >= ours.desired
        ):
            return Verdict(
                Outcome.COMPLETED,
                ours.rollout_reason or "steady state reached",
                ended_at=ours.updated_at,
            )
        if ours.rollout_state == "FAILED":
            failed = _failed(ours.rollout_reason or "the deployment failed", other)
            return replace(failed, ended_at=ours.updated_at)
        if ours.status != "PRIMARY" and other is not None:
            return _replaced(other, describe_other)
        return None
    # Ours is gone from the list. ECS's events say how it ended, while it keeps them: a
    # deployment nobody watched may have completed before a newer one replaced it.
    for event in state.events:
        m = _FAILED_EVENT.search(event.message)
        if m and m["id"] == deployment_id:
            return replace(_failed(m["why"].rstrip("."), other), ended_at=event.created_at)
        m = _COMPLETED_EVENT.search(event.message)
        if m and m["id"] == deployment_id:
            return Verdict(
                Outcome.COMPLETED, "completed (ECS's events say so)", ended_at=event.created_at
            )
    if other is not None:
        return _replaced(other, describe_other)
    return Verdict(Outcome.FAILED, "the deployment disappeared from the service")


def _replaced(other: EcsDeployment, describe_other: DescribeOther) -> Verdict:
    return Verdict(
        Outcome.REPLACED,
        f"replaced by ECS deployment {other.id} {describe_other(other)}",
        ended_at=other.created_at,
    )


def _failed(reason: str, rollback: EcsDeployment | None) -> Verdict:
    if rollback is None:
        return Verdict(Outcome.FAILED, reason)
    return Verdict(
        Outcome.ROLLED_BACK,
        reason,
        rollback_deployment=rollback.id,
        rollback_task_definition=rollback.task_definition,
    )


@dataclass(frozen=True)
class Snapshot:
    """What changed in one rollout at one poll. The last one carries the outcome."""

    deployment_id: str  # deploybot's id of the deployment (the history record's)
    ecs_deployment_id: str
    at: datetime
    elapsed: float
    rollout_state: str
    rollout_reason: str
    desired: int
    pending: int
    running: int
    failed: int
    new_events: tuple[ServiceEvent, ...] = ()
    stopped_tasks: tuple[StoppedTask, ...] = ()
    outcome: Outcome | None = None
    outcome_reason: str = ""
    rollback_deployment: str = ""
    rollback_task_definition: str = ""
    rollback_tag: str = ""
    # What the follower wants a reader to know besides ECS's state: AWS not answering, the
    # lock lost, "ECS may have started the deployment; following it", an outcome not recorded.
    note: str = ""
    # The log stream of the newest stopped task so far: kept to the final snapshot, so a
    # failure says where to look even when no task stopped in its last poll.
    log_url: str = ""
    # The final snapshot's: when the deployment ended (Verdict.ended_at, else ``at``); the
    # record's finished_at, so a duration ends when the deployment did.
    ended_at: datetime | None = None
    # ECS's ServiceDeployment for the record's deployment, as DescribeServiceDeployments
    # returns it (botocore's shape, datetimes parsed: https://docs.aws.amazon.com/AmazonECS/
    # latest/APIReference/API_ServiceDeployment.html), read at this poll; None when the
    # fallback is in use (the operations refused, no service deployment found): then the
    # fields above, from DescribeServices, are all there is. Renderers read it; they never
    # call AWS themselves.
    service_deployment: dict[str, Any] | None = field(default=None, compare=False)
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ecs_status(self) -> str:
        """The service deployment's status (IN_PROGRESS, SUCCESSFUL, ROLLBACK_SUCCESSFUL…),
        "" under the fallback."""
        return str((self.service_deployment or {}).get("status", ""))

    @property
    def final(self) -> bool:
        return self.outcome is not None

    def content_key(self) -> tuple[object, ...]:
        """Everything that makes two snapshots differ for a reader (not time)."""
        return (
            self.rollout_state,
            self.rollout_reason,
            self.desired,
            self.pending,
            self.running,
            self.failed,
            tuple(e.id for e in self.new_events),
            tuple(t.arn for t in self.stopped_tasks),
            self.outcome,
            self.note,
            _service_deployment_view(self.service_deployment),
            # While ECS bakes, the time it has baked: "verifying: alarms OK, 3 of ~6 min" moves
            # on though nothing else does (bot/deploy/verifying.py).
            verifying_line(self.service_deployment, self.at) if self.service_deployment else None,
        )


def _service_deployment_view(sd: dict[str, Any] | None) -> tuple[object, ...]:
    """What a reader may see change in a service deployment between two polls: its status and
    reason, lifecycle stage, the circuit breaker's count, the alarms' state, the hooks."""
    if not sd:
        return ()
    breaker = sd.get("deploymentCircuitBreaker") or {}
    alarms = sd.get("alarms") or {}
    revisions = [sd.get("targetServiceRevision") or {}, *(sd.get("sourceServiceRevisions") or [])]
    return (
        sd.get("status"),
        sd.get("statusReason"),
        sd.get("lifecycleStage"),
        breaker.get("status"),
        breaker.get("failureCount"),
        alarms.get("status"),
        tuple(alarms.get("triggeredAlarmNames") or ()),
        tuple((h.get("hookId"), h.get("status")) for h in sd.get("lifecycleHookDetails") or ()),
        tuple(
            (r.get("arn"), r.get("runningTaskCount"), r.get("requestedProductionTrafficWeight"))
            for r in revisions
        ),
    )
