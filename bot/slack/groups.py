"""Slack user groups in ``deployers`` and ``approvers``: their members, read from Slack.

A target's ``deployers`` or ``approvers`` may name a user group by its id (``S…``). The bot
reads the groups every SLACK_GROUPS_SECONDS (60 s by default) and gives each target the
members of the groups it names (``Target.deployer_members``, ``approver_members``, through
``Fleet.retarget``): the rules (bot/rules.py) stay pure and every door, the queue's turn and
the approvals count included, asks them as for ids listed one by one. Someone removed from a
group loses its rights at the next reading: within SLACK_GROUPS_SECONDS (plus the reading's
own time).

Slack's Web API (docs.slack.dev/reference/methods/usergroups.list and …/usergroups.users.list,
both needing the ``usergroups:read`` scope): one ``usergroups.list`` with
``include_disabled`` says which of the named groups exist and which are disabled (a group
object's ``date_delete`` is non-zero once disabled); ``usergroups.users.list`` gives the
``users`` of each one that is enabled. A group Slack does not know, or one that is disabled,
gives nobody any right, and is a configuration problem: logged, and said in the channel once
(``config_problem``). A reading that fails keeps what the last one said for one more
period, then nobody gets a right through a group until Slack answers again (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import replace

from slack_sdk.errors import SlackApiError

from bot.mrkdwn import escape as esc
from bot.slack.announce import channel_of
from bot.slack.context import BotContext
from bot.target import Target
from bot.targets import Targets

log = logging.getLogger("deploybot.slack.groups")


class Groups:
    """The user groups the configuration names, their members as last read, and the fleet's
    targets given those members. ``configured``: the targets as the file says them."""

    def __init__(self, ctx: BotContext, configured: Targets | None = None) -> None:
        self.ctx = ctx
        self.configured = configured or ctx.fleet.targets
        self.members: dict[str, frozenset[str]] = {}
        self.problems: dict[str, str] = {}
        self.read_at = 0.0

    @property
    def named(self) -> frozenset[str]:
        return frozenset(g for t in self.configured for g in t.groups)

    async def read(self) -> None:
        """Read every named group from Slack and give the fleet its members."""
        named = self.named
        if not named:
            self.members, self.problems = {}, {}
            self.apply()
            return
        try:
            members, problems = await self._read(named)
        except (SlackApiError, OSError, TimeoutError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else exc
            stale = time.monotonic() - self.read_at > 2 * self.ctx.settings.slack_groups_seconds
            log.warning(
                "could not read Slack's user groups (%s)%s",
                error,
                ": nobody gets a right through a group until Slack answers" if stale else "",
            )
            if stale and self.members:
                self.members = {}
                self.apply()
            return
        self.members, self.read_at = members, time.monotonic()
        if problems != self.problems:
            for text in problems.values():
                log.error("configuration: %s", text)
            self.problems = problems
            for text in problems.values():
                await config_problem(self.ctx, text)
        self.apply()

    async def _read(
        self, named: frozenset[str]
    ) -> tuple[dict[str, frozenset[str]], dict[str, str]]:
        client = self.ctx.client
        listing = await client.usergroups_list(include_disabled=True)
        known = {str(g.get("id")): g for g in listing.get("usergroups") or []}
        members: dict[str, frozenset[str]] = {}
        problems: dict[str, str] = {}
        for group in sorted(named):
            where = self._where(group)
            found = known.get(group)
            if found is None:
                problems[group] = (
                    f"{where} names the user group {group}, which this workspace does not have "
                    "(usergroups.list): it gives nobody any right. Fix the id (a group's page "
                    "in Slack shows it) or remove it."
                )
                members[group] = frozenset()
                continue
            if found.get("date_delete"):
                handle = found.get("handle") or group
                problems[group] = (
                    f"{where} names the user group @{handle} ({group}), which is disabled in "
                    "Slack: it gives nobody any right. Enable it again or remove it."
                )
                members[group] = frozenset()
                continue
            answer = await client.usergroups_users_list(usergroup=group)
            members[group] = frozenset(str(u) for u in answer.get("users") or [])
        return members, problems

    def _where(self, group: str) -> str:
        keys = [
            f"targets.{t.name}.{key}"
            for t in self.configured
            for key, ids in (("deployers", t.deployers), ("approvers", t.approvers))
            if group in ids
        ]
        return ", ".join(keys) if self.configured.source else "DEPLOY_ALLOWED_USERS"

    def given(self, targets: Targets) -> Targets:
        """``targets`` with the members of their groups as last read."""

        def of(ids: frozenset[str] | tuple[str, ...]) -> frozenset[str]:
            return frozenset().union(*(self.members.get(i, frozenset()) for i in ids))

        made: list[Target] = [
            replace(t, deployer_members=of(t.deployers), approver_members=of(t.approvers))
            for t in targets
        ]
        return Targets(tuple(made), targets.default_name, targets.source)

    def apply(self) -> None:
        self.ctx.fleet.retarget(self.given(self.configured))

    async def forever(self) -> None:
        """Read the groups every SLACK_GROUPS_SECONDS, for as long as the bot runs."""
        while True:
            await asyncio.sleep(self.ctx.settings.slack_groups_seconds)
            try:
                await self.read()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading Slack's user groups failed")


async def config_problem(ctx: BotContext, text: str) -> None:
    """Say a configuration problem in the default target's channel, once whatever the
    replicas: the first to claim it in the table (a conditional write, kept 30 days) says it."""
    target = ctx.fleet.targets.default
    channel = channel_of(ctx.settings, target)
    if channel is None:
        return
    key = "config-problem:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    engine = ctx.engine(target)
    try:
        if not await asyncio.to_thread(engine.claim_ci_notice, key, "deploybot"):
            return
        await ctx.client.chat_postMessage(
            channel=channel, text=f"⚠️ deploybot's configuration: {esc(text)}"
        )
    except Exception as exc:
        log.warning("could not say a configuration problem in %s: %s", channel, exc)
