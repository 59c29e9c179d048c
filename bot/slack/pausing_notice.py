"""What one live message knows of ECS's traffic shifting: the stage and step of each snapshot
(when each was first seen, the furthest reached), and a pause awaiting a decision, looked up
once per hook (the test listener's check with it) and told to the requester in a DM, once
per hook whichever replica shows the message (a conditional write claims it).

It reads the snapshot's service deployment (``Snapshot.service_deployment``, ECS's own
ServiceDeployment) and asks the engine only for what the snapshot cannot say: the pause's
test listener, its check, a decision taken already.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.deploy.engine import Engine
from bot.deploy.pausing import Pause
from bot.deploy.progressive import Shift, StepClock
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Snapshot
from bot.errors import DeployError
from bot.mrkdwn import is_user_id
from bot.slack.pause_view import ShiftView, paused_notice
from bot.slack.requester import dm_or_ephemeral

log = logging.getLogger("deploybot.slack.pause")


# How often a message whose deployment bakes is shown again, so "baking 4 of 10 min" moves
# though ECS reports nothing new meanwhile (a snapshot comes only when something changed).
BAKE_REFRESH_SECONDS = 30.0


class Shown(Protocol):
    """The live message a PauseWatch belongs to (bot/slack/progress.py's ProgressMessage)."""

    record: DeploymentRecord | None
    channel: str
    ts: str

    def refresh(self) -> None:
        """Show the last snapshot again (its timers moved)."""


def service_deployment(snap: Snapshot | None) -> dict[str, Any] | None:
    """The snapshot's ServiceDeployment, when the engine read one (None on the fallback)."""
    return snap.service_deployment if snap is not None else None


class PauseWatch:
    """The traffic and the pause of one deployment's message."""

    def __init__(self, client: AsyncWebClient, engine: Engine, shown: Shown) -> None:
        self.client = client
        self.engine = engine
        self.shown = shown
        self.clock = StepClock()
        self.shift: Shift | None = None
        self.since: datetime | None = None
        self.pause: Pause | None = None
        self._ticker: asyncio.Task[None] | None = None

    def view(self, snap: Snapshot | None) -> ShiftView | None:
        """What the message shows of it at ``snap`` (None: ECS shifts no traffic we know of)."""
        if self.shift is None:
            return None
        final = snap is not None and snap.final
        now = snap.at if final and snap is not None else self.engine.clock.now()
        pause = self.pause if self.shift.hook is not None else None
        return ShiftView(self.shift, self.since, now, self.clock.furthest, pause)

    async def see(self, snap: Snapshot) -> None:
        """Note ``snap``'s shift; a new pause is looked up (and its requester told) once."""
        shift = Shift.of(service_deployment(snap))
        if shift is None:
            return
        self.shift = shift
        self.since = self.clock.see(shift, snap.at)
        self._tick_while_baking(shift, snap)
        hook = shift.hook
        record = self.shown.record
        if hook is None or record is None or snap.final:
            return
        if self.pause is not None and self.pause.hook.hook_id == hook.hook_id:
            return
        try:
            self.pause = await asyncio.to_thread(self.engine.pause_of, record, shift)
        except DeployError as exc:
            log.warning("could not read the pause: %s", exc, extra=record.log_fields)
            return
        await self.tell_requester(self.pause)

    def _tick_while_baking(self, shift: Shift, snap: Snapshot) -> None:
        baking = bool(shift.baking_minutes) and not shift.paused and not snap.final
        if baking and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.create_task(self._tick())
        elif not baking and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(BAKE_REFRESH_SECONDS)
            self.shown.refresh()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def tell_requester(self, pause: Pause) -> str:
        """DM the requester that their deployment waits for a decision (once per hook, in any
        process), or an ephemeral where Slack refuses the DM: "dm", "ephemeral", or "" when
        nobody was told."""
        record = pause.record
        if not (
            self.engine.settings.deploy_notify_requester
            and record.source in ("slack", "ci-button")
            and is_user_id(record.who)
        ):
            return ""
        try:
            if not await asyncio.to_thread(self.engine.claim_pause_notice, pause.hook.hook_id):
                return ""
        except DeployError as exc:
            log.warning("not telling the requester of the pause: %s", exc, extra=record.log_fields)
            return ""
        permalink = None
        if self.shown.ts:
            try:
                answer = await self.client.chat_getPermalink(
                    channel=self.shown.channel, message_ts=self.shown.ts
                )
                permalink = str(answer["permalink"])
            except Exception as exc:  # the DM goes without its link
                log.info("no permalink for the pause's DM: %s", exc)
        text = paused_notice(pause, self.engine.target, permalink)
        # Where Slack refuses the DM (the app's Messages tab off, ...): an ephemeral beside
        # the deployment's message, as for its outcome (bot/slack/requester.py).
        channel = self.shown.channel or None
        return await dm_or_ephemeral(self.client, record, channel, {"text": text}, "pause")
