"""The weekly digest's claim: one bot replica posts a target's digest, whatever their count.

  pk = DIGEST#<cluster>/<service>   sk = <when it was due, UTC>

A replica takes a week's digest with a conditional put, as a follower takes a deployment (a
lease in the table: bot/deploy/ledger.py): free when nobody took it, or when whoever took it
neither posted it nor renewed it for a lease and CLOCK_SKEW (it died). The one who took it
marks it posted; nobody takes a posted one again. DynamoDB's TTL removes the item weeks later.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.deploy.aws import aws_errors
from bot.deploy.ledger import TTL_ATTRIBUTE, Ledger
from bot.deploy.records import CLOCK_SKEW, stamp

KEPT = timedelta(days=35)  # long past the day a late replica would still post it


class DigestClaims:
    """The digest claims of one target (its ledger's service)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _key(self, due: datetime) -> dict[str, Any]:
        return {"pk": {"S": f"DIGEST#{self.ledger.key}"}, "sk": {"S": stamp(due)}}

    def claim(self, due: datetime, holder: str, seconds: float) -> bool:
        """Take the digest due at ``due`` for ``holder`` until now + ``seconds``; False when
        another replica holds it or it was posted."""
        now = self.ledger.clock.now()
        item = {
            **self._key(due),
            "holder": {"S": holder},
            "lease_until": {"S": stamp(now + timedelta(seconds=seconds))},
            TTL_ATTRIBUTE: {"N": str(int((due + KEPT).timestamp()))},
        }
        with aws_errors("claiming the weekly digest", changed=True):
            try:
                self.ledger.db.put_item(
                    TableName=self.ledger.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR (attribute_not_exists("
                    "posted_at) AND (holder = :me OR lease_until < :stale))",
                    ExpressionAttributeValues={
                        ":me": {"S": holder},
                        ":stale": {"S": stamp(now - CLOCK_SKEW)},
                    },
                )
            except self.ledger.db.exceptions.ConditionalCheckFailedException:
                return False
        return True

    def posted(self, due: datetime, holder: str) -> None:
        """Mark the digest due at ``due`` posted (by ``holder``, who claimed it)."""
        with aws_errors("marking the weekly digest posted", changed=True):
            self.ledger.db.update_item(
                TableName=self.ledger.table,
                Key=self._key(due),
                UpdateExpression="SET posted_at = :now",
                ExpressionAttributeValues={
                    ":now": {"S": stamp(self.ledger.clock.now())},
                },
            )
