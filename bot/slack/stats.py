"""DORA's four keys in Slack: ``/deploy stats [TARGET] [30d]`` and the weekly digest.

The numbers are Block Kit; the chart (bot/chart.py) is a PNG uploaded with files.uploadV2
(slack_sdk's ``files_upload_v2``: files.getUploadURLExternal, the POST of the bytes to the URL
it gives, files.completeUploadExternal; docs.slack.dev/reference/methods/files.getUploadURLExternal
and …/files.completeUploadExternal), which needs the ``files:write`` scope (both methods'
"Scopes" facts). Shared to a channel (``channel_id``) the file is a message there; "if not
specified the file will be private" (files.completeUploadExternal), and Slack has no ephemeral
files, so the chart goes to the channel the command was typed in, saying who asked.
"""

from __future__ import annotations

import asyncio
import logging

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.deploy.stats import FourKeys
from bot.mrkdwn import escape as esc
from bot.mrkdwn import mention
from bot.slack.messages import Message

log = logging.getLogger("deploybot.slack")

_BANDS = {"elite": "🟢 elite", "high": "🔵 high", "medium": "🟡 medium", "low": "🔴 low"}


def duration(seconds: float | None) -> str:
    """4m, 3h 10m, 2d 5h; "no data" for none."""
    if seconds is None:
        return "no data"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{max(minutes, 0)}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _band(keys: FourKeys, key: str) -> str:
    found = keys.bands.get(key)
    return f" · {_BANDS.get(found, found)}" if found else ""


def window_words(keys: FourKeys) -> str:
    days = round((keys.until - keys.since).total_seconds() / 86400)
    return f"last {days} days ({keys.since:%d %b} to {keys.until:%d %b %Y})"


def numbers(keys: FourKeys, heading: str | None = None) -> Message:
    """The four keys of one target, each with its DORA band and the counts behind it."""
    title = heading or f"Four keys of {keys.target}"
    rate = keys.change_failure_rate
    failure = "no changes" if rate is None else f"{rate:.0%}"
    if rate is not None:
        failure += f" ({keys.failed_changes} of {keys.changes} changes)"
    lead = (
        "no data"
        if keys.lead_time_median_s is None
        else f"median {duration(keys.lead_time_median_s)}, p90 {duration(keys.lead_time_p90_s)}"
    )
    fields = [
        f"*Deployment frequency*\n{keys.frequency_per_week:.1f} a week "
        f"({keys.completed} completed){_band(keys, 'deployment_frequency')}",
        f"*Lead time for changes*\n{lead}{_band(keys, 'lead_time')}\n"
        f"_from {esc(keys.lead_time_source)}_",
        f"*Change failure rate*\n{failure}{_band(keys, 'change_failure_rate')}",
        "*Time to restore*\n"
        + (
            "nothing to restore"
            if keys.time_to_restore_median_s is None
            else f"median {duration(keys.time_to_restore_median_s)}"
        )
        + _band(keys, "time_to_restore"),
    ]
    notes = [f"{keys.deployments} deployments settled, {window_words(keys)}"]
    if keys.rolling_out:
        notes.append(f"{keys.rolling_out} still rolling out, not counted yet")
    notes.append(f"bands: {esc(keys.report)}")
    blocks: tuple[Block, ...] = (
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(fields=[MarkdownTextObject(text=f) for f in fields]),
        ContextBlock(elements=[MarkdownTextObject(text=" · ".join(notes))]),
    )
    text = (
        f"{title}: {keys.frequency_per_week:.1f} deployments a week, lead time {lead}, "
        f"change failure rate {failure}, time to restore "
        f"{duration(keys.time_to_restore_median_s)}"
    )
    return Message(text=text, blocks=blocks)


def alt_text(keys: FourKeys) -> str:
    """What a screen reader says of the chart (files.getUploadURLExternal's ``alt_txt``)."""
    weeks = ", ".join(
        f"week of {w.week_start:%d %b}: {w.completed} completed, {w.failed} failed"
        for w in keys.weeks
    )
    return f"Deployments per week of {keys.target}, {window_words(keys)}. {weeks}"[:1000]


class ChartNotShared(Exception):
    """Slack refused the upload: ``message`` says why, for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_UPLOAD_ERRORS = {
    "missing_scope": "the app lacks the `files:write` scope: reinstall it from "
    "`deploybot manifest`",
    "not_in_channel": "deploybot is not in this channel: `/invite @deploybot`",
    "channel_not_found": "deploybot cannot see this conversation",
    "file_uploads_disabled": "this workspace has disabled file uploads",
    "file_uploads_except_images_disabled": "this workspace has disabled file uploads",
}


async def share_chart(client: AsyncWebClient, channel: str, keys: FourKeys, *, comment: str) -> str:
    """Draw ``keys`` (in a thread: matplotlib is CPU work) and share the PNG to ``channel``
    with ``comment``. The file's id; ChartNotShared when Slack refused."""
    # matplotlib is loaded on the first chart, not at the bot's start (it takes a while).
    from bot import chart

    png = await asyncio.to_thread(chart.png, keys)
    days = round((keys.until - keys.since).total_seconds() / 86400)
    try:
        answer = await client.files_upload_v2(
            channel=channel,
            content=png,
            filename=f"deploybot-{keys.target}-{keys.until:%Y-%m-%d}-{days}d.png",
            title=f"Deployments per week of {keys.target}, {window_words(keys)}",
            alt_txt=alt_text(keys),
            initial_comment=comment,
        )
    except SlackApiError as exc:
        error = str(exc.response.get("error", ""))
        log.warning("chart of %s not shared to %s: %s", keys.target, channel, error)
        raise ChartNotShared(_UPLOAD_ERRORS.get(error, f"Slack answered `{esc(error)}`")) from None
    except SlackRequestError as exc:  # the upload POST itself failed
        log.warning("chart of %s not uploaded: %s", keys.target, exc)
        raise ChartNotShared("the upload to Slack failed; try again") from None
    file = answer.get("file") or {}
    return str(file.get("id", "")) if isinstance(file, dict) else ""


def asked_by(user: str, keys: FourKeys) -> str:
    """The chart's comment for ``/deploy stats``: who asked, for what."""
    return (
        f"{mention(user)} asked for the deployments per week of *{esc(keys.target)}*, "
        f"{window_words(keys)}"
    )
