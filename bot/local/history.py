"""Settled deployment records written straight into the table: a history for the tests, the
stats benchmark (bench/stats.py) and the playground to read, as deploybot would have left it.

Each record is the ledger's own write (``Ledger.record``) and then its close's fields (outcome,
end, and lead time's cached inputs when given), so the items have the shape the bot writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.deploy.ledger import DeploymentRecord, Ledger, format_ts


def seed(ledger: Ledger, records: Iterable[DeploymentRecord]) -> int:
    """Write ``records`` (closed ones with their outcome and end); how many were written."""
    count = 0
    for rec in records:
        ledger.record(rec)
        values: dict[str, Any] = {}
        if rec.outcome is not None:
            values[":outcome"] = {"S": rec.outcome.value}
            values[":reason"] = {"S": rec.outcome_reason}
        if rec.finished_at is not None:
            values[":finished"] = {"S": format_ts(rec.finished_at)}
        if values:
            names = {":outcome": "outcome", ":reason": "outcome_reason", ":finished": "finished_at"}
            ledger.db.update_item(
                TableName=ledger.table,
                Key={"pk": {"S": f"HISTORY#{ledger.key}"}, "sk": {"S": rec.sort_key}},
                UpdateExpression="SET " + ", ".join(f"#{names[v]} = {v}" for v in values),
                ExpressionAttributeNames={f"#{names[v]}": names[v] for v in values},
                ExpressionAttributeValues=values,
            )
        if rec.shipped is not None or rec.image_pushed_at is not None:
            ledger.cache_lead_inputs(rec, shipped=rec.shipped, image_pushed_at=rec.image_pushed_at)
        count += 1
    return count
