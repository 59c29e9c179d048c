"""Reliability runs: the child bot of tests/slack, and a count of what each run did.

Each test adds its figures to ``FIGURES``; they are printed at the end of the session (one
``reliability:`` line each) and written to ``$TMPDIR/deploybot-reliability.jsonl``.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from tests.slack.conftest import start_bot

__all__ = ["FIGURES", "report", "start_bot"]

FIGURES: list[str] = []
_FILE = os.path.join(tempfile.gettempdir(), "deploybot-reliability.jsonl")


def report(name: str, **figures: object) -> None:
    """Record a test's figures: printed in the summary, appended to the JSONL file."""
    FIGURES.append(f"reliability: {name}: " + ", ".join(f"{v} {k}" for k, v in figures.items()))
    with open(_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": name, **figures}) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
