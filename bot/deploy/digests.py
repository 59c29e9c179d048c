"""The weekly digest's claim: one bot replica posts a target's digest, whatever their count.

  pk = DIGEST#<cluster>/<service>   sk = <when it was due, UTC>

A replica takes a week's digest with a conditional put, as a follower takes a deployment (a
lease in the table: bot/deploy/ledger.py): free when nobody took it, or when whoever took it
neither posted it nor renewed it for a lease and CLOCK_SKEW (it died). The one who took it
marks it posted; nobody takes a posted one again. DynamoDB's TTL removes the item weeks later.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.clock import Clock
from bot.deploy.records import CLOCK_SKEW, stamp
from bot.deploy.table import TTL_ATTRIBUTE, ConditionFailed, Table, expiry

KEPT = timedelta(days=35)  # long past the day a late replica would still post it


class DigestClaims:
    """The digest claims of one target."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def claim(self, due: datetime, holder: str, seconds: float) -> bool:
        """Take the digest due at ``due`` for ``holder`` until now + ``seconds``; False when
        another replica holds it or it was posted."""
        now = self.clock.now()
        item = {
            **self.table.keys.digest(due),
            "holder": {"S": holder},
            "lease_until": {"S": stamp(now + timedelta(seconds=seconds))},
            TTL_ATTRIBUTE: expiry(due + KEPT),
        }
        try:
            self.table.put(
                item,
                "claiming the weekly digest",
                condition="attribute_not_exists(pk) OR (attribute_not_exists("
                "posted_at) AND (holder = :me OR lease_until < :stale))",
                values={":me": {"S": holder}, ":stale": {"S": stamp(now - CLOCK_SKEW)}},
                changed=True,
            )
        except ConditionFailed:
            return False
        return True

    def posted(self, due: datetime, holder: str) -> None:
        """Mark the digest due at ``due`` posted (by ``holder``, who claimed it)."""
        self.table.update(
            self.table.keys.digest(due),
            "marking the weekly digest posted",
            "SET posted_at = :now",
            values={":now": {"S": stamp(self.clock.now())}},
            changed=True,
        )
