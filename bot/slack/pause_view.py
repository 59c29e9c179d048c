"""How a deployment's live message shows ECS's traffic shifting and a pause awaiting a decision:
pure Block Kit builders of the engine's ``Shift`` and ``Pause`` (bot/deploy/progressive.py,
bot/deploy/pausing.py). The listeners of the buttons are bot/slack/pausing.py.

While ECS shifts traffic (BLUE_GREEN, CANARY, LINEAR) the message says the stage, the split
and the bake timer ("canary: 10% on v4.4.0, 90% on v4.3.0, baking 4 of 10 min"). When a PAUSE
hook awaits action it says so, when the timeout's action happens, who may press **Continue**
(an approval under the target's rules) and **Roll back** (any deployer), the test listener and
what answered there; both buttons have confirm dialogs. A red check (the old release still
answering, an error) is said in bold with 🔴, and Continue asks again before ECS is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.deploy.pausing import CONTINUE, Pause, Verification
from bot.deploy.progressive import Shift
from bot.deploy.records import DeploymentRecord
from bot.mrkdwn import escape as esc
from bot.mrkdwn import mention
from bot.target import Target

CONTINUE_ACTION = "pause_continue"
ROLLBACK_ACTION = "pause_rollback"
CONTINUE_ANYWAY_ACTION = "pause_continue_anyway"  # the second confirmation over a red check
SEP = "|"
CONFIRM_TEXT_LIMIT = 300  # Block Kit's confirmation dialog text (bot/slack/messages.py)


@dataclass(frozen=True)
class ShiftView:
    """What the live message shows of a deployment's traffic: ECS's reading, when this stage
    or step was first seen, the furthest it got (a rollback says it), and its pause."""

    shift: Shift
    since: datetime | None
    now: datetime
    furthest: Shift | None = None
    pause: Pause | None = None


def button_value(target: str, record: DeploymentRecord, hook_id: str) -> str:
    return SEP.join((target, record.id, hook_id))


def read_value(value: str) -> tuple[str, str, str]:
    """``target|deployment|hook`` (a value of another shape reads as empty parts)."""
    parts = [*value.split(SEP, 2), "", "", ""][:3]
    return parts[0], parts[1], parts[2]


def _when(at: datetime) -> str:
    """Slack's own date formatting (the reader's time zone), the fallback in UTC."""
    return f"<!date^{int(at.timestamp())}^{{time}}|{at:%H:%M} UTC>"


def who_continues(target: Target, requester: str) -> str:
    """Who may press Continue, in the target's words."""
    if target.approvals:
        others = [mention(p) for p in target.approvers if p != requester]
        names = ", ".join(others[:-1]) + (" or " if len(others) > 1 else "") + others[-1]
        return f"{names} (an approval: not the requester)" if others else "no approver"
    return f"anyone who may deploy to {esc(target.name)}"


def check_line(check: Verification, record: DeploymentRecord) -> str:
    """The test listener's answer: green when the deployment's release answered, red (🔴,
    bold) otherwise, saying what is wrong."""
    said = esc(check.describe())
    where = f"`{esc(check.url)}`"
    if check.ok:
        return f"✅ {where} → {said}"
    if check.verdict == "old":
        why = f"the old release `{esc(record.previous_tag)}` still answers"
    elif check.verdict == "other":
        why = f"not `{esc(record.tag)}` answering"
    else:
        why = "no good answer"
    return f"🔴 *{why}*: {where} → {said}"


def shift_line(view: ShiftView, record: DeploymentRecord) -> str:
    """``*Traffic:* canary: 10% on v4.4.0, 90% on v4.3.0, baking 4 of 10 min``."""
    old = record.previous_tag or "the old revision"
    text = view.shift.describe(record.tag, old, view.since, view.now)
    return f"*Traffic:* {esc(text)}"


def shift_blocks(
    view: ShiftView, record: DeploymentRecord, target: Target, *, final: bool
) -> list[Block]:
    """The traffic line while it rolls out; the pause and its buttons while ECS awaits a
    decision; where a rolled back one got to."""
    if final:
        furthest = view.furthest
        if furthest is None or not furthest.shifts_traffic or not furthest.new_percent:
            return []
        text = f"Reached {esc(furthest.reached(record.tag))} before it ended."
        return [ContextBlock(elements=[MarkdownTextObject(text=text)])]
    if not view.shift.shifts_traffic and view.pause is None:
        return []
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=shift_line(view, record)))]
    if view.pause is not None:
        blocks += pause_blocks(view.pause, target)
    return blocks


def pause_blocks(pause: Pause, target: Target) -> list[Block]:
    record, hook = pause.record, pause.hook
    lines = [f"⏸️ *Paused at {esc(hook.stage or pause.shift.stage)}*, waiting for a decision."]
    if hook.expires_at is not None:
        at = _when(hook.expires_at)
        lines.append(f"ECS {hook.timeout_words} by itself at {at} unless someone decides.")
    lines.append(
        f"*Continue:* {who_continues(target, record.who)}. *Roll back:* anyone who may deploy "
        f"to {esc(target.name)}."
    )
    if pause.test_url:
        lines.append(f"Test listener: `{esc(pause.test_url)}`")
    elif pause.test_url_note:
        lines.append(f"_Test listener not known: {esc(pause.test_url_note)}_")
    if pause.verification is not None:
        lines.append(check_line(pause.verification, record))
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text="\n".join(lines)[:3000]))]
    if pause.decided is not None:
        mark = "▶️" if pause.decided.action == CONTINUE else "↩️"
        text = f"{mark} {esc(pause.decided.describe())}: ECS was asked."
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=text)]))
        return blocks
    value = button_value(target.name, record, hook.hook_id)
    blocks.append(
        ActionsBlock(elements=[continue_button(pause, value), rollback_button(pause, value)])
    )
    return blocks


def continue_button(pause: Pause, value: str, *, anyway: bool = False) -> ButtonElement:
    record = pause.record
    red = pause.verification is not None and not pause.verification.ok
    text = (
        f"Continue {record.tag}? ECS moves on from {pause.hook.stage or 'the pause'} and shifts "
        "the rest of the traffic."
    )
    if red and pause.verification is not None:
        text = f"The test listener's check is red ({pause.verification.describe()}). " + text
    return ButtonElement(
        text=PlainTextObject(text="Continue anyway" if anyway else "Continue"),
        action_id=CONTINUE_ANYWAY_ACTION if anyway else CONTINUE_ACTION,
        value=value,
        style="danger" if anyway else "primary",
        confirm=ConfirmObject(
            title="Continue anyway?" if anyway else "Continue the deployment?",
            text=PlainTextObject(text=text[:CONFIRM_TEXT_LIMIT], emoji=False),
            confirm="Continue",
            deny="Cancel",
        ),
    )


def rollback_button(pause: Pause, value: str) -> ButtonElement:
    record = pause.record
    back = record.previous_tag or "the previous revision"
    text = f"Roll {record.tag} back? ECS restores {back} and ends this deployment rolled back."
    return ButtonElement(
        text=PlainTextObject(text="Roll back"),
        action_id=ROLLBACK_ACTION,
        value=value,
        style="danger",
        confirm=ConfirmObject(
            title="Roll back?",
            text=PlainTextObject(text=text[:CONFIRM_TEXT_LIMIT], emoji=False),
            confirm="Roll back",
            deny="Cancel",
        ),
    )


def paused_notice(pause: Pause, target: Target, permalink: str | None) -> str:
    """The requester's DM: their deployment waits for a decision, until when, and where."""
    record, hook = pause.record, pause.hook
    where = f" <{permalink}|Its message>" if permalink else " Its message in the channel"
    until = f" ECS {hook.timeout_words} at {_when(hook.expires_at)}." if hook.expires_at else ""
    check = ""
    if pause.verification is not None:
        check = "\n" + check_line(pause.verification, record)
    return (
        f"⏸️ Your deployment of `{esc(record.tag)}` to {esc(target.name)} is paused at "
        f"{esc(hook.stage or pause.shift.stage)}, waiting for a decision.{until}{where} has "
        f"Continue (for {who_continues(target, record.who)}) and Roll back.{check}"
    )
