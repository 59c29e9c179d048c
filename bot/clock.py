"""The one clock deploybot reads time from, so tests and simulators can drive it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Wall time for records, monotonic time for intervals, and interruptible waits."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; True if stopped."""
        if stop is None:
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))


SYSTEM_CLOCK = Clock()
