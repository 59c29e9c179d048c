"""Buttons: Deploy (a CI notice's, /deploy's list, the which-target question), Promote (on a
completed deployment of a target others come after) and Rollback (on a completed deployment).

A button's value says what to do (messages.button_value); the target comes from it, and a
plain value (a message from before targets, or a single-target bot) means the channel's
target. The rules decide as for the slash commands, at the button's door.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError

from bot import mrkdwn
from bot.deploy.engine import Engine
from bot.errors import DeployError, NothingToRollBack
from bot.rules import Action, Door
from bot.slack import guards, messages
from bot.slack.context import BotContext, log
from bot.target import Target

# ``deploy_tag`` and ``deploy_tag:staging``; ``promote:production``.
DEPLOY_ACTIONS = re.compile(rf"^{messages.DEPLOY_ACTION}({messages.SEP}.+)?$")
PROMOTE_ACTIONS = re.compile(rf"^{messages.PROMOTE_ACTION}{messages.SEP}.+$")


def register(app: AsyncApp, ctx: BotContext) -> None:
    @app.action(DEPLOY_ACTIONS)
    async def deploy_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(
            deploy(ctx, body, respond),
            respond,
            "the Deploy button",
            guards.clicker(body, "ci-button"),
        )

    @app.action(PROMOTE_ACTIONS)
    async def promote_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(
            promote(ctx, body, respond),
            respond,
            "the Promote button",
            guards.clicker(body, "slack"),
        )

    @app.action(messages.ROLLBACK_ACTION)
    async def rollback_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(
            rollback(ctx, body, respond),
            respond,
            "the Rollback button",
            guards.clicker(body, "slack"),
        )


def _where(body: dict[str, Any]) -> tuple[str, str, bool]:
    container = body.get("container", {})
    channel = guards.click_channel(body)
    return channel, str(container.get("message_ts", "")), bool(container.get("is_ephemeral"))


async def _refuse(respond: AsyncRespond, text: str) -> None:
    await respond(response_type="ephemeral", replace_original=False, text=text)


def _channel_target(ctx: BotContext, channel: str) -> Target:
    """The target of a button that names none: the channel's only one, or the default."""
    here = ctx.fleet.targets.for_channel(channel)
    return here[0] if len(here) == 1 else ctx.fleet.targets.default


async def deploy(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    action = body["actions"][0]
    action_id = str(action.get("action_id", messages.DEPLOY_ACTION))
    value = messages.read_value(str(action.get("value", "")), "tag")
    tag = value.get("tag", "")
    channel, ts, ephemeral = _where(body)
    # A CI notice's button is the ci-button door; the which-target and help lists' buttons
    # answer a person's own /deploy (ephemeral): the button door.
    door = Door.BUTTON if ephemeral else Door.CI_BUTTON
    requester = guards.clicker(body, "slack" if ephemeral else "ci-button")
    named = value.get("target")
    target = ctx.fleet.targets.get(named) if named else _channel_target(ctx, channel)
    ask = ctx.ask(requester, door, channel)
    # Who and where first, before the notice is claimed.
    ctx.fleet.prescreen(target, Action.DEPLOY, ask)
    notice = f"{channel}:{ts}:{action_id}"
    engine = ctx.engine(target)
    # One click deploys, whichever bot replica Slack sends it to: a conditional write in the
    # table claims the notice's button; the notice then says so and loses that button.
    if not ephemeral and not await asyncio.to_thread(engine.claim_ci_notice, notice, requester.who):
        where = f" to {mrkdwn.escape(named)}" if named else ""
        return await _refuse(
            respond,
            f"Someone already clicked Deploy{where} on this {mrkdwn.escape(tag)} notice.",
        )
    reason = "from the CI notice" if not ephemeral else ""
    try:
        record = await guards.change(
            ctx,
            target,
            Action.DEPLOY,
            respond,
            channel,
            requester,
            door=door,
            tag=tag,
            reason=reason,
        )
    except Exception:
        if not ephemeral:
            await _unclaim(engine, notice, requester.who)
        raise
    if record is None:
        if not ephemeral:
            await _unclaim(engine, notice, requester.who)
        return
    if not ephemeral:
        try:
            message = body.get("message", {})
            await ctx.client.chat_update(
                channel=channel,
                ts=ts,
                text=f"{mrkdwn.escape(requester.name)} is deploying {mrkdwn.escape(tag)}",
                blocks=messages.image_claimed(
                    tag, requester.who, message, action_id, (named or "") if ctx.several else ""
                ),
            )
        except SlackApiError as exc:
            log.warning(
                "could not mark the notice: %s",
                exc.response.get("error"),
                extra={**record.log_fields, "channel": channel},
            )


async def _unclaim(engine: Engine, notice: str, who: str) -> None:
    """The deploy did not start: the notice's button works again."""
    try:
        await asyncio.to_thread(engine.release_ci_notice, notice, who)
    except DeployError as exc:
        log.warning("could not release the CI notice %s: %s", notice, exc.message)


async def promote(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    """The Promote button of a completed deployment: its digest to the target after it,
    while it is still the source's last deployment."""
    requester = guards.clicker(body, "slack")
    channel, _, _ = _where(body)
    value = messages.read_value(str(body["actions"][0].get("value", "")), "deployment")
    target = ctx.fleet.targets.get(value.get("to", ""))
    source = ctx.fleet.targets.get(value.get("source", ""))
    of = value.get("deployment", "")
    await guards.change(
        ctx,
        target,
        Action.PROMOTE,
        respond,
        channel,
        requester,
        door=Door.BUTTON,
        source=source.name,
        of=of,
    )


async def rollback(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    """The Rollback button of one deployment's message: back to what ran before *it*."""
    requester = guards.clicker(body, "slack")
    channel, _, _ = _where(body)
    value = messages.read_value(str(body["actions"][0].get("value", "")), "deployment")
    of = value.get("deployment", "")
    named = value.get("target")
    target = ctx.fleet.targets.get(named) if named else await _target_of(ctx, channel, of)
    await guards.change(
        ctx, target, Action.ROLLBACK, respond, channel, requester, door=Door.BUTTON, of=of
    )


async def _target_of(ctx: BotContext, channel: str, deployment: str) -> Target:
    """The target of a plain deployment id (a button from before targets): the one target,
    else the channel's target whose history holds it."""
    targets = ctx.fleet.targets
    if len(targets) == 1:
        return targets.default
    for target in targets.for_channel(channel) or list(targets):
        if await asyncio.to_thread(ctx.engine(target).deployment, deployment):
            return target
    raise NothingToRollBack(f"No deployment {deployment} in any target's recent history.")
