"""What the bot may do in Slack and must never send there: bot/slack/manifest.yml's scopes held
against the Web API methods a test's bot called, and the test tokens that must never show.

tests/conftest.py checks both for every ``emulator`` when its test ends, and tests/slack/
conftest.py checks every bot's log: a method without its scope, or a token in a log or a
message, fails the test that caused it, whichever worker ran it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "bot" / "slack" / "manifest.yml"

# The bot scopes each Web API method needs (Slack's method reference, "Required scopes").
# An empty set: no scope (auth.test, response_url). apps.connections.open takes the
# app-level token and its connections:write, which is not a bot scope: APP_LEVEL.
APP_LEVEL = "app-level token: connections:write"
SCOPES: dict[str, frozenset[str]] = {
    "auth.test": frozenset(),
    "response_url": frozenset(),
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    "chat.postEphemeral": frozenset({"chat:write"}),
    "chat.getPermalink": frozenset(),
    # Whether a channel is shared with another organisation (bot/slack/workspace.py): public
    # channels need channels:read, private ones groups:read, group DMs mpim:read (DMs, D…,
    # are known by their id and not asked).
    "conversations.info": frozenset({"channels:read", "groups:read", "mpim:read"}),
    "users.info": frozenset({"users:read"}),
    "apps.connections.open": frozenset({APP_LEVEL}),
    # files.uploadV2 (the stats chart): both methods' "Scopes" facts name files:write; the
    # POST of the bytes to the URL files.getUploadURLExternal gave (the emulator records it
    # as "upload") carries no token.
    "files.getUploadURLExternal": frozenset({"files:write"}),
    "upload": frozenset(),
    "files.completeUploadExternal": frozenset({"files:write"}),
    # deployers/approvers naming Slack user groups (bot/slack/groups.py): both methods'
    # reference pages name usergroups:read.
    "usergroups.list": frozenset({"usergroups:read"}),
    "usergroups.users.list": frozenset({"usergroups:read"}),
}
# The events the manifest subscribes to, and the scope each needs (its reference's "Required
# scopes"): message_metadata_posted, CI's notice for auto_deploy (bot/slack/auto.py).
EVENT_SCOPES: dict[str, frozenset[str]] = {
    "message_metadata_posted": frozenset({"metadata.message:read"}),
}
# Slash commands need the `commands` scope; interactivity needs none.
COMMANDS_SCOPE = "commands"


# The tokens of the tests (tests/conftest.py's, and two Slack rejects): in no log, no output,
# nothing sent to Slack.
BOT_TOKEN = "xoxb-test-bot-token-4f9a2c"
APP_TOKEN = "xapp-test-app-token-7d1e5b"
SIGNING_SECRET = "test-signing-secret-93bd0e"
BAD_BOT_TOKEN = "xoxb-rejected-bot-token-51c7e0"
BAD_APP_TOKEN = "xapp-rejected-app-token-a2d94f"
SECRETS = (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, BAD_BOT_TOKEN, BAD_APP_TOKEN)


@functools.cache
def load_manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(data, dict)
    return data


def scope_problems(methods: Iterable[str], manifest: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with calling ``methods`` under the manifest's bot scopes (empty: nothing):
    a method SCOPES does not know, a scope it needs that the manifest does not declare."""
    manifest = load_manifest() if manifest is None else manifest
    methods = set(methods)
    unknown = methods - set(SCOPES)
    if unknown:
        return [f"add {sorted(unknown)} to SCOPES here, and their scopes to the manifest"]
    needed = set().union(*(SCOPES[m] for m in methods))
    problems = []
    if APP_LEVEL in needed:
        needed.discard(APP_LEVEL)
        if manifest["settings"]["socket_mode_enabled"] is not True:
            problems.append("Socket Mode used but socket_mode_enabled is not true")
    missing = needed - set(manifest["oauth_config"]["scopes"]["bot"])
    if missing:
        problems.append(f"scopes needed but not in the manifest: {sorted(missing)}")
    return problems


def secrets_in(text: str) -> list[str]:
    """The test tokens found in ``text``."""
    return [secret for secret in SECRETS if secret in text]
