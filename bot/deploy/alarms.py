"""The alarms a change is judged by before anything changes: the target's own (deploybot.toml's
``alarms``) and those ECS watches for the service (DescribeServices' ``deploymentConfiguration.
alarms.alarmNames``, while enabled). One DescribeAlarms for all of them, and only when there are
any: each must exist (the refusal names the one that does not), and none may be in ALARM.

A deploy, redeploy or promote is refused while one of them is in ALARM, saying which, since
when and where it is in the console, unless forced: ``--break-glass "why"`` in a terminal
(``BREAK_GLASS=`` for make), on the record and announced as every break-glass is; **Deploy
anyway** (behind a confirm naming the alarms) in Slack, for the alarms it showed only. Either
way the record keeps which alarms it went past. Why refuse: a deploy into a firing alarm hides
whether it made things better or worse, and ECS itself does not watch deployment alarms for a
deployment that starts while one is in ALARM (Copilot's documentation of ``rollback_alarms``,
from the ECS team: "If an alarm is in 'In alarm' state at the beginning of a deployment, Amazon
ECS will NOT monitor alarms for the duration of that deployment", aws/copilot-cli PR #4512,
pointing at https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-alarm-
failure.html). A rollback is never held back by an alarm: it is what one does about it.

CloudWatch not answering, or refusing DescribeAlarms (the role lacks cloudwatch:DescribeAlarms),
refuses the change with what to do: the alarms cannot be vouched for. Nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bot.deploy.aws import aws_errors
from bot.deploy.links import cloudwatch_alarm_url
from bot.deploy.parts import Stage
from bot.deploy.records import Plan, Via
from bot.errors import DeployError, DeployRefused
from bot.rules import Door

log = logging.getLogger("deploybot.engine")

ALARM = "ALARM"
# The plans an alarm holds back: the changes. A rollback (or an abort) is the remedy.
CHECKED = frozenset({"deploy", "redeploy", "promote"})


@dataclass(frozen=True)
class AlarmView:
    """One alarm as DescribeAlarms shows it, for a person."""

    name: str
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    since: datetime | None  # when it went to that state
    reason: str  # CloudWatch's StateReason
    url: str  # its page in the CloudWatch console
    watched_by_ecs: bool = False  # named in the service's deploymentConfiguration.alarms

    @classmethod
    def from_api(cls, raw: dict[str, Any], region: str, ecs_names: Sequence[str]) -> AlarmView:
        name = str(raw.get("AlarmName", ""))
        # StateTransitionedTimestamp: when StateValue last changed; StateUpdatedTimestamp also
        # moves when only the evaluation state does (CloudWatch API reference, MetricAlarm).
        since = raw.get("StateTransitionedTimestamp") or raw.get("StateUpdatedTimestamp")
        return cls(
            name=name,
            state=str(raw.get("StateValue", "")),
            since=since if isinstance(since, datetime) else None,
            reason=str(raw.get("StateReason", "")),
            url=cloudwatch_alarm_url(region, name),
            watched_by_ecs=name in ecs_names,
        )

    def since_text(self, now: datetime | None = None) -> str:
        """``since 14:03 UTC`` (today), ``since 2026-12-05 14:03 UTC`` (before); "" unknown."""
        if self.since is None:
            return ""
        if now is not None and self.since.date() == now.date():
            return f"since {self.since:%H:%M} UTC"
        return f"since {self.since:%Y-%m-%d %H:%M} UTC"

    def describe(self, now: datetime | None = None) -> str:
        """``alarm hello-world-5xx is in ALARM since 14:03 UTC (Threshold Crossed: …)``."""
        since = f" {self.since_text(now)}" if self.since else ""
        why = f" ({self.reason.strip()[:200]})" if self.reason.strip() else ""
        return f"alarm {self.name} is in {self.state}{since}{why}"


class AlarmFiring(DeployRefused):
    """A change refused because alarms it is judged by are in ALARM (exit 2). ``firing``: which
    (a Slack door offers **Deploy anyway** for exactly these); ``kind``, ``tag`` and ``source``:
    the change, to ask again."""

    def __init__(
        self,
        message: str,
        firing: Sequence[AlarmView],
        kind: str,
        tag: str,
        source: str = "",
    ) -> None:
        super().__init__(message)
        self.firing = tuple(firing)
        self.kind = kind
        self.tag = tag
        self.source = source


def ecs_alarm_names(service: dict[str, Any]) -> list[str]:
    """The alarms ECS watches for the service's deployments (DescribeServices'
    ``deploymentConfiguration.alarms``), none while its ``enable`` is false."""
    alarms = (service.get("deploymentConfiguration") or {}).get("alarms") or {}
    if not alarms.get("enable"):
        return []
    return [str(n) for n in alarms.get("alarmNames") or () if n]


class Alarms(Stage):
    """The alarm check of one target's plans."""

    def names(self, service: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(every alarm a change is judged by, those ECS watches), the target's first."""
        ecs = ecs_alarm_names(service)
        return list(dict.fromkeys([*self.target.alarms, *ecs])), ecs

    def read(self, service: dict[str, Any]) -> tuple[list[AlarmView], list[str]]:
        """The alarms of the change, as CloudWatch says now, and the names it has no alarm
        of; nothing is asked when there are none. CloudWatch refusing or not answering is a
        refusal (DeployRefused) saying what to do."""
        names, ecs = self.names(service)
        if not names:
            return [], []
        try:
            with aws_errors("reading the CloudWatch alarms (DescribeAlarms)"):
                found = self.aws.describe_alarms(names)
        except DeployError as exc:
            raise DeployRefused(
                f"Not deployed to {self.target.name}: its alarms could not be checked: "
                f"{exc.message.rstrip('.')}. Nothing was changed. The deploy is judged by "
                f"{_listed(names)}; deploybot's role needs cloudwatch:DescribeAlarms on them "
                "(cloudformation/bot.yml). Try again once CloudWatch answers, or go past the "
                f"check: {self._past()}."
            ) from None
        region = self.aws.region
        views = {v.name: v for v in (AlarmView.from_api(a, region, ecs) for a in found)}
        return [views[n] for n in names if n in views], [n for n in names if n not in views]

    def now(self, names: Sequence[str]) -> list[AlarmView]:
        """The alarms ``names`` as CloudWatch says now (those that exist): a door reads when
        an alarm that failed a deployment went to ALARM. DeployError when it cannot."""
        if not names:
            return []
        with aws_errors("reading the CloudWatch alarms (DescribeAlarms)"):
            found = self.aws.describe_alarms(list(names))
        region = self.aws.region
        return [AlarmView.from_api(a, region, ()) for a in found]

    def judge(self, plan: Plan, service: dict[str, Any]) -> Plan:
        """``plan`` if its alarms let it go (with ``alarm_notes`` when it was forced past
        some); else AlarmFiring, or DeployRefused for an alarm that does not exist. A
        rollback goes whatever the alarms say, unread."""
        if plan.kind not in CHECKED:
            return plan
        views, missing = self.read(service)
        via = plan.via
        glass = via.break_glass if via.door is Door.CLI else None
        now = self.clock.now()
        if missing and not glass:
            raise DeployRefused(self._missing(missing, service))
        firing = [v for v in views if v.state == ALARM]
        unconfirmed = [v for v in firing if v.name not in via.allow_alarms]
        if unconfirmed and not glass:
            raise AlarmFiring(
                self._firing(firing, via, plan.kind, now),
                firing,
                plan.kind,
                plan.tag,
                plan.source,
            )
        unwatched = ": ECS does not watch its alarms for this deployment"
        notes = tuple(
            f"deployed while {v.describe(now)}{unwatched if v.watched_by_ecs else ''}"
            for v in firing
        ) + tuple(f"deployed though alarm {name} does not exist" for name in missing)
        if not notes:
            return plan
        forced = "--break-glass" if glass else "Deploy anyway"
        log.warning(
            "%s of %s forced past alarms (%s): %s",
            plan.kind,
            plan.tag,
            forced,
            "; ".join(notes),
            extra={"service": self.service_name, "who": plan.requester.who},
        )
        return replace(
            plan,
            notes=plan.notes + notes,
            alarm_notes=plan.alarm_notes + notes,
            # What a break-glass went past is recorded and announced as every break-glass is.
            break_glass=plan.break_glass or (glass or ""),
        )

    def _missing(self, missing: list[str], service: dict[str, Any]) -> str:
        ecs = ecs_alarm_names(service)
        where = []
        for name in missing:
            said = []
            if name in self.target.alarms:
                file = f" in {self.target.source}" if self.target.source else ""
                said.append(f"targets.{self.target.name}.alarms{file}")
            if name in ecs:
                said.append("the service's deploymentConfiguration.alarms (ECS watches it)")
            where.append(f"{name} (named in {' and '.join(said)})")
        which = "alarm" if len(missing) == 1 else "alarms"
        return (
            f"Not deployed to {self.target.name}: no CloudWatch {which} "
            f"{', '.join(where)} in {self.aws.region}. Nothing was changed. Create "
            f"it, or take it out of the list that names it; or go past the check: "
            f"{self._past()}."
        )

    def _firing(self, firing: list[AlarmView], via: Via, kind: str, now: datetime) -> str:
        lines = "; ".join(f"{v.describe(now)}: {v.url}" for v in firing)
        ecs = any(v.watched_by_ecs for v in firing)
        why = (
            " ECS does not watch its deployment alarms for a deployment that starts while one "
            "is in ALARM."
            if ecs
            else ""
        )
        return (
            f"Not deployed to {self.target.name}: {lines}.{why} Nothing was changed. "
            f"{kind.capitalize()} again once it is OK, or go past it: {self._past(via)}."
        )

    def _past(self, via: Via | None = None) -> str:
        """How this door goes past the alarms: a Slack door's **Deploy anyway** (offered with
        a firing alarm's refusal, ``via``), else a terminal's break-glass."""
        door = via.door if via is not None else None
        if door is not None and door not in (Door.CLI, Door.QUEUE):
            return "Deploy anyway, below (on the record)"
        if self.hints.door == "make":
            return 'make … BREAK_GLASS="why" (on the record)'
        if self.hints.door == "slack":
            return 'from a terminal, deploybot … --break-glass "why" (on the record)'
        return '--break-glass "why" (on the record)'


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
