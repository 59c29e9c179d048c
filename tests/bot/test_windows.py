"""Deploy windows: the grammar, open or not, and the next opening, across Madrid's DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.windows import (
    WindowError,
    describe_opening,
    is_open,
    next_opening,
    parse_window,
    parse_windows,
)

MADRID = ZoneInfo("Europe/Madrid")
# The example: production takes deploys Monday to Thursday 09-16, Friday mornings.
OFFICE = parse_windows(["Mon-Thu 09:00-16:00 Europe/Madrid", "Fri 09:00-12:00 Europe/Madrid"])
# Madrid's clocks in 2025 (EU rule: the last Sundays of March and October, 01:00 UTC):
# Sun 30 Mar 02:00 CET (UTC+1) -> 03:00 CEST (UTC+2); Sun 26 Oct 03:00 CEST -> 02:00 CET.


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_the_zone_database_knows_madrids_2025_changes() -> None:
    # The premise of the DST tests below, checked rather than assumed.
    assert utc(2025, 3, 30, 0, 59).astimezone(MADRID).utcoffset() == timedelta(hours=1)
    assert utc(2025, 3, 30, 1, 0).astimezone(MADRID).utcoffset() == timedelta(hours=2)
    assert utc(2025, 10, 26, 0, 59).astimezone(MADRID).utcoffset() == timedelta(hours=2)
    assert utc(2025, 10, 26, 1, 0).astimezone(MADRID).utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("Mon-Thu 09:00-16:00 Europe/Madrid", {0, 1, 2, 3}, 540, 960),
        ("Fri 09:00-12:00 Europe/Madrid", {4}, 540, 720),
        ("Fri-Mon 10:00-11:00 UTC", {4, 5, 6, 0}, 600, 660),  # wraps the week
        ("Sun-Sun 10:00-11:00 UTC", {6}, 600, 660),
        ("mon,WED,Fri-Sat 9:30-24:00 America/New_York", {0, 2, 4, 5}, 570, 1440),
        ("Sat 22:00-02:00 Europe/Madrid", {5}, 1320, 120),  # overnight
        ("Tue 00:00-24:00 UTC", {1}, 0, 1440),  # the whole day
    ],
)
def test_windows_that_parse(text: str, days: set[int], start: int, end: int) -> None:
    window = parse_window(text)
    assert (set(window.days), window.start, window.end, window.text) == (days, start, end, text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Mon-Thr 09:00-16:00 UTC", "no day 'Thr' (days are Mon Tue Wed Thu Fri Sat Sun)"),
        ("Monday 09:00-16:00 UTC", "no day 'Monday'"),
        ("Mon, 09:00-16:00 UTC", "a day is missing in 'Mon,'"),
        ("Mon,,Tue 09:00-16:00 UTC", "a day is missing in 'Mon,,Tue'"),
        ("Mon-,Tue 09:00-16:00 UTC", "a day is missing in 'Mon-,Tue'"),
        ("Mon 9-16 Europe/Madrid", "'9' is not a time; hours are HH:MM-HH:MM"),
        ("Mon 09:00 Europe/Madrid", "hours are HH:MM-HH:MM, got '09:00'"),
        ("Mon 09:00-16:00", "expected DAYS HH:MM-HH:MM ZONE"),
        ("Mon 09:00-16:00 Europe/Madird", "no time zone named 'Europe/Madird'"),
        ("Mon 09:00-16:00 ../../etc/passwd", "no time zone named '../../etc/passwd'"),
        ("Mon 09:00-16:00 +02:00", "no time zone named '+02:00'"),
        ("Mon 24:00-16:00 UTC", "'24:00' is not a time of day"),
        ("Mon 09:60-16:00 UTC", "'09:60' is not a time of day"),
        ("Mon 09:00-09:00 UTC", "opens and closes at the same time (09:00-09:00)"),
        ("", "expected DAYS HH:MM-HH:MM ZONE"),
    ],
)
def test_malformed_windows_say_which_and_why(text: str, why: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(text)
    assert str(caught.value).startswith(f"window {text!r}: ")
    assert why in str(caught.value)


def test_parse_windows_names_the_bad_one() -> None:
    with pytest.raises(WindowError, match="window 'Fri 09:00-12 UTC'"):
        parse_windows(["Mon 09:00-16:00 UTC", "Fri 09:00-12 UTC"])


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (utc(2025, 3, 24, 7, 59), False),  # Mon 08:59 CET
        (utc(2025, 3, 24, 8, 0), True),  # Mon 09:00 CET
        (utc(2025, 3, 24, 14, 59), True),  # Mon 15:59 CET
        (utc(2025, 3, 24, 15, 0), False),  # Mon 16:00 CET: the end is not in the window
        (utc(2025, 3, 28, 10, 59), True),  # Fri 11:59 CET
        (utc(2025, 3, 28, 11, 0), False),  # Fri 12:00 CET
        (utc(2025, 3, 29, 10, 0), False),  # Saturday
        # The Monday after the spring change: 09:00 CEST is 07:00 UTC, no longer 08:00.
        (utc(2025, 3, 31, 6, 59), False),
        (utc(2025, 3, 31, 7, 0), True),
        (utc(2025, 3, 31, 13, 59), True),  # 15:59 CEST
        (utc(2025, 3, 31, 14, 0), False),  # 16:00 CEST
        # The Monday after the autumn change: back to 08:00 UTC.
        (utc(2025, 10, 27, 7, 0), False),  # 08:00 CET
        (utc(2025, 10, 27, 8, 0), True),
    ],
)
def test_is_open_follows_madrids_wall_clock(at: datetime, open_: bool) -> None:
    assert is_open(OFFICE, at) is open_
    # The same instant given in Madrid's own time answers the same.
    assert is_open(OFFICE, at.astimezone(MADRID)) is open_


def test_next_opening_across_the_spring_change() -> None:
    """Friday afternoon before the clocks go forward: Monday 09:00 is 07:00 UTC, not 08:00."""
    at = utc(2025, 3, 28, 13, 0)  # Fri 14:00 CET, after Friday's window
    assert not is_open(OFFICE, at)
    opening = next_opening(OFFICE, at)
    assert opening == utc(2025, 3, 31, 7, 0)
    assert (opening.hour, opening.minute, opening.utcoffset()) == (9, 0, timedelta(hours=2))
    assert describe_opening(opening) == "Mon 09:00 Europe/Madrid"
    assert is_open(OFFICE, opening)
    assert not is_open(OFFICE, opening - timedelta(seconds=1))


def test_next_opening_across_the_autumn_change() -> None:
    at = utc(2025, 10, 24, 12, 0)  # Fri 14:00 CEST
    opening = next_opening(OFFICE, at)
    assert opening == utc(2025, 10, 27, 8, 0)
    assert (opening.hour, opening.utcoffset()) == (9, timedelta(hours=1))
    assert describe_opening(opening) == "Mon 09:00 Europe/Madrid"


def test_next_opening_is_now_when_open_and_later_today_when_early() -> None:
    monday_morning = utc(2025, 3, 24, 6, 30)  # 07:30 CET
    assert describe_opening(next_opening(OFFICE, monday_morning)) == "Mon 09:00 Europe/Madrid"
    inside = utc(2025, 3, 24, 9, 0)
    assert next_opening(OFFICE, inside) == inside


def test_an_overnight_window_spans_the_night_the_clocks_go_forward() -> None:
    # Sat 29 Mar 22:00 CET (21:00 UTC) to Sun 30 Mar 04:00 CEST (02:00 UTC): 5 hours, not 6.
    night = parse_windows(["Sat 22:00-04:00 Europe/Madrid"])
    assert not is_open(night, utc(2025, 3, 29, 20, 59))
    assert is_open(night, utc(2025, 3, 29, 21, 0))
    assert is_open(night, utc(2025, 3, 30, 1, 59))  # 03:59 CEST
    assert not is_open(night, utc(2025, 3, 30, 2, 0))  # 04:00 CEST
    # and on the night they go back: 22:00 CEST (20:00 UTC) to 04:00 CET (03:00 UTC), 7 hours.
    assert is_open(night, utc(2025, 10, 25, 20, 0))
    assert is_open(night, utc(2025, 10, 26, 2, 59))
    assert not is_open(night, utc(2025, 10, 26, 3, 0))


def test_an_overnight_window_opens_on_its_named_day_only() -> None:
    night = parse_windows(["Fri 22:00-02:00 UTC"])
    assert is_open(night, utc(2025, 3, 29, 1, 0))  # Saturday 01:00: Friday's night
    assert not is_open(night, utc(2025, 3, 29, 23, 0))  # Saturday 23:00
    assert describe_opening(next_opening(night, utc(2025, 3, 29, 3, 0))) == "Fri 22:00 UTC"


def test_a_start_the_clocks_skip_opens_an_hour_later_on_the_clock() -> None:
    # 02:30 does not exist in Madrid on 30 Mar 2025; fold=0 reads it at UTC+1: 01:30 UTC,
    # which the clocks show as 03:30 CEST.
    skipped = parse_windows(["Sun 02:30-05:00 Europe/Madrid"])
    opening = next_opening(skipped, utc(2025, 3, 29, 12, 0))
    assert opening == utc(2025, 3, 30, 1, 30)
    assert describe_opening(opening) == "Sun 03:30 Europe/Madrid"
    # A time that happens twice (26 Oct, 02:30) means the first one, in summer time. (In UTC:
    # == between zones is always False for such a time, PEP 495 "inter-zone comparison".)
    twice = next_opening(skipped, utc(2025, 10, 25, 12, 0))
    assert twice.astimezone(UTC) == utc(2025, 10, 26, 0, 30)
    assert twice.utcoffset() == timedelta(hours=2)


def test_windows_in_several_zones_take_the_earliest_opening() -> None:
    windows = parse_windows(["Mon 09:00-10:00 Europe/Madrid", "Mon 09:00-10:00 Asia/Tokyo"])
    opening = next_opening(windows, utc(2025, 3, 23, 12, 0))  # Sunday noon UTC
    assert opening == utc(2025, 3, 24, 0, 0)  # Tokyo's Monday comes first
    assert describe_opening(opening) == "Mon 09:00 Asia/Tokyo"


def test_no_windows_is_always_open() -> None:
    at = utc(2025, 3, 29, 3, 0)
    assert is_open((), at)
    assert next_opening((), at) == at


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        is_open(OFFICE, datetime(2025, 3, 24, 9, 0))


# Any instant in 2025-2026, across both changes: the next opening is open, and nothing is
# open in the minute before it unless the opening is the instant itself.
@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31)))
def test_next_opening_is_the_first_open_moment(naive: datetime) -> None:
    at = naive.replace(tzinfo=UTC)
    opening = next_opening(OFFICE, at)
    assert opening >= at
    assert is_open(OFFICE, opening)
    assert opening - at < timedelta(days=4)  # a weekend and a bit, at most
    if opening > at:
        assert not is_open(OFFICE, at)
        assert not is_open(OFFICE, max(at, opening - timedelta(minutes=1)))
