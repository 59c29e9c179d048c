"""One live message per deployment: posted before any AWS write, updated as it rolls out, final.

The message is a watcher, nothing more: the engine's poller follows the rollout (lease
renewals, closing the record, releasing the lock) whatever Slack does. Any Slack failure
(an error answer, ``not_in_channel``, a connection drop, a timeout, 5xx after slack_sdk's
retries) is logged and retried with backoff; when Slack answers again the message shows the
current state, at the least the final one. Thread replies are best effort and never stop it.

``chat.update`` goes out only when the content changed, at most every ``min_interval``
seconds (later changes coalesce into one update). A restarted bot resumes from the history
record's ``message_ref`` and finishes the same message. The board renders the target's
supervisor (bot/deploy/supervisor.py): a deployment it adopts (Adopted) is shown as any other,
and each of its passes (Looked) shows outcomes settled later (a "still rolling out" that
completed).

Several bot replicas share the table: a message is shown by the replica that holds its
deployment's follower lease (the engine's), and only by it. The others leave it alone until
the lease lapses (its holder died), then one of them takes over the same message; the thread
replies already posted are in the record (``replied``) and are not posted again.

Every change is seen in the target's channel, whichever door made it. A deployment with no
message yet (a terminal's, ``--no-wait``'s) is posted there by one replica: the one that
follows it, or, while a terminal follows it, the one that claimed its first post in the
record (``Engine.claim_post``), which shows what ECS says of it at each pass until it ends and
its outcome is shown as any other (one that ended before the bot began looking is history, not
news). What terminals did that is no deployment (freeze, unfreeze,
abort, break-glass) is read from the table with the records and said once (``News``); an ECS
deployment no record explains is reported once (``Engine.claim_outside_report``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.changes import ChangeSummary
from bot.deploy.engine import Engine
from bot.deploy.events import Adopted, Looked
from bot.deploy.records import DeploymentRecord, News, Plan
from bot.deploy.rollout import EcsDeployment, Outcome, ServiceState, Snapshot
from bot.deploy.supervisor import Supervisor
from bot.deploy.verifying import baking, triggered_alarms
from bot.errors import DeployError
from bot.slack import messages
from bot.slack.announce import news_text, outside_text
from bot.slack.messages import Message
from bot.slack.pausing_notice import PauseWatch

log = logging.getLogger("deploybot.slack.progress")

REF_PREFIX = "slack:"
MAX_BACKOFF = 60.0
REPLY_TRIES = 4
# Answers that retrying cannot change: the message is gone or not the bot's, or what we send
# is wrong. Everything else (not_in_channel included: the bot may be invited back) is retried.
PERMANENT = frozenset(
    {"message_not_found", "cant_update_message", "msg_too_long", "invalid_blocks", "no_text"}
)


def message_ref(channel: str, ts: str) -> str:
    return f"{REF_PREFIX}{channel}:{ts}"


def parse_ref(ref: str) -> tuple[str, str] | None:
    if not ref.startswith(REF_PREFIX):
        return None
    channel, _, ts = ref[len(REF_PREFIX) :].partition(":")
    return (channel, ts) if channel and ts else None


def slack_problem(exc: BaseException) -> str:
    """What went wrong with a Slack call, in a few words (an error code or the exception)."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or "error")
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class ProgressMessage:
    """The Slack message of one deployment. ``record`` is None until the engine started it."""

    def __init__(
        self,
        client: AsyncWebClient,
        engine: Engine,
        record: DeploymentRecord | None,
        channel: str,
        ts: str = "",
        min_interval: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
        *,
        target: str = "",
        promote_to: tuple[str, ...] = (),
    ) -> None:
        self.client = client
        self.engine = engine
        self.record = record
        self.channel = channel
        self.ts = ts
        self.min_interval = min_interval
        self.clock = clock
        # The target's name when several are configured (the messages say which), and the
        # targets that take its completed images (a Promote button each).
        self.target = target
        self.promote_to = promote_to
        self.updates = 0
        self.failures = 0
        self.gave_up = ""
        # What the deployment changes (its plan's, or worked out again on a resume): shown in
        # the message, and reversed in its Rollback button's dialog.
        self.change: ChangeSummary | None = None
        self.final: Snapshot | None = None  # the outcome, once shown
        # A later deployment of the target started (Promote no longer applies), and completed
        # (Rollback no longer applies: this is not what runs).
        self.later: DeploymentRecord | None = None
        self.rollback_applies = True
        self._shown: dict[str, Any] | None = None
        self._pending: Message | None = None
        self._last_update = -1e9
        self._flusher: asyncio.Task[None] | None = None
        self._replies: asyncio.Queue[tuple[str, frozenset[str]]] = asyncio.Queue()
        self._replier: asyncio.Task[None] | None = None
        self._posted = asyncio.Event()
        if ts:
            self._posted.set()
        # Set when its board is done with it (followed or finished to the end, or stopped).
        self.done = asyncio.Event()
        # What ECS's service deployment showed that the message keeps (bot/deploy/verifying.py):
        # when each alarm that failed it went to ALARM (read while it was), when ECS's bake
        # was first seen.
        self.went_off: dict[str, datetime] = {}
        self.bake_seen: datetime | None = None
        self._alarms_asked: set[str] = set()
        # ECS's traffic shifting and a pause awaiting a decision (bot/slack/pausing_notice.py).
        self.pause_watch = PauseWatch(client, engine, self)

    @property
    def ref(self) -> str:
        return message_ref(self.channel, self.ts)

    def _render(self, snap: Snapshot | None) -> Message:
        assert self.record is not None
        return messages.progress(
            self.record,
            snap,
            self.engine.settings.slack_commands,
            change=self.change,
            console_url=self.engine.console_url,
            target=self.target,
            promote_to=self.promote_to,
            later=self.later,
            rollback_applies=self.rollback_applies,
            region=self.engine.aws.region,
            went_off=self.went_off,
            bake_seen=self.bake_seen,
            shift=self.pause_watch.view(snap),
            rules=self.engine.target,
        )

    async def retire(self, later: DeploymentRecord, *, completed: bool) -> None:
        """A later deployment of the target started (``completed``: and completed): show the
        outcome without the buttons that no longer apply, naming the later one. Their clicks
        would be refused: Promote "no longer staging's last", Rollback "no longer what runs".
        A later one that failed and was rolled back leaves this one running: its Rollback
        stays."""
        if self.final is None:
            return
        self.later = later
        self.rollback_applies = self.rollback_applies and not completed
        msg = self._render(self.final)
        if msg.as_kwargs() != self._shown:
            self._show(msg)
            await self._settle_display()

    async def recall_change(self) -> None:
        """Work out again what a resumed deployment changes (its plan is gone with the
        process that made it). Best effort: without it the message shows the rest."""
        record = self.record
        if self.change is not None or record is None or record.kind == "redeploy":
            return
        before = record.previous_digest or record.previous_image or None
        try:
            self.change = await asyncio.to_thread(
                self.engine.change_between, before, record.digest or record.image
            )
        except Exception as exc:
            log.warning("no change summary for the message: %s", exc, extra=self._log_extra())

    def _log_extra(self) -> dict[str, str]:
        fields = self.record.log_fields if self.record else {}
        return {**fields, "channel": self.channel}

    # -- before the change --------------------------------------------------------------------
    async def post_starting(self, plan: Plan) -> None:
        """Post the "starting" message: one try, and any failure is the caller's to refuse on
        (nothing has changed yet)."""
        msg = messages.starting(plan, target=self.target)
        self.change = plan.change
        resp = await self.client.chat_postMessage(channel=self.channel, **msg.as_kwargs())
        self.ts = str(resp["ts"])
        self._shown = msg.as_kwargs()
        self._last_update = self.clock.monotonic()
        self._posted.set()
        log.info(
            "starting message posted (ts %s)",
            self.ts,
            extra={**self._log_extra(), "tag": plan.tag, "who": plan.requester.who},
        )

    async def refused(self, plan: Plan, reason: str) -> None:
        """The deployment was refused after its message was posted: say so there."""
        await self.show_now(messages.refused_after_post(plan, reason, self.target), tries=4)

    # -- following ----------------------------------------------------------------------------
    async def follow(self) -> Snapshot | None:
        """Render every snapshot until the outcome; returns the final one. Never raises for
        Slack: it keeps trying until the final state is shown (or the bot stops)."""
        assert self.record is not None
        watch = self.engine.watch(self.record, asyncio.get_running_loop())
        final: Snapshot | None = None
        # The watch stays open until the outcome is on screen: the engine keeps the follower
        # lease meanwhile, so no other replica shows it too.
        try:
            async for snap in watch:
                await self.pause_watch.see(snap)
                text = messages.thread_reply(snap)
                if text:
                    self._reply(text, _reply_ids(snap))
                await self._keep_what_ecs_said(snap)
                self._show(self._render(snap))
                if snap.final:
                    final = snap
            if watch.handed_over:
                await self._handed_over()
                return None
            await self._settle_display()
            if final is not None and self._shown == self._render(final).as_kwargs():
                await self._mark_shown()
                self.final = final
        finally:
            watch.close()
        return final

    async def _keep_what_ecs_said(self, snap: Snapshot) -> None:
        """When ECS's bake was first seen; when each alarm that failed the deployment went to
        ALARM, asked of CloudWatch once (best effort: without it the message says when ECS
        started the rollback)."""
        sd = snap.service_deployment
        if not sd:
            return
        if self.bake_seen is None and baking(sd):
            self.bake_seen = snap.at
        fired = [n for n in triggered_alarms(sd) if n not in self._alarms_asked]
        if not fired:
            return
        self._alarms_asked.update(fired)
        try:
            views = await asyncio.to_thread(self.engine.alarms_now, fired)
        except DeployError as exc:
            log.warning("when the alarms went off is not known: %s", exc, extra=self._log_extra())
            return
        self.went_off.update({v.name: v.since for v in views if v.state == "ALARM" and v.since})

    async def _handed_over(self) -> None:
        """Another process follows the deployment now: it shows the message from here on."""
        log.info("another bot process shows this deployment now", extra=self._log_extra())
        self._pending = None
        for task in (self._flusher, self._replier):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def finish(self) -> bool:
        """Show a closed record's kept final snapshot (its bot died before it could, or a
        reconcile settled it later)."""
        assert self.record is not None and self.record.final is not None
        final = self.record.final
        self._show(self._render(final))
        await self._settle_display()
        shown = self._shown == self._render(final).as_kwargs()
        if shown:
            await self._mark_shown()
            self.final = final
        return shown

    async def _mark_shown(self) -> None:
        assert self.record is not None
        try:
            await asyncio.to_thread(self.engine.mark_shown, self.record)
        except DeployError as exc:  # the periodic pass shows it again later: harmless
            log.warning("could not mark the message shown: %s", exc, extra=self._log_extra())

    # -- the message ----------------------------------------------------------------------------
    def _show(self, msg: Message) -> None:
        self._pending = msg
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def show_now(self, msg: Message, tries: int | None = None) -> bool:
        """Show ``msg`` (retrying ``tries`` times, or until it is shown); True once shown."""
        self._pending = msg
        delay = 1.0
        attempt = 0
        while self._pending is msg:
            attempt += 1
            if await self._send(msg):
                return True
            if self.gave_up or (tries is not None and attempt >= tries):
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        return True

    async def _settle_display(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._pending is not None and not self.gave_up:  # came while the flush finished
            self._flusher = asyncio.create_task(self._flush())
            await self._settle_display()

    async def _flush(self) -> None:
        delay = 1.0
        while self._pending is not None and not self.gave_up:
            wait = self._last_update + self.min_interval - self.clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            msg = self._pending
            if msg is None:
                return
            if msg.as_kwargs() == self._shown:
                if self._pending is msg:
                    self._pending = None
                continue
            if await self._send(msg):
                delay = 1.0
                continue
            if self.gave_up:
                return
            # Slack is not taking it: wait, then send whatever is newest by then.
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _send(self, msg: Message) -> bool:
        """One attempt to put ``msg`` on screen (posting the message first if it has none)."""
        try:
            if not self.ts:
                resp = await self.client.chat_postMessage(channel=self.channel, **msg.as_kwargs())
                self.ts = str(resp["ts"])
                self._posted.set()
                await self._remember_where()
            else:
                await self.client.chat_update(channel=self.channel, ts=self.ts, **msg.as_kwargs())
        except SlackApiError as exc:
            return self._failed(exc, str(exc.response.get("error") or ""))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection errors, timeouts: Slack is away
            return self._failed(exc, "")
        self._shown = msg.as_kwargs()
        if self._pending is msg:
            self._pending = None
        self.updates += 1
        self._last_update = self.clock.monotonic()
        if self.failures:
            log.info(
                "Slack answers again; the message shows the current state",
                extra=self._log_extra(),
            )
            self.failures = 0
        return True

    def _failed(self, exc: BaseException, error: str) -> bool:
        self.failures += 1
        level = logging.WARNING if self.failures in (1, 5) or self.failures % 20 == 0 else 0
        if level:
            log.warning(
                "Slack did not take the message (%s), attempt %d; trying again",
                slack_problem(exc),
                self.failures,
                extra=self._log_extra(),
            )
        if error in PERMANENT:
            self.gave_up = error
            log.error("giving up on the message: %s", error, extra=self._log_extra())
        return False

    async def _remember_where(self) -> None:
        if self.record is None:
            return
        try:
            self.record = await asyncio.to_thread(self.engine.annotate, self.record, self.ref)
        except DeployError as exc:
            log.warning("could not record the message's place: %s", exc, extra=self._log_extra())

    # -- thread replies -------------------------------------------------------------------------
    def _reply(self, text: str, ids: frozenset[str] = frozenset()) -> None:
        self._replies.put_nowait((text, ids))
        if self._replier is None or self._replier.done():
            self._replier = asyncio.create_task(self._send_replies())

    async def _send_replies(self) -> None:
        """Replies in order; each tried a few times, then dropped (the message is what counts).
        Each one posted is noted in the record, so a replica taking over does not repeat it."""
        while not self._replies.empty():
            text, ids = self._replies.get_nowait()
            await self._posted.wait()
            for attempt in range(REPLY_TRIES):
                try:
                    await self.client.chat_postMessage(
                        channel=self.channel, thread_ts=self.ts, text=text
                    )
                    await self._note_replied(ids)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "thread reply failed (%s), attempt %d",
                        slack_problem(exc),
                        attempt + 1,
                        extra=self._log_extra(),
                    )
                    await asyncio.sleep(min(2.0**attempt, MAX_BACKOFF))

    async def _note_replied(self, ids: frozenset[str]) -> None:
        if not ids or self.record is None:
            return
        try:
            await asyncio.to_thread(self.engine.mark_replied, self.record, ids)
        except DeployError as exc:  # a replica taking over may say it again: harmless
            log.warning("could not note the thread reply: %s", exc, extra=self._log_extra())


def _reply_ids(snap: Snapshot) -> frozenset[str]:
    """What a thread reply of ``snap`` says, by id: its ECS events and stopped tasks."""
    return frozenset([e.id for e in snap.new_events] + [t.arn for t in snap.stopped_tasks])


class ProgressBoard:
    """Every live message of this bot process, and the tasks that keep them moving."""

    def __init__(
        self,
        client: AsyncWebClient,
        engine: Engine,
        min_interval: float = 2.0,
        *,
        target: str = "",
        promote_to: tuple[str, ...] = (),
    ) -> None:
        self.client = client
        self.engine = engine
        self.min_interval = min_interval
        self.target = target  # see ProgressMessage
        self.promote_to = promote_to
        self.messages: dict[str, ProgressMessage] = {}
        # Messages of deployments another process follows (a terminal): shown from what ECS
        # says at each pass, until the record is closed (then finished as any other).
        self.shadows: dict[str, ProgressMessage] = {}
        # The last outcome this board showed, whose buttons apply until the next deployment.
        self.latest: ProgressMessage | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # The target's channel: where what has no message yet is posted.
        self.fallback_channel: str | None = None
        self._reported: set[str] = set()  # ECS deployments reported (or claimed elsewhere)
        # The target's loops, whose events this board renders (``subscribe``).
        self.supervisor: Supervisor | None = None
        # Where shadowed messages are, for a record read before its message_ref was written.
        self._refs: dict[str, str] = {}

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _message(
        self, record: DeploymentRecord | None, channel: str, ts: str = ""
    ) -> ProgressMessage:
        return ProgressMessage(
            self.client,
            self.engine,
            record,
            channel,
            ts,
            min_interval=self.min_interval,
            target=self.target,
            promote_to=self.promote_to,
        )

    async def open(self, plan: Plan, channel: str) -> ProgressMessage:
        """Post a deployment's message before anything changes (raises if Slack refuses)."""
        progress = self._message(None, channel)
        await progress.post_starting(plan)
        return progress

    def unposted(self, plan: Plan, channel: str) -> ProgressMessage:
        """The message of a deployment that starts before it could be posted (a queued turn
        while Slack is away): posted by its first update, once Slack answers."""
        progress = self._message(None, channel)
        progress.change = plan.change
        return progress

    def follow(self, progress: ProgressMessage, record: DeploymentRecord) -> None:
        """Render ``record`` (started by the engine, which follows it) in ``progress``."""
        progress.record = record
        self.messages[record.id] = progress
        self._started(record)
        if progress.ts:
            log.info(
                "progress message posted (ts %s) before the start",
                progress.ts,
                extra=progress._log_extra(),
            )
        self.spawn(self._follow(progress), name=f"follow:{record.id}")

    def watch(self, record: DeploymentRecord) -> bool:
        """Follow ``record`` (the engine) and show it where its ``message_ref`` says, or in
        the fallback channel; False when it is shown nowhere (it is followed all the same)."""
        if record.id in self.messages:
            return True
        where = parse_ref(record.message_ref or self._refs.get(record.id, ""))
        if where is None and not self.fallback_channel:
            return False
        channel, ts = where or (self.fallback_channel or "", "")
        progress = self._message(record, channel, ts)
        self.messages[record.id] = progress
        self.spawn(self._follow(progress), name=f"resume:{record.id}")
        log.info("watching a deployment", extra=progress._log_extra())
        return True

    def subscribe(self, supervisor: Supervisor) -> None:
        """Render what ``supervisor`` (the target's loops) says: a deployment it follows now
        is shown where its record says (or posted in the fallback channel), and what each of
        its passes saw is shown once, whatever the replicas."""
        self.supervisor = supervisor
        supervisor.wants_state = lambda: bool(self.shadows)
        supervisor.events.subscribe(Adopted, lambda event: self.watch(event.record))
        supervisor.events.subscribe(Looked, self.seen)

    async def where(self, record: DeploymentRecord) -> tuple[str, str] | None:
        """Where ``record``'s message is (channel, ts), once this board is done showing it
        (its outcome on screen, Slack away meanwhile or not: what links to it comes after, as
        the requester's DM did when the message sent it); else where its record says."""
        progress = self.messages.get(record.id)
        if progress is not None:
            await progress.done.wait()
            if progress.ts:
                return progress.channel, progress.ts
        return parse_ref(record.message_ref or self._refs.get(record.id, ""))

    @property
    def since(self) -> datetime | None:
        """When the supervisor's passes began: a deployment with no message that ended before
        is history, not news (the playground's first release, a team's years of `make
        deploy`)."""
        return self.supervisor.since if self.supervisor is not None else None

    async def _finish_unshown(self, records: list[DeploymentRecord]) -> list[str]:
        """Closed records whose message does not show their outcome, and whose follower is
        gone: show it (holding the follower lease meanwhile)."""
        finished = []
        for record in records:
            if record.open or record.shown or record.final is None or record.id in self.messages:
                continue
            where = parse_ref(record.message_ref)
            if where is None or self.engine.followed_elsewhere(record):
                continue
            if not await asyncio.to_thread(self.engine.own, record):
                continue
            progress = self._message(record, *where)
            self.messages[record.id] = progress
            self.spawn(self._finish(progress), name=f"finish:{record.id}")
            finished.append(record.id)
            log.info("showing an outcome settled since", extra=progress._log_extra())
        return finished

    async def seen(self, looked: Looked) -> None:
        """Show what a pass saw: say what terminals did, finish the messages of outcomes
        settled since, post the deployments that have none and report ECS deployments no
        record explains."""
        records = list(looked.records)
        await self._announce(list(looked.news))
        await self._end_shadows(records)
        await self._finish_unshown(records)
        await self._post_unposted(records, looked.state)
        if looked.outside:
            await self._report_outside(looked.outside)

    # -- what no message shows yet --------------------------------------------------------------
    async def _post_unposted(
        self, records: list[DeploymentRecord], state: ServiceState | None
    ) -> None:
        """Post, once whatever the replicas, every recent deployment that has no message: one a
        terminal follows (shown here from ECS until it ends) or one that ended unseen (its
        outcome). One nobody follows is adopted by the supervisor and posted by its watcher."""
        channel = self.fallback_channel
        now = self.engine.clock.now()
        for record in records:
            if not channel:
                return
            if record.id in self.messages:
                continue
            if parse_ref(record.message_ref or self._refs.get(record.id, "")) is not None:
                continue
            shadow = self.shadows.get(record.id)
            if shadow is not None:
                if state is not None:
                    shadow._show(shadow._render(_seen(record, state, now)))
                continue
            if record.open:
                if not self._started_and_followed_elsewhere(record):
                    continue  # followed here, or by a bot that took it: its watcher posts it
            elif (
                record.finished_at is None or self.since is None or record.finished_at < self.since
            ):
                continue
            elif not await asyncio.to_thread(self.engine.own, record):
                continue  # another replica shows it
            try:
                claimed = await asyncio.to_thread(self.engine.claim_post, record)
            except DeployError as exc:
                log.warning("could not claim the message: %s", exc, extra=record.log_fields)
                claimed = False
            if not claimed:
                if not record.open:
                    await asyncio.to_thread(self.engine.disown, record)
                continue
            progress = self._message(record, channel)
            log.info("posting a deployment that has no message", extra=progress._log_extra())
            if record.open:
                self.shadows[record.id] = progress
                snap = _seen(record, state, now) if state is not None else None
                self.spawn(self._shadow(progress, snap), name=f"shadow:{record.id}")
            else:
                self.messages[record.id] = progress
                self.spawn(self._finish(progress), name=f"finish:{record.id}")

    def _started_and_followed_elsewhere(self, record: DeploymentRecord) -> bool:
        """The process that started ``record`` follows it still, elsewhere (a terminal that
        waits): no bot follows it, so one shows it. A bot replica that follows a record (one
        it took over, a ``--no-wait`` deploy) shows it itself."""
        return (
            bool(record.starter)
            and record.follower == record.starter
            and self.engine.followed_elsewhere(record)
        )

    async def _shadow(self, progress: ProgressMessage, snap: Snapshot | None) -> None:
        try:
            await progress.recall_change()
            progress._show(progress._render(snap))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("showing the deployment failed", extra=progress._log_extra())

    async def _end_shadows(self, records: list[DeploymentRecord]) -> None:
        """A shadowed deployment that ended, or that this process follows now (its terminal
        died): its message is finished, or followed, as any other from here on (the same
        message, whether or not the record read already says where it is)."""
        by_id = {r.id: r for r in records}
        for record_id, shadow in list(self.shadows.items()):
            record = by_id.get(record_id)
            if record is not None and record.open and self._started_and_followed_elsewhere(record):
                continue
            del self.shadows[record_id]
            shadow.gave_up = "shown by another watcher now"  # nothing more from the shadow
            await shadow._handed_over()
            if record is None or not shadow.ts:
                continue
            self._refs[record.id] = shadow.ref
            if record.open or record.id in self.messages:
                continue  # followed here from now on: ``watch`` finds the message
            if not await asyncio.to_thread(self.engine.own, record):
                continue
            progress = self._message(replace(record, message_ref=shadow.ref), *_where(shadow))
            self.messages[record.id] = progress
            self.spawn(self._finish(progress), name=f"finish:{record.id}")

    async def _announce(self, news: list[News]) -> None:
        """Say what terminals did, each once: taken from the table by one replica, put back
        when Slack does not take it (the next pass tries again)."""
        channel = self.fallback_channel
        if not channel:
            return
        target = self.engine.target.name
        commands = self.engine.settings.slack_commands
        for item in news:
            if not await asyncio.to_thread(self.engine.take_news, item):
                continue
            try:
                await self.client.chat_postMessage(
                    channel=channel, text=news_text(item, target, commands), unfurl_links=False
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not announce the %s: %s", item.kind, slack_problem(exc))
                await asyncio.to_thread(self.engine.put_back_news, item)
                return
            log.info("announced a terminal's %s", item.kind, extra={"who": item.who})

    async def _report_outside(self, found: tuple[EcsDeployment, ...]) -> None:
        """Say, once whatever the replicas, that ECS rolls out a deployment deploybot did not
        start."""
        channel = self.fallback_channel
        if not channel:
            return
        for deployment in found:
            if deployment.id in self._reported:
                continue
            claimed = await asyncio.to_thread(self.engine.claim_outside_report, deployment.id)
            self._reported.add(deployment.id)
            if not claimed:
                continue
            image = await asyncio.to_thread(self.engine.image_of, deployment.task_definition)
            text = outside_text(deployment, image, self.engine.target.name, self.engine.console_url)
            try:
                await self.client.chat_postMessage(channel=channel, text=text, unfurl_links=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not report an outside deployment: %s", slack_problem(exc))
                continue
            log.warning(
                "ECS deployment %s was started outside deploybot",
                deployment.id,
                extra={"service": self.engine.service_name},
            )

    def _started(self, record: DeploymentRecord) -> None:
        """``record`` started: the last completed message loses its Promote."""
        latest = self.latest
        if latest is not None and latest.record is not None and latest.record.id != record.id:
            self.spawn(latest.retire(record, completed=False), name=f"retire:{latest.record.id}")

    def _shown(self, progress: ProgressMessage) -> None:
        """``progress`` shows its outcome. Completed, it is what runs: the one before loses its
        Rollback too, and this one is the latest (unless a later one was shown first: an old
        outcome finished late)."""
        latest, record, final = self.latest, progress.record, progress.final
        if final is None or record is None or final.outcome != Outcome.COMPLETED:
            return
        if latest is not None and latest.record is not None:
            if latest.record.started_at > record.started_at:
                return
            if latest.record.id != record.id:
                self.spawn(latest.retire(record, completed=True), name=f"retire:{latest.record.id}")
        self.latest = progress

    async def _follow(self, progress: ProgressMessage) -> None:
        try:
            await progress.recall_change()
            await progress.follow()
            self._shown(progress)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("showing the deployment failed", extra=progress._log_extra())
        finally:
            progress.done.set()
            if progress.record is not None:
                self.messages.pop(progress.record.id, None)

    async def _finish(self, progress: ProgressMessage) -> None:
        try:
            await progress.recall_change()
            await progress.finish()
            self._shown(progress)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("showing the outcome failed", extra=progress._log_extra())
        finally:
            progress.done.set()
            if progress.record is not None:
                self.messages.pop(progress.record.id, None)
                await asyncio.to_thread(self.engine.disown, progress.record)

    async def close(self) -> None:
        for shadow in self.shadows.values():
            await shadow._handed_over()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _where(progress: ProgressMessage) -> tuple[str, str]:
    return progress.channel, progress.ts


def _seen(record: DeploymentRecord, state: ServiceState, now: datetime) -> Snapshot:
    """What ECS says of a deployment another process follows, as a snapshot to show (that
    process judges it and closes the record)."""
    ours = state.deployment(record.ecs_deployment_id) if record.ecs_deployment_id else None
    return Snapshot(
        deployment_id=record.id,
        ecs_deployment_id=record.ecs_deployment_id,
        at=now,
        elapsed=(now - record.started_at).total_seconds(),
        rollout_state=ours.rollout_state if ours else "",
        rollout_reason=ours.rollout_reason if ours else "",
        desired=ours.desired if ours else 0,
        pending=ours.pending if ours else 0,
        running=ours.running if ours else 0,
        failed=ours.failed if ours else 0,
        note=f"followed by {record.who_display or record.who}'s terminal; shown here as ECS "
        "reports it",
    )
