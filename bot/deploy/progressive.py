"""How ECS shifts a deployment's traffic, read from its service deployment: the strategy, the
lifecycle stage, the split between the new and the old revision, the bake timers and a PAUSE
hook awaiting a decision. Pure: the doors render it, nothing here calls AWS.

Everything comes from what ECS reports (``Snapshot.service_deployment``: DescribeServiceDeployments'
ServiceDeployment, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
API_ServiceDeployment.html), never from deploybot.toml:

- ``deploymentConfiguration.strategy``: ROLLING, BLUE_GREEN, LINEAR or CANARY;
  ``canaryConfiguration`` (canaryPercent, canaryBakeTimeInMinutes), ``linearConfiguration``
  (stepPercent, stepBakeTimeInMinutes), ``bakeTimeInMinutes`` (after all production traffic
  moved, before the old revision goes).
- ``lifecycleStage``: RECONCILE_SERVICE … PRODUCTION_TRAFFIC_SHIFT … BAKE_TIME, CLEAN_UP.
- the traffic: ``targetServiceRevision`` and each of ``sourceServiceRevisions`` carry
  ``requestedProductionTrafficWeight`` (and ``requestedTestTrafficWeight``), in percent.
- ``lifecycleHookDetails``: a hook of ``targetType`` PAUSE whose ``status`` is
  AWAITING_ACTION waits for ContinueServiceDeployment(hookId, CONTINUE|ROLLBACK) until
  ``expiresAt``, when its ``timeoutAction`` happens ("Pause hooks for Amazon ECS service
  deployments", https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
  pause-lifecycle-hooks.html).

ECS does not say when a stage or a step began: ``StepClock`` remembers when this process first
saw each one, which is what "baking 4 of 10 min" counts from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The stages a person reads, in ECS's words made plain.
STAGE_WORDS = {
    "RECONCILE_SERVICE": "reconciling the service",
    "PRE_SCALE_UP": "before scale-up",
    "SCALE_UP": "scaling up the new revision",
    "POST_SCALE_UP": "after scale-up",
    "TEST_TRAFFIC_SHIFT": "shifting test traffic",
    "POST_TEST_TRAFFIC_SHIFT": "test traffic on the new revision",
    "PRODUCTION_TRAFFIC_SHIFT": "shifting production traffic",
    "POST_PRODUCTION_TRAFFIC_SHIFT": "production traffic on the new revision",
    "BAKE_TIME": "baking",
    "CLEAN_UP": "cleaning up the old revision",
}
ROLLED_BACK_STATUSES = frozenset(
    {"ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL"}
)


@dataclass(frozen=True)
class PausedHook:
    """A PAUSE hook awaiting a decision: its id (ContinueServiceDeployment's ``hookId``),
    when its timeout's action happens, and which (ROLLBACK or CONTINUE)."""

    hook_id: str
    stage: str
    expires_at: datetime | None
    timeout_action: str

    @property
    def timeout_words(self) -> str:
        return "rolls back" if self.timeout_action != "CONTINUE" else "continues"


@dataclass(frozen=True)
class Shift:
    """One reading of a service deployment's traffic shifting."""

    arn: str
    status: str
    strategy: str
    stage: str
    new_percent: float | None  # production traffic on the new revision; None: not said
    test_percent: float | None  # test traffic on the new revision
    step_percent: float | None  # LINEAR's step, CANARY's canary percent
    step_bake_minutes: int | None  # LINEAR's step bake, CANARY's canary bake
    bake_minutes: int | None  # the deployment's bake time (after all traffic moved)
    hook: PausedHook | None = None
    failure_count: int | None = None
    failure_threshold: int | None = None

    @classmethod
    def of(cls, sd: dict[str, Any] | None, service: dict[str, Any] | None = None) -> Shift | None:
        """The shift a ServiceDeployment (botocore's shape, datetimes parsed) describes; its
        ``deploymentConfiguration`` when ECS gave one, else the service's (DescribeServices).
        None for no service deployment."""
        if not sd:
            return None
        config = dict(sd.get("deploymentConfiguration") or {})
        if not config and service:
            config = dict(service.get("deploymentConfiguration") or {})
        strategy = str(config.get("strategy") or "ROLLING")
        step_percent: float | None = None
        step_bake: int | None = None
        if strategy == "CANARY":
            canary = config.get("canaryConfiguration") or {}
            step_percent = _number(canary.get("canaryPercent"), 5.0)  # ECS's default
            step_bake = int(_number(canary.get("canaryBakeTimeInMinutes"), 10.0) or 0)
        elif strategy == "LINEAR":
            linear = config.get("linearConfiguration") or {}
            step_percent = _number(linear.get("stepPercent"), 10.0)
            step_bake = int(_number(linear.get("stepBakeTimeInMinutes"), 6.0) or 0)
        bake = config.get("bakeTimeInMinutes")
        target = sd.get("targetServiceRevision") or {}
        breaker = sd.get("deploymentCircuitBreaker") or {}
        return cls(
            arn=str(sd.get("serviceDeploymentArn", "")),
            status=str(sd.get("status", "")),
            strategy=strategy,
            stage=str(sd.get("lifecycleStage", "")),
            new_percent=_number(target.get("requestedProductionTrafficWeight"), None),
            test_percent=_number(target.get("requestedTestTrafficWeight"), None),
            step_percent=step_percent,
            step_bake_minutes=step_bake,
            bake_minutes=int(bake) if isinstance(bake, int) else None,
            hook=paused_hook(sd),
            failure_count=_int_or_none(breaker.get("failureCount")),
            failure_threshold=_int_or_none(breaker.get("threshold")),
        )

    @property
    def shifts_traffic(self) -> bool:
        return self.strategy in ("BLUE_GREEN", "LINEAR", "CANARY")

    @property
    def paused(self) -> bool:
        return self.hook is not None

    @property
    def stepped(self) -> bool:
        return self.strategy in ("LINEAR", "CANARY") and bool(self.step_percent)

    @property
    def steps(self) -> int:
        """How many production traffic steps: LINEAR's 100 / step, CANARY's two."""
        if self.strategy == "CANARY":
            return 2
        if self.strategy == "LINEAR" and self.step_percent:
            return max(1, math.ceil(100.0 / self.step_percent - 1e-9))
        return 1

    @property
    def step(self) -> int:
        """The production traffic step reached (0: none yet)."""
        new = self.new_percent or 0.0
        if new <= 0:
            return 0
        if new >= 100.0:
            return self.steps
        if self.strategy == "CANARY":
            return 1
        if self.strategy == "LINEAR" and self.step_percent:
            return min(self.steps, max(1, round(new / self.step_percent)))
        return 1

    @property
    def baking_minutes(self) -> int | None:
        """The bake the current state waits out: the deployment's bake at BAKE_TIME, a
        step's bake while a canary or linear step holds its share; None when none."""
        if self.stage == "BAKE_TIME":
            return self.bake_minutes
        new = self.new_percent or 0.0
        if self.stepped and self.stage == "PRODUCTION_TRAFFIC_SHIFT" and 0 < new < 100:
            return self.step_bake_minutes
        return None

    def key(self) -> tuple[str, float | None]:
        """What marks a new stage or step: its start is when it was first seen."""
        return self.stage, self.new_percent

    def stage_words(self) -> str:
        return STAGE_WORDS.get(self.stage, self.stage.lower().replace("_", " ") or "starting")

    def step_words(self) -> str:
        """``canary`` / ``step 3 of 10`` / ``blue/green`` / ``rolling``."""
        if self.strategy == "CANARY":
            return "canary" if self.step <= 1 and (self.new_percent or 0) < 100 else "canary, all"
        if self.strategy == "LINEAR":
            return f"linear, step {self.step} of {self.steps}"
        if self.strategy == "BLUE_GREEN":
            return "blue/green"
        return "rolling"

    def split(self, new: str, old: str) -> str:
        """``10% on v4.4.0, 90% on v4.3.0``; "" while ECS says no weights."""
        if self.new_percent is None:
            return ""
        now = _percent(self.new_percent)
        rest = _percent(max(0.0, 100.0 - self.new_percent))
        return f"{now} on {new}, {rest} on {old}"

    def describe(self, new: str, old: str, since: datetime | None, now: datetime) -> str:
        """``canary: 10% on v4.4.0, 90% on v4.3.0, baking 4 of 10 min`` (``since``: when this
        stage or step was first seen); the stage when no traffic moves yet."""
        head = self.step_words() if self.shifts_traffic else self.strategy.lower()
        parts = [p for p in (self.split(new, old),) if p] if self.shifts_traffic else []
        bake = self.baking_minutes
        if self.paused and self.hook is not None:
            parts.append(f"paused at {self.hook.stage or self.stage}")
        elif bake and since is not None:
            waited = max(0, int((now - since).total_seconds() // 60))
            parts.append(f"baking {min(waited, bake)} of {bake} min")
        elif bake:
            parts.append(f"baking {bake} min")
        else:
            parts.append(self.stage_words())
        return f"{head}: " + ", ".join(parts)

    def reached(self, new: str) -> str:
        """Where it got to, for a rollback's line: ``canary (10% on v4.4.0)``, ``step 3 of
        10 (30% on v4.4.0)``, ``test traffic``."""
        share = f" ({_percent(self.new_percent)} on {new})" if self.new_percent else ""
        if self.strategy == "LINEAR":
            return f"step {self.step} of {self.steps}{share}"
        if self.strategy == "CANARY":
            return ("canary" if self.step <= 1 else "all traffic") + share
        return f"{self.stage_words()}{share}"


def paused_hook(sd: dict[str, Any]) -> PausedHook | None:
    """The PAUSE hook of ``sd`` awaiting action, if any (the deployment IN_PROGRESS: "The
    deployment must be in the IN_PROGRESS state", Continuing service deployments,
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/continue-service-deployment.html)."""
    if sd.get("status") not in (None, "IN_PROGRESS"):
        return None
    for hook in sd.get("lifecycleHookDetails") or ():
        if hook.get("targetType") == "PAUSE" and hook.get("status") == "AWAITING_ACTION":
            expires = hook.get("expiresAt")
            return PausedHook(
                hook_id=str(hook.get("hookId", "")),
                stage=str(sd.get("lifecycleStage", "")),
                expires_at=expires if isinstance(expires, datetime) else None,
                timeout_action=str(hook.get("timeoutAction") or "ROLLBACK"),
            )
    return None


@dataclass
class StepClock:
    """When each stage or step of one deployment was first seen here, and the furthest it got
    (what a rollback reports). One per live view (a message, a terminal)."""

    seen: dict[tuple[str, float | None], datetime] = field(default_factory=dict)
    furthest: Shift | None = None

    def see(self, shift: Shift, at: datetime) -> datetime:
        """Note ``shift`` seen at ``at``; when its stage or step began (first seen)."""
        since = self.seen.setdefault(shift.key(), at)
        rolling_back = shift.status in ROLLED_BACK_STATUSES
        if not rolling_back and (
            self.furthest is None or (shift.new_percent or 0) >= (self.furthest.new_percent or 0)
        ):
            self.furthest = shift
        return since


def _number(value: Any, default: float | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _percent(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f}%" if abs(value - round(value)) < 0.05 else f"{value:.1f}%"
