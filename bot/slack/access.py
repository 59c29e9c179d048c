"""Who may do what, in which channel: DEPLOY_ALLOWED_USERS and DEPLOY_ALLOWED_CHANNELS."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import Settings


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str = ""


@dataclass(frozen=True)
class Access:
    """Deploying is denied unless the user is listed (or the list is ``*``); reading is open
    in allowed channels. An empty channel list allows every channel."""

    users: frozenset[str]
    channels: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        return cls(settings.deploy_allowed_users, settings.deploy_allowed_channels)

    def may_read(self, channel: str) -> Decision:
        if self.channels and channel not in self.channels:
            allowed = ", ".join(f"<#{c}>" for c in sorted(self.channels))
            return Decision(
                False,
                f"deploybot does not work in this channel. Use {allowed}, or ask an admin to add "
                "this channel to DEPLOY_ALLOWED_CHANNELS.",
            )
        return Decision(True)

    def may_deploy(self, user: str, channel: str) -> Decision:
        read = self.may_read(channel)
        if not read.allowed:
            return read
        if "*" in self.users or user in self.users:
            return Decision(True)
        return Decision(
            False,
            "You are not allowed to deploy. Ask an admin to add your Slack user id "
            f"(`{user}`) to DEPLOY_ALLOWED_USERS.",
        )
