"""The guardrail store: a target's freeze, approval requests and the queue of deploys waiting
for the lock. A repository on the deploy table (bot/deploy/table.py says how each is stored).

Writes that may race are conditional: one freeze at a time, an approval counted once and
only while the request is pending, a queued item added (with its mark and counts, in one
transaction) once per person and image and taken (deleted) by exactly one process. The
freeze item and the queue's count are also checked in the lock's own transaction
(Engine.start: ``freeze_absent``, ``queue_empty``), so neither can change between a plan and
its start unseen. Everything lives in the table, so a restarted bot finds it all where it was.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.records import ApprovalRequest, QueuedItem, QueueMode, RequestState
from bot.deploy.table import (
    TELL_PREFIX,
    Cancelled,
    ConditionFailed,
    Precondition,
    Table,
    freeze_from_item,
    freeze_item,
    queued_from_item,
    queued_item,
    request_from_item,
    request_item,
    text,
)
from bot.rules import Freeze

# How long a decided or expired request stays readable (so a late click is told why), past
# its expiry; DynamoDB's TTL removes it after that.
KEEP_REQUESTS = timedelta(days=2)


def _new_id(prefix: str, clock: Clock) -> str:
    return f"{prefix}-{clock.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class GuardBook:
    """The freeze, approval requests and queue of one target (one service)."""

    def __init__(self, table: Table, clock: Clock = SYSTEM_CLOCK) -> None:
        self.table = table
        self.keys = table.keys
        self.clock = clock

    # The freeze ----------------------------------------------------------------------------
    def freeze(self, freeze: Freeze) -> Freeze | None:
        """Freeze the target; None when it is, or the freeze already in place when it was
        frozen first by someone else (one conditional put)."""
        try:
            self.table.put(
                freeze_item(self.keys.freeze(), freeze),
                "freezing the target",
                condition="attribute_not_exists(pk)",
                with_failed=True,
            )
        except ConditionFailed as held:
            return freeze_from_item(held.item) if held.item else self.current_freeze()
        return None

    def current_freeze(self) -> Freeze | None:
        item = self.table.get(self.keys.freeze(), "reading the freeze")
        return freeze_from_item(item) if item else None

    def unfreeze(self) -> Freeze | None:
        """Lift the freeze; what it was (None: it was not frozen)."""
        old = self.table.delete(self.keys.freeze(), "unfreezing the target", old=True)
        return freeze_from_item(old) if old else None

    def freeze_absent(self) -> Precondition:
        """For the lock's transaction: the target is not frozen."""
        return Precondition("freeze", self.keys.freeze(), "attribute_not_exists(pk)")

    # Approval requests ---------------------------------------------------------------------
    def new_request(self, request: ApprovalRequest) -> ApprovalRequest:
        """Store a new request (its id made here)."""
        request = replace(request, id=_new_id("r", self.clock))
        item = request_item(
            self.keys.request(request.id), request, request.expires_at + KEEP_REQUESTS
        )
        self.table.put(item, "recording the approval request", condition="attribute_not_exists(pk)")
        return request

    def request(self, request_id: str) -> ApprovalRequest | None:
        if not request_id or len(request_id) > 64:
            return None
        item = self.table.get(self.keys.request(request_id), "reading the approval request")
        return request_from_item(item) if item else None

    def add_approval(self, request: ApprovalRequest, who: str) -> ApprovalRequest | None:
        """Count ``who``'s approval once, while the request is pending; None when it is no
        longer pending (decided meanwhile) or ``who`` approved already."""
        try:
            item = self.table.update(
                self.keys.request(request.id),
                "recording the approval",
                "SET approved_by = list_append(approved_by, :who)",
                condition="#state = :pending AND NOT contains(approved_by, :one)",
                names={"#state": "state"},
                values={
                    ":who": {"L": [{"S": who}]},
                    ":one": {"S": who},
                    ":pending": {"S": RequestState.PENDING.value},
                },
                new=True,
            )
        except ConditionFailed:
            return None
        return request_from_item(item) if item else None

    def decide(
        self, request: ApprovalRequest, state: RequestState, by: str, deployment_id: str = ""
    ) -> bool:
        """Close a pending request (approved or rejected); False when it was decided first."""
        try:
            self.table.update(
                self.keys.request(request.id),
                "recording the decision",
                "SET #state = :state, decided_by = :by, deployment_id = :d",
                condition="#state = :pending",
                names={"#state": "state"},
                values={
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
        self.table.update(
            self.keys.request(request.id),
            "annotating the approval request",
            "SET message_ref = :m",
            values={":m": {"S": message_ref}},
        )
        return replace(request, message_ref=message_ref)

    # The queue -----------------------------------------------------------------------------
    # Beside each item, under QUEUED#, what keeps every check cheap and every click counted
    # once, written in the same transaction as the item: the count of deploys (the queue rule
    # reads it), each person's count (queue_limit), and each person's one item for an image (a
    # second click finds it: "already queued as number N").
    def queue_empty(self) -> Precondition:
        """For the lock's transaction: no deploy is queued."""
        return Precondition(
            "queue",
            self.keys.queue_count(),
            "attribute_not_exists(deploys) OR deploys <= :none",
            {":none": {"N": "0"}},
        )

    def enqueue(self, item: QueuedItem, limit: int = 0) -> QueuedItem:
        """Add to the end of the queue (its id, time and sort key made here); AlreadyQueued
        when that person has that image (or a notice) queued already, QueueFull when they
        have ``limit`` deploys queued (0: no limit). One transaction: the item, its mark,
        the counts."""
        now = self.clock.now()
        item = replace(item, id=_new_id("q", self.clock), queued_at=now)
        item = replace(item, sort_key=self.keys.queued_sort_key(item, now), counted=True)
        self._put_queued(item, limit)
        return item

    def requeue(self, item: QueuedItem) -> None:
        """Put a taken item back at its place (its turn came, and the lock was taken first)."""
        with contextlib.suppress(AlreadyQueued):  # a replay of the same item: it is there
            self._put_queued(item, 0)

    def _put_queued(self, item: QueuedItem, limit: int) -> None:
        writes = [
            self.table.put_part(
                queued_item(self.keys.queued(item.sort_key), item), "attribute_not_exists(pk)"
            ),
            self.table.put_part(
                {**self.keys.queue_mark(item), "queued": {"S": item.sort_key}},
                "attribute_not_exists(pk)",
                with_failed=True,
            ),
        ]
        if item.mode is QueueMode.DEPLOY:
            person = self.table.add_part(
                self.keys.queue_person(item.requester.who),
                "n",
                +1,
                "attribute_not_exists(n) OR n < :limit" if limit > 0 else "",
            )
            if limit > 0:
                person["Update"]["ExpressionAttributeValues"][":limit"] = {"N": str(limit)}
            writes.append(person)
            writes.append(self.table.add_part(self.keys.queue_count(), "deploys", +1))
        try:
            self.table.transact(writes, "adding to the queue")
        except Cancelled as cancelled:
            failed = cancelled.failed()
            if failed is None:
                raise AlreadyQueued("") from None  # a conflicting click: the other one won
            if failed[0] == 1:
                raise AlreadyQueued(text(failed[1] or {}, "queued")) from None
            if failed[0] == 2:
                raise QueueFull(limit) from None
            raise AlreadyQueued(item.sort_key) from None

    def queued(self) -> int:
        """How many deploys wait: one GetItem of the count, however long the queue."""
        item = self.table.get(self.keys.queue_count(), "reading the queue")
        return max(0, int((item or {}).get("deploys", {}).get("N", "0")))

    def _query(self, condition: str, values: dict[str, Any], limit: int = 0) -> list[QueuedItem]:
        """Queue items in order, page after page (``limit``: stop once that many are read)."""
        found: list[QueuedItem] = []
        for answer in self.table.pages(
            "reading the queue",
            KeyConditionExpression=condition,
            ExpressionAttributeValues={":pk": self.keys.queue(), **values},
            ConsistentRead=True,
            ScanIndexForward=True,
            Limit=min(limit, 500) if limit else 500,
        ):
            found += [queued_from_item(i) for i in answer.get("Items", [])]
            if limit and len(found) >= limit:
                return found[:limit]
        return found

    def deploys(self, limit: int = 0) -> list[QueuedItem]:
        """The queued deploys, oldest first (``limit``: the first ones only)."""
        items = self._query("pk = :pk AND sk < :tell", {":tell": {"S": TELL_PREFIX}}, limit)
        return [q for q in items if q.mode is QueueMode.DEPLOY]

    def head(self) -> QueuedItem | None:
        """The first queued deploy: one Query with Limit 1."""
        return next(iter(self.deploys(1)), None)

    def tells(self) -> list[QueuedItem]:
        """The people waiting to be told the lock is free."""
        return self._query("pk = :pk AND begins_with(sk, :tell)", {":tell": {"S": TELL_PREFIX}})

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
            values = {":tell": {"S": TELL_PREFIX}, ":sk": {"S": item.sort_key}}
        before = sum(
            int(answer.get("Count", 0))
            for answer in self.table.pages(
                "reading the queue",
                KeyConditionExpression=condition,
                ExpressionAttributeValues={":pk": self.keys.queue(), **values},
                ConsistentRead=True,
                Select="COUNT",
            )
        )
        if item.mode is QueueMode.TELL:
            before -= 1  # BETWEEN counts the item itself
        return before + 1 if self.find(item.sort_key) is not None else 0

    def find(self, sort_key: str) -> QueuedItem | None:
        if not sort_key:
            return None
        item = self.table.get(self.keys.queued(sort_key), "reading the queue")
        return queued_from_item(item) if item else None

    def take(self, item: QueuedItem, who: str | None = None) -> bool:
        """Remove ``item`` (its turn came, or ``who`` cancels it); True for exactly one
        caller. With ``who``, only the person who queued it may remove it. Its mark and
        counts go in the same transaction."""
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {}
        if who is not None:
            condition += " AND who = :who"
            values[":who"] = {"S": who}
        writes = [self.table.delete_part(self.keys.queued(item.sort_key), condition, values)]
        if item.counted:
            writes.append(self.table.delete_part(self.keys.queue_mark(item)))
            if item.mode is QueueMode.DEPLOY:
                writes.append(
                    self.table.add_part(self.keys.queue_person(item.requester.who), "n", -1)
                )
                writes.append(self.table.add_part(self.keys.queue_count(), "deploys", -1))
        try:
            self.table.transact(writes, "taking from the queue")
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
