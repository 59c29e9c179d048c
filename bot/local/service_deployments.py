"""ECS service deployments and service revisions, as the simulation records and answers them.

ECS records every deployment of a service as a *service deployment* (an ARN, a status, the circuit
breaker's and the alarms' view, rollback details) that moves from a set of source *service
revisions* to a target one. moto has none of this; ``RolloutSimulator`` (bot/local/simulator.py)
keeps one ``ServiceDeployment`` per deployment it runs, and this module answers ECS's operations
on them through moto's server (``install()``, called by ``patch_moto_ecs``):
ListServiceDeployments, DescribeServiceDeployments, DescribeServiceRevisions,
StopServiceDeployment and ContinueServiceDeployment. Their forms are botocore's ECS model; each
answer is checked against it before it leaves (``check_names``), so a misspelt member fails loudly
instead of being dropped by moto's serializer.

Pages followed (AWS's ECS documentation):
- API reference: ServiceDeployment, ServiceDeploymentBrief, ServiceRevision, ServiceRevisionSummary,
  ServiceDeploymentCircuitBreaker, ServiceDeploymentAlarms, Rollback, Failure,
  https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ServiceDeployment.html (and the
  pages beside it); ListServiceDeployments, DescribeServiceDeployments ("failures": the ARN with
  reason MISSING; at most 20 ARNs), DescribeServiceRevisions, StopServiceDeployment
  (API_StopServiceDeployment.html), ContinueServiceDeployment.
- Developer guide: "View service history using Amazon ECS service deployments"
  (developerguide/service-deployment.html): a service deployment is created when a service is
  created, updated with force-new-deployment, or updated in a way that needs a deployment; it
  starts PENDING; IN_PROGRESS, STOP_REQUESTED, ROLLBACK_REQUESTED and ROLLBACK_IN_PROGRESS are
  ongoing; SUCCESSFUL, STOPPED, ROLLBACK_SUCCESSFUL and ROLLBACK_FAILED are final. A rollback is
  not a service deployment of its own: the failed one goes ROLLBACK_IN_PROGRESS and ends
  ROLLBACK_SUCCESSFUL (or ROLLBACK_FAILED), with ``rollback.serviceRevisionArn`` the revision the
  rollback deployed.
- "Stopping Amazon ECS service deployments" (developerguide/stop-service-deployment.html):
  PENDING or IN_PROGRESS move to ROLLBACK_REQUESTED and the rollback starts; a deployment already
  stopping or rolling back carries on.
- "How CloudWatch alarms detect Amazon ECS deployment failures"
  (developerguide/deployment-alarm-failure.html): alarms are watched once tasks of the new
  revision run and through a bake time after the old tasks are gone, the deployment staying
  IN_PROGRESS meanwhile; an alarm in ALARM fails the deployment and, with rollback, ECS rolls back
  to the last completed deployment.
- "Pause hooks for Amazon ECS service deployments" (developerguide/pause-lifecycle-hooks.html)
  and "Continuing service deployments" (developerguide/continue-service-deployment.html): a PAUSE
  hook gets a ``hookId`` (``ecs-pause-…``) and waits AWAITING_ACTION, with ``expiresAt`` and
  ``timeoutAction`` (API_DeploymentLifecycleHookTimeoutConfiguration: 1440 minutes and ROLLBACK
  by default), until ContinueServiceDeployment, which needs the hook AWAITING_ACTION and the
  deployment IN_PROGRESS; CONTINUE is the default action. The model's lifecycleStages text: no
  PAUSE hook at TEST_TRAFFIC_SHIFT or PRODUCTION_TRAFFIC_SHIFT; PRE_PRODUCTION_TRAFFIC_SHIFT runs
  before every traffic shift step of a canary or linear deployment.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, Shape, StructureShape
from moto.core.exceptions import ServiceException

# moto answers requests on several threads and the simulator ticks on its own: every read or
# change of a simulated service happens under this lock (bot/local/simulator.py shares it).
SIM_LOCK = threading.RLock()

# ServiceDeployment.status (botocore's ServiceDeploymentStatus).
PENDING = "PENDING"
IN_PROGRESS = "IN_PROGRESS"
SUCCESSFUL = "SUCCESSFUL"
STOPPED = "STOPPED"
STOP_REQUESTED = "STOP_REQUESTED"
ROLLBACK_REQUESTED = "ROLLBACK_REQUESTED"
ROLLBACK_IN_PROGRESS = "ROLLBACK_IN_PROGRESS"
ROLLBACK_SUCCESSFUL = "ROLLBACK_SUCCESSFUL"
ROLLBACK_FAILED = "ROLLBACK_FAILED"
FINAL_STATUSES = frozenset({SUCCESSFUL, STOPPED, ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED})

# ServiceDeploymentCircuitBreaker.status / ServiceDeploymentAlarms.status.
MONITORING = "MONITORING"
MONITORING_COMPLETE = "MONITORING_COMPLETE"
TRIGGERED = "TRIGGERED"
DISABLED = "DISABLED"

MAX_DESCRIBE = 20  # DescribeServiceDeployments / DescribeServiceRevisions: "a maximum of 20 ARNs"
DEFAULT_PAGE = 20
MAX_PAGE = 100

# statusReason and rollback.reason texts. ECS's own words are not all documented; these follow
# its service events ("deployment failed: tasks failed to start", "alarm(s) detected").
CIRCUIT_BREAKER_ROLLBACK_REASON = (
    "Service deployment rolled back because the circuit breaker threshold was exceeded."
)
CIRCUIT_BREAKER_STOP_REASON = (
    "Service deployment failed because the circuit breaker threshold was exceeded."
)
STOP_ROLLBACK_REASON = "Service deployment rolled back because of a StopServiceDeployment request."
STOPPED_REASON = "Service deployment stopped because of a StopServiceDeployment request."
REPLACED_REASON = "Service deployment stopped because a newer service deployment started."
ROLLBACK_FAILED_REASON = "Service deployment rollback failed: the rollback's tasks failed to start."
NO_ROLLBACK_TARGET_REASON = "Service deployment rollback failed: no revision to roll back to."


def alarm_reason(names: list[str], *, rollback: bool) -> str:
    """statusReason / rollback.reason of a deployment failed by its alarms."""
    what = "rolled back" if rollback else "failed"
    return f"Service deployment {what} because alarm(s) {', '.join(names)} went into ALARM state."


_rng = random.Random()


def new_deployment_id() -> str:
    """A service deployment id as ECS shows them (22 URL-safe characters)."""
    return base64.urlsafe_b64encode(_rng.randbytes(16)).decode().rstrip("=")[:22]


def new_revision_id() -> str:
    """A service revision id: 19 digits."""
    return str(_rng.randrange(10**18, 10**19))


def service_deployment_arn(region: str, account: str, cluster: str, service: str, id_: str) -> str:
    return f"arn:aws:ecs:{region}:{account}:service-deployment/{cluster}/{service}/{id_}"


def service_revision_arn(region: str, account: str, cluster: str, service: str, id_: str) -> str:
    return f"arn:aws:ecs:{region}:{account}:service-revision/{cluster}/{service}/{id_}"


@dataclass
class ParsedArn:
    region: str
    account: str
    kind: str  # service-deployment or service-revision
    cluster: str
    service: str
    id: str


def parse_arn(arn: str) -> ParsedArn | None:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "ecs":
        return None
    path = parts[5].split("/")
    if len(path) != 4 or path[0] not in ("service-deployment", "service-revision"):
        return None
    if not all(path[1:]):
        return None
    return ParsedArn(parts[3], parts[4], path[0], path[1], path[2], path[3])


@dataclass
class ServiceRevision:
    """What one revision of a service runs (ServiceRevision), fixed when it is made."""

    arn: str
    service_arn: str
    cluster_arn: str
    task_definition: str
    launch_type: str
    network_configuration: dict[str, Any] | None
    container_images: list[dict[str, str]]
    load_balancers: list[dict[str, Any]]
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "serviceRevisionArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "taskDefinition": self.task_definition,
            "launchType": self.launch_type,
            "platformVersion": "1.4.0",
            "platformFamily": "Linux",
            "loadBalancers": self.load_balancers,
            "serviceRegistries": [],
            "containerImages": self.container_images,
            "guardDutyEnabled": False,
            "createdAt": self.created_at,
        }
        if self.network_configuration:
            out["networkConfiguration"] = self.network_configuration
        return out


@dataclass
class RevisionCounts:
    """A ServiceRevisionSummary: a revision's task counts in one deployment."""

    arn: str
    requested: int = 0
    running: int = 0
    pending: int = 0
    # Traffic weights (percent) of a strategy that shifts traffic; None under ROLLING.
    test_weight: float | None = None
    production_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "arn": self.arn,
            "requestedTaskCount": self.requested,
            "runningTaskCount": self.running,
            "pendingTaskCount": self.pending,
        }
        if self.test_weight is not None:
            out["requestedTestTrafficWeight"] = float(self.test_weight)
        if self.production_weight is not None:
            out["requestedProductionTrafficWeight"] = float(self.production_weight)
        return out


# DeploymentLifecycleHookDetail.status; stages a PAUSE hook may not name (the model's
# lifecycleStages documentation: "PAUSE hooks cannot be configured at TEST_TRAFFIC_SHIFT or
# PRODUCTION_TRAFFIC_SHIFT stages").
AWAITING_ACTION = "AWAITING_ACTION"
HOOK_SUCCEEDED = "SUCCEEDED"
HOOK_FAILED = "FAILED"
HOOK_TIMED_OUT = "TIMED_OUT"
NO_PAUSE_STAGES = ("TEST_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT")
SHIFTING_STRATEGIES = ("BLUE_GREEN", "CANARY", "LINEAR")
DEFAULT_HOOK_TIMEOUT_MINUTES = 1440  # API_DeploymentLifecycleHookTimeoutConfiguration
DEFAULT_HOOK_TIMEOUT_ACTION = "ROLLBACK"


def new_hook_id() -> str:
    """A pause hook's id as ECS shows them (pause-lifecycle-hooks.html): ``ecs-pause-`` and 43
    URL-safe characters."""
    return "ecs-pause-" + base64.urlsafe_b64encode(_rng.randbytes(32)).decode().rstrip("=")


@dataclass
class HookRun:
    """One execution of a PAUSE lifecycle hook (DeploymentLifecycleHookDetail)."""

    hook_id: str
    stage: str  # the configured lifecycle stage it ran at
    expires_at: datetime
    timeout_action: str
    ticks_left: int  # simulator steps before the timeout action
    status: str = AWAITING_ACTION

    def as_dict(self) -> dict[str, Any]:
        return {
            "hookId": self.hook_id,
            "targetType": "PAUSE",
            "status": self.status,
            "expiresAt": self.expires_at,
            "timeoutAction": self.timeout_action,
        }


@dataclass
class ServiceDeployment:
    """One ECS service deployment (the ServiceDeployment shape) and the simulator's notes on it."""

    arn: str
    service_arn: str
    cluster_arn: str
    created_at: datetime
    target: RevisionCounts
    sources: list[RevisionCounts]
    deployment_configuration: dict[str, Any]
    status: str = PENDING
    status_reason: str | None = None
    lifecycle_stage: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stopped_at: datetime | None = None
    updated_at: datetime | None = None
    breaker_status: str = DISABLED
    failure_count: int = 0
    threshold: int = 0
    alarms_status: str = DISABLED
    alarm_names: list[str] = field(default_factory=list)
    triggered_alarms: list[str] = field(default_factory=list)
    rollback_reason: str | None = None
    rollback_started_at: datetime | None = None
    rollback_revision: str | None = None
    # What a StopServiceDeployment asked for, acted on at the simulator's next step.
    stop_requested: str | None = None  # "ROLLBACK" or "ABORT"
    bake_left: int | None = None  # steps of bake time left, once the rollout is whole
    bake_total: int = 0
    # A strategy that shifts traffic (BLUE_GREEN, CANARY, LINEAR): the simulator's program of
    # steps and where it is in it; the PAUSE hooks run at the current hook point.
    strategy: str = "ROLLING"
    program: list[tuple[Any, ...]] = field(default_factory=list)
    pc: int = 0
    wait_left: int | None = None
    hook_pc: object = None  # the point (program step, or stage) whose hooks have run
    passed: set[str] = field(default_factory=set)  # ROLLING: hook points passed
    hooks: list[HookRun] = field(default_factory=list)
    rollback_request_reason: str | None = None
    draining: bool = False  # a traffic-shifting rollback's green tasks are stopping
    # The new revision's share of test and production traffic, in percent.
    test_weight: float = 0.0
    production_weight: float = 0.0

    @property
    def progressive(self) -> bool:
        return self.strategy in SHIFTING_STRATEGIES

    def awaiting(self) -> list[HookRun]:
        return [h for h in self.hooks if h.status == AWAITING_ACTION]

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def set_status(self, status: str, now: datetime, reason: str | None = None) -> None:
        self.status = status
        self.updated_at = now
        if status != IN_PROGRESS:  # stopped or rolled back while paused: the pause is over
            for hook in self.hooks:
                if hook.status == AWAITING_ACTION:
                    hook.status = HOOK_FAILED
        if reason is not None:
            self.status_reason = reason
        if status == STOPPED:
            self.stopped_at = now
            self.finished_at = now
        elif status in FINAL_STATUSES:
            self.finished_at = now

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "serviceDeploymentArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at or self.created_at,
            "sourceServiceRevisions": [s.as_dict() for s in self.sources],
            "targetServiceRevision": self.target.as_dict(),
            "status": self.status,
            "deploymentConfiguration": self.deployment_configuration,
            "deploymentCircuitBreaker": {
                "status": self.breaker_status,
                "failureCount": self.failure_count,
                "threshold": self.threshold,
            },
            "alarms": {
                "status": self.alarms_status,
                "alarmNames": list(self.alarm_names),
                "triggeredAlarmNames": list(self.triggered_alarms),
            },
        }
        for key, value in (
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("stoppedAt", self.stopped_at),
            ("statusReason", self.status_reason),
            ("lifecycleStage", self.lifecycle_stage),
        ):
            if value is not None:
                out[key] = value
        if self.hooks:
            out["lifecycleHookDetails"] = [h.as_dict() for h in self.hooks]
        if self.rollback_started_at is not None:
            out["rollback"] = {
                "reason": self.rollback_reason or "",
                "startedAt": self.rollback_started_at,
                "serviceRevisionArn": self.rollback_revision or "",
            }
        return out

    def brief(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "serviceDeploymentArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "createdAt": self.created_at,
            "targetServiceRevisionArn": self.target.arn,
            "status": self.status,
        }
        for key, value in (
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("statusReason", self.status_reason),
        ):
            if value is not None:
                out[key] = value
        return out


# --- errors, as ECS names them (botocore's ECS model) -------------------------------------


class EcsError(ServiceException):
    """An ECS error answered over moto's JSON protocol (``__type`` and ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(code, message)


def invalid(message: str) -> EcsError:
    return EcsError("InvalidParameterException", message)


def check_deployment_configuration(config: Any) -> None:
    """Refuse what ECS refuses in a deploymentConfiguration the simulation acts on: a PAUSE hook
    at TEST_TRAFFIC_SHIFT or PRODUCTION_TRAFFIC_SHIFT (the model's lifecycleStages text)."""
    if not isinstance(config, dict):
        return
    for hook in config.get("lifecycleHooks") or []:
        if hook.get("targetType") != "PAUSE":
            continue
        bad = [s for s in hook.get("lifecycleStages") or [] if s in NO_PAUSE_STAGES]
        if bad:
            raise invalid(f"PAUSE hooks cannot be configured at {', '.join(bad)}.")


# --- the model check ------------------------------------------------------------------------

_MODEL_LOCK = threading.Lock()
_model: Any = None


def ecs_model() -> Any:
    global _model
    with _MODEL_LOCK:
        if _model is None:
            _model = botocore.session.get_session().get_service_model("ecs")
        return _model


def check_names(shape: Shape, value: Any, path: str = "") -> None:
    """Raise ValueError if ``value`` has a member ``shape`` lacks, anywhere inside (moto's
    serializer would drop it silently). Types and enums are the tests' walker's job."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for key, item in value.items():
            if key not in shape.members:
                raise ValueError(f"{path or shape.name}: no member {key!r} in {shape.name}")
            check_names(shape.members[key], item, f"{path}.{key}")
    elif isinstance(shape, ListShape) and isinstance(value, list):
        for i, item in enumerate(value):
            check_names(shape.member, item, f"{path}[{i}]")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            check_names(shape.value, item, f"{path}[{key!r}]")


def checked(operation: str, result: dict[str, Any]) -> dict[str, Any]:
    check_names(ecs_model().operation_model(operation).output_shape, result, operation)
    return result


# --- the operations -------------------------------------------------------------------------


def _sim_of(service: Any) -> Any:
    return getattr(service, "_rollout_sim", None)


def _deployments_of(service: Any) -> list[ServiceDeployment]:
    sim = _sim_of(service)
    return list(sim.service_deployments) if sim is not None else []


def find_deployment(arn: str) -> tuple[Any, ServiceDeployment] | None:
    """(moto's Service, its ServiceDeployment) for an ARN, or None."""
    from moto.ecs.models import ecs_backends

    parsed = parse_arn(arn)
    if parsed is None or parsed.kind != "service-deployment":
        return None
    try:
        backend = ecs_backends[parsed.account][parsed.region]
        service = backend._get_service(parsed.cluster, parsed.service)
    except Exception:  # no such account, region, cluster or service
        return None
    for deployment in _deployments_of(service):
        if deployment.arn == arn:
            return service, deployment
    return None


def find_revision(arn: str) -> ServiceRevision | None:
    from moto.ecs.models import ecs_backends

    parsed = parse_arn(arn)
    if parsed is None or parsed.kind != "service-revision":
        return None
    try:
        service = ecs_backends[parsed.account][parsed.region]._get_service(
            parsed.cluster, parsed.service
        )
    except Exception:
        return None
    sim = _sim_of(service)
    revision: ServiceRevision | None = sim.revisions.get(arn) if sim is not None else None
    return revision


def _arns(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise invalid(f"{name} can not be empty.")
    if len(value) > MAX_DESCRIBE:
        raise invalid(f"{name} can have at most {MAX_DESCRIBE} items.")
    return [str(a) for a in value]


def describe_service_deployments(arns: Any) -> dict[str, Any]:
    found, failures = [], []
    with SIM_LOCK:
        for arn in _arns(arns, "serviceDeploymentArns"):
            hit = find_deployment(arn)
            if hit is None:
                failures.append({"arn": arn, "reason": "MISSING"})
            else:
                found.append(hit[1].as_dict())
    return checked(
        "DescribeServiceDeployments", {"serviceDeployments": found, "failures": failures}
    )


def describe_service_revisions(arns: Any) -> dict[str, Any]:
    found, failures = [], []
    with SIM_LOCK:
        for arn in _arns(arns, "serviceRevisionArns"):
            revision = find_revision(arn)
            if revision is None:
                failures.append({"arn": arn, "reason": "MISSING"})
            else:
                found.append(revision.as_dict())
    return checked("DescribeServiceRevisions", {"serviceRevisions": found, "failures": failures})


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    from datetime import UTC

    if isinstance(value, datetime):  # moto parses epoch seconds to a naive UTC datetime
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def list_service_deployments(
    backend: Any,
    cluster: str,
    service_name: str,
    statuses: Any,
    created_at: Any,
    next_token: str | None,
    max_results: Any,
) -> dict[str, Any]:
    """ListServiceDeployments: newest first, filtered by status and createdAt, paginated. A
    nextToken names the last deployment a page gave, so a deployment started between two pages
    neither repeats nor hides one."""
    with SIM_LOCK:
        service = backend._get_service(cluster, service_name)  # Cluster/ServiceNotFound
        found = sorted(_deployments_of(service), key=lambda d: d.created_at, reverse=True)
        briefs = [d.brief() for d in found]
    if statuses:
        wanted = {str(s) for s in statuses}
        briefs = [b for b in briefs if b["status"] in wanted]
    if created_at:
        after = _as_datetime(created_at.get("after"))
        before = _as_datetime(created_at.get("before"))
        briefs = [
            b
            for b in briefs
            if (after is None or b["createdAt"] >= after)
            and (before is None or b["createdAt"] <= before)
        ]
    size = DEFAULT_PAGE if max_results is None else int(max_results)
    if not 1 <= size <= MAX_PAGE:
        raise invalid(f"maxResults must be between 1 and {MAX_PAGE}.")
    start = 0
    if next_token:
        try:
            last = base64.urlsafe_b64decode(next_token.encode()).decode()
        except ValueError:
            raise invalid("The nextToken is not valid.") from None
        arns = [b["serviceDeploymentArn"] for b in briefs]
        if last not in arns:
            raise invalid("The nextToken is not valid.")
        start = arns.index(last) + 1
    page = briefs[start : start + size]
    result: dict[str, Any] = {"serviceDeployments": page}
    if start + size < len(briefs):
        token = page[-1]["serviceDeploymentArn"]
        result["nextToken"] = base64.urlsafe_b64encode(token.encode()).decode()
    return checked("ListServiceDeployments", result)


STOP_TYPES = ("ROLLBACK", "ABORT")


def stop_service_deployment(arn: Any, stop_type: Any, now: datetime) -> dict[str, Any]:
    """StopServiceDeployment: ROLLBACK (the default here: the API reference calls it the valid
    value) or ABORT, acted on at the simulator's next step. A deployment already stopping or
    rolling back carries on (developerguide/stop-service-deployment.html); a finished one is a
    ConflictException, the model's error for "conflict in the current state of the resource"."""
    if not isinstance(arn, str) or not arn:
        raise invalid("serviceDeploymentArn can not be blank.")
    kind = stop_type or "ROLLBACK"
    if kind not in STOP_TYPES:
        raise invalid(f"stopType must be one of {', '.join(STOP_TYPES)}.")
    with SIM_LOCK:
        if parse_arn(arn) is None:
            raise invalid(f"Invalid service deployment ARN: {arn}")
        hit = find_deployment(arn)
        if hit is None:
            raise EcsError(
                "ServiceDeploymentNotFoundException",
                f"The service deployment {arn} does not exist.",
            )
        deployment = hit[1]
        if deployment.final:
            raise EcsError(
                "ConflictException",
                f"The service deployment {arn} is already {deployment.status} and can't be "
                "stopped.",
            )
        if deployment.status in (PENDING, IN_PROGRESS):
            deployment.stop_requested = kind
            deployment.set_status(ROLLBACK_REQUESTED if kind == "ROLLBACK" else STOP_REQUESTED, now)
    return checked("StopServiceDeployment", {"serviceDeploymentArn": arn})


CONTINUE_ROLLBACK_REASON = (
    "Service deployment rolled back because of a ContinueServiceDeployment request."
)


def hook_timeout_reason(hook_id: str) -> str:
    return f"Service deployment rolled back because lifecycle hook {hook_id} timed out."


def continue_service_deployment(
    arn: Any, hook_id: Any, action: Any, now: datetime
) -> dict[str, Any]:
    """ContinueServiceDeployment (developerguide/continue-service-deployment.html): the hook
    must be AWAITING_ACTION and the deployment IN_PROGRESS. CONTINUE (the default) marks the
    hook SUCCEEDED and the deployment goes on at the simulator's next step; ROLLBACK marks it
    FAILED and the deployment is ROLLBACK_REQUESTED, rolled back at the next step. Anything
    else about the hook is an InvalidParameterException (the operation's errors have no
    conflict error)."""
    if not isinstance(arn, str) or not arn:
        raise invalid("serviceDeploymentArn can not be blank.")
    if not isinstance(hook_id, str) or not hook_id:
        raise invalid("hookId can not be blank.")
    kind = action or "CONTINUE"
    if kind not in ("CONTINUE", "ROLLBACK"):
        raise invalid("action must be one of CONTINUE, ROLLBACK.")
    with SIM_LOCK:
        hit = find_deployment(arn)
        if hit is None:
            raise EcsError(
                "ServiceDeploymentNotFoundException",
                f"The service deployment {arn} does not exist.",
            )
        deployment = hit[1]
        hook = next((h for h in deployment.hooks if h.hook_id == hook_id), None)
        if hook is None or hook.status != AWAITING_ACTION:
            raise invalid(f"The lifecycle hook {hook_id} is not awaiting action.")
        if deployment.status != IN_PROGRESS:
            raise invalid(f"The service deployment {arn} is {deployment.status}, not IN_PROGRESS.")
        if kind == "CONTINUE":
            hook.status = HOOK_SUCCEEDED
        else:
            hook.status = HOOK_FAILED
            deployment.stop_requested = "ROLLBACK"
            deployment.rollback_request_reason = CONTINUE_ROLLBACK_REASON
            deployment.set_status(ROLLBACK_REQUESTED, now)
    return checked("ContinueServiceDeployment", {"serviceDeploymentArn": arn})


_INSTALL_LOCK = threading.Lock()
_installed = False


def install(clock: Any) -> None:
    """Give moto's ECS response handler the five operations; idempotent."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        _installed = True
    from moto.ecs import responses as ecs_responses

    cls = ecs_responses.EC2ContainerServiceResponse

    def answer(produce: Any) -> Any:
        """An ActionResult, or an error as ECS's JSON protocol sends it: ``__type`` and
        ``message`` only (moto's serializer would add a ``Message`` the model does not have)."""
        from moto.core.responses import ActionResult

        try:
            return ActionResult(produce())
        except ServiceException as error:
            body = json.dumps({"__type": error.code, "message": error.message})
            return body, {"status": 400, "Content-Type": "application/x-amz-json-1.1"}

    def list_deployments(self: Any) -> Any:
        return answer(
            lambda: list_service_deployments(
                self.ecs_backend,
                self._get_param("cluster", "default"),
                str(self._get_param("service", "")).split("/")[-1],
                self._get_param("status"),
                self._get_param("createdAt"),
                self._get_param("nextToken"),
                self._get_param("maxResults"),
            )
        )

    def describe_deployments(self: Any) -> Any:
        return answer(
            lambda: describe_service_deployments(self._get_param("serviceDeploymentArns"))
        )

    def describe_revisions(self: Any) -> Any:
        return answer(lambda: describe_service_revisions(self._get_param("serviceRevisionArns")))

    def stop(self: Any) -> Any:
        return answer(
            lambda: stop_service_deployment(
                self._get_param("serviceDeploymentArn"), self._get_param("stopType"), clock()
            )
        )

    def continue_(self: Any) -> Any:
        return answer(
            lambda: continue_service_deployment(
                self._get_param("serviceDeploymentArn"),
                self._get_param("hookId"),
                self._get_param("action"),
                clock(),
            )
        )

    cls.list_service_deployments = list_deployments  # type: ignore[attr-defined]
    cls.describe_service_deployments = describe_deployments  # type: ignore[attr-defined]
    cls.describe_service_revisions = describe_revisions  # type: ignore[attr-defined]
    cls.stop_service_deployment = stop  # type: ignore[attr-defined]
    cls.continue_service_deployment = continue_  # type: ignore[attr-defined]
