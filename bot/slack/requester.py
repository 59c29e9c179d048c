"""The deployer hears back: whoever started a deployment from Slack is told how it ended.

A DM (``chat.postMessage`` to the user's id: Slack opens the bot's DM itself, with no
``conversations.open`` and so no ``im:write``; ParabolInc/parabol#4844, paradigmxyz/centaur
#1145), with a link to the deployment's message (``chat.getPermalink``, which needs no scope).
Where the app's Messages tab is off Slack refuses DMs (``messages_tab_disabled``): then an
ephemeral in the deployment's channel. Once per deployment, whichever process tells (a
conditional write claims it); DEPLOY_NOTIFY_REQUESTER=false turns it off.

``RequesterNotices`` renders the target's supervisor (bot/deploy/supervisor.py): it tells when
this process settles a deployment (Settled), once the live message (bot/slack/progress.py) is
done showing the outcome (the DM links to it; Slack away, both wait for it), as before.
An outcome settled by a process that could not tell (it died first; a terminal's command closed
the record of a bot that died) is told from a pass (Looked), as the board shows it: a closed
record whose message does not show it yet and whose follower is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.deploy.engine import Engine
from bot.deploy.events import Looked, Settled
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Snapshot
from bot.deploy.supervisor import Supervisor
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
    return await dm_or_ephemeral(
        client, record, where[0] if where else None, notice.as_kwargs(), "outcome"
    )


async def dm_or_ephemeral(
    client: AsyncWebClient,
    record: DeploymentRecord,
    channel: str | None,
    message: dict[str, Any],
    what: str,
) -> str:
    """``message`` to ``record``'s requester in a DM, or where Slack refuses that DM (NO_DM)
    in an ephemeral in ``channel`` (the deployment's message's): "dm", "ephemeral" or ""
    when nobody was told (logged, never raised: the channel's message shows it anyway)."""
    extra = {**record.log_fields, "about": what}
    try:
        await client.chat_postMessage(channel=record.who, **message)
        log.info("told the requester in a DM", extra=extra)
        return "dm"
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        if error not in NO_DM or channel is None:
            log.warning("could not tell the requester (%s)", error, extra=extra)
            return ""
        log.info("no DM to the requester (%s): an ephemeral instead", error, extra=extra)
    except Exception as exc:  # Slack away after slack_sdk's retries: the channel shows it
        log.warning("could not tell the requester (%s)", exc, extra=extra)
        return ""
    try:
        await client.chat_postEphemeral(channel=channel, user=record.who, **message)
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


# Where a deployment's message is (its channel and ts) once posted; None: it has none.
Where = Callable[[DeploymentRecord], Awaitable[tuple[str, str] | None]]


class RequesterNotices:
    """The requester's DM (or ephemeral) for ``engine``'s deployments, once each; ``where``
    finds the deployment's message (the board's, waiting while it is being posted)."""

    def __init__(self, client: AsyncWebClient, engine: Engine, where: Where) -> None:
        self.client = client
        self.engine = engine
        self.where = where
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Deployments this process told, or found told (the claim): not tried again.
        self._heard: set[str] = set()

    def subscribe(self, supervisor: Supervisor) -> None:
        """Tell at each Settled and from each pass's Looked (call in the bot's event loop)."""
        self._loop = asyncio.get_running_loop()
        supervisor.events.subscribe(Settled, self.settled)
        supervisor.events.subscribe(Looked, self.seen)

    def settled(self, event: Settled) -> None:
        """This process closed a deployment (on the follower's thread): tell, in the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if wants_notice(self.engine, event.record, event.final):
            loop.call_soon_threadsafe(self._tell_soon, event.record, event.final)

    def seen(self, looked: Looked) -> None:
        """Outcomes settled where nobody told: closed, their message not showing them yet (the
        board finishes it), nobody following them."""
        for record in looked.records:
            final = record.final
            if (
                record.open
                or record.shown
                or final is None
                or not record.message_ref
                or record.id in self._heard
                or not wants_notice(self.engine, record, final)
                or record.id in self.engine.tracking()
                or self.engine.followed_elsewhere(record)
            ):
                continue
            self._tell_soon(record, final)

    def _tell_soon(self, record: DeploymentRecord, final: Snapshot) -> None:
        if record.id in self._heard:
            return
        self._heard.add(record.id)
        task = asyncio.get_running_loop().create_task(
            self._tell(record, final), name=f"tell:{record.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, record: DeploymentRecord, final: Snapshot) -> None:
        try:
            where = await self.where(record)
            await tell_requester(self.client, self.engine, record, final, where)
        except asyncio.CancelledError:
            raise
        except Exception:  # never in the way of anything else
            log.exception("telling the requester failed", extra=record.log_fields)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
