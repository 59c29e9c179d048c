"""Settled deployment records written straight into the table: a history for the tests, the
stats benchmark (bench/stats.py) and the playground to read, as deploybot would have left it.

Each item is the ledger's own (``Ledger.record_item``) with its close's fields (outcome, end)
and lead time's cached inputs when given, written 25 at a time (BatchWriteItem's most).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.deploy.ledger import DeploymentRecord, Ledger, format_ts

BATCH = 25  # BatchWriteItem takes at most 25 puts a call


def item_of(ledger: Ledger, rec: DeploymentRecord) -> dict[str, Any]:
    item = ledger.record_item(rec)
    if rec.outcome is not None:
        item["outcome"] = {"S": rec.outcome.value}
        item["outcome_reason"] = {"S": rec.outcome_reason}
    if rec.finished_at is not None:
        item["finished_at"] = {"S": format_ts(rec.finished_at)}
    if rec.shipped is not None:
        item["shipped"] = {"L": [{"S": f"{sha} {format_ts(at)}"} for sha, at in rec.shipped]}
    if rec.image_pushed_at is not None:
        item["image_pushed_at"] = {"S": format_ts(rec.image_pushed_at)}
    return item


def seed(ledger: Ledger, records: Iterable[DeploymentRecord]) -> int:
    """Write ``records`` (closed ones with their outcome and end); how many were written."""
    items = [item_of(ledger, rec) for rec in records]
    for start in range(0, len(items), BATCH):
        pending: list[dict[str, Any]] = [
            {"PutRequest": {"Item": item}} for item in items[start : start + BATCH]
        ]
        while pending:
            answer = ledger.db.batch_write_item(RequestItems={ledger.table: pending})
            pending = answer.get("UnprocessedItems", {}).get(ledger.table, [])
    return len(items)
