"""DynamoDB: a target's guardrail items beside its lock and history: the freeze, approval
requests and the queue of deploys waiting for the lock.

Same table and key scheme as bot/deploy/ledger.py (``cluster/service`` names the target):
  pk = FREEZE#<cluster>/<service>   sk = FREEZE              who froze it, when, why
  pk = REQUEST#<cluster>/<service>  sk = <id>                one approval request
  pk = QUEUE#<cluster>/<service>    sk = <queued>#<id>       one queued deploy, or a person
                                                             to tell when the lock is free
Writes that may race are conditional: one freeze at a time, an approval counted once and
only while the request is pending, a queued item taken (deleted) by exactly one process.
Everything lives in the table, so a restarted bot finds it all where it was.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.aws import aws_errors
from bot.deploy.ledger import ConditionFailed, Ledger, Requester, format_ts, parse_ts
from bot.rules import Freeze

# How long a decided or expired request stays readable (so a late click is told why), past
# its expiry; DynamoDB's TTL removes it after that.
KEEP_REQUESTS = timedelta(days=2)


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # enough approvals: its deploy was started (or is being)
    REJECTED = "rejected"


@dataclass(frozen=True)
class ApprovalRequest:
    """A change waiting for approval: who asked for what, from which image to which."""

    id: str
    kind: str  # deploy, redeploy, promote
    tag: str
    digest: str
    from_tag: str
    from_digest: str
    from_task_definition: str  # what ran when it was asked: the premise
    requester: Requester
    reason: str
    requested_at: datetime
    expires_at: datetime
    approved_by: tuple[str, ...] = ()
    state: RequestState = RequestState.PENDING
    decided_by: str = ""
    channel: str = ""
    message_ref: str = ""
    source: str = ""  # promote: the target the image comes from
    deployment_id: str = ""  # the deployment it started, once approved

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class QueueMode(StrEnum):
    DEPLOY = "deploy"  # deploy when the lock is free
    TELL = "tell"  # tell the person when the lock is free


@dataclass(frozen=True)
class QueuedItem:
    """One entry of a target's queue, in the order it was queued."""

    id: str
    mode: QueueMode
    kind: str  # deploy, redeploy, promote ("" for TELL)
    tag: str
    requester: Requester
    queued_at: datetime
    channel: str = ""
    reason: str = ""
    approved_by: tuple[str, ...] = ()
    request_id: str = ""
    source: str = ""
    sort_key: str = ""


def _new_id(prefix: str, clock: Clock) -> str:
    return f"{prefix}-{clock.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class GuardBook:
    """The freeze, approval requests and queue of one target (one service)."""

    def __init__(self, ledger: Ledger, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ledger = ledger
        self.db = ledger.db
        self.table = ledger.table
        self.key = ledger.key
        self.clock = clock

    # The freeze ----------------------------------------------------------------------------
    def _freeze_key(self) -> dict[str, Any]:
        return {"pk": {"S": f"FREEZE#{self.key}"}, "sk": {"S": "FREEZE"}}

    def freeze(self, freeze: Freeze) -> Freeze | None:
        """Freeze the target; None when it is, or the freeze already in place when it was
        frozen first by someone else (one conditional put)."""
        item = {
            **self._freeze_key(),
            "by": {"S": freeze.by},
            "since": {"S": format_ts(freeze.since)},
            "reason": {"S": freeze.reason},
            "via": {"S": freeze.via},
            "deployment": {"S": freeze.deployment or ""},
        }
        try:
            with aws_errors("freezing the target"):
                self.ledger.call(
                    self.db.put_item,
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailed as held:
            return _freeze_from_item(held.item) if held.item else self.current_freeze()
        return None

    def current_freeze(self) -> Freeze | None:
        with aws_errors("reading the freeze"):
            item = self.ledger.call(
                self.db.get_item, TableName=self.table, Key=self._freeze_key(), ConsistentRead=True
            ).get("Item")
        return _freeze_from_item(item) if item else None

    def unfreeze(self) -> Freeze | None:
        """Lift the freeze; what it was (None: it was not frozen)."""
        with aws_errors("unfreezing the target"):
            old = self.ledger.call(
                self.db.delete_item,
                TableName=self.table,
                Key=self._freeze_key(),
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        return _freeze_from_item(old) if old else None

    # Approval requests ---------------------------------------------------------------------
    def _request_key(self, request_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"REQUEST#{self.key}"}, "sk": {"S": request_id}}

    def new_request(self, request: ApprovalRequest) -> ApprovalRequest:
        """Store a new request (its id made here)."""
        request = replace(request, id=_new_id("r", self.clock))
        keep = int((request.expires_at + KEEP_REQUESTS).timestamp())
        item = {
            **self._request_key(request.id),
            "id": {"S": request.id},
            "kind": {"S": request.kind},
            "tag": {"S": request.tag},
            "digest": {"S": request.digest},
            "from_tag": {"S": request.from_tag},
            "from_digest": {"S": request.from_digest},
            "from_task_definition": {"S": request.from_task_definition},
            "who": {"S": request.requester.who},
            "who_display": {"S": request.requester.display},
            "who_source": {"S": request.requester.source},
            "reason": {"S": request.reason},
            "requested_at": {"S": format_ts(request.requested_at)},
            "request_expires_at": {"S": format_ts(request.expires_at)},
            "approved_by": {"L": []},
            "state": {"S": request.state.value},
            "channel": {"S": request.channel},
            "message_ref": {"S": request.message_ref},
            "source": {"S": request.source},
            "expires_at": {"N": str(keep)},  # the table's TTL attribute
        }
        with aws_errors("recording the approval request"):
            self.ledger.call(
                self.db.put_item,
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        return request

    def request(self, request_id: str) -> ApprovalRequest | None:
        if not request_id or len(request_id) > 64:
            return None
        with aws_errors("reading the approval request"):
            item = self.ledger.call(
                self.db.get_item,
                TableName=self.table,
                Key=self._request_key(request_id),
                ConsistentRead=True,
            ).get("Item")
        return _request_from_item(item) if item else None

    def add_approval(self, request: ApprovalRequest, who: str) -> ApprovalRequest | None:
        """Count ``who``'s approval once, while the request is pending; None when it is no
        longer pending (decided meanwhile) or ``who`` approved already."""
        try:
            with aws_errors("recording the approval"):
                item = self.ledger.call(
                    self.db.update_item,
                    TableName=self.table,
                    Key=self._request_key(request.id),
                    UpdateExpression="SET approved_by = list_append(approved_by, :who)",
                    ConditionExpression="#state = :pending AND NOT contains(approved_by, :one)",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        ":who": {"L": [{"S": who}]},
                        ":one": {"S": who},
                        ":pending": {"S": RequestState.PENDING.value},
                    },
                    ReturnValues="ALL_NEW",
                ).get("Attributes")
        except ConditionFailed:
            return None
        return _request_from_item(item) if item else None

    def decide(
        self, request: ApprovalRequest, state: RequestState, by: str, deployment_id: str = ""
    ) -> bool:
        """Close a pending request (approved or rejected); False when it was decided first."""
        try:
            with aws_errors("recording the decision"):
                self.ledger.call(
                    self.db.update_item,
                    TableName=self.table,
                    Key=self._request_key(request.id),
                    UpdateExpression="SET #state = :state, decided_by = :by, deployment_id = :d",
                    ConditionExpression="#state = :pending",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        ":state": {"S": state.value},
                        ":by": {"S": by},
                        ":d": {"S": deployment_id},
                        ":pending": {"S": RequestState.PENDING.value},
                    },
                )
        except ConditionFailed:
            return False
        return True

    def set_request_message(self, request: ApprovalRequest, message_ref: str) -> ApprovalRequest:
        with aws_errors("annotating the approval request"):
            self.ledger.call(
                self.db.update_item,
                TableName=self.table,
                Key=self._request_key(request.id),
                UpdateExpression="SET message_ref = :m",
                ExpressionAttributeValues={":m": {"S": message_ref}},
            )
        return replace(request, message_ref=message_ref)

    def pending_requests(self, limit: int = 20) -> list[ApprovalRequest]:
        with aws_errors("reading the approval requests"):
            items = self.ledger.call(
                self.db.query,
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"REQUEST#{self.key}"}},
                ScanIndexForward=False,
                Limit=100,
            ).get("Items", [])
        now = self.clock.now()
        found = [_request_from_item(i) for i in items]
        return [r for r in found if r.state is RequestState.PENDING and not r.expired(now)][:limit]

    # The queue -----------------------------------------------------------------------------
    def _queue_pk(self) -> dict[str, str]:
        return {"S": f"QUEUE#{self.key}"}

    def enqueue(self, item: QueuedItem) -> QueuedItem:
        """Add to the end of the queue (its id, time and sort key made here)."""
        now = self.clock.now()
        item = replace(item, id=_new_id("q", self.clock), queued_at=now)
        item = replace(item, sort_key=f"{format_ts(now)}#{item.id}")
        self._put_queued(item)
        return item

    def _put_queued(self, item: QueuedItem) -> None:
        with aws_errors("adding to the queue"):
            self.ledger.call(
                self.db.put_item,
                TableName=self.table,
                Item={
                    "pk": self._queue_pk(),
                    "sk": {"S": item.sort_key},
                    "id": {"S": item.id},
                    "mode": {"S": item.mode.value},
                    "kind": {"S": item.kind},
                    "tag": {"S": item.tag},
                    "who": {"S": item.requester.who},
                    "who_display": {"S": item.requester.display},
                    "who_source": {"S": item.requester.source},
                    "queued_at": {"S": format_ts(item.queued_at)},
                    "channel": {"S": item.channel},
                    "reason": {"S": item.reason},
                    "approved_by": {"L": [{"S": p} for p in item.approved_by]},
                    "request_id": {"S": item.request_id},
                    "source": {"S": item.source},
                },
            )

    def requeue(self, item: QueuedItem) -> None:
        """Put a taken item back at its place (its turn came, and the lock was taken first)."""
        self._put_queued(item)

    def queue(self) -> list[QueuedItem]:
        """Everything queued, oldest first."""
        with aws_errors("reading the queue"):
            items = self.ledger.call(
                self.db.query,
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": self._queue_pk()},
                ConsistentRead=True,
                ScanIndexForward=True,
                Limit=500,
            ).get("Items", [])
        return [_queued_from_item(i) for i in items]

    def take(self, item: QueuedItem, who: str | None = None) -> bool:
        """Remove ``item`` (its turn came, or ``who`` cancels it); True for exactly one
        caller. With ``who``, only the person who queued it may remove it."""
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {}
        if who is not None:
            condition += " AND who = :who"
            values[":who"] = {"S": who}
        try:
            with aws_errors("taking from the queue"):
                self.ledger.call(
                    self.db.delete_item,
                    TableName=self.table,
                    Key={"pk": self._queue_pk(), "sk": {"S": item.sort_key}},
                    ConditionExpression=condition,
                    **({"ExpressionAttributeValues": values} if values else {}),
                )
        except ConditionFailed:
            return False
        return True


def _s(item: dict[str, Any], key: str) -> str:
    return str(item.get(key, {}).get("S", ""))


def _strings(item: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(v.get("S", "")) for v in item.get(key, {}).get("L", []))


def _freeze_from_item(item: dict[str, Any]) -> Freeze:
    return Freeze(
        by=_s(item, "by"),
        since=parse_ts(_s(item, "since")),
        reason=_s(item, "reason"),
        via=_s(item, "via") or "slack",
        deployment=_s(item, "deployment") or None,
    )


def _request_from_item(item: dict[str, Any]) -> ApprovalRequest:
    return ApprovalRequest(
        id=_s(item, "id"),
        kind=_s(item, "kind"),
        tag=_s(item, "tag"),
        digest=_s(item, "digest"),
        from_tag=_s(item, "from_tag"),
        from_digest=_s(item, "from_digest"),
        from_task_definition=_s(item, "from_task_definition"),
        requester=Requester(_s(item, "who"), _s(item, "who_source"), _s(item, "who_display")),
        reason=_s(item, "reason"),
        requested_at=parse_ts(_s(item, "requested_at")),
        expires_at=parse_ts(_s(item, "request_expires_at")),
        approved_by=_strings(item, "approved_by"),
        state=RequestState(_s(item, "state") or "pending"),
        decided_by=_s(item, "decided_by"),
        channel=_s(item, "channel"),
        message_ref=_s(item, "message_ref"),
        source=_s(item, "source"),
        deployment_id=_s(item, "deployment_id"),
    )


def _queued_from_item(item: dict[str, Any]) -> QueuedItem:
    return QueuedItem(
        id=_s(item, "id"),
        mode=QueueMode(_s(item, "mode") or "deploy"),
        kind=_s(item, "kind"),
        tag=_s(item, "tag"),
        requester=Requester(_s(item, "who"), _s(item, "who_source"), _s(item, "who_display")),
        queued_at=parse_ts(_s(item, "queued_at")),
        channel=_s(item, "channel"),
        reason=_s(item, "reason"),
        approved_by=_strings(item, "approved_by"),
        request_id=_s(item, "request_id"),
        source=_s(item, "source"),
        sort_key=_s(item, "sk"),
    )
