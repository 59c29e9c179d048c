"""What happens to a target's deployments, as typed events, and the bus doors subscribe to.

The engine and its supervisor (bot/deploy/supervisor.py) publish; the doors subscribe and
render: the Slack board, the requester's DM, the channel's announcements, the terminal. An
event says what happened, never how to show it, and a subscriber decides nothing the engine
decides (who may, what starts, when a record closes).

Two ways to deliver, after controller-runtime's "one loop, typed results out" (STYLE.md):
``publish`` from any thread (the poller's, a reconcile in a thread) calls each handler at
once and must not wait on it (a handler that has work to do hands it to its own loop or
thread); ``deliver`` from the supervisor's event loop awaits what each handler returns, in
the order they subscribed, so a renderer can finish saying one thing before the next. A
handler that fails is logged and never stops the others, nor the bookkeeping that published.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from bot.deploy.records import DeploymentRecord, News, QueuedItem
from bot.deploy.rollout import EcsDeployment, ServiceState, Snapshot
from bot.errors import DeployError

log = logging.getLogger("deploybot.events")


class Event:
    """The base of every event (what ``subscribe`` keys on is the concrete class)."""


E = TypeVar("E", bound=Event)


# --- a deployment's life ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentStarted(Event):
    """This process started ``record`` (its record is written, ECS was asked) and follows it."""

    record: DeploymentRecord


@dataclass(frozen=True)
class Adopted(Event):
    """This process follows ``record`` now: a deployment nobody followed (a ``--no-wait``
    deploy, a process that died, a restart of this one). Its snapshots follow
    (RolloutSnapshot)."""

    record: DeploymentRecord


@dataclass(frozen=True)
class RolloutSnapshot(Event):
    """What this process's follower saw of ``record``'s rollout at one poll that a reader
    would see change (the snapshots ``Engine.watch`` gives its watchers, the same ones, once
    each); the last is ``snapshot.final``. ``record`` is the closed one with the final."""

    record: DeploymentRecord
    snapshot: Snapshot


@dataclass(frozen=True)
class Looked(Event):
    """What one pass of the supervisor saw of a target: its newest records (reconciled with
    ECS), what terminals did (``news``, for the channel), what ECS says now (``state``, when
    it was read) and the ECS deployments no record explains (``outside``)."""

    records: tuple[DeploymentRecord, ...]
    news: tuple[News, ...] = ()
    state: ServiceState | None = None
    outside: tuple[EcsDeployment, ...] = ()
    at: datetime | None = None


@dataclass(frozen=True)
class Settled(Event):
    """This process closed ``record`` with ``final`` (once per outcome across processes: the
    close is conditional)."""

    record: DeploymentRecord
    final: Snapshot


@dataclass(frozen=True)
class LockReleased(Event):
    """This process released the deploy lock ``record`` held (the queue may take its turn)."""

    record: DeploymentRecord


@dataclass(frozen=True)
class BreakGlassUsed(Event):
    """A rule was bypassed with ``--break-glass`` to start ``record``: ``news`` is recorded
    in the table for the target's channel (a bot says it there); ``unrecorded``: why it
    could not be ("" when it was)."""

    record: DeploymentRecord
    news: News
    unrecorded: str = ""


# --- the queue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockFree(Event):
    """The lock is free and ``item`` asked to be told (taken off the queue by this process)."""

    item: QueuedItem


@dataclass(frozen=True)
class TurnStarting(Event):
    """``item``'s turn came and its plan holds: it starts once every subscriber has said so."""

    item: QueuedItem
    tag: str


@dataclass(frozen=True)
class TurnStarted(Event):
    """``item`` started as ``record``."""

    item: QueuedItem
    record: DeploymentRecord


@dataclass(frozen=True)
class TurnRefused(Event):
    """``item``'s turn came and it did not start: ``refused`` says why (None: no reason was
    given); ``at_start``: its plan held, the start itself refused it."""

    item: QueuedItem
    refused: DeployError | None
    at_start: bool = False


# --- the bus ----------------------------------------------------------------------------------


class EventBus:
    """Subscribers per event class; see the module's docstring for ``publish``/``deliver``."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[Any], object]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, kind: type[E], handler: Callable[[E], object]) -> Callable[[], None]:
        """Call ``handler`` with every ``kind`` event from now on; returns the unsubscribe."""
        with self._lock:
            self._handlers.setdefault(kind, []).append(handler)

        def unsubscribe() -> None:
            with self._lock:
                handlers = self._handlers.get(kind, [])
                if handler in handlers:
                    handlers.remove(handler)

        return unsubscribe

    def subscribed(self, kind: type[Event]) -> bool:
        with self._lock:
            return bool(self._handlers.get(kind))

    def _of(self, event: Event) -> list[Callable[[Any], object]]:
        with self._lock:
            return list(self._handlers.get(type(event), ()))

    def publish(self, event: Event) -> None:
        """Tell every subscriber at once, from any thread; handlers must return at once."""
        for handler in self._of(event):
            try:
                result = handler(event)
                if inspect.isawaitable(result):  # a coroutine here has no loop to run on
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                    raise TypeError(f"{handler!r} is async: deliver {type(event).__name__}")
            except Exception:  # a subscriber's trouble never stops the bookkeeping
                log.exception("a subscriber of %s failed", type(event).__name__)

    async def deliver(self, event: Event) -> None:
        """Tell every subscriber in turn, awaiting each (from the supervisor's event loop)."""
        for handler in self._of(event):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a subscriber of %s failed", type(event).__name__)
