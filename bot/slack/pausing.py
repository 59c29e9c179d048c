"""The Continue and Roll back buttons of a deployment ECS paused at a hook.

A press is the engine's ``decide_pause`` (bot/deploy/pausing.py): Continue under the target's
rules as an approval, Roll back as an abort; the first press claims the hook in the table, so
ECS's ContinueServiceDeployment is called once however many replicas and clicks there are, and
a later press is told who decided. A Continue while the test listener's check is red asks
again, in an ephemeral with **Continue anyway**; the decision is said in the channel.
The buttons' value is ``target|deployment|hook``: what they act on is read from ECS and the
table again, so a button of a pause that ended, or a changed value, finds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.models.blocks import ActionsBlock, MarkdownTextObject, SectionBlock

from bot.deploy.pausing import CONTINUE, ROLLBACK, ConfirmWrongRelease, PauseDecision
from bot.deploy.records import Via
from bot.errors import DeployError
from bot.mrkdwn import escape as esc
from bot.mrkdwn import mention
from bot.rules import Door, RuleRefused
from bot.slack import guards
from bot.slack.context import BotContext, log
from bot.slack.pause_view import (
    CONTINUE_ACTION,
    CONTINUE_ANYWAY_ACTION,
    ROLLBACK_ACTION,
    continue_button,
    read_value,
)


def register(app: AsyncApp, ctx: BotContext) -> None:
    def on(action_id: str, handler: Callable[..., Awaitable[Any]], what: str) -> None:
        @app.action(action_id)
        async def clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            ctx.run(handler(ctx, body, respond), respond, what, guards.clicker(body))

    on(CONTINUE_ACTION, continue_clicked, "the Continue button")
    on(CONTINUE_ANYWAY_ACTION, continue_anyway_clicked, "the Continue anyway button")
    on(ROLLBACK_ACTION, rollback_clicked, "the Roll back button")


async def continue_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    await decide(ctx, body, respond, CONTINUE)


async def continue_anyway_clicked(
    ctx: BotContext, body: dict[str, Any], respond: AsyncRespond
) -> None:
    await decide(ctx, body, respond, CONTINUE, confirmed=True)


async def rollback_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    await decide(ctx, body, respond, ROLLBACK)


async def decide(
    ctx: BotContext,
    body: dict[str, Any],
    respond: AsyncRespond,
    action: str,
    *,
    confirmed: bool = False,
) -> PauseDecision | None:
    """One press: the engine decides (once), the channel hears it; a refusal is said to the
    person who pressed, and a red check asks again."""
    value = str(body["actions"][0].get("value", ""))
    name, deployment, hook = read_value(value)
    place = guards.place_of(ctx, name)
    requester, channel = guards.clicker(body), guards.click_channel(body)
    via = Via(door=Door.BUTTON, channel=channel)
    if not deployment or not hook:
        await _say(respond, "This button names no paused deployment; nothing was changed.")
        return None
    try:
        decision = await asyncio.to_thread(
            place.engine.decide_pause,
            requester,
            action,
            via=via,
            of=deployment,
            hook_id=hook,
            confirmed=confirmed,
        )
    except ConfirmWrongRelease as red:
        pause = await asyncio.to_thread(place.engine.paused, deployment)
        if pause is None:
            await _say(respond, esc(red.message))
            return None
        text = f"🔴 {esc(red.message)}"
        await respond(
            response_type="ephemeral",
            replace_original=False,
            text=text,
            blocks=[
                SectionBlock(text=MarkdownTextObject(text=text)).to_dict(),
                ActionsBlock(elements=[continue_button(pause, value, anyway=True)]).to_dict(),
            ],
        )
        return None
    except RuleRefused as refused:
        await _say(respond, refused.decision.mrkdwn or esc(refused.message))
        return None
    except DeployError as exc:
        await _say(respond, esc(exc.message))
        return None
    record = decision.record
    if action == CONTINUE:
        said = (
            f"▶️ {mention(requester.who)} continued {esc(record.kind)} `{esc(record.id)}` of "
            f"`{esc(record.tag)}` on {esc(place.target.name)} from "
            f"{esc(decision.hook.stage or 'its pause')}: ECS moves on."
        )
    else:
        back = record.previous_tag or "the previous revision"
        said = (
            f"↩️ {mention(requester.who)} rolled back {esc(record.kind)} `{esc(record.id)}` of "
            f"`{esc(record.tag)}` on {esc(place.target.name)} from its pause: ECS restores "
            f"`{esc(back)}`."
        )
    said += "".join(f"\n⚠️ {esc(b)}" for b in decision.bypassed)
    if decision.lost:
        said += (
            f"\n_ECS's answer was lost ({esc(decision.lost)}); the message shows what ECS does._"
        )
    try:
        await ctx.client.chat_postMessage(channel=channel, text=said)
    except Exception as exc:
        log.warning("could not say the decision in %s: %s", channel, exc)
        await _say(respond, said)
    return decision


async def _say(respond: AsyncRespond, text: str) -> None:
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception:
        log.exception("could not tell the user: %s", text)
