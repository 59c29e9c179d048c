"""Deploy windows: parse "Mon-Thu 09:00-16:00 Europe/Madrid", say whether one is open, and when.

The grammar, one window a string:

    DAYS HH:MM-HH:MM ZONE

- DAYS: ``Mon`` … ``Sun`` (any case), a range ``Mon-Thu``, a range that wraps the week
  ``Fri-Mon`` (Fri, Sat, Sun, Mon), or a comma list of these: ``Mon,Wed,Fri-Sat``.
- HH:MM-HH:MM: local wall-clock times in ZONE, 00:00 to 23:59, and 24:00 as an end. An end
  before the start runs overnight: ``Fri 22:00-02:00`` opens Friday 22:00 and closes Saturday
  02:00 (the days name the day a window opens). Start and end may not be equal.
- ZONE: an IANA time zone (``Europe/Madrid``, ``UTC``), read with the standard library's
  zoneinfo (the system's tz database, else the ``tzdata`` package).

Daylight saving time: times are wall-clock times, so "09:00" is 09:00 whatever the offset.
A time the clocks skip (02:30 on the spring-forward night in Madrid) is read with the
offset before the change, which lands an hour later on the clock (03:30); a time that
happens twice (the autumn night) means the first. This is PEP 495's ``fold=0``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_INDEX = {name.lower(): index for index, name in enumerate(DAY_NAMES)}
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
MINUTES_A_DAY = 24 * 60


class WindowError(ValueError):
    """A window string that does not parse; the message names the window and what is wrong."""


@dataclass(frozen=True)
class Window:
    """One weekly window: opens ``start`` minutes after local midnight on each of ``days``
    (0 is Monday) and stays open until ``end`` (minutes after midnight; ``end <= start``
    means the next day's)."""

    text: str
    days: frozenset[int]
    start: int
    end: int
    zone: ZoneInfo

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def occurrences(self, around: datetime) -> list[tuple[datetime, datetime]]:
        """(opens, closes) in UTC of every occurrence from the day before ``around``'s local
        date to a week after it: enough to answer both is_open and next_opening."""
        first = _as_utc(around).astimezone(self.zone).date() - timedelta(days=1)
        spans = []
        for offset in range(9):
            day = first + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = _instant(day, self.start, self.zone)
            closes_day = day + timedelta(days=1) if self.overnight else day
            closes = _instant(closes_day, self.end, self.zone)
            spans.append((opens, closes))
        return spans

    def is_open(self, at: datetime) -> bool:
        moment = _as_utc(at)
        return any(opens <= moment < closes for opens, closes in self.occurrences(moment))

    def next_opening(self, at: datetime) -> datetime:
        """The first moment at or after ``at`` when this window is open, in its zone."""
        moment = _as_utc(at)
        candidates = []
        for opens, closes in self.occurrences(moment):
            if opens <= moment < closes:
                candidates.append(moment)
            elif opens > moment:
                candidates.append(opens)
        return min(candidates).astimezone(self.zone)


def _as_utc(at: datetime) -> datetime:
    # Aware datetimes sharing a tzinfo compare by wall clock, not by instant (Python's
    # datetime docs, "aware" comparisons): everything is compared in UTC instead.
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a deploy window needs an aware datetime, got naive {at!r}")
    return at.astimezone(UTC)


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    day, minute = (day + timedelta(days=1), 0) if minute == MINUTES_A_DAY else (day, minute)
    local = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
    return local.astimezone(UTC)  # fold=0: see the module's docstring for skipped/doubled times


def parse_window(text: str) -> Window:
    """One window from its string; WindowError says what is wrong, naming the window."""
    try:
        return _parse(text)
    except _Why as why:
        raise WindowError(f"window {text!r}: {why}") from None


class _Why(Exception):
    """What is wrong with a window, before parse_window names it."""


def _parse(text: str) -> Window:
    parts = text.split()
    if len(parts) != 3:
        raise _Why("expected DAYS HH:MM-HH:MM ZONE, e.g. 'Mon-Thu 09:00-16:00 Europe/Madrid'")
    days_text, hours_text, zone_text = parts
    days = _parse_days(days_text)
    start_text, dash, end_text = hours_text.partition("-")
    if not dash:
        raise _Why(f"hours are HH:MM-HH:MM, got {hours_text!r}")
    start, end = _parse_time(start_text, end=False), _parse_time(end_text, end=True)
    if start == end:
        raise _Why(f"opens and closes at the same time ({hours_text})")
    try:
        zone = ZoneInfo(zone_text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _Why(f"no time zone named {zone_text!r} (IANA names: Europe/Madrid, UTC…)") from exc
    return Window(text=text, days=days, start=start, end=end, zone=zone)


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        for name in (first, last) if dash else (first,):
            if not name:
                raise _Why(f"a day is missing in {text!r}")
            if name.lower() not in _DAY_INDEX:
                raise _Why(f"no day {name!r} (days are {' '.join(DAY_NAMES)})")
        begin = _DAY_INDEX[first.lower()]
        stop = _DAY_INDEX[last.lower()] if dash else begin
        # A range may wrap the week: Fri-Mon is Fri, Sat, Sun, Mon.
        days.update((begin + step) % 7 for step in range((stop - begin) % 7 + 1))
    return frozenset(days)


def _parse_time(text: str, *, end: bool) -> int:
    match = _TIME.fullmatch(text)
    if match is None:
        raise _Why(f"{text!r} is not a time; hours are HH:MM-HH:MM, e.g. 09:00-16:00")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if end and (hours, minutes) == (24, 0):
        return MINUTES_A_DAY
    if hours > 23 or minutes > 59:
        raise _Why(f"{text!r} is not a time of day (00:00 to 23:59, and 24:00 as an end)")
    return hours * 60 + minutes


def parse_windows(texts: Iterable[str]) -> tuple[Window, ...]:
    """Every window of a list; the first that does not parse raises WindowError."""
    return tuple(parse_window(text) for text in texts)


def is_open(windows: Sequence[Window], at: datetime) -> bool:
    """Whether ``at`` falls in any of ``windows``; no windows at all means always open."""
    if not windows:
        _as_utc(at)
        return True
    return any(window.is_open(at) for window in windows)


def next_opening(windows: Sequence[Window], at: datetime) -> datetime:
    """The first moment at or after ``at`` when a window is open (``at`` itself if one is),
    in the zone of the window that opens then, so it reads as that zone's local time."""
    if not windows:
        _as_utc(at)
        return at
    return min((window.next_opening(at) for window in windows), key=_as_utc)


def describe_opening(moment: datetime) -> str:
    """``Mon 09:00 Europe/Madrid``: a next_opening() in its zone's words."""
    zone = moment.tzinfo
    name = zone.key if isinstance(zone, ZoneInfo) else moment.strftime("%Z") or "UTC"
    return f"{DAY_NAMES[moment.weekday()]} {moment:%H:%M} {name}"
