"""DORA's four keys from the history (placeholder of the interface s28a writes; theirs wins)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class WeekBar:
    week_start: date
    completed: int
    failed: int
    lead_time_median_s: float | None


@dataclass(frozen=True)
class FourKeys:
    target: str
    since: datetime
    until: datetime
    deployments: int
    frequency_per_week: float
    lead_time_median_s: float | None
    lead_time_p90_s: float | None
    lead_time_source: str
    change_failure_rate: float | None
    time_to_restore_median_s: float | None
    bands: dict[str, str]
    weeks: tuple[WeekBar, ...]
