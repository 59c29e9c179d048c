"""The configuration read again without a restart: every CONFIG_CHECK_SECONDS and on
``/deploy reload``.

Where it comes from: DEPLOYBOT_CONFIG's file, or the SSM parameter DEPLOYBOT_CONFIG_PARAMETER
names (cloudformation/bot.yml's BotConfig, which the container also gets as
DEPLOYBOT_CONFIG_TEXT at start: a variable a running process cannot see change). Without
either there is nothing to read again: the environment's one target stays as it started.

A new text is read as the bot reads it at start (bot/targets.py, every problem at once). It
is taken only if it is whole and changes nothing a running bot cannot change
(``Fleet.retarget``: a target added or removed, a target's cluster, service, repository,
container or ``after``); then every door, the queue's turns and the approvals ask the new
rules from their next check on. A deployment already started keeps its plan (the rules were
asked when it started); the lock's own checks at a start ask the new ones. Anything else is
refused: the old configuration stays, and the channel is told why, once per text whatever
the replicas (a claim in the table, keyed by the text's hash), not every minute. Each
replica reads on its own clock: for up to CONFIG_CHECK_SECONDS two replicas may judge by two
texts; ``/deploy reload`` makes the replica it reaches read at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from slack_bolt.async_app import AsyncRespond

from bot.deploy.aws import read_parameter
from bot.errors import DeployError
from bot.mrkdwn import escape as esc
from bot.slack.announce import channel_of
from bot.slack.context import BotContext, safe_reply
from bot.targets import BadConfig, Targets, load_targets

log = logging.getLogger("deploybot.slack.reload")


class ConfigWatch:
    """The configuration's source, the text last taken (or refused), and the reading."""

    def __init__(self, ctx: BotContext) -> None:
        self.ctx = ctx
        self.seen: str | None = None  # the hash of the text last taken or refused
        self._turn = asyncio.Lock()

    @property
    def source(self) -> str | None:
        """What is read again, for people: the file, the parameter, or None (nothing)."""
        settings = self.ctx.settings
        if settings.deploybot_config is not None:
            return str(settings.deploybot_config)
        if settings.deploybot_config_parameter:
            return f"the SSM parameter {settings.deploybot_config_parameter}"
        return None

    def _read(self) -> tuple[str, Targets] | None:
        """(the text's hash, its targets); None without a source. BadConfig: refused."""
        settings = self.ctx.settings
        if settings.deploybot_config is not None:
            path = settings.deploybot_config
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise BadConfig([f"{path}: cannot be read ({exc.strerror or exc})"]) from exc
            fresh = settings.model_copy(update={"deploybot_config_text": None})
        elif settings.deploybot_config_parameter:
            name = settings.deploybot_config_parameter
            found = read_parameter(settings, name)  # DeployError when AWS does not answer
            if found is None:
                raise BadConfig([f"{name}: no such SSM parameter (DEPLOYBOT_CONFIG_PARAMETER)"])
            text = found
            fresh = settings.model_copy(
                update={"deploybot_config_text": text, "deploybot_config": None}
            )
        else:
            return None
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self.seen:
            return digest, self.ctx.fleet.targets  # unchanged: not read again
        return digest, load_targets(fresh)

    async def check(self, *, asked: bool = False) -> str:
        """Read the configuration; take it if it is new and good. What happened, for the
        person who asked (``asked``: a refusal is theirs to hear even if said before)."""
        async with self._turn:
            try:
                read = await asyncio.to_thread(self._read)
            except BadConfig as exc:
                return await self._refused(self._hash_of(exc), exc.problems, asked)
            except DeployError as exc:
                log.warning("could not read the configuration: %s", exc.message)
                return f"deploybot could not read {self.source}: {exc.message}; nothing changed."
            if read is None:
                return (
                    "deploybot has no configuration to read again (neither DEPLOYBOT_CONFIG "
                    "nor DEPLOYBOT_CONFIG_PARAMETER is set): nothing changed."
                )
            digest, targets = read
            if digest == self.seen:
                return f"{self.source} has not changed since it was read: nothing changed."
            groups = self.ctx.groups
            configured = groups.configured if groups is not None else self.ctx.fleet.targets
            try:
                if groups is not None:
                    self.ctx.fleet.retarget(groups.given(targets))  # refused here if it must
                    groups.configured = targets
                else:
                    self.ctx.fleet.retarget(targets)
            except BadConfig as exc:
                return await self._refused(digest, exc.problems, asked)
            changed = self.seen is not None or _rules(targets) != _rules(configured)
            self.seen = digest
            if groups is not None:
                await groups.read()  # the groups the new text names, read now
            if not changed:
                return f"{self.source} is what the bot runs with: nothing changed."
            log.info("configuration read again from %s and taken", self.source)
            await _say_once(
                self.ctx,
                digest,
                f"🔄 deploybot took its new configuration from {esc(self.source)}.",
            )
            return f"deploybot took its new configuration from {self.source}."

    def _hash_of(self, exc: BadConfig) -> str:
        return hashlib.sha256("\n".join(exc.problems).encode()).hexdigest()

    async def _refused(self, digest: str, problems: tuple[str, ...], asked: bool) -> str:
        text = "\n".join(problems)
        if digest != self.seen:
            self.seen = digest
            log.error("new configuration refused, the old one kept:\n%s", text)
            await _say_once(
                self.ctx,
                digest,
                f"⚠️ deploybot refused its new configuration from {esc(self.source)} and keeps "
                f"the one it runs with:\n```{esc(text)}```",
            )
        elif not asked:
            return ""
        return (
            f"deploybot refused the configuration in {self.source} and keeps the one it runs "
            f"with:\n```{esc(text)}```"
        )

    async def forever(self) -> None:
        """Read the configuration every CONFIG_CHECK_SECONDS, for as long as the bot runs."""
        while True:
            await asyncio.sleep(self.ctx.settings.config_check_seconds)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the configuration again failed")


def _rules(targets: Targets) -> tuple[Any, ...]:
    return tuple(t.rules for t in targets)


async def _say_once(ctx: BotContext, digest: str, text: str) -> None:
    """Say ``text`` in the default target's channel, once per configuration text whatever
    the replicas: the first to claim it in the table (a conditional write) says it."""
    target = ctx.fleet.targets.default
    channel = channel_of(ctx.settings, target)
    if channel is None:
        return
    try:
        claimed = await asyncio.to_thread(
            ctx.engine(target).claim_ci_notice, f"config:{digest[:32]}", "deploybot"
        )
        if claimed:
            await ctx.client.chat_postMessage(channel=channel, text=text)
    except Exception as exc:
        log.warning("could not say the configuration's news in %s: %s", channel, exc)


async def reload_command(
    ctx: BotContext, watch: ConfigWatch | None, user: str, respond: AsyncRespond
) -> None:
    """``/deploy reload``: a deployer of any target makes this replica read it at once."""
    if not any(t.may_deploy(user) for t in ctx.fleet.targets):
        await safe_reply(
            respond,
            "Only a deployer of one of the targets may make deploybot read its configuration "
            "again; it does so every minute by itself.",
        )
        return
    if watch is None:
        await safe_reply(respond, "deploybot is not watching its configuration here.")
        return
    await safe_reply(respond, await watch.check(asked=True))
