"""One message to a target's channel from outside the bot: a terminal's ``--break-glass``.

The deploy is already recorded when this runs; a Slack that is not configured or refuses
is reported to the person at the terminal, never an error that undoes anything.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.logs import redact
from bot.settings import Settings
from bot.targets import Target


def channel_of(settings: Settings, target: Target) -> str | None:
    """Where a target's news goes: SLACK_CHANNEL when the target answers there, else the
    first of the target's channels."""
    if settings.slack_channel and target.serves_channel(settings.slack_channel):
        return settings.slack_channel
    return sorted(target.channels)[0] if target.channels else None


def announce(settings: Settings, target: Target, text: str) -> tuple[str, str]:
    """Post ``text`` to the target's channel: (the channel, "") or ("", what went wrong)."""
    token = settings.secret("slack_bot_token")
    channel = channel_of(settings, target)
    if not token or not channel:
        missing = " and ".join(
            name
            for name, value in (("SLACK_BOT_TOKEN", token), ("SLACK_CHANNEL", channel))
            if not value
        )
        return "", f"{missing} not set"
    client = WebClient(
        token=token,
        base_url=settings.slack_api_base,
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
    try:
        client.chat_postMessage(channel=channel, text=text, unfurl_links=False)
    except SlackApiError as exc:
        return "", f"Slack refused it ({exc.response.get('error', 'unknown_error')})"
    except OSError as exc:
        return "", redact(f"could not reach Slack at {settings.slack_api_base}: {exc}", [token])
    return channel, ""
