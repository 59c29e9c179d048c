"""Small helpers the tests share: free ports, waiting for a server to answer, and waiting
for a condition."""

import time
from collections.abc import Callable

from bot.local.net import free_port, wait_http

__all__ = ["free_port", "wait_http", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is truthy (never a fixed sleep); TimeoutError naming
    ``what``. For conditions on state no emulator is told of (AWS, a process's files): an
    emulator's own ``wait_for`` wakes only on that emulator's changes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout} s: {what}")
        time.sleep(0.05)
