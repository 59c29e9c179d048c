"""Slash commands: /deploy, /redeploy, /deploy-status (SLACK_*_COMMAND). Each acks at once;
the work runs in a task. `/deploy status` answers as the status command does."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.deploy.changes import ChangeSummary
from bot.deploy.engine import ImageInfo
from bot.deploy.errors import DeployError
from bot.deploy.ledger import Requester
from bot.slack import messages
from bot.slack.app import BotContext, log


def register(app: AsyncApp, ctx: BotContext) -> None:
    names = ctx.settings.slack_commands  # the names the manifest declares

    @app.command(names.deploy)
    async def deploy_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(deploy(ctx, command, respond), respond, names.deploy, requester(command))

    @app.command(names.redeploy)
    async def redeploy_command(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        ctx.run(redeploy(ctx, command, respond), respond, names.redeploy, requester(command))

    @app.command(names.status)
    async def status_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ctx.run(status(ctx, command, respond), respond, names.status, requester(command))


def requester(command: dict[str, Any], source: str = "slack") -> Requester:
    return Requester(
        who=str(command.get("user_id", "")),
        source=source,
        display=str(command.get("user_name") or command.get("user_id", "")),
    )


async def _refuse(respond: AsyncRespond, text: str) -> None:
    await respond(response_type="ephemeral", **messages.refusal(text).as_kwargs())


async def deploy(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    text = str(command.get("text", "")).strip()
    user, channel = str(command.get("user_id", "")), str(command.get("channel_id", ""))
    word = text.lower()
    if word in ("", "help", "history", "status"):
        read = ctx.access.may_read(channel)
        if not read.allowed:
            return await _refuse(respond, read.why)
        if word == "history":
            records = await asyncio.to_thread(ctx.engine.history, 20)
            await respond(response_type="ephemeral", **messages.history(records).as_kwargs())
            return
        if word == "status":
            await status(ctx, command, respond)
            return
        images = await ctx.read("recent_images", lambda: ctx.engine.recent_images(5))
        changes = await ctx.read("recent_changes", lambda: _changes(ctx, images))
        msg = messages.help_message(
            images, ctx.engine.service_name, ctx.settings.slack_commands, changes
        )
        await respond(response_type="ephemeral", **msg.as_kwargs())
        return
    decision = ctx.access.may_deploy(user, channel)
    if not decision.allowed:
        return await _refuse(respond, decision.why)
    who = requester(command)
    if word == "rollback":
        await ctx.launch(lambda: ctx.engine.plan_rollback(who), channel, respond)
    else:
        await ctx.launch(lambda: ctx.engine.plan_deploy(text, who), channel, respond)


def _changes(ctx: BotContext, images: list[ImageInfo]) -> dict[str, ChangeSummary]:
    """What deploying each listed image would change, for its Deploy button's dialog; none
    when what runs cannot be read (the list is still worth showing)."""
    try:
        return ctx.engine.changes_to([image.tags[0] for image in images])
    except DeployError as exc:
        log.warning("no change summaries for the list of images: %s", exc)
        return {}


async def redeploy(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    user, channel = str(command.get("user_id", "")), str(command.get("channel_id", ""))
    decision = ctx.access.may_deploy(user, channel)
    if not decision.allowed:
        return await _refuse(respond, decision.why)
    reason = str(command.get("text", "")).strip()[:200]
    who = requester(command)
    await ctx.launch(lambda: ctx.engine.plan_redeploy(who, reason), channel, respond)


async def status(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    read = ctx.access.may_read(str(command.get("channel_id", "")))
    if not read.allowed:
        return await _refuse(respond, read.why)
    st = await ctx.read("status", lambda: ctx.engine.status(5))
    await respond(response_type="ephemeral", **messages.status(st).as_kwargs())
