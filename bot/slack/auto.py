"""Deploy on push: CI's notice deploys its image at once to the targets with ``auto_deploy``.

How the notice reaches the bot: CI posts it with the bot's token (bot/slack/notify.py) and
message metadata (``messages.NOTICE_EVENT``); Slack sends the app a
``message_metadata_posted`` event for it, to the event types the manifest's
``metadata_subscriptions`` names (docs.slack.dev/reference/events/message_metadata_posted).
Only a notice the bot's own token posted counts (the event's ``bot_id`` is the bot's): any
other app may post metadata of that type, and must not deploy.

Each target with ``auto_deploy`` (of those the notice offers the image to: the targets
without ``after``, or the one target) deploys it through the same rules as a click (the
``ci-auto`` door: channels, freeze, windows, queue, the lock), with the usual live message in
the notice's channel; a refusal is posted in the notice's thread. A target that is busy (its
lock held, or deploys queued before it) is no refusal: nobody would press a Deploy when free
button, so the image joins the target's queue itself (as continuous delivery waits for a
free stack), the thread says its place, and it goes at its turn, checked again then; what
its turn says that is not a start (refused at its turn) is said in the thread too. A target
with approvals never deploys on push: bot/targets.py refuses that file.

Once per notice, whatever the replicas: Slack sends an event to one connection, but retries
it (to any replica) when the ack is late; a conditional write in the table claims the
(notice, target) pair first, and the pair is never released, so a retried notice neither
deploys again nor says its refusal twice, nor queues it twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.deploy.records import Requester, Via
from bot.errors import DeployError, DeployRefused, LockHeld
from bot.mrkdwn import escape as esc
from bot.rules import Action, Door
from bot.slack import guards, messages
from bot.slack.context import BotContext
from bot.target import Target

log = logging.getLogger("deploybot.slack.auto")

# Who a deploy on push is recorded as (history, the live message): CI, through its door.
CI_REQUESTER = Requester(who="CI", source="ci-auto", display="CI (auto_deploy)")
REASON = "on push (auto_deploy)"


def register(app: AsyncApp, ctx: BotContext) -> None:
    @app.event("message_metadata_posted")
    async def metadata_posted(event: dict[str, Any], context: AsyncBoltContext) -> None:
        # Bolt acks events itself once the listener returns: the deploys go on in the
        # background, the ack within Slack's 3 seconds.
        ctx.run(image_pushed(ctx, event, context.bot_id), _no_reply, "CI's notice", CI_REQUESTER)


async def _no_reply(**_: Any) -> None:
    """Refusals of a deploy on push go to the notice's thread (``_thread``), not here."""


def auto_targets(ctx: BotContext) -> list[Target]:
    """The targets a notice deploys to on its own: of those it offers the image to (the
    targets without ``after``; the only one), those with ``auto_deploy``."""
    targets = ctx.fleet.targets
    offered = targets.direct() if len(targets) > 1 else [targets.default]
    return [t for t in offered if t.auto_deploy]


async def image_pushed(ctx: BotContext, event: dict[str, Any], own_bot: str | None) -> None:
    metadata = event.get("metadata") or {}
    if metadata.get("event_type") != messages.NOTICE_EVENT:
        return
    channel, ts = str(event.get("channel_id") or ""), str(event.get("message_ts") or "")
    if not own_bot or event.get("bot_id") != own_bot:
        log.warning(
            "ignored an image-pushed notice not posted by deploybot's token",
            extra={"channel": channel, "bot_id": event.get("bot_id")},
        )
        return
    tag = str((metadata.get("event_payload") or {}).get("tag") or "")
    if not tag or not channel or not ts:
        log.warning("ignored an image-pushed notice without its tag, channel or ts")
        return
    for target in auto_targets(ctx):
        await deploy_on_push(ctx, target, tag, channel, ts)


async def deploy_on_push(ctx: BotContext, target: Target, tag: str, channel: str, ts: str) -> None:
    """One target's deploy of the notice's image, once per notice across replicas."""
    engine = ctx.engine(target)
    claim = f"{channel}:{ts}:auto:{target.name}"
    try:
        if not await asyncio.to_thread(engine.claim_ci_notice, claim, CI_REQUESTER.who):
            log.info("notice already taken (a retried event)", extra={"target": target.name})
            return
    except DeployError as exc:
        # The table did not answer: deploying without the claim could deploy twice.
        await _thread(ctx, channel, ts)(
            text=f"Not deployed to {esc(target.name)} on push: {esc(exc.message)}"
        )
        return
    reply = _thread(ctx, channel, ts, target)

    async def busy(refused: DeployRefused) -> None:
        # Its text names the target: no name before it.
        await _queue(ctx, target, tag, channel, ts, refused, _thread(ctx, channel, ts))

    await guards.change(
        ctx,
        target,
        Action.DEPLOY,
        reply,
        channel,
        CI_REQUESTER,
        door=Door.CI_AUTO,
        tag=tag,
        reason=REASON,
        busy=busy,
    )


async def _queue(
    ctx: BotContext,
    target: Target,
    tag: str,
    channel: str,
    ts: str,
    refused: DeployRefused,
    reply: guards.Reply,
) -> None:
    """The target is busy (its lock held, or deploys queued before this one): the image joins
    its queue by itself, as a click on Deploy when free would, and goes at its turn, checked
    again then through the rules (bot/rules.py: the queue's door judges it as CI's); the
    thread says so. Nobody is at a screen to press a button."""
    engine = ctx.engine(target)
    via = Via(door=Door.CI_AUTO, channel=channel)
    try:
        item, position = await asyncio.to_thread(
            lambda: engine.enqueue(
                CI_REQUESTER, kind="deploy", tag=tag, reason=REASON, via=via, thread=ts
            )
        )
    except DeployError as exc:
        await reply(text=f"Not deployed to {esc(target.name)} on push: {esc(exc.message)}")
        return
    if isinstance(refused, LockHeld):
        busy = f"{esc(refused.holder)}'s rollout"
        if refused.tag:
            busy += f" of `{esc(refused.tag)}`"
        if refused.deployment_id:
            busy += f" (`{esc(refused.deployment_id)}`)"
    else:
        busy = "the deploys queued before it"
    text = (
        f"{esc(target.name)} is busy with {busy}; this image deploys when it is free: "
        f"number {position} in the queue. It is checked again when its turn comes, and "
        "announced in the channel when it starts."
    )
    # Cancel: anyone who may deploy to the target (CI is no person to cancel it itself).
    await reply(**guards.queued_message(item, position, target, text=text).as_kwargs())


def _thread(ctx: BotContext, channel: str, ts: str, target: Target | None = None) -> guards.Reply:
    """A ``respond`` that posts in the notice's thread (what a person would have been told
    in an ephemeral answer)."""

    async def reply(text: str = "", blocks: Any = None, **_: Any) -> None:
        name = f"*{esc(target.name)}*: " if target is not None and ctx.several else ""
        await ctx.client.chat_postMessage(
            channel=channel,
            thread_ts=ts,
            text=f"{name}{text}" if text else "",
            blocks=blocks,
        )

    return reply
