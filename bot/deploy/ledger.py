"""The ledger: a target's lock, its deployment history, the news for its channel and the
claims that make one process of many do a thing once. A repository on the deploy table
(bot/deploy/table.py says how each is stored).

The lock is taken with one conditional put, or (a change: Engine.start) one TransactWriteItems
holding that put and the checks that must hold with it (no freeze, no queued deploy).
A record carries the lease of the process that follows it to its end (``follower``,
``follower_until``, ``follower_beat``), so several bot replicas on one table follow each
deployment once.

Every write that could race another process is conditional, so closing, releasing and
taking over are idempotent: whoever reconciles a record with ECS first wins, the others'
writes fail their condition and change nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.aws import AwsClient
from bot.deploy.records import (
    CLOCK_SKEW,
    DeploymentRecord,
    Lock,
    News,
    Requester,
    TagRecord,
    stamp,
)
from bot.deploy.rollout import Outcome, Snapshot
from bot.deploy.table import (
    BRIEF_ATTRIBUTE,
    NEWS_PREFIX,
    TTL_ATTRIBUTE,
    Cancelled,
    ConditionFailed,
    Keys,
    Precondition,
    PreconditionFailed,
    Table,
    brief_of,
    expiry,
    lock_from_item,
    lock_item,
    news_from_item,
    news_item,
    record_from_brief,
    record_from_item,
    record_item,
    shipped_list,
    snapshot_json,
    tag_from_item,
    text,
)
from bot.errors import DeployError, LockHeld

log = logging.getLogger("deploybot.engine")

# How long news waits for a bot to announce it (DynamoDB's TTL removes it after that).
NEWS_KEPT = timedelta(days=1)
# News read beside the records in a bot's pass, at most: what waits longer is read next pass.
NEWS_READ = 10
# Settled or being closed: the outcomes a later close may not replace, as a condition's values.
_UNSETTLED = {
    ":still": {"S": Outcome.STILL_ROLLING_OUT.value},
    ":unknown": {"S": Outcome.UNKNOWN.value},
}


class Ledger:
    """The lock and the history of one service."""

    def __init__(self, aws: AwsClient, lease_seconds: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.table = Table(aws)
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    @property
    def keys(self) -> Keys:
        return self.table.keys

    @property
    def key(self) -> str:
        """``cluster/service``: the target whose items these are."""
        return self.table.keys.scope

    # The lock ------------------------------------------------------------------------------
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
        item = lock_item(self.keys.lock(), lock)
        # The holder comes back with the refusal: DynamoDB's PutItem returns the item that
        # failed the condition with ALL_OLD (API_PutItem.html,
        # ReturnValuesOnConditionCheckFailure); a transaction's cancellation reasons carry it
        # the same way (API_TransactWriteItems.html, CancellationReasons).
        try:
            if checks:
                self.table.transact(
                    [
                        *(self.table.check_part(c) for c in checks),
                        self.table.put_part(item, "attribute_not_exists(pk)", with_failed=True),
                    ],
                    "taking the deploy lock",
                )
            else:
                self.table.put(
                    item,
                    "taking the deploy lock",
                    condition="attribute_not_exists(pk)",
                    with_failed=True,
                )
        except Cancelled as cancelled:
            failed = cancelled.failed()
            if failed is not None and failed[0] < len(checks):
                raise PreconditionFailed(checks[failed[0]], failed[1]) from None
            return self._refused(failed[1] if failed is not None else None, deployment_id, tag, now)
        except ConditionFailed as held:
            # Our own put, applied on an attempt whose answer was lost and then retried by
            # botocore, fails its condition on our own lock: it is ours (a deployment id is
            # never reused), not a lock held by someone else (#31, the randomized test).
            return self._refused(held.item, deployment_id, tag, now)
        return True, lock

    def _refused(
        self, item: dict[str, Any] | None, deployment_id: str, tag: str, now: datetime
    ) -> tuple[bool, Lock]:
        """A refused lock put: the lock that failed it (ours when an applied attempt's answer
        was lost); when the refusal named no holder, the lock as it is now, or LockHeld when a
        conflicting transaction or a release left none."""
        found = lock_from_item(item) if item else self.lock_item()
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
            self.table.update(
                self.keys.lock(),
                "renewing the deploy lock",
                "SET #exp = :exp ADD #v :one",
                condition="deployment_id = :id",
                names={"#exp": TTL_ATTRIBUTE, "#v": "version"},
                values={":exp": expiry(until), ":id": {"S": deployment_id}, ":one": {"N": "1"}},
            )
        except ConditionFailed:
            return False
        return True

    def release(self, deployment_id: str) -> bool:
        """Release the lock if ``deployment_id`` holds it."""
        try:
            self.table.delete(
                self.keys.lock(),
                "releasing the deploy lock",
                condition="deployment_id = :id",
                values={":id": {"S": deployment_id}},
            )
        except ConditionFailed:
            return False
        return True

    def take_over(self, held: Lock) -> bool:
        """Delete ``held`` if it is still exactly that lease (same holder, not renewed since
        it was judged); False when it changed meanwhile."""
        try:
            self.table.delete(
                self.keys.lock(),
                "taking over the deploy lock",
                condition="deployment_id = :id AND (attribute_not_exists(#v) OR #v = :v)",
                names={"#v": "version"},
                values={":id": {"S": held.deployment_id}, ":v": {"N": str(held.version)}},
            )
        except ConditionFailed:
            return False
        return True

    def lock_item(self) -> Lock | None:
        """The lock item as it is, expired or not."""
        item = self.table.get(self.keys.lock(), "reading the deploy lock")
        return lock_from_item(item) if item else None

    def current_lock(self) -> Lock | None:
        """The lock if it is held and its lease has not run out (by this machine's clock)."""
        lock = self.lock_item()
        return lock if lock is not None and lock.expires_at >= self.clock.now() else None

    def break_lock(self) -> Lock | None:
        """Delete the lock whoever holds it; return what it was (expired or not)."""
        old = self.table.delete(self.keys.lock(), "breaking the deploy lock", old=True)
        return lock_from_item(old) if old else None

    # Release tags and their images ---------------------------------------------------------
    def tag_record(self, repository: str, tag: str) -> TagRecord | None:
        """What ``tag`` named when first deployed: one GetItem by key, whatever the history."""
        item = self.table.get(Keys.tag(repository, tag), "reading the release tag's image")
        return tag_from_item(tag, item) if item else None

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
        item: dict[str, Any] = {
            **Keys.tag(repository, tag),
            "digest": {"S": digest},
            "deployed_at": {"S": stamp(self.clock.now())},
            "deployment": {"S": deployment},
        }
        condition, values = "attribute_not_exists(pk)", {}
        if moved_from is not None:
            moves = [*moved_from.moves, f"{moved_from.digest} at {stamp(moved_from.deployed_at)}"]
            item["moves"] = {"L": [{"S": m} for m in moves]}
            condition, values = "digest = :was", {":was": {"S": moved_from.digest}}
        # Recorded by someone else meanwhile: the earlier record stands.
        try:
            self.table.put(
                item, "recording the release tag's image", condition=condition, values=values
            )
        except ConditionFailed:
            pass
        except DeployError as exc:
            # No answer (a read timeout is not retried): DynamoDB may have applied it. Read
            # once; whatever it says, the deploy goes on. This memory serves the moved-tag
            # guard of later deploys, it is not the deploy's record: without it, the next
            # deploy of the tag records what the tag names then.
            try:
                kept = self.tag_record(repository, tag)
            except DeployError:
                kept = None
            if kept is None or kept.digest != digest:
                log.warning(
                    "the image of release tag %s is not recorded (%s): the moved-tag check "
                    "of its next deploy starts from what it names then",
                    tag,
                    exc.message,
                )

    # The history ---------------------------------------------------------------------------
    def _update(
        self,
        rec: DeploymentRecord,
        doing: str,
        expression: str,
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
        changed: bool = True,
    ) -> bool:
        """One UpdateItem of ``rec``'s item; False when ``condition`` did not hold."""
        try:
            self.table.update(
                self.keys.record(rec.sort_key),
                doing,
                expression,
                condition=condition,
                names=names,
                values=values,
                changed=changed,
            )
        except ConditionFailed:
            return False
        return True

    def record(self, rec: DeploymentRecord) -> None:
        # False: a retried put whose first answer was lost (ids are unique: it is ours).
        try:
            self.table.put_new(
                record_item(self.keys.record(rec.sort_key), rec), "writing the deployment history"
            )
        except DeployError:
            # No answer at all (the read timed out, every retry too): DynamoDB may have
            # applied the put. Asked once, consistently: a record that is there is ours, and
            # the start goes on; one that is not, or no answer again, fails the start.
            if self.get_record(rec.sort_key) is None:
                raise

    def set_ecs_deployment(self, rec: DeploymentRecord, ecs_id: str) -> DeploymentRecord:
        """Remember which ECS deployment ``rec`` started (known once UpdateService answered,
        or adopted from DescribeServices)."""
        self.table.update(
            self.keys.record(rec.sort_key),
            "recording the ECS deployment id",
            "SET ecs_deployment_id = :e",
            condition="attribute_exists(pk)",
            values={":e": {"S": ecs_id}},
            changed=True,
        )
        return replace(rec, ecs_deployment_id=ecs_id)

    def set_service_deployment(self, rec: DeploymentRecord, arn: str) -> DeploymentRecord:
        """Remember ``rec``'s service deployment (ECS's own record of it, #26): found right
        after UpdateService, or by any later reader when its answer was lost. Written once:
        a second finder's write changes nothing, and the ARN the table has is returned."""
        written = self._update(
            rec,
            "recording the service deployment",
            "SET service_deployment_arn = :a",
            condition="attribute_exists(pk) AND (attribute_not_exists(service_deployment_arn)"
            " OR service_deployment_arn = :empty OR service_deployment_arn = :a)",
            values={":a": {"S": arn}, ":empty": {"S": ""}},
        )
        if not written:
            fresh = self.get_record(rec.sort_key)
            if fresh is not None and fresh.service_deployment_arn:
                return replace(rec, service_deployment_arn=fresh.service_deployment_arn)
        return replace(rec, service_deployment_arn=arn)

    def claim_follower(
        self, rec: DeploymentRecord, follower: str, seconds: float, *, lapsed: bool = False
    ) -> bool:
        """Lease the following of ``rec`` to ``follower`` until now + ``seconds``; False when
        someone else holds it. It is free when nobody holds it, when it is ours, or when its
        ``follower_until`` is past by CLOCK_SKEW's margin. With ``lapsed`` the caller saw the
        lease ``rec`` carries (its holder and beat) stay unchanged for a whole lease: it is
        taken only if it is still exactly that one, so of several replicas one wins."""
        now = self.clock.now()
        condition = (
            "attribute_exists(pk) AND (attribute_not_exists(follower) OR follower = :f"
            " OR follower_until < :stale"
        )
        values: dict[str, Any] = {
            ":f": {"S": follower},
            ":u": {"S": stamp(now + timedelta(seconds=seconds))},
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
        return self._update(
            rec,
            "claiming the deployment's follower lease",
            "SET follower = :f, follower_until = :u ADD follower_beat :one",
            condition=condition + ")",
            values=values,
        )

    def renew_follower(self, rec: DeploymentRecord, follower: str, seconds: float) -> bool:
        """Push ``follower``'s lease on ``rec`` out; False when it is no longer theirs."""
        until = self.clock.now() + timedelta(seconds=seconds)
        return self._update(
            rec,
            "renewing the deployment's follower lease",
            "SET follower_until = :u ADD follower_beat :one",
            condition="follower = :f",
            values={":f": {"S": follower}, ":u": {"S": stamp(until)}, ":one": {"N": "1"}},
        )

    def release_follower(self, rec: DeploymentRecord, follower: str) -> bool:
        """Give up ``follower``'s lease on ``rec`` (another process may take it at once)."""
        return self._update(
            rec,
            "releasing the deployment's follower lease",
            "REMOVE follower, follower_until ADD follower_beat :one",
            condition="follower = :f",
            values={":f": {"S": follower}, ":one": {"N": "1"}},
        )

    def mark_replied(self, rec: DeploymentRecord, ids: frozenset[str]) -> None:
        """Its thread has replies for these ECS events and stopped tasks (``replied``)."""
        if not ids:
            return
        self.table.update(
            self.keys.record(rec.sort_key),
            "marking the deployment's thread replies",
            "ADD replied :ids",
            condition="attribute_exists(pk)",
            values={":ids": {"SS": sorted(ids)}},
            changed=True,
        )

    # CI notices ----------------------------------------------------------------------------
    def claim_ci_notice(self, notice: str, who: str, days: int = 30) -> bool:
        """Take a CI notice's Deploy button for ``who``: one conditional PutItem, so of
        several bot replicas (or clicks) one wins. The item expires after ``days`` (TTL)."""
        now = self.clock.now()
        item = {
            **Keys.notice(notice),
            "who": {"S": who},
            "at": {"S": stamp(now)},
            TTL_ATTRIBUTE: expiry(now + timedelta(days=days)),
        }
        return self.table.put_new(item, "claiming the CI notice")

    def release_ci_notice(self, notice: str, who: str) -> None:
        """The Deploy of a notice ``who`` claimed did not start: the button works again."""
        with contextlib.suppress(ConditionFailed):
            self.table.delete(
                Keys.notice(notice),
                "releasing the CI notice",
                condition="who = :w",
                values={":w": {"S": who}},
            )

    def mark_aborted(self, rec: DeploymentRecord, who: str) -> DeploymentRecord | None:
        """Mark ``rec`` aborted by ``who`` (before ECS is asked to put the previous task
        definition back); None when it is settled or already being aborted (a record whose
        watch ended first, "still rolling out" or "unknown", may be aborted)."""
        at = self.clock.now()
        marked = self._update(
            rec,
            "recording the abort",
            "SET aborted_by = :w, aborted_at = :t",
            condition="attribute_exists(pk) AND (attribute_not_exists(outcome)"
            " OR outcome IN (:still, :unknown))"
            " AND (attribute_not_exists(aborted_by) OR aborted_by = :empty)",
            values={":w": {"S": who}, ":t": {"S": stamp(at)}, ":empty": {"S": ""}, **_UNSETTLED},
            changed=False,
        )
        return replace(rec, aborted_by=who, aborted_at=at) if marked else None

    def unmark_aborted(self, rec: DeploymentRecord) -> None:
        """ECS refused to put the previous task definition back: the abort did not happen."""
        key = self.keys.record(rec.sort_key)
        self.table.update(key, "undoing the abort mark", "REMOVE aborted_by, aborted_at, abort_via")

    def set_abort_deployment(self, rec: DeploymentRecord, ecs_id: str) -> DeploymentRecord:
        """Remember the ECS deployment that puts the previous task definition back."""
        self.table.update(
            self.keys.record(rec.sort_key),
            "recording the abort's ECS deployment",
            "SET abort_ecs_deployment_id = :e",
            values={":e": {"S": ecs_id}},
            changed=True,
        )
        return replace(rec, abort_ecs_deployment_id=ecs_id)

    def set_abort_via(self, rec: DeploymentRecord, via: str) -> DeploymentRecord:
        """Remember how the abort asked ECS (records.ABORT_BY_STOP or ABORT_BY_UPDATE)."""
        self.table.update(
            self.keys.record(rec.sort_key),
            "recording how the abort asked ECS",
            "SET abort_via = :v",
            values={":v": {"S": via}},
            changed=True,
        )
        return replace(rec, abort_via=via)

    def forget(self, rec: DeploymentRecord) -> None:
        """Delete the record of a deployment ECS never heard of."""
        self.table.delete(
            self.keys.record(rec.sort_key), "removing a deployment that never started"
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
            "final": snapshot_json(final),
        }
        if final.ecs_deployment_id:
            values["ecs_deployment_id"] = final.ecs_deployment_id
        # ECS's own word beside ours (#26): its status, and the service deployment it is of.
        values["ecs_status"] = final.ecs_status
        arn = str((final.service_deployment or {}).get("serviceDeploymentArn", ""))
        if arn:
            values["service_deployment_arn"] = arn
        closed = self._update(
            rec,
            "closing the deployment record",
            "SET " + ", ".join(f"#{k} = :{k}" for k in values) + ", #shown = :no",
            condition="attribute_exists(pk) AND (attribute_not_exists(#outcome)"
            " OR #outcome IN (:still, :unknown))",
            names={**{f"#{k}": k for k in values}, "#shown": "shown"},
            values={
                **{f":{k}": {"S": v} for k, v in values.items()},
                ":no": {"BOOL": False},
                **_UNSETTLED,
            },
        )
        if not closed:
            return None
        return replace(
            rec,
            outcome=final.outcome,
            outcome_reason=final.outcome_reason,
            finished_at=finished,
            rollback_tag=final.rollback_tag,
            final=final,
            ecs_deployment_id=final.ecs_deployment_id or rec.ecs_deployment_id,
            service_deployment_arn=arn or rec.service_deployment_arn,
            ecs_status=final.ecs_status,
            shown=False,
        )

    def get_record(self, sort_key: str) -> DeploymentRecord | None:
        """One record by its sort key (one consistent GetItem)."""
        item = self.table.get(self.keys.record(sort_key), "reading a deployment record")
        return record_from_item(item) if item else None

    def mark_shown(self, rec: DeploymentRecord) -> None:
        """The transport showed the outcome where ``message_ref`` points: nothing to finish."""
        self.table.update(
            self.keys.record(rec.sort_key),
            "marking the deployment's message final",
            "SET shown = :t",
            values={":t": {"BOOL": True}},
            changed=True,
        )

    def claim_notice(self, rec: DeploymentRecord) -> bool:
        """Claim telling ``rec``'s requester its outcome: True once, for the first caller in
        any process (a conditional write), False after."""
        return self._update(
            rec,
            "claiming the requester's notice",
            "SET told = :t",
            condition="attribute_exists(pk) AND attribute_not_exists(told)",
            values={":t": {"S": stamp(self.clock.now())}},
        )

    def claim_post(self, rec: DeploymentRecord, poster: str, seconds: float) -> bool:
        """Claim posting the first message of ``rec``, which has none (a deployment from a
        terminal, from ``--no-wait``): True for one caller in any process until ``seconds``
        pass (then a poster that died before it posted is taken over); False when it has a
        message, or someone else claimed it."""
        now = self.clock.now()
        return self._update(
            rec,
            "claiming the deployment's message",
            "SET poster = :p, poster_until = :u",
            condition="attribute_exists(pk)"
            " AND (attribute_not_exists(message_ref) OR message_ref = :empty)"
            " AND (attribute_not_exists(poster_until) OR poster_until < :now"
            " OR poster = :p)",
            values={
                ":p": {"S": poster},
                ":u": {"S": stamp(now + timedelta(seconds=seconds))},
                ":now": {"S": stamp(now - CLOCK_SKEW)},
                ":empty": {"S": ""},
            },
        )

    def annotate(self, rec: DeploymentRecord, message_ref: str) -> DeploymentRecord:
        """Remember where a transport shows this deployment, so a restart can finish it."""
        self.table.update(
            self.keys.record(rec.sort_key),
            "annotating the deployment record",
            "SET message_ref = :m",
            values={":m": {"S": message_ref}},
            changed=True,
        )
        return replace(rec, message_ref=message_ref)

    def history(self, limit: int = 10) -> list[DeploymentRecord]:
        """The most recent deployments, newest first."""
        items = self.table.query(
            "reading the deployment history",
            KeyConditionExpression="pk = :pk AND sk < :news",
            ExpressionAttributeValues={":pk": self.keys.history(), ":news": {"S": NEWS_PREFIX}},
            ScanIndexForward=False,
            Limit=max(1, min(limit, 500)),
        ).get("Items", [])
        return [record_from_item(item) for item in items]

    def _between(self, since: datetime, until: datetime) -> dict[str, Any]:
        return {
            ":pk": self.keys.history(),
            ":from": {"S": stamp(since)},
            # A record started at ``until`` sorts after ``<until>`` (``<until>#<id>``): excluded.
            ":to": {"S": stamp(until)},
        }

    def history_between(
        self, since: datetime, until: datetime, *, page: int = 500
    ) -> list[DeploymentRecord]:
        """Every deployment started in [since, until), oldest first: a Query of this target's
        partition by sort-key range (the sort key begins with the start time), never a Scan,
        page after page."""
        if until <= since:
            return []
        return [
            record_from_item(item)
            for answer in self.table.pages(
                "reading the deployment history",
                KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
                ExpressionAttributeValues=self._between(since, until),
                Limit=page,
            )
            for item in answer.get("Items", [])
        ]

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
        found: list[DeploymentRecord | None] = []
        missing: dict[str, int] = {}  # sort key -> its place in ``found``
        for answer in self.table.pages(
            "reading the deployment history",
            KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
            ProjectionExpression="sk, #brief",
            ExpressionAttributeNames={"#brief": BRIEF_ATTRIBUTE},
            ExpressionAttributeValues=self._between(since, until),
            Limit=page,
        ):
            for item in answer.get("Items", []):
                rec = record_from_brief(text(item, "sk"), text(item, BRIEF_ATTRIBUTE))
                if rec is None:
                    missing[text(item, "sk")] = len(found)
                found.append(rec)
        whole: set[str] = set()
        keys = [self.keys.record(sk) for sk in missing]
        for item in self.table.batch_get(keys, "reading the deployment history"):
            rec = record_from_item(item)
            found[missing[text(item, "sk")]] = rec
            whole.add(rec.id)
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
            values[":shipped"] = shipped_list(shipped)
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
        # False: the record is gone (expired), nothing to cache on.
        self._update(
            rec,
            "caching the deployment's commit times",
            "SET " + ", ".join(sets),
            condition="attribute_exists(pk)",
            names={"#brief": BRIEF_ATTRIBUTE} if rec.settled else None,
            values=values,
            changed=False,
        )
        return rec

    def remember_brief(self, rec: DeploymentRecord) -> None:
        """Write a settled record's brief (``stats_history`` then reads two attributes of it)."""
        if rec.settled:
            self.cache_lead_inputs(rec)

    def history_and_news(self, limit: int = 20) -> tuple[list[DeploymentRecord], list[News]]:
        """A bot's periodic read, one Query: the ``limit`` most recent deployments (newest
        first) and the news waiting to be announced (oldest first; NEWS_READ at most)."""
        items = self.table.query(
            "reading the deployment history",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": self.keys.history()},
            ScanIndexForward=False,
            Limit=max(1, min(limit, 500)) + NEWS_READ,
        ).get("Items", [])
        news = [news_from_item(i) for i in items if text(i, "sk").startswith(NEWS_PREFIX)]
        records = [record_from_item(i) for i in items if not text(i, "sk").startswith(NEWS_PREFIX)]
        now = self.clock.now()
        return records[:limit], [n for n in reversed(news) if now - n.at < NEWS_KEPT]

    # News for the channel ------------------------------------------------------------------
    def add_news(self, news: News) -> News:
        """Record ``news`` for a bot to announce (kept NEWS_KEPT; one PutItem)."""
        news = replace(news, sort_key=Keys.news_sort_key(news.at))
        self.put_back_news(news, "recording the news for the channel")
        return news

    def take_news(self, news: News) -> bool:
        """Take ``news`` to announce it: True for exactly one caller (a conditional delete),
        so of several bot replicas one announces it."""
        try:
            self.table.delete(
                self.keys.record(news.sort_key),
                "taking the news to announce",
                condition="attribute_exists(pk)",
            )
        except ConditionFailed:
            return False
        return True

    def put_back_news(self, news: News, doing: str = "putting the news back") -> None:
        """Slack did not take the announcement: the next pass (of any replica) tries again."""
        item = news_item(self.keys.record(news.sort_key), news, news.at + NEWS_KEPT)
        self.table.put(item, doing)

    # ECS deployments started outside deploybot -----------------------------------------------
    def claim_outside_report(self, ecs_deployment_id: str, who: str, days: int = 30) -> bool:
        """Claim reporting an ECS deployment no record explains: True once, for the first
        caller in any process (one conditional PutItem; the item expires after ``days``)."""
        now = self.clock.now()
        item = {
            **self.keys.outside(ecs_deployment_id),
            "who": {"S": who},
            "at": {"S": stamp(now)},
            TTL_ATTRIBUTE: expiry(now + timedelta(days=days)),
        }
        return self.table.put_new(item, "claiming the report of an outside deployment")

    def get(self, deployment_id: str, limit: int = 200) -> DeploymentRecord | None:
        return next((r for r in self.history(limit) if r.id == deployment_id), None)

    def open_records(self, limit: int = 50) -> list[DeploymentRecord]:
        return [r for r in self.history(limit) if r.open]
