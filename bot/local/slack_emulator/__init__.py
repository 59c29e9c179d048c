"""A Slack emulator on 127.0.0.1: Web API subset, response_urls, Socket Mode, signed requests."""

from bot.local.slack_emulator.emulator import ACK_TIMEOUT, SlackEmulator
from bot.local.slack_emulator.records import (
    Call,
    Delivery,
    Ephemeral,
    Message,
    Revision,
    UserGroup,
)

__all__ = [
    "ACK_TIMEOUT",
    "Call",
    "Delivery",
    "Ephemeral",
    "Message",
    "Revision",
    "SlackEmulator",
    "UserGroup",
]
