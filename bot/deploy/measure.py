"""Measuring a target: DORA's four keys over a window (bot/deploy/stats.py computes them), from
the history's briefs, GitHub asked once ever per deployment and the answer cached on its
record."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from bot.deploy.parts import Parts, Stage
from bot.deploy.reads import Reads
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.deploy.stats import FOLLOW_UP_WINDOW, MAX_WINDOW, FourKeys, four_keys
from bot.errors import DeployError, DeployRefused
from bot.github import Unavailable

log = logging.getLogger("deploybot.engine")

# How many deployments' commits one call asks GitHub for at most (the newest first; the
# others' on later calls), and how many at once.
STATS_GITHUB_ASKS = 100
STATS_GITHUB_THREADS = 4


class Measure(Stage):
    """The four keys of one target."""

    def __init__(self, parts: Parts, reads: Reads) -> None:
        super().__init__(parts)
        self.reads = reads

    def stats(
        self, since: datetime, until: datetime, *, github_asks: int = STATS_GITHUB_ASKS
    ) -> FourKeys:
        """DORA's four keys of this target over [since, until) (bot/deploy/stats.py): one
        Query of its history by time range (and FOLLOW_UP_WINDOW past it, to see what followed
        the last deployments) reading each record's brief (``Ledger.stats_history``), the
        commits of each completed deploy asked of GitHub once ever and cached on its record
        (the image's push time, read from ECR once and cached, where GitHub cannot tell), and
        a brief written on each settled record read whole. Open deployments are not
        reconciled: they count when settled.

        GitHub is asked about ``github_asks`` deployments at most in one call, the newest
        first, STATS_GITHUB_THREADS at a time, so a first ``stats`` over a long history answers
        in seconds; the others' push times stand in (said so) until a later call asks."""
        if until - since > MAX_WINDOW:
            raise DeployRefused(
                f"A window of {(until - since).days} days is longer than stats reads "
                f"({MAX_WINDOW.days} days): the history is kept that long."
            )
        records, whole = self.ledger.stats_history(since, until + FOLLOW_UP_WINDOW)
        shipped = self._ask_github([r for r in records if _ships(r, since, until)], github_asks)
        pushed: dict[str, datetime] | None = None
        out: list[DeploymentRecord] = []
        for rec in records:
            read = rec
            if _ships(rec, since, until):
                rec = self._lead_inputs(rec, shipped)
                if rec.shipped is None and rec.image_pushed_at is None and rec.digest:
                    if pushed is None:
                        pushed = self._pushed_times()
                    if rec.digest in pushed:
                        rec = self.ledger.cache_lead_inputs(rec, image_pushed_at=pushed[rec.digest])
            if rec is read and rec.id in whole:  # nothing cached on it yet: its brief
                self.ledger.remember_brief(rec)
            out.append(rec)
        return four_keys(out, target=self.target.name, since=since, until=until)

    def _ask_github(
        self, deploys: list[DeploymentRecord], most: int
    ) -> dict[str, tuple[tuple[str, datetime], ...]]:
        """The commits GitHub says each of (at most ``most``, the newest) ``deploys`` not yet
        asked shipped, by deployment id; those GitHub could not answer are left out (asked
        again by a later ``stats``)."""
        if not self.github.has_token or most <= 0:
            return {}
        wanted = sorted(
            (
                r
                for r in deploys
                if r.shipped is None
                and r.commit
                and r.previous_commit
                and r.commit != r.previous_commit
            ),
            key=lambda r: r.started_at,
            reverse=True,
        )[:most]
        if not wanted:
            return {}
        with ThreadPoolExecutor(
            max_workers=min(STATS_GITHUB_THREADS, len(wanted)),
            thread_name_prefix="deploybot-stats",
        ) as pool:
            answers = list(
                pool.map(
                    lambda r: self.github.shipped(str(r.previous_commit), str(r.commit)), wanted
                )
            )
        found: dict[str, tuple[tuple[str, datetime], ...]] = {}
        for rec, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, Unavailable):
                log.info("lead time of %s: %s", rec.id, answer.reason, extra=rec.log_fields)
            else:
                found[rec.id] = answer
        return found

    def _lead_inputs(
        self, rec: DeploymentRecord, shipped: dict[str, tuple[tuple[str, datetime], ...]]
    ) -> DeploymentRecord:
        """``rec`` with the commits it shipped cached on it: none shipped when both images
        have the same commit; GitHub's answer (``shipped``) when it was asked and answered;
        else unchanged (no token, a commit unknown, GitHub unavailable or not asked yet)."""
        if rec.shipped is not None or not rec.commit or not rec.previous_commit:
            return rec
        if rec.commit == rec.previous_commit:
            return self.ledger.cache_lead_inputs(rec, shipped=())
        if rec.id in shipped:
            return self.ledger.cache_lead_inputs(rec, shipped=shipped[rec.id])
        return rec

    def _pushed_times(self) -> dict[str, datetime]:
        """Each image's push time to ECR, by digest (one paginated listing)."""
        try:
            images = self.reads.ecr_images()
        except DeployError as exc:  # lead time is unknown without it; the rest stands
            log.warning("could not read the images' push times: %s", exc)
            return {}
        return {
            str(i["imageDigest"]): i["imagePushedAt"].astimezone(UTC)
            for i in images
            if i.get("imageDigest") and isinstance(i.get("imagePushedAt"), datetime)
        }


def _ships(rec: DeploymentRecord, since: datetime, until: datetime) -> bool:
    """A completed deploy started in [since, until): one whose commits lead time counts."""
    return (
        rec.kind == "deploy"
        and rec.outcome is Outcome.COMPLETED
        and since <= rec.started_at < until
    )
