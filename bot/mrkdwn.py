"""Slack mrkdwn for text we did not write: escaped so it shows as typed and notifies no one.

The one place for it: the Slack transport (bot/slack/) and the engine's change summaries
(bot/deploy/changes.py, rendered for Slack too) both use ``escape``; it imports nothing.

Slack uses ``&``, ``<`` and ``>`` as control characters: ``<!here>``, ``<!channel>``,
``<@U123>``, ``<#C123>`` and ``<http://x|y>`` are parsed out of mrkdwn text, and Slack asks
for exactly those three to be written as HTML entities when they are meant as text (and no
others: "You shouldn't HTML entity-encode the entire text").
https://api.slack.com/reference/surfaces/formatting#escaping

Everything a person or CI typed (reasons, display names, CLI user names, tags, notes), and
every text from ECS or AWS (events, stopped reasons, errors), goes through ``escape`` where it
is put into a message. Mentions we build ourselves from ids Slack gave us use ``mention``.
"""

from __future__ import annotations

import re

# Slack user ids: U… (or W… on Enterprise Grid), upper-case letters and digits.
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
# Slack user group ids: S…, likewise (usergroups.list's ``id``).
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,20}")
_URL = re.compile(r"https?://[^\s|<>]+")


def escape(text: object) -> str:
    """``text`` as mrkdwn that shows it literally: ``<!here>`` becomes ``&lt;!here&gt;``."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def is_user_id(value: str) -> bool:
    return bool(_USER_ID.fullmatch(value))


def is_group_id(value: str) -> bool:
    return bool(_GROUP_ID.fullmatch(value))


def mention(user_id: str) -> str:
    """``<@U…>`` for a Slack user id, ``<!subteam^S…>`` for a user group ("Mentioning user
    groups", api.slack.com/reference/surfaces/formatting#mentioning-groups); anything else is
    shown as text."""
    if is_group_id(user_id):
        return f"<!subteam^{user_id}>"
    return f"<@{user_id}>" if is_user_id(user_id) else escape(user_id)


def link(url: str, label: str) -> str:
    """``<url|label>`` for an http(s) URL; anything else is shown as text."""
    if _URL.fullmatch(url):
        return f"<{escape(url)}|{escape(label)}>"
    return escape(url)
