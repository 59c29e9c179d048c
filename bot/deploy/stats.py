"""What the history tells: DORA's four keys of one target over a window (issue 28).

Pure arithmetic over deployment records (no boto3, no Slack, no GitHub): ``four_keys`` takes
the records of one target, read by ``Engine.stats(since, until)`` (bot/deploy/engine.py: one
DynamoDB Query of the target's history by time range, the commit times of each deployment
asked of GitHub once and cached on its record), and answers a ``FourKeys``. The doors render it:
``deploybot stats`` (bot/terminal.py), ``/deploy stats`` and the weekly digest (the chart).

The rules, as OPERATIONS.md states them:
- **Deployment frequency**: completed deployments (any kind: deploy, redeploy, rollback) that
  started in the window, per week.
- **Lead time for changes**: for each commit a completed *deploy* brought (the commits of GitHub's
  compare from the image that ran before to the one deployed, as the messages show them; the
  committer's date), completion time minus commit time; a commit shipped twice (deployed, rolled
  back, deployed again) counts once, at the first completed deployment that shipped it. Without
  those commits (no GITHUB_TOKEN, an image without ``sha-`` tag, GitHub unavailable) the image's
  push time to ECR stands in, once per image, and ``lead_time_source`` says so. Median and p90
  (linear interpolation between the closest ranks: ``statistics.quantiles(method="inclusive")``).
- **Change failure rate**: over the *changes* (settled deploys of an image; rollbacks and
  redeploys are remedies, not changes), those that failed, were rolled back or aborted, or were
  followed, as the next deployment of the target within FOLLOW_UP_WINDOW of their end, by a
  rollback or a redeploy (a redeploy-to-fix). REPLACED (another deployment took over: nothing of
  ours failed, nothing of ours completed) and NOT_STARTED (nothing changed) are neither: they
  count in no rate. Open, still-rolling-out and unknown deployments count nowhere until settled.
- **Time to restore**: from the end of a failed change (failed, rolled back, aborted, or
  completed and later rolled back or redeployed to fix) to the end of the next completed
  deployment of the target that is not itself a failed change; consecutive failures are one
  outage, measured from the first. Median.
- **Bands**: the thresholds of DORA's *Accelerate State of DevOps Report 2023* (the four
  clusters, elite to low; ``BANDS_REPORT``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from bot.deploy.rollout import Outcome

if TYPE_CHECKING:
    from bot.deploy.records import DeploymentRecord

# A completed change followed, as the target's next deployment, by a rollback or a redeploy that
# starts within this long after it ended failed (a redeploy-to-fix). Two days, so a rollback "the
# next morning" counts, while a redeploy a week later (a routine restart) does not.
FOLLOW_UP_WINDOW = timedelta(hours=48)
# The longest window ``stats`` accepts; history items are kept at least this long (OPERATIONS.md).
MAX_WINDOW = timedelta(days=365)
DEFAULT_WINDOW = timedelta(days=30)

# Lead time's sources, as the output names them.
SOURCE_COMMITS = "commits"
SOURCE_IMAGE_PUSH = "image push"
SOURCE_MIXED = "commits, image push where commits were unknown"

BANDS_REPORT = "DORA Accelerate State of DevOps Report 2023"
ELITE, HIGH, MEDIUM, LOW = "elite", "high", "medium", "low"

_FAILED = (Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.ABORTED)
_NOT_A_CHANGE = (Outcome.REPLACED, Outcome.NOT_STARTED)
_HOUR = 3600.0
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
_MONTH = 30 * _DAY


@dataclass(frozen=True)
class WeekBar:
    """One week (Monday, UTC) of the window: what the chart draws."""

    week_start: date
    completed: int  # completed deployments started that week
    failed: int  # failed changes started that week
    lead_time_median_s: float | None  # of the commits shipped by that week's completed deploys


@dataclass(frozen=True)
class FourKeys:
    """The four keys of one target over [since, until)."""

    target: str
    since: datetime
    until: datetime
    deployments: int  # settled deployments in the window (NOT_STARTED excluded: nothing changed)
    frequency_per_week: float  # completed per week
    lead_time_median_s: float | None
    lead_time_p90_s: float | None
    lead_time_source: str  # "commits" or "image push" (or both: SOURCE_MIXED), said in the output
    change_failure_rate: float | None  # None with no changes
    time_to_restore_median_s: float | None
    # "deployment_frequency", "lead_time", "change_failure_rate", "time_to_restore" -> "elite" |
    # "high" | "medium" | "low"; a key absent: no data
    bands: dict[str, str]
    weeks: tuple[WeekBar, ...]
    # The counts behind the rates, for the output to show.
    completed: int = 0
    changes: int = 0  # the change failure rate's denominator
    failed_changes: int = 0
    restores: int = 0  # time to restore's samples
    lead_times: int = 0  # lead time's samples (commits, or images)
    rolling_out: int = 0  # started in the window, not settled yet: counted nowhere
    report: str = BANDS_REPORT

    @property
    def days(self) -> float:
        return (self.until - self.since).total_seconds() / _DAY


def four_keys(
    records: Iterable[DeploymentRecord],
    *,
    target: str,
    since: datetime,
    until: datetime,
    follow_up: timedelta = FOLLOW_UP_WINDOW,
) -> FourKeys:
    """The four keys of ``target`` over [since, until) from its records (any order; records
    outside the window are read only as what followed one inside it)."""
    ordered = sorted(records, key=lambda r: (r.started_at, r.id))
    inside = [r for r in ordered if since <= r.started_at < until]
    settled = [r for r in inside if r.settled and r.outcome is not Outcome.NOT_STARTED]
    completed = [r for r in settled if r.outcome is Outcome.COMPLETED]
    failed_ids = _failed_changes(ordered, follow_up)
    changes = [r for r in settled if _is_change(r)]
    failed = [r for r in changes if r.id in failed_ids]

    samples = _lead_times(ordered, since, until)
    lead = [seconds for _, seconds, _ in samples]
    sources = {source for _, _, source in samples}
    restores = _restores(ordered, failed_ids, since, until)

    weeks_s = max((until - since).total_seconds() / _WEEK, 1e-9)
    frequency = len(completed) / weeks_s
    cfr = len(failed) / len(changes) if changes else None
    lead_median = statistics.median(lead) if lead else None
    lead_p90 = _p90(lead)
    restore_median = statistics.median(restores) if restores else None
    if sources == {SOURCE_COMMITS}:
        source = SOURCE_COMMITS
    elif SOURCE_COMMITS in sources:
        source = SOURCE_MIXED
    else:
        source = SOURCE_IMAGE_PUSH

    return FourKeys(
        target=target,
        since=since,
        until=until,
        deployments=len(settled),
        frequency_per_week=frequency,
        lead_time_median_s=lead_median,
        lead_time_p90_s=lead_p90,
        lead_time_source=source,
        change_failure_rate=cfr,
        time_to_restore_median_s=restore_median,
        bands=bands(frequency, lead_median, cfr, restore_median),
        weeks=_weeks(since, until, completed, failed, samples),
        completed=len(completed),
        changes=len(changes),
        failed_changes=len(failed),
        restores=len(restores),
        lead_times=len(lead),
        rolling_out=sum(1 for r in inside if not r.settled),
    )


def _is_change(rec: DeploymentRecord) -> bool:
    return rec.kind == "deploy" and rec.settled and rec.outcome not in _NOT_A_CHANGE


def _failed_changes(ordered: Sequence[DeploymentRecord], follow_up: timedelta) -> set[str]:
    """The ids of the changes that failed: by their outcome, or by what followed them."""
    failed: set[str] = set()
    started = [r for r in ordered if r.outcome is not Outcome.NOT_STARTED]
    for i, rec in enumerate(started):
        if not _is_change(rec):
            continue
        if rec.outcome in _FAILED:
            failed.add(rec.id)
            continue
        if rec.outcome is not Outcome.COMPLETED or rec.finished_at is None:
            continue
        after = started[i + 1] if i + 1 < len(started) else None
        followed = (
            after is not None
            and after.kind in ("rollback", "redeploy")
            and after.started_at - rec.finished_at <= follow_up
        )
        # A rollback naming it, whatever came between, within the window, counts too.
        undone = any(
            r.kind == "rollback"
            and r.rollback_of == rec.id
            and r.started_at - rec.finished_at <= follow_up
            for r in started[i + 1 :]
        )
        if followed or undone:
            failed.add(rec.id)
    return failed


def _lead_times(
    ordered: Sequence[DeploymentRecord], since: datetime, until: datetime
) -> list[tuple[DeploymentRecord, float, str]]:
    """(deployment, seconds, source) for each commit (or image) a completed deploy in the
    window shipped first."""
    seen_commits: set[str] = set()
    seen_images: set[str] = set()
    samples: list[tuple[DeploymentRecord, float, str]] = []
    for rec in ordered:
        if rec.outcome is not Outcome.COMPLETED or rec.finished_at is None:
            continue
        if rec.kind != "deploy":  # a rollback or redeploy brings no new change
            seen_images.add(rec.digest)
            continue
        inside = since <= rec.started_at < until
        if rec.shipped is not None:
            for sha, at in rec.shipped:
                if sha in seen_commits:
                    continue
                seen_commits.add(sha)
                if inside:
                    seconds = max(0.0, (rec.finished_at - at).total_seconds())
                    samples.append((rec, seconds, SOURCE_COMMITS))
        elif rec.image_pushed_at is not None and rec.digest not in seen_images and inside:
            seconds = max(0.0, (rec.finished_at - rec.image_pushed_at).total_seconds())
            samples.append((rec, seconds, SOURCE_IMAGE_PUSH))
        if rec.digest:
            seen_images.add(rec.digest)
    return samples


def _restores(
    ordered: Sequence[DeploymentRecord], failed: set[str], since: datetime, until: datetime
) -> list[float]:
    """Seconds from each outage's first failed change (in the window) to the end of the next
    completed deployment that is not itself a failed change."""
    restores: list[float] = []
    down_since: datetime | None = None
    counts = False
    for rec in ordered:
        if not rec.settled or rec.finished_at is None:
            continue
        if rec.id in failed:
            if down_since is None:
                down_since = rec.finished_at
                counts = since <= rec.started_at < until
            continue
        if rec.outcome is Outcome.COMPLETED and down_since is not None:
            if counts:
                restores.append(max(0.0, (rec.finished_at - down_since).total_seconds()))
            down_since = None
    return restores


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _weeks(
    since: datetime,
    until: datetime,
    completed: Sequence[DeploymentRecord],
    failed: Sequence[DeploymentRecord],
    samples: Sequence[tuple[DeploymentRecord, float, str]],
) -> tuple[WeekBar, ...]:
    def monday(when: datetime) -> date:
        day = when.astimezone(UTC).date()
        return day - timedelta(days=day.weekday())

    first = monday(since)
    last = monday(until - timedelta(microseconds=1)) if until > since else first
    bars: list[WeekBar] = []
    week = first
    while week <= last:

        def here(rec: DeploymentRecord, week: date = week) -> bool:
            return monday(rec.started_at) == week

        lead = [s for rec, s, _ in samples if here(rec)]
        bars.append(
            WeekBar(
                week_start=week,
                completed=sum(1 for r in completed if here(r)),
                failed=sum(1 for r in failed if here(r)),
                lead_time_median_s=statistics.median(lead) if lead else None,
            )
        )
        week += timedelta(days=7)
    return tuple(bars)


# The thresholds of DORA's Accelerate State of DevOps Report 2023, its software delivery
# performance clusters (a summary of the report's table:
# https://octopus.com/blog/software-delivery-performance-clusters-2023; that report renamed time
# to restore "failed deployment recovery time": https://gitlab.com/gitlab-org/gitlab/-/issues/428595).
# Elite: on demand (several deployments a day), lead time under a day, 5% of changes failing,
# restored within an hour. High: between once a day and once a week, a day to a week, 10%,
# under a day. Medium: between once a week and once a month, a week to a month, 15%, a day to a
# week. Low: slower than that, 64%, a month to six months. A value between two clusters'
# figures takes the better band when it is at most the better one's figure.
def bands(
    frequency_per_week: float,
    lead_time_s: float | None,
    change_failure_rate: float | None,
    restore_s: float | None,
) -> dict[str, str]:
    """The band of each key that has a value (deployment frequency always has one: none is
    low)."""
    found: dict[str, str] = {
        "deployment_frequency": ELITE
        if frequency_per_week > 7
        else HIGH
        if frequency_per_week >= 1
        else MEDIUM
        if frequency_per_week >= 7 / 30
        else LOW
    }
    if lead_time_s is not None:
        found["lead_time"] = _by_limits(lead_time_s, (_DAY, _WEEK, _MONTH))
    if change_failure_rate is not None:
        found["change_failure_rate"] = _by_limits(change_failure_rate, (0.05, 0.10, 0.15))
    if restore_s is not None:
        found["time_to_restore"] = _by_limits(restore_s, (_HOUR, _DAY, _WEEK))
    return found


def _by_limits(value: float, limits: tuple[float, float, float]) -> str:
    """Elite up to the first limit (lead time and restore: under it), then high, medium, low."""
    for band, limit in zip((ELITE, HIGH, MEDIUM), limits, strict=True):
        if value <= limit:
            return band
    return LOW


def parse_window(text: str) -> timedelta:
    """``30d``, ``12w``, ``6m`` (30-day months), ``90`` (days) → a timedelta; ValueError with
    a sentence a person can act on."""
    raw = text.strip().lower()
    units = {"d": 1, "w": 7, "m": 30, "y": 365}
    unit = raw[-1:] if raw[-1:] in units else "d"
    number = raw[:-1] if raw[-1:] in units else raw
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(
            f"`{text}` is not a window: give a number of days, weeks or months, e.g. 30d, 12w, 6m"
        )
    window = timedelta(days=int(number) * units[unit])
    if window > MAX_WINDOW:
        raise ValueError(
            f"`{text}` is longer than the longest window stats reads "
            f"({MAX_WINDOW.days} days): the history is kept that long"
        )
    return window


def parse_since(text: str, now: datetime) -> datetime:
    """Where a window starts: a date (``2026-01-01``, midnight UTC) or a length back from
    ``now`` (``30d``: parse_window); ValueError with a sentence a person can act on."""
    raw = text.strip()
    if len(raw) == 10 and raw[4] == "-" and raw[7] == "-":
        try:
            since = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"`{text}` is not a date (YYYY-MM-DD)") from None
        if since >= now:
            raise ValueError(f"`{text}` is not in the past")
        return since
    return now - parse_window(raw)


# -- words, for every door ------------------------------------------------------------------


def span_text(seconds: float | None) -> str:
    """``45 min``, ``5.2 h``, ``3.1 days``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 90 * 60:
        return f"{max(0, round(seconds / 60))} min"
    if seconds < 48 * _HOUR:
        return f"{seconds / _HOUR:.1f} h"
    return f"{seconds / _DAY:.1f} days"


def frequency_text(per_week: float) -> str:
    """``2.5 a week``; ``1.3 a day`` from a week's seven."""
    if per_week >= 7:
        return f"{per_week / 7:.1f} a day"
    return f"{per_week:.1f} a week"


def rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def as_json(keys: FourKeys) -> dict[str, object]:
    """The four keys as JSON-ready values (times ISO 8601, durations in seconds)."""
    return {
        "target": keys.target,
        "since": keys.since.isoformat(),
        "until": keys.until.isoformat(),
        "deployments": keys.deployments,
        "completed": keys.completed,
        "rolling_out": keys.rolling_out,
        "frequency_per_week": round(keys.frequency_per_week, 3),
        "lead_time_median_s": keys.lead_time_median_s,
        "lead_time_p90_s": keys.lead_time_p90_s,
        "lead_time_source": keys.lead_time_source,
        "lead_time_samples": keys.lead_times,
        "changes": keys.changes,
        "failed_changes": keys.failed_changes,
        "change_failure_rate": keys.change_failure_rate,
        "time_to_restore_median_s": keys.time_to_restore_median_s,
        "restores": keys.restores,
        "bands": keys.bands,
        "bands_report": keys.report,
        "weeks": [
            {
                "week_start": w.week_start.isoformat(),
                "completed": w.completed,
                "failed": w.failed,
                "lead_time_median_s": w.lead_time_median_s,
            }
            for w in keys.weeks
        ],
    }
