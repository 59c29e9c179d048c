"""Errors a person can act on: one family, each carrying a message written for a person."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.exit_codes import ExitCode


class DeployError(Exception):
    """Base of every foreseeable error. ``str(err)`` is the message to show as it is."""

    exit_code: ExitCode = ExitCode.REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeployRefused(DeployError):
    """Refused before any change was made (exit code 2)."""


class BadTag(DeployRefused):
    """The tag is not of our grammar."""


class ImageMissing(DeployRefused):
    """The tag is well-formed but not in ECR; ``recent`` are tags that do exist."""

    def __init__(self, message: str, tag: str, recent: Sequence[str]) -> None:
        super().__init__(message)
        self.tag = tag
        self.recent = tuple(recent)


class LockHeld(DeployRefused):
    """Another deployment holds the service's lock."""

    def __init__(
        self, message: str, holder: str, tag: str, since: datetime, deployment_id: str
    ) -> None:
        super().__init__(message)
        self.holder = holder
        self.tag = tag
        self.since = since
        self.deployment_id = deployment_id


class MovedTag(DeployRefused):
    """A release tag names another image than the one deployed under it before (#24):
    refused unless the person says it is meant (``--allow-moved-tag``, a confirm in Slack)."""

    def __init__(self, message: str, tag: str, digest: str, recorded: str) -> None:
        super().__init__(message)
        self.tag = tag
        self.digest = digest  # what the tag names now
        self.recorded = recorded  # what was deployed under it


class ServiceMissing(DeployRefused):
    """The cluster or service the settings name does not exist."""


class NothingToRollBack(DeployRefused):
    """No completed deployment of another image to go back to."""


class NothingToAbort(DeployRefused):
    """Abort (Stop) when nothing is rolling out, or what was rolling out cannot be put back."""


class AbortedFirst(DeployRefused):
    """A start aborted between its record and its UpdateService: ECS was not asked."""


class NoSuchRequest(DeployRefused):
    """An approval request that does not exist (a tampered or very old button), was decided
    already, or is not the requester's to cancel; likewise a queued deploy."""


class NoLongerRunning(DeployRefused):
    """A rollback of a deployment that is no longer what runs (someone deployed since, or it
    was already rolled back): refused, saying what runs now and who put it there."""


class NotConfigured(DeployRefused):
    """Settings are missing or wrong (credentials, region, table)."""


class AwsTrouble(DeployError):
    """AWS kept failing after botocore's retries; ``changed`` says whether anything was done."""

    def __init__(self, message: str, changed: bool = False) -> None:
        super().__init__(message)
        self.changed = changed
        self.exit_code = ExitCode.FAILED if changed else ExitCode.REFUSED
