"""What a deploy check costs DynamoDB with 1, 100 and 600 deploys queued (issue 24).

For each queue length: the queue rule's read (Engine._queued, asked by every plan of a
change), a whole /deploy plan refused by that rule (every read it makes), the queue's turn
reading its head, and a person's position. Each is measured on the engine's own DynamoDB
client (botocore's ``after-call`` event): calls, items read, and read capacity by DynamoDB's
formula (strongly consistent: one unit per 4 KB read, per GetItem item or per Query's
items together; sizes estimated from the items' JSON), so a figure that grows with the queue
shows.

    uv run python -m bench.queue_cost
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.lab import DEPLOYS, Lab, header
from bot.deploy.engine import Engine
from bot.deploy.records import QueuedItem, QueueMode, Requester, Via
from bot.errors import DeployRefused
from bot.rules import Door
from bot.target import Target

LENGTHS = (1, 100, 600)
SLASH = Via(door=Door.SLASH, channel=DEPLOYS)


class Meter:
    """DynamoDB reads of one client: calls, items, read capacity units."""

    def __init__(self, engine: Engine) -> None:
        self.calls = 0
        self.items = 0
        self.units = 0.0
        engine.aws.dynamodb.meta.events.register("after-call.dynamodb", self._count)

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        if name not in ("GetItem", "Query", "BatchGetItem", "Scan"):
            return
        self.calls += 1
        if name == "GetItem":
            size = len(json.dumps(parsed.get("Item", {})))
            self.items += 1 if parsed.get("Item") else 0
            self.units += max(1, math.ceil(size / 4096))
        else:
            read = parsed.get("Items", [])
            scanned = int(parsed.get("ScannedCount", len(read)))
            self.items += scanned
            # Select COUNT returns no items but reads them: size them as the ones we know.
            size = sum(len(json.dumps(i)) for i in read) or scanned * 400
            self.units += max(1, math.ceil(size / 4096))

    def measure(self, what: Callable[[], Any]) -> tuple[int, int, float]:
        calls, items, units = self.calls, self.items, self.units
        with contextlib.suppress(DeployRefused):  # the plan is refused by the queue rule
            what()
        return self.calls - calls, self.items - items, self.units - units


def main() -> int:
    header("Queue cost per check (DynamoDB reads: calls / items / read units)")
    with Lab() as lab:
        assert lab.settings is not None
        s = lab.settings
        target = Target(
            name="production",
            cluster=s.ecs_cluster,
            service=s.ecs_service,
            repository=s.ecr_repository,
            deployers=frozenset({"*"}),
            channels=frozenset({DEPLOYS}),
        )
        engine = Engine(target.settings(s), target=target)
        meter = Meter(engine)
        queued: list[QueuedItem] = []
        rows = []
        try:
            for length in LENGTHS:
                while len(queued) < length:
                    who = Requester(f"U{len(queued):05d}", "slack")
                    queued.append(
                        engine.guards.enqueue(
                            QueuedItem(
                                id="",
                                mode=QueueMode.DEPLOY,
                                kind="deploy",
                                tag="v4.4.0-ecr-ecs-fargate",
                                requester=who,
                                queued_at=datetime.now(UTC),
                                channel=DEPLOYS,
                            )
                        )
                    )
                rule = meter.measure(engine._queued)
                plan = meter.measure(
                    lambda: engine.plan_deploy("v4.4.0", Requester("UBENCH", "slack"), via=SLASH)
                )
                head = meter.measure(engine.guards.head)
                last = meter.measure(lambda: engine.queue_position(queued[-1]))
                rows.append((length, rule, plan, head, last))
        finally:
            engine.close()
    print(
        f"   {'queued':>6} | {'queue rule':>14} | {'/deploy plan':>14} | {'head':>14} |"
        f" {'position of last':>16}"
    )
    for length, *cells in rows:
        text = " | ".join(f"{c:>2} / {i:>3} / {u:>4.0f}".rjust(14) for c, i, u in cells)
        print(f"   {length:>6} | {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
