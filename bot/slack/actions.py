"""Buttons: Deploy (from a CI notice or /deploy's list) and Rollback (on a completed deployment)."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError

from bot import mrkdwn
from bot.deploy.errors import DeployError
from bot.deploy.ledger import Requester
from bot.rules import Door
from bot.slack import guards, messages
from bot.slack.app import BotContext, log


def register(app: AsyncApp, ctx: BotContext) -> None:
    @app.action(messages.DEPLOY_ACTION)
    async def deploy_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(deploy(ctx, body, respond), respond, "the Deploy button", _who(body, "ci-button"))

    @app.action(messages.ROLLBACK_ACTION)
    async def rollback_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(rollback(ctx, body, respond), respond, "the Rollback button", _who(body, "slack"))


def _who(body: dict[str, Any], source: str) -> Requester:
    user = body.get("user", {})
    return Requester(
        who=str(user.get("id", "")),
        source=source,
        display=str(user.get("username") or user.get("name") or user.get("id", "")),
    )


def _where(body: dict[str, Any]) -> tuple[str, str, bool]:
    container = body.get("container", {})
    channel = str(body.get("channel", {}).get("id") or container.get("channel_id", ""))
    return channel, str(container.get("message_ts", "")), bool(container.get("is_ephemeral"))


async def _refuse(respond: AsyncRespond, text: str) -> None:
    await respond(response_type="ephemeral", replace_original=False, text=text)


async def deploy(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    action = body["actions"][0]
    tag = str(action.get("value", ""))
    requester = _who(body, "ci-button")
    channel, ts, ephemeral = _where(body)
    decision = ctx.access.may_deploy(requester.who, channel)
    if not decision.allowed:
        return await _refuse(respond, decision.why)
    notice = f"{channel}:{ts}"
    # One click deploys, whichever bot replica Slack sends it to: a conditional write in the
    # table claims the notice; the notice then says so and loses its button.
    if not ephemeral and not await asyncio.to_thread(
        ctx.engine.ledger.claim_ci_notice, notice, requester.who
    ):
        return await _refuse(
            respond, f"Someone already clicked Deploy on this {mrkdwn.escape(tag)} notice."
        )
    # A CI notice's button is the ci-button door; /deploy's list (ephemeral) the button door.
    door = Door.BUTTON if ephemeral else Door.CI_BUTTON
    try:
        record = await guards.guarded(
            ctx,
            guards.place_of(ctx),
            respond,
            channel,
            requester,
            lambda via: ctx.engine.plan_deploy(tag, requester, "from the CI notice", via=via),
            door=door,
            tag=tag,
        )
    except Exception:
        if not ephemeral:
            await _unclaim(ctx, notice, requester.who)
        raise
    if record is None:
        if not ephemeral:
            await _unclaim(ctx, notice, requester.who)
        return
    if not ephemeral:
        try:
            await ctx.client.chat_update(
                channel=channel,
                ts=ts,
                text=f"{mrkdwn.escape(requester.name)} is deploying {mrkdwn.escape(tag)}",
                blocks=messages.image_claimed(tag, requester.who, body.get("message", {})),
            )
        except SlackApiError as exc:
            log.warning(
                "could not mark the notice: %s",
                exc.response.get("error"),
                extra={**record.log_fields, "channel": channel},
            )


async def _unclaim(ctx: BotContext, notice: str, who: str) -> None:
    """The deploy did not start: the notice's button works again."""
    try:
        await asyncio.to_thread(ctx.engine.ledger.release_ci_notice, notice, who)
    except DeployError as exc:
        log.warning("could not release the CI notice %s: %s", notice, exc.message)


async def rollback(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    """The Rollback button of one deployment's message: back to what ran before *it*."""
    requester = _who(body, "slack")
    channel, _, _ = _where(body)
    decision = ctx.access.may_deploy(requester.who, channel)
    if not decision.allowed:
        return await _refuse(respond, decision.why)
    of = str(body["actions"][0].get("value", ""))
    await guards.guarded(
        ctx,
        guards.place_of(ctx),
        respond,
        channel,
        requester,
        lambda via: ctx.engine.plan_rollback(requester, of=of, via=via),
        door=Door.BUTTON,
        kind="rollback",
    )
