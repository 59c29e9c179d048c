"""Slack's rules for slash-command names, its built-in commands, and the bot's three names.

One place for what Slack accepts, so the settings (SLACK_*_COMMAND), the manifest that
``deploybot manifest`` prints and the listeners the bot registers all agree, and a name Slack
would refuse is refused here, before a workspace is set up with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The longest command Slack takes, the leading "/" included: "A string containing the actual
# slash command. Maximum length is 32 characters, and should include the leading / character"
# (Slack's app manifest reference, as slackapi/node-slack-sdk types it in
# packages/web-api/src/types/request/manifest.ts, ManifestSlashCommand.command).
MAX_LENGTH = 32

# What a name may hold: a "/", then lowercase letters, digits and "-". Lowercase only and no
# spaces: what users type is matched as a single lowercase word. Hyphens are accepted by Slack
# (NousResearch/hermes-agent PR #17081, closed by its maintainers: "Slack's API documentation
# confirms hyphens ARE allowed", e.g. /reload-mcp). Underscores are refused: the rule our issue
# tracker gives for Slack's names is "lowercase, no spaces, no underscores"; one report says an
# underscore was "not the blocker" of a refused manifest (hermes-agent PR #18453), but nothing
# shows Slack takes it everywhere, and a name refused here costs a hyphen while a name Slack
# refuses costs every command of the app. We also require a letter or digit first ("/-x").
NAME_PATTERN = re.compile(r"/[a-z0-9][a-z0-9-]*")

# Slack's built-in commands: a manifest that declares one is refused whole, "the slash command
# has an invalid name", and no command of the app works (openclaw/openclaw PR #29032;
# NousResearch/hermes-agent issue #17054 and PR #18456, whose list of 19 is this first group,
# taken from Slack's help article "Use built-in slash commands",
# https://slack.com/help/articles/201259356-Use-built-in-slash-commands).
REFUSED_BUILT_INS = frozenset(
    {
        "/away", "/collapse", "/dnd", "/expand", "/feed", "/join", "/leave", "/me", "/msg",
        "/mute", "/open", "/pro", "/remind", "/search", "/shortcuts", "/shrug", "/status",
        "/topic", "/who",
    }
)  # fmt: skip
# Further names Slack answers itself: other commands and aliases of that help article (/close and
# /part for /leave, /kick for /remove, /dm for /msg), Giphy's /giphy, and /help and /commands,
# which openclaw PR #29032 reports as reserved. Not every one is known to make Slack refuse the
# manifest, but a bot command under any of them would at best be shadowed: refused here too.
OTHER_BUILT_INS = frozenset(
    {
        "/active", "/apps", "/archive", "/call", "/close", "/commands", "/dm", "/giphy", "/help",
        "/invite", "/kick", "/part", "/remove", "/rename",
    }
)  # fmt: skip
BUILT_INS = REFUSED_BUILT_INS | OTHER_BUILT_INS


def problem_with(name: str) -> str | None:
    """Why Slack would not take ``name`` as a slash command, or None when it would."""
    if not name.startswith("/"):
        fixed = "/" + name
        hint = f", as {fixed}" if problem_with(fixed) is None else ""
        return f"{name!r} must start with '/'{hint}"
    if len(name) > MAX_LENGTH:
        return f"{name!r} is {len(name)} characters long; Slack takes at most {MAX_LENGTH}"
    if not NAME_PATTERN.fullmatch(name):
        return (
            f"{name!r} is not a name Slack takes: after the '/', lowercase letters, digits, "
            "and '-' only (no '_', no spaces)"
        )
    if name in BUILT_INS:
        return (
            f"{name} is one of Slack's built-in commands, and Slack refuses an app that "
            "declares it; pick another name, e.g. /deploy-status"
        )
    return None


@dataclass(frozen=True)
class CommandNames:
    """The bot's three slash commands, as the operator named them (SLACK_*_COMMAND)."""

    deploy: str = "/deploy"
    redeploy: str = "/redeploy"
    status: str = "/deploy-status"

    def all(self) -> tuple[str, str, str]:
        return (self.deploy, self.redeploy, self.status)

    def problems(self) -> dict[str, str]:
        """What Slack would refuse in these names, by role (deploy, redeploy, status), or
        that would make two of them one command."""
        found = {
            role: why
            for role, name in zip(("deploy", "redeploy", "status"), self.all(), strict=True)
            if (why := problem_with(name))
        }
        if not found and len(set(self.all())) < 3:
            found["status"] = f"the three commands need three different names, not {self.all()}"
        return found


DEFAULT_COMMANDS = CommandNames()
