"""Settled deployment records written straight into the table: a history for the tests, the
stats benchmark (bench/stats.py) and the playground to read, as deploybot would have left it.

Each item is the ledger's own (``bot.deploy.table.record_item``) with its close's fields (outcome,
end) and lead time's cached inputs when given, written 25 at a time (BatchWriteItem's most).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import boto3

from bot.deploy.ledger import Ledger
from bot.deploy.records import DeploymentRecord, stamp
from bot.deploy.rollout import Outcome
from bot.deploy.table import record_item

BATCH = 25  # BatchWriteItem takes at most 25 puts a call


def item_of(ledger: Ledger, rec: DeploymentRecord) -> dict[str, Any]:
    item = record_item(ledger.keys.record(rec.sort_key), rec)
    if rec.outcome is not None:
        item["outcome"] = {"S": rec.outcome.value}
        item["outcome_reason"] = {"S": rec.outcome_reason}
    if rec.finished_at is not None:
        item["finished_at"] = {"S": stamp(rec.finished_at)}
    if rec.shipped is not None:
        item["shipped"] = {"L": [{"S": f"{sha} {stamp(at)}"} for sha, at in rec.shipped]}
    if rec.image_pushed_at is not None:
        item["image_pushed_at"] = {"S": stamp(rec.image_pushed_at)}
    return item


def seed(ledger: Ledger, records: Iterable[DeploymentRecord]) -> int:
    """Write ``records`` (closed ones with their outcome and end); how many were written."""
    items = [item_of(ledger, rec) for rec in records]
    # A client of its own, not the engine's: seeding is the playground's and the tests' doing,
    # and the permission test holds the bot's role to what the engine's clients call.
    meta = ledger.table.db.meta
    db = boto3.session.Session().client(
        "dynamodb", region_name=meta.region_name, endpoint_url=meta.endpoint_url
    )
    for start in range(0, len(items), BATCH):
        pending: list[dict[str, Any]] = [
            {"PutRequest": {"Item": item}} for item in items[start : start + BATCH]
        ]
        while pending:
            answer = db.batch_write_item(RequestItems={ledger.table.name: pending})
            pending = answer.get("UnprocessedItems", {}).get(ledger.table.name, [])
    return len(items)


def plausible(
    target: str,
    service: str,
    *,
    now: datetime,
    people: Sequence[str],
    days: int = 60,
    pace: float = 0.5,
    seed: int = 0,
) -> list[DeploymentRecord]:
    """``days`` of a team's deployments of ``service`` before ``now``, settled: on working days
    with probability ``pace`` (two some days), mostly completed; a few failed or rolled back by
    ECS's circuit breaker, a few rolled back by hand within hours, a freeze of four working days
    after one failure; each with the commits it shipped (lead time from commits, no GitHub
    asked). Versions climb from v4.0.0 and stay below v4.3.0 (what the demo's ECR has next).
    The same arguments give the same history (``random.Random(seed)``)."""
    rng = random.Random(f"{target}:{seed}")
    out: list[DeploymentRecord] = []
    minor, patch = 0, 0
    previous = ("v3.9.0", "sha256:" + "0" * 64, "0000000")
    frozen_until: datetime | None = None
    froze = False
    day0 = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(days):
        day = day0 + timedelta(days=offset)
        if day.weekday() >= 5 or (frozen_until is not None and day < frozen_until):
            continue
        count = (rng.random() < pace) + (rng.random() < pace / 4)
        hours = sorted(rng.uniform(8.5, 17.5) for _ in range(count))
        for hour in hours:
            start = day + timedelta(hours=hour)
            if start >= now - timedelta(hours=2):
                continue
            patch += 1
            if patch > 6 and minor < 2 and rng.random() < 0.3:
                minor, patch = minor + 1, 0
            version = f"v4.{minor}.{patch}"
            digest = "sha256:" + rng.randbytes(32).hex()
            commits = [
                (rng.randbytes(20).hex(), start - timedelta(hours=rng.uniform(0.5, 40)))
                for _ in range(rng.randint(1, 4))
            ]
            roll = rng.random()
            outcome = (
                Outcome.FAILED
                if roll < 0.05
                else Outcome.ROLLED_BACK
                if roll < 0.12
                else Outcome.COMPLETED
            )
            done = outcome is Outcome.COMPLETED
            took = timedelta(minutes=rng.uniform(4, 9) if done else rng.uniform(9, 16))
            shipped = tuple(sorted(commits, key=lambda c: c[1]))
            new = (version, digest, shipped[-1][0][:7])
            rec = _record(
                f"d-seed-{target}-{len(out):03d}", service, "deploy", new, previous,
                rng.choice(people), start, took, outcome, shipped if done else None,
            )  # fmt: skip
            out.append(rec)
            if done and rng.random() < 0.06:  # noticed within hours: rolled back by hand
                back = start + took + timedelta(hours=rng.uniform(0.5, 5))
                undo = _record(
                    f"d-seed-{target}-{len(out):03d}", service, "rollback", previous, new,
                    rng.choice(people), back, timedelta(minutes=5), Outcome.COMPLETED,
                )  # fmt: skip
                out.append(replace(undo, rollback_of=rec.id))
            elif done:
                previous = new
            elif not froze and offset > days // 3:
                froze = True  # freeze_after_failure: four working days without deploys
                frozen_until = day + timedelta(days=6)
                break
    return out


TAG_SUFFIX = "-ecr-ecs-fargate"


def _record(
    id: str,
    service: str,
    kind: str,
    image: tuple[str, str, str],
    previous: tuple[str, str, str],
    who: str,
    start: datetime,
    took: timedelta,
    outcome: Outcome,
    shipped: tuple[tuple[str, datetime], ...] | None = None,
) -> DeploymentRecord:
    """A settled record; ``image`` and ``previous`` are (version, digest, short commit)."""
    version, digest, commit = image
    before, before_digest, before_commit = previous
    reasons = {
        Outcome.FAILED: "tasks failed to start",
        Outcome.ROLLED_BACK: "the circuit breaker rolled it back",
    }
    return DeploymentRecord(
        id=id,
        service=service,
        kind=kind,
        tag=version + TAG_SUFFIX,
        image="",
        task_definition="",
        previous_task_definition="",
        previous_tag=before + TAG_SUFFIX,
        ecs_deployment_id="",
        who=who,
        who_display=who,
        source="slack",
        reason="",
        started_at=start,
        finished_at=start + took,
        outcome=outcome,
        outcome_reason=reasons.get(outcome, ""),
        digest=digest,
        previous_digest=before_digest,
        commit=commit,
        previous_commit=before_commit,
        shipped=shipped,
    )
