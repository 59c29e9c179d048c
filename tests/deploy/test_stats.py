"""The four keys' arithmetic on hand-made histories (bot/deploy/stats.py): pure, no AWS."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.deploy.stats import (
    SOURCE_COMMITS,
    SOURCE_IMAGE_PUSH,
    SOURCE_MIXED,
    bands,
    four_keys,
    parse_since,
    parse_window,
)

# A Monday: the window is exactly four weeks.
SINCE = datetime(2026, 11, 2, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=28)
H = 3600.0


def rec(
    n: int,
    at: datetime,
    outcome: Outcome | None = Outcome.COMPLETED,
    *,
    kind: str = "deploy",
    minutes: float = 10,
    shipped: tuple[tuple[str, datetime], ...] | None = None,
    pushed: datetime | None = None,
    digest: str = "",
    rollback_of: str = "",
) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"d-{n}",
        service="c/s",
        kind=kind,
        tag=f"v1.{n}.0",
        image="",
        task_definition="",
        previous_task_definition="",
        previous_tag="",
        ecs_deployment_id="",
        who="alice",
        who_display="Alice",
        source="cli",
        reason="",
        started_at=at,
        finished_at=at + timedelta(minutes=minutes) if outcome is not None else None,
        outcome=outcome,
        shipped=shipped,
        image_pushed_at=pushed,
        digest=digest or f"sha256:{n:064x}",
        rollback_of=rollback_of,
    )


def day(n: float, hour: float = 10) -> datetime:
    return SINCE + timedelta(days=n, hours=hour)


def keys(*records: DeploymentRecord) -> object:
    return four_keys(records, target="production", since=SINCE, until=UNTIL)


def test_no_deployments_give_no_rates_and_four_empty_weeks() -> None:
    k = four_keys([], target="production", since=SINCE, until=UNTIL)
    assert (k.deployments, k.completed, k.frequency_per_week) == (0, 0, 0.0)
    assert k.change_failure_rate is None
    assert k.lead_time_median_s is None and k.lead_time_p90_s is None
    assert k.time_to_restore_median_s is None
    assert k.bands == {"deployment_frequency": "low"}
    assert [w.week_start for w in k.weeks] == [date(2026, 11, d) for d in (2, 9, 16, 23)]
    assert all((w.completed, w.failed, w.lead_time_median_s) == (0, 0, None) for w in k.weeks)


def test_all_failed_is_a_rate_of_one_and_no_restore_without_a_completed_deployment() -> None:
    k = four_keys(
        [
            rec(1, day(1), Outcome.FAILED),
            rec(2, day(2), Outcome.ROLLED_BACK),
            rec(3, day(3), Outcome.ABORTED),
        ],
        target="production",
        since=SINCE,
        until=UNTIL,
    )
    assert (k.deployments, k.completed, k.changes, k.failed_changes) == (3, 0, 3, 3)
    assert k.change_failure_rate == 1.0
    assert k.frequency_per_week == 0.0
    assert k.time_to_restore_median_s is None  # still down: nothing completed since
    assert k.lead_time_median_s is None
    assert k.bands["change_failure_rate"] == "low"
    assert k.weeks[0].failed == 3


def test_a_rollback_the_next_day_fails_the_change_and_restores_it() -> None:
    good = rec(1, day(1), minutes=10)
    bad = rec(2, day(3), minutes=10)  # completed at day 3 10:10
    undo = rec(3, day(4, 9), kind="rollback", minutes=20, rollback_of="d-2")  # next morning
    k = four_keys([undo, bad, good], target="production", since=SINCE, until=UNTIL)
    assert (k.changes, k.failed_changes) == (2, 1)  # the rollback is a remedy, not a change
    assert k.change_failure_rate == 0.5
    assert k.completed == 3  # every completed deployment is one for frequency
    assert k.frequency_per_week == pytest.approx(3 / 4)
    # From the bad change's end (day 3 10:10) to the rollback's end (day 4 09:20).
    assert k.time_to_restore_median_s == pytest.approx(23 * H + 10 * 60)
    assert k.bands["time_to_restore"] == "high"  # under a day


def test_a_redeploy_after_the_window_of_follow_up_is_routine_not_a_fix() -> None:
    change = rec(1, day(1))
    restart = rec(2, day(4), kind="redeploy")  # three days later
    k = keys(change, restart)
    assert k.failed_changes == 0 and k.change_failure_rate == 0.0
    soon = rec(3, day(1, 15), kind="redeploy")  # five hours later: a redeploy-to-fix
    assert keys(change, soon).failed_changes == 1


def test_a_deployment_still_rolling_out_counts_nowhere_yet() -> None:
    done = rec(1, day(1), shipped=(("a" * 40, day(1, 8)),))
    rolling = rec(2, day(2), None)
    stuck = rec(3, day(3), Outcome.STILL_ROLLING_OUT)
    k = keys(done, rolling, stuck)
    assert (k.deployments, k.completed, k.changes, k.rolling_out) == (1, 1, 1, 2)
    assert k.change_failure_rate == 0.0
    assert k.lead_time_median_s == pytest.approx(2 * H + 10 * 60)


def test_commits_shipped_twice_count_once_at_their_first_completed_deployment() -> None:
    c1, c2, c3 = ("1" * 40, day(0, 9)), ("2" * 40, day(0, 10)), ("3" * 40, day(4, 8))
    first = rec(1, day(1), shipped=(c1, c2))  # completes day 1 10:10
    undo = rec(2, day(1, 12), kind="rollback", rollback_of="d-1")
    again = rec(3, day(5), shipped=(c1, c2, c3))  # ships them again, and c3
    k = keys(first, undo, again)
    assert k.lead_times == 3
    assert k.lead_time_source == SOURCE_COMMITS
    # c1: 25h10m, c2: 24h10m (at d-1); c3: 26h10m (at d-3).
    assert k.lead_time_median_s == pytest.approx(25 * H + 10 * 60)
    assert k.lead_time_p90_s == pytest.approx(26 * H + 10 * 60 - 0.2 * H)
    assert k.bands["lead_time"] == "high"


def test_a_failed_deployment_ships_nothing_its_commits_count_at_the_fix() -> None:
    c1 = ("1" * 40, day(1, 0))
    failed = rec(1, day(1), Outcome.ROLLED_BACK, shipped=(c1,))
    fixed = rec(2, day(2), shipped=(c1,))
    k = keys(failed, fixed)
    assert k.lead_times == 1
    assert k.lead_time_median_s == pytest.approx(34 * H + 10 * 60)
    # Down from the failed one's end to the fix's end.
    assert k.time_to_restore_median_s == pytest.approx(24 * H)
    assert k.restores == 1


def test_without_commits_the_image_push_time_stands_in_once_per_image_and_says_so() -> None:
    digest = "sha256:" + "e" * 64
    first = rec(1, day(1), pushed=day(0), digest=digest)
    same_image = rec(2, day(2), pushed=day(0), digest=digest)
    k = keys(first, same_image)
    assert k.lead_time_source == SOURCE_IMAGE_PUSH
    assert k.lead_times == 1
    assert k.lead_time_median_s == pytest.approx(24 * H + 10 * 60)
    mixed = keys(first, rec(3, day(3), shipped=(("3" * 40, day(3, 9)),)))
    assert mixed.lead_time_source == SOURCE_MIXED


def test_replaced_and_not_started_count_in_no_rate() -> None:
    k = keys(
        rec(1, day(1)),
        rec(2, day(2), Outcome.REPLACED),
        rec(3, day(3), Outcome.NOT_STARTED),
    )
    assert (k.deployments, k.changes, k.failed_changes, k.completed) == (2, 1, 0, 1)
    assert k.change_failure_rate == 0.0


def test_consecutive_failures_are_one_outage_from_the_first() -> None:
    k = keys(
        rec(1, day(1), Outcome.FAILED, minutes=0),
        rec(2, day(1, 12), Outcome.FAILED, minutes=0),
        rec(3, day(1, 14), minutes=0),
    )
    assert k.restores == 1
    assert k.time_to_restore_median_s == pytest.approx(4 * H)


def test_records_outside_the_window_only_tell_what_followed() -> None:
    before = rec(1, SINCE - timedelta(days=1))
    last = rec(2, UNTIL - timedelta(hours=2))
    undone_after = rec(3, UNTIL + timedelta(hours=3), kind="rollback", rollback_of="d-2")
    k = keys(before, last, undone_after)
    assert (k.deployments, k.changes, k.failed_changes, k.completed) == (1, 1, 1, 1)


def test_weeks_hold_the_chart_bars() -> None:
    k = keys(
        rec(1, day(0), shipped=(("1" * 40, day(0, 9)),)),
        rec(2, day(8), Outcome.FAILED),
        rec(3, day(9)),
        rec(4, day(10)),
    )
    assert [(w.completed, w.failed) for w in k.weeks] == [(1, 0), (2, 1), (0, 0), (0, 0)]
    assert k.weeks[0].lead_time_median_s == pytest.approx(H + 10 * 60)
    assert k.weeks[1].lead_time_median_s is None


def test_bands_follow_the_2023_report_thresholds() -> None:
    assert bands(14, 3 * H, 0.04, 30 * 60) == {
        "deployment_frequency": "elite",
        "lead_time": "elite",
        "change_failure_rate": "elite",
        "time_to_restore": "elite",
    }
    assert bands(2, 3 * 24 * H, 0.10, 5 * H) == {
        "deployment_frequency": "high",
        "lead_time": "high",
        "change_failure_rate": "high",
        "time_to_restore": "high",
    }
    assert bands(0.5, 20 * 24 * H, 0.15, 3 * 24 * H)["change_failure_rate"] == "medium"
    assert bands(0.1, 90 * 24 * H, 0.3, 30 * 24 * H) == {
        "deployment_frequency": "low",
        "lead_time": "low",
        "change_failure_rate": "low",
        "time_to_restore": "low",
    }


@pytest.mark.parametrize(
    ("text", "days"), [("30d", 30), ("30", 30), ("12w", 84), ("6m", 180), ("1y", 365)]
)
def test_windows_parse(text: str, days: int) -> None:
    assert parse_window(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["", "d", "0d", "-3d", "30x", "2y", "thirty"])
def test_bad_windows_say_what_to_give(text: str) -> None:
    with pytest.raises(ValueError, match=r"window|longest"):
        parse_window(text)


def test_since_is_a_date_or_a_length_back_from_now() -> None:
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    assert parse_since("2026-01-01", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("30d", now) == now - timedelta(days=30)
    with pytest.raises(ValueError, match="not in the past"):
        parse_since("2026-12-07", now)
    with pytest.raises(ValueError, match=r"not a date \(YYYY-MM-DD\)"):
        parse_since("2026-13-01", now)
