"""Who hears what: a target's ``notify`` channels and ``webhooks``, fed by its supervisor's events.

A ``Notifier`` subscribes to each target's bus (bot/deploy/events.py): ``DeploymentStarted``
(this process started a deployment), ``Settled`` (this process closed its record: once per
outcome across processes, the close is a conditional write) and ``Looked`` (a pass's newest
records: what a terminal started or closed, or a replica that died before delivering, within
CATCH_UP). Each event goes to the target's
entries whose ``on`` lists its kind (``started``, ``completed``, ``failed``, ``rolled_back``,
``aborted``, ``replaced``, ``not_started``), each delivery claimed first in the table (a
conditional write keyed by deployment, kind and entry, as a CI notice's button is): whatever
the replicas and however an event reached them, one delivery per event and entry.

Deliveries never block a deploy: the bus hands the event over at once (``publish`` is called
from the poller's thread) and each delivery is a task of its own on the bot's loop, retried
with backoff (RETRY_DELAYS: 1, 2, 4, 8, 16 s) while the endpoint answers 5xx, 429 or nothing;
a 4xx other than 429 is final. What was never delivered is logged.

The webhook formats (docs/OPERATIONS.md, "Who hears what", has an example of each):

- ``deploybot`` (the default): the event as JSON, schema ``version`` 1 (``event_body``),
  signed as Slack and GitHub sign theirs: ``X-Deploybot-Timestamp`` (Unix seconds) and
  ``X-Deploybot-Signature: v1=HEX``, HEX being HMAC-SHA256 over ``v1:{timestamp}:{body}``
  with the secret (the receiver recomputes it, compares in constant time, and refuses a
  timestamp more than five minutes old: a replayed delivery);
- ``grafana``: an annotation for Grafana's HTTP API (``POST /api/annotations``: ``time``,
  ``timeEnd`` in epoch milliseconds, ``tags``, ``text``; grafana.com/docs/grafana/latest/
  developer-resources/api-reference/http-api/annotations), the secret sent as
  ``Authorization: Bearer`` (a service account token);
- ``datadog``: an event for Datadog's API (``POST /api/v1/events``: ``title``, ``text``,
  ``tags``, ``alert_type``, ``aggregation_key``, ``date_happened``; docs.datadoghq.com/api/
  latest/events/post-an-event), the secret sent as ``DD-API-KEY``.

The secret is never in deploybot.toml: ``secret_env`` names the bot's environment variable
holding it (on ECS a task secret). Unset, nothing is sent to that entry (logged, and said in
the channel by the Slack side at start).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bot.deploy.engine import Engine
from bot.deploy.events import DeploymentStarted, Looked, Settled
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.errors import DeployError
from bot.target import Target, WebhookSink
from bot.targets import Targets

log = logging.getLogger("deploybot.notify")

SCHEMA_VERSION = 1
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)  # between attempts: six attempts over about 31 s
TIMEOUT_SECONDS = 10.0  # one attempt's
# A deployment another process started or closed (a terminal that followed it to its end, a
# replica that died before delivering) is heard from the supervisor's passes (Looked) while
# it is this recent.
CATCH_UP = timedelta(minutes=15)
SIGNATURE_HEADER = "X-Deploybot-Signature"
TIMESTAMP_HEADER = "X-Deploybot-Timestamp"

_KINDS = {
    Outcome.COMPLETED: "completed",
    Outcome.FAILED: "failed",
    Outcome.ROLLED_BACK: "rolled_back",
    Outcome.ABORTED: "aborted",
    Outcome.REPLACED: "replaced",
    Outcome.NOT_STARTED: "not_started",
}
_ICONS = {"started": "🚀", "completed": "✅", "not_started": "🚫", "replaced": "⏭️"}

Say = Callable[[str, str], Awaitable[object]]


def kind_of(record: DeploymentRecord) -> str | None:
    """The event kind of a settled record (None: not settled for good)."""
    return _KINDS.get(record.outcome) if record.outcome is not None else None


def _stamp(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at else None


def event_body(kind: str, target: Target, record: DeploymentRecord) -> dict[str, Any]:
    """deploybot's event, schema version 1 (docs/OPERATIONS.md has it field by field)."""
    return {
        "version": SCHEMA_VERSION,
        "id": f"{record.id}:{kind}",
        "event": kind,
        "target": target.name,
        "service": f"{target.cluster}/{target.service}",
        "deployment": {
            "id": record.id,
            "kind": record.kind,
            "tag": record.tag,
            "digest": record.digest,
            "previous_tag": record.previous_tag,
            "who": record.who_display or record.who,
            "source": record.source,
            "reason": record.reason,
            "started_at": _stamp(record.started_at),
            "finished_at": _stamp(record.finished_at),
            "outcome": record.outcome.value if record.outcome else None,
            "outcome_reason": record.outcome_reason,
        },
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` and HMAC-SHA256 over ``v1:{timestamp}:{body}`` (Slack's v0 scheme, renamed)."""
    mac = hmac.new(secret.encode(), b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _sentence(kind: str, target: Target, record: DeploymentRecord) -> str:
    what = f"{record.kind} of {record.tag} to {target.name}"
    said = kind.replace("_", " ")
    text = f"{what}: {said}" + (f" (by {record.who_display or record.who})" if record.who else "")
    if record.outcome_reason and kind not in ("started", "completed"):
        text += f". {record.outcome_reason.rstrip('.')}."
    return text


def request_for(
    hook: WebhookSink, secret: str, kind: str, target: Target, record: DeploymentRecord
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery in the hook's format."""
    headers = {"Content-Type": "application/json", "User-Agent": "deploybot"}
    if hook.format == "grafana":
        at = record.finished_at if kind != "started" and record.finished_at else record.started_at
        payload: dict[str, Any] = {
            "time": int(record.started_at.timestamp() * 1000),
            "tags": ["deploybot", target.name, kind, record.tag],
            "text": _sentence(kind, target, record),
        }
        if kind != "started":
            payload["timeEnd"] = int(at.timestamp() * 1000)
        headers["Authorization"] = f"Bearer {secret}"
    elif hook.format == "datadog":
        payload = {
            "title": f"deploybot: {_sentence(kind, target, record)}"[:100],
            "text": _sentence(kind, target, record),
            "tags": ["source:deploybot", f"target:{target.name}", f"event:{kind}"],
            "alert_type": {"started": "info", "completed": "success"}.get(kind, "error"),
            "aggregation_key": record.id[:100],
            "date_happened": int(time.time()),
            "source_type_name": "deploybot",
        }
        headers["DD-API-KEY"] = secret
    else:
        payload = event_body(kind, target, record)
        headers["X-Deploybot-Event"] = kind
        headers["X-Deploybot-Delivery"] = payload["id"]
    body = json.dumps(payload, separators=(",", ":")).encode()
    if hook.format == "deploybot":
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return body, headers


def _sink_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class Notifier:
    """Delivers each target's events to its notify channels (``say``: the Slack side's post)
    and webhooks. ``targets``: the fleet's targets as they are now (a reload changes who
    hears what from the next event on)."""

    def __init__(
        self,
        targets: Callable[[], Targets],
        engine_of: Callable[[Target], Engine],
        say: Say | None = None,
        *,
        delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.targets, self.engine_of, self.say, self.delays = targets, engine_of, say, delays
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._seen: set[tuple[str, str]] = set()  # (deployment, event) handed over here

    def watch(self, name: str, engine: Engine) -> None:
        """Hear target ``name``'s events (from the loop the deliveries are to run on)."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe += [
            engine.events.subscribe(
                DeploymentStarted, lambda e: self._handoff(name, "started", e.record)
            ),
            engine.events.subscribe(Settled, lambda e: self._settled(name, e.record)),
            engine.events.subscribe(Looked, lambda e: self._looked(name, e)),
        ]

    def _looked(self, name: str, event: Looked) -> None:
        """What a pass saw: recent deployments this process did not start or close (a
        terminal's, a replica's that died) are heard too; the table's claim keeps each
        delivery single."""
        since = (event.at or datetime.now(UTC)) - CATCH_UP
        for record in event.records:
            if record.started_at >= since:
                self._handoff(name, "started", record)
            kind = kind_of(record)
            if kind is not None and record.finished_at is not None and record.finished_at >= since:
                self._handoff(name, kind, record)

    def _settled(self, name: str, record: DeploymentRecord) -> None:
        kind = kind_of(record)
        if kind is not None:
            self._handoff(name, kind, record)

    def _handoff(self, name: str, kind: str, record: DeploymentRecord) -> None:
        """From any thread, at once: the deliveries run on the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._start, name, kind, record)

    def _start(self, name: str, kind: str, record: DeploymentRecord) -> None:
        if (record.id, kind) in self._seen:
            return
        if len(self._seen) > 10_000:  # far more than CATCH_UP holds: forget the oldest passes
            self._seen.clear()
        self._seen.add((record.id, kind))
        try:
            target = self.targets().get(name)
        except DeployError:
            return  # the target is gone from the configuration
        for sink in target.notify:
            if kind in sink.on:
                self._spawn(self._tell(target, sink.channel, kind, record))
        for hook in target.webhooks:
            if kind in hook.on:
                self._spawn(self._post(target, hook, kind, record))

    def _spawn(self, job: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, target: Target, kind: str, record: DeploymentRecord, sink: str) -> bool:
        key = f"notify:{record.id}:{kind}:{_sink_key(sink)}"
        try:
            return await asyncio.to_thread(self.engine_of(target).claim_ci_notice, key, "notify")
        except DeployError as exc:
            log.warning("not delivering %s of %s to %s: %s", kind, record.id, sink, exc.message)
            return False

    async def _tell(
        self, target: Target, channel: str, kind: str, record: DeploymentRecord
    ) -> None:
        if self.say is None or not await self._claim(target, kind, record, channel):
            return
        icon = _ICONS.get(kind, "❌")
        try:
            await self.say(channel, f"{icon} {_sentence(kind, target, record)}")
        except Exception as exc:
            log.warning("could not tell %s of %s (%s): %s", channel, record.id, kind, exc)

    async def _post(
        self, target: Target, hook: WebhookSink, kind: str, record: DeploymentRecord
    ) -> None:
        secret = os.environ.get(hook.secret_env, "")
        if not secret:
            log.error(
                "webhook %s of %s: %s is not set; nothing sent", hook.url, target.name,
                hook.secret_env,
            )  # fmt: skip
            return
        if not await self._claim(target, kind, record, hook.url):
            return
        body, headers = request_for(hook, secret, kind, target, record)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
            )
        why = ""
        for attempt, delay in enumerate((*self.delays, None)):
            try:
                async with self._session.post(hook.url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        log.info(
                            "webhook delivered",
                            extra={"url": hook.url, "event": kind, "attempt": attempt + 1},
                        )
                        return
                    why = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status != 429:
                        break  # the endpoint refuses it: sending it again changes nothing
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if delay is None:
                break
            await asyncio.sleep(delay)
        log.error("webhook %s never took %s of %s: %s", hook.url, kind, record.id, why)

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
