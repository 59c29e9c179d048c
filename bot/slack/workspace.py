"""Strangers: changes come only from the bot's own workspace, on every door (one middleware).

Every request Slack sends (slash commands, button clicks, view submissions, shortcuts) passes
here before its listener. A change (anything but the read-only commands: ``/deploy`` alone or
``help``, ``status``, ``history``, and the status command) is refused when the request came
from another workspace or Enterprise Grid org, from a Slack Connect channel, or from a DM or
group DM that no target lists in its ``channels``; the rules themselves are
``bot.rules.workspace``. Reads answer wherever deploybot is asked.

What the payloads carry (read from Slack's references, and as bolt-python's
``slack_bolt/request/internals.py`` extracts them):

- a slash command: ``team_id``, and on Grid ``enterprise_id``; ``channel_id`` and
  ``channel_name`` ("directmessage" in a DM, ``mpdm-…`` in a group DM)
  (https://api.slack.com/interactivity/slash-commands#app_command_handling);
- an interaction (block_actions, view_submission, shortcuts): ``team`` ("The workspace, or
  team, details the Block Kit interaction originated from. In the case of an Enterprise
  organization, team can also have the properties enterprise_id and enterprise_name"),
  ``user.team_id`` (the org's ``E…`` id on Grid), ``enterprise``, ``is_enterprise_install``,
  ``channel``/``container.channel_id``; a view opened from a Slack Connect channel may name
  ``view.app_installed_team_id`` (https://docs.slack.dev/reference/interaction-payloads/
  block_actions-payload; bolt-js #1615). In a Slack Connect channel a person of the other
  organisation sends their own team's ids;
- whether a channel is shared with another organisation is in none of them: the conversation
  object's ``is_ext_shared`` says it (Slack Connect; its ``connected_team_ids`` name the other
  side), as do ``is_im`` and ``is_mpim`` for DMs (ids ``D…``) and group DMs (ids such as
  ``G024BE91L``, named ``mpdm-user1--user2--user3-1``: the id does not say so)
  (https://docs.slack.dev/reference/objects/conversation-object, …/mpim-object):
  conversations.info, asked once per channel and kept for ``CHANNEL_FACTS_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError

from bot.command_names import CommandNames
from bot.rules import Home, Origin, workspace
from bot.slack.commands import GUARD_WORDS, parse
from bot.slack.context import BotContext, safe_reply

log = logging.getLogger("deploybot.slack.workspace")

# How long what conversations.info said of a channel is believed (a channel can be shared
# with another organisation later: at most this long before a change there is refused).
CHANNEL_FACTS_SECONDS = 300.0
# A look-up comes before the ack: it must leave Slack's 3 seconds room. Unanswered in that
# time, the payload's own facts decide (a warning is logged): another organisation's people
# are refused by their team ids whatever Slack's speed; only the workspace's own people in a
# shared channel could then go ahead, while Slack is slow.
LOOKUP_TIMEOUT_SECONDS = 2.0
READ_VERBS = frozenset({"help", "status", "history", "usage"})
# Interactions that may change something: every one deploybot has, and any it may get.
CHANGING_TYPES = frozenset(
    {
        "block_actions",
        "interactive_message",
        "view_submission",
        "shortcut",
        "message_action",
        "workflow_step_execute",
    }
)


def is_change(body: dict[str, Any], commands: CommandNames) -> bool:
    """Whether a request may change something: deny by default, reads named."""
    command = body.get("command")
    if command is not None:
        if command == commands.status:
            return False
        if command != commands.deploy:
            return True
        text = str(body.get("text", ""))
        first = text.split()[0].lower() if text.split() else ""
        return first in GUARD_WORDS or parse(text).verb not in READ_VERBS
    return body.get("type") in CHANGING_TYPES


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ids(*values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))


def origin_of(body: dict[str, Any]) -> Origin:
    """The teams, orgs and channel a request names (its kind and sharing not yet known)."""
    team, user, view = body.get("team"), body.get("user"), body.get("view")
    enterprise = body.get("enterprise")
    team_d, user_d, view_d = _dict(team), _dict(user), _dict(view)
    teams = _ids(
        body.get("team_id"),
        team if isinstance(team, str) else team_d.get("id"),
        user_d.get("team_id"),
        body.get("user_team"),
        view_d.get("app_installed_team_id"),
    )
    enterprises = _ids(
        body.get("enterprise_id"),
        enterprise if isinstance(enterprise, str) else _dict(enterprise).get("id"),
        team_d.get("enterprise_id"),
    )
    channel_d = _dict(body.get("channel"))
    container = _dict(body.get("container"))
    channel = str(
        body.get("channel_id") or channel_d.get("id") or container.get("channel_id") or ""
    )
    name = str(body.get("channel_name") or channel_d.get("name") or "")
    kind = "channel"
    if channel.startswith("D") or name == "directmessage":
        kind = "im"
    elif name.startswith("mpdm-"):
        kind = "mpim"
    return Origin(channel, teams, enterprises, kind)


@dataclass(frozen=True)
class _ChannelFacts:
    kind: str
    shared: bool
    until: float


class Strangers(AsyncMiddleware):
    """Bolt middleware: refuse a change from a stranger before any listener sees it."""

    def __init__(self, ctx: BotContext) -> None:
        self.ctx = ctx
        self._channels: dict[str, _ChannelFacts] = {}

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # Bolt's name for it
    ) -> BoltResponse | None:
        body = req.body
        if not is_change(body, self.ctx.settings.slack_commands):
            return await next()
        origin = origin_of(body)
        refusal = await self._refusal(origin)
        if refusal is None:
            return await next()
        log.warning(
            "change refused: %s",
            refusal,
            extra={"teams": list(origin.teams), "channel": origin.channel},
        )
        url = req.context.response_url
        if url:
            reply = self.ctx.respond(url)
            self.ctx.run(safe_reply(reply, refusal), reply, "a stranger's request")
        return BoltResponse(status=200, body="")

    async def _refusal(self, origin: Origin) -> str | None:
        """The refusal's Slack text, or None when the change may go on."""
        home = await self._home()
        if home is None:
            return (
                "Nothing was changed: deploybot could not tell which Slack workspace is its own "
                "(set SLACK_TEAM_ID, or let auth.test answer); try again in a moment."
            )
        listed = frozenset(c for t in self.ctx.fleet.targets for c in t.channels)
        first = workspace(origin, home, listed)  # what the payload alone says
        if not first.allowed or not origin.channel or origin.kind == "im":
            return None if first.allowed else first.mrkdwn
        try:
            facts = await self._channel(origin.channel)
        except (TimeoutError, OSError) as exc:
            log.warning(
                "conversations.info did not answer for %s (%s): judged by the payload alone",
                origin.channel,
                exc or "timeout",
            )
            return None
        except SlackApiError as exc:
            error = exc.response.get("error")
            return (
                "Nothing was changed: deploybot could not tell whether this channel is shared "
                f"with another organisation (conversations.info: {error}). If it is private, "
                f"invite me with `/invite @{self.ctx.bot_name}`; else try again in a moment."
            )
        kind = "mpim" if origin.kind == "mpim" else facts.kind
        decision = workspace(
            Origin(origin.channel, origin.teams, origin.enterprises, kind, facts.shared),
            home,
            listed,
        )
        return None if decision.allowed else decision.mrkdwn

    async def _home(self) -> Home | None:
        if self.ctx.home is not None:
            return self.ctx.home
        try:
            auth = await asyncio.wait_for(self.ctx.client.auth_test(), LOOKUP_TIMEOUT_SECONDS)
        except (SlackApiError, TimeoutError, OSError) as exc:
            log.error("could not learn the bot's workspace from auth.test: %s", exc)
            return None
        self.ctx.learn_home(auth.data if isinstance(auth.data, dict) else {})
        return self.ctx.home

    async def _channel(self, channel: str) -> _ChannelFacts:
        now = time.monotonic()
        known = self._channels.get(channel)
        if known is not None and known.until > now:
            return known
        answer = await asyncio.wait_for(
            self.ctx.client.conversations_info(channel=channel), LOOKUP_TIMEOUT_SECONDS
        )
        info = answer.get("channel") or {}
        kind = "im" if info.get("is_im") else "mpim" if info.get("is_mpim") else "channel"
        facts = _ChannelFacts(kind, bool(info.get("is_ext_shared")), now + CHANNEL_FACTS_SECONDS)
        self._channels[channel] = facts
        return facts
