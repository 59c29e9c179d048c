"""The deployer hears back: whoever started a deployment from Slack is told how it ended.

A DM (``chat.postMessage`` to the user's id: Slack opens the bot's DM itself, with no
``conversations.open`` and so no ``im:write``; ParabolInc/parabol#4844, paradigmxyz/centaur
#1145), with a link to the deployment's message (``chat.getPermalink``, which needs no scope).
Where the app's Messages tab is off Slack refuses DMs (``messages_tab_disabled``): then an
ephemeral in the deployment's channel. Once per deployment, whichever process shows the
outcome (a conditional write claims it); DEPLOY_NOTIFY_REQUESTER=false turns it off.
"""

from __future__ import annotations

import asyncio
import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Snapshot
from bot.errors import DeployError
from bot.mrkdwn import is_user_id
from bot.slack import messages

log = logging.getLogger("deploybot.slack.requester")

# chat.postMessage's answers that mean "no DM to this person": the Messages tab is off, the
# user cannot be reached (gone, or hidden from the bot), or a workspace rule forbids it.
NO_DM = frozenset(
    {
        "messages_tab_disabled",
        "channel_not_found",
        "user_not_found",
        "user_disabled",
        "cannot_dm_bot",
        "restricted_action",
    }
)


def wants_notice(engine: Engine, record: DeploymentRecord, final: Snapshot) -> bool:
    """A Slack user started it, it has ended for good, and the setting is on."""
    return (
        engine.settings.deploy_notify_requester
        and final.outcome is not None
        and final.outcome.settled
        and record.source in ("slack", "ci-button")
        and is_user_id(record.who)
    )


async def tell_requester(
    client: AsyncWebClient,
    engine: Engine,
    record: DeploymentRecord,
    final: Snapshot,
    where: tuple[str, str] | None,
) -> str:
    """Tell the requester (once): "dm", "ephemeral", or "" when nobody was told. ``where``:
    the channel and ts of the deployment's message, when it has one."""
    if not wants_notice(engine, record, final):
        return ""
    extra = record.log_fields
    try:
        if not await asyncio.to_thread(engine.claim_notice, record):
            return ""  # told already, by this process or another
    except DeployError as exc:
        log.warning("not telling the requester: %s", exc, extra=extra)
        return ""
    permalink = await _permalink(client, *where) if where else None
    notice = messages.outcome_notice(record, final, permalink)
    try:
        await client.chat_postMessage(channel=record.who, **notice.as_kwargs())
        log.info("told the requester in a DM", extra=extra)
        return "dm"
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        if error not in NO_DM or where is None:
            log.warning("could not tell the requester (%s)", error, extra=extra)
            return ""
        log.info("no DM to the requester (%s): an ephemeral instead", error, extra=extra)
    except Exception as exc:  # Slack away after slack_sdk's retries: the channel shows it
        log.warning("could not tell the requester (%s)", exc, extra=extra)
        return ""
    try:
        await client.chat_postEphemeral(channel=where[0], user=record.who, **notice.as_kwargs())
        return "ephemeral"
    except Exception as exc:
        problem = exc.response.get("error") if isinstance(exc, SlackApiError) else exc
        log.warning("could not tell the requester (%s)", problem, extra=extra)
        return ""


async def _permalink(client: AsyncWebClient, channel: str, ts: str) -> str | None:
    try:
        resp = await client.chat_getPermalink(channel=channel, message_ts=ts)
        return str(resp["permalink"])
    except Exception as exc:  # the DM goes without its link
        log.info("no permalink for %s/%s: %s", channel, ts, exc)
        return None
