"""The weekly digest's schedule: parsing (a clear message for a bad one), when it is due across
daylight saving time, and deploybot.toml's ``digest`` for the fleet and for one target."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.digest import DigestError, parse_schedule
from bot.targets import load_targets
from tests.bot.test_targets import (
    TWO_TARGETS,
    _clean_environment,  # noqa: F401 - autouse: no env, cwd tmp
    problems_of,
    settings,
    write,
)

MADRID = "Mon 09:00 Europe/Madrid"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_due_every_week_at_the_wall_clock_time_across_daylight_saving() -> None:
    schedule = parse_schedule(MADRID)
    # Winter: Madrid is UTC+1. Monday 7 Dec 2026, 09:00 there is 08:00 UTC.
    assert schedule.last_due(utc(2026, 12, 7, 8, 0)) == utc(2026, 12, 7, 8, 0)
    assert schedule.last_due(utc(2026, 12, 7, 7, 59)) == utc(2026, 11, 30, 8, 0)
    assert schedule.next_due(utc(2026, 12, 7, 8, 0)) == utc(2026, 12, 14, 8, 0)
    assert schedule.next_due(utc(2026, 12, 6, 23, 0)) == utc(2026, 12, 7, 8, 0)
    # Summer (UTC+2): 07:00 UTC; the Sunday before (29 Mar 2026) the clocks went forward.
    assert schedule.next_due(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 30, 7, 0)
    assert schedule.last_due(utc(2026, 3, 29, 12, 0)) == utc(2026, 3, 23, 8, 0)
    # Sunday late in Madrid is already Monday in Tokyo: the zone decides the week.
    tokyo = parse_schedule("Mon 08:30 Asia/Tokyo")
    assert tokyo.next_due(utc(2026, 12, 6, 22, 0)) == utc(2026, 12, 6, 23, 30)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Monday 09:00 Europe/Madrid", "no day 'Monday' (one of Mon Tue Wed Thu Fri Sat Sun)"),
        ("Mon 9h Europe/Madrid", "'9h' is not a time (00:00 to 23:59)"),
        ("Mon 24:00 UTC", "'24:00' is not a time"),
        ("Mon 09:00 Europe/Madird", "no time zone named 'Europe/Madird'"),
        ("Mon 09:00", "expected DAY HH:MM ZONE, e.g. 'Mon 09:00 Europe/Madrid'"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(text: str, said: str) -> None:
    with pytest.raises(DigestError) as caught:
        parse_schedule(text)
    assert said in str(caught.value) and repr(text) in str(caught.value)


def test_the_fleets_digest_applies_to_every_target_that_sets_none(tmp_path: Path) -> None:
    text = f'digest = "Fri 17:00 UTC"\n{TWO_TARGETS}'.replace(
        'container = "hello-world"\n', f'container = "hello-world"\ndigest = "{MADRID}"\n'
    )
    write(tmp_path, text)
    targets = load_targets(settings(deploybot_config="deploybot.toml"))
    staging, production = targets.get("staging").digest, targets.get("production").digest
    assert staging is not None and staging.text == "Fri 17:00 UTC"
    assert production is not None and production.text == MADRID
    write(tmp_path, TWO_TARGETS)
    unset = load_targets(settings(deploybot_config="deploybot.toml"))
    assert [t.digest for t in unset] == [None, None]


def test_a_bad_digest_is_refused_at_load_naming_the_key(tmp_path: Path) -> None:
    text = f'digest = "every monday"\n{TWO_TARGETS}'.replace(
        'container = "hello-world"\n', 'container = "hello-world"\ndigest = "Mon 9:00 Mars/Base"\n'
    )
    problems = problems_of(tmp_path, text)
    assert (
        "deploybot.toml: digest: digest 'every monday': expected DAY HH:MM ZONE, "
        "e.g. 'Mon 09:00 Europe/Madrid'" in problems
    ), problems
    assert (
        "deploybot.toml: targets.production.digest: digest 'Mon 9:00 Mars/Base': no time zone "
        "named 'Mars/Base' (IANA names: Europe/Madrid, UTC…)" in problems
    ), problems
    wrong_type = problems_of(tmp_path, TWO_TARGETS + "digest = 1\n")  # in production's table
    assert any("targets.production.digest" in p and "string" in p for p in wrong_type), wrong_type
