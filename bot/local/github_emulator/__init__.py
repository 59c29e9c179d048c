"""A GitHub REST stand-in on 127.0.0.1: compare, deployments, deployment statuses, faults."""

from bot.local.github_emulator.emulator import (
    DEFAULT_REPOSITORY,
    DEFAULT_TOKEN,
    Call,
    GitHubEmulator,
)
from bot.local.github_emulator.repo import Commit

__all__ = ["DEFAULT_REPOSITORY", "DEFAULT_TOKEN", "Call", "Commit", "GitHubEmulator"]
