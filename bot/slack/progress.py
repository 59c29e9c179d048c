"""One live message per deployment: posted once, updated as the rollout moves, then final.

``chat.update`` goes out only when the content changed, at most every ``min_interval``
seconds (later changes coalesce into one update). New ECS events and stopped tasks go as
replies in the message's thread. A restarted bot resumes from the history record's
``message_ref`` and finishes the same message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.engine import Engine
from bot.deploy.ledger import DeploymentRecord
from bot.deploy.rollout import Snapshot
from bot.slack import messages
from bot.slack.messages import Message

log = logging.getLogger("deploybot.slack.progress")

REF_PREFIX = "slack:"


def message_ref(channel: str, ts: str) -> str:
    return f"{REF_PREFIX}{channel}:{ts}"


def parse_ref(ref: str) -> tuple[str, str] | None:
    if not ref.startswith(REF_PREFIX):
        return None
    channel, _, ts = ref[len(REF_PREFIX) :].partition(":")
    return (channel, ts) if channel and ts else None


class ProgressMessage:
    def __init__(
        self,
        client: AsyncWebClient,
        engine: Engine,
        record: DeploymentRecord,
        channel: str,
        ts: str = "",
        min_interval: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.client = client
        self.engine = engine
        self.record = record
        self.channel = channel
        self.ts = ts
        self.min_interval = min_interval
        self.clock = clock
        self.updates = 0
        self._shown: dict[str, Any] | None = None
        self._pending: Message | None = None
        self._last_update = -1e9
        self._flusher: asyncio.Task[None] | None = None

    def _render(self, snap: Snapshot | None) -> Message:
        return messages.progress(self.record, snap, self.engine.settings.slack_commands)

    def _log_extra(self) -> dict[str, str]:
        return {**self.record.log_fields, "channel": self.channel}

    async def post(self) -> None:
        """Post the message (first state) and remember where it is, for a restart."""
        msg = self._render(None)
        resp = await self.client.chat_postMessage(channel=self.channel, **msg.as_kwargs())
        self.ts = str(resp["ts"])
        self._shown = msg.as_kwargs()
        self._last_update = self.clock.monotonic()
        ref = message_ref(self.channel, self.ts)
        self.record = await asyncio.to_thread(self.engine.annotate, self.record, ref)
        log.info("progress message posted (ts %s)", self.ts, extra=self._log_extra())

    async def follow(self) -> Snapshot | None:
        """Render every snapshot until the outcome; returns the final one."""
        watch = self.engine.watch(self.record, asyncio.get_running_loop())
        final: Snapshot | None = None
        try:
            async for snap in watch:
                await self._reply(snap)
                await self._show(self._render(snap), final=snap.final)
                final = snap if snap.final else None
        finally:
            watch.close()
        if final is not None and self._shown == self._render(final).as_kwargs():
            await asyncio.to_thread(self.engine.ledger.mark_shown, self.record)
        return final

    async def finish(self) -> bool:
        """Show a closed record's kept final snapshot: its bot died before it could."""
        assert self.record.final is not None
        if await self._update(self._render(self.record.final)):
            await asyncio.to_thread(self.engine.ledger.mark_shown, self.record)
            return True
        return False

    async def _reply(self, snap: Snapshot) -> None:
        text = messages.thread_reply(snap)
        if not text:
            return
        try:
            await self.client.chat_postMessage(channel=self.channel, thread_ts=self.ts, text=text)
        except SlackApiError as exc:
            log.warning(
                "thread reply failed: %s", exc.response.get("error"), extra=self._log_extra()
            )

    async def _show(self, msg: Message, final: bool) -> None:
        self._pending = msg
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        if final:
            await self._flusher
            if self._pending is not None:  # arrived while the last flush was finishing
                await self._flush()

    async def _flush(self) -> None:
        while self._pending is not None:
            wait = self._last_update + self.min_interval - self.clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            msg, self._pending = self._pending, None
            if msg is None or msg.as_kwargs() == self._shown:
                continue
            await self._update(msg)

    async def _update(self, msg: Message) -> bool:
        for attempt in range(4):
            try:
                await self.client.chat_update(channel=self.channel, ts=self.ts, **msg.as_kwargs())
                self._shown = msg.as_kwargs()
                self.updates += 1
                self._last_update = self.clock.monotonic()
                return True
            except SlackApiError as exc:
                error = exc.response.get("error")
                log.warning(
                    "chat.update failed (%s), attempt %d",
                    error,
                    attempt + 1,
                    extra=self._log_extra(),
                )
                if error in ("message_not_found", "channel_not_found", "cant_update_message"):
                    return False
                await asyncio.sleep(2**attempt)
            except OSError as exc:
                log.warning("chat.update failed: %s", exc, extra=self._log_extra())
                await asyncio.sleep(2**attempt)
        return False


class ProgressBoard:
    """Every live message of this bot process, and the tasks that keep them moving."""

    def __init__(self, client: AsyncWebClient, engine: Engine, min_interval: float = 2.0) -> None:
        self.client = client
        self.engine = engine
        self.min_interval = min_interval
        self.messages: dict[str, ProgressMessage] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self, record: DeploymentRecord, channel: str) -> ProgressMessage:
        """Post the live message of a new deployment and follow it in the background."""
        progress = ProgressMessage(
            self.client, self.engine, record, channel, min_interval=self.min_interval
        )
        self.messages[record.id] = progress
        try:
            await progress.post()
        except SlackApiError as exc:
            log.error(
                "could not post the progress message: %s",
                exc.response.get("error"),
                extra={**record.log_fields, "channel": channel},
            )
        self.spawn(self._follow(progress), name=f"follow:{record.id}")
        return progress

    async def resume(self, fallback_channel: str | None = None) -> list[str]:
        """Finish the messages of deployments a previous bot process left open."""
        records = await asyncio.to_thread(self.engine.open_deployments)
        resumed = []
        for record in records:
            if record.id in self.messages:
                continue
            where = parse_ref(record.message_ref)
            if where is None and fallback_channel:
                await self.start(record, fallback_channel)
                resumed.append(record.id)
                continue
            if where is None:
                # Nowhere to show it; still follow it so the lock and history get closed.
                self.spawn(asyncio.to_thread(_drain, self.engine, record))
                resumed.append(record.id)
                continue
            channel, ts = where
            progress = ProgressMessage(
                self.client, self.engine, record, channel, ts, min_interval=self.min_interval
            )
            self.messages[record.id] = progress
            self.spawn(self._follow(progress), name=f"resume:{record.id}")
            resumed.append(record.id)
            log.info("resumed watching", extra=progress._log_extra())
        # Closed while no bot could show it (killed between the outcome and its chat.update).
        for record in await asyncio.to_thread(self.engine.ledger.unshown):
            where = parse_ref(record.message_ref)
            if where is None or record.final is None or record.id in self.messages:
                continue
            progress = ProgressMessage(
                self.client, self.engine, record, *where, min_interval=self.min_interval
            )
            self.spawn(progress.finish(), name=f"finish:{record.id}")
            resumed.append(record.id)
            log.info("showing a missed outcome", extra=progress._log_extra())
        return resumed

    async def _follow(self, progress: ProgressMessage) -> None:
        try:
            await progress.follow()
        except Exception:
            log.exception("following the deployment failed", extra=progress._log_extra())
        finally:
            self.messages.pop(progress.record.id, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _drain(engine: Engine, record: DeploymentRecord) -> None:
    for _ in engine.watch(record):
        pass
