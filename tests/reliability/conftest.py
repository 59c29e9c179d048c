"""Reliability runs: the child bot of tests/slack, and a count of what each run did.

Each test's figures go into its report (``user_properties``, which pytest-xdist carries from
the worker to the controller); tests/conftest.py prints them at the end of the session (one
``reliability:`` line each). They are also appended to ``$TMPDIR/deploybot-reliability.jsonl``.
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
from tests.conftest import FIGURE, LocalStack
from tests.helpers import wait_until
from tests.slack.conftest import start_bot

__all__ = ["cli", "report", "start_bot", "through", "wait_until"]

_RUNNING: list[pytest.Item] = []  # the test running in this process
_FILE = os.path.join(tempfile.gettempdir(), "deploybot-reliability.jsonl")


def report(name: str, **figures: object) -> None:
    """Record a test's figures: printed in the summary, appended to the JSONL file."""
    line = f"reliability: {name}: " + ", ".join(f"{v} {k}" for k, v in figures.items())
    _RUNNING[-1].user_properties.append((FIGURE, line))
    with open(_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": name, **figures}) + "\n")


@pytest.fixture(autouse=True)
def _running(request: pytest.FixtureRequest) -> Iterator[None]:
    _RUNNING.append(request.node)
    yield
    _RUNNING.remove(request.node)


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
