"""Slash commands: /deploy, /redeploy, /deploy-status (SLACK_*_COMMAND). Each acks at once;
the work runs in a task. `/deploy status` answers as the status command does.

What people type, with ``[TARGET]`` optional where the channel has one target or only one
is configured:

    /deploy                         help, the channel's targets, recent images
    /deploy TAG [to TARGET]         deploy (several targets here: which? a button each)
    /deploy promote FROM to TO      deploy to TO the digest FROM's last deployment completed with
    /deploy rollback [TARGET]       back to the last good image
    /deploy history [TARGET]
    /deploy stats [TARGET] [30d]    DORA's four keys, and their chart shared in the channel
    /deploy status [TARGET]         as the status command
    /deploy freeze [TARGET] REASON  refuse deploys until unfrozen
    /deploy unfreeze [TARGET]
    /deploy abort [TARGET]          stop the rollout; the previous release goes back
    /deploy unlock [TARGET]         break a stale lock (a button, confirmed; ECS checked first)
    /redeploy [TARGET] [reason]
    /deploy-status [TARGET]         every target of the channel, or one in detail

The target is resolved first (an unknown name is refused naming the known ones), then the
rules (bot/rules.py, through the fleet) decide, then that target's engine acts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.deploy.records import Requester
from bot.deploy.stats import DEFAULT_WINDOW, FourKeys, parse_window
from bot.errors import BadTag
from bot.mrkdwn import escape as esc
from bot.rules import Action, Door
from bot.slack import guards, messages
from bot.slack import stats as slack_stats
from bot.slack.context import BotContext
from bot.slack.reload import reload_command
from bot.tags import TagError, parse_tag
from bot.target import Target


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


@dataclass(frozen=True)
class Words:
    """What a /deploy text asks: ``verb`` (deploy, promote, rollback, history, stats, status,
    help), the tag, the target named (None: the channel's), promote's source, and stats'
    window (``30d``; None: the default)."""

    verb: str
    tag: str = ""
    target: str | None = None
    source: str | None = None
    window: str | None = None


def parse(text: str) -> Words:
    """The /deploy grammar above. Anything else is a tag, and the engine says why it is not."""
    words = text.split()
    first = words[0].lower() if words else ""
    if first in ("", "help") and len(words) <= 1:
        return Words("help")
    if first in ("history", "status", "rollback") and len(words) <= 2:
        return Words(first, target=_at(words, 1))
    if first == "stats":
        # ``stats [TARGET] [WINDOW]`` in either order: a window starts with a digit, a target
        # name never needs to.
        rest = words[1:]
        windows = [w for w in rest if w[:1].isdigit()]
        names = [w for w in rest if not w[:1].isdigit()]
        if len(windows) > 1 or len(names) > 1:  # more words than a target and a window
            return Words("usage_stats")
        return Words("stats", target=_at(names, 0), window=_at(windows, 0))
    if first == "promote":
        rest = words[1:]
        if len(rest) == 3 and rest[1].lower() == "to":
            return Words("promote", source=rest[0], target=rest[2])
        if len(rest) == 2:
            return Words("promote", source=rest[0], target=rest[1])
        return Words("usage")
    if len(words) == 3 and words[1].lower() == "to":
        return Words("deploy", tag=words[0], target=words[2])
    return Words("deploy", tag=text)


def _at(words: list[str], index: int) -> str | None:
    return words[index] if len(words) > index else None


def _where(command: dict[str, Any]) -> tuple[str, str]:
    """(user, channel) of a slash command."""
    return str(command.get("user_id", "")), str(command.get("channel_id", ""))


async def _pick(
    ctx: BotContext, command: dict[str, Any], respond: AsyncRespond, named: str | None
) -> Target | None:
    """The target a command acts on: the one named (UnknownTarget names the known ones), or
    the channel's only one, or the only one configured. None after telling the person how to
    name one (several here) or where deploybot works (none here)."""
    _, channel = _where(command)
    targets = ctx.fleet.targets
    if len(targets) == 1 and not targets.default.serves_channel(channel):
        # One target (the single-target setup): where comes first, whatever was typed.
        await _nowhere(ctx, command, respond)
        return None
    if named is not None:
        return targets.get(named)
    if len(targets) == 1:
        return targets.default
    here = targets.for_channel(channel)
    if len(here) == 1:
        return here[0]
    if not here:
        await _nowhere(ctx, command, respond)
        return None
    return None


async def _nowhere(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    """No target answers in this channel: the channels rule, for the default target."""
    channel = _where(command)[1]
    ask = ctx.ask(requester(command), Door.SLASH, channel)
    decision = ctx.fleet.decide(ctx.fleet.targets.default, Action.READ, ask)
    await _refuse(respond, decision.mrkdwn or "deploybot does not work in this channel.")


async def _which(
    ctx: BotContext, command: dict[str, Any], respond: AsyncRespond, usage: str
) -> None:
    """Several targets here and none named: say how to name one."""
    _, channel = _where(command)
    here = ctx.fleet.targets.for_channel(channel)
    if not here:
        return await _nowhere(ctx, command, respond)
    options = " or ".join(f"`{usage.format(target=t.name)}`" for t in here)
    await _refuse(respond, f"Which target? {options}")


async def deploy(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    text = str(command.get("text", "")).strip()
    channel = _where(command)[1]
    deploy_name = ctx.settings.slack_commands.deploy
    first, _, rest = text.partition(" ")
    if first.lower() in GUARD_WORDS:
        return await _guard_command(ctx, first.lower(), rest.strip(), command, respond)
    if first.lower() == "reload" and not rest.strip():
        return await reload_command(ctx, ctx.watch, _where(command)[0], respond)
    words = parse(text)
    if words.verb == "status":
        return await status(ctx, command, respond, words.target)
    if words.verb == "usage":
        return await _refuse(
            respond,
            f"Usage: `{deploy_name} promote FROM to TO`, e.g. `{deploy_name} promote "
            "staging to production`",
        )
    if words.verb == "help":
        return await _help(ctx, command, respond)
    if words.verb == "usage_stats":
        return await _refuse(respond, f"Usage: `{deploy_name} stats [TARGET] [30d]`")
    who = requester(command)
    ask = ctx.ask(who, Door.SLASH, channel)
    if words.verb == "promote":
        target = ctx.fleet.targets.get(words.target)
        source = ctx.fleet.targets.get(words.source)
        await guards.change(ctx, target, Action.PROMOTE, respond, channel, who, source=source.name)
        return
    picked = await _pick(ctx, command, respond, words.target)
    if picked is None:
        if not ctx.fleet.targets.for_channel(channel):
            return None
        if words.verb == "history":
            return await _which(ctx, command, respond, f"{deploy_name} history {{target}}")
        if words.verb == "rollback":
            return await _which(ctx, command, respond, f"{deploy_name} rollback {{target}}")
        if words.verb == "stats":
            return await _which(ctx, command, respond, f"{deploy_name} stats {{target}}")
        return await _choose(ctx, command, respond, words.tag)
    target = picked
    if words.verb == "history":
        ctx.fleet.may_read(target, ask).raise_if_refused()
        engine = ctx.engine(target)
        records = await asyncio.to_thread(engine.history, 20)
        label = target.name if ctx.several else ""
        await respond(response_type="ephemeral", **messages.history(records, label).as_kwargs())
        return
    if words.verb == "stats":
        ctx.fleet.may_read(target, ask).raise_if_refused()
        return await _stats(ctx, target, words.window, command, respond)
    if words.verb == "rollback":
        await guards.change(ctx, target, Action.ROLLBACK, respond, channel, who)
        return
    # Who and where first, before any read; then the tag, from one listing of the repository
    # shared by the /deploy commands that ask while none has started (Engine.ecr_images): a
    # tag ECR does not have is refused from it, naming the recent tags, before any other read,
    # and the plan reads its change summary from the same listing.
    ctx.fleet.prescreen(target, Action.DEPLOY, ask)
    engine = ctx.engine(target)
    try:
        parse_tag(words.tag, engine.settings.image_tag_suffix)  # no read for what is no tag
    except TagError as exc:
        raise BadTag(str(exc)) from None

    def listing() -> tuple[list[dict[str, Any]], list[str]]:
        found = engine.ecr_images()
        return found, engine.recent_tags(5, found)  # once, for every refusal that shares it

    images, recent = await ctx.read(f"images:{target.name}", listing)
    engine.resolve(words.tag, images, recent)
    await guards.change(
        ctx, target, Action.DEPLOY, respond, channel, who, tag=words.tag, images=images
    )


async def _stats(
    ctx: BotContext,
    target: Target,
    window: str | None,
    command: dict[str, Any],
    respond: AsyncRespond,
) -> None:
    """The four keys of ``target`` over the window, to the asker; the chart to the channel."""
    try:
        span = parse_window(window) if window else DEFAULT_WINDOW
    except ValueError as exc:
        return await _refuse(respond, esc(str(exc)))
    engine = ctx.engine(target)
    until = engine.clock.now()
    # One read of a target's window for every /deploy stats asking it at once.
    keys: FourKeys = await ctx.read(
        f"stats:{target.name}:{span.days}", lambda: engine.stats(until - span, until)
    )
    user, channel = _where(command)
    await respond(response_type="ephemeral", **slack_stats.numbers(keys).as_kwargs())
    try:
        await slack_stats.share_chart(
            ctx.client, channel, keys, comment=slack_stats.asked_by(user, keys)
        )
    except slack_stats.ChartNotShared as exc:
        await _refuse(respond, f"The chart was not shared: {exc.message}.")


GUARD_WORDS = ("freeze", "unfreeze", "abort", "unlock")


async def _guard_command(
    ctx: BotContext, verb: str, rest: str, command: dict[str, Any], respond: AsyncRespond
) -> None:
    """``/deploy freeze [TARGET] REASON``, ``/deploy unfreeze [TARGET]``, ``/deploy abort
    [TARGET]``, ``/deploy unlock [TARGET]``: a first word naming a target is the target, else
    the channel's."""
    first, _, after = rest.partition(" ")
    named = first if first in ctx.fleet.targets.names else None
    rest = after.strip() if named else rest
    deploy_name = ctx.settings.slack_commands.deploy
    picked = await _pick(ctx, command, respond, named)
    if picked is None:
        if ctx.fleet.targets.for_channel(_where(command)[1]):
            usage = f"{deploy_name} {verb} {{target}}" + (" REASON" if verb == "freeze" else "")
            await _which(ctx, command, respond, usage)
        return
    place = guards.place_of(ctx, picked.name)
    channel, who = _where(command)[1], requester(command)
    if verb == "freeze":
        if not rest:
            return await _refuse(
                respond, f"Say why: `{deploy_name} freeze {picked.name} incident 1234`"
            )
        await guards.freeze(ctx, place, respond, channel, who, rest)
    elif verb == "unfreeze":
        await guards.unfreeze(ctx, place, respond, channel, who)
    elif verb == "unlock":
        await guards.unlock(ctx, place, respond, channel, who)
    else:
        await guards.abort(ctx, place, respond, channel, who)


async def _choose(
    ctx: BotContext, command: dict[str, Any], respond: AsyncRespond, tag: str
) -> None:
    """/deploy TAG in a channel of several targets: a button per target the person may
    deploy to; none: the deployers rule says why."""
    user, channel = _where(command)
    try:
        # A tag that cannot be one is refused here, not after a click.
        parse_tag(tag, ctx.settings.image_tag_suffix)
    except TagError as exc:
        raise BadTag(str(exc)) from None
    here = ctx.fleet.targets.for_channel(channel)
    allowed = [t for t in here if t.may_deploy(user)]
    if not allowed:
        ask = ctx.ask(requester(command), Door.SLASH, channel)
        ctx.fleet.screen(here[0], Action.DEPLOY, ask).raise_if_refused()
        return None
    services = {t.name: f"{t.cluster}/{t.service}" for t in allowed}
    msg = messages.choose_target(tag, allowed, services)
    await respond(response_type="ephemeral", **msg.as_kwargs())


async def _help(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    channel = _where(command)[1]
    targets = ctx.fleet.targets
    here = targets.for_channel(channel) if len(targets) > 1 else list(targets)
    if not here:
        return await _nowhere(ctx, command, respond)
    ask = ctx.ask(requester(command), Door.SLASH, channel)
    ctx.fleet.may_read(here[0], ask).raise_if_refused()
    engine = ctx.engine(here[0])  # one repository for the targets of a channel, mostly
    listed = here if len(targets) > 1 else []
    user = requester(command).who
    # The subcommands this person may use here (rules.py's who: deployers change, approvers
    # may also abort, freeze and unfreeze); the reads are everyone's.
    may = messages.Allowed(
        change=any(t.may_deploy(user) for t in here),
        guard=any(t.may_deploy(user) or t.may_approve(user) for t in here),
    )

    def read() -> dict[str, Any]:
        # One listing for the images and their change summaries; the message is built here,
        # once for every answer that shares this read, and off the event loop.
        images, changes = engine.recent_changes(5)
        msg = messages.help_message(
            images,
            engine.service_name,
            ctx.settings.slack_commands,
            changes,
            targets=listed,
            allowed=may,
        )
        return msg.as_kwargs()

    answer = await ctx.read(
        f"help:{may.change}:{may.guard}:" + ",".join(t.name for t in here), read
    )
    await respond(response_type="ephemeral", **answer)


def _redeploy_words(ctx: BotContext, text: str) -> tuple[str | None, str]:
    """``/redeploy [TARGET] [reason]``: a first word that names a target is the target."""
    first, _, rest = text.partition(" ")
    if first and first in ctx.fleet.targets.names:
        return first, rest.strip()
    return None, text


async def redeploy(ctx: BotContext, command: dict[str, Any], respond: AsyncRespond) -> None:
    channel = _where(command)[1]
    named, reason = _redeploy_words(ctx, str(command.get("text", "")).strip())
    picked = await _pick(ctx, command, respond, named)
    if picked is None:
        if ctx.fleet.targets.for_channel(channel):
            await _which(
                ctx, command, respond, f"{ctx.settings.slack_commands.redeploy} {{target}}"
            )
        return
    target = picked
    who = requester(command)
    await guards.change(ctx, target, Action.REDEPLOY, respond, channel, who, reason=reason[:200])


async def status(
    ctx: BotContext,
    command: dict[str, Any],
    respond: AsyncRespond,
    named: str | None = None,
) -> None:
    """One target in detail (named, or the channel's only one), else every target the
    channel may read, in one message."""
    channel = _where(command)[1]
    if (
        named is None
        and ctx.several
        and command.get("command") == ctx.settings.slack_commands.status
    ):
        # With one target its text is ignored, as before targets.
        named = str(command.get("text", "")).strip() or None
    targets = ctx.fleet.targets
    ask = ctx.ask(requester(command), Door.SLASH, channel)
    picked = await _pick(ctx, command, respond, named)
    if picked is not None:
        ctx.fleet.may_read(picked, ask).raise_if_refused()
        engine = ctx.engine(picked)
        label = picked.name if ctx.several else ""
        # Built once per read, in its thread, for every answer that shares it.
        answer = await ctx.read(
            f"status:{picked.name}", lambda: messages.status(engine.status(5), label).as_kwargs()
        )
        await respond(response_type="ephemeral", **answer)
        return
    here = [t for t in targets.for_channel(channel) if ctx.fleet.may_read(t, ask).allowed]
    if not here:
        return None  # _pick said where deploybot works
    key = "statuses:" + ",".join(t.name for t in here)
    names = ctx.settings.slack_commands
    answer = await ctx.read(
        key, lambda: messages.status_all(ctx.fleet.statuses(here), names).as_kwargs()
    )
    await respond(response_type="ephemeral", **answer)
