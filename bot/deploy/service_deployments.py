"""ECS's own record of each deployment (#26): service deployments, read in batches, or not at all.

Since late 2024 ECS records every deployment of a service as a *service deployment* with an ARN,
a ``status`` and the reason for it (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
service-deployment.html). deploybot keeps the ARN on the record (found right after UpdateService,
``find``) and reads the outcome from it:

- :class:`ServiceDeploymentReads` is DescribeServiceDeployments batched across every target of a
  process (shared by ``AwsClient.sibling``, as bot/deploy/batch.py batches DescribeServices):
  a poll asks with ``max_age``; a description fetched that recently by any caller answers it,
  else one call describes this ARN together with the other watched ARNs, up to 20 a call ("You
  can specify a maximum of 20 ARNs", ``serviceDeploymentArns``: https://docs.aws.amazon.com/
  AmazonECS/latest/APIReference/API_DescribeServiceDeployments.html).
- The fallback. Where the operations are refused (AccessDenied: the role lacks them; a region
  or partition without them: UnsupportedFeatureException or an unknown operation; any 5xx, as
  moto's server answers operations it does not implement) deploybot judges from DescribeServices
  alone, as before #26, and says so once in the log. The calls go through the client that
  retries only throttling (``AwsClient.ecs_once``): a 500 is one request, not botocore's four
  retries at every poll, and after a refusal nobody asks again for ``retry_after`` seconds
  (then once: a role fixed meanwhile is used without a restart).
- A record ECS has no service deployment for (one from before they existed, one whose ARN was
  never found) is judged the old way; the others are not held back by it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.rollout import EcsDeployment, Outcome, ServiceState, Verdict, revision_of

log = logging.getLogger("deploybot.service_deployments")

MAX_PER_CALL = 20  # DescribeServiceDeployments' and DescribeServiceRevisions' limit (above)
# How long after its last poll an ARN still rides along in the batch's calls.
WATCH_ROUNDS = 3
# After a refusal, how long deploybot judges from DescribeServices alone before asking again.
RETRY_AFTER_SECONDS = 600.0
# Error codes that say the operations are not to be had here (not a passing fault): the role
# lacks them, or the region/partition/endpoint does not know them (the errors of the three
# operations in the API reference: AccessDeniedException, UnsupportedFeatureException; an
# endpoint without the operation answers UnknownOperationException, or InvalidAction).
_REFUSALS = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnsupportedFeatureException",
        "UnknownOperationException",
        "InvalidAction",
        "UnrecognizedClientException",
    }
)
_THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})

# The ECS statuses at which a service deployment has ended (the others: PENDING, IN_PROGRESS,
# STOP_REQUESTED, ROLLBACK_REQUESTED, ROLLBACK_IN_PROGRESS). "Service deployment states",
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-deployment.html
ENDED = frozenset({"SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"})

DescribeMany = Callable[[list[str]], dict[str, Any]]


class Unavailable(Exception):
    """The service-deployment operations cannot be used now: judge from DescribeServices.
    ``refused``: ECS refused them (the fallback, for a while); else a passing fault (AWS not
    answering, throttling after botocore's retries): this poll only."""

    def __init__(self, why: str, refused: bool) -> None:
        super().__init__(why)
        self.why = why
        self.refused = refused


def refusal(exc: BaseException) -> Unavailable:
    """What a failed service-deployment call means for the caller."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = str(err.get("Message", "")).strip()
        if code in _THROTTLED:
            return Unavailable(f"{code} (throttled)", refused=False)
        if code in _REFUSALS or status >= 500 or code.isdigit():
            # moto's server answers an operation it does not implement with an HTML 500 page;
            # botocore names the error by the status code. The page is no message for a log.
            short = message if message and not message.startswith("<") else f"HTTP {status}"
            return Unavailable(f"{code}: {short[:200]}", refused=True)
        return Unavailable(f"{code}: {message[:200]}", refused=False)
    if isinstance(exc, BotoCoreError):
        return Unavailable(f"{type(exc).__name__}: {exc}", refused=False)
    return Unavailable(f"{type(exc).__name__}: {exc}", refused=False)


@dataclass(frozen=True)
class _Entry:
    deployment: dict[str, Any] | None  # None: ECS listed it among the failures (MISSING)
    fetched_at: float  # monotonic


class ServiceDeploymentReads:
    """Batched DescribeServiceDeployments with a short-lived cache, and the fallback switch;
    thread-safe, one per process (shared by every target's AwsClient)."""

    def __init__(
        self,
        describe: DescribeMany,
        clock: Clock = SYSTEM_CLOCK,
        retry_after: float = RETRY_AFTER_SECONDS,
    ) -> None:
        """``describe(arns)`` is one DescribeServiceDeployments call (its raw answer)."""
        self._describe = describe
        self._clock = clock
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._watched: dict[str, float] = {}  # until when (monotonic) an ARN rides along
        self._refused: str = ""  # why, while the fallback is in use
        self._refused_until = float("-inf")
        self._told = ""  # what the log last said: "ecs" or "fallback"
        self.calls = 0  # DescribeServiceDeployments calls made (the benchmark reads it)

    # -- the fallback ----------------------------------------------------------------------
    @property
    def refused(self) -> str:
        """Why the operations are not used now ("" when they are)."""
        with self._lock:
            if self._refused and self._clock.monotonic() >= self._refused_until:
                return ""
            return self._refused

    def check(self) -> None:
        """Raise Unavailable(refused) while the fallback is in use."""
        why = self.refused
        if why:
            raise Unavailable(why, refused=True)

    def failed(self, exc: BaseException, doing: str) -> Unavailable:
        """Note a failed call: a refusal switches to the fallback for ``retry_after`` seconds,
        said once in the log. Returns what to raise."""
        problem = refusal(exc)
        if problem.refused:
            with self._lock:
                self._refused = problem.why
                self._refused_until = self._clock.monotonic() + self.retry_after
                tell = self._told != "fallback"
                self._told = "fallback"
            if tell:
                log.warning(
                    "ECS refused %s (%s): outcomes are judged from DescribeServices alone "
                    "(deployments, rolloutState, events), as before service deployments; "
                    "asked again in %.0f s",
                    doing,
                    problem.why,
                    self.retry_after,
                )
        return problem

    def answered(self) -> None:
        """A call succeeded: the operations are in use (said once in the log)."""
        with self._lock:
            self._refused = ""
            tell = self._told != "ecs"
            self._told = "ecs"
        if tell:
            log.info(
                "outcomes come from ECS's service deployments (DescribeServiceDeployments), "
                "with DescribeServices for task counts and events"
            )

    # -- reads -----------------------------------------------------------------------------
    def get(self, arn: str, max_age: float = 0.0) -> dict[str, Any] | None:
        """The service deployment, at most ``max_age`` seconds old (0: fetched now), batched
        with the other watched ARNs; None when ECS does not know it (its ``failures``).
        Raises Unavailable."""
        self.check()
        if max_age > 0:
            with self._lock:
                self._watched[arn] = self._clock.monotonic() + WATCH_ROUNDS * max_age
        with self._call_lock:
            if max_age > 0:
                fresh = self._fresh(arn, max_age)
                if fresh is not None:
                    return fresh.deployment
            self.check()  # a caller that waited may find the operations refused meanwhile
            found = self._fetch([arn, *self._riders(exclude={arn})])
        return found.get(arn)

    def forget(self, arn: str) -> None:
        """Drop the cached description (after StopServiceDeployment)."""
        with self._lock:
            self._cache.pop(arn, None)

    def _fresh(self, arn: str, max_age: float) -> _Entry | None:
        with self._lock:
            entry = self._cache.get(arn)
        if entry is None or self._clock.monotonic() - entry.fetched_at >= max_age:
            return None
        return entry

    def _riders(self, exclude: set[str]) -> list[str]:
        now = self._clock.monotonic()
        with self._lock:
            for arn in [a for a, until in self._watched.items() if until < now]:
                del self._watched[arn]
            riders = [a for a in self._watched if a not in exclude]
        return riders[: MAX_PER_CALL - len(exclude)]

    def _fetch(self, arns: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        names = list(dict.fromkeys(arns))[:MAX_PER_CALL]
        asked_at = self._clock.monotonic()
        self.calls += 1
        try:
            resp = self._describe(names)
        except (ClientError, BotoCoreError) as exc:
            raise self.failed(exc, "DescribeServiceDeployments") from exc
        self.answered()
        found: dict[str, dict[str, Any] | None] = {name: None for name in names}
        for sd in resp.get("serviceDeployments", []):
            arn = str(sd.get("serviceDeploymentArn", ""))
            if arn in found:
                found[arn] = dict(sd)
        with self._lock:
            for name, sd in found.items():
                self._cache[name] = _Entry(sd, asked_at)
        return found


# What ROLLBACK_FAILED means for the people watching (the words): said in the outcome
# and logged as an error.
ROLLBACK_FAILED_TEXT = "ECS could not roll back: the service may be down"


def why_rolled_back(sd: dict[str, Any]) -> str:
    """Why ECS rolled a service deployment back, from its monitors: the circuit breaker with its
    failure count, or the alarms that went to ALARM; else ECS's own reason."""
    breaker = sd.get("deploymentCircuitBreaker") or {}
    alarms = sd.get("alarms") or {}
    fired = [str(n) for n in alarms.get("triggeredAlarmNames") or ()]
    if alarms.get("status") == "TRIGGERED" or fired:
        if not fired:
            return "a deployment alarm went to ALARM"
        return f"alarm{'s' if len(fired) > 1 else ''} {', '.join(fired)} went to ALARM"
    if breaker.get("status") == "TRIGGERED":
        count, threshold = breaker.get("failureCount"), breaker.get("threshold")
        if count is not None and threshold:
            return f"ECS's circuit breaker tripped: {count} of {threshold} tasks failed to start"
        return "ECS's circuit breaker tripped: tasks failed to start"
    rollback = sd.get("rollback") or {}
    reason = str(rollback.get("reason") or sd.get("statusReason") or "").strip().rstrip(".")
    return reason or "ECS rolled the deployment back"


def judge(
    sd: dict[str, Any],
    *,
    aborted_by: str,
    previous_task_definition: str,
    previous_tag: str,
    state: ServiceState | None,
    ecs_deployment_id: str,
    describe_other: Callable[[EcsDeployment], str],
) -> Verdict | None:
    """The outcome ECS gives a deployment by its service deployment, or None while it runs.

    SUCCESSFUL: completed. ROLLBACK_SUCCESSFUL: rolled back, saying why (an abort's
    StopServiceDeployment(ROLLBACK) ends so too: aborted). ROLLBACK_FAILED: failed, loudly.
    STOPPED: aborted when someone stopped it (deploybot's abort, or anyone's in ECS), replaced
    when a newer deployment took over, as ECS says. The statuses:
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-deployment.html"""
    status = str(sd.get("status", ""))
    if status not in ENDED:
        return None
    reason = str(sd.get("statusReason") or "").strip().rstrip(".")
    ended = sd.get("finishedAt") or sd.get("stoppedAt") or sd.get("updatedAt")
    ended_at = ended if isinstance(ended, datetime) else None
    back = previous_tag or revision_of(previous_task_definition)
    if status == "SUCCESSFUL":
        return Verdict(
            Outcome.COMPLETED,
            reason or "ECS's service deployment succeeded",
            ended_at=ended_at,
            service_deployment=sd,
        )
    if status == "ROLLBACK_FAILED":
        why = f"{ROLLBACK_FAILED_TEXT} ({reason or why_rolled_back(sd)})"
        if aborted_by:
            why = f"aborted by {aborted_by}, but {why[0].lower()}{why[1:]}"
        return Verdict(
            Outcome.ABORTED if aborted_by else Outcome.FAILED,
            why,
            ended_at=ended_at,
            service_deployment=sd,
        )
    if status == "ROLLBACK_SUCCESSFUL":
        if aborted_by:
            # The doors tell a restore that ended well by " is back" at the end.
            return Verdict(
                Outcome.ABORTED,
                f"aborted by {aborted_by} (ECS rolled the service deployment back: "
                f"StopServiceDeployment); {back} is back",
                rollback_task_definition=previous_task_definition,
                ended_at=ended_at,
                service_deployment=sd,
            )
        rollback = _rollback_deployment(state, ecs_deployment_id, previous_task_definition)
        return Verdict(
            Outcome.ROLLED_BACK,
            why_rolled_back(sd),
            rollback_deployment=rollback,
            rollback_task_definition=previous_task_definition,
            ended_at=ended_at,
            service_deployment=sd,
        )
    # STOPPED: by an abort (ours, or StopServiceDeployment from anyone), by a monitor with
    # rollback off (the circuit breaker or an alarm failed it where it stands), or by a newer
    # deployment (ECS: "a newer service deployment started").
    breaker = sd.get("deploymentCircuitBreaker") or {}
    alarms = sd.get("alarms") or {}
    if not aborted_by and "TRIGGERED" in (breaker.get("status"), alarms.get("status")):
        return Verdict(
            Outcome.FAILED,
            f"{why_rolled_back(sd)}; ECS stopped it without rolling back",
            ended_at=ended_at,
            service_deployment=sd,
        )
    other = state.primary if state is not None else None
    if other is not None and other.id != ecs_deployment_id and not aborted_by:
        return Verdict(
            Outcome.REPLACED,
            f"replaced by ECS deployment {other.id} {describe_other(other)}",
            ended_at=other.created_at or ended_at,
            service_deployment=sd,
        )
    who = f"by {aborted_by}" if aborted_by else "in ECS"
    return Verdict(
        Outcome.ABORTED,
        f"aborted {who}; ECS stopped the deployment" + (f" ({reason})" if reason else ""),
        ended_at=ended_at,
        service_deployment=sd,
    )


def _rollback_deployment(
    state: ServiceState | None, ours: str, previous_task_definition: str
) -> str:
    """The ECS deployment (DescribeServices') that put the previous revision back, if listed."""
    if state is None:
        return ""
    primary = state.primary
    if primary is not None and primary.id != ours:
        return primary.id
    for d in state.deployments:
        if d.id != ours and d.task_definition == previous_task_definition:
            return d.id
    return ""


def find(
    briefs: list[dict[str, Any]],
    revisions: dict[str, str],
    task_definition: str,
    since: datetime,
    exclude: set[str],
) -> str:
    """The ARN of the service deployment a record started, from ListServiceDeployments'
    ``briefs`` and the task definition of each target revision (``revisions``, from
    DescribeServiceRevisions): the newest one created since ``since`` (the record's start, less
    ECS's clock slack) that rolls out ``task_definition``, not one of ``exclude`` (the ARNs
    other records have: a redeploy's task definition is the one that ran before it, and a
    deployment of it created moments before the record is not the redeploy's). "" if none."""
    found = [
        b
        for b in briefs
        if revisions.get(str(b.get("targetServiceRevisionArn", ""))) == task_definition
        and str(b.get("serviceDeploymentArn", "")) not in exclude
        and isinstance(b.get("createdAt"), datetime)
        and _aware(b["createdAt"]) >= since
    ]
    if not found:
        return ""
    newest = max(found, key=lambda b: _aware(b["createdAt"]))
    return str(newest.get("serviceDeploymentArn", ""))


def candidates(briefs: list[dict[str, Any]], since: datetime, exclude: set[str]) -> list[str]:
    """The target revisions worth describing: of the briefs created since ``since``."""
    return list(
        dict.fromkeys(
            str(b.get("targetServiceRevisionArn", ""))
            for b in briefs
            if b.get("targetServiceRevisionArn")
            and str(b.get("serviceDeploymentArn", "")) not in exclude
            and isinstance(b.get("createdAt"), datetime)
            and _aware(b["createdAt"]) >= since
        )
    )[:MAX_PER_CALL]


def since_for(started_at: datetime, slack: timedelta) -> datetime:
    return _aware(started_at) - slack


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
