"""Reliability runs: the child bot of tests/slack, and a count of what each run did.

Each test adds its figures to ``FIGURES``; they are printed at the end of the session (one
``reliability:`` line each) and written to ``$TMPDIR/deploybot-reliability.jsonl``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from bot.local.faultproxy import FaultProxy
from bot.settings import Settings
from tests.conftest import LocalStack
from tests.helpers import wait_until
from tests.slack.conftest import start_bot

__all__ = ["FIGURES", "cli", "report", "start_bot", "through", "wait_until"]

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


@pytest.fixture
def proxy(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto; this process's and its children's AWS endpoint."""
    with FaultProxy(stack.info.endpoint_url) as faults:
        monkeypatch.setenv("AWS_ENDPOINT_URL", faults.endpoint_url)
        yield faults


def through(settings: Settings, proxy: FaultProxy) -> Settings:
    """``settings`` talking to AWS through the fault proxy."""
    return settings.model_copy(update={"aws_endpoint_url": proxy.endpoint_url})


def cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``deploybot ARGS`` as an operator runs it (a real process)."""
    full = {**os.environ, "DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "160", **env}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
