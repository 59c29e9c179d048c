"""Block Kit builders: pure functions of engine data, made with slack_sdk's block models."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.command_names import DEFAULT_COMMANDS, CommandNames
from bot.deploy.changes import ChangeSummary, commit_text, render_confirm, render_mrkdwn, reverse
from bot.deploy.plan_diff import clip_lines
from bot.deploy.plan_diff import text_lines as plan_lines
from bot.deploy.records import DeploymentRecord, ImageInfo, Plan, Status, short_digest
from bot.deploy.rollout import Outcome, Snapshot, revision_of
from bot.deploy.verifying import fired_alarms, progress_lines
from bot.mrkdwn import escape as esc
from bot.mrkdwn import is_user_id, link, mention
from bot.slack.pause_view import ShiftView, shift_blocks
from bot.target import Target

if TYPE_CHECKING:
    from bot.fleet import TargetStatus

DEPLOY_ACTION = "deploy_tag"
ROLLBACK_ACTION = "rollback"
PROMOTE_ACTION = "promote"
# Several buttons of one block need distinct action ids: ``deploy_tag:staging``,
# ``promote:production``; the listeners match the prefix, the value says what to do.
SEP = ":"
VERBS = {
    "deploy": "Deploying",
    "redeploy": "Redeploying",
    "rollback": "Rolling back to",
    "promote": "Promoting",
}


def button_value(**fields: str) -> str:
    """A button's value: what its listener needs, as compact JSON (Slack takes 2,000 chars)."""
    return json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))


def read_value(value: str, plain: str) -> dict[str, str]:
    """A button's value as ``button_value`` wrote it; a plain value (a button of a message
    from before targets, or of a single-target bot) is ``{plain: value}``."""
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            return {}
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
        return {}
    return {plain: value}


def _to(target: str) -> str:
    """`` to staging`` when messages name targets (several are configured), else nothing."""
    return f" to {target}" if target else ""


def _on(target: str) -> str:
    return f" on {target}" if target else ""


def _where(kind: str, target: str) -> str:
    """ "Rolling back to v4.3.0 on staging", "Deploying v4.4.0 to staging"."""
    return _on(target) if kind == "rollback" else _to(target)


# A completed change's heading: a rollback says where it went back to, never "Deployed".
DONE = {"deploy": "Deployed", "redeploy": "Redeployed", "rollback": "Rolled back to"}


def _change_of(kind: str, tag: str, target: str) -> str:
    """ "Deployment of v4.4.0 to staging", "Rollback to v4.3.0 on staging"."""
    noun = {"redeploy": "Redeploy of", "rollback": "Rollback to"}.get(kind, "Deployment of")
    return f"{noun} {tag}{_where(kind, target)}"


# A confirm dialog's text: "Maximum length for the text in this field is 300 characters"
# (Block Kit, "Confirmation dialog object", docs.slack.dev/reference/block-kit/
# composition-objects/confirmation-dialog-object; the same limit in slack-messaging's and
# slack-blocks' validators). Its title: 100; its buttons: 30.
CONFIRM_TEXT_LIMIT = 300
# A section block's text: "Maximum length for the text in this field is 3000 characters"
# (Block Kit, "Section block", https://api.slack.com/reference/block-kit/blocks#section). A
# message holds "up to 50 blocks ... and 100 blocks in modals or Home tabs" (Block Kit,
# "Blocks", https://docs.slack.dev/reference/block-kit/blocks): the plan is one section, so
# a plan of any length adds one block, never more.
SECTION_TEXT_LIMIT = 3000


@dataclass(frozen=True)
class Message:
    """What chat.postMessage / chat.update / respond take: fallback text and blocks."""

    text: str
    blocks: tuple[Block, ...] = ()

    def as_kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": [b.to_dict() for b in self.blocks]}


def who(record_or_source: DeploymentRecord) -> str:
    """A Slack mention for Slack users, the plain name (as text) for the CLI."""
    if record_or_source.source in ("slack", "ci-button") and is_user_id(record_or_source.who):
        return mention(record_or_source.who)
    return esc(record_or_source.who_display or record_or_source.who)


def progress_bar(running: int, desired: int, width: int = 10) -> str:
    filled = 0 if desired <= 0 else round(width * min(running, desired) / desired)
    return "█" * filled + "░" * (width - filled)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole} s" if whole < 90 else f"{whole // 60} min {whole % 60} s"


def deploy_confirm(
    tag: str, service: str, change: ChangeSummary | None = None, target: str = ""
) -> ConfirmObject:
    """Deploy's confirm dialog: what and where (``target``'s name, and its service), and with
    ``change`` what it changes there (plain text: people's commit titles are shown as typed,
    and it fits CONFIRM_TEXT_LIMIT). ``service`` and ``change`` are the target's own."""
    # The dialog has 300 characters: a service named like its cluster is named once. The tag
    # stays whole (the summary's headline shortens it to its version).
    cluster, _, name = service.partition("/")
    where = name if name == cluster else service
    intro = f"Deploy {tag} to {target} ({where})?" if target else f"Deploy {tag} to {where}?"
    return ConfirmObject(
        title="Deploy?",
        text=PlainTextObject(
            text=render_confirm(change, intro, CONFIRM_TEXT_LIMIT),
            emoji=False,
        ),
        confirm="Deploy",
        deny="Cancel",
    )


def deploy_button(
    tag: str, service: str, change: ChangeSummary | None = None, target: str = ""
) -> ButtonElement:
    """Deploy ``tag`` (``change``: what it changes, in the confirm dialog); with ``target``
    (several are configured) to that target, named on the button ("Deploy to staging") and
    in its action id, so a block holds one per target. ``service`` and ``change`` are that
    target's own: its cluster/service, and the change from what it runs."""
    if not target:
        return ButtonElement(
            text=PlainTextObject(text="Deploy"),
            action_id=DEPLOY_ACTION,
            value=tag,
            style="primary",
            confirm=deploy_confirm(tag, service, change),
        )
    return ButtonElement(
        text=PlainTextObject(text=f"Deploy to {target}"[:75]),
        action_id=f"{DEPLOY_ACTION}{SEP}{target}",
        value=button_value(tag=tag, target=target),
        style="primary",
        confirm=deploy_confirm(tag, service, change, target=target),
    )


def promote_button(record: DeploymentRecord, source: str, to: str) -> ButtonElement:
    """Promote the image this deployment completed with from ``source`` to ``to``, by digest."""
    image = _tag_text(record.tag, record.digest)
    return ButtonElement(
        text=PlainTextObject(text=f"Promote to {to}"[:75]),
        action_id=f"{PROMOTE_ACTION}{SEP}{to}",
        value=button_value(source=source, to=to, deployment=record.id),
        style="primary",
        confirm=ConfirmObject(
            title="Promote?",
            text=MarkdownTextObject(
                text=f"Deploy {image} to *{esc(to)}*, the image that completed on "
                f"*{esc(source)}*? Refused if a later deployment came to {esc(source)} since."
            ),
            confirm="Promote",
            deny="Cancel",
        ),
    )


def rollback_button(
    record: DeploymentRecord, change: ChangeSummary | None = None, target: str = ""
) -> ButtonElement:
    """Rollback of this one deployment: back to the image that ran before it, by digest.
    ``change``: the deployment's own summary; the dialog shows it reversed. ``target``: its
    target's name when several are configured (in the button's value)."""
    intro = (
        f"Back to {record.previous_tag}, the image that ran before this deployment? Refused "
        "if this deployment no longer runs."
    )
    summary = reverse(change) if change is not None else None
    return ButtonElement(
        text=PlainTextObject(text="Rollback"),
        action_id=ROLLBACK_ACTION,
        value=button_value(deployment=record.id, target=target) if target else record.id,
        style="danger",
        confirm=ConfirmObject(
            title="Roll back?",
            text=PlainTextObject(
                text=render_confirm(summary, intro, CONFIRM_TEXT_LIMIT), emoji=False
            ),
            confirm="Roll back",
            deny="Cancel",
        ),
    )


STOP_ACTION = "stop_rollout"  # handled in bot/slack/guards.py


def offers_stop(record: DeploymentRecord, snap: Snapshot | None) -> bool:
    """Stop while a deployment rolls out and there is something to put back (a redeploy runs
    the task definition that ran before it)."""
    if snap is not None and snap.outcome is not None:
        return False
    return record.task_definition != record.previous_task_definition and not record.aborted_by


def stop_button(record: DeploymentRecord, target: str = "") -> ButtonElement:
    """Stop (abort) this deployment: the previous task definition goes back at once."""
    before = _tag_text(record.previous_tag, record.previous_digest)
    return ButtonElement(
        text=PlainTextObject(text="Stop"),
        action_id=STOP_ACTION,
        value=f"{target}|{record.id}",
        style="danger",
        confirm=ConfirmObject(
            title="Stop this rollout?",
            text=MarkdownTextObject(
                text=f"Stop the rollout of `{esc(record.tag)}` and put {before} back now? "
                "The deployment ends *aborted*."
            ),
            confirm="Stop",
            deny="Keep going",
        ),
    )


def offers_rollback(record: DeploymentRecord, snap: Snapshot | None) -> bool:
    """Rollback only for a deployment that completed (so it runs) and changed the image: a
    failed or rolled-back one changed nothing to undo, a redeploy restarted the same image."""
    if snap is None or snap.outcome != Outcome.COMPLETED:
        return False
    if record.previous_digest and record.digest:
        return record.previous_digest != record.digest
    return record.previous_tag != record.tag


def _tag_text(tag: str, digest: str, commit: str | None = None) -> str:
    """``v4.4.0-…`` (abc1234, sha256:…): the tag, its commit ("no sha tag" said plainly) and
    digest, as far as they are known."""
    parts = [commit_text(commit), short_digest(digest) if digest else ""]
    shown = ", ".join(esc(p) for p in parts if p)
    return f"`{esc(tag)}`" + (f" ({shown})" if shown else "")


def change_section(change: ChangeSummary | None) -> SectionBlock | None:
    """What a deploy changes, as a section: direction, compare link, commits (or why not).
    None when there is nothing to say (no summary, or the same image again). The piece a
    promotion or an approval request adds to its message too."""
    if change is None or change.direction.kind == "same":
        return None
    text = render_mrkdwn(change)
    return SectionBlock(text=MarkdownTextObject(text=_clip(text, SECTION_TEXT_LIMIT)))


def plan_section(lines: Sequence[str]) -> SectionBlock | None:
    """The plan's task definition lines (bot/deploy/plan_diff.py's ``text_lines``: the diff
    from what runs, the checks) as one section, in a code block, as many lines as fit in a
    section's text (SECTION_TEXT_LIMIT), then how many more. None without lines."""
    if not lines:
        return None
    room = SECTION_TEXT_LIMIT - 8  # the code block's fences
    return SectionBlock(
        text=MarkdownTextObject(text=f"```{clip_lines([esc(line) for line in lines], room)}```")
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def starting(plan: Plan, target: str = "") -> Message:
    """A deployment's message before anything is written to AWS (the lock is not taken yet)."""
    title = f"🚀 {VERBS.get(plan.kind, 'Deploying')} {plan.tag}{_where(plan.kind, target)}"
    by = plan.requester
    slack_user = by.source in ("slack", "ci-button") and is_user_id(by.who)
    named = mention(by.who) if slack_user else esc(by.name)
    was = _tag_text(plan.current.tag, plan.current.digest, plan.previous_commit)
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(
            fields=[
                MarkdownTextObject(text=f"*Service*\n{esc(plan.service)}"),
                MarkdownTextObject(text=f"*By*\n{named} ({esc(by.source)})"),
                MarkdownTextObject(text=f"*Tag*\n{_tag_text(plan.tag, plan.digest, plan.commit)}"),
                MarkdownTextObject(text=f"*Revision*\nnew (was {was})"),
            ]
        ),
    ]
    if section := change_section(plan.change):
        blocks.append(section)
    if plan.task is not None and (shown := plan_section(plan_lines(plan.task))):
        blocks.append(shown)
    blocks += [
        SectionBlock(text=MarkdownTextObject(text="*Rollout:* STARTING — taking the lock")),
    ]
    if plan.reason:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"_{esc(plan.reason)}_")]))
    for note in plan.notes:  # rules the change went past, said in the channel
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"⚠️ {esc(note)}"[:3000])]))
    text = f"{esc(title)}{'' if target else ' to ' + esc(plan.service)}: STARTING"
    return Message(text=text, blocks=tuple(blocks))


def refused_after_post(plan: Plan, reason: str, target: str = "") -> Message:
    """The starting message of a deployment refused before any change (the lock was taken
    between the check and the start)."""
    title = f"🚫 {plan.tag} was not deployed{_to(target)}"
    body = f"*Refused before any change:* {esc(reason)}"
    blocks: tuple[Block, ...] = (
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(text=MarkdownTextObject(text=body[:3000])),
    )
    return Message(text=f"{esc(title)}: {esc(reason)}", blocks=blocks)


def progress(
    record: DeploymentRecord,
    snap: Snapshot | None,
    commands: CommandNames = DEFAULT_COMMANDS,
    change: ChangeSummary | None = None,
    console_url: str = "",
    *,
    target: str = "",
    promote_to: Sequence[str] = (),
    later: DeploymentRecord | None = None,
    rollback_applies: bool = True,
    region: str = "",
    went_off: Mapping[str, datetime] | None = None,
    bake_seen: datetime | None = None,
    shift: ShiftView | None = None,
    rules: Target | None = None,
) -> Message:
    """The one live message of a deployment, from start to its final state; ``commands``:
    the slash commands' names it may point to; ``change``: what it changes (shown, and
    reversed in the Rollback button's dialog); ``console_url``: the service's deployments in
    the ECS console, linked when it goes wrong; ``target``: its target's name when several
    are configured; ``promote_to``: the targets that take its image once it completed (a
    Promote button each); ``later``: a later deployment of the target started, so Promote
    (of the target's last deployment) no longer applies; ``rollback_applies``: False once a
    later one completed (what runs is no longer this). Buttons that no longer apply go, and a
    line names the later deployment. While ECS deploys, what its service deployment says
    (bot/deploy/verifying.py: verifying and its bake, the stage, the circuit breaker's count);
    ``region``: for the alarms' console links; ``went_off``: when each alarm that failed it
    went to ALARM, as the alarm said; ``bake_seen``: when this message first saw the bake.
    ``shift``: how ECS shifts its traffic (a blue/green, canary or linear deployment) and a
    pause awaiting a decision, with its Continue and Roll back buttons (who may press them:
    ``rules``, the target's), in place of Stop."""
    outcome = snap.outcome if snap else None
    what = _change_of(record.kind, record.tag, target)
    if outcome == Outcome.COMPLETED:
        title = f"✅ {DONE.get(record.kind, 'Deployed')} {record.tag}{_where(record.kind, target)}"
    elif outcome in (Outcome.FAILED, Outcome.ROLLED_BACK):
        title = f"❌ {what} failed"
    elif outcome == Outcome.ABORTED:
        title = f"🛑 {what} aborted"
    elif outcome == Outcome.REPLACED:
        title = f"⏭️ {what} replaced"
    elif outcome == Outcome.NOT_STARTED:
        title = f"🚫 {record.tag} was not deployed{_to(target)}"
    elif outcome == Outcome.STILL_ROLLING_OUT:
        title = f"⏳ {record.tag} is still rolling out{_on(target)}"
    elif outcome == Outcome.UNKNOWN:
        title = f"❓ Lost sight of the rollout of {record.tag}{_on(target)}"
    else:
        title = (
            f"🚀 {VERBS.get(record.kind, 'Deploying')} {record.tag}{_where(record.kind, target)}"
        )
    running, desired, pending = (snap.running, snap.desired, snap.pending) if snap else (0, 0, 0)
    sd = snap.service_deployment if snap else None
    ecs = (
        progress_lines(sd, snap.at, region, seen_since=bake_seen, went_off=went_off)
        if snap is not None and outcome is None
        else []
    )
    state = (snap.rollout_state if snap else "") or "STARTING"
    state_reason = snap.rollout_reason if snap else ""
    whose = ""
    if outcome == Outcome.ABORTED:
        # Its final counts and state are those of the deployment that put the previous task
        # definition back: say whose they are, never "Rollout: COMPLETED" over an abort.
        state, state_reason = "ABORTED", ""
        whose = f" `{esc(record.previous_tag or revision_of(record.previous_task_definition))}`"
    fields = [
        MarkdownTextObject(text=f"*Service*\n{esc(record.service)}"),
        MarkdownTextObject(
            text=f"*By*\n{who(record)} ({esc(record.source)})"
            + (f"\nAWS `{esc(record.who_arn)}`" if record.who_arn else "")
        ),
        MarkdownTextObject(text=f"*Tag*\n{_tag_text(record.tag, record.digest, record.commit)}"),
        MarkdownTextObject(
            text=f"*Revision*\n{esc(revision_of(record.task_definition))} (was "
            f"{_tag_text(record.previous_tag, record.previous_digest, record.previous_commit)})"
        ),
    ]
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(fields=fields),
    ]
    if section := change_section(change):
        blocks.append(section)
    blocks += [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"`{progress_bar(running, desired)}` *{running}/{desired}* running{whose}"
                f"{f', {pending} pending' if pending else ''}"
                f"{f', {snap.failed} failed' if snap and snap.failed else ''}"
                f"\n*Rollout:* {esc(state)}"
                + (f" — {esc(state_reason)}" if state_reason else "")
                + "".join(f"\n{esc(line)}" for line in ecs)
            )
        ),
    ]
    paused = False
    if shift is not None and rules is not None:
        ended_badly = outcome in (Outcome.ROLLED_BACK, Outcome.FAILED)
        blocks += shift_blocks(
            shift, record, rules, final=outcome is not None, rolled_back=ended_badly
        )
        paused = outcome is None and shift.pause is not None
    if snap and outcome is not None:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=_outcome_text(record, snap, commands, target, region, went_off)
                )
            )
        )
        if outcome != Outcome.COMPLETED and (where := where_to_look(snap, console_url)):
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=where)]))
    if snap and snap.note:
        note = f"⚠️ {esc(snap.note)}"[:3000]
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=note)]))
    elapsed = _duration(snap.elapsed) if snap else "0 s"
    guarded = []
    if record.approved_by:
        guarded.append("✅ approved by " + ", ".join(mention(a) for a in record.approved_by))
    if record.break_glass:
        guarded.append(f"🚨 --break-glass: {esc(record.break_glass)}")
    guarded += [f"⚠️ {esc(b)}" for b in record.bypassed]
    if guarded:
        text = "\n".join(guarded)[:3000]
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=text)]))
    if record.reason:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"_{esc(record.reason)}_")]))
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"{esc(record.kind)} `{esc(record.id)}` · "
                    f"ECS `{esc(record.ecs_deployment_id or '?')}` "
                    f"· {'took' if outcome else 'elapsed'} {elapsed}"
                )
            ]
        )
    )
    buttons: list[ButtonElement] = []
    gone = [
        name
        for name, goes in (
            ("Promote", later is not None and bool(promote_to) and bool(target)),
            ("Rollback", not rollback_applies and offers_rollback(record, snap)),
        )
        if goes
    ]
    if later is not None and gone:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"⤵️ Since then: {esc(later.kind)} `{esc(later.id)}` of "
                        f"`{esc(later.tag)}` by {who(later)}; this one's {' and '.join(gone)} "
                        f"no longer appl{'ies' if len(gone) == 1 else 'y'}."
                    )
                ]
            )
        )
    if later is not None:
        pass
    elif snap is not None and snap.outcome == Outcome.COMPLETED and record.digest:
        buttons += [promote_button(record, target, to) for to in promote_to if target]
    if not rollback_applies:
        pass
    elif offers_rollback(record, snap):
        buttons.append(rollback_button(record, change, target))
    elif offers_stop(record, snap) and not paused:  # paused: its Roll back is the way back
        buttons.append(stop_button(record, target))
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    # The fallback text is mrkdwn too (and what notifications show): escaped like the rest.
    text = f"{esc(title)} to {esc(record.service)}: {running}/{desired} running, {esc(state)}"
    if snap and outcome is not None:
        said = _outcome_text(record, snap, commands, target, region, went_off)
        text = f"{esc(title)}: {said}"
    return Message(text=text, blocks=tuple(blocks))


def _outcome_text(
    record: DeploymentRecord,
    snap: Snapshot,
    commands: CommandNames,
    target: str = "",
    region: str = "",
    went_off: Mapping[str, datetime] | None = None,
) -> str:
    status = f"{commands.status} {esc(target)}".strip()  # the target's, when several
    took = _duration(snap.elapsed)
    why = esc(snap.outcome_reason.rstrip("."))
    tag = esc(record.tag)
    if snap.outcome == Outcome.COMPLETED:
        return f"*Completed in {took}.* `{tag}` runs on {snap.running}/{snap.desired} tasks."
    fired = fired_alarms(snap.service_deployment or {}, region, went_off)
    if fired and snap.outcome in (Outcome.ROLLED_BACK, Outcome.FAILED):
        # ECS failed it for its alarms (#26): which, since when, and where to see them.
        alarms = "; ".join(
            f"{esc(f.text())} ({link(f.url, 'the alarm in the console')})" for f in fired
        )
        if snap.outcome == Outcome.FAILED:  # alarms' rollback off: ECS stopped it
            return f"*Failed after {took}: stopped:* {alarms}."
        back = esc(snap.rollback_tag or revision_of(snap.rollback_task_definition))
        by = f" (deployment `{esc(snap.rollback_deployment)}`)" if snap.rollback_deployment else ""
        return (
            f"*Failed after {took}: rolled back:* {alarms}.\nECS rolled the service back to "
            f"`{back}`{by}; `{tag}` is *not* running."
        )
    if snap.outcome == Outcome.ROLLED_BACK:
        back = esc(snap.rollback_tag or revision_of(snap.rollback_task_definition))
        return (
            f"*Failed after {took}:* {why}.\nECS's circuit breaker rolled the service back "
            f"to `{back}` (deployment `{esc(snap.rollback_deployment)}`); "
            f"`{tag}` is *not* running."
        )
    if snap.outcome == Outcome.FAILED:
        return f"*Failed after {took}:* {why}."
    if snap.outcome == Outcome.ABORTED:
        return f"*Aborted after {took}:* {why}; `{tag}` is *not* running."
    if snap.outcome == Outcome.REPLACED:
        return f"*Replaced after {took}:* {why.removeprefix('replaced ')}."
    if snap.outcome == Outcome.NOT_STARTED:
        return f"*Nothing changed:* {why}."
    if snap.outcome == Outcome.UNKNOWN:
        lost = esc(snap.outcome_reason.rstrip(".").removeprefix("lost sight of the rollout: "))
        return (
            f"*Lost sight of the rollout after {took}:* {lost}. ECS may still be rolling out; "
            f"`{status}` shows how it goes, and this message shows the outcome once "
            "AWS answers again."
        )
    return (
        f"*Still rolling out after {took}* ({snap.running}/{snap.desired} running). "
        f"ECS carries on, and it keeps the lock until ECS ends it; `{status}` shows how it "
        "goes, and this message shows the outcome once ECS is done."
    )


def where_to_look(snap: Snapshot, console_url: str = "") -> str:
    """``Where to look: the stopped task's logs · the deployments in the ECS console``."""
    places = []
    if snap.log_url:
        places.append(link(snap.log_url, "the last stopped task's logs"))
    if console_url:
        places.append(link(console_url, "the service's deployments in the ECS console"))
    return f"*Where to look:* {' · '.join(places)}" if places else ""


def thread_reply(snap: Snapshot) -> str | None:
    """New ECS events and stopped tasks' reasons (with links to their logs and task pages),
    one reply for one snapshot."""
    lines = [f"• {esc(e.message)}" for e in snap.new_events]
    for t in snap.stopped_tasks:
        places = [
            link(url, name) for url, name in ((t.log_url, "logs"), (t.task_url, "task")) if url
        ]
        lines.append(f"• ⚠️ {esc(t.describe())}" + (f" ({', '.join(places)})" if places else ""))
    return "\n".join(lines) if lines else None


def refusal(message: str) -> Message:
    """An ephemeral refusal. ``message`` is mrkdwn as it stands (the rules link channels with
    ``<#C…>``): text from the engine or from people goes through ``mrkdwn.escape`` first."""
    return Message(text=message, blocks=(SectionBlock(text=MarkdownTextObject(text=message)),))


def history_lines(records: Sequence[DeploymentRecord]) -> list[str]:
    out = []
    for r in records:
        took = f", {_duration(r.duration)}" if r.duration is not None else ""
        outcome = esc(r.outcome_text)
        # ECS's own word beside deploybot's (#26): its service deployment's status.
        ecs = f" (ECS: `{esc(r.ecs_status)}`)" if r.ecs_status else ""
        out.append(
            f"• <!date^{int(r.started_at.timestamp())}^{{date_short_pretty}} {{time}}|"
            f"{r.started_at:%Y-%m-%d %H:%M} UTC> {_tag_text(r.tag, r.digest, r.commit)} "
            f"{esc(r.kind)} "
            f"by {who(r)}: *{outcome}*{ecs}{took}"
            + (
                f", approved by {', '.join(mention(a) for a in r.approved_by)}"
                if r.approved_by
                else ""
            )
            + (" 🚨 break-glass" if r.break_glass else "")
            # Who pressed Continue or Roll back at ECS's pauses (#27), and when.
            + "".join(f"; ⏸️ {esc(d)}" for d in r.decisions)
        )
    return out


def status(st: Status, target: str = "") -> Message:
    rollout = (
        f"{esc(st.rollout.rollout_state or 'IN_PROGRESS')} "
        f"{st.rollout.running}/{st.rollout.desired} (`{esc(st.rollout.id)}`)"
        if st.rollout
        else "none in progress"
    )
    lock = esc(st.lock.describe()) if st.lock else "free"  # the holder's name as typed
    by = st.deployed_by
    put_there = "\nput there outside deploybot"
    if by is not None:
        put_there = f"\nby {who(by)}, {esc(by.kind)} `{esc(by.id)}`"
    digest = f"{esc(st.short_digest)}, " if st.digest else ""
    if commit := commit_text(st.commit):
        digest = f"{esc(commit)}, {digest}"
    # During a rollout the service's task definition is the release it goes to, while the
    # old one may still run every task: never "Running v4.6.0 … 3/3 running" then.
    going = "rolling out " if st.mixed else ""
    tasks = f"`{progress_bar(st.running, st.desired)}` {st.tasks_text()}"
    if st.mixed:
        tasks = "\n".join(
            f"`{progress_bar(t.running, t.desired)}` {esc(t.describe())}" for t in st.tasks
        )
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=f"{target or st.service}: {going}{st.tag}"[:150])),
        SectionBlock(
            fields=[
                MarkdownTextObject(
                    text=f"*{'Rolling out' if st.mixed else 'Running'}*\n`{esc(st.tag)}` "
                    f"({digest}{esc(st.revision)}){put_there}"
                ),
                MarkdownTextObject(text=f"*Tasks*\n{tasks}"[:2000]),
                MarkdownTextObject(text=f"*Rollout*\n{rollout}"),
                MarkdownTextObject(text=f"*Lock*\n{lock}"),
            ]
        ),
    ]
    if st.freeze is not None:
        f = st.freeze
        froze = mention(f.by) if f.via == "slack" else esc(f.by)
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"🧊 *Frozen* by {froze} since <!date^{int(f.since.timestamp())}^"
                    f"{{date_short_pretty}} {{time}}|{f.since:%Y-%m-%d %H:%M} UTC>: "
                    f"{esc(f.reason)}"[:3000]
                )
            )
        )
    if st.queue:
        lines = [
            f"{place}. {esc(q.kind)} `{esc(q.tag)}` by {mention(q.requester.who)}"
            if q.kind
            else f"{place}. {mention(q.requester.who)} waits to be told"
            for place, q in enumerate(st.queue, 1)
        ]
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=("*Queue*\n" + "\n".join(lines))[:3000]))
        )
    if st.recent:
        blocks += [
            DividerBlock(),
            SectionBlock(
                text=MarkdownTextObject(
                    text="*Last deployments*\n" + "\n".join(history_lines(st.recent))
                )
            ),
        ]
    text = (
        f"{esc(st.service)} {'is rolling out' if st.mixed else 'runs'} {esc(st.tag)}: "
        f"{esc(st.tasks_text())}; rollout {rollout}"
    )
    return Message(text=text, blocks=tuple(blocks))


def history(records: Sequence[DeploymentRecord], target: str = "") -> Message:
    if not records:
        return refusal(f"No deployments{_to(target)} yet.")
    title = f"*Deployment history of {esc(target)}*" if target else "*Deployment history*"
    body = title + "\n" + "\n".join(history_lines(records))
    return Message(text=body, blocks=(SectionBlock(text=MarkdownTextObject(text=body[:3000])),))


def status_all(rows: Sequence[TargetStatus], commands: CommandNames = DEFAULT_COMMANDS) -> Message:
    """Every target in one message: tag, short digest, tasks, rollout, lock."""
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="Targets"))]
    lines = []
    for row in rows:
        t = row.target
        name = f"*{esc(t.name)}*" + (f" _(after {esc(t.after)})_" if t.after else "")
        st = row.status
        if st is None:
            line = f"{name}: not read: {esc(row.error)}"
        else:
            digest = f" ({esc(st.short_digest)})" if st.digest else ""
            rollout = (
                f"{esc(st.rollout.rollout_state or 'IN_PROGRESS')} "
                f"{st.rollout.running}/{st.rollout.desired}"
                if st.rollout
                else "none"
            )
            lock = esc(st.lock.describe()) if st.lock else "free"
            counts = f"{st.running}/{st.desired} running" + (
                f", {st.pending} pending" if st.pending else ""
            )
            line = (
                f"{name} {'rolling out ' if st.mixed else ''}`{esc(st.tag)}`{digest}\n"
                f"`{progress_bar(st.running, st.desired)}` "
                + (esc(st.tasks_text()) if st.mixed else counts)
                + f" · rollout: {rollout} · lock: {lock}"
                + (f"\n🧊 *frozen*: {esc(st.freeze.reason)}" if st.freeze else "")
                + (f" · {len(st.queue)} queued" if st.queue else "")
            )
        lines.append(line)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=line[:3000])))
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(text=f"`{commands.status} TARGET` shows one target in detail")
            ]
        )
    )
    return Message(text="Targets: " + "; ".join(lines)[:3000], blocks=tuple(blocks[:50]))


def image_commit(image: ImageInfo) -> str:
    """An ECR image's commit, from its sha- tag: ``abc1234`` or ``no sha tag``."""
    sha = next((t for t in image.tags if t.startswith("sha-")), "")
    return sha.removeprefix("sha-")[:7] or "no sha tag"


def choose_target(tag: str, targets: Sequence[Target], service_of: dict[str, str]) -> Message:
    """``/deploy TAG`` where the channel has several targets: one button per target the
    person may deploy to."""
    ask = f"Deploy `{esc(tag)}` to which target?"
    buttons = [deploy_button(tag, service_of.get(t.name, ""), target=t.name) for t in targets[:25]]
    blocks: tuple[Block, ...] = (
        SectionBlock(text=MarkdownTextObject(text=ask)),
        ActionsBlock(block_id="choose_target", elements=buttons),
    )
    return Message(text=ask, blocks=blocks)


@dataclass(frozen=True)
class Allowed:
    """What a person may do, for the help they see: ``change`` (deploy, promote, roll back,
    redeploy, unlock: the deployers), ``guard`` (abort, freeze, unfreeze: deployers and
    approvers). Reading is everyone's."""

    change: bool = True
    guard: bool = True


def usage_lines(commands: CommandNames, several: bool, allowed: Allowed = Allowed()) -> list[str]:
    """Every subcommand ``allowed`` lets a person use, under the configured names; with
    ``several`` targets each names its TARGET, else the target is left out (there is one)."""
    deploy, t = commands.deploy, (" TARGET" if several else "")
    to = " to TARGET" if several else ""
    lines: list[str] = []
    if allowed.change:
        lines += [
            f"`{deploy} TAG{to}` deploys an image (`v4.4.0-ecr-ecs-fargate`, `v4.4.0`, `v4.4`, "
            "`sha-abc1234`)",
            *(
                [f"`{deploy} promote FROM to TO` deploys to TO the image that completed on FROM"]
                if several
                else []
            ),
            f"`{deploy} rollback{t}` goes back to the last good image",
            f"`{commands.redeploy}{t} [reason]` restarts what runs",
        ]
    if allowed.guard:
        lines += [
            f"`{deploy} abort{t}` stops the rollout under way; the previous release goes back",
            f"`{deploy} freeze{t} REASON` refuses deploys until `{deploy} unfreeze{t}`",
        ]
    if allowed.change:
        lines.append(
            f"`{deploy} unlock{t}` breaks a stale deploy lock (once ECS shows nothing rolling out)"
        )
        lines.append(f"`{deploy} reload` reads deploybot.toml again now (it does so every minute)")
    lines.append(f"`{deploy} history{t}` lists recent deployments")
    lines.append(
        f"`{deploy} stats{t} [30d]` shows DORA's four keys and shares their chart in the channel"
    )
    if several:
        lines.append(
            f"`{commands.status}` (or `{deploy} status`) shows every target, "
            f"`{commands.status} TARGET` one"
        )
    else:
        lines.append(f"`{commands.status}` (or `{deploy} status`) shows what runs")
    return lines


def help_message(
    images: Sequence[ImageInfo],
    service: str,
    commands: CommandNames = DEFAULT_COMMANDS,
    changes: Mapping[str, ChangeSummary] | None = None,
    targets: Sequence[Target] = (),
    allowed: Allowed = Allowed(),
) -> Message:
    """/deploy alone: usage (every subcommand ``allowed`` lets the person use), and the
    recent images with a Deploy button each (its dialog says what that deploy changes, from
    ``changes`` by tag); ``targets``: the channel's targets when several are configured
    (named in the usage, a button each)."""
    if targets:
        names = ", ".join(
            f"`{esc(t.name)}`" + (f" (after {esc(t.after)})" if t.after else "") for t in targets
        )
        head = f"*Usage* (targets here: {names})"
    else:
        head = "*Usage*"
    usage = "\n".join([head, *usage_lines(commands, bool(targets), allowed)])
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=usage))]
    if images:
        blocks.append(DividerBlock())
        blocks.append(SectionBlock(text=MarkdownTextObject(text="*Recent images in ECR*")))
        for image in images:
            pushed = f" · pushed {image.pushed_at:%Y-%m-%d %H:%M} UTC" if image.pushed_at else ""
            tag = image.tags[0]
            change = (changes or {}).get(tag)
            moving = f" · {esc(change.direction.text)}" if change else ""
            line = f"`{esc(tag)}` ({esc(image_commit(image))}){pushed}{moving}"
            direct = [t for t in targets if t.after is None]
            if len(targets) > 1 and direct:
                # A section takes one accessory: the buttons go in a row of their own.
                blocks.append(SectionBlock(text=MarkdownTextObject(text=line)))
                # Each button's dialog names its own service; ``changes`` were read from
                # ``service`` (the channel's first target), so only its button says them.
                own = {t.name: f"{t.cluster}/{t.service}" for t in direct}
                blocks.append(
                    ActionsBlock(
                        elements=[
                            deploy_button(
                                tag,
                                own[t.name],
                                change if own[t.name] == service else None,
                                target=t.name,
                            )
                            for t in direct
                        ]
                    )
                )
                continue
            blocks.append(
                SectionBlock(
                    text=MarkdownTextObject(text=line),
                    accessory=deploy_button(tag, service, change),
                )
            )
    else:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="_No release images in ECR._")))
    return Message(text=usage, blocks=tuple(blocks))


@dataclass(frozen=True)
class NoticeTarget:
    """One target of CI's notice, with what deploying the image there would change: its own
    service, what it runs now, its commits. ``name`` empty: the only target (a plain
    "Deploy" button). ``change`` None: what runs there could not be read (said by the
    process that posts the notice)."""

    name: str
    service: str  # cluster/service
    change: ChangeSummary | None = None
    # The target deploys the image on its own (``auto_deploy``): no button, a line saying so.
    auto: bool = False


def _notice_change(offer: NoticeTarget, several: bool) -> SectionBlock | None:
    """What deploying the image to ``offer``'s target changes; with several targets each
    says its own, under its name (a target that runs the image already says so)."""
    change = offer.change
    if not several:
        return change_section(change)
    if change is None:
        return None
    if change.direction.kind == "same":
        text = f"*{esc(offer.name)}* runs this image already."
    else:
        text = f"*To {esc(offer.name)}:* {render_mrkdwn(change)}"
    return SectionBlock(text=MarkdownTextObject(text=_clip(text, SECTION_TEXT_LIMIT)))


def image_pushed(
    tag: str,
    sha: str | None,
    run_url: str | None,
    offers: Sequence[NoticeTarget],
    frozen: Mapping[str, str] | None = None,
    commands: CommandNames = DEFAULT_COMMANDS,
) -> Message:
    """CI's notice. ``offers``: the targets it offers the image to, each with its own
    service and change: with several configured, the ones that take an image directly (a
    "Deploy to …" button each, its confirm dialog and its part of the body computed for
    that target); targets with ``after`` get theirs on the source target's final message
    instead. ``frozen``: the targets of its buttons that were frozen when it was posted,
    each with its freeze in words (rules.describe_freeze); their buttons stay (a freeze is
    lifted long before a notice is forgotten) and say they are refused meanwhile."""
    offers = list(offers[:25])
    several = any(o.name for o in offers)
    # Tag, sha and URL come from CI's command line: text, and a link only if it is a URL.
    details = [f"*Tag*\n`{esc(tag)}`"]
    known = next((o.change.target for o in offers if o.change and o.change.target), None)
    if sha:
        details.append(f"*Commit*\n`{esc(sha[:12])}`")
    elif known is not None:
        details.append(f"*Commit*\n{esc(known.commit)}")
    if run_url:
        details.append(f"*CI run*\n{link(run_url, 'open the run')}")
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"📦 A new image is in ECR: *{esc(tag)}*")),
        SectionBlock(fields=[MarkdownTextObject(text=d) for d in details]),
    ]
    frozen = frozen or {}
    for name, words in frozen.items():
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"🧊 *Frozen when this was posted:* {words}. Deploy to "
                    f"{esc(name)} is refused until `{commands.deploy} unfreeze {esc(name)}`."
                )
            )
        )
    for offer in offers:
        if section := _notice_change(offer, several):
            blocks.append(section)
    auto = [o for o in offers if o.auto]
    if auto:
        names = ", ".join(esc(o.name) for o in auto if o.name)
        where = f"{names} deploys" if names else "Deploying"
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"🚀 {where} this image on push (auto_deploy), through its rules; "
                        "deploybot says so here, or why not in this thread."
                    )
                ]
            )
        )
    buttons = [deploy_button(tag, o.service, o.change, target=o.name) for o in offers if not o.auto]
    # A message holds 50 blocks: the buttons' row is always the last.
    blocks = blocks[:49] if buttons else blocks[:50]
    if buttons:
        blocks.append(ActionsBlock(block_id="image_pushed", elements=buttons))
    cold = f" ({', '.join(esc(n) for n in frozen)} frozen)" if frozen else ""
    return Message(text=f"A new image is in ECR: {esc(tag)}{cold}", blocks=tuple(blocks))


# The event type of CI's notice's message metadata (api.slack.com/metadata/using: "you
# determine the unique event_type … as well as the structure of the event_payload"); the
# manifest subscribes to it (metadata_subscriptions), and bot/slack/auto.py listens.
NOTICE_EVENT = "deploybot_image_pushed"


def notice_metadata(tag: str, sha: str | None, run_url: str | None) -> dict[str, Any]:
    """chat.postMessage's ``metadata`` for CI's notice: ``{"event_type", "event_payload"}``."""
    payload = {
        "tag": tag,
        **({"sha": sha} if sha else {}),
        **({"run_url": run_url} if run_url else {}),
    }
    return {"event_type": NOTICE_EVENT, "event_payload": payload}


def image_claimed(
    tag: str, user: str, original: dict[str, Any], action_id: str = "", target: str = ""
) -> list[dict[str, Any]]:
    """The CI notice once someone clicked Deploy: same content, the clicked button replaced
    by a note (``action_id``: that button; the others stay). Without: every button."""
    note = ContextBlock(
        elements=[
            MarkdownTextObject(
                text=f"🚀 {mention(user)} is deploying `{esc(tag)}`{esc(_to(target))} "
                "(from this notice)."
            )
        ]
    )
    return _claimed(original, action_id, note)


def _claimed(original: dict[str, Any], action_id: str, note: ContextBlock) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for block in original.get("blocks", []):
        if block.get("type") != "actions":
            kept.append(block)
            continue
        rest = [
            e for e in block.get("elements", []) if action_id and e.get("action_id") != action_id
        ]
        if rest:
            kept.append({**block, "elements": rest})
    # Notes of earlier clicks stay above the buttons that are left.
    actions = [b for b in kept if b.get("type") == "actions"]
    others = [b for b in kept if b.get("type") != "actions"]
    return [*others, note.to_dict(), *actions]


def outcome_notice(record: DeploymentRecord, snap: Snapshot, permalink: str | None) -> Message:
    """What the requester hears once their deployment ended: the outcome, and the way to
    the deployment's message in the channel."""
    icon = {Outcome.COMPLETED: "✅", Outcome.NOT_STARTED: "🚫", Outcome.REPLACED: "⏭️"}.get(
        snap.outcome or Outcome.FAILED, "❌"
    )
    label = snap.outcome.label if snap.outcome else "ended"
    took = _duration(snap.elapsed)
    what = f"Your {esc(record.kind)} of `{esc(record.tag)}` to {esc(record.service)}"
    text = f"{icon} {what}: *{esc(label)}* after {took}."
    if snap.outcome not in (Outcome.COMPLETED, None) and snap.outcome_reason:
        text += f" {esc(snap.outcome_reason.rstrip('.'))}."
    if permalink:
        text += f"\n{link(permalink, 'See the deployment in the channel')}"
    plain = f"{icon} {what}: {esc(label)} after {took}."
    return Message(text=plain, blocks=(SectionBlock(text=MarkdownTextObject(text=text)),))
