"""The weekly digest's schedule: ``digest = "Mon 09:00 Europe/Madrid"`` in deploybot.toml.

One day of the week, a local wall-clock time and an IANA zone, as deploy windows write them
(bot/windows.py): the digest of a target is due at that moment every week, and covers the week
before it. Daylight saving time as for windows: "09:00" is 09:00 on the wall, whatever the
offset (a skipped time lands an hour later, a doubled one means the first: PEP 495's fold=0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.windows import DAY_NAMES

_TIME = re.compile(r"(\d{1,2}):(\d{2})")
WEEK = timedelta(days=7)


class DigestError(ValueError):
    """A digest schedule that does not parse; the message says what is wrong and how to write it."""


@dataclass(frozen=True)
class Schedule:
    """Every week on ``day`` (0 is Monday), ``minute`` minutes after local midnight in ``zone``."""

    text: str
    day: int
    minute: int
    zone: ZoneInfo

    def _at(self, week_of: datetime) -> datetime:
        """This week's moment (the week of ``week_of``, local Monday to Sunday), in UTC."""
        local = week_of.astimezone(self.zone).date()
        day = local - timedelta(days=local.weekday() - self.day)
        wall = datetime(
            day.year, day.month, day.day, self.minute // 60, self.minute % 60, tzinfo=self.zone
        )
        return wall.astimezone(UTC)

    def last_due(self, now: datetime) -> datetime:
        """The latest moment at or before ``now`` the digest was due (UTC)."""
        this_week = self._at(now)
        return this_week if this_week <= now else self._at(now - WEEK)

    def next_due(self, now: datetime) -> datetime:
        """The first moment after ``now`` the digest is due (UTC)."""
        this_week = self._at(now)
        return this_week if this_week > now else self._at(now + WEEK)


def parse_schedule(text: str) -> Schedule:
    """``DAY HH:MM ZONE``; DigestError names the schedule and what is wrong."""
    example = "e.g. 'Mon 09:00 Europe/Madrid'"
    parts = text.split()
    if len(parts) != 3:
        raise DigestError(f"digest {text!r}: expected DAY HH:MM ZONE, {example}")
    day_text, time_text, zone_text = parts
    names = [d.lower() for d in DAY_NAMES]
    if day_text.lower() not in names:
        raise DigestError(
            f"digest {text!r}: no day {day_text!r} (one of {' '.join(DAY_NAMES)}), {example}"
        )
    match = _TIME.fullmatch(time_text)
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise DigestError(f"digest {text!r}: {time_text!r} is not a time (00:00 to 23:59)")
    try:
        zone = ZoneInfo(zone_text)
    except (ZoneInfoNotFoundError, ValueError):
        raise DigestError(
            f"digest {text!r}: no time zone named {zone_text!r} (IANA names: Europe/Madrid, UTC…)"
        ) from None
    minute = int(match.group(1)) * 60 + int(match.group(2))
    return Schedule(text=text, day=names.index(day_text.lower()), minute=minute, zone=zone)
