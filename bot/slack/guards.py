"""Slack's side of the guardrails: freeze, approval requests, Stop, and the queue.

Every change a Slack door asks for goes through ``guarded``: the engine plans it through the
rules (bot/rules.py) at that door; a refusal for want of approval becomes a request posted in
the channel with **Approve** and **Reject**, a refusal because the lock is held offers
**Deploy when free** and **Tell me when free**, any other refusal is said to the person
with the rule that refused. Buttons carry ids only (``target|id``): what they act on is read
from the table, so a button whose value was changed finds nothing, and an approval counts
only for what the request showed (the engine re-checks its premise).

The target's supervisor (bot/deploy/supervisor.py) gives each queued deploy its turn once the
lock is free (re-checked as a new request through the queue's door); ``render_queue`` shows
it here, and tells those who asked to be told. While deploys are queued, every other door
is refused with the queue's offer (the rules' ``queue`` step): nobody overtakes them between
a release and their turn.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.deploy.alarms import AlarmFiring
from bot.deploy.engine import Engine
from bot.deploy.events import LockFree, TurnRefused, TurnStarting
from bot.deploy.records import (
    ApprovalRequest,
    DeploymentRecord,
    Lock,
    Plan,
    QueuedItem,
    QueueMode,
    Requester,
    RequestState,
    Via,
    short_digest,
)
from bot.deploy.rollout import Outcome
from bot.deploy.supervisor import Supervisor
from bot.errors import DeployError, DeployRefused, LockHeld, MovedTag
from bot.fleet import Ask
from bot.mrkdwn import escape as esc
from bot.mrkdwn import is_group_id, is_user_id, link, mention
from bot.rules import Action, Door, Rule, RuleRefused
from bot.slack.context import BotContext
from bot.slack.messages import (
    CONFIRM_TEXT_LIMIT,
    Message,
    deploy_button,
    offers_stop,
    plan_section,
    stop_button,
)
from bot.target import Target

log = logging.getLogger("deploybot.slack.guards")

APPROVE_ACTION = "approve_request"
REJECT_ACTION = "reject_request"
STOP_ACTION = "stop_rollout"
QUEUE_ACTION = "deploy_when_free"
TELL_ACTION = "tell_when_free"
CANCEL_QUEUED_ACTION = "cancel_queued"
UNLOCK_ACTION = "break_lock"
MOVED_TAG_ACTION = "deploy_moved_tag"  # a release tag re-pushed on purpose: deploy it anyway
ALARM_ANYWAY_ACTION = "deploy_despite_alarms"  # alarms in ALARM, confirmed: deploy anyway
SEP = "|"
# What may wait in the queue: a deploy of a tag, a redeploy; a promotion only once approved
# (its request names the image, checked again at its turn).
QUEUEABLE = frozenset({"deploy", "redeploy"})

Reply = Callable[..., Awaitable[Any]]
# A door with nobody to press a button (CI's notice, deploy on push): given what made the
# target busy (LockHeld, or the queue's refusal), it joins the queue itself.
Busy = Callable[[DeployRefused], Awaitable[Any]]
Launch = Callable[[Callable[[], Plan], str, Reply], Awaitable[DeploymentRecord | None]]


@dataclass(frozen=True)
class Place:
    """One target as these listeners see it: its rules, its engine, and how a change of it is
    shown and started (post the deployment's message, then start)."""

    target: Target
    engine: Engine
    launch: Launch


def place_of(ctx: BotContext, name: str | None = None) -> Place:
    """The target called ``name`` (None or "": the default one), from the bot's fleet;
    UnknownTarget (a refusal naming the known ones) for a name no target has."""
    target = ctx.fleet.targets.get(name or None)
    return Place(target, ctx.engine(target), functools.partial(ctx.launch, target))


def button_value(target: str, *parts: str) -> str:
    return SEP.join((target, *parts))


def read_value(value: str, parts: int) -> list[str]:
    """``target|a|b`` as [target, a, b] (missing parts ""); a value of the wrong shape reads
    as empty parts, and then finds nothing."""
    found = value.split(SEP, parts)
    return (found + [""] * (parts + 1))[: parts + 1]


def _when(at: datetime) -> str:
    """Slack's own date formatting (api.slack.com/reference/surfaces/formatting#date-formatting),
    the fallback in UTC."""
    return f"<!date^{int(at.timestamp())}^{{time}}|{at:%H:%M} UTC>"


def _image(tag: str, digest: str) -> str:
    return f"`{esc(tag)}`" + (f" ({esc(short_digest(digest))})" if digest else "")


# --- messages -------------------------------------------------------------------------------


def approval_message(request: ApprovalRequest, target: Target, note: str = "") -> Message:
    """The request: who, what, from which image to which, until when; Approve and Reject
    while it is pending."""
    what = {"redeploy": "Redeploy", "promote": "Promote"}.get(request.kind, "Deploy")
    title = f"🔐 {what} {request.tag} to {target.name}: approval needed"
    others = [a for a in target.approvers if a != request.requester.who]
    got = ", ".join(mention(a) for a in request.approved_by) or "none yet"
    fields = [
        MarkdownTextObject(text=f"*Asked by*\n{mention(request.requester.who)}"),
        MarkdownTextObject(text=f"*Target*\n{esc(target.name)}"),
        MarkdownTextObject(text=f"*From*\n{_image(request.from_tag, request.from_digest)}"),
        MarkdownTextObject(text=f"*To*\n{_image(request.tag, request.digest)}"),
        MarkdownTextObject(
            text=f"*Needs*\n{target.approvals} of {', '.join(mention(a) for a in others)}"
        ),
        MarkdownTextObject(text=f"*Approved by*\n{got}"),
    ]
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(fields=fields),
    ]
    if request.reason:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"_{esc(request.reason)}_")]))
    if shown := plan_section(request.plan):  # the plan approvers approve: one section
        blocks.append(shown)
    state = {
        RequestState.PENDING: f"Expires {_when(request.expires_at)} · request `{request.id}`",
        RequestState.APPROVED: f"✅ Approved · request `{request.id}`",
        RequestState.REJECTED: f"❌ Rejected by {mention(request.decided_by)} · `{request.id}`",
    }[request.state]
    if note:
        state = f"{note} · {state}"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=state[:3000])]))
    if request.state is RequestState.PENDING and not note.startswith("⌛"):
        value = button_value(target.name, request.id)
        blocks.append(
            ActionsBlock(
                block_id="approval",
                elements=[
                    ButtonElement(
                        text=PlainTextObject(text="Approve"),
                        action_id=APPROVE_ACTION,
                        value=value,
                        style="primary",
                        confirm=ConfirmObject(
                            title="Approve?",
                            text=MarkdownTextObject(
                                text=_clip_to(
                                    f"{what} {_image(request.tag, request.digest)} to "
                                    f"*{esc(target.name)}*, asked by "
                                    f"{mention(request.requester.who)}?"
                                    + (
                                        f"\n{esc(request.plan_summary)}"
                                        if request.plan_summary
                                        else ""
                                    ),
                                    CONFIRM_TEXT_LIMIT,
                                )
                            ),
                            confirm="Approve",
                            deny="Cancel",
                        ),
                    ),
                    ButtonElement(
                        text=PlainTextObject(text="Reject"),
                        action_id=REJECT_ACTION,
                        value=value,
                        style="danger",
                    ),
                ],
            )
        )
    return Message(
        text=f"{esc(title)} (asked by {mention(request.requester.who)})", blocks=tuple(blocks)
    )


def _clip_to(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def queue_offer(
    refusal: str, target: Target, kind: str, tag: str, request_id: str, *, tell: bool = True
) -> Message:
    """A refusal for the lock, or for the deploys queued before it: Deploy when free (join
    the queue) and, with ``tell``, Tell me when free (when the lock is next released)."""
    deploy = button_value(target.name, kind, tag, request_id)
    buttons = [
        ButtonElement(
            text=PlainTextObject(text="Deploy when free"),
            action_id=QUEUE_ACTION,
            value=deploy[:2000],
            style="primary",
        )
    ]
    if tell:
        buttons.append(
            ButtonElement(
                text=PlainTextObject(text="Tell me when free"),
                action_id=TELL_ACTION,
                value=button_value(target.name),
            )
        )
    blocks: tuple[Block, ...] = (
        SectionBlock(text=MarkdownTextObject(text=refusal[:3000])),
        ActionsBlock(block_id="queue", elements=buttons),
    )
    return Message(text=refusal, blocks=blocks)


def moved_tag_offer(refusal: str, target: Target, moved: MovedTag) -> Message:
    """A release tag that names another image than the one deployed under it: the refusal,
    and a button (behind a confirm) that deploys the image it names now, that one only."""
    button = ButtonElement(
        text=PlainTextObject(text="Deploy it anyway"),
        action_id=MOVED_TAG_ACTION,
        value=button_value(target.name, moved.tag, moved.digest)[:2000],
        style="danger",
        confirm=ConfirmObject(
            title="Deploy a moved tag?",
            text=MarkdownTextObject(
                text=f"`{esc(moved.tag)}` now names {short_digest(moved.digest)}, not "
                f"{short_digest(moved.recorded)} that was deployed under it. Deploy "
                f"{short_digest(moved.digest)} to *{esc(target.name)}*?"
            ),
            confirm="Deploy",
            deny="Cancel",
        ),
    )
    blocks: tuple[Block, ...] = (
        SectionBlock(text=MarkdownTextObject(text=refusal[:3000])),
        ActionsBlock(block_id="moved_tag", elements=[button]),
    )
    return Message(text=refusal, blocks=blocks)


def alarm_offer(refused: AlarmFiring, target: Target) -> Message:
    """A change refused while alarms it is judged by are in ALARM: which, since when, linked
    to the console, and **Deploy anyway** behind a confirm naming them, which goes past those
    alarms only (another that fires meanwhile refuses it again), on the record."""
    lines = [
        f"• {link(v.url, v.name)} is in *{esc(v.state)}*"
        + (f" {esc(v.since_text())}" if v.since else "")
        + (f": {esc(v.reason.strip()[:300])}" if v.reason.strip() else "")
        + (" (ECS watches it)" if v.watched_by_ecs else "")
        for v in refused.firing
    ]
    what = f"{esc(refused.kind)} `{esc(refused.tag)}`" if refused.tag else esc(refused.kind)
    watched = any(v.watched_by_ecs for v in refused.firing)
    text = (
        f"Not deployed to *{esc(target.name)}*: {what} is held back while "
        + ("this alarm is" if len(lines) == 1 else "these alarms are")
        + " in ALARM. Nothing was changed.\n"
        + "\n".join(lines)
        + (
            "\nECS does not watch its deployment alarms for a deployment that starts while one "
            "is in ALARM."
            if watched
            else ""
        )
        + "\nDeploy again once it is OK, or go past it (on the record):"
    )
    names = [v.name for v in refused.firing]
    button = ButtonElement(
        text=PlainTextObject(text="Deploy anyway"),
        action_id=ALARM_ANYWAY_ACTION,
        value=button_value(
            target.name, refused.kind, refused.tag, refused.source, json.dumps(names)
        )[:2000],
        style="danger",
        # Slack's confirm dialog: at most 300 characters of text.
        confirm=ConfirmObject(
            title="Deploy during an alarm?",
            text=MarkdownTextObject(
                text=(
                    f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} in ALARM. "
                    f"Deploy to {target.name} anyway? It is recorded with the deployment."
                )[:300]
            ),
            confirm="Deploy",
            deny="Cancel",
        ),
    )
    blocks: tuple[Block, ...] = (
        SectionBlock(text=MarkdownTextObject(text=text[:3000])),
        ActionsBlock(block_id="alarms", elements=[button]),
    )
    plain = f"Not deployed to {esc(target.name)}: " + "; ".join(
        f"{esc(v.name)} is in ALARM" for v in refused.firing
    )
    return Message(text=plain, blocks=blocks)


def queued_message(item: QueuedItem, position: int, target: Target, text: str = "") -> Message:
    """What the queue says to whoever joined it (``text``: said otherwise), with Cancel."""
    if text:
        return _with_cancel(text, item, target)
    if item.mode is QueueMode.TELL:
        return _with_cancel(
            f"I will tell you here when {esc(target.name)}'s deploy lock is free.", item, target
        )
    what = f"{esc(item.kind)} `{esc(item.tag)}`" if item.tag else esc(item.kind)
    return _with_cancel(
        f"Queued: {what} to {esc(target.name)}, number {position} in the queue. It is "
        "checked again when its turn comes, and announced in the channel when it starts.",
        item,
        target,
    )


def _with_cancel(text: str, item: QueuedItem, target: Target) -> Message:
    blocks: tuple[Block, ...] = (
        SectionBlock(
            text=MarkdownTextObject(text=text),
            accessory=ButtonElement(
                text=PlainTextObject(text="Cancel"),
                action_id=CANCEL_QUEUED_ACTION,
                value=button_value(target.name, item.id),
            ),
        ),
    )
    return Message(text=text, blocks=blocks)


# --- the doors ------------------------------------------------------------------------------


async def _say(reply: Reply, text: str) -> None:
    try:
        await reply(text=text, response_type="ephemeral", replace_original=False)
    except Exception:
        log.exception("could not tell the user: %s", text)


def _refusal_text(exc: DeployError) -> str:
    if isinstance(exc, RuleRefused):
        return exc.decision.mrkdwn or esc(exc.message)
    return esc(exc.message)


async def guarded(
    ctx: BotContext,
    place: Place,
    reply: Reply,
    channel: str,
    requester: Requester,
    plan: Callable[[Via], Plan],
    *,
    door: Door = Door.SLASH,
    kind: str = "deploy",
    tag: str = "",
    request_id: str = "",
    approved_by: tuple[str, ...] = (),
    allow_moved_tag: str = "",
    allow_alarms: tuple[str, ...] = (),
    busy: Busy | None = None,
) -> DeploymentRecord | None:
    """A change through a Slack door: planned through the rules, shown, started; or the
    refusal, an approval request, or the queue's offer (``busy`` instead, where given).
    Never raises a refusal. ``allow_moved_tag``: the digest a person confirmed a moved
    release tag names; ``allow_alarms``: the alarms in ALARM a person confirmed deploying
    past."""
    via = Via(
        door=door,
        channel=channel,
        approved_by=approved_by,
        request_id=request_id,
        allow_moved_tag=allow_moved_tag,
        allow_alarms=allow_alarms,
    )
    try:
        return await place.launch(lambda: plan(via), channel, reply)
    except RuleRefused as refused:
        if refused.decision.needs_approval:
            await ask_approval(ctx, place, reply, channel, plan, via)
            return None
        if refused.rule is Rule.QUEUE and kind in QUEUEABLE:
            if busy is not None:
                await busy(refused)
                return None
            text = f"{_refusal_text(refused)}. Join the queue:"
            await _offer(reply, queue_offer(text, place.target, kind, tag, request_id))
            return None
        await _say(reply, _refusal_text(refused))
    except LockHeld as held:
        if busy is not None:
            await busy(held)
            return None
        text = f"{esc(held.message)}\nOr let deploybot do it once the lock is free:"
        await _offer(reply, queue_offer(text, place.target, kind, tag, request_id))
    except MovedTag as moved:
        await _offer(reply, moved_tag_offer(esc(moved.message), place.target, moved))
    except AlarmFiring as firing:
        await _offer(reply, alarm_offer(firing, place.target))
    except DeployRefused as exc:
        await _say(reply, esc(exc.message))
    return None


async def change(
    ctx: BotContext,
    target: Target,
    action: Action,
    reply: Reply,
    channel: str,
    requester: Requester,
    *,
    door: Door = Door.SLASH,
    tag: str = "",
    source: str | None = None,
    of: str = "",
    reason: str = "",
    images: list[dict[str, Any]] | None = None,
    allow_moved_tag: str = "",
    allow_alarms: tuple[str, ...] = (),
    busy: Busy | None = None,
) -> DeploymentRecord | None:
    """Start a change of ``target`` from Slack: the fleet plans it through the rules at
    ``door`` (its keywords: Fleet.plan's), then ``guarded`` shows and starts it, or says why
    not (``busy``: see guarded). Every Slack door that starts something comes here."""
    return await guarded(
        ctx,
        place_of(ctx, target.name),
        reply,
        channel,
        requester,
        lambda via: ctx.fleet.plan(
            target,
            action,
            Ask.through(requester, via),
            tag=tag,
            source=source,
            of=of,
            reason=reason,
            images=images,
        ),
        door=door,
        kind=action.value,
        tag=tag,
        allow_moved_tag=allow_moved_tag,
        allow_alarms=allow_alarms,
        busy=busy,
    )


async def _offer(reply: Reply, offer: Message) -> None:
    try:
        await reply(response_type="ephemeral", replace_original=False, **offer.as_kwargs())
    except Exception:
        log.exception("could not offer the queue")


async def ask_approval(
    ctx: BotContext,
    place: Place,
    reply: Reply,
    channel: str,
    plan: Callable[[Via], Plan],
    via: Via,
) -> ApprovalRequest | None:
    """Plan the change for a request (every rule but approvals holds), record the request,
    post it in the channel."""
    engine = place.engine
    try:
        planned = await asyncio.to_thread(plan, replace(via, asking=True))
        request = await asyncio.to_thread(
            engine.request_approval, planned, channel, via.source or ""
        )
    except DeployError as exc:
        await _say(reply, _refusal_text(exc))
        return None
    msg = approval_message(request, place.target)
    try:
        resp = await ctx.client.chat_postMessage(channel=channel, **msg.as_kwargs())
    except SlackApiError as exc:
        await _say(
            reply,
            f"Nothing was deployed: Slack did not take the approval request "
            f"({exc.response.get('error')}).",
        )
        return None
    ref = f"{channel}:{resp['ts']}"
    try:
        request = await asyncio.to_thread(engine.set_request_message, request, ref)
    except DeployError as exc:
        log.warning("could not remember the request's message: %s", exc)
    log.info(
        "approval requested",
        extra={"who": request.requester.who, "tag": request.tag, "request": request.id},
    )
    return request


async def freeze(
    ctx: BotContext, place: Place, reply: Reply, channel: str, requester: Requester, reason: str
) -> None:
    via = Via(door=Door.SLASH, channel=channel)
    try:
        frozen = await asyncio.to_thread(place.engine.freeze, requester, reason, via=via)
    except DeployError as exc:
        return await _say(reply, _refusal_text(exc))
    text = (
        f"🧊 {mention(frozen.by)} froze *{esc(place.target.name)}*: {esc(frozen.reason)}. "
        "Deploys, redeploys and promotions are refused until "
        f"`{esc(place.engine.hints.unfreeze(place.target.name))}`; rollback and abort still work."
    )
    await _announce(ctx, reply, channel, text)
    # A deploy that took the lock before the freeze is not stopped by it: say so, offer Stop.
    try:
        rolling = await asyncio.to_thread(place.engine.rolling_out)
    except DeployError as exc:
        log.warning("could not tell whether a deploy is rolling out: %s", exc)
        return
    if rolling is None:
        return
    said = (
        f"A deploy started before the freeze is still rolling out: {esc(rolling.kind)} "
        f"`{esc(rolling.id)}` of `{esc(rolling.tag)}`. Stop it?"
    )
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=said))]
    if offers_stop(rolling, None):
        name = place.target.name if ctx.several else ""
        blocks.append(ActionsBlock(block_id="stop", elements=[stop_button(rolling, name)]))
    await _offer(reply, Message(text=said, blocks=tuple(blocks)))


async def unfreeze(
    ctx: BotContext, place: Place, reply: Reply, channel: str, requester: Requester
) -> None:
    via = Via(door=Door.SLASH, channel=channel)
    try:
        lifted = await asyncio.to_thread(place.engine.unfreeze, requester, via=via)
    except DeployError as exc:
        return await _say(reply, _refusal_text(exc))
    by = mention(lifted.by) if lifted.via == "slack" else esc(lifted.by)
    text = (
        f"☀️ {mention(requester.who)} unfroze *{esc(place.target.name)}* (frozen by {by}: "
        f"{esc(lifted.reason)})."
    )
    await _announce(ctx, reply, channel, text)


async def abort(
    ctx: BotContext,
    place: Place,
    reply: Reply,
    channel: str,
    requester: Requester,
    *,
    door: Door = Door.SLASH,
    of: str = "",
) -> DeploymentRecord | None:
    """Stop: the previous revision goes back (ECS's rollback, else the previous task
    definition). Announced in the channel, then the
    abort's own short watch (Engine.follow_abort, the terminal's too) follows the restore to
    its end and the announcement says how it ended; the lock is held until then."""
    via = Via(door=door, channel=channel)
    try:
        record = await asyncio.to_thread(place.engine.abort, requester, via=via, of=of)
    except DeployError as exc:
        await _say(reply, _refusal_text(exc))
        return None
    back = record.previous_tag or "the previous task definition"
    said = (
        f"🛑 {mention(requester.who)} stopped {esc(record.kind)} `{esc(record.id)}` of "
        f"`{esc(record.tag)}` on {esc(place.target.name)}: "
    )
    # How ECS was asked (#26): its own rollback, or the previous task definition.
    how = f" ({esc(record.abort_how)})" if record.abort_how else ""
    ts = await _announce(ctx, reply, channel, said + f"`{esc(back)}` goes back now{how}.")
    ended = said + await _follow_abort(place, record, back)
    if ts:
        try:
            await ctx.client.chat_update(channel=channel, ts=ts, text=ended)
            return record
        except Exception as exc:
            log.warning("could not update the abort's announcement: %s", exc)
    await _say(reply, ended)
    return record


class _WatchStopped(Exception):
    """The bot stops: an abort's watch ends at its next poll (the record stays as it is)."""


async def _follow_abort(place: Place, record: DeploymentRecord, back: str) -> str:
    """How the restore ended, for the abort's announcement. The watch blocks a thread for as
    long as the restore lasts (ROLLOUT_TIMEOUT_SECONDS at most); cancelled with the bot, it
    stops at its next poll."""
    stopping = threading.Event()

    def on_wait() -> None:
        if stopping.is_set():
            raise _WatchStopped

    try:
        outcome, why = await asyncio.to_thread(place.engine.follow_abort, record, on_wait)
    except asyncio.CancelledError:
        stopping.set()
        raise
    hints, name = place.engine.hints, place.target.name
    if outcome is None:
        waited = place.engine.settings.rollout_timeout_seconds
        lost = f" (AWS: {esc(why)})" if why else ""
        return (
            f"`{esc(back)}` is still going back after {waited:.0f} s{lost}. ECS carries on; "
            f"the lock stays held until it is done. `{esc(hints.status(name))}` shows how it "
            "goes."
        )
    if outcome is Outcome.ABORTED and why.endswith(" is back"):
        return f"✅ `{esc(back)}` is back."
    return f"{esc(outcome.label)}: {esc(why)}."


def unlock_offer(target: Target, held: Lock) -> Message:
    """``/deploy unlock``'s answer: whose lock it is, and a button (with a confirm dialog) that
    breaks it once ECS is seen to roll nothing out."""
    whose = esc(held.describe())
    text = (
        f"{esc(target.name)}'s deploy lock is held: {whose}. Break it only if that deployment "
        "is over (deploybot checks that ECS rolls nothing out on it first)."
    )
    # Slack's confirmation dialog object: title, text, confirm, deny, at most 300 characters
    # of text (api.slack.com/reference/block-kit/composition-objects#confirm).
    button = ButtonElement(
        text=PlainTextObject(text="Break the lock"),
        action_id=UNLOCK_ACTION,
        value=button_value(target.name, held.deployment_id)[:2000],
        style="danger",
        confirm=ConfirmObject(
            title=f"Break {target.name}'s lock?"[:100],
            text=(
                f"It is {held.holder}'s ({held.tag}, {held.deployment_id}). Whoever holds it "
                "will no longer keep others from deploying."
            )[:300],
            confirm="Break it",
            deny="Cancel",
        ),
    )
    blocks: tuple[Block, ...] = (
        SectionBlock(text=MarkdownTextObject(text=text[:3000])),
        ActionsBlock(block_id="unlock", elements=[button]),
    )
    return Message(text=text, blocks=blocks)


def _may_unlock(
    ctx: BotContext, place: Place, requester: Requester, door: Door, channel: str
) -> str:
    """Why ``requester`` may not break ``place``'s lock here ("" when they may)."""
    decision = ctx.fleet.decide(place.target, Action.UNLOCK, ctx.ask(requester, door, channel))
    return "" if decision.allowed else decision.mrkdwn


async def unlock(
    ctx: BotContext, place: Place, reply: Reply, channel: str, requester: Requester
) -> None:
    """``/deploy unlock [TARGET]``: whose lock it is, with a Break the lock button."""
    if why := _may_unlock(ctx, place, requester, Door.SLASH, channel):
        return await _say(reply, why)
    held = await asyncio.to_thread(place.engine.lock_item)
    if held is None:
        return await _say(
            reply, f"{esc(place.target.name)}'s deploy lock is free: nothing to break."
        )
    await _offer(reply, unlock_offer(place.target, held))


async def unlock_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    """Break the lock the button names, if it still holds it and ECS rolls nothing out;
    said in the channel and logged, as ``deploybot unlock`` is."""
    name, deployment = read_value(_value(body), 1)
    place, requester, channel = place_of(ctx, name), clicker(body), click_channel(body)
    if why := _may_unlock(ctx, place, requester, Door.BUTTON, channel):
        return await _say(respond, why)
    held = await asyncio.to_thread(place.engine.lock_item)
    if held is None or held.deployment_id != deployment:
        now = f"it is now held: {esc(held.describe())}" if held else "it is free now"
        return await _say(respond, f"Not unlocked: the lock changed meanwhile ({now}).")
    try:
        broken = await asyncio.to_thread(place.engine.unlock, requester, only_if_idle=True)
    except DeployError as exc:
        return await _say(respond, _refusal_text(exc))
    if broken is None:
        return await _say(respond, f"{esc(place.target.name)}'s deploy lock is free already.")
    await _announce(
        ctx,
        respond,
        channel,
        f"🔓 {mention(requester.who)} broke *{esc(place.target.name)}*'s deploy lock; it was "
        f"{esc(broken.holder)}'s ({esc(broken.tag)}, {esc(broken.deployment_id)}). ECS showed "
        "nothing rolling out.",
    )


async def _announce(ctx: BotContext, reply: Reply, channel: str, text: str) -> str:
    """Said in the channel (everyone should know); to the person if the channel will not take
    it. The channel message's ts ("" when it went to the person)."""
    try:
        posted = await ctx.client.chat_postMessage(channel=channel, text=text)
    except Exception as exc:
        log.warning("could not announce in %s: %s", channel, exc)
        await _say(reply, text)
        return ""
    return str(posted.get("ts", ""))


# --- buttons --------------------------------------------------------------------------------


def clicker(body: dict[str, Any], source: str = "slack") -> Requester:
    """Who pressed a button (an interaction payload's ``user``), as a requester."""
    user = body.get("user", {})
    return Requester(
        who=str(user.get("id", "")),
        source=source,
        display=str(user.get("username") or user.get("name") or user.get("id", "")),
    )


def click_channel(body: dict[str, Any]) -> str:
    """The channel of a button's message (``channel``, or an ephemeral's ``container``)."""
    container = body.get("container", {})
    return str(body.get("channel", {}).get("id") or container.get("channel_id", ""))


def _value(body: dict[str, Any]) -> str:
    return str(body["actions"][0].get("value", ""))


def register(app: AsyncApp, ctx: BotContext) -> None:
    def on(action_id: str, handler: Callable[..., Awaitable[Any]], what: str) -> None:
        @app.action(action_id)
        async def clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            ctx.run(handler(ctx, body, respond), respond, what, clicker(body))

    on(APPROVE_ACTION, approve_clicked, "the Approve button")
    on(REJECT_ACTION, reject_clicked, "the Reject button")
    on(STOP_ACTION, stop_clicked, "the Stop button")
    on(QUEUE_ACTION, queue_clicked, "the Deploy when free button")
    on(TELL_ACTION, tell_clicked, "the Tell me when free button")
    on(CANCEL_QUEUED_ACTION, cancel_clicked, "the Cancel button")
    on(UNLOCK_ACTION, unlock_clicked, "the Break the lock button")
    on(MOVED_TAG_ACTION, moved_tag_clicked, "the Deploy it anyway button")
    on(ALARM_ANYWAY_ACTION, alarm_anyway_clicked, "the Deploy anyway button")


async def _update_request(
    ctx: BotContext, request: ApprovalRequest, place: Place, note: str
) -> None:
    channel, _, ts = request.message_ref.partition(":")
    if not ts:
        return
    msg = approval_message(request, place.target, note)
    try:
        await ctx.client.chat_update(channel=channel, ts=ts, **msg.as_kwargs())
    except SlackApiError as exc:
        log.warning("could not update the approval request: %s", exc.response.get("error"))


async def approve_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    name, request_id = read_value(_value(body), 1)
    approver, channel = clicker(body), click_channel(body)
    place = place_of(ctx, name)
    engine = place.engine
    via = Via(door=Door.BUTTON, channel=channel)
    shown = await asyncio.to_thread(engine.find_request, request_id)
    source = (shown.source or place.target.after) if shown is not None else None
    if shown is not None and source:
        # Promotion (or a target with `after`): whether the image completed on its source is
        # for the fleet to say, and the approval is judged with it.
        completed = await asyncio.to_thread(ctx.fleet.completed_on, source, shown.digest)
        via = replace(via, source=source, completed_on_source=completed)

    def replan(request: ApprovalRequest, again: Via) -> Plan:
        # Through the fleet, which knows what the engine cannot: promotion's source.
        plan: Plan = ctx.fleet.plan(
            place.target,
            Action(request.kind),
            Ask.through(request.requester, again),
            tag=request.tag,
            source=request.source or None,
        )
        return plan

    try:
        approval = await asyncio.to_thread(
            lambda: engine.approve(request_id, approver, via=via, replan=replan)
        )
    except RuleRefused as refused:
        await _say(respond, _refusal_text(refused))
        if refused.rule is Rule.EXPIRY:
            request = await asyncio.to_thread(engine.find_request, request_id)
            if request is not None:
                await _update_request(ctx, request, place, "⌛ Expired")
        if refused.rule is Rule.PREMISE:
            request = await asyncio.to_thread(engine.find_request, request_id)
            if request is not None:
                await _void(ctx, request, place, refused)
        return
    request = approval.request
    if approval.wait is not None:
        return await _queue_approved(ctx, place, respond, request, approver, channel)
    if approval.plan is None:
        more = "1 more approval" if approval.missing == 1 else f"{approval.missing} more"
        await _update_request(ctx, request, place, f"Needs {more}")
        return
    planned = approval.plan
    try:
        record = await place.launch(lambda: planned, channel, respond)
    except LockHeld:
        # Taken while the deployment's message was being posted: it waits for its requester.
        return await _queue_approved(ctx, place, respond, request, approver, channel)
    except RuleRefused as refused:
        if refused.rule is Rule.QUEUE:
            return await _queue_approved(ctx, place, respond, request, approver, channel)
        if refused.rule is Rule.PREMISE:
            await _void(ctx, request, place, refused)
            return await _say(respond, _refusal_text(refused))
        await _update_request(ctx, request, place, f"⚠️ Approved, not deployed: {refused.message}")
        return await _say(respond, _refusal_text(refused))
    except DeployRefused as exc:
        await _update_request(ctx, request, place, f"⚠️ Approved, not deployed: {exc.message}")
        return await _say(respond, esc(exc.message))
    if record is not None:
        await _update_request(
            ctx, request, place, f"Approved by {mention(approver.who)}: deploying ({record.id})"
        )


async def _void(
    ctx: BotContext, request: ApprovalRequest, place: Place, refused: RuleRefused
) -> None:
    """An approval bound to a plan that no longer holds (what runs, the image, or the plan's
    fingerprint changed before the start): the request says so, and its requester is told
    why in the request's thread (a DM when it has no message), as its other outcomes are."""
    await _update_request(ctx, request, place, f"🚫 No longer holds: {refused.message}"[:2000])
    text = (
        f"{mention(request.requester.who)} your {esc(request.kind)} of `{esc(request.tag)}` to "
        f"{esc(place.target.name)} was not started: {_refusal_text(refused)}"
    )
    channel, _, ts = request.message_ref.partition(":")
    try:
        if ts:
            await ctx.client.chat_postMessage(channel=channel, thread_ts=ts, text=text)
        else:
            await ctx.client.chat_postMessage(channel=request.requester.who, text=text)
    except Exception as exc:
        log.warning("could not tell %s the approval is void: %s", request.requester.who, exc)


async def _queue_approved(
    ctx: BotContext,
    place: Place,
    respond: AsyncRespond,
    request: ApprovalRequest,
    approver: Requester,
    channel: str,
) -> None:
    """Approved while its turn has not come (the lock is held, or deploys are queued): it
    joins the queue for its requester, with its approvals, and goes when its turn comes."""
    where = request.channel or channel
    via = Via(
        door=Door.BUTTON,
        channel=where,
        approved_by=request.approved_by,
        request_id=request.id,
        source=request.source or None,
    )
    try:
        item, position = await asyncio.to_thread(
            lambda: place.engine.enqueue(
                request.requester,
                kind=request.kind,
                tag=request.tag,
                reason=request.reason,
                via=via,
            )
        )
    except DeployError as exc:
        return await _say(respond, _refusal_text(exc))
    held = await asyncio.to_thread(place.engine.lock_item)
    behind = f" behind `{esc(held.deployment_id)}`" if held and held.deployment_id else ""
    await _update_request(
        ctx,
        request,
        place,
        f"Approved by {mention(approver.who)}; queued as number {position}{behind}",
    )
    msg = queued_message(item, position, place.target)
    try:
        await ctx.client.chat_postEphemeral(
            channel=where, user=request.requester.who, **msg.as_kwargs()
        )
    except Exception as exc:
        log.warning("could not tell %s their deploy is queued: %s", request.requester.who, exc)


async def reject_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    name, request_id = read_value(_value(body), 1)
    place = place_of(ctx, name)
    try:
        request = await asyncio.to_thread(place.engine.reject, request_id, clicker(body))
    except DeployError as exc:
        return await _say(respond, _refusal_text(exc))
    await _update_request(ctx, request, place, "")


async def stop_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    name, deployment = read_value(_value(body), 1)
    place = place_of(ctx, name)
    if not deployment:
        return await _say(respond, "This Stop button names no deployment; nothing was changed.")
    await abort(
        ctx, place, respond, click_channel(body), clicker(body), door=Door.BUTTON, of=deployment
    )


async def queue_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    name, kind, tag, request_id = read_value(_value(body), 3)
    place = place_of(ctx, name)
    who, channel = clicker(body), click_channel(body)
    approved_by: tuple[str, ...] = ()
    source: str | None = None
    if request_id:
        # Approvals come from the table, never from the button.
        request = await asyncio.to_thread(place.engine.find_request, request_id)
        if request is None or request.state is not RequestState.APPROVED:
            return await _say(respond, "That approval request is not approved; nothing queued.")
        if request.requester.who != who.who:
            return await _say(respond, "Only the person who asked may queue this deploy.")
        approved_by, kind, tag = request.approved_by, request.kind, request.tag
        source = request.source or None
    if kind not in QUEUEABLE and not (request_id and kind == "promote"):
        return await _say(respond, "Only deploys and redeploys can wait in the queue.")
    via = Via(
        door=Door.BUTTON,
        channel=channel,
        approved_by=approved_by,
        request_id=request_id,
        source=source,
    )
    try:
        item, position = await asyncio.to_thread(
            lambda: place.engine.enqueue(who, kind=kind, tag=tag, via=via)
        )
    except DeployError as exc:
        return await _say(respond, _refusal_text(exc))
    msg = queued_message(item, position, place.target)
    await respond(response_type="ephemeral", replace_original=False, **msg.as_kwargs())


async def tell_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    (name,) = read_value(_value(body), 0)
    place = place_of(ctx, name)
    via = Via(door=Door.BUTTON, channel=click_channel(body))
    item, position = await asyncio.to_thread(
        lambda: place.engine.enqueue(clicker(body), mode=QueueMode.TELL, via=via)
    )
    msg = queued_message(item, position, place.target)
    await respond(response_type="ephemeral", replace_original=False, **msg.as_kwargs())


async def cancel_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    name, item_id = read_value(_value(body), 1)
    place = place_of(ctx, name)
    try:
        item = await asyncio.to_thread(place.engine.cancel_queued, item_id, clicker(body))
    except DeployError as exc:
        return await _say(respond, _refusal_text(exc))
    what = f"{item.kind} `{esc(item.tag)}`" if item.kind else "the notice"
    said = f"Cancelled: {what} is no longer queued for {esc(place.target.name)}."
    if item.requester.on_push:
        # CI's image, queued in its notice's thread: the thread says who cancelled it, for
        # everyone who reads it (a person's own queued item is theirs: said to them alone).
        try:
            done = f"🚫 {said[:-1]}, by {mention(clicker(body).who)}."
            # Blocks of its own: the original's Cancel button goes with its text.
            await respond(
                replace_original=True,
                **Message(
                    text=done, blocks=(SectionBlock(text=MarkdownTextObject(text=done)),)
                ).as_kwargs(),
            )
            return
        except Exception:
            log.exception("could not say in the thread who cancelled the deploy on push")
    await _say(respond, said)


# --- the queue's turns ----------------------------------------------------------------------


def render_queue(ctx: BotContext, target: Target, supervisor: Supervisor) -> None:
    """Show the queue's turns of ``target`` (its supervisor takes them): the people waiting
    for a free lock are told; a turn is announced in its channel, then started as any Slack
    start (its message first); a refused one is told to its requester, and its approval
    request says so."""
    name = esc(target.name)

    async def lock_free(event: LockFree) -> None:
        await _tell(ctx, event.item, f"{name}'s deploy lock is free now.")

    async def starting(event: TurnStarting) -> None:
        item = event.item
        try:
            await ctx.client.chat_postMessage(
                channel=_turn_channel(ctx, item),
                text=f"⏭️ The queued {esc(item.kind)} of `{esc(event.tag)}` to "
                f"{name} by {_by(item)} starts now.",
            )
        except Exception as exc:
            log.warning("could not announce the queued deploy: %s", exc)

    async def start(item: QueuedItem, planned: Plan) -> DeploymentRecord | None:
        async def tell_requester(**kwargs: Any) -> None:
            await _tell(ctx, item, str(kwargs.get("text", "")))

        return await ctx.launch(
            target,
            lambda: planned,
            _turn_channel(ctx, item),
            tell_requester,
            starting_held=True,
            queued=True,
        )

    async def refused(event: TurnRefused) -> None:
        item = event.item
        why = _refusal_text(event.refused) if event.refused else "refused"
        whose = "The" if item.thread else "Your"  # CI's, told in its notice's thread
        if event.at_start:
            return await _tell(ctx, item, f"{whose} queued deploy did not start: {why}")
        text = (
            f"{whose} queued {esc(item.kind)} of `{esc(item.tag)}` to {name} "
            f"did not start when its turn came: {why}"
        )
        again: tuple[Block, ...] = ()
        if item.kind == "deploy" and item.tag:
            again = (
                SectionBlock(text=MarkdownTextObject(text=text[:3000])),
                ActionsBlock(
                    block_id="again",
                    elements=[
                        deploy_button(
                            item.tag,
                            supervisor.engine.service_name,
                            target=target.name if ctx.several else "",
                        )
                    ],
                ),
            )
        await _tell(ctx, item, text, again)
        if item.request_id:
            place = place_of(ctx, target.name)
            request = await asyncio.to_thread(place.engine.find_request, item.request_id)
            if request is not None:
                plain = event.refused.message if event.refused else "refused"
                await _update_request(ctx, request, place, f"⚠️ Not deployed at its turn: {plain}")

    supervisor.events.subscribe(LockFree, lock_free)
    supervisor.events.subscribe(TurnStarting, starting)
    supervisor.events.subscribe(TurnRefused, refused)
    supervisor.starter = start


def _turn_channel(ctx: BotContext, item: QueuedItem) -> str:
    return item.channel or (ctx.settings.slack_channel or "")


def _by(item: QueuedItem) -> str:
    """Who queued it: a mention of a person, CI's name (``CI (auto_deploy)``) as text."""
    if is_user_id(item.requester.who) or is_group_id(item.requester.who):
        return mention(item.requester.who)
    return esc(item.requester.name)


async def _tell(
    ctx: BotContext, item: QueuedItem, text: str, blocks: tuple[Block, ...] = ()
) -> None:
    """An ephemeral to the person in the channel they asked from (a DM without one); for a
    deploy on push (no person), a reply in its notice's thread."""
    shown: dict[str, Any] = {"blocks": [b.to_dict() for b in blocks]} if blocks else {}
    try:
        if item.thread:
            await ctx.client.chat_postMessage(
                channel=_turn_channel(ctx, item), thread_ts=item.thread, text=text, **shown
            )
        elif item.channel:
            await ctx.client.chat_postEphemeral(
                channel=item.channel, user=item.requester.who, text=text, **shown
            )
        else:
            await ctx.client.chat_postMessage(channel=item.requester.who, text=text, **shown)
    except Exception as exc:
        log.warning("could not tell %s: %s", item.requester.who, exc)


async def moved_tag_clicked(ctx: BotContext, body: dict[str, Any], respond: AsyncRespond) -> None:
    """Deploy it anyway: the release tag's new image, confirmed; if the tag moved again since
    the offer, that is refused (and offered) again."""
    name, tag, digest = read_value(_value(body), 2)
    target = ctx.fleet.targets.get(name or None)
    await change(
        ctx,
        target,
        Action.DEPLOY,
        respond,
        click_channel(body),
        clicker(body),
        door=Door.BUTTON,
        tag=tag,
        allow_moved_tag=digest or "-",
    )


async def alarm_anyway_clicked(
    ctx: BotContext, body: dict[str, Any], respond: AsyncRespond
) -> None:
    """Deploy anyway: the change a firing alarm held back, confirmed past the alarms its offer
    named (read from the button: another in ALARM since refuses it again, with its offer)."""
    name, kind, tag, source, names = read_value(_value(body), 4)
    try:
        confirmed = tuple(str(n) for n in json.loads(names or "[]"))
    except ValueError:
        confirmed = ()
    if kind not in {"deploy", "redeploy", "promote"}:
        return await _say(respond, "This button names no change; nothing was changed.")
    target = ctx.fleet.targets.get(name or None)
    await change(
        ctx,
        target,
        Action(kind),
        respond,
        click_channel(body),
        clicker(body),
        door=Door.BUTTON,
        tag=tag,
        source=source or None,
        allow_alarms=confirmed,
    )
