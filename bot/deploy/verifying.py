"""What ECS says of a service deployment while it rolls out and verifies it, for a person: the
lines a live message (Slack's, the terminal's) shows beside the task counts. Pure functions of
ECS's ServiceDeployment (``Snapshot.service_deployment``: botocore's shape, as
DescribeServiceDeployments returns it, https://docs.aws.amazon.com/AmazonECS/latest/
APIReference/API_ServiceDeployment.html); nothing here calls AWS.

- ``verifying: alarms OK, 3 of ~6 min``: while ECS bakes, its lifecycle stage BAKE_TIME (or a
  deployment whole in tasks, every source revision at 0, still IN_PROGRESS while its alarms are
  MONITORING): ECS keeps watching the alarms through the bake time before it calls the
  deployment done ("The bake time is a period of time after a new service version has scaled
  out and the old service version has scaled in, during which Amazon ECS continues to monitor
  the alarm associated with the deployment", Amazon ECS Developer Guide, "How CloudWatch
  alarms detect Amazon ECS deployment failures"). Its length is the deployment
  configuration's ``bakeTimeInMinutes``; without one ECS computes it from the alarms' own
  configuration (same page: "Amazon ECS computes this time period based on the alarm
  configuration associated with the deployment"; "based on the evaluation time of the
  alarm(s) … the longest is used", the ECS team in aws/copilot-cli PR #4294), a figure it
  does not publish: then the line says minutes so far and that ECS sets the length. Minutes
  count from the deployment's ``updatedAt`` (nothing else updates it while it bakes) or when
  the reader first saw the bake, whichever is earlier.
- ``stage: BAKE_TIME``: the lifecycle stage, as ECS names it.
- ``circuit breaker: 1 of 3 failed tasks before ECS rolls back``: ``deploymentCircuitBreaker``'s
  failureCount and threshold (``… before ECS stops it`` when rollback is off).
- ``rolled back: alarm hello-world-5xx went to ALARM at 14:03``: a deployment ECS failed for its
  alarms (``alarms.triggeredAlarmNames``), with each alarm's page in the console; the time is
  the alarm's own (DescribeAlarms' StateUpdatedTimestamp, read by the door while it was in
  ALARM) or, unknown, when ECS started the rollback (``rollback.startedAt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.deploy.links import cloudwatch_alarm_url

BAKE_TIME = "BAKE_TIME"
ONGOING = frozenset({"PENDING", "IN_PROGRESS"})
ROLLING_BACK = frozenset({"ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"})
ROLLED_BACK = frozenset({"ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"})
ServiceDeployment = Mapping[str, Any]


@dataclass(frozen=True)
class FiredAlarm:
    """An alarm that failed a deployment: its name, when it went to ALARM (None: unknown),
    and its page in the CloudWatch console."""

    name: str
    at: datetime | None
    url: str

    def text(self) -> str:
        at = f" at {self.at:%H:%M}" if self.at else ""
        return f"alarm {self.name} went to ALARM{at}"


def _config(sd: ServiceDeployment) -> Mapping[str, Any]:
    return sd.get("deploymentConfiguration") or {}


def bake_minutes(sd: ServiceDeployment) -> int | None:
    """The bake time ECS waits, from the deployment configuration; None when it sets none
    (ECS then computes one from the alarms: see the module's docstring)."""
    value = _config(sd).get("bakeTimeInMinutes")
    return int(value) if isinstance(value, int) else None


def whole(sd: ServiceDeployment) -> bool:
    """The target revision runs every task it asked for and no source revision runs any."""
    target = sd.get("targetServiceRevision") or {}
    requested = int(target.get("requestedTaskCount") or 0)
    sources = sd.get("sourceServiceRevisions") or ()
    return (
        requested > 0
        and int(target.get("runningTaskCount") or 0) >= requested
        and all(int(s.get("runningTaskCount") or 0) == 0 for s in sources)
    )


def baking(sd: ServiceDeployment) -> bool:
    """ECS verifies the deployment: in lifecycle stage BAKE_TIME, or whole in tasks and still
    IN_PROGRESS while its alarms are watched."""
    if sd.get("status") not in ONGOING:
        return False
    if sd.get("lifecycleStage") == BAKE_TIME:
        return True
    return (sd.get("alarms") or {}).get("status") == "MONITORING" and whole(sd)


def verifying_line(
    sd: ServiceDeployment, now: datetime, seen_since: datetime | None = None
) -> str | None:
    """``verifying: alarms OK, 3 of ~6 min`` while ECS bakes; None otherwise. ``seen_since``:
    when the reader first saw this bake (used when ECS gives no ``updatedAt``)."""
    if not baking(sd):
        return None
    known = [t for t in (sd.get("updatedAt"), seen_since) if isinstance(t, datetime)]
    seconds = max(0, int((now - min(known)).total_seconds())) if known else 0
    alarms = sd.get("alarms") or {}
    fired = list(alarms.get("triggeredAlarmNames") or ())
    if fired:
        watch = f"alarm {', '.join(fired)} in ALARM"
    elif alarms.get("status") == "MONITORING":
        watch = "alarms OK"
    else:
        watch = "no alarms watched"
    bake = bake_minutes(sd)
    if bake is not None:
        seconds = min(seconds, bake * 60)
    # Under a minute in, seconds: "40 s of ~6 min"; then whole minutes, "3 of ~6 min".
    so_far = f"{seconds} s" if seconds < 60 else f"{seconds // 60}"
    if bake is not None:
        return f"verifying: {watch}, {so_far} of ~{bake} min"
    unit = "" if seconds < 60 else " min"
    return f"verifying: {watch}, {so_far}{unit} so far (ECS sets the bake time from the alarms)"


def stage_line(sd: ServiceDeployment) -> str | None:
    stage = sd.get("lifecycleStage")
    if not stage or sd.get("status") not in ONGOING | ROLLING_BACK:
        return None
    return f"stage: {stage}"


def breaker_line(sd: ServiceDeployment) -> str | None:
    """``circuit breaker: 1 of 3 failed tasks before ECS rolls back`` while it watches, once
    a task has failed."""
    breaker = sd.get("deploymentCircuitBreaker") or {}
    threshold = int(breaker.get("threshold") or 0)
    if breaker.get("status") != "MONITORING" or threshold <= 0:
        return None
    if sd.get("status") not in ONGOING:
        return None
    rollback = (_config(sd).get("deploymentCircuitBreaker") or {}).get("rollback", True)
    then = "ECS rolls back" if rollback else "ECS stops it"
    failed = int(breaker.get("failureCount") or 0)
    if failed == 0:
        # Nothing has failed: a line saying "0 … failed" would put the word before a reader of a
        # healthy (or replaced) rollout (issue 29: nothing of it failed, nothing says so).
        return None
    return f"circuit breaker: {failed} of {threshold} failed tasks before {then}"


def triggered_alarms(sd: ServiceDeployment) -> list[str]:
    """The alarms ECS says failed the deployment (``alarms.triggeredAlarmNames``)."""
    return [str(n) for n in (sd.get("alarms") or {}).get("triggeredAlarmNames") or () if n]


def fired_alarms(
    sd: ServiceDeployment, region: str, went_off: Mapping[str, datetime] | None = None
) -> list[FiredAlarm]:
    """The alarms that failed the deployment, each with when it went to ALARM: ``went_off``
    (the alarm's own StateUpdatedTimestamp, read while it was in ALARM), else when ECS
    started the rollback."""
    names = triggered_alarms(sd)
    started = (sd.get("rollback") or {}).get("startedAt")
    known = went_off or {}
    return [FiredAlarm(n, known.get(n) or started, cloudwatch_alarm_url(region, n)) for n in names]


def rolled_back_line(
    sd: ServiceDeployment, region: str, went_off: Mapping[str, datetime] | None = None
) -> str | None:
    """``rolled back: alarm hello-world-5xx went to ALARM at 14:03`` (``rolling back: …``
    while ECS does it; ``stopped: …`` when rollback is off); None unless alarms failed it."""
    fired = fired_alarms(sd, region, went_off)
    if not fired:
        return None
    status = sd.get("status")
    if status in ROLLING_BACK:
        verb = "rolling back"
    elif status in ROLLED_BACK:
        verb = "rolled back"
    elif status == "STOPPED":
        verb = "stopped"
    else:
        verb = "failing"
    return f"{verb}: " + "; ".join(f.text() for f in fired)


def progress_lines(
    sd: ServiceDeployment | None,
    now: datetime,
    region: str,
    *,
    seen_since: datetime | None = None,
    went_off: Mapping[str, datetime] | None = None,
) -> list[str]:
    """Every line above that applies now, in the order a reader wants them."""
    if not sd:
        return []
    lines = [
        verifying_line(sd, now, seen_since),
        stage_line(sd),
        breaker_line(sd),
        rolled_back_line(sd, region, went_off),
    ]
    return [line for line in lines if line]
