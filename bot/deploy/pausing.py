"""A deployment ECS paused at a lifecycle hook: what it waits for, the test listener's check,
and the decision (Continue, or Roll back) taken once, whatever the doors and the replicas.

ECS pauses a deployment at a PAUSE hook and waits for ContinueServiceDeployment(hookId,
CONTINUE|ROLLBACK) until the hook expires, when its timeout's action happens ("Pause hooks for
Amazon ECS service deployments", https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
pause-lifecycle-hooks.html). Here:

- ``find``: the deployment rolling out, its service deployment (DescribeServiceDeployments by
  the record's ARN, bot/deploy/service_deployments.py) and the hook awaiting action, with
  the test listener's URL (the target's ``test_url``, else ECS's
  ``loadBalancers[].advancedConfiguration.testListenerRule`` and ELBv2) and its check.
- ``verification``: the test listener asked at the target's ``verify_path`` once per hook (the
  first process to ask stores it in the table; every later reader gets the same answer): the
  release and commit the service says it is (its ``/health``), the status and the latency.
- ``decide``: Continue is an approval under the target's rules (bot/rules.py ``CONTINUE``);
  Roll back is an abort (any deployer or approver). The first press claims the hook in the
  table (one conditional write), so ECS is asked once whatever the replicas and clicks; a
  refusal from ECS gives the hook back. The decision is added to the record (``decisions``)
  and logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from bot.deploy.aborting import Aborter
from bot.deploy.aws import aws_errors, error_code
from bot.deploy.parts import Parts, Stage
from bot.deploy.planning import Planner
from bot.deploy.progressive import PausedHook, Shift
from bot.deploy.records import DeploymentRecord, Requester, Via, stamp, unstamp
from bot.deploy.rollout import ServiceState
from bot.deploy.starting import describe_failure, refused_outright
from bot.deploy.table import TTL_ATTRIBUTE, ConditionFailed, Item, expiry, text
from bot.errors import DeployError, DeployRefused
from bot.rules import Action, Decision, Facts, check

log = logging.getLogger("deploybot.engine")

CONTINUE = "CONTINUE"
ROLLBACK = "ROLLBACK"
ACTIONS = (CONTINUE, ROLLBACK)
VERIFY_TIMEOUT_SECONDS = 5.0
PAUSE_KEPT = timedelta(days=30)  # a hook's item, after it was paused (TTL)
BODY_LIMIT = 64 * 1024  # what is read of the test listener's answer


class NothingPaused(DeployRefused):
    """Continue or Roll back with no deployment awaiting a decision (or another one than the
    button's); nothing was changed."""


class DecidedAlready(DeployRefused):
    """Someone pressed Continue or Roll back on this pause first: ECS was asked once."""


class ConfirmWrongRelease(DeployRefused):
    """Continue while the test listener's check is red: asked again before ECS is."""

    def __init__(self, message: str, verification: Verification) -> None:
        super().__init__(message)
        self.verification = verification


@dataclass(frozen=True)
class Verification:
    """What answered on the test listener at ``verify_path`` when the pause began."""

    url: str
    at: datetime
    status: int | None = None  # the HTTP status; None: no answer
    latency_ms: float | None = None
    version: str = ""  # what the service said it is (its /health's ``version``, ``commit``)
    commit: str = ""
    error: str = ""  # no answer, or not the service's JSON
    # "new": the deployment's release answered; "old": the one before it still does; "other":
    # another release; "error": no good answer.
    verdict: str = "error"

    @property
    def ok(self) -> bool:
        return self.verdict == "new"

    def describe(self) -> str:
        """``200 in 12 ms: v4.4.0 (abc1234)``, or what went wrong, for a person."""
        if self.status is None:
            return f"no answer from {self.url}: {self.error}"
        took = f" in {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        said = self.version or "?"
        if self.commit:
            said += f" ({self.commit[:12]})"
        head = f"{self.status}{took}"
        if self.error:
            return f"{head}: {self.error}"
        return f"{head}: {said}"

    def as_json(self) -> str:
        return json.dumps(
            {
                "url": self.url,
                "at": stamp(self.at),
                "status": self.status,
                "latency_ms": self.latency_ms,
                "version": self.version,
                "commit": self.commit,
                "error": self.error,
                "verdict": self.verdict,
            }
        )

    @classmethod
    def from_json(cls, value: str) -> Verification | None:
        try:
            raw = json.loads(value)
            return cls(
                url=str(raw["url"]),
                at=unstamp(str(raw["at"])),
                status=raw.get("status"),
                latency_ms=raw.get("latency_ms"),
                version=str(raw.get("version", "")),
                commit=str(raw.get("commit", "")),
                error=str(raw.get("error", "")),
                verdict=str(raw.get("verdict", "error")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Decided:
    """A decision taken on a hook: who, which, when, through which door."""

    who: str
    name: str
    action: str
    at: datetime
    source: str

    def describe(self) -> str:
        word = "Continue" if self.action == CONTINUE else "Roll back"
        return f"{word} by {self.name} ({self.source}) at {self.at:%H:%M:%S} UTC"


@dataclass(frozen=True)
class Pause:
    """A deployment ECS awaits a decision on."""

    record: DeploymentRecord
    shift: Shift
    hook: PausedHook
    arn: str  # the service deployment's
    test_url: str = ""  # the test listener's base URL; "" when not known (``test_url_note``)
    test_url_note: str = ""
    verification: Verification | None = None
    decided: Decided | None = None


@dataclass(frozen=True)
class PauseDecision:
    """What pressing did: ECS was asked (``lost``: its answer was lost, so it may have)."""

    record: DeploymentRecord
    action: str
    hook: PausedHook
    arn: str
    decided: Decided
    bypassed: tuple[str, ...] = ()
    lost: str = ""


def release_verdict(record: DeploymentRecord, version: str, commit: str, suffix: str) -> str:
    """Whether ``version``/``commit`` (what the test listener said) is the record's release
    ("new"), the one before it ("old") or neither ("other")."""

    def same_commit(ours: str | None) -> bool:
        if not ours or not commit:
            return False
        return commit.startswith(ours) or ours.startswith(commit)

    def same_tag(ours: str) -> bool:
        if not ours or not version:
            return False
        return ours.removesuffix(suffix) == version.removesuffix(suffix)

    if same_commit(record.commit) or (not commit and same_tag(record.tag)):
        return "new"
    if same_tag(record.tag) and not record.commit:
        return "new"
    if same_commit(record.previous_commit) or same_tag(record.previous_tag):
        return "old"
    return "other"


def check_test_listener(
    url: str, record: DeploymentRecord, suffix: str, at: datetime
) -> Verification:
    """GET ``url`` (the test listener at ``verify_path``) once, with a short timeout: status,
    latency, and the release it says it is (the service's /health: ``version``, ``commit``)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=VERIFY_TIMEOUT_SECONDS) as answer:
            status = int(answer.status)
            body = answer.read(BODY_LIMIT)
    except urllib.error.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        return Verification(url, at, exc.code, latency, error=f"HTTP {exc.code} {exc.reason}")
    except (OSError, ValueError) as exc:
        return Verification(url, at, error=str(getattr(exc, "reason", exc)) or type(exc).__name__)
    latency = (time.perf_counter() - started) * 1000
    try:
        said = json.loads(body)
        version, commit = str(said.get("version", "")), str(said.get("commit", ""))
    except (ValueError, AttributeError):
        return Verification(url, at, status, latency, error="not the service's JSON")
    if not 200 <= status < 300:
        return Verification(url, at, status, latency, version, commit, f"HTTP {status}")
    verdict = release_verdict(record, version, commit, suffix)
    return Verification(url, at, status, latency, version, commit, verdict=verdict)


class PauseBook:
    """The PAUSE items of one target's table (bot/deploy/table.py): per hook, its decision,
    its check, and whether its requester was told."""

    def __init__(self, parts: Parts) -> None:
        self.table = parts.ledger.table
        self.clock = parts.clock

    def _key(self, hook_id: str) -> Item:
        return self.table.keys.pause(hook_id)

    def get(self, hook_id: str) -> Item | None:
        return self.table.get(self._key(hook_id), "reading the paused deployment")

    def claim(self, hook_id: str, attribute: str, values: dict[str, str]) -> Item | None:
        """Set ``values`` on the hook's item if ``attribute`` is not there yet: None when this
        caller is the first (in any process), else the item as it was."""
        now = self.clock.now()
        names = {f"#{k}": k for k in values} | {"#ttl": TTL_ATTRIBUTE}
        try:
            self.table.update(
                self._key(hook_id),
                "recording the decision on the paused deployment",
                "SET " + ", ".join(f"#{k} = :{k}" for k in values) + ", #ttl = :ttl",
                condition=f"attribute_not_exists({attribute})",
                names=names,
                values={f":{k}": {"S": v} for k, v in values.items()}
                | {":ttl": expiry(now + PAUSE_KEPT)},
            )
        except ConditionFailed:
            return self.get(hook_id) or {}
        return None

    def unclaim(self, hook_id: str, attribute: str, who: str, also: tuple[str, ...]) -> None:
        """ECS refused the decision ``who`` claimed: the hook may be decided again."""
        removed = ", ".join((attribute, *also))
        with contextlib.suppress(ConditionFailed):
            self.table.update(
                self._key(hook_id),
                "giving the paused deployment's decision back",
                f"REMOVE {removed}",
                condition="decided_by = :w",
                values={":w": {"S": who}},
            )


def decided_of(item: Item | None) -> Decided | None:
    if not item or not text(item, "decision"):
        return None
    return Decided(
        who=text(item, "decided_by"),
        name=text(item, "decided_name") or text(item, "decided_by"),
        action=text(item, "decision"),
        at=unstamp(text(item, "decided_at")),
        source=text(item, "decided_source"),
    )


class Pauser(Stage):
    """Paused deployments of one target."""

    def __init__(self, parts: Parts, planner: Planner, aborter: Aborter) -> None:
        super().__init__(parts)
        self.planner = planner
        self.aborter = aborter
        self.book = PauseBook(parts)

    # Reading ------------------------------------------------------------------------------
    def service_deployment(
        self, record: DeploymentRecord, raw: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """ECS's service deployment of ``record``, read now (DescribeServiceDeployments by the
        ARN the record keeps, found first if it has none yet: the reconciler's look-up, which
        records it); None when there is none to read (the operations refused: the fallback,
        a deployment from before them), and then no pause can be seen, nor decided."""
        if raw is None:
            return None
        record, sd = self.reconciler.service_deployment(
            record, ServiceState.from_api(raw), max_age=0.0
        )
        return sd

    def find(self, of: str = "", *, verify: bool = True) -> Pause | None:
        """The deployment rolling out, if ECS awaits a decision on it (``of``: only that
        deployment); with its test listener's check when the target has ``verify_path``."""
        record = self.aborter.rolling_out()
        if record is None or (of and record.id != of):
            return None
        raw = self._service()
        sd = self.service_deployment(record, raw)
        shift = Shift.of(sd, raw)
        if shift is None or shift.hook is None:
            return None
        return self.described(record, shift, raw, verify=verify)

    def _service(self) -> dict[str, Any] | None:
        with aws_errors("reading the service"):
            return self.aws.describe_service()

    def described(
        self,
        record: DeploymentRecord,
        shift: Shift,
        raw: dict[str, Any] | None = None,
        *,
        verify: bool = True,
    ) -> Pause:
        """``shift``'s pause of ``record`` with what is known of it: the test listener (and
        its check, once per hook), a decision taken already."""
        assert shift.hook is not None
        hook = shift.hook
        item = self._item(hook.hook_id)
        url, note = self.test_url(raw)
        verification = Verification.from_json(text(item, "verify")) if item else None
        if verification is None and verify and self.target.verify_path and url:
            verification = self.verification(record, hook, url + self.target.verify_path)
        return Pause(
            record=record,
            shift=shift,
            hook=hook,
            arn=shift.arn,
            test_url=url,
            test_url_note=note,
            verification=verification,
            decided=decided_of(item),
        )

    def _item(self, hook_id: str) -> Item | None:
        try:
            return self.book.get(hook_id)
        except DeployError as exc:
            log.warning("could not read the paused deployment's item: %s", exc)
            return None

    def test_url(self, raw: dict[str, Any] | None) -> tuple[str, str]:
        """The test listener's base URL and, when there is none, why: the target's
        ``test_url``, else the listener of ECS's ``testListenerRule`` (ELBv2)."""
        if self.target.test_url:
            return self.target.test_url, ""
        rule = ""
        for lb in (raw or {}).get("loadBalancers") or ():
            rule = str((lb.get("advancedConfiguration") or {}).get("testListenerRule") or "")
            if rule:
                break
        if not rule:
            return "", "the service names no test listener (loadBalancers' testListenerRule)"
        try:
            with aws_errors("finding the test listener"):
                dns, port, protocol = self.aws.test_listener(rule)
        except (DeployError, ValueError, KeyError, IndexError) as exc:
            return "", f"the test listener could not be found: {exc}"
        scheme = "https" if protocol.upper() in ("HTTPS", "TLS") else "http"
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{dns}" + ("" if port == default else f":{port}"), ""

    def verification(self, record: DeploymentRecord, hook: PausedHook, url: str) -> Verification:
        """The test listener's check of this pause: asked by the first process that needs it
        and stored with the hook, so every door and replica shows (and Continue weighs) the
        same answer."""
        checked = check_test_listener(url, record, self.settings.image_tag_suffix, self.clock.now())
        try:
            before = self.book.claim(hook.hook_id, "verify", {"verify": checked.as_json()})
        except DeployError as exc:
            log.warning("the check is not stored: %s", exc, extra=record.log_fields)
            return checked
        if before is not None:
            kept = Verification.from_json(text(before, "verify"))
            if kept is not None:
                return kept
        log.info(
            "test listener checked: %s (%s)",
            checked.describe(),
            checked.verdict,
            extra={**record.log_fields, "url": url},
        )
        return checked

    def claim_pause_notice(self, hook_id: str) -> bool:
        """Claim telling the requester their deployment paused: True once, in any process."""
        return self.book.claim(hook_id, "told", {"told": stamp(self.clock.now())}) is None

    # Deciding -----------------------------------------------------------------------------
    def decide(
        self,
        requester: Requester,
        action: str,
        *,
        via: Via,
        of: str = "",
        hook_id: str = "",
        confirmed: bool = False,
    ) -> PauseDecision:
        """Continue (an approval: bot/rules.py's CONTINUE) or Roll back (an abort) the paused
        deployment (``of``/``hook_id``: the one a button showed). ECS is asked once: the
        first press claims the hook in the table. A Continue over a red check of the test
        listener is asked again (ConfirmWrongRelease) unless ``confirmed``."""
        if action not in ACTIONS:
            raise DeployRefused(f"{action!r} is neither CONTINUE nor ROLLBACK")
        name = self.target.name
        record = self.aborter.rolling_out()
        if record is None or (of and record.id != of):
            self._decided_already(hook_id)
            raise NothingPaused(
                f"Deployment {of} is no longer rolling out on {name}: nothing was changed."
                if of
                else f"Nothing is rolling out on {name}: nothing awaits a decision."
            )
        decision = self._check(action, requester, via, record)
        pause = self.find(record.id, verify=action == CONTINUE)
        if pause is None or (hook_id and pause.hook.hook_id != hook_id):
            self._decided_already(hook_id)
            raise NothingPaused(
                f"{record.kind} {record.id} of {record.tag} is not paused "
                + ("at that hook any more" if hook_id and pause else "now")
                + f": ECS awaits no decision. Nothing was changed; "
                f"`{self.hints.status(name)}` shows how it goes."
            )
        if pause.decided is not None:
            raise DecidedAlready(f"{pause.decided.describe()}: ECS was asked already.")
        check = pause.verification
        if action == CONTINUE and check is not None and not check.ok and not confirmed:
            raise ConfirmWrongRelease(
                f"The test listener's check is red: {check.describe()}. Continue anyway?",
                check,
            )
        now = self.clock.now()
        decided = Decided(requester.who, requester.name, action, now, via.door.value)
        values = {
            "decision": action,
            "decided_by": requester.who,
            "decided_name": requester.name,
            "decided_at": stamp(now),
            "decided_source": via.door.value,
            "deployment_id": record.id,
        }
        before = self.book.claim(pause.hook.hook_id, "decision", values)
        if before is not None:
            first = decided_of(before)
            said = first.describe() if first else "Someone decided first"
            raise DecidedAlready(f"{said}: ECS was asked already. Nothing else was changed.")
        lost = ""
        try:
            self.aws.continue_service_deployment(pause.arn, pause.hook.hook_id, action)
        except Exception as exc:
            if refused_outright(exc) or _refused_by_ecs(exc):
                self.book.unclaim(pause.hook.hook_id, "decision", requester.who, _DECIDED)
                with aws_errors(f"asking ECS to {action.lower()} the deployment"):
                    raise exc
            # Its answer is lost: ECS may have taken it; the hook stays claimed (a second
            # ContinueServiceDeployment would be a second decision), and what ECS did is read.
            lost = describe_failure(exc)
            log.warning("ContinueServiceDeployment's answer is lost: %s", lost, **_extra(record))
        bypassed = tuple(b.message for b in decision.bypassed)
        line = decided.describe() + "".join(f"; {b}" for b in bypassed)
        try:
            record = self._note(record, line)
        except DeployError as exc:
            log.warning("the decision is not in the record: %s", exc, **_extra(record))
        log.warning(
            "paused deployment: %s",
            line,
            extra={**record.log_fields, "hook": pause.hook.hook_id, "action": action},
        )
        return PauseDecision(record, action, pause.hook, pause.arn, decided, bypassed, lost)

    def _decided_already(self, hook_id: str) -> None:
        """A press on a pause ECS has left: if someone decided it (ECS moved on because they
        did), say who, rather than "not paused" (the later of a double click, a client that
        had not redrawn the message yet)."""
        if not hook_id:
            return
        decided = decided_of(self._item(hook_id))
        if decided is not None:
            raise DecidedAlready(f"{decided.describe()}: ECS was asked already.")

    def _check(
        self, action: str, requester: Requester, via: Via, record: DeploymentRecord
    ) -> Decision:
        """The rules: Continue as an approval of ``record``'s requester's change, Roll back as
        an abort."""
        if action == ROLLBACK:
            return self.planner.check(Action.ABORT, requester, via)
        facts = Facts(
            image=record.tag,
            freeze=self.guards.current_freeze(),
            break_glass=via.break_glass,
            requested_by=record.who,
        )
        decision = check(
            self.target,
            Action.CONTINUE,
            door=via.door,
            who=requester.who,
            channel=via.channel,
            now=self.clock.now(),
            facts=facts,
            hints=self.hints,
        )
        decision.raise_if_refused()
        return decision

    def _note(self, record: DeploymentRecord, line: str) -> DeploymentRecord:
        """Add ``line`` to the record's ``decisions`` (the history shows them)."""
        self.ledger.table.update(
            self.ledger.keys.record(record.sort_key),
            "recording the decision in the history",
            "SET decisions = list_append(if_not_exists(decisions, :none), :d)",
            values={":none": {"L": []}, ":d": {"L": [{"S": line[:1000]}]}},
            changed=True,
        )
        return replace(record, decisions=(*record.decisions, line))


_DECIDED = ("decided_by", "decided_name", "decided_at", "decided_source", "deployment_id")


def _refused_by_ecs(exc: BaseException) -> bool:
    """ECS answered and refused: the hook is not awaiting action (already decided, timed out),
    or the deployment is gone. Nothing was decided; the claim goes back."""
    if not isinstance(exc, ClientError):
        return False
    return error_code(exc) in (
        "InvalidParameterException",
        "ClientException",
        "ServiceDeploymentNotFoundException",
        "UnsupportedFeatureException",
        "AccessDeniedException",
    )


def _extra(record: DeploymentRecord) -> dict[str, Any]:
    return {"extra": record.log_fields}
