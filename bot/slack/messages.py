"""Block Kit builders: pure functions of engine data, made with slack_sdk's block models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

from bot.deploy.changes import ChangeSummary, commit_text, render_confirm, render_mrkdwn, reverse
from bot.deploy.engine import ImageInfo, Plan, Status
from bot.deploy.ledger import DeploymentRecord, short_digest
from bot.deploy.rollout import Outcome, Snapshot, revision_of
from bot.mrkdwn import escape as esc
from bot.mrkdwn import is_user_id, link, mention
from bot.slack.names import DEFAULT_COMMANDS, CommandNames

DEPLOY_ACTION = "deploy_tag"
ROLLBACK_ACTION = "rollback"
# A confirm dialog's text: "Maximum length for the text in this field is 300 characters"
# (Block Kit, "Confirmation dialog object", docs.slack.dev/reference/block-kit/
# composition-objects/confirmation-dialog-object; the same limit in slack-messaging's and
# slack-blocks' validators). Its title: 100; its buttons: 30.
CONFIRM_TEXT_LIMIT = 300
SECTION_TEXT_LIMIT = 3000  # a section block's text


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


def deploy_confirm(tag: str, service: str, change: ChangeSummary | None = None) -> ConfirmObject:
    """Deploy's confirm dialog: what and where, and with ``change`` what it changes (plain
    text: people's commit titles are shown as typed, and it fits CONFIRM_TEXT_LIMIT)."""
    # The dialog has 300 characters: a service named like its cluster is named once. The tag
    # stays whole (the summary's headline shortens it to its version).
    cluster, _, name = service.partition("/")
    where = name if name == cluster else service
    intro = f"Deploy {tag} to {where}?"
    return ConfirmObject(
        title="Deploy?",
        text=PlainTextObject(
            text=render_confirm(change, intro, CONFIRM_TEXT_LIMIT),
            emoji=False,
        ),
        confirm="Deploy",
        deny="Cancel",
    )


def deploy_button(tag: str, service: str, change: ChangeSummary | None = None) -> ButtonElement:
    return ButtonElement(
        text=PlainTextObject(text="Deploy"),
        action_id=DEPLOY_ACTION,
        value=tag,
        style="primary",
        confirm=deploy_confirm(tag, service, change),
    )


def rollback_button(record: DeploymentRecord, change: ChangeSummary | None = None) -> ButtonElement:
    """Rollback of this one deployment: back to the image that ran before it, by digest.
    ``change``: the deployment's own summary; the dialog shows it reversed."""
    intro = (
        f"Back to {record.previous_tag}, the image that ran before this deployment? Refused "
        "if this deployment no longer runs."
    )
    summary = reverse(change) if change is not None else None
    return ButtonElement(
        text=PlainTextObject(text="Rollback"),
        action_id=ROLLBACK_ACTION,
        value=record.id,
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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def starting(plan: Plan) -> Message:
    """A deployment's message before anything is written to AWS (the lock is not taken yet)."""
    verb = {"deploy": "Deploying", "redeploy": "Redeploying", "rollback": "Rolling back to"}
    title = f"🚀 {verb.get(plan.kind, 'Deploying')} {plan.tag}"
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
    blocks += [
        SectionBlock(text=MarkdownTextObject(text="*Rollout:* STARTING — taking the lock")),
    ]
    if plan.reason:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"_{esc(plan.reason)}_")]))
    return Message(text=f"{esc(title)} to {esc(plan.service)}: STARTING", blocks=tuple(blocks))


def refused_after_post(plan: Plan, reason: str) -> Message:
    """The starting message of a deployment refused before any change (the lock was taken
    between the check and the start)."""
    title = f"🚫 {plan.tag} was not deployed"
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
) -> Message:
    """The one live message of a deployment, from start to its final state; ``commands``:
    the slash commands' names it may point to; ``change``: what it changes (shown, and
    reversed in the Rollback button's dialog); ``console_url``: the service's deployments in
    the ECS console, linked when it goes wrong."""
    verb = {"deploy": "Deploying", "redeploy": "Redeploying", "rollback": "Rolling back to"}
    outcome = snap.outcome if snap else None
    if outcome == Outcome.COMPLETED:
        title = f"✅ Deployed {record.tag}"
    elif outcome in (Outcome.FAILED, Outcome.ROLLED_BACK):
        title = f"❌ Deployment of {record.tag} failed"
    elif outcome == Outcome.NOT_STARTED:
        title = f"🚫 {record.tag} was not deployed"
    elif outcome == Outcome.STILL_ROLLING_OUT:
        title = f"⏳ {record.tag} is still rolling out"
    elif outcome == Outcome.UNKNOWN:
        title = f"❓ Lost sight of the rollout of {record.tag}"
    else:
        title = f"🚀 {verb.get(record.kind, 'Deploying')} {record.tag}"
    running, desired, pending = (snap.running, snap.desired, snap.pending) if snap else (0, 0, 0)
    state = (snap.rollout_state if snap else "") or "STARTING"
    fields = [
        MarkdownTextObject(text=f"*Service*\n{esc(record.service)}"),
        MarkdownTextObject(text=f"*By*\n{who(record)} ({esc(record.source)})"),
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
                text=f"`{progress_bar(running, desired)}` *{running}/{desired}* running"
                f"{f', {pending} pending' if pending else ''}"
                f"{f', {snap.failed} failed' if snap and snap.failed else ''}"
                f"\n*Rollout:* {esc(state)}"
                + (f" — {esc(snap.rollout_reason)}" if snap and snap.rollout_reason else "")
            )
        ),
    ]
    if snap and outcome is not None:
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=_outcome_text(record, snap, commands)))
        )
        if outcome != Outcome.COMPLETED and (where := where_to_look(snap, console_url)):
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=where)]))
    if snap and snap.note:
        note = f"⚠️ {esc(snap.note)}"[:3000]
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=note)]))
    elapsed = _duration(snap.elapsed) if snap else "0 s"
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
    if offers_rollback(record, snap):
        blocks.append(ActionsBlock(elements=[rollback_button(record, change)]))
    # The fallback text is mrkdwn too (and what notifications show): escaped like the rest.
    text = f"{esc(title)} to {esc(record.service)}: {running}/{desired} running, {esc(state)}"
    if snap and outcome is not None:
        text = f"{esc(title)}: {_outcome_text(record, snap, commands)}"
    return Message(text=text, blocks=tuple(blocks))


def _outcome_text(record: DeploymentRecord, snap: Snapshot, commands: CommandNames) -> str:
    took = _duration(snap.elapsed)
    why = esc(snap.outcome_reason.rstrip("."))
    tag = esc(record.tag)
    if snap.outcome == Outcome.COMPLETED:
        return f"*Completed in {took}.* `{tag}` runs on {snap.running}/{snap.desired} tasks."
    if snap.outcome == Outcome.ROLLED_BACK:
        back = esc(snap.rollback_tag or revision_of(snap.rollback_task_definition))
        return (
            f"*Failed after {took}:* {why}.\nECS's circuit breaker rolled the service back "
            f"to `{back}` (deployment `{esc(snap.rollback_deployment)}`); "
            f"`{tag}` is *not* running."
        )
    if snap.outcome == Outcome.FAILED:
        return f"*Failed after {took}:* {why}."
    if snap.outcome == Outcome.NOT_STARTED:
        return f"*Nothing changed:* {why}."
    if snap.outcome == Outcome.UNKNOWN:
        lost = esc(snap.outcome_reason.rstrip(".").removeprefix("lost sight of the rollout: "))
        return (
            f"*Lost sight of the rollout after {took}:* {lost}. ECS may still be rolling out; "
            f"`{commands.status}` shows how it goes, and this message shows the outcome once "
            "AWS answers again."
        )
    return (
        f"*Still rolling out after {took}* ({snap.running}/{snap.desired} running). "
        f"ECS carries on and the lock is released; `{commands.status}` shows how it goes, "
        "and this message shows the outcome once ECS is done."
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
    """An ephemeral refusal. ``message`` is mrkdwn as it stands (access.py links channels with
    ``<#C…>``): text from the engine or from people goes through ``mrkdwn.escape`` first."""
    return Message(text=message, blocks=(SectionBlock(text=MarkdownTextObject(text=message)),))


def history_lines(records: Sequence[DeploymentRecord]) -> list[str]:
    out = []
    for r in records:
        took = f", {_duration(r.duration)}" if r.duration is not None else ""
        outcome = r.outcome.label if r.outcome else "in progress"
        out.append(
            f"• <!date^{int(r.started_at.timestamp())}^{{date_short_pretty}} {{time}}|"
            f"{r.started_at:%Y-%m-%d %H:%M} UTC> {_tag_text(r.tag, r.digest, r.commit)} "
            f"{esc(r.kind)} "
            f"by {who(r)}: *{outcome}*{took}"
        )
    return out


def status(st: Status) -> Message:
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
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=f"{st.service}: {st.tag}"[:150])),
        SectionBlock(
            fields=[
                MarkdownTextObject(
                    text=f"*Running*\n`{esc(st.tag)}` ({digest}{esc(st.revision)}){put_there}"
                ),
                MarkdownTextObject(
                    text=f"*Tasks*\n`{progress_bar(st.running, st.desired)}` "
                    f"{st.running}/{st.desired} running, {st.pending} pending"
                ),
                MarkdownTextObject(text=f"*Rollout*\n{rollout}"),
                MarkdownTextObject(text=f"*Lock*\n{lock}"),
            ]
        ),
    ]
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
        f"{esc(st.service)} runs {esc(st.tag)}: {st.running}/{st.desired} running; "
        f"rollout {rollout}"
    )
    return Message(text=text, blocks=tuple(blocks))


def history(records: Sequence[DeploymentRecord]) -> Message:
    if not records:
        return refusal("No deployments yet.")
    body = "*Deployment history*\n" + "\n".join(history_lines(records))
    return Message(text=body, blocks=(SectionBlock(text=MarkdownTextObject(text=body[:3000])),))


def image_commit(image: ImageInfo) -> str:
    """An ECR image's commit, from its sha- tag: ``abc1234`` or ``no sha tag``."""
    sha = next((t for t in image.tags if t.startswith("sha-")), "")
    return sha.removeprefix("sha-")[:7] or "no sha tag"


def help_message(
    images: Sequence[ImageInfo],
    service: str,
    commands: CommandNames = DEFAULT_COMMANDS,
    changes: Mapping[str, ChangeSummary] | None = None,
) -> Message:
    """/deploy alone: usage, and the recent images with a Deploy button each (its dialog
    says what that deploy changes, from ``changes`` by tag)."""
    deploy = commands.deploy
    usage = (
        f"*Usage*\n`{deploy} TAG` deploys an image (`v4.4.0-ecr-ecs-fargate`, `v4.4.0`, `v4.4`, "
        f"`sha-abc1234`)\n`{deploy} rollback` goes back to the last good image\n"
        f"`{deploy} history` lists recent deployments\n`{commands.redeploy}` restarts what runs\n"
        f"`{commands.status}` (or `{deploy} status`) shows what runs"
    )
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=usage))]
    if images:
        blocks.append(DividerBlock())
        blocks.append(SectionBlock(text=MarkdownTextObject(text="*Recent images in ECR*")))
        for image in images:
            pushed = f" · pushed {image.pushed_at:%Y-%m-%d %H:%M} UTC" if image.pushed_at else ""
            tag = image.tags[0]
            change = (changes or {}).get(tag)
            moving = f" · {esc(change.direction.text)}" if change else ""
            blocks.append(
                SectionBlock(
                    text=MarkdownTextObject(
                        text=f"`{esc(tag)}` ({esc(image_commit(image))}){pushed}{moving}"
                    ),
                    accessory=deploy_button(tag, service, change),
                )
            )
    else:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="_No release images in ECR._")))
    return Message(text=usage, blocks=tuple(blocks))


def image_pushed(
    tag: str,
    sha: str | None,
    run_url: str | None,
    service: str,
    change: ChangeSummary | None = None,
) -> Message:
    """CI's notice; ``change``: what deploying it would change from what runs now."""
    # Tag, sha and URL come from CI's command line: text, and a link only if it is a URL.
    details = [f"*Tag*\n`{esc(tag)}`"]
    if sha:
        details.append(f"*Commit*\n`{esc(sha[:12])}`")
    elif change is not None and change.target is not None:
        details.append(f"*Commit*\n{esc(change.target.commit)}")
    if run_url:
        details.append(f"*CI run*\n{link(run_url, 'open the run')}")
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"📦 A new image is in ECR: *{esc(tag)}*")),
        SectionBlock(fields=[MarkdownTextObject(text=d) for d in details]),
    ]
    if section := change_section(change):
        blocks.append(section)
    blocks.append(
        ActionsBlock(block_id="image_pushed", elements=[deploy_button(tag, service, change)])
    )
    return Message(text=f"A new image is in ECR: {esc(tag)}", blocks=tuple(blocks))


def image_claimed(tag: str, user: str, original: dict[str, Any]) -> list[dict[str, Any]]:
    """The CI notice once someone clicked Deploy: same content, the button replaced."""
    kept = [b for b in original.get("blocks", []) if b.get("type") != "actions"]
    note = ContextBlock(
        elements=[
            MarkdownTextObject(
                text=f"🚀 {mention(user)} is deploying `{esc(tag)}` (from this notice)."
            )
        ]
    )
    return [*kept, note.to_dict()]


def outcome_notice(record: DeploymentRecord, snap: Snapshot, permalink: str | None) -> Message:
    """What the requester hears once their deployment ended: the outcome, and the way to
    the deployment's message in the channel."""
    icon = {Outcome.COMPLETED: "✅", Outcome.NOT_STARTED: "🚫"}.get(
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
