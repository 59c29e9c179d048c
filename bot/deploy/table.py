"""The deploy table (DynamoDB): its key scheme, its item codec, conditional writes and transactions.

One table holds everything deploybot keeps; the repositories on it (bot/deploy/ledger.py: the
lock, the history, news and claims; bot/deploy/guards.py: the freeze, approval requests, the
queue; bot/deploy/digests.py: the weekly digest's claim) say what they do with it, this
module how it is stored. Most items are keyed by the target's service (``cluster/service``,
``<scope>`` below):

  pk = LOCK#<scope>       sk = LOCK                the lock; ``expires_at`` is its lease
  pk = HISTORY#<scope>    sk = <started>#<id>      one deployment record
                          sk = ~news#<at>#<token>  something done from a terminal that the
                                                   target's channel is to hear of
  pk = OUTSIDE#<scope>    sk = <ECS id>            an ECS deployment no record explains,
                                                   reported in the channel
  pk = FREEZE#<scope>     sk = FREEZE              who froze it, when, why
  pk = REQUEST#<scope>    sk = <id>                one approval request
  pk = QUEUE#<scope>      sk = <queued>#<id>       one queued deploy
                          sk = tell#<queued>#<id>  a person to tell when the lock is free
  pk = QUEUED#<scope>     sk = count               ``deploys``: how many deploys wait
                          sk = who#<user>          ``n``: how many that person has queued
                          sk = item#<user>#<what>  that person's one item for that image
  pk = DIGEST#<scope>     sk = <due>               the weekly digest's claim
  pk = NOTICE#<channel>:<ts>  sk = NOTICE          a CI notice whose Deploy button was used
  pk = TAG#<repository>:<tag> sk = TAG             the image an exact release tag named when
                                                   first deployed, and any allowed moves
  pk = PAUSE#<scope>      sk = <hook id>           a PAUSE hook ECS awaits action on: its
                                                   decision (Continue or Roll back, once),
                                                   the test listener's check, the DM claimed

Times are written as ``records.stamp`` text, so sort keys that begin with one sort by time.
News sorts after every record (records' sort keys begin with the year), so a bot's periodic
read of the newest records brings the news waiting to be announced in the same Query; every
other history read stops below it. The queue's deploys sort before its ``tell#`` items, so
the head of the deploys is one Query with Limit 1. ``expires_at`` is the table's TTL
attribute (epoch seconds); a record has none, it is kept as long as the table.

Every write that could race another process is conditional (``ConditionFailed`` when its
condition did not hold, with the item that failed it when asked for), and the writes that
must go together are one TransactWriteItems (``Cancelled``, with DynamoDB's reasons): the
lock with the freeze and queue checks (``Precondition``), a queued item with its mark and
counts. The key schema is the one ``cloudformation/bot.yml`` declares (a test holds them
together).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from bot.deploy.aws import AwsClient, aws_errors, error_code
from bot.deploy.records import (
    ApprovalRequest,
    DeploymentRecord,
    Lock,
    News,
    QueuedItem,
    QueueMode,
    Requester,
    RequestState,
    TagRecord,
    stamp,
    unstamp,
)
from bot.deploy.rollout import Outcome, Snapshot
from bot.errors import NotConfigured
from bot.rules import Freeze

Item = dict[str, Any]

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
# The sort keys of the people to tell begin with this; every queued deploy's sorts below it.
TELL_PREFIX = "tell#"
# The attribute holding what ``stats`` reads of a settled record (``brief_of``).
BRIEF_ATTRIBUTE = "brief"


# The key scheme ----------------------------------------------------------------------------
class Keys:
    """The keys of one target's items (``scope``: ``cluster/service``), as the module's
    docstring lays them out."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def _key(self, kind: str, sk: str) -> Item:
        return {"pk": {"S": f"{kind}#{self.scope}"}, "sk": {"S": sk}}

    def lock(self) -> Item:
        return self._key("LOCK", "LOCK")

    def history(self) -> dict[str, str]:
        """The history's partition key value (records and news)."""
        return {"S": f"HISTORY#{self.scope}"}

    def record(self, sort_key: str) -> Item:
        """A record's (``DeploymentRecord.sort_key``) or a news item's key."""
        return {"pk": self.history(), "sk": {"S": sort_key}}

    @staticmethod
    def news_sort_key(at: datetime) -> str:
        return f"{NEWS_PREFIX}{stamp(at)}#{secrets.token_hex(3)}"

    def outside(self, ecs_deployment_id: str) -> Item:
        return self._key("OUTSIDE", ecs_deployment_id)

    def freeze(self) -> Item:
        return self._key("FREEZE", "FREEZE")

    def request(self, request_id: str) -> Item:
        return self._key("REQUEST", request_id)

    def queue(self) -> dict[str, str]:
        """The queue's partition key value."""
        return {"S": f"QUEUE#{self.scope}"}

    def queued(self, sort_key: str) -> Item:
        return {"pk": self.queue(), "sk": {"S": sort_key}}

    @staticmethod
    def queued_sort_key(item: QueuedItem, at: datetime) -> str:
        prefix = "" if item.mode is QueueMode.DEPLOY else TELL_PREFIX
        return f"{prefix}{stamp(at)}#{item.id}"

    def queue_count(self) -> Item:
        """The item counting the deploys queued (the lock's transaction checks it)."""
        return self._key("QUEUED", "count")

    def queue_person(self, who: str) -> Item:
        return self._key("QUEUED", f"who#{who}")

    def queue_mark(self, item: QueuedItem) -> Item:
        what = f"{item.kind}#{item.tag}" if item.mode is QueueMode.DEPLOY else "tell"
        return self._key("QUEUED", f"item#{item.requester.who}#{what}"[:1000])

    def digest(self, due: datetime) -> Item:
        return self._key("DIGEST", stamp(due))

    @staticmethod
    def notice(notice: str) -> Item:
        return {"pk": {"S": f"NOTICE#{notice}"}, "sk": {"S": "NOTICE"}}

    @staticmethod
    def tag(repository: str, tag: str) -> Item:
        return {"pk": {"S": f"TAG#{repository}:{tag}"}, "sk": {"S": "TAG"}}

    def pause(self, hook_id: str) -> Item:
        """A paused deployment's hook (bot/deploy/pausing.py): ECS's hook ids are unique."""
        return self._key("PAUSE", hook_id[:1000])


# Conditions and transactions ---------------------------------------------------------------
class ConditionFailed(Exception):
    """A write's condition did not hold; ``item`` is the item that failed it, when the call
    asked for it (``ReturnValuesOnConditionCheckFailure``)."""

    def __init__(self, item: Item | None = None) -> None:
        super().__init__("conditional check failed")
        self.item = item


class Cancelled(Exception):
    """A transaction was cancelled; ``reasons`` are DynamoDB's, one per item in order."""

    def __init__(self, reasons: list[Item]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons

    def failed(self) -> tuple[int, Item | None] | None:
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
    key: Item
    condition: str
    values: Item = field(default_factory=dict)


class PreconditionFailed(Exception):
    """A Precondition did not hold when the lock was to be taken; ``item`` is what failed it."""

    def __init__(self, check: Precondition, item: Item | None) -> None:
        super().__init__(f"{check.name} check failed")
        self.check = check
        self.item = item


def _expression(
    condition: str | None, names: Mapping[str, str] | None, values: Mapping[str, Any] | None
) -> Item:
    out: Item = {}
    if condition:
        out["ConditionExpression"] = condition
    if names:
        out["ExpressionAttributeNames"] = dict(names)
    if values:
        out["ExpressionAttributeValues"] = dict(values)
    return out


class Table:
    """The deploy table as one target's repositories use it: every call names what it does
    (for the message a person reads when AWS fails, ``bot.deploy.aws.aws_errors``), a failed
    condition raises ConditionFailed, a missing table NotConfigured."""

    def __init__(self, aws: AwsClient) -> None:
        self.db = aws.dynamodb
        self.name = aws.table
        self.keys = Keys(aws.scope)

    def get(self, key: Item, doing: str) -> Item | None:
        """One item by its key (a consistent GetItem), None when there is none."""
        with aws_errors(doing):
            item = self._call(
                self.db.get_item, TableName=self.name, Key=key, ConsistentRead=True
            ).get("Item")
        return dict(item) if item else None

    def put(
        self,
        item: Item,
        doing: str,
        *,
        condition: str | None = None,
        values: Mapping[str, Any] | None = None,
        with_failed: bool = False,
        changed: bool = False,
    ) -> None:
        """One PutItem; ``with_failed``: a failed condition carries the item that failed it."""
        kwargs = _expression(condition, None, values)
        if with_failed:
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        with aws_errors(doing, changed=changed):
            self._call(self.db.put_item, TableName=self.name, Item=item, **kwargs)

    def put_new(self, item: Item, doing: str, *, changed: bool = False) -> bool:
        """Put ``item`` unless its key exists: True for exactly one caller in any process."""
        try:
            self.put(item, doing, condition="attribute_not_exists(pk)", changed=changed)
        except ConditionFailed:
            return False
        return True

    def update(
        self,
        key: Item,
        doing: str,
        expression: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        new: bool = False,
        changed: bool = False,
    ) -> Item | None:
        """One UpdateItem; with ``new`` the item as it is after it (None when there is none)."""
        kwargs = _expression(condition, names, values)
        if new:
            kwargs["ReturnValues"] = "ALL_NEW"
        with aws_errors(doing, changed=changed):
            answer = self._call(
                self.db.update_item,
                TableName=self.name,
                Key=key,
                UpdateExpression=expression,
                **kwargs,
            )
        return answer.get("Attributes")

    def delete(
        self,
        key: Item,
        doing: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        old: bool = False,
    ) -> Item | None:
        """One DeleteItem; with ``old`` the item as it was (None when there was none)."""
        kwargs = _expression(condition, names, values)
        if old:
            kwargs["ReturnValues"] = "ALL_OLD"
        with aws_errors(doing):
            answer = self._call(self.db.delete_item, TableName=self.name, Key=key, **kwargs)
        return answer.get("Attributes")

    def query(self, doing: str, **kwargs: Any) -> Item:
        """One Query page (DynamoDB's own arguments, but the table's name)."""
        with aws_errors(doing):
            return self._call(self.db.query, TableName=self.name, **kwargs)

    def pages(self, doing: str, **kwargs: Any) -> Iterator[Item]:
        """A Query page after page, following ``LastEvaluatedKey`` (a page reads at most 1 MB:
        DynamoDB's Query API, "Paginating table query results"); the caller may stop early."""
        start: Item | None = None
        while True:
            answer = self.query(doing, **kwargs, **({"ExclusiveStartKey": start} if start else {}))
            yield answer
            start = answer.get("LastEvaluatedKey")
            if not start:
                return

    def batch_get(self, keys: Sequence[Item], doing: str) -> Iterator[Item]:
        """The items of ``keys``, BatchGetItem 100 keys a call (DynamoDB's most), asking again
        for what a call left unprocessed."""
        for at in range(0, len(keys), 100):
            pending = list(keys[at : at + 100])
            while pending:
                with aws_errors(doing):
                    answer = self._call(
                        self.db.batch_get_item, RequestItems={self.name: {"Keys": pending}}
                    )
                yield from answer.get("Responses", {}).get(self.name, [])
                pending = answer.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", [])

    def transact(self, writes: list[Item], doing: str) -> None:
        """One TransactWriteItems: all of ``writes`` are written, or none (Cancelled, with each
        write's reason, when a condition failed or another transaction conflicted)."""
        with aws_errors(doing):
            self._call(self.db.transact_write_items, TransactItems=writes)

    # A transaction's parts: DynamoDB's TransactItems, naming this table.
    def put_part(self, item: Item, condition: str, *, with_failed: bool = False) -> Item:
        put: Item = {"TableName": self.name, "Item": item, "ConditionExpression": condition}
        if with_failed:
            put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Put": put}

    def add_part(self, key: Item, attribute: str, delta: int, condition: str = "") -> Item:
        """Add ``delta`` to a number (``condition`` may name ``:limit``, see ``limit_part``)."""
        update: Item = {
            "TableName": self.name,
            "Key": key,
            "UpdateExpression": f"ADD {attribute} :d",
            "ExpressionAttributeValues": {":d": {"N": str(delta)}},
        }
        if condition:
            update["ConditionExpression"] = condition
        return {"Update": update}

    def delete_part(self, key: Item, condition: str = "", values: Item | None = None) -> Item:
        delete: Item = {"TableName": self.name, "Key": key}
        if condition:
            delete["ConditionExpression"] = condition
        if values:
            delete["ExpressionAttributeValues"] = values
        return {"Delete": delete}

    def check_part(self, check: Precondition) -> Item:
        part: Item = {
            "TableName": self.name,
            "Key": check.key,
            "ConditionExpression": check.condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if check.values:
            part["ExpressionAttributeValues"] = check.values
        return {"ConditionCheck": part}

    def _call(self, method: Any, **kwargs: Any) -> Item:
        try:
            return dict(method(**kwargs))
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed(exc.response.get("Item")) from exc
            if code == "TransactionCanceledException":
                raise Cancelled(exc.response.get("CancellationReasons", [])) from exc
            if code == "ResourceNotFoundException":
                raise NotConfigured(
                    f"The deploy table {self.name} does not exist. Create the bot's stack "
                    "(`make bot-infra`) or set DEPLOY_TABLE."
                ) from exc
            raise


# The item codec: attributes --------------------------------------------------------------
def text(item: Item, key: str) -> str:
    return str(item.get(key, {}).get("S", ""))


def texts(item: Item, key: str) -> tuple[str, ...]:
    """A list of strings (``L`` of ``S``)."""
    return tuple(str(v.get("S", "")) for v in item.get(key, {}).get("L", []))


def text_list(values: Sequence[str]) -> Item:
    return {"L": [{"S": v} for v in values]}


def number(item: Item, key: str) -> int:
    return int(item.get(key, {}).get("N", "0"))


def time_or_none(item: Item, key: str) -> datetime | None:
    value = text(item, key)
    return unstamp(value) if value else None


def expiry(at: datetime) -> Item:
    """The TTL attribute's value: DynamoDB removes the item some time after ``at``."""
    return {"N": str(int(at.timestamp()))}


# The item codec: the domain's items --------------------------------------------------------
def lock_item(key: Item, lock: Lock) -> Item:
    return {
        **key,
        "holder": {"S": lock.holder},
        "source": {"S": lock.source},
        "tag": {"S": lock.tag},
        "deployment_id": {"S": lock.deployment_id},
        "acquired_at": {"S": stamp(lock.acquired_at)},
        "record_sk": {"S": lock.record_sk},
        "version": {"N": str(lock.version)},
        TTL_ATTRIBUTE: expiry(lock.expires_at),
    }


def lock_from_item(item: Item) -> Lock:
    return Lock(
        holder=item["holder"]["S"],
        source=text(item, "source"),
        tag=item["tag"]["S"],
        deployment_id=item["deployment_id"]["S"],
        acquired_at=unstamp(item["acquired_at"]["S"]),
        expires_at=datetime.fromtimestamp(int(item[TTL_ATTRIBUTE]["N"]), UTC),
        record_sk=text(item, "record_sk"),
        version=number(item, "version"),
    )


def tag_from_item(tag: str, item: Item) -> TagRecord:
    return TagRecord(
        tag=tag,
        digest=text(item, "digest"),
        deployed_at=unstamp(text(item, "deployed_at")),
        deployment=text(item, "deployment"),
        moves=texts(item, "moves"),
    )


def record_item(key: Item, rec: DeploymentRecord) -> Item:
    """The item of a new deployment (open: no outcome yet)."""
    item: Item = {
        **key,
        "id": {"S": rec.id},
        "service": {"S": rec.service},
        "kind": {"S": rec.kind},
        "tag": {"S": rec.tag},
        "image": {"S": rec.image},
        "task_definition": {"S": rec.task_definition},
        "previous_task_definition": {"S": rec.previous_task_definition},
        "previous_tag": {"S": rec.previous_tag},
        "ecs_deployment_id": {"S": rec.ecs_deployment_id},
        "service_deployment_arn": {"S": rec.service_deployment_arn},
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
        "approved_by": text_list(rec.approved_by),
        "approval_request": {"S": rec.approval_request},
        "break_glass": {"S": rec.break_glass},
        "bypassed": text_list(rec.bypassed),
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


def record_from_item(item: Item) -> DeploymentRecord:
    outcome = text(item, "outcome")
    return DeploymentRecord(
        id=text(item, "id"),
        service=text(item, "service"),
        kind=text(item, "kind"),
        tag=text(item, "tag"),
        image=text(item, "image"),
        task_definition=text(item, "task_definition"),
        previous_task_definition=text(item, "previous_task_definition"),
        previous_tag=text(item, "previous_tag"),
        ecs_deployment_id=text(item, "ecs_deployment_id"),
        # Absent from a record written before #26: "" (the fallback judges it).
        service_deployment_arn=text(item, "service_deployment_arn"),
        ecs_status=text(item, "ecs_status"),
        who=text(item, "who"),
        who_display=text(item, "who_display"),
        who_arn=text(item, "who_arn"),
        source=text(item, "source"),
        reason=text(item, "reason"),
        started_at=unstamp(text(item, "started_at")),
        finished_at=time_or_none(item, "finished_at"),
        outcome=Outcome(outcome) if outcome else None,
        outcome_reason=text(item, "outcome_reason"),
        rollback_tag=text(item, "rollback_tag"),
        message_ref=text(item, "message_ref"),
        final=snapshot_from_json(text(item, "final")),
        shown=bool(item.get("shown", {}).get("BOOL", False)),
        digest=text(item, "digest"),
        previous_image=text(item, "previous_image"),
        previous_digest=text(item, "previous_digest"),
        previous_ecs_deployment_id=text(item, "previous_ecs_deployment_id"),
        rollback_of=text(item, "rollback_of"),
        commit=item["commit"]["S"] if "commit" in item else None,
        previous_commit=item["previous_commit"]["S"] if "previous_commit" in item else None,
        follower=text(item, "follower"),
        follower_until=time_or_none(item, "follower_until"),
        follower_beat=number(item, "follower_beat"),
        starter=text(item, "starter"),
        replied=frozenset(item.get("replied", {}).get("SS", ())),
        approved_by=texts(item, "approved_by"),
        approval_request=text(item, "approval_request"),
        break_glass=text(item, "break_glass"),
        bypassed=texts(item, "bypassed"),
        aborted_by=text(item, "aborted_by"),
        aborted_at=time_or_none(item, "aborted_at"),
        abort_ecs_deployment_id=text(item, "abort_ecs_deployment_id"),
        abort_via=text(item, "abort_via"),
        shipped=_shipped(item),
        image_pushed_at=time_or_none(item, "image_pushed_at"),
        decisions=texts(item, "decisions"),
    )


def shipped_list(shipped: Sequence[tuple[str, datetime]]) -> Item:
    """``shipped``: a list of "<sha> <committed at>" strings."""
    return {"L": [{"S": f"{sha} {stamp(at)}"} for sha, at in shipped]}


def _shipped(item: Item) -> tuple[tuple[str, datetime], ...] | None:
    if "shipped" not in item:
        return None
    found: list[tuple[str, datetime]] = []
    for value in item["shipped"].get("L", []):
        sha, _, at = str(value.get("S", "")).partition(" ")
        if sha and at:
            found.append((sha, unstamp(at)))
    return tuple(found)


def snapshot_json(snap: Snapshot) -> str:
    """A record's final snapshot, kept whole as JSON."""
    return json.dumps(
        {
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
            "service_deployment": snap.service_deployment,
        },
        default=_json_time,
    )


def _json_time(value: object) -> str:
    """A datetime of a service deployment (botocore parses them), as the table writes times."""
    if isinstance(value, datetime):
        return stamp(value if value.tzinfo else value.replace(tzinfo=UTC))
    raise TypeError(f"not JSON: {type(value).__name__}")


# The timestamps of ECS's ServiceDeployment (botocore's shape): read back as datetimes.
_SD_TIMES = ("createdAt", "startedAt", "finishedAt", "stoppedAt", "updatedAt")


def _sd_from_json(sd: Any) -> dict[str, Any] | None:
    if not isinstance(sd, dict):
        return None
    out = dict(sd)
    for key in _SD_TIMES:
        if isinstance(out.get(key), str):
            out[key] = unstamp(out[key])
    rollback = out.get("rollback")
    if isinstance(rollback, dict) and isinstance(rollback.get("startedAt"), str):
        out["rollback"] = {**rollback, "startedAt": unstamp(rollback["startedAt"])}
    hooks = out.get("lifecycleHookDetails")
    if isinstance(hooks, list):
        out["lifecycleHookDetails"] = [
            {**h, "expiresAt": unstamp(h["expiresAt"])}
            if isinstance(h, dict) and isinstance(h.get("expiresAt"), str)
            else h
            for h in hooks
        ]
    return out


def snapshot_from_json(value: str) -> Snapshot | None:
    if not value:
        return None
    data = json.loads(value)
    data["at"] = unstamp(data["at"])
    data["outcome"] = Outcome(data["outcome"]) if data["outcome"] else None
    data["service_deployment"] = _sd_from_json(data.get("service_deployment"))
    known = Snapshot.__dataclass_fields__
    return Snapshot(**{k: v for k, v in data.items() if k in known})


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


def record_from_brief(sort_key: str, brief: str) -> DeploymentRecord | None:
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


def news_item(key: Item, news: News, keep: datetime) -> Item:
    return {
        **key,
        "kind": {"S": news.kind},
        "who": {"S": news.who},
        "who_arn": {"S": news.aws_identity},
        "at": {"S": stamp(news.at)},
        "reason": {"S": news.reason},
        "deployment_id": {"S": news.deployment_id},
        "tag": {"S": news.tag},
        "detail": {"S": news.detail},
        TTL_ATTRIBUTE: expiry(keep),
    }


def news_from_item(item: Item) -> News:
    return News(
        kind=text(item, "kind"),
        who=text(item, "who"),
        at=unstamp(text(item, "at")),
        aws_identity=text(item, "who_arn"),
        reason=text(item, "reason"),
        deployment_id=text(item, "deployment_id"),
        tag=text(item, "tag"),
        detail=text(item, "detail"),
        sort_key=text(item, "sk"),
    )


def freeze_item(key: Item, freeze: Freeze) -> Item:
    return {
        **key,
        "by": {"S": freeze.by},
        "since": {"S": stamp(freeze.since)},
        "reason": {"S": freeze.reason},
        "via": {"S": freeze.via},
        "deployment": {"S": freeze.deployment or ""},
    }


def freeze_from_item(item: Item) -> Freeze:
    return Freeze(
        by=text(item, "by"),
        since=unstamp(text(item, "since")),
        reason=text(item, "reason"),
        via=text(item, "via") or "slack",
        deployment=text(item, "deployment") or None,
    )


def _requester(item: Item) -> Requester:
    return Requester(text(item, "who"), text(item, "who_source"), text(item, "who_display"))


def request_item(key: Item, request: ApprovalRequest, keep: datetime) -> Item:
    return {
        **key,
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
        "fingerprint": {"S": request.fingerprint},
        "plan": {"L": [{"S": line} for line in request.plan]},
        "plan_summary": {"S": request.plan_summary},
        "newer": {"S": request.newer},
        TTL_ATTRIBUTE: expiry(keep),
    }


def request_from_item(item: Item) -> ApprovalRequest:
    return ApprovalRequest(
        id=text(item, "id"),
        kind=text(item, "kind"),
        tag=text(item, "tag"),
        digest=text(item, "digest"),
        from_tag=text(item, "from_tag"),
        from_digest=text(item, "from_digest"),
        from_task_definition=text(item, "from_task_definition"),
        requester=_requester(item),
        reason=text(item, "reason"),
        requested_at=unstamp(text(item, "requested_at")),
        expires_at=unstamp(text(item, "request_expires_at")),
        approved_by=texts(item, "approved_by"),
        state=RequestState(text(item, "state") or "pending"),
        decided_by=text(item, "decided_by"),
        channel=text(item, "channel"),
        message_ref=text(item, "message_ref"),
        source=text(item, "source"),
        deployment_id=text(item, "deployment_id"),
        fingerprint=text(item, "fingerprint"),
        plan=texts(item, "plan"),
        plan_summary=text(item, "plan_summary"),
        newer=text(item, "newer"),
    )


def queued_item(key: Item, item: QueuedItem) -> Item:
    return {
        **key,
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
        "approved_by": text_list(item.approved_by),
        "request_id": {"S": item.request_id},
        "source": {"S": item.source},
        "thread": {"S": item.thread},
        "counted": {"BOOL": True},
    }


def queued_from_item(item: Item) -> QueuedItem:
    return QueuedItem(
        id=text(item, "id"),
        mode=QueueMode(text(item, "mode") or "deploy"),
        kind=text(item, "kind"),
        tag=text(item, "tag"),
        requester=_requester(item),
        queued_at=unstamp(text(item, "queued_at")),
        channel=text(item, "channel"),
        reason=text(item, "reason"),
        approved_by=texts(item, "approved_by"),
        request_id=text(item, "request_id"),
        source=text(item, "source"),
        thread=text(item, "thread"),
        sort_key=text(item, "sk"),
        counted=bool(item.get("counted", {}).get("BOOL", False)),
    )
