"""DynamoDB: a target's guardrail items beside its lock and history: the freeze, approval
requests and the queue of deploys waiting for the lock.

Same table and key scheme as bot/deploy/ledger.py (``cluster/service`` names the target):
  pk = FREEZE#<cluster>/<service>   sk = FREEZE              who froze it, when, why
  pk = REQUEST#<cluster>/<service>  sk = <id>                one approval request
  pk = QUEUE#<cluster>/<service>    sk = <queued>#<id>       one queued deploy
                                    sk = tell#<queued>#<id>  a person to tell when the lock
                                                             is free
  pk = QUEUED#<cluster>/<service>   sk = count | who#… | item#…  the queue's count, each
                                                             person's count, one mark per
                                                             person and image (see enqueue)
Writes that may race are conditional: one freeze at a time, an approval counted once and
only while the request is pending, a queued item added (with its mark and counts, in one
transaction) once per person and image and taken (deleted) by exactly one process. The
freeze item and the queue's count are also checked in the lock's own transaction
(Engine.start), so neither can change between a plan and its start unseen.
Everything lives in the table, so a restarted bot finds it all where it was.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.aws import aws_errors
from bot.deploy.ledger import Cancelled, ConditionFailed, Ledger
from bot.deploy.records import (
    ApprovalRequest,
    QueuedItem,
    QueueMode,
    Requester,
    RequestState,
    stamp,
    unstamp,
)
from bot.rules import Freeze

# How long a decided or expired request stays readable (so a late click is told why), past
# its expiry; DynamoDB's TTL removes it after that.
KEEP_REQUESTS = timedelta(days=2)


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
            "since": {"S": stamp(freeze.since)},
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
            return freeze_from_item(held.item) if held.item else self.current_freeze()
        return None

    def current_freeze(self) -> Freeze | None:
        with aws_errors("reading the freeze"):
            item = self.ledger.call(
                self.db.get_item, TableName=self.table, Key=self._freeze_key(), ConsistentRead=True
            ).get("Item")
        return freeze_from_item(item) if item else None

    def unfreeze(self) -> Freeze | None:
        """Lift the freeze; what it was (None: it was not frozen)."""
        with aws_errors("unfreezing the target"):
            old = self.ledger.call(
                self.db.delete_item,
                TableName=self.table,
                Key=self._freeze_key(),
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        return freeze_from_item(old) if old else None

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
            "requested_at": {"S": stamp(request.requested_at)},
            "request_expires_at": {"S": stamp(request.expires_at)},
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

    # The queue -----------------------------------------------------------------------------
    # Items: pk QUEUE#…, sk "<queued>#<id>" for a deploy, "tell#<queued>#<id>" for a person to
    # tell (so the head of the deploys is one Query with Limit, whatever waits behind it).
    # Beside them, under pk QUEUED#…, what keeps every check cheap and every click counted
    # once, written in the same transaction as the item:
    #   sk = count             ``deploys``: how many deploys wait (the queue rule reads this)
    #   sk = who#<user>        ``n``: how many that person has queued (queue_limit)
    #   sk = item#<user>#<what> the one item of that person for that image (a second click
    #                          finds it: "already queued as number N")
    def _queue_pk(self) -> dict[str, str]:
        return {"S": f"QUEUE#{self.key}"}

    def _meta_key(self, sk: str) -> dict[str, Any]:
        return {"pk": {"S": f"QUEUED#{self.key}"}, "sk": {"S": sk}}

    def count_key(self) -> dict[str, Any]:
        """The item counting the deploys queued (Engine.start checks it with the lock)."""
        return self._meta_key("count")

    def freeze_key(self) -> dict[str, Any]:
        """The freeze item (Engine.start checks its absence with the lock)."""
        return self._freeze_key()

    def _mark_key(self, item: QueuedItem) -> dict[str, Any]:
        what = f"{item.kind}#{item.tag}" if item.mode is QueueMode.DEPLOY else "tell"
        return self._meta_key(f"item#{item.requester.who}#{what}"[:1000])

    def enqueue(self, item: QueuedItem, limit: int = 0) -> QueuedItem:
        """Add to the end of the queue (its id, time and sort key made here); AlreadyQueued
        when that person has that image (or a notice) queued already, QueueFull when they
        have ``limit`` deploys queued (0: no limit). One transaction: the item, its mark,
        the counts."""
        now = self.clock.now()
        item = replace(item, id=_new_id("q", self.clock), queued_at=now)
        prefix = "" if item.mode is QueueMode.DEPLOY else "tell#"
        item = replace(item, sort_key=f"{prefix}{stamp(now)}#{item.id}", counted=True)
        self._put_queued(item, limit)
        return item

    def requeue(self, item: QueuedItem) -> None:
        """Put a taken item back at its place (its turn came, and the lock was taken first)."""
        with contextlib.suppress(AlreadyQueued):  # a replay of the same item: it is there
            self._put_queued(item, 0)

    def _put_queued(self, item: QueuedItem, limit: int) -> None:
        body = {
            "pk": self._queue_pk(),
            "sk": {"S": item.sort_key},
            "id": {"S": item.id},
            "mode": {"S": item.mode.value},
            "kind": {"S": item.kind},
            "tag": {"S": item.tag},
            "who": {"S": item.requester.who},
            "who_display": {"S": item.requester.display},
            "who_source": {"S": item.requester.source},
            "queued_at": {"S": stamp(item.queued_at)},
            "channel": {"S": item.channel},
            "reason": {"S": item.reason},
            "approved_by": {"L": [{"S": p} for p in item.approved_by]},
            "request_id": {"S": item.request_id},
            "source": {"S": item.source},
            "counted": {"BOOL": True},
        }
        writes: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": body,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {**self._mark_key(item), "queued": {"S": item.sort_key}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
        if item.mode is QueueMode.DEPLOY:
            person: dict[str, Any] = {
                "TableName": self.table,
                "Key": self._meta_key(f"who#{item.requester.who}"),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
            if limit > 0:
                person["ConditionExpression"] = "attribute_not_exists(n) OR n < :limit"
                person["ExpressionAttributeValues"][":limit"] = {"N": str(limit)}
            writes.append({"Update": person})
            writes.append(self._count(+1))
        try:
            with aws_errors("adding to the queue"):
                self.ledger.transact(writes)
        except Cancelled as cancelled:
            failed = cancelled.failed()
            if failed is None:
                raise AlreadyQueued("") from None  # a conflicting click: the other one won
            if failed[0] == 1:
                raise AlreadyQueued(_s(failed[1] or {}, "queued")) from None
            if failed[0] == 2:
                raise QueueFull(limit) from None
            raise AlreadyQueued(item.sort_key) from None

    def _count(self, delta: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": self.count_key(),
                "UpdateExpression": "ADD deploys :d",
                "ExpressionAttributeValues": {":d": {"N": str(delta)}},
            }
        }

    def queued(self) -> int:
        """How many deploys wait: one GetItem of the count, however long the queue."""
        with aws_errors("reading the queue"):
            item = self.ledger.call(
                self.db.get_item,
                TableName=self.table,
                Key=self.count_key(),
                ConsistentRead=True,
            ).get("Item")
        return max(0, int((item or {}).get("deploys", {}).get("N", "0")))

    def _query(self, condition: str, values: dict[str, Any], limit: int = 0) -> list[QueuedItem]:
        """Queue items in order, page after page (``limit``: stop once that many are read)."""
        found: list[QueuedItem] = []
        start: dict[str, Any] | None = None
        while True:
            page = min(limit - len(found), 500) if limit else 500
            with aws_errors("reading the queue"):
                answer = self.ledger.call(
                    self.db.query,
                    TableName=self.table,
                    KeyConditionExpression=condition,
                    ExpressionAttributeValues={":pk": self._queue_pk(), **values},
                    ConsistentRead=True,
                    ScanIndexForward=True,
                    Limit=page,
                    **({"ExclusiveStartKey": start} if start else {}),
                )
            found += [_queued_from_item(i) for i in answer.get("Items", [])]
            start = answer.get("LastEvaluatedKey")
            if not start or (limit and len(found) >= limit):
                return found

    def deploys(self, limit: int = 0) -> list[QueuedItem]:
        """The queued deploys, oldest first (``limit``: the first ones only)."""
        items = self._query("pk = :pk AND sk < :tell", {":tell": {"S": "tell#"}}, limit)
        return [q for q in items if q.mode is QueueMode.DEPLOY]

    def head(self) -> QueuedItem | None:
        """The first queued deploy: one Query with Limit 1."""
        return next(iter(self.deploys(1)), None)

    def tells(self) -> list[QueuedItem]:
        """The people waiting to be told the lock is free."""
        return self._query("pk = :pk AND begins_with(sk, :tell)", {":tell": {"S": "tell#"}})

    def queue(self) -> list[QueuedItem]:
        """Everything queued: the deploys in order, then the people to tell."""
        return self.deploys() + self.tells()

    def position(self, item: QueuedItem) -> int:
        """1-based place among the items of its kind (deploys, or people to tell), counted
        by DynamoDB (Select COUNT, page after page); 0 when it is gone."""
        if item.mode is QueueMode.DEPLOY:
            condition, values = "pk = :pk AND sk < :sk", {":sk": {"S": item.sort_key}}
        else:
            condition = "pk = :pk AND sk BETWEEN :tell AND :sk"
            values = {":tell": {"S": "tell#"}, ":sk": {"S": item.sort_key}}
        before, start = 0, None
        while True:
            with aws_errors("reading the queue"):
                answer = self.ledger.call(
                    self.db.query,
                    TableName=self.table,
                    KeyConditionExpression=condition,
                    ExpressionAttributeValues={":pk": self._queue_pk(), **values},
                    ConsistentRead=True,
                    Select="COUNT",
                    **({"ExclusiveStartKey": start} if start else {}),
                )
            before += int(answer.get("Count", 0))
            start = answer.get("LastEvaluatedKey")
            if not start:
                break
        if item.mode is QueueMode.TELL:
            before -= 1  # BETWEEN counts the item itself
        return before + 1 if self.find(item.sort_key) is not None else 0

    def find(self, sort_key: str) -> QueuedItem | None:
        if not sort_key:
            return None
        with aws_errors("reading the queue"):
            item = self.ledger.call(
                self.db.get_item,
                TableName=self.table,
                Key={"pk": self._queue_pk(), "sk": {"S": sort_key}},
                ConsistentRead=True,
            ).get("Item")
        return _queued_from_item(item) if item else None

    def take(self, item: QueuedItem, who: str | None = None) -> bool:
        """Remove ``item`` (its turn came, or ``who`` cancels it); True for exactly one
        caller. With ``who``, only the person who queued it may remove it. Its mark and
        counts go in the same transaction."""
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {}
        if who is not None:
            condition += " AND who = :who"
            values[":who"] = {"S": who}
        delete: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": self._queue_pk(), "sk": {"S": item.sort_key}},
            "ConditionExpression": condition,
        }
        if values:
            delete["ExpressionAttributeValues"] = values
        writes: list[dict[str, Any]] = [{"Delete": delete}]
        if item.counted:
            writes.append({"Delete": {"TableName": self.table, "Key": self._mark_key(item)}})
            if item.mode is QueueMode.DEPLOY:
                writes.append(
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._meta_key(f"who#{item.requester.who}"),
                            "UpdateExpression": "ADD n :d",
                            "ExpressionAttributeValues": {":d": {"N": "-1"}},
                        }
                    }
                )
                writes.append(self._count(-1))
        try:
            with aws_errors("taking from the queue"):
                self.ledger.transact(writes)
        except Cancelled:
            return False
        return True


class AlreadyQueued(Exception):
    """That person has that image queued already; ``sort_key`` names the queued item."""

    def __init__(self, sort_key: str) -> None:
        super().__init__("already queued")
        self.sort_key = sort_key


class QueueFull(Exception):
    """That person has ``limit`` deploys queued already."""

    def __init__(self, limit: int) -> None:
        super().__init__("queue full")
        self.limit = limit


def _s(item: dict[str, Any], key: str) -> str:
    return str(item.get(key, {}).get("S", ""))


def _strings(item: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(v.get("S", "")) for v in item.get(key, {}).get("L", []))


def freeze_from_item(item: dict[str, Any]) -> Freeze:
    return Freeze(
        by=_s(item, "by"),
        since=unstamp(_s(item, "since")),
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
        requested_at=unstamp(_s(item, "requested_at")),
        expires_at=unstamp(_s(item, "request_expires_at")),
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
        queued_at=unstamp(_s(item, "queued_at")),
        channel=_s(item, "channel"),
        reason=_s(item, "reason"),
        approved_by=_strings(item, "approved_by"),
        request_id=_s(item, "request_id"),
        source=_s(item, "source"),
        sort_key=_s(item, "sk"),
        counted=bool(item.get("counted", {}).get("BOOL", False)),
    )
