"""The ECS rollout simulator: moto's ECS services roll deployments out on a timeline, as ECS does.

moto's ECS never rolls anything out. ``patch_moto_ecs()`` (done by MotoServer.start) teaches
moto's ECS backend the service side of a rolling update, in the server's own process:

- ``create_service`` starts the service settled: one PRIMARY deployment, rolloutState
  COMPLETED, ``desiredCount`` RUNNING tasks (real moto tasks: list_tasks / describe_tasks).
- ``update_service`` with a new task definition or ``forceNewDeployment`` adds a PRIMARY
  deployment (``ecs-svc/`` and 19 digits) IN_PROGRESS; the previous PRIMARY becomes ACTIVE.

``RolloutSimulator`` then moves every deployment along, one step per ``tick()`` (or every
``step_seconds`` on its own thread once started), with ECS's fields and event texts:

- A task goes PROVISIONING, PENDING, then RUNNING (``pending_ticks`` after launch); one task is
  launched a step (``launch_batch``). A task RUNNING for a full step counts as healthy, and
  only then is an old deployment's task stopped, so the healthy count never drops below the
  desired count (minimumHealthyPercent 100).
- A *broken* image's tasks reach RUNNING, then stop a step later: stoppedReason "Essential
  container in task exited", exit code 1; the deployment's failedTasks rises and the scheduler
  launches replacements. The circuit breaker trips at ECS's threshold, half the desired count
  rounded up, at least 3 and at most 200: rolloutState FAILED and, with rollback enabled, a
  new PRIMARY deployment of the last completed task definition, which then rolls out (a
  rollback that fails in turn stays FAILED).
- A *slow* image's tasks stay PENDING for ``slow_ticks``.
- An *alarming* image's tasks are healthy, but the service's deployment alarms go to ALARM
  halfway through the bake time (the playground's "healthy, but its 5xx alarm fires after
  start"), and back to OK once ECS has rolled it back.
- When the PRIMARY runs its desired count of healthy tasks and no older task is left, it is
  COMPLETED and the older deployments leave the list, as in ECS.

Service events are newest first, at most 100, worded as ECS words them.

Each deployment is also an ECS *service deployment* (bot/local/service_deployments.py, which
answers ListServiceDeployments, DescribeServiceDeployments, DescribeServiceRevisions,
StopServiceDeployment and ContinueServiceDeployment): PENDING at UpdateService, IN_PROGRESS from
the next step, SUCCESSFUL when complete; a circuit-breaker or alarm rollback turns the same
service deployment ROLLBACK_IN_PROGRESS, then ROLLBACK_SUCCESSFUL (ROLLBACK_FAILED when the
rollback fails too); without rollback it ends STOPPED, as does one replaced by a newer deployment.
With ``deploymentConfiguration.alarms`` enabled, the named CloudWatch alarms (moto's, set with
``set_alarm_state``) are watched once new tasks run and through ``bake_ticks`` steps after the
rollout is whole (lifecycleStage BAKE_TIME); one in ALARM fails the deployment (and rolls it back
with ``rollback``); ``bakeTimeInMinutes``, when set, replaces ``bake_ticks``.
StopServiceDeployment and ContinueServiceDeployment are acted on at the next step.

``deploymentConfiguration.strategy`` BLUE_GREEN, CANARY or LINEAR shifts traffic instead: the new
(green) revision scales up beside the old (blue) one, and the deployment walks ECS's lifecycle
stages in order (RECONCILE_SERVICE when more than one revision is active, PRE_SCALE_UP, SCALE_UP,
POST_SCALE_UP, TEST_TRAFFIC_SHIFT, POST_TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT in the
strategy's steps with their bake times, POST_PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME, CLEAN_UP), the
revisions' requested test and production traffic weights showing the split. PAUSE lifecycle hooks
hold it at their stage until ContinueServiceDeployment (CONTINUE or ROLLBACK) or their timeout's
action; a rollback sends all traffic back to blue and stops the green tasks. Every ECS time is
counted in ECS minutes of ``minute_ticks`` steps, so tests and the playground shorten them with
simulator arguments, never a mocked clock.

AWS pages followed: the ECS developer guide's "Rolling update" (deployment-type-ecs.html), "How
the Amazon ECS deployment circuit breaker detects failures" (deployment-circuit-breaker.html),
"How CloudWatch alarms detect Amazon ECS deployment failures" (deployment-alarm-failure.html),
"Amazon ECS blue/green deployments" (deployment-type-blue-green.html), "Amazon ECS canary
deployments" (canary-deployment.html), "Amazon ECS linear deployments" (linear-deployment.html),
"Lifecycle hooks" and "Pause hooks for Amazon ECS service deployments"
(deployment-lifecycle-hooks.html, pause-lifecycle-hooks.html), "Continuing service deployments"
(continue-service-deployment.html); the API reference's ServiceDeployment,
DeploymentConfiguration, CanaryConfiguration, LinearConfiguration, DeploymentLifecycleHook and
DeploymentLifecycleHookTimeoutConfiguration pages, and botocore's ECS model for their forms.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.ecs.models import EC2ContainerServiceBackend, Service, Task, ecs_backends

from bot.local import service_deployments as sd
from bot.local.service_deployments import (
    SIM_LOCK,
    ServiceDeployment,
    ServiceRevision,
)

if TYPE_CHECKING:
    from bot.local.aws import MotoServer

log = logging.getLogger(__name__)

DEFAULT_REGION = "eu-west-1"
CRASH_REASON = "Essential container in task exited"
CIRCUIT_BREAKER_REASON = "ECS deployment circuit breaker: tasks failed to start."
ALARM_FAILURE_REASON = "ECS deployment failed: alarm(s) detected."
MAX_EVENTS = 100
PENDING_STATUSES = ("PROVISIONING", "PENDING", "ACTIVATING")
DEFAULT_DEPLOYMENT_CONFIGURATION: dict[str, Any] = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}

TagRule = Iterable[str] | Callable[[str], bool]

# moto answers requests on several threads and the simulator ticks on its own: every read or
# change of a simulated service happens under this lock, and what the HTTP side serialises
# (service.deployments, service.events) is replaced whole, never changed in place.
_LOCK = SIM_LOCK
_PATCH_LOCK = threading.Lock()
_patched = False
_rng = random.Random()


def failure_threshold(desired_count: int) -> int:
    """Failed tasks that trip ECS's circuit breaker: half the desired count, in [3, 200]."""
    return min(200, max(3, math.ceil(desired_count / 2)))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_deployment_id() -> str:
    """An ECS deployment id: ``ecs-svc/`` and 19 digits."""
    return f"ecs-svc/{_rng.randrange(10**18, 10**19)}"


def image_tag(image: str) -> str:
    """The tag of an image reference (``repo:tag`` → ``tag``), or the reference itself."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name or ":" not in name:
        return image
    return name.rsplit(":", 1)[1]


class SimTask(Task):
    """A moto Task whose status is ours to set (moto's own would step on every describe), with
    the ECS task fields moto leaves out; the HTTP side serialises them by name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu: str | None = None
        self.memory: str | None = None
        self.created_at: datetime | None = None
        self.pull_started_at: datetime | None = None
        self.started_at: datetime | None = None
        self.stopping_at: datetime | None = None
        self.stopped_at: datetime | None = None
        self.stop_code: str | None = None
        self.health_status = "UNKNOWN"

    def advance(self) -> None:
        pass


@dataclass
class _Run:
    """One task of a deployment and where it is in its life."""

    task: SimTask
    fate: str  # "healthy", "broken" or "slow"
    age: int = 0  # steps since launch
    running_steps: int = 0

    @property
    def status(self) -> str:
        return self.task.last_status

    @property
    def live(self) -> bool:
        return self.status != "STOPPED"

    @property
    def pending(self) -> bool:
        return self.status in PENDING_STATUSES

    @property
    def healthy(self) -> bool:
        return self.status == "RUNNING" and self.running_steps >= 1


@dataclass
class _Deployment:
    id: str
    task_definition: str
    desired: int
    status: str
    rollout_state: str
    reason: str
    created_at: datetime
    updated_at: datetime
    failed: int = 0
    runs: list[_Run] = field(default_factory=list)
    is_rollback: bool = False  # a failed rollback is not rolled back again
    revision: str = ""  # the service revision's ARN
    # The service deployment this deployment carries out (or rolls back, when is_rollback).
    service_deployment: ServiceDeployment | None = None

    def live(self) -> list[_Run]:
        return [r for r in self.runs if r.live]

    @property
    def running(self) -> int:
        return sum(1 for r in self.runs if r.status == "RUNNING")

    @property
    def pending(self) -> int:
        return sum(1 for r in self.runs if r.pending)

    def as_dict(self, service: Service) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "taskDefinition": self.task_definition,
            "desiredCount": self.desired,
            "pendingCount": self.pending,
            "runningCount": self.running,
            "failedTasks": self.failed,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "launchType": service.launch_type,
            "platformVersion": "1.4.0",
            "platformFamily": "Linux",
            "networkConfiguration": service.network_configuration or None,
            "rolloutState": self.rollout_state,
            "rolloutStateReason": self.reason,
        }


@dataclass
class _ServiceSim:
    """The simulator's own state of one service, kept on moto's Service object."""

    deployments: list[_Deployment]
    events: list[dict[str, Any]] = field(default_factory=list)
    last_completed: _Deployment | None = None
    service_deployments: list[ServiceDeployment] = field(default_factory=list)
    revisions: dict[str, ServiceRevision] = field(default_factory=dict)
    fired_alarms: set[str] = field(default_factory=set)  # set to ALARM by an alarming image


def _sim(service: Service) -> _ServiceSim | None:
    return getattr(service, "_rollout_sim", None)


def _deployment_configuration(service: Service) -> dict[str, Any]:
    return getattr(service, "deployment_configuration", None) or {}


def _event(sim: _ServiceSim, message: str, now: datetime) -> None:
    entry = {"id": str(uuid.uuid4()), "createdAt": now, "message": message}
    sim.events = [entry, *sim.events][:MAX_EVENTS]


def _render(service: Service, sim: _ServiceSim) -> None:
    """Copy the simulated state onto moto's Service, which is what the HTTP side serialises."""
    primary = sim.deployments[0]
    service.deployments = [d.as_dict(service) for d in sim.deployments]
    service.task_definition = primary.task_definition
    service.desired_count = primary.desired
    service.running_count = sum(d.running for d in sim.deployments)
    service.pending_count = sum(d.pending for d in sim.deployments)
    service.events = list(sim.events)


def _task_ids(runs: Iterable[_Run]) -> str:
    return " ".join(f"(task {r.task.id})" for r in runs)


def _launch(
    backend: EC2ContainerServiceBackend,
    service: Service,
    deployment: _Deployment,
    fate: str,
    now: datetime,
    *,
    running: bool = False,
) -> _Run:
    cluster = backend._get_cluster(service.cluster_name)
    task_definition = backend.describe_task_definition(deployment.task_definition)
    task = SimTask(
        cluster=cluster,
        task_definition=task_definition,
        container_instance_arn=None,
        resource_requirements=None,
        backend=backend,
        group=f"service:{service.name}",
        launch_type=service.launch_type or "FARGATE",
        started_by=deployment.id,
        networking_configuration=service.network_configuration or None,
        platform_version="1.4.0",
    )
    task.id = uuid.uuid4().hex  # ECS task ids are 32 hex digits
    task.cpu = task_definition.cpu
    task.memory = task_definition.memory
    task.created_at = now
    task.last_status = "PROVISIONING"
    for container in task.containers:
        container.health_status = "UNKNOWN"
    run = _Run(task=task, fate=fate)
    if running:
        _set_running(run, now)
        run.running_steps = 1
    backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
    deployment.runs.append(run)
    return run


def _set_running(run: _Run, now: datetime) -> None:
    task = run.task
    task.last_status = "RUNNING"
    task.pull_started_at = task.pull_started_at or now
    task.started_at = now
    for container in task.containers:
        container.last_status = "RUNNING"


def _stop(run: _Run, reason: str, now: datetime, *, crashed: bool) -> None:
    task = run.task
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stopped_reason = reason
    task.stop_code = "EssentialContainerExited" if crashed else "ServiceSchedulerInitiated"
    task.stopping_at = now
    task.stopped_at = now
    for container in task.containers:
        container.last_status = "STOPPED"
        container.exitCode = 1 if crashed else 0
    try:  # release the task's network interface, as Fargate does
        from moto.ec2.models import ec2_backends

        ec2 = ec2_backends[task._account_id][task.region_name]
        attachments: list[dict[str, Any]] = task.attachments
        for attachment in attachments:
            for detail in attachment["details"]:
                if detail["name"] == "networkInterfaceId":
                    ec2.delete_network_interface(detail["value"])
            attachment["status"] = "DELETED"
    except Exception:  # a missing ENI is no reason to fail a stop
        log.debug("could not release the ENI of task %s", task.id, exc_info=True)


def _new_deployment(
    service: Service, sim: _ServiceSim, task_definition: str, now: datetime
) -> _Deployment:
    """A new PRIMARY deployment IN_PROGRESS; the previous PRIMARY becomes ACTIVE."""
    for old in sim.deployments:
        if old.status == "PRIMARY":
            old.status = "ACTIVE"
            old.updated_at = now
    deployment_id = new_deployment_id()
    deployment = _Deployment(
        id=deployment_id,
        task_definition=task_definition,
        desired=service.desired_count,
        status="PRIMARY",
        rollout_state="IN_PROGRESS",
        reason=f"ECS deployment {deployment_id} in progress.",
        created_at=now,
        updated_at=now,
    )
    sim.deployments = [deployment, *sim.deployments]
    return deployment


# --- service revisions and service deployments (bot/local/service_deployments.py) --------------


def _image_digest(backend: EC2ContainerServiceBackend, image: str) -> str | None:
    """The digest of an image reference: pinned (``repo@sha256:…``) or its tag in ECR (moto, in
    this process), as ECS resolves it for the service revision's containerImages."""
    _, _, digest = image.partition("@")
    if digest:
        return digest
    from moto.ecr.models import ecr_backends

    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return None
    repository_name, tag = name.rsplit(":", 1)
    try:
        repository = ecr_backends[backend.account_id][backend.region_name].repositories.get(
            repository_name
        )
    except KeyError:
        return None
    for found in list(repository.images) if repository else []:
        if tag in found.image_tags:
            digest_found: str = found.get_image_digest()
            return digest_found
    return None


def _make_revision(
    backend: EC2ContainerServiceBackend,
    service: Service,
    sim: _ServiceSim,
    task_definition: str,
    now: datetime,
) -> str:
    """A new service revision of ``service`` running ``task_definition``; its ARN."""
    cluster = backend._get_cluster(service.cluster_name)
    definition = backend.describe_task_definition(task_definition)
    images = []
    for container in definition.container_definitions:
        image = str(container.get("image", ""))
        entry = {"containerName": str(container.get("name", "")), "image": image}
        digest = _image_digest(backend, image)
        if digest:
            entry["imageDigest"] = digest
        images.append(entry)
    arn = sd.service_revision_arn(
        backend.region_name,
        backend.account_id,
        cluster.name,
        service.name,
        sd.new_revision_id(),
    )
    network = service.network_configuration
    sim.revisions[arn] = ServiceRevision(
        arn=arn,
        service_arn=service.arn,
        cluster_arn=cluster.arn,
        task_definition=definition.arn,
        launch_type=service.launch_type or "FARGATE",
        network_configuration=dict(network) if isinstance(network, dict) and network else None,
        container_images=images,
        load_balancers=list(service.load_balancers or []),
        created_at=now,
    )
    return arn


def _alarms_configuration(config: dict[str, Any]) -> dict[str, Any]:
    alarms = config.get("alarms") or {}
    return alarms if alarms.get("enable") else {}


def _begin_service_deployment(
    backend: EC2ContainerServiceBackend,
    service: Service,
    sim: _ServiceSim,
    deployment: _Deployment,
    now: datetime,
    *,
    settled: bool = False,
) -> ServiceDeployment:
    """The service deployment that ``deployment`` carries out, PENDING (SUCCESSFUL when the
    service starts settled); any unfinished older one is STOPPED, replaced by it."""
    cluster = backend._get_cluster(service.cluster_name)
    deployment.revision = _make_revision(backend, service, sim, deployment.task_definition, now)
    sources: dict[str, sd.RevisionCounts] = {}
    for other in sim.deployments:
        if other is not deployment and other.revision and other.revision not in sources:
            sources[other.revision] = sd.RevisionCounts(other.revision)
    config = copy.deepcopy(_deployment_configuration(service))
    breaker = config.get("deploymentCircuitBreaker") or {}
    alarms = _alarms_configuration(config)
    record = ServiceDeployment(
        arn=sd.service_deployment_arn(
            backend.region_name,
            backend.account_id,
            cluster.name,
            service.name,
            sd.new_deployment_id(),
        ),
        service_arn=service.arn,
        cluster_arn=cluster.arn,
        created_at=now,
        updated_at=now,
        target=sd.RevisionCounts(deployment.revision),
        sources=list(sources.values()),
        deployment_configuration=config,
        breaker_status=sd.MONITORING if breaker.get("enable") else sd.DISABLED,
        threshold=failure_threshold(deployment.desired),
        alarms_status=sd.MONITORING if alarms else sd.DISABLED,
        alarm_names=[str(n) for n in alarms.get("alarmNames") or []],
        strategy=str(config.get("strategy") or "ROLLING"),
    )
    for older in sim.service_deployments:
        if not older.final:
            older.stop_requested = None
            older.set_status(sd.STOPPED, now, sd.REPLACED_REASON)
    if settled:
        record.started_at = now
        record.set_status(sd.SUCCESSFUL, now)
        record.breaker_status = sd.MONITORING_COMPLETE if breaker.get("enable") else sd.DISABLED
        record.alarms_status = sd.MONITORING_COMPLETE if alarms else sd.DISABLED
    deployment.service_deployment = record
    sim.service_deployments = [record, *sim.service_deployments]
    _sync_counts(sim, record)
    return record


def _sync_counts(sim: _ServiceSim, record: ServiceDeployment) -> None:
    """Task counts of a service deployment's revisions, from the deployments running them, and
    (strategies that shift traffic) their traffic weights."""
    for counts in (record.target, *record.sources):
        runs = [d for d in sim.deployments if d.revision == counts.arn]
        counts.requested = sum(d.desired for d in runs)
        counts.running = sum(d.running for d in runs)
        counts.pending = sum(d.pending for d in runs)
    if record.progressive:
        record.target.test_weight = record.test_weight
        record.target.production_weight = record.production_weight
        for counts in record.sources[:1]:  # the blue revision: what runs before the deployment
            counts.test_weight = 100.0 - record.test_weight
            counts.production_weight = 100.0 - record.production_weight
        for counts in record.sources[1:]:
            counts.test_weight = counts.production_weight = 0.0


def _set_alarms(account_id: str, region: str, names: Iterable[str], state: str) -> None:
    """Set CloudWatch alarms (moto, in this process) as set_alarm_state does."""
    from moto.cloudwatch.models import cloudwatch_backends

    backend = cloudwatch_backends[account_id][region]
    for name in names:
        if name in backend.alarms:
            reason = (
                "Threshold Crossed: 1 datapoint [12.0] was greater than or equal to the "
                "threshold (5.0)."
                if state == "ALARM"
                else "Threshold Crossed: 1 datapoint [0.0] was not greater than or equal to "
                "the threshold (5.0)."
            )
            backend.set_alarm_state(name, reason, "{}", state)


def _alarms_in_alarm(account_id: str, region: str, names: list[str]) -> list[str]:
    """Those of ``names`` whose CloudWatch alarm (moto, in this process) is in ALARM."""
    from moto.cloudwatch.models import cloudwatch_backends

    alarms = cloudwatch_backends[account_id][region].alarms
    return [n for n in names if n in alarms and alarms[n].state_value == "ALARM"]


# --- moto's ECS backend, taught the service side of a rolling update --------------------------


def _settle_new_service(backend: EC2ContainerServiceBackend, service: Service) -> None:
    now = _utcnow()
    # Fields ECS has and moto's Service lacks; the HTTP side serialises them by name.
    service.created_at = now  # type: ignore[attr-defined]
    if not _deployment_configuration(service):
        service.deployment_configuration = dict(DEFAULT_DEPLOYMENT_CONFIGURATION)  # type: ignore[attr-defined]
    if service.deployment_controller.get("type", "ECS") != "ECS" or not service.task_definition:
        return
    deployment_id = new_deployment_id()
    deployment = _Deployment(
        id=deployment_id,
        task_definition=service.task_definition,
        desired=service.desired_count,
        status="PRIMARY",
        rollout_state="COMPLETED",
        reason=f"ECS deployment {deployment_id} completed.",
        created_at=now,
        updated_at=now,
    )
    sim = _ServiceSim(deployments=[deployment], last_completed=deployment)
    _begin_service_deployment(backend, service, sim, deployment, now, settled=True)
    runs = [
        _launch(backend, service, deployment, "healthy", now, running=True)
        for _ in range(service.desired_count)
    ]
    if runs:
        _event(
            sim,
            f"(service {service.name}) has started {len(runs)} tasks: {_task_ids(runs)}.",
            now,
        )
    _event(sim, f"(service {service.name}) has reached a steady state.", now)
    service._rollout_sim = sim  # type: ignore[attr-defined]
    _render(service, sim)


def patch_moto_ecs() -> None:
    """Teach moto's ECS (in this process) deployments; idempotent. See the module docstring."""
    global _patched
    with _PATCH_LOCK:
        if _patched:
            return
        _patched = True

    from moto.ec2.models.elastic_network_interfaces import NetworkInterface

    if not hasattr(NetworkInterface, "private_dns_name"):
        # moto sets it only in VPCs with DNS hostnames, then reads it for every awsvpc task.
        NetworkInterface.private_dns_name = None  # type: ignore[assignment]

    backend_cls = EC2ContainerServiceBackend
    orig_create = backend_cls.create_service
    orig_update = backend_cls.update_service
    orig_describe = backend_cls.describe_services
    orig_list_tasks = backend_cls.list_tasks
    orig_describe_tasks = backend_cls.describe_tasks
    orig_create_response = ecs_responses.EC2ContainerServiceResponse.create_service

    def create_service(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Service:
        with _LOCK:
            service = orig_create(self, *args, **kwargs)
            _settle_new_service(self, service)
            return service

    def update_service(
        self: EC2ContainerServiceBackend, service_properties: dict[str, Any]
    ) -> Service:
        with _LOCK:
            props = dict(service_properties)
            sd.check_deployment_configuration(props.get("deployment_configuration"))
            service = self._get_service(
                props.get("cluster", "default"), props["service"].split("/")[-1]
            )
            sim = _sim(service)
            if sim is None:
                return orig_update(self, service_properties)
            # Kept from moto, which would otherwise re-id the current deployment in place.
            force = bool(props.pop("force_new_deployment", False))
            requested = props.get("task_definition")
            new_arn = self.describe_task_definition(requested).arn if requested else None
            desired = props.get("desired_count")
            result = orig_update(self, props)
            now = _utcnow()
            primary = sim.deployments[0]
            if desired is not None:
                service.desired_count = desired
                primary.desired = desired
                primary.updated_at = now
            if "deployment_configuration" in props:  # ECS keeps what it is not told to change
                service.deployment_configuration = {  # type: ignore[attr-defined]
                    **DEFAULT_DEPLOYMENT_CONFIGURATION,
                    **(props["deployment_configuration"] or {}),
                }
            if force or (new_arn is not None and new_arn != primary.task_definition):
                deployment = _new_deployment(service, sim, new_arn or primary.task_definition, now)
                _begin_service_deployment(self, service, sim, deployment, now)
            else:
                service.desired_count = primary.desired
            _render(service, sim)
            return result

    def describe_services(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return orig_describe(self, *args, **kwargs)

    def list_tasks(
        self: EC2ContainerServiceBackend,
        cluster_str: str | None = None,
        container_instance: str | None = None,
        family: str | None = None,
        started_by: str | None = None,
        service_name: str | None = None,
        desiredStatus: str | None = None,
    ) -> list[Task]:
        with _LOCK:
            tasks = orig_list_tasks(
                self, cluster_str, container_instance, family, started_by, None, desiredStatus
            )
            if service_name:  # moto leaves this filter out; ECS groups service tasks by it
                group = f"service:{service_name.split('/')[-1]}"
                tasks = [t for t in tasks if t.group == group]
            return tasks

    def describe_tasks(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return orig_describe_tasks(self, *args, **kwargs)

    def create_service_response(self: ecs_responses.EC2ContainerServiceResponse) -> Any:
        # moto's handler drops deploymentConfiguration; ECS keeps it, merged over its defaults.
        requested = self._get_param("deploymentConfiguration")
        sd.check_deployment_configuration(requested)
        result = orig_create_response(self)
        if requested:
            with _LOCK:
                service = self.ecs_backend._get_service(
                    self._get_param("cluster", "default"), self._get_param("serviceName")
                )
                config = {**DEFAULT_DEPLOYMENT_CONFIGURATION, **requested}
                service.deployment_configuration = config  # type: ignore[attr-defined]
                sim = _sim(service)
                if sim is not None and sim.service_deployments:  # the creation's own
                    first = sim.service_deployments[0]
                    first.deployment_configuration = copy.deepcopy(config)
                    first.strategy = str(config.get("strategy") or "ROLLING")
                    enabled = (config.get("deploymentCircuitBreaker") or {}).get("enable")
                    alarms = _alarms_configuration(config)
                    first.breaker_status = sd.MONITORING_COMPLETE if enabled else sd.DISABLED
                    first.alarms_status = sd.MONITORING_COMPLETE if alarms else sd.DISABLED
                    first.alarm_names = [str(n) for n in alarms.get("alarmNames") or []]
                    if first.progressive:
                        first.test_weight = first.production_weight = 100.0
                    _sync_counts(sim, first)
        return result

    sd.install(_utcnow)
    backend_cls.create_service = create_service  # type: ignore[method-assign]
    backend_cls.update_service = update_service  # type: ignore[method-assign]
    backend_cls.describe_services = describe_services  # type: ignore[method-assign]
    backend_cls.list_tasks = list_tasks  # type: ignore[method-assign]
    backend_cls.describe_tasks = describe_tasks  # type: ignore[method-assign]
    ecs_responses.EC2ContainerServiceResponse.create_service = (  # type: ignore[method-assign]
        create_service_response
    )
    assert ecs_models.EC2ContainerServiceBackend is backend_cls


# --- the timeline -------------------------------------------------------------------------------


class RolloutSimulator:
    """Moves moto's ECS deployments along, one ``tick()`` at a time or on its own thread.

    ``server`` (a MotoServer) gives the account and region; or pass ``region``/``account_id``.
    ``broken`` and ``slow`` name image tags (``v4.4.0-ecr-ecs-fargate``), or are predicates on
    the tag. ``clock`` gives the timestamps (aware UTC datetimes); the step pace is real time.
    """

    def __init__(
        self,
        server: MotoServer | None = None,
        *,
        region: str | None = None,
        account_id: str | None = None,
        step_seconds: float = 0.2,
        broken: TagRule = (),
        slow: TagRule = (),
        alarming: TagRule = (),
        pending_ticks: int = 2,
        slow_ticks: int = 200,
        launch_batch: int = 1,
        bake_ticks: int = 10,
        minute_ticks: int = 1,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        patch_moto_ecs()
        self.region = region or (server.region if server else DEFAULT_REGION)
        self.account_id = account_id or (server.account_id if server else DEFAULT_ACCOUNT_ID)
        self.step_seconds = step_seconds
        self.pending_ticks = max(2, pending_ticks)
        self.slow_ticks = slow_ticks
        self.launch_batch = max(1, launch_batch)
        self.bake_ticks = max(0, bake_ticks)
        self.minute_ticks = max(1, minute_ticks)
        self._clock = clock or _utcnow
        self._broken_tags, self._broken_rule = self._split_rule(broken)
        self._slow_tags, self._slow_rule = self._split_rule(slow)
        self._alarming_tags, self._alarming_rule = self._split_rule(alarming)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _split_rule(rule: TagRule) -> tuple[set[str], Callable[[str], bool] | None]:
        if callable(rule):
            return set(), rule
        return set(rule), None

    # -- configuration ------------------------------------------------------------------------

    def mark_broken(self, tag: str) -> None:
        """Tasks of images with this tag crash after starting (from their next launch)."""
        with _LOCK:
            self._broken_tags.add(tag)
            self._slow_tags.discard(tag)

    def mark_slow(self, tag: str) -> None:
        """Tasks of images with this tag stay PENDING for ``slow_ticks`` steps."""
        with _LOCK:
            self._slow_tags.add(tag)
            self._broken_tags.discard(tag)

    def mark_alarming(self, tag: str) -> None:
        """Tasks of images with this tag are healthy, but the service's deployment alarms go
        to ALARM halfway through the bake time (their 5xx count crosses the threshold); they
        are OK again once the rollback has completed."""
        with _LOCK:
            self._alarming_tags.add(tag)
            self._broken_tags.discard(tag)
            self._slow_tags.discard(tag)

    def mark_healthy(self, tag: str) -> None:
        """Undo mark_broken / mark_slow / mark_alarming for this tag."""
        with _LOCK:
            self._broken_tags.discard(tag)
            self._slow_tags.discard(tag)
            self._alarming_tags.discard(tag)

    def _matches(self, tags: set[str], rule: Callable[[str], bool] | None, image: str) -> bool:
        names = {image, image_tag(image), *self._ecr_tags(image)}
        return bool(names & tags) or (rule is not None and any(rule(n) for n in names))

    def _ecr_tags(self, image: str) -> list[str]:
        """The tags ECR (moto, in this process) holds for an image pinned by digest, so a
        rule on ``v4.4.0-…`` also matches ``repo@sha256:…`` as deploybot deploys it."""
        _, _, digest = image.partition("@")
        if not digest:
            return []
        from moto.ecr.models import ecr_backends

        backend = ecr_backends[self.account_id][self.region]
        return [
            tag
            for repository in list(backend.repositories.values())
            for found in list(repository.images)
            if found.get_image_digest() == digest
            for tag in found.image_tags
        ]

    def fate(self, image: str) -> str:
        """``broken``, ``slow``, ``alarming`` or ``healthy``: what tasks of ``image`` will do."""
        if self._matches(self._broken_tags, self._broken_rule, image):
            return "broken"
        if self._matches(self._slow_tags, self._slow_rule, image):
            return "slow"
        if self._matches(self._alarming_tags, self._alarming_rule, image):
            return "alarming"
        return "healthy"

    def post_event(self, message: str) -> None:
        """Add a service event worded exactly as given to every simulated service: ECS quotes
        names people chose (containers, target groups) in its events, so tests need any text."""
        with _LOCK:
            backend = ecs_backends[self.account_id][self.region]
            now = self._now()
            for service in backend.services.values():
                sim = _sim(service)
                if sim is not None:
                    _event(sim, message, now)
                    _render(service, sim)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> RolloutSimulator:
        """Tick every ``step_seconds`` on a daemon thread until stop()."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rollout-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> RolloutSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.step_seconds):
            try:
                self.tick()
            except Exception:  # one bad step must not end the simulation
                log.exception("rollout simulator step failed")

    def tick(self, steps: int = 1) -> None:
        """Advance every service of the account and region ``steps`` steps."""
        for _ in range(steps):
            with _LOCK:
                backend = ecs_backends[self.account_id][self.region]
                for service in list(backend.services.values()):
                    sim = _sim(service)
                    if sim is None or service.status != "ACTIVE":
                        continue
                    self._step(backend, service, sim)
                    _render(service, sim)

    def idle(self) -> bool:
        """True when no deployment of any service is IN_PROGRESS."""
        with _LOCK:
            backend = ecs_backends[self.account_id][self.region]
            for service in backend.services.values():
                sim = _sim(service)
                if sim and any(d.rollout_state == "IN_PROGRESS" for d in sim.deployments):
                    return False
            return True

    # -- one step of one service --------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)

    def _image(self, backend: EC2ContainerServiceBackend, task_definition: str) -> str:
        containers = backend.describe_task_definition(task_definition).container_definitions
        images = [str(c.get("image", "")) for c in containers]
        fates = [self.fate(i) for i in images]
        for wanted in ("broken", "slow"):
            if wanted in fates:
                return images[fates.index(wanted)]
        return images[0] if images else ""

    def _step(
        self, backend: EC2ContainerServiceBackend, service: Service, sim: _ServiceSim
    ) -> None:
        now = self._now()
        name = service.name
        self._advance_tasks(sim, now)
        self._service_deployment_step(backend, service, sim, now)
        if self._shifting_step(backend, service, sim, now):
            return
        primary = sim.deployments[0]

        # The circuit breaker, and the rollback it starts.
        breaker = _deployment_configuration(service).get("deploymentCircuitBreaker") or {}
        if (
            primary.rollout_state == "IN_PROGRESS"
            and breaker.get("enable")
            and primary.failed >= failure_threshold(primary.desired)
        ):
            primary.rollout_state = "FAILED"
            primary.reason = CIRCUIT_BREAKER_REASON
            primary.updated_at = now
            _event(
                sim,
                f"(service {name}) (deployment {primary.id}) deployment failed: "
                "tasks failed to start.",
                now,
            )
            record = primary.service_deployment
            if record is not None and not record.final:
                record.failure_count = max(record.failure_count, primary.failed)
                if not primary.is_rollback:
                    record.breaker_status = sd.TRIGGERED
            target = sim.last_completed
            if breaker.get("rollback") and target is not None and not primary.is_rollback:
                _event(sim, f"(service {name}) rolling back to deployment {target.id}.", now)
                primary = self._roll_back(
                    service, sim, target, record, sd.CIRCUIT_BREAKER_ROLLBACK_REASON, now
                )
            elif record is not None and not record.final:
                _sync_counts(sim, record)
                if primary.is_rollback:
                    record.set_status(sd.ROLLBACK_FAILED, now, sd.ROLLBACK_FAILED_REASON)
                else:
                    record.set_status(sd.STOPPED, now, sd.CIRCUIT_BREAKER_STOP_REASON)

        # Older deployments drain: tasks not yet healthy at once, healthy ones (oldest
        # deployment first) only while the healthy count stays at the desired count.
        older = sim.deployments[1:]
        stopped: list[_Run] = []
        scaling = f"Scaling activity initiated by (deployment {primary.id})"
        for deployment in older:
            for run in deployment.live():
                if not run.healthy:
                    _stop(run, scaling, now, crashed=False)
                    stopped.append(run)
        old_healthy = [r for d in reversed(older) for r in d.runs if r.live and r.healthy]
        healthy = sum(1 for r in primary.runs if r.healthy)
        surplus = max(0, healthy + len(old_healthy) - primary.desired)
        for run in old_healthy[:surplus]:
            _stop(run, scaling, now, crashed=False)
            stopped.append(run)
        # A primary with more tasks than wanted (desired count lowered) sheds pending ones first.
        live = primary.live()
        extra = len(live) - primary.desired
        if extra > 0:
            for run in sorted(live, key=lambda r: not r.pending)[:extra]:
                _stop(run, scaling, now, crashed=False)
                stopped.append(run)
        if stopped:
            running_stopped = [r for r in stopped if r.task.started_at is not None]
            if running_stopped:
                _event(
                    sim,
                    f"(service {name}) has stopped {len(running_stopped)} running tasks: "
                    f"{_task_ids(running_stopped)}.",
                    now,
                )
        for deployment in older:
            deployment.desired = len(deployment.live())
            if stopped:
                deployment.updated_at = now

        # The scheduler launches what the primary still lacks, a few at a time (once a PAUSE
        # hook at PRE_SCALE_UP, if any, has been continued).
        held = self._rolling_hold(service, sim, primary, "PRE_SCALE_UP", now)
        if primary.rollout_state != "FAILED" and not held:
            missing = primary.desired - len(primary.live())
            if missing > 0:
                fate = self.fate(self._image(backend, primary.task_definition))
                started = [
                    _launch(backend, service, primary, fate, now)
                    for _ in range(min(missing, self.launch_batch))
                ]
                primary.updated_at = now
                _event(
                    sim,
                    f"(service {name}) has started {len(started)} tasks: {_task_ids(started)}.",
                    now,
                )

        # Done when the primary is whole and healthy and nothing older still runs (and, with
        # deployment alarms, once the bake time has passed without an alarm).
        record = primary.service_deployment
        if (
            primary.rollout_state == "IN_PROGRESS"
            and sum(1 for r in primary.runs if r.healthy) == primary.desired
            and len(primary.live()) == primary.desired
            and not any(d.live() for d in sim.deployments[1:])
            and not self._rolling_hold(service, sim, primary, "POST_SCALE_UP", now)
            and not self._baking(primary)
        ):
            if record is not None and not record.final:
                _sync_counts(sim, record)
                if primary.is_rollback:
                    record.set_status(sd.ROLLBACK_SUCCESSFUL, now)
                    if sim.fired_alarms:  # the 5xx stopped with the bad release
                        _set_alarms(self.account_id, self.region, sim.fired_alarms, "OK")
                        sim.fired_alarms.clear()
                else:
                    record.lifecycle_stage = "CLEAN_UP"
                    record.set_status(sd.SUCCESSFUL, now)
                    for attr in ("breaker_status", "alarms_status"):
                        if getattr(record, attr) == sd.MONITORING:
                            setattr(record, attr, sd.MONITORING_COMPLETE)
            primary.rollout_state = "COMPLETED"
            primary.reason = f"ECS deployment {primary.id} completed."
            primary.updated_at = now
            sim.deployments = [primary]
            sim.last_completed = primary
            _event(sim, f"(service {name}) (deployment {primary.id}) deployment completed.", now)
            _event(sim, f"(service {name}) has reached a steady state.", now)

    # -- service deployments ------------------------------------------------------------------

    def _service_deployment_step(
        self,
        backend: EC2ContainerServiceBackend,
        service: Service,
        sim: _ServiceSim,
        now: datetime,
    ) -> None:
        """A service deployment's own step: PENDING to IN_PROGRESS, what a StopServiceDeployment
        asked for, and the deployment alarms (developerguide/deployment-alarm-failure.html)."""
        primary = sim.deployments[0]
        for record in sim.service_deployments:
            if record.final:
                continue
            if record.status == sd.PENDING:
                record.started_at = now
                record.lifecycle_stage = "SCALE_UP"
                record.set_status(sd.IN_PROGRESS, now)
            carrier = next((d for d in sim.deployments if d.service_deployment is record), None)
            if carrier is not None and not carrier.is_rollback:
                record.failure_count = carrier.failed
                record.threshold = failure_threshold(carrier.desired)
            if record.stop_requested == "ROLLBACK" and record.status == sd.ROLLBACK_REQUESTED:
                record.stop_requested = None
                target = sim.last_completed
                if carrier is not None and carrier.rollout_state == "IN_PROGRESS":
                    carrier.rollout_state = "FAILED"
                    carrier.reason = f"ECS deployment {carrier.id} rolled back on request."
                    carrier.updated_at = now
                if target is None or target is carrier:
                    record.set_status(sd.ROLLBACK_FAILED, now, sd.NO_ROLLBACK_TARGET_REASON)
                else:
                    message = f"(service {service.name}) rolling back to deployment {target.id}."
                    _event(sim, message, now)
                    reason = record.rollback_request_reason or sd.STOP_ROLLBACK_REASON
                    self._roll_back(service, sim, target, record, reason, now)
            elif record.stop_requested == "ABORT" and record.status == sd.STOP_REQUESTED:
                record.stop_requested = None
                if carrier is not None and carrier.rollout_state == "IN_PROGRESS":
                    carrier.rollout_state = "FAILED"
                    carrier.reason = f"ECS deployment {carrier.id} stopped."
                    carrier.updated_at = now
                _sync_counts(sim, record)
                record.set_status(sd.STOPPED, now, sd.STOPPED_REASON)
            if not record.final:
                _sync_counts(sim, record)

        # Deployment alarms: watched once tasks of the new revision run, through the bake time.
        primary = sim.deployments[0]
        watched = primary.service_deployment
        alarms = _alarms_configuration(_deployment_configuration(service))
        if (
            watched is None
            or watched.status != sd.IN_PROGRESS
            or primary.is_rollback
            or primary.rollout_state != "IN_PROGRESS"
            or not alarms
            or primary.running == 0
        ):
            return
        names = [str(n) for n in alarms.get("alarmNames") or []]
        if (
            watched.bake_left is not None
            and watched.bake_left <= watched.bake_total // 2
            and self.fate(self._image(backend, primary.task_definition)) == "alarming"
        ):
            _set_alarms(self.account_id, self.region, names, "ALARM")
            sim.fired_alarms.update(names)
        firing = _alarms_in_alarm(self.account_id, self.region, names)
        if not firing:
            return
        primary.rollout_state = "FAILED"
        primary.reason = ALARM_FAILURE_REASON
        primary.updated_at = now
        _event(
            sim,
            f"(service {service.name}) (deployment {primary.id}) deployment failed: "
            "alarm detected.",
            now,
        )
        watched.alarms_status = sd.TRIGGERED
        watched.triggered_alarms = firing
        target = sim.last_completed
        if alarms.get("rollback") and target is not None and target is not primary:
            _event(sim, f"(service {service.name}) rolling back to deployment {target.id}.", now)
            reason = sd.alarm_reason(firing, rollback=True)
            self._roll_back(service, sim, target, watched, reason, now)
        else:
            _sync_counts(sim, watched)
            watched.set_status(sd.STOPPED, now, sd.alarm_reason(firing, rollback=False))

    def _roll_back(
        self,
        service: Service,
        sim: _ServiceSim,
        target: _Deployment,
        record: ServiceDeployment | None,
        reason: str,
        now: datetime,
    ) -> _Deployment:
        """A new PRIMARY deployment of ``target``'s task definition, the rollback of ``record``,
        which goes ROLLBACK_IN_PROGRESS (the rollback is no service deployment of its own).
        Under a strategy that shifts traffic, the blue revision still runs: traffic goes back."""
        if record is not None and record.progressive:
            return self._shift_back(service, sim, record, reason, now)
        rollback = _new_deployment(service, sim, target.task_definition, now)
        rollback.is_rollback = True
        rollback.revision = target.revision
        rollback.service_deployment = record
        if record is not None and not record.final:
            record.rollback_reason = reason
            record.rollback_started_at = now
            record.rollback_revision = target.revision
            record.set_status(sd.ROLLBACK_IN_PROGRESS, now, reason)
            _sync_counts(sim, record)
        return rollback

    def _rolling_hold(
        self, service: Service, sim: _ServiceSim, primary: _Deployment, stage: str, now: datetime
    ) -> bool:
        """A rolling deployment's PAUSE hooks at PRE_SCALE_UP (before any new task) or
        POST_SCALE_UP (the new revision whole): True while one holds it."""
        record = primary.service_deployment
        if (
            record is None
            or record.progressive
            or primary.is_rollback
            or record.status != sd.IN_PROGRESS
            or stage in record.passed
        ):
            return False
        hooks = record.deployment_configuration.get("lifecycleHooks") or []
        if not any(
            h.get("targetType") == "PAUSE" and stage in (h.get("lifecycleStages") or [])
            for h in hooks
        ):
            record.passed.add(stage)
            return False
        record.lifecycle_stage = stage
        if self._hook_point(service, sim, primary, record, stage, stage, now):
            return True
        record.passed.add(stage)
        if stage == "PRE_SCALE_UP":
            record.lifecycle_stage = "SCALE_UP"
        return False

    def _baking(self, primary: _Deployment) -> bool:
        """True while a whole, healthy deployment with deployment alarms is in its bake time,
        which it spends IN_PROGRESS in lifecycle stage BAKE_TIME."""
        record = primary.service_deployment
        if (
            record is None
            or primary.is_rollback
            or record.status != sd.IN_PROGRESS
            or record.alarms_status == sd.DISABLED
        ):
            return False
        if record.bake_left is None:
            minutes = record.deployment_configuration.get("bakeTimeInMinutes")
            ticks = self.bake_ticks if minutes is None else int(minutes) * self.minute_ticks
            record.bake_left = record.bake_total = ticks
            record.lifecycle_stage = "BAKE_TIME"
        if record.bake_left <= 0:
            return False
        record.bake_left -= 1
        return True

    # -- strategies that shift traffic: BLUE_GREEN, CANARY, LINEAR ---------------------------

    def _program(self, record: ServiceDeployment) -> list[tuple[Any, ...]]:
        """The steps of a deployment that shifts traffic, in ECS's lifecycle order
        (API_ServiceDeployment.html lifecycleStage; the model's DeploymentLifecycleHook
        lifecycleStages: PRE_PRODUCTION_TRAFFIC_SHIFT "is invoked before every traffic shift
        step" of a linear or canary deployment). Hook points are ("hook", configured stage,
        reported stage): the ServiceDeployment's lifecycleStage has no PRE_PRODUCTION_TRAFFIC_SHIFT.
        Times are ECS minutes of ``minute_ticks`` steps each."""
        config = record.deployment_configuration
        m = self.minute_ticks
        steps: list[tuple[float, int]]
        if record.strategy == "CANARY":
            canary = config.get("canaryConfiguration") or {}
            percent = float(canary.get("canaryPercent", 5.0))  # API_CanaryConfiguration defaults
            bake = int(canary.get("canaryBakeTimeInMinutes", 10))
            steps = [(percent, bake * m), (100.0, 0)]
        elif record.strategy == "LINEAR":
            linear = config.get("linearConfiguration") or {}
            step = float(linear.get("stepPercent", 10.0))  # API_LinearConfiguration defaults
            bake = int(linear.get("stepBakeTimeInMinutes", 6))
            steps, reached = [], 0.0
            while reached < 100.0:
                reached = min(100.0, round(reached + step, 1))
                # "This bake time is not applied after reaching 100 percent traffic."
                steps.append((reached, bake * m if reached < 100.0 else 0))
        else:
            steps = [(100.0, 0)]
        program: list[tuple[Any, ...]] = []
        if len(record.sources) > 1:  # "more than 1 service revision in an ACTIVE state"
            program.append(("hook", "RECONCILE_SERVICE", "RECONCILE_SERVICE"))
        program += [
            ("hook", "PRE_SCALE_UP", "PRE_SCALE_UP"),
            ("scale_up",),
            ("hook", "POST_SCALE_UP", "POST_SCALE_UP"),
            ("test_shift",),
            ("hook", "POST_TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT"),
        ]
        for percent, wait in steps:
            program.append(("hook", "PRE_PRODUCTION_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT"))
            program.append(("production_shift", percent))
            if wait:
                program.append(("wait", "PRODUCTION_TRAFFIC_SHIFT", wait))
        program.append(("hook", "POST_PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT"))
        program.append(("wait", "BAKE_TIME", int(config.get("bakeTimeInMinutes") or 0) * m))
        program.append(("clean_up",))
        return program

    def _shifting_step(
        self,
        backend: EC2ContainerServiceBackend,
        service: Service,
        sim: _ServiceSim,
        now: datetime,
    ) -> bool:
        """One step of a deployment that shifts traffic; False when the rolling step applies.

        The green (new) revision scales up beside the blue one, takes the test traffic, then the
        production traffic in the strategy's steps (developerguide/canary-deployment.html,
        linear-deployment.html, deployment-type-blue-green.html), bakes, and the blue revision
        is scaled in at CLEAN_UP. PAUSE hooks (developerguide/pause-lifecycle-hooks.html) hold
        the deployment at their stage, AWAITING_ACTION, until ContinueServiceDeployment or their
        timeout (``timeoutInMinutes`` ECS minutes) and its action."""
        for rolling_back in sim.service_deployments:
            if rolling_back.progressive and rolling_back.status == sd.ROLLBACK_IN_PROGRESS:
                leaving = self._green(sim, rolling_back)
                if rolling_back.draining:  # the green tasks take a step to drain
                    rolling_back.draining = False
                elif leaving is None or not leaving.live():
                    sim.deployments = [d for d in sim.deployments if d is not leaving]
                    _sync_counts(sim, rolling_back)
                    rolling_back.set_status(sd.ROLLBACK_SUCCESSFUL, now)
                    _event(sim, f"(service {service.name}) has reached a steady state.", now)
                    if sim.fired_alarms:
                        _set_alarms(self.account_id, self.region, sim.fired_alarms, "OK")
                        sim.fired_alarms.clear()
                return True
        green = sim.deployments[0]
        record = green.service_deployment
        if record is None or not record.progressive or green.is_rollback:
            return False
        if record.final:
            return record.status == sd.STOPPED  # stopped where it was
        if record.status != sd.IN_PROGRESS:
            return True
        if not record.program:
            record.program = self._program(record)
        name = service.name

        # The circuit breaker watches the green tasks as they start.
        breaker = record.deployment_configuration.get("deploymentCircuitBreaker") or {}
        if breaker.get("enable") and green.failed >= failure_threshold(green.desired):
            green.rollout_state = "FAILED"
            green.reason = CIRCUIT_BREAKER_REASON
            green.updated_at = now
            _event(
                sim,
                f"(service {name}) (deployment {green.id}) deployment failed: "
                "tasks failed to start.",
                now,
            )
            record.breaker_status = sd.TRIGGERED
            if breaker.get("rollback"):
                self._shift_back(service, sim, record, sd.CIRCUIT_BREAKER_ROLLBACK_REASON, now)
            else:
                _sync_counts(sim, record)
                record.set_status(sd.STOPPED, now, sd.CIRCUIT_BREAKER_STOP_REASON)
            return True

        step = record.program[record.pc]
        kind = step[0]
        if kind == "hook":
            _, configured, shown = step
            record.lifecycle_stage = shown
            if self._hook_point(service, sim, green, record, configured, record.pc, now):
                return True
            record.pc += 1
        elif kind == "scale_up":
            record.lifecycle_stage = "SCALE_UP"
            missing = green.desired - len(green.live())
            if missing > 0:
                fate = self.fate(self._image(backend, green.task_definition))
                started = [
                    _launch(backend, service, green, fate, now)
                    for _ in range(min(missing, self.launch_batch))
                ]
                green.updated_at = now
                _event(
                    sim,
                    f"(service {name}) has started {len(started)} tasks: {_task_ids(started)}.",
                    now,
                )
            elif sum(1 for r in green.runs if r.healthy) == green.desired:
                record.pc += 1
        elif kind == "test_shift":
            record.lifecycle_stage = "TEST_TRAFFIC_SHIFT"
            record.test_weight = 100.0
            record.pc += 1
        elif kind == "production_shift":
            record.lifecycle_stage = "PRODUCTION_TRAFFIC_SHIFT"
            record.production_weight = float(step[1])
            _event(
                sim,
                f"(service {name}) (deployment {green.id}) shifted {step[1]:g}% of production "
                "traffic to the new service revision.",
                now,
            )
            record.pc += 1
        elif kind == "wait":
            _, stage, ticks = step
            record.lifecycle_stage = stage
            if record.wait_left is None:
                record.wait_left = ticks
                if stage == "BAKE_TIME":
                    record.bake_total = ticks
            if stage == "BAKE_TIME":
                record.bake_left = record.wait_left
            if record.wait_left > 0:
                record.wait_left -= 1
            else:
                record.wait_left = None
                record.pc += 1
        elif kind == "clean_up":
            self._clean_up(service, sim, green, record, now)
        _sync_counts(sim, record)
        record.updated_at = now
        return True

    def _hook_point(
        self,
        service: Service,
        sim: _ServiceSim,
        green: _Deployment,
        record: ServiceDeployment,
        configured: str,
        key: object,
        now: datetime,
    ) -> bool:
        """Run the PAUSE hooks configured at ``configured`` once (``key`` names this point of
        the deployment) and hold while one awaits action: True while held (or rolled back by a
        timeout), False once every hook has passed. A timeout takes the hook's
        timeoutAction (API_DeploymentLifecycleHookTimeoutConfiguration)."""
        if record.hook_pc != key:
            record.hook_pc = key
            for hook in record.deployment_configuration.get("lifecycleHooks") or []:
                if hook.get("targetType") != "PAUSE":
                    continue
                if configured not in (hook.get("lifecycleStages") or []):
                    continue
                timeout = hook.get("timeoutConfiguration") or {}
                minutes = int(timeout.get("timeoutInMinutes", sd.DEFAULT_HOOK_TIMEOUT_MINUTES))
                ticks = max(1, minutes * self.minute_ticks)
                run = sd.HookRun(
                    hook_id=sd.new_hook_id(),
                    stage=configured,
                    expires_at=now + timedelta(seconds=ticks * self.step_seconds),
                    timeout_action=str(timeout.get("action", sd.DEFAULT_HOOK_TIMEOUT_ACTION)),
                    ticks_left=ticks,
                )
                record.hooks.append(run)
                _event(
                    sim,
                    f"(service {service.name}) (deployment {green.id}) lifecycle hook "
                    f"{run.hook_id} at {configured} is awaiting action.",
                    now,
                )
            if record.awaiting():
                record.updated_at = now
                _sync_counts(sim, record)
                return True
        for run in record.awaiting():
            run.ticks_left -= 1
            if run.ticks_left > 0:
                continue
            run.status = sd.HOOK_TIMED_OUT
            if run.timeout_action == "ROLLBACK":
                reason = sd.hook_timeout_reason(run.hook_id)
                target = sim.last_completed
                if record.progressive or (target is not None and target is not green):
                    green.rollout_state = "FAILED"
                    green.reason = f"ECS deployment {green.id} rolled back."
                    green.updated_at = now
                    self._roll_back(service, sim, target or green, record, reason, now)
                else:
                    record.set_status(sd.ROLLBACK_FAILED, now, sd.NO_ROLLBACK_TARGET_REASON)
                return True
        if record.awaiting():
            _sync_counts(sim, record)
            return True
        return False

    def _green(self, sim: _ServiceSim, record: ServiceDeployment) -> _Deployment | None:
        return next(
            (d for d in sim.deployments if d.service_deployment is record and not d.is_rollback),
            None,
        )

    def _clean_up(
        self,
        service: Service,
        sim: _ServiceSim,
        green: _Deployment,
        record: ServiceDeployment,
        now: datetime,
    ) -> None:
        """CLEAN_UP: the blue revision scales in; the deployment is complete."""
        record.lifecycle_stage = "CLEAN_UP"
        blue_runs = [r for d in sim.deployments[1:] for r in d.live()]
        for run in blue_runs:
            _stop(run, f"Scaling activity initiated by (deployment {green.id})", now, crashed=False)
        if blue_runs:
            _event(
                sim,
                f"(service {service.name}) has stopped {len(blue_runs)} running tasks: "
                f"{_task_ids(blue_runs)}.",
                now,
            )
        _sync_counts(sim, record)
        green.rollout_state = "COMPLETED"
        green.reason = f"ECS deployment {green.id} completed."
        green.updated_at = now
        sim.deployments = [green]
        sim.last_completed = green
        record.set_status(sd.SUCCESSFUL, now)
        for attr in ("breaker_status", "alarms_status"):
            if getattr(record, attr) == sd.MONITORING:
                setattr(record, attr, sd.MONITORING_COMPLETE)
        _event(sim, f"(service {service.name}) (deployment {green.id}) deployment completed.", now)
        _event(sim, f"(service {service.name}) has reached a steady state.", now)

    def _shift_back(
        self,
        service: Service,
        sim: _ServiceSim,
        record: ServiceDeployment,
        reason: str,
        now: datetime,
    ) -> _Deployment:
        """Roll back a deployment that shifts traffic: every share of traffic returns to the
        blue revision, which still runs, and the green tasks stop; ROLLBACK_SUCCESSFUL once
        they have (the next step)."""
        green = self._green(sim, record)
        blue = sim.last_completed
        if blue is None or blue not in sim.deployments:
            blue = next((d for d in sim.deployments if d is not green), sim.deployments[0])
        record.test_weight = record.production_weight = 0.0
        if green is not None and green is not blue:
            if green.rollout_state == "IN_PROGRESS":
                green.rollout_state = "FAILED"
                green.reason = f"ECS deployment {green.id} rolled back."
                green.updated_at = now
            scaling = f"Scaling activity initiated by (deployment {blue.id})"
            for run in green.live():
                _stop(run, scaling, now, crashed=False)
            green.status = "ACTIVE"
            green.desired = 0
            blue.status = "PRIMARY"
            sim.deployments = [blue, *[d for d in sim.deployments if d is not blue]]
            _event(sim, f"(service {service.name}) rolling back to deployment {blue.id}.", now)
        record.rollback_reason = reason
        record.rollback_started_at = now
        record.rollback_revision = blue.revision
        record.draining = True
        record.set_status(sd.ROLLBACK_IN_PROGRESS, now, reason)
        _sync_counts(sim, record)
        return blue

    def _advance_tasks(self, sim: _ServiceSim, now: datetime) -> None:
        for deployment in sim.deployments:
            for run in deployment.live():
                run.age += 1
                status = run.status
                if status == "PROVISIONING":
                    run.task.last_status = "PENDING"
                    run.task.pull_started_at = now
                elif status == "PENDING":
                    wait = self.slow_ticks if run.fate == "slow" else self.pending_ticks
                    if run.age >= wait:
                        _set_running(run, now)
                elif status == "RUNNING":
                    run.running_steps += 1
                    if run.fate == "broken":
                        _stop(run, CRASH_REASON, now, crashed=True)
                        deployment.failed += 1
                        deployment.updated_at = now
