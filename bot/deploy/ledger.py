"""DynamoDB: the per-service lock (a conditional put with a lease) and the deployment history.

One table, three kinds of item, the first two keyed by the service (``cluster/service``):
  pk = LOCK#<cluster>/<service>     sk = LOCK          the lock; ``expires_at`` is its lease
  pk = HISTORY#<cluster>/<service>  sk = <started>#<id> one deployment record
  pk = HISTORY#<cluster>/<service>  sk = ~news#<at>#<id> something done from a terminal that
                                                      the target's channel is to hear of
  pk = NOTICE#<channel>:<ts>        sk = NOTICE        a CI notice whose Deploy button was used
  pk = TAG#<repository>:<tag>       sk = TAG           the image an exact release tag named when
                                                       first deployed, and any allowed moves
  pk = OUTSIDE#<cluster>/<service>  sk = <ECS id>      an ECS deployment no record explains,
                                                      reported in the channel
News sorts after every record (records' sort keys begin with the year), so the bot's periodic
read of the newest records brings the news waiting to be announced in the same Query; every
other history read stops below it.
A record carries the lease of the process that follows it to its end (``follower``,
``follower_until``, ``follower_beat``), so several bot replicas on one table follow each
deployment once. The key schema is the one ``cloudformation/bot.yml`` declares (a test holds
them together).

The lock is taken with one conditional put, or (a change: Engine.start) one TransactWriteItems
holding that put and the checks that must hold with it (no freeze, no queued deploy).

Every write that could race another process is conditional, so closing, releasing and
taking over are idempotent: whoever reconciles a record with ECS first wins, the others'
writes fail their condition and change nothing.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.aws import AwsClient, aws_errors, error_code
from bot.deploy.records import (
    CLOCK_SKEW,
    DeploymentRecord,
    Lock,
    News,
    Requester,
    TagRecord,
    stamp,
    unstamp,
)
from bot.deploy.rollout import Outcome, Snapshot
from bot.errors import LockHeld, NotConfigured

KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]
TTL_ATTRIBUTE = "expires_at"

# The sort keys of news items begin with this; every record's sorts below it.
NEWS_PREFIX = "~news#"
# How long news waits for a bot to announce it (DynamoDB's TTL removes it after that).
NEWS_KEPT = timedelta(days=1)
# News read beside the records in a bot's pass, at most: what waits longer is read next pass.
NEWS_READ = 10


class Ledger:
    """The lock and the history of one service."""

    def __init__(self, aws: AwsClient, lease_seconds: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = aws.dynamodb
        self.table = aws.table
        self.key = f"{aws.cluster}/{aws.service}"
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    # The lock ------------------------------------------------------------------------------
    def _lock_key(self) -> dict[str, Any]:
        return {"pk": {"S": f"LOCK#{self.key}"}, "sk": {"S": "LOCK"}}

    def try_acquire(
        self,
        requester: Requester,
        tag: str,
        deployment_id: str,
        record_sk: str = "",
        checks: Sequence[Precondition] = (),
    ) -> tuple[bool, Lock]:
        """Take the free lock: one conditional PutItem. (True, our lock) when taken, else
        (False, the lock that holds it), read from the failed condition itself.

        With ``checks`` (the freeze, the queue: Engine.start), the put and the checks are
        one TransactWriteItems: the lock is taken only if every check holds at that moment;
        a check that fails raises PreconditionFailed (with the item that failed it) and
        nothing is written."""
        now = self.clock.now()
        lock = Lock(
            holder=requester.name,
            source=requester.source,
            tag=tag,
            deployment_id=deployment_id,
            acquired_at=now,
            expires_at=now + self.lease,
            record_sk=record_sk,
        )
        put = {
            "TableName": self.table,
            "Item": _lock_item(self._lock_key(), lock),
            "ConditionExpression": "attribute_not_exists(pk)",
            # The holder comes back with the refusal: DynamoDB's PutItem returns the item
            # that failed the condition with ALL_OLD (API_PutItem.html,
            # ReturnValuesOnConditionCheckFailure); a transaction's cancellation reasons
            # carry it the same way (API_TransactWriteItems.html, CancellationReasons).
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        try:
            with aws_errors("taking the deploy lock"):
                if checks:
                    self.transact([*(c.as_item(self.table) for c in checks), {"Put": put}])
                else:
                    self._call(self.db.put_item, **put)
        except Cancelled as cancelled:
            failed = cancelled.failed()
            if failed is not None and failed[0] < len(checks):
                raise PreconditionFailed(checks[failed[0]], failed[1]) from None
            item = failed[1] if failed is not None else None
            if item:  # our own, when an applied attempt's answer was lost (see below)
                holder = _lock_from_item(item)
                return holder.deployment_id == deployment_id, holder
            return self._lock_after_refusal(deployment_id, tag, now)
        except _Conditional as held:
            # Our own put, applied on an attempt whose answer was lost and then retried by
            # botocore, fails its condition on our own lock: it is ours (a deployment id is
            # never reused), not a lock held by someone else (#31, the randomized test).
            if held.item:
                holder = _lock_from_item(held.item)
                return holder.deployment_id == deployment_id, holder
            return self._lock_after_refusal(deployment_id, tag, now)
        return True, lock

    def _lock_after_refusal(self, deployment_id: str, tag: str, now: datetime) -> tuple[bool, Lock]:
        """A refused lock put whose answer named no holder: the lock as it is now (ours when an
        applied attempt's answer was lost), or LockHeld when a conflicting transaction or a
        release left none."""
        found = self.lock_item()
        if found is not None and found.deployment_id == deployment_id:
            return True, found
        if found is None:
            raise LockHeld(
                "Deploys were locked a moment ago and the lock has just been released; try again.",
                holder="?",
                tag=tag,
                since=now,
                deployment_id="",
            ) from None
        return False, found

    def renew(self, deployment_id: str, seconds: float | None = None) -> bool:
        """Push the lease out; False if the lock is no longer ours."""
        until = self.clock.now() + (timedelta(seconds=seconds) if seconds else self.lease)
        try:
            with aws_errors("renewing the deploy lock"):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key=self._lock_key(),
                    UpdateExpression="SET #exp = :exp ADD #v :one",
                    ConditionExpression="deployment_id = :id",
                    ExpressionAttributeNames={"#exp": TTL_ATTRIBUTE, "#v": "version"},
                    ExpressionAttributeValues={
                        ":exp": {"N": str(int(until.timestamp()))},
                        ":id": {"S": deployment_id},
                        ":one": {"N": "1"},
                    },
                )
        except _Conditional:
            return False
        return True

    def release(self, deployment_id: str) -> bool:
        """Release the lock if ``deployment_id`` holds it."""
        try:
            with aws_errors("releasing the deploy lock"):
                self._call(
                    self.db.delete_item,
                    TableName=self.table,
                    Key=self._lock_key(),
                    ConditionExpression="deployment_id = :id",
                    ExpressionAttributeValues={":id": {"S": deployment_id}},
                )
        except _Conditional:
            return False
        return True

    def take_over(self, held: Lock) -> bool:
        """Delete ``held`` if it is still exactly that lease (same holder, not renewed since
        it was judged); False when it changed meanwhile."""
        try:
            with aws_errors("taking over the deploy lock"):
                self._call(
                    self.db.delete_item,
                    TableName=self.table,
                    Key=self._lock_key(),
                    ConditionExpression="deployment_id = :id AND "
                    "(attribute_not_exists(#v) OR #v = :v)",
                    ExpressionAttributeNames={"#v": "version"},
                    ExpressionAttributeValues={
                        ":id": {"S": held.deployment_id},
                        ":v": {"N": str(held.version)},
                    },
                )
        except _Conditional:
            return False
        return True

    def lock_item(self) -> Lock | None:
        """The lock item as it is, expired or not."""
        with aws_errors("reading the deploy lock"):
            item = self._call(
                self.db.get_item, TableName=self.table, Key=self._lock_key(), ConsistentRead=True
            ).get("Item")
        return _lock_from_item(item) if item else None

    def current_lock(self) -> Lock | None:
        """The lock if it is held and its lease has not run out (by this machine's clock)."""
        lock = self.lock_item()
        return lock if lock is not None and lock.expires_at >= self.clock.now() else None

    def break_lock(self) -> Lock | None:
        """Delete the lock whoever holds it; return what it was (expired or not)."""
        with aws_errors("breaking the deploy lock"):
            old = self._call(
                self.db.delete_item,
                TableName=self.table,
                Key=self._lock_key(),
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        return _lock_from_item(old) if old else None

    # Release tags and their images ---------------------------------------------------------
    def _tag_key(self, repository: str, tag: str) -> dict[str, Any]:
        return {"pk": {"S": f"TAG#{repository}:{tag}"}, "sk": {"S": "TAG"}}

    def tag_record(self, repository: str, tag: str) -> TagRecord | None:
        """What ``tag`` named when first deployed: one GetItem by key, whatever the history."""
        with aws_errors("reading the release tag's image"):
            item = self._call(
                self.db.get_item,
                TableName=self.table,
                Key=self._tag_key(repository, tag),
                ConsistentRead=True,
            ).get("Item")
        if not item:
            return None
        return TagRecord(
            tag=tag,
            digest=_s(item, "digest"),
            deployed_at=unstamp(_s(item, "deployed_at")),
            deployment=_s(item, "deployment"),
            moves=_strings(item, "moves"),
        )

    def remember_tag(
        self,
        repository: str,
        tag: str,
        digest: str,
        deployment: str,
        moved_from: TagRecord | None = None,
    ) -> None:
        """Record the image ``tag`` names as deployed now. The first record stays (a
        conditional put: a concurrent first deploy of the same tag keeps the earlier one);
        ``moved_from``: a move the person allowed replaces it, keeping the old digest."""
        now = self.clock.now()
        item: dict[str, Any] = {
            **self._tag_key(repository, tag),
            "digest": {"S": digest},
            "deployed_at": {"S": stamp(now)},
            "deployment": {"S": deployment},
        }
        if moved_from is None:
            condition = "attribute_not_exists(pk)"
            values: dict[str, Any] = {}
        else:
            moves = [*moved_from.moves, f"{moved_from.digest} at {stamp(moved_from.deployed_at)}"]
            item["moves"] = {"L": [{"S": m} for m in moves]}
            condition = "digest = :was"
            values = {":was": {"S": moved_from.digest}}
        try:
            with aws_errors("recording the release tag's image"):
                self._call(
                    self.db.put_item,
                    TableName=self.table,
                    Item=item,
                    ConditionExpression=condition,
                    **({"ExpressionAttributeValues": values} if values else {}),
                )
        except _Conditional:
            pass  # recorded by someone else meanwhile: the earlier record stands

    # The history ---------------------------------------------------------------------------
    def _history_pk(self) -> dict[str, str]:
        return {"S": f"HISTORY#{self.key}"}

    def record(self, rec: DeploymentRecord) -> None:
        item = self.record_item(rec)
        try:
            with aws_errors("writing the deployment history"):
                self._call(
                    self.db.put_item,
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk)",
                )
        except _Conditional:
            pass  # a retried put whose first answer was lost: ids are unique, it is ours

    def record_item(self, rec: DeploymentRecord) -> dict[str, Any]:
        """The item ``record`` writes for a new deployment (open: no outcome yet)."""
        item: dict[str, Any] = {
            "pk": self._history_pk(),
            "sk": {"S": rec.sort_key},
            "id": {"S": rec.id},
            "service": {"S": rec.service},
            "kind": {"S": rec.kind},
            "tag": {"S": rec.tag},
            "image": {"S": rec.image},
            "task_definition": {"S": rec.task_definition},
            "previous_task_definition": {"S": rec.previous_task_definition},
            "previous_tag": {"S": rec.previous_tag},
            "ecs_deployment_id": {"S": rec.ecs_deployment_id},
            "who": {"S": rec.who},
            "who_display": {"S": rec.who_display},
            "who_arn": {"S": rec.who_arn},
            "source": {"S": rec.source},
            "reason": {"S": rec.reason},
            "started_at": {"S": stamp(rec.started_at)},
            "message_ref": {"S": rec.message_ref},
            "digest": {"S": rec.digest},
            "previous_image": {"S": rec.previous_image},
            "previous_digest": {"S": rec.previous_digest},
            "previous_ecs_deployment_id": {"S": rec.previous_ecs_deployment_id},
            "rollback_of": {"S": rec.rollback_of},
            "approved_by": {"L": [{"S": who} for who in rec.approved_by]},
            "approval_request": {"S": rec.approval_request},
            "break_glass": {"S": rec.break_glass},
            "bypassed": {"L": [{"S": text} for text in rec.bypassed]},
        }
        for name in ("commit", "previous_commit"):
            value = getattr(rec, name)
            if value is not None:
                item[name] = {"S": value}
        if rec.follower and rec.follower_until is not None:  # followed from its first moment
            item["follower"] = {"S": rec.follower}
            item["follower_until"] = {"S": stamp(rec.follower_until)}
            item["follower_beat"] = {"N": str(rec.follower_beat)}
            item["starter"] = {"S": rec.follower}
        return item

    def set_ecs_deployment(self, rec: DeploymentRecord, ecs_id: str) -> DeploymentRecord:
        """Remember which ECS deployment ``rec`` started (known once UpdateService answered,
        or adopted from DescribeServices)."""
        with aws_errors("recording the ECS deployment id", changed=True):
            self._call(
                self.db.update_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                UpdateExpression="SET ecs_deployment_id = :e",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":e": {"S": ecs_id}},
            )
        return replace(rec, ecs_deployment_id=ecs_id)

    def claim_follower(
        self, rec: DeploymentRecord, follower: str, seconds: float, *, lapsed: bool = False
    ) -> bool:
        """Lease the following of ``rec`` to ``follower`` until now + ``seconds``; False when
        someone else holds it. It is free when nobody holds it, when it is ours, or when its
        ``follower_until`` is past by CLOCK_SKEW's margin. With ``lapsed`` the caller saw the
        lease ``rec`` carries (its holder and beat) stay unchanged for a whole lease: it is
        taken only if it is still exactly that one, so of several replicas one wins."""
        now = self.clock.now()
        until = now + timedelta(seconds=seconds)
        condition = (
            "attribute_exists(pk) AND (attribute_not_exists(follower) OR follower = :f"
            " OR follower_until < :stale"
        )
        values: dict[str, Any] = {
            ":f": {"S": follower},
            ":u": {"S": stamp(until)},
            ":stale": {"S": stamp(now - CLOCK_SKEW)},
            ":one": {"N": "1"},
        }
        if lapsed and rec.follower:
            condition += " OR (follower = :was AND "
            condition += (
                "follower_beat = :beat)"
                if rec.follower_beat
                else "attribute_not_exists(follower_beat))"
            )
            values[":was"] = {"S": rec.follower}
            if rec.follower_beat:
                values[":beat"] = {"N": str(rec.follower_beat)}
        try:
            with aws_errors("claiming the deployment's follower lease", changed=True):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET follower = :f, follower_until = :u "
                    "ADD follower_beat :one",
                    ConditionExpression=condition + ")",
                    ExpressionAttributeValues=values,
                )
        except _Conditional:
            return False
        return True

    def renew_follower(self, rec: DeploymentRecord, follower: str, seconds: float) -> bool:
        """Push ``follower``'s lease on ``rec`` out; False when it is no longer theirs."""
        until = self.clock.now() + timedelta(seconds=seconds)
        try:
            with aws_errors("renewing the deployment's follower lease", changed=True):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET follower_until = :u ADD follower_beat :one",
                    ConditionExpression="follower = :f",
                    ExpressionAttributeValues={
                        ":f": {"S": follower},
                        ":u": {"S": stamp(until)},
                        ":one": {"N": "1"},
                    },
                )
        except _Conditional:
            return False
        return True

    def release_follower(self, rec: DeploymentRecord, follower: str) -> bool:
        """Give up ``follower``'s lease on ``rec`` (another process may take it at once)."""
        try:
            with aws_errors("releasing the deployment's follower lease", changed=True):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="REMOVE follower, follower_until ADD follower_beat :one",
                    ConditionExpression="follower = :f",
                    ExpressionAttributeValues={":f": {"S": follower}, ":one": {"N": "1"}},
                )
        except _Conditional:
            return False
        return True

    def mark_replied(self, rec: DeploymentRecord, ids: frozenset[str]) -> None:
        """Its thread has replies for these ECS events and stopped tasks (``replied``)."""
        if not ids:
            return
        with aws_errors("marking the deployment's thread replies", changed=True):
            self._call(
                self.db.update_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                UpdateExpression="ADD replied :ids",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":ids": {"SS": sorted(ids)}},
            )

    # CI notices ----------------------------------------------------------------------------
    def _notice_key(self, notice: str) -> dict[str, Any]:
        return {"pk": {"S": f"NOTICE#{notice}"}, "sk": {"S": "NOTICE"}}

    def claim_ci_notice(self, notice: str, who: str, days: int = 30) -> bool:
        """Take a CI notice's Deploy button for ``who``: one conditional PutItem, so of
        several bot replicas (or clicks) one wins. The item expires after ``days`` (TTL)."""
        now = self.clock.now()
        try:
            with aws_errors("claiming the CI notice"):
                self._call(
                    self.db.put_item,
                    TableName=self.table,
                    Item={
                        **self._notice_key(notice),
                        "who": {"S": who},
                        "at": {"S": stamp(now)},
                        TTL_ATTRIBUTE: {"N": str(int((now + timedelta(days=days)).timestamp()))},
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
        except _Conditional:
            return False
        return True

    def release_ci_notice(self, notice: str, who: str) -> None:
        """The Deploy of a notice ``who`` claimed did not start: the button works again."""
        try:
            with aws_errors("releasing the CI notice"):
                self._call(
                    self.db.delete_item,
                    TableName=self.table,
                    Key=self._notice_key(notice),
                    ConditionExpression="who = :w",
                    ExpressionAttributeValues={":w": {"S": who}},
                )
        except _Conditional:
            pass

    def mark_aborted(self, rec: DeploymentRecord, who: str) -> DeploymentRecord | None:
        """Mark ``rec`` aborted by ``who`` (before ECS is asked to put the previous task
        definition back); None when it is settled or already being aborted (a record whose
        watch ended first, "still rolling out" or "unknown", may be aborted)."""
        at = self.clock.now()
        try:
            with aws_errors("recording the abort"):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET aborted_by = :w, aborted_at = :t",
                    ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(outcome)"
                    " OR outcome IN (:still, :unknown))"
                    " AND (attribute_not_exists(aborted_by) OR aborted_by = :empty)",
                    ExpressionAttributeValues={
                        ":w": {"S": who},
                        ":t": {"S": stamp(at)},
                        ":empty": {"S": ""},
                        ":still": {"S": Outcome.STILL_ROLLING_OUT.value},
                        ":unknown": {"S": Outcome.UNKNOWN.value},
                    },
                )
        except _Conditional:
            return None
        return replace(rec, aborted_by=who, aborted_at=at)

    def unmark_aborted(self, rec: DeploymentRecord) -> None:
        """ECS refused to put the previous task definition back: the abort did not happen."""
        with aws_errors("undoing the abort mark"):
            self._call(
                self.db.update_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                UpdateExpression="REMOVE aborted_by, aborted_at",
            )

    def set_abort_deployment(self, rec: DeploymentRecord, ecs_id: str) -> DeploymentRecord:
        """Remember the ECS deployment that puts the previous task definition back."""
        with aws_errors("recording the abort's ECS deployment", changed=True):
            self._call(
                self.db.update_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                UpdateExpression="SET abort_ecs_deployment_id = :e",
                ExpressionAttributeValues={":e": {"S": ecs_id}},
            )
        return replace(rec, abort_ecs_deployment_id=ecs_id)

    def forget(self, rec: DeploymentRecord) -> None:
        """Delete the record of a deployment ECS never heard of."""
        with aws_errors("removing a deployment that never started"):
            self._call(
                self.db.delete_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
            )

    def close(self, rec: DeploymentRecord, final: Snapshot) -> DeploymentRecord | None:
        """Close a record with its final snapshot; None if someone settled it first.

        A record closed STILL_ROLLING_OUT or UNKNOWN is not settled: closing it again with
        what ECS did in the end replaces that (and its message is shown again). The final
        snapshot is kept whole, so a transport that died before showing it can still show it
        after a restart (``final_snapshot``)."""
        assert final.outcome is not None
        finished = final.ended_at or self.clock.now()
        values = {
            "outcome": final.outcome.value,
            "outcome_reason": final.outcome_reason,
            "finished_at": stamp(finished),
            "rollback_tag": final.rollback_tag,
            "final": json.dumps(_snapshot_json(final)),
        }
        if final.ecs_deployment_id:
            values["ecs_deployment_id"] = final.ecs_deployment_id
        try:
            with aws_errors("closing the deployment record", changed=True):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET "
                    + ", ".join(f"#{k} = :{k}" for k in values)
                    + ", #shown = :no",
                    ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(#outcome)"
                    " OR #outcome IN (:still, :unknown))",
                    ExpressionAttributeNames={
                        **{f"#{k}": k for k in values},
                        "#shown": "shown",
                    },
                    ExpressionAttributeValues={
                        **{f":{k}": {"S": v} for k, v in values.items()},
                        ":no": {"BOOL": False},
                        ":still": {"S": Outcome.STILL_ROLLING_OUT.value},
                        ":unknown": {"S": Outcome.UNKNOWN.value},
                    },
                )
        except _Conditional:
            return None
        return replace(
            rec,
            outcome=final.outcome,
            outcome_reason=final.outcome_reason,
            finished_at=finished,
            rollback_tag=final.rollback_tag,
            final=final,
            ecs_deployment_id=final.ecs_deployment_id or rec.ecs_deployment_id,
            shown=False,
        )

    def get_record(self, sort_key: str) -> DeploymentRecord | None:
        """One record by its sort key (one consistent GetItem)."""
        with aws_errors("reading a deployment record"):
            item = self._call(
                self.db.get_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": sort_key}},
                ConsistentRead=True,
            ).get("Item")
        return _record_from_item(item) if item else None

    def mark_shown(self, rec: DeploymentRecord) -> None:
        """The transport showed the outcome where ``message_ref`` points: nothing to finish."""
        with aws_errors("marking the deployment's message final", changed=True):
            self._call(
                self.db.update_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                UpdateExpression="SET shown = :t",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )

    def claim_notice(self, rec: DeploymentRecord) -> bool:
        """Claim telling ``rec``'s requester its outcome: True once, for the first caller in
        any process (a conditional write), False after."""
        try:
            with aws_errors("claiming the requester's notice", changed=True):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET told = :t",
                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(told)",
                    ExpressionAttributeValues={":t": {"S": stamp(self.clock.now())}},
                )
        except _Conditional:
            return False
        return True

    def claim_post(self, rec: DeploymentRecord, poster: str, seconds: float) -> bool:
        """Claim posting the first message of ``rec``, which has none (a deployment from a
        terminal, from ``--no-wait``): True for one caller in any process until ``seconds``
        pass (then a poster that died before it posted is taken over); False when it has a
        message, or someone else claimed it."""
        now = self.clock.now()
        try:
            with aws_errors("claiming the deployment's message", changed=True):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET poster = :p, poster_until = :u",
                    ConditionExpression="attribute_exists(pk)"
                    " AND (attribute_not_exists(message_ref) OR message_ref = :empty)"
                    " AND (attribute_not_exists(poster_until) OR poster_until < :now"
                    " OR poster = :p)",
                    ExpressionAttributeValues={
                        ":p": {"S": poster},
                        ":u": {"S": stamp(now + timedelta(seconds=seconds))},
                        ":now": {"S": stamp(now - CLOCK_SKEW)},
                        ":empty": {"S": ""},
                    },
                )
        except _Conditional:
            return False
        return True

    def annotate(self, rec: DeploymentRecord, message_ref: str) -> DeploymentRecord:
        """Remember where a transport shows this deployment, so a restart can finish it."""
        with aws_errors("annotating the deployment record", changed=True):
            self._call(
                self.db.update_item,
                TableName=self.table,
                Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                UpdateExpression="SET message_ref = :m",
                ExpressionAttributeValues={":m": {"S": message_ref}},
            )
        return replace(rec, message_ref=message_ref)

    def history(self, limit: int = 10) -> list[DeploymentRecord]:
        """The most recent deployments, newest first."""
        with aws_errors("reading the deployment history"):
            items = self._call(
                self.db.query,
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND sk < :news",
                ExpressionAttributeValues={
                    ":pk": self._history_pk(),
                    ":news": {"S": NEWS_PREFIX},
                },
                ScanIndexForward=False,
                Limit=max(1, min(limit, 500)),
            ).get("Items", [])
        return [_record_from_item(item) for item in items]

    def history_between(
        self, since: datetime, until: datetime, *, page: int = 500
    ) -> list[DeploymentRecord]:
        """Every deployment started in [since, until), oldest first: a Query of this target's
        partition by sort-key range (the sort key begins with the start time), never a Scan,
        following ``LastEvaluatedKey`` page after page (a Query reads at most 1 MB a page:
        DynamoDB's Query API, "Paginating table query results")."""
        if until <= since:
            return []
        values = {
            ":pk": self._history_pk(),
            ":from": {"S": stamp(since)},
            # A record started at ``until`` sorts after ``<until>`` (``<until>#<id>``): excluded.
            ":to": {"S": stamp(until)},
        }
        records: list[DeploymentRecord] = []
        start: dict[str, Any] | None = None
        while True:
            with aws_errors("reading the deployment history"):
                answer = self._call(
                    self.db.query,
                    TableName=self.table,
                    KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
                    ExpressionAttributeValues=values,
                    Limit=page,
                    **({"ExclusiveStartKey": start} if start else {}),
                )
            records.extend(_record_from_item(item) for item in answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return records

    def stats_history(
        self, since: datetime, until: datetime, *, page: int = 5000
    ) -> tuple[list[DeploymentRecord], set[str]]:
        """What ``stats`` reads of every deployment started in [since, until), oldest first,
        and the ids of those read whole because they have no brief yet.

        One Query of the partition by sort-key range (never a Scan), asking for two attributes
        an item (``ProjectionExpression``): the sort key (start and id) and ``brief``, the few
        fields the four keys need, written on a settled record by the first ``stats`` that
        read it (``remember_brief``). A record without one (new, or open) is read whole,
        BatchGetItem 100 keys a call (DynamoDB's most). Fewer attributes is less to send and
        decode: what makes a year of history one quick read (BENCHMARKS.md)."""
        if until <= since:
            return [], set()
        values = {
            ":pk": self._history_pk(),
            ":from": {"S": stamp(since)},
            ":to": {"S": stamp(until)},
        }
        found: list[DeploymentRecord | None] = []
        missing: dict[str, int] = {}  # sort key -> its place in ``found``
        start: dict[str, Any] | None = None
        while True:
            with aws_errors("reading the deployment history"):
                answer = self._call(
                    self.db.query,
                    TableName=self.table,
                    KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
                    ProjectionExpression="sk, #brief",
                    ExpressionAttributeNames={"#brief": BRIEF_ATTRIBUTE},
                    ExpressionAttributeValues=values,
                    Limit=page,
                    **({"ExclusiveStartKey": start} if start else {}),
                )
            for item in answer.get("Items", []):
                rec = _record_from_brief(_s(item, "sk"), _s(item, BRIEF_ATTRIBUTE))
                if rec is None:
                    missing[_s(item, "sk")] = len(found)
                found.append(rec)
            start = answer.get("LastEvaluatedKey")
            if not start:
                break
        whole: set[str] = set()
        keys = list(missing)
        for at in range(0, len(keys), 100):
            pending: list[dict[str, Any]] = [
                {"pk": self._history_pk(), "sk": {"S": sk}} for sk in keys[at : at + 100]
            ]
            while pending:
                with aws_errors("reading the deployment history"):
                    answer = self._call(
                        self.db.batch_get_item,
                        RequestItems={self.table: {"Keys": pending}},
                    )
                for item in answer.get("Responses", {}).get(self.table, []):
                    rec = _record_from_item(item)
                    found[missing[_s(item, "sk")]] = rec
                    whole.add(rec.id)
                pending = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
        return [rec for rec in found if rec is not None], whole

    def cache_lead_inputs(
        self,
        rec: DeploymentRecord,
        *,
        shipped: Sequence[tuple[str, datetime]] | None = None,
        image_pushed_at: datetime | None = None,
    ) -> DeploymentRecord:
        """Keep on the record what lead time needs (the commits it shipped, its image's push
        time), so no later ``stats`` asks GitHub or ECR for it again, and (a settled record)
        its brief. One UpdateItem; only an existing record is changed."""
        sets: list[str] = []
        values: dict[str, Any] = {}
        if shipped is not None:
            sets.append("shipped = :shipped")
            values[":shipped"] = {"L": [{"S": f"{sha} {stamp(at)}"} for sha, at in shipped]}
            rec = replace(rec, shipped=tuple(shipped))
        if image_pushed_at is not None:
            sets.append("image_pushed_at = :pushed")
            values[":pushed"] = {"S": stamp(image_pushed_at)}
            rec = replace(rec, image_pushed_at=image_pushed_at)
        if rec.settled:
            sets.append("#brief = :brief")
            values[":brief"] = {"S": brief_of(rec)}
        if not sets:
            return rec
        try:
            with aws_errors("caching the deployment's commit times"):
                self._call(
                    self.db.update_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": rec.sort_key}},
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues=values,
                    **(
                        {"ExpressionAttributeNames": {"#brief": BRIEF_ATTRIBUTE}}
                        if rec.settled
                        else {}
                    ),
                )
        except _Conditional:
            pass  # the record is gone (expired): nothing to cache on
        return rec

    def remember_brief(self, rec: DeploymentRecord) -> None:
        """Write a settled record's brief (``stats_history`` then reads two attributes of it)."""
        if rec.settled:
            self.cache_lead_inputs(rec)

    def history_and_news(self, limit: int = 20) -> tuple[list[DeploymentRecord], list[News]]:
        """A bot's periodic read, one Query: the ``limit`` most recent deployments (newest
        first) and the news waiting to be announced (oldest first; NEWS_READ at most)."""
        with aws_errors("reading the deployment history"):
            items = self._call(
                self.db.query,
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": self._history_pk()},
                ScanIndexForward=False,
                Limit=max(1, min(limit, 500)) + NEWS_READ,
            ).get("Items", [])
        news = [_news_from_item(i) for i in items if _s(i, "sk").startswith(NEWS_PREFIX)]
        records = [_record_from_item(i) for i in items if not _s(i, "sk").startswith(NEWS_PREFIX)]
        now = self.clock.now()
        return records[:limit], [n for n in reversed(news) if now - n.at < NEWS_KEPT]

    # News for the channel ------------------------------------------------------------------
    def add_news(self, news: News) -> News:
        """Record ``news`` for a bot to announce (kept NEWS_KEPT; one PutItem)."""
        news = replace(news, sort_key=f"{NEWS_PREFIX}{stamp(news.at)}#{secrets.token_hex(3)}")
        keep = int((news.at + NEWS_KEPT).timestamp())
        with aws_errors("recording the news for the channel"):
            self._call(
                self.db.put_item,
                TableName=self.table,
                Item=_news_item(self._history_pk(), news, keep),
            )
        return news

    def take_news(self, news: News) -> bool:
        """Take ``news`` to announce it: True for exactly one caller (a conditional delete),
        so of several bot replicas one announces it."""
        try:
            with aws_errors("taking the news to announce"):
                self._call(
                    self.db.delete_item,
                    TableName=self.table,
                    Key={"pk": self._history_pk(), "sk": {"S": news.sort_key}},
                    ConditionExpression="attribute_exists(pk)",
                )
        except _Conditional:
            return False
        return True

    def put_back_news(self, news: News) -> None:
        """Slack did not take the announcement: the next pass (of any replica) tries again."""
        keep = int((news.at + NEWS_KEPT).timestamp())
        with aws_errors("putting the news back"):
            self._call(
                self.db.put_item,
                TableName=self.table,
                Item=_news_item(self._history_pk(), news, keep),
            )

    # ECS deployments started outside deploybot -----------------------------------------------
    def claim_outside_report(self, ecs_deployment_id: str, who: str, days: int = 30) -> bool:
        """Claim reporting an ECS deployment no record explains: True once, for the first
        caller in any process (one conditional PutItem; the item expires after ``days``)."""
        now = self.clock.now()
        try:
            with aws_errors("claiming the report of an outside deployment"):
                self._call(
                    self.db.put_item,
                    TableName=self.table,
                    Item={
                        "pk": {"S": f"OUTSIDE#{self.key}"},
                        "sk": {"S": ecs_deployment_id},
                        "who": {"S": who},
                        "at": {"S": stamp(now)},
                        TTL_ATTRIBUTE: {"N": str(int((now + timedelta(days=days)).timestamp()))},
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
        except _Conditional:
            return False
        return True

    def get(self, deployment_id: str, limit: int = 200) -> DeploymentRecord | None:
        return next((r for r in self.history(limit) if r.id == deployment_id), None)

    def open_records(self, limit: int = 50) -> list[DeploymentRecord]:
        return [r for r in self.history(limit) if r.open]

    def transact(self, items: list[dict[str, Any]]) -> None:
        """One TransactWriteItems: all of ``items`` are written, or none (Cancelled, with
        each item's reason, when a condition failed or another transaction conflicted)."""
        try:
            self._call(self.db.transact_write_items, TransactItems=items)
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                raise Cancelled(exc.response.get("CancellationReasons", [])) from exc
            raise

    def call(self, method: Any, **kwargs: Any) -> dict[str, Any]:
        """One DynamoDB call: a failed condition raises ConditionFailed, a missing table
        NotConfigured (bot/deploy/guards.py shares the table and these rules)."""
        return self._call(method, **kwargs)

    def _call(self, method: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return dict(method(**kwargs))
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                raise _Conditional(exc.response.get("Item")) from exc
            if code == "ResourceNotFoundException":
                raise NotConfigured(
                    f"The deploy table {self.table} does not exist. Create the bot's stack "
                    "(`make bot-infra`) or set DEPLOY_TABLE."
                ) from exc
            raise


class _Conditional(Exception):
    """A condition expression did not hold (internal to the ledger); ``item`` is the item
    that failed it, when the call asked for it."""

    def __init__(self, item: dict[str, Any] | None = None) -> None:
        super().__init__("conditional check failed")
        self.item = item


class Cancelled(Exception):
    """A transaction was cancelled; ``reasons`` are DynamoDB's, one per item in order."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons

    def failed(self) -> tuple[int, dict[str, Any] | None] | None:
        """The first item whose condition failed, and the item as it was (when asked for)."""
        for index, reason in enumerate(self.reasons):
            if reason.get("Code") == "ConditionalCheckFailed":
                return index, reason.get("Item")
        return None


@dataclass(frozen=True)
class Precondition:
    """An item of the table that must be as ``condition`` says for a write to go, checked in
    the same transaction (a ConditionCheck): "no freeze item", "no deploy queued"."""

    name: str  # what it guards, for the caller: "freeze", "queue"
    key: dict[str, Any]
    condition: str
    values: dict[str, Any] = field(default_factory=dict)

    def as_item(self, table: str) -> dict[str, Any]:
        check: dict[str, Any] = {
            "TableName": table,
            "Key": self.key,
            "ConditionExpression": self.condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if self.values:
            check["ExpressionAttributeValues"] = self.values
        return {"ConditionCheck": check}


class PreconditionFailed(Exception):
    """A Precondition did not hold when the lock was to be taken; ``item`` is what failed it."""

    def __init__(self, check: Precondition, item: dict[str, Any] | None) -> None:
        super().__init__(f"{check.name} check failed")
        self.check = check
        self.item = item


def _lock_item(key: dict[str, Any], lock: Lock) -> dict[str, Any]:
    return {
        **key,
        "holder": {"S": lock.holder},
        "source": {"S": lock.source},
        "tag": {"S": lock.tag},
        "deployment_id": {"S": lock.deployment_id},
        "acquired_at": {"S": stamp(lock.acquired_at)},
        "record_sk": {"S": lock.record_sk},
        "version": {"N": str(lock.version)},
        TTL_ATTRIBUTE: {"N": str(int(lock.expires_at.timestamp()))},
    }


def _lock_from_item(item: dict[str, Any]) -> Lock:
    return Lock(
        holder=item["holder"]["S"],
        source=item.get("source", {}).get("S", ""),
        tag=item["tag"]["S"],
        deployment_id=item["deployment_id"]["S"],
        acquired_at=unstamp(item["acquired_at"]["S"]),
        expires_at=datetime.fromtimestamp(int(item[TTL_ATTRIBUTE]["N"]), UTC),
        record_sk=item.get("record_sk", {}).get("S", ""),
        version=int(item.get("version", {}).get("N", "0")),
    )


def _snapshot_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "deployment_id": snap.deployment_id,
        "ecs_deployment_id": snap.ecs_deployment_id,
        "at": stamp(snap.at),
        "elapsed": snap.elapsed,
        "rollout_state": snap.rollout_state,
        "rollout_reason": snap.rollout_reason,
        "desired": snap.desired,
        "pending": snap.pending,
        "running": snap.running,
        "failed": snap.failed,
        "outcome": snap.outcome.value if snap.outcome else "",
        "outcome_reason": snap.outcome_reason,
        "rollback_deployment": snap.rollback_deployment,
        "rollback_task_definition": snap.rollback_task_definition,
        "rollback_tag": snap.rollback_tag,
        "note": snap.note,
        "log_url": snap.log_url,
    }


def _snapshot_from_json(text: str) -> Snapshot | None:
    if not text:
        return None
    data = json.loads(text)
    data["at"] = unstamp(data["at"])
    data["outcome"] = Outcome(data["outcome"]) if data["outcome"] else None
    known = Snapshot.__dataclass_fields__
    return Snapshot(**{k: v for k, v in data.items() if k in known})


def _s(item: dict[str, Any], key: str) -> str:
    return str(item.get(key, {}).get("S", ""))


def _record_from_item(item: dict[str, Any]) -> DeploymentRecord:
    finished = _s(item, "finished_at")
    outcome = _s(item, "outcome")
    return DeploymentRecord(
        id=_s(item, "id"),
        service=_s(item, "service"),
        kind=_s(item, "kind"),
        tag=_s(item, "tag"),
        image=_s(item, "image"),
        task_definition=_s(item, "task_definition"),
        previous_task_definition=_s(item, "previous_task_definition"),
        previous_tag=_s(item, "previous_tag"),
        ecs_deployment_id=_s(item, "ecs_deployment_id"),
        who=_s(item, "who"),
        who_display=_s(item, "who_display"),
        who_arn=_s(item, "who_arn"),
        source=_s(item, "source"),
        reason=_s(item, "reason"),
        started_at=unstamp(_s(item, "started_at")),
        finished_at=unstamp(finished) if finished else None,
        outcome=Outcome(outcome) if outcome else None,
        outcome_reason=_s(item, "outcome_reason"),
        rollback_tag=_s(item, "rollback_tag"),
        message_ref=_s(item, "message_ref"),
        final=_snapshot_from_json(_s(item, "final")),
        shown=bool(item.get("shown", {}).get("BOOL", False)),
        digest=_s(item, "digest"),
        previous_image=_s(item, "previous_image"),
        previous_digest=_s(item, "previous_digest"),
        previous_ecs_deployment_id=_s(item, "previous_ecs_deployment_id"),
        rollback_of=_s(item, "rollback_of"),
        commit=item["commit"]["S"] if "commit" in item else None,
        previous_commit=item["previous_commit"]["S"] if "previous_commit" in item else None,
        follower=_s(item, "follower"),
        follower_until=unstamp(_s(item, "follower_until")) if _s(item, "follower_until") else None,
        follower_beat=int(item.get("follower_beat", {}).get("N", "0")),
        starter=_s(item, "starter"),
        replied=frozenset(item.get("replied", {}).get("SS", ())),
        approved_by=_strings(item, "approved_by"),
        approval_request=_s(item, "approval_request"),
        break_glass=_s(item, "break_glass"),
        bypassed=_strings(item, "bypassed"),
        aborted_by=_s(item, "aborted_by"),
        aborted_at=unstamp(_s(item, "aborted_at")) if _s(item, "aborted_at") else None,
        abort_ecs_deployment_id=_s(item, "abort_ecs_deployment_id"),
        shipped=_shipped(item),
        image_pushed_at=unstamp(_s(item, "image_pushed_at"))
        if _s(item, "image_pushed_at")
        else None,
    )


# The attribute holding what ``stats`` reads of a settled record (``brief_of``).
BRIEF_ATTRIBUTE = "brief"


def brief_of(rec: DeploymentRecord) -> str:
    """The fields the four keys read (bot/deploy/stats.py), as compact JSON; the id and the
    start are in the sort key. Only a settled record has one: it no longer changes."""
    return json.dumps(
        {
            "k": rec.kind,
            "o": rec.outcome.value if rec.outcome else "",
            "f": stamp(rec.finished_at) if rec.finished_at else "",
            "d": rec.digest,
            "r": rec.rollback_of,
            "c": rec.commit,
            "p": rec.previous_commit,
            "s": [[sha, stamp(at)] for sha, at in rec.shipped] if rec.shipped is not None else None,
            "u": stamp(rec.image_pushed_at) if rec.image_pushed_at else "",
        },
        separators=(",", ":"),
    )


def _record_from_brief(sort_key: str, brief: str) -> DeploymentRecord | None:
    """The record a brief tells of (the fields stats reads; the rest empty); None without one
    (or with one that cannot be read: the record is read whole)."""
    if not brief:
        return None
    started, _, deployment_id = sort_key.partition("#")
    try:
        data = json.loads(brief)
        shipped = data.get("s")
        return DeploymentRecord(
            id=deployment_id,
            service="",
            kind=str(data["k"]),
            tag="",
            image="",
            task_definition="",
            previous_task_definition="",
            previous_tag="",
            ecs_deployment_id="",
            who="",
            who_display="",
            source="",
            reason="",
            started_at=unstamp(started),
            finished_at=unstamp(data["f"]) if data.get("f") else None,
            outcome=Outcome(data["o"]) if data.get("o") else None,
            digest=str(data.get("d") or ""),
            rollback_of=str(data.get("r") or ""),
            commit=data.get("c"),
            previous_commit=data.get("p"),
            shipped=tuple((str(sha), unstamp(at)) for sha, at in shipped)
            if shipped is not None
            else None,
            image_pushed_at=unstamp(data["u"]) if data.get("u") else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def _shipped(item: dict[str, Any]) -> tuple[tuple[str, datetime], ...] | None:
    """``shipped``: a list of "<sha> <committed at>" strings; None when not stored."""
    if "shipped" not in item:
        return None
    found: list[tuple[str, datetime]] = []
    for value in item["shipped"].get("L", []):
        sha, _, at = str(value.get("S", "")).partition(" ")
        if sha and at:
            found.append((sha, unstamp(at)))
    return tuple(found)


def _news_item(pk: dict[str, str], news: News, keep: int) -> dict[str, Any]:
    return {
        "pk": pk,
        "sk": {"S": news.sort_key},
        "kind": {"S": news.kind},
        "who": {"S": news.who},
        "who_arn": {"S": news.aws_identity},
        "at": {"S": stamp(news.at)},
        "reason": {"S": news.reason},
        "deployment_id": {"S": news.deployment_id},
        "tag": {"S": news.tag},
        "detail": {"S": news.detail},
        TTL_ATTRIBUTE: {"N": str(keep)},
    }


def _news_from_item(item: dict[str, Any]) -> News:
    return News(
        kind=_s(item, "kind"),
        who=_s(item, "who"),
        at=unstamp(_s(item, "at")),
        aws_identity=_s(item, "who_arn"),
        reason=_s(item, "reason"),
        deployment_id=_s(item, "deployment_id"),
        tag=_s(item, "tag"),
        detail=_s(item, "detail"),
        sort_key=_s(item, "sk"),
    )


def _strings(item: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(v.get("S", "")) for v in item.get(key, {}).get("L", []))


# For the other items of the table (bot/deploy/guards.py): the same conditions.
ConditionFailed = _Conditional
