"""What the doors need of the table and the follower, as ``Engine`` methods (its base class).

The doors (bot/slack/, the terminal) call the engine, never its parts: no ``engine.ledger``,
``.guards``, ``.poller`` or ``.reconciler`` (tests/bot/test_doors_touch_no_internals.py, and
an import contract in ``make lint``). Each method here is one delegation to a part; they live
apart from bot/deploy/engine.py so the facade stays one screen of stages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from bot.deploy.events import Event, EventBus
from bot.deploy.parts import Parts
from bot.deploy.records import ApprovalRequest, DeploymentRecord, Lock, News, QueuedItem
from bot.rules import Freeze

E = TypeVar("E", bound=Event)


class ForTheDoors:
    """The bookkeeping a door does beside rendering: who shows a message, tells a requester,
    announces news or reports an outside deployment, once across replicas."""

    parts: Parts
    events: EventBus

    def subscribe(self, kind: type[E], handler: Callable[[E], object]) -> Callable[[], None]:
        return self.events.subscribe(kind, handler)

    def tracking(self) -> list[str]:
        return self.parts.poller.tracking()

    def mark_shown(self, record: DeploymentRecord) -> None:
        self.parts.ledger.mark_shown(record)

    def mark_replied(self, record: DeploymentRecord, ids: frozenset[str]) -> None:
        self.parts.ledger.mark_replied(record, ids)

    def claim_post(self, record: DeploymentRecord) -> bool:
        lease = self.parts.settings.lock_lease_seconds
        return self.parts.ledger.claim_post(record, self.parts.poller.follower, lease)

    def claim_notice(self, record: DeploymentRecord) -> bool:
        return self.parts.ledger.claim_notice(record)

    def take_news(self, news: News) -> bool:
        return self.parts.ledger.take_news(news)

    def put_back_news(self, news: News) -> None:
        self.parts.ledger.put_back_news(news)

    def claim_outside_report(self, ecs_deployment_id: str) -> bool:
        return self.parts.ledger.claim_outside_report(ecs_deployment_id, self.parts.poller.follower)

    def claim_ci_notice(self, notice: str, who: str) -> bool:
        return self.parts.ledger.claim_ci_notice(notice, who)

    def release_ci_notice(self, notice: str, who: str) -> None:
        self.parts.ledger.release_ci_notice(notice, who)

    def deployment(self, deployment_id: str) -> DeploymentRecord | None:
        return self.parts.ledger.get(deployment_id)

    def history_between(self, since: datetime, until: datetime) -> list[DeploymentRecord]:
        return self.parts.ledger.history_between(since, until)

    def lock_item(self) -> Lock | None:
        return self.parts.ledger.lock_item()

    def current_freeze(self) -> Freeze | None:
        return self.parts.guards.current_freeze()

    def find_request(self, request_id: str) -> ApprovalRequest | None:
        return self.parts.guards.request(request_id)

    def set_request_message(self, request: ApprovalRequest, ref: str) -> ApprovalRequest:
        return self.parts.guards.set_request_message(request, ref)

    def requeue(self, item: QueuedItem) -> None:
        self.parts.guards.requeue(item)
