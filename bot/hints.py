"""Commands as each door spells them, for the hints every refusal and message gives.

A hint names the target and the syntax of the door the person is at: Slack's slash commands
under the names the operator configured (SLACK_*_COMMAND), ``deploybot --target X`` in a
terminal, ``make … ENV=X`` for the Makefile's users. A door says which it is once (the bot:
"slack"; a terminal: ``Hints.terminal_door()``, "make" when the Makefile runs it) and every text
asks ``Hints.at(door, settings.slack_commands)``, so no text spells a command itself.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from typing import Literal

from bot.command_names import CommandNames

# Set by tools/explain-exit.sh, which every deploybot target of the Makefile runs through: the
# hints of a `make status` then say `make deploy TAG=… ENV=staging`, not `deploybot …`.
VIA_VARIABLE = "DEPLOYBOT_VIA"


Door = Literal["slack", "cli", "make"]


@dataclass(frozen=True)
class Hints:
    """One door's spelling of deploybot's commands; every method names the target."""

    door: Door = "cli"
    deploy_command: str = "/deploy"
    redeploy_command: str = "/redeploy"
    status_command: str = "/deploy-status"

    @classmethod
    def at(cls, door: Door, names: CommandNames | None = None) -> Hints:
        """``door``'s hints; ``names``: the slash commands' (SLACK_*_COMMAND), which a
        terminal's hints name too ("ask for an approval in Slack with /deploy …")."""
        if names is None:
            return cls(door)
        return cls(door, names.deploy, names.redeploy, names.status)

    @classmethod
    def slack(cls, names: CommandNames | None = None) -> Hints:
        return cls.at("slack", names)

    @classmethod
    def cli(cls, names: CommandNames | None = None) -> Hints:
        return cls.at("cli", names)

    @staticmethod
    def terminal_door() -> Door:
        """The terminal's door: make's when the Makefile runs deploybot (DEPLOYBOT_VIA=make)."""
        return "make" if os.environ.get(VIA_VARIABLE) == "make" else "cli"

    def in_slack_words(self) -> Hints:
        """The same names, spelled as in Slack (a terminal's "ask in Slack with …")."""
        return replace(self, door="slack")

    # -- one method per command -------------------------------------------------------------
    def deploy(self, target: str, tag: str = "TAG") -> str:
        if self.door == "slack":
            return f"{self.deploy_command} {tag} to {target}"
        if self.door == "make":
            return f"make deploy TAG={_arg(tag)} ENV={_arg(target)}"
        return f"deploybot --target {_arg(target)} deploy {_arg(tag)}"

    def redeploy(self, target: str) -> str:
        if self.door == "slack":
            return f"{self.redeploy_command} {target}"
        return self._plain("redeploy", target)

    def promote(self, source: str, target: str) -> str:
        if self.door == "slack":
            return f"{self.deploy_command} promote {source} to {target}"
        if self.door == "make":
            return f"make promote FROM={_arg(source)} TO={_arg(target)}"
        return f"deploybot promote {_arg(source)} {_arg(target)}"

    def rollback(self, target: str) -> str:
        return self._sub("rollback", target)

    def abort(self, target: str) -> str:
        return self._sub("abort", target)

    def unfreeze(self, target: str) -> str:
        return self._sub("unfreeze", target)

    def freeze(self, target: str, reason: str = "REASON") -> str:
        if self.door == "slack":
            return f"{self.deploy_command} freeze {target} {reason}"
        if self.door == "make":
            return f'make freeze REASON="{reason}" ENV={_arg(target)}'
        return f'deploybot --target {_arg(target)} freeze "{reason}"'

    def history(self, target: str) -> str:
        return self._sub("history", target)

    def unlock(self, target: str) -> str:
        return self._sub("unlock", target)

    def status(self, target: str | None = None) -> str:
        """The status of ``target`` (None: every target)."""
        if self.door == "slack":
            return f"{self.status_command} {target}" if target else self.status_command
        if target is None:
            return "make status" if self.door == "make" else "deploybot status"
        return self._plain("status", target)

    # -- spelling ---------------------------------------------------------------------------
    def _sub(self, verb: str, target: str) -> str:
        if self.door == "slack":
            return f"{self.deploy_command} {verb} {target}"
        return self._plain(verb, target)

    def _plain(self, verb: str, target: str) -> str:
        if self.door == "make":
            return f"make {verb} ENV={_arg(target)}"
        return f"deploybot --target {_arg(target)} {verb}"


def _arg(text: str) -> str:
    """A word the shell takes as one: target names and tags are plain words and pass as they
    are (placeholders such as ``TAG`` too); anything else is quoted."""
    plain = text and not any(c.isspace() or c in "'\"$`;&|<>()\\*?!#" for c in text)
    return text if plain else shlex.quote(text)
