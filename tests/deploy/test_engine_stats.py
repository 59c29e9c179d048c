"""Engine.stats against moto and the GitHub emulator: the history read by target and time range
(a Query, never a Scan), GitHub asked once per deployment ever (commit times cached on the
record), the image's push time standing in without a token."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome, Snapshot
from bot.deploy.stats import SOURCE_COMMITS, SOURCE_IMAGE_PUSH
from bot.errors import DeployRefused
from bot.local.aws import MotoServer
from bot.local.history import seed
from bot.local.stack import fake_sha
from tests.conftest import GitHub, LocalStack

# The emulator's seeded commits are a minute apart from 2024-01-01 00:00 UTC: v4.3.0's are
# minutes 0-1, v4.4.0's 2-4, v4.5.0's 5-16 (tests/conftest.py's GITHUB_HISTORY).
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=28)
MIN = 60.0


def deployment(n: int, at: datetime, base: str, head: str, outcome: Outcome) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"d-{n}",
        service="hello-world-ecr-ecs-fargate",
        kind="deploy",
        tag=f"{head}-ecr-ecs-fargate",
        image="",
        task_definition="",
        previous_task_definition="",
        previous_tag=f"{base}-ecr-ecs-fargate",
        ecs_deployment_id="",
        who="alice",
        who_display="Alice",
        source="cli",
        reason="",
        started_at=at,
        finished_at=at + timedelta(minutes=10),
        outcome=outcome,
        commit=fake_sha(head)[:7],
        previous_commit=fake_sha(base)[:7],
    )


HISTORY = [
    deployment(1, T0 + timedelta(hours=1), "v4.3.0", "v4.4.0", Outcome.COMPLETED),
    deployment(2, T0 + timedelta(days=1), "v4.4.0", "v4.5.0", Outcome.ROLLED_BACK),
    deployment(3, T0 + timedelta(days=2), "v4.4.0", "v4.5.0", Outcome.COMPLETED),
    deployment(4, T0 + timedelta(days=40), "v4.4.0", "v4.5.0", Outcome.COMPLETED),  # outside
]


@pytest.fixture
def engine(stack: LocalStack, github: GitHub) -> Iterator[Engine]:
    eng = Engine(github.settings(stack.settings))
    seed(eng.ledger, HISTORY)
    yield eng
    eng.close()


def dynamodb_calls(aws: MotoServer) -> Counter[str]:
    return Counter(r.operation for r in aws.requests if r.service == "dynamodb")


def test_stats_read_the_window_by_query_and_ask_github_once_per_deployment_ever(
    engine: Engine, aws: MotoServer, github: GitHub
) -> None:
    aws.requests.clear()
    github.emulator.clear()
    keys = engine.stats(SINCE, UNTIL)

    assert (keys.target, keys.deployments, keys.completed) == ("production", 3, 2)
    assert (keys.changes, keys.failed_changes) == (3, 1)
    assert keys.lead_time_source == SOURCE_COMMITS
    # d-1 shipped v4.4.0's three commits (minutes 2-4) at 01:10; d-3 v4.5.0's twelve (minutes
    # 5-16) at day 2 00:10 (d-2 failed: it shipped nothing).
    assert keys.lead_times == 15
    # Sorted: 66-68 min, then 2874-2885 min (d-3 ends at minute 2890): the 8th is 2878.
    assert keys.lead_time_median_s == pytest.approx(2878 * MIN)
    assert keys.time_to_restore_median_s == pytest.approx(24 * 60 * MIN)
    reads = dynamodb_calls(aws)
    # One Query of briefs; the records without one (all, the first time) read whole in one
    # BatchGetItem; each settled one then gets its brief (and its commits) in one UpdateItem.
    assert reads == Counter({"Query": 1, "BatchGetItem": 1, "UpdateItem": 3}), reads
    assert len(github.emulator.calls_of("compare")) == 2  # d-1 and d-3; d-2 did not complete

    aws.requests.clear()
    github.emulator.clear()
    again = engine.stats(SINCE, UNTIL)
    assert again == keys
    assert github.emulator.calls_of("compare") == []  # the commit times are on the records
    assert dynamodb_calls(aws) == Counter({"Query": 1})  # and nothing more is written


def test_github_unavailable_is_asked_again_next_time_and_the_push_time_stands_in(
    engine: Engine, aws: MotoServer, github: GitHub
) -> None:
    github.emulator.fail("compare", 503, times=None)
    keys = engine.stats(SINCE, UNTIL)
    # No commits, and these records name no digest ECR has: lead time is unknown, said so.
    assert (keys.lead_times, keys.lead_time_source) == (0, SOURCE_IMAGE_PUSH)
    assert keys.change_failure_rate == pytest.approx(1 / 3)  # the rest stands
    github.emulator.clear_faults()
    github.emulator.clear()
    assert engine.stats(SINCE, UNTIL).lead_time_source == SOURCE_COMMITS
    assert len(github.emulator.calls_of("compare")) == 2  # nothing was cached from the 503s


def test_without_a_token_the_image_push_time_stands_in_read_from_ecr_once(
    stack: LocalStack, aws: MotoServer
) -> None:
    eng = Engine(stack.settings)
    try:
        digests = {
            i["imageTags"][0]: i["imageDigest"] for i in eng.ecr_images() if i.get("imageTags")
        }
        seed(
            eng.ledger,
            [
                DeploymentRecord(**{**vars(rec), "digest": digests.get(rec.tag, "")})
                for rec in HISTORY
            ],
        )
        aws.requests.clear()
        keys = eng.stats(SINCE, UNTIL)
        assert keys.lead_time_source == SOURCE_IMAGE_PUSH
        assert keys.lead_times == 2  # one per image
        assert aws.requests.count("ecr", "DescribeImages") >= 1
        aws.requests.clear()
        assert eng.stats(SINCE, UNTIL) == keys
        assert aws.requests.count("ecr") == 0  # the push times are on the records
    finally:
        eng.close()


def test_a_window_longer_than_the_history_is_kept_is_refused(engine: Engine) -> None:
    with pytest.raises(DeployRefused, match="365 days"):
        engine.stats(SINCE, SINCE + timedelta(days=400))


def test_a_deployment_open_at_one_stats_counts_once_it_settles(
    engine: Engine, aws: MotoServer
) -> None:
    """An open record gets no brief: the next stats reads it whole again and sees its end."""
    rolling = deployment(5, T0 + timedelta(days=10), "v4.4.0", "v4.5.0", Outcome.COMPLETED)
    seed(engine.ledger, [replace(rolling, outcome=None, finished_at=None)])
    first = engine.stats(SINCE, UNTIL)
    assert (first.completed, first.rolling_out) == (2, 1)

    end = T0 + timedelta(days=10, minutes=10)
    open_record = engine.ledger.get_record(rolling.sort_key)
    assert open_record is not None
    closed = engine.ledger.close(  # as the follower closes it: an UpdateItem
        open_record,
        Snapshot(rolling.id, "ecs-svc/1", end, 600.0, "COMPLETED", "", 1, 0, 1, 0,
                 outcome=Outcome.COMPLETED, ended_at=end),
    )  # fmt: skip
    assert closed is not None
    aws.requests.clear()
    then = engine.stats(SINCE, UNTIL)
    assert (then.completed, then.rolling_out) == (3, 0)
    assert dynamodb_calls(aws)["BatchGetItem"] == 1  # only it was read whole


def test_github_is_asked_about_the_newest_first_a_bounded_number_a_call(
    engine: Engine, github: GitHub
) -> None:
    """A first stats over a long history answers in seconds: at most ``github_asks``
    deployments asked a call, the newest first; the next calls ask about the rest, once."""
    more = [
        deployment(10 + i, T0 + timedelta(days=5 + i), "v4.4.0", "v4.5.0", Outcome.COMPLETED)
        for i in range(3)
    ]
    seed(engine.ledger, more)  # five completed deploys in the window with commits to ask
    github.emulator.clear()
    first = engine.stats(SINCE, UNTIL, github_asks=2)
    asked = [c.path for c in github.emulator.calls_of("compare")]
    assert len(asked) == 2
    assert first.lead_time_source == SOURCE_COMMITS  # the other three: no push time known
    assert first.lead_times == 12  # d-11 shipped v4.5.0's twelve commits; d-12 the same again
    github.emulator.clear()
    engine.stats(SINCE, UNTIL, github_asks=2)
    assert len(github.emulator.calls_of("compare")) == 2
    github.emulator.clear()
    last = engine.stats(SINCE, UNTIL, github_asks=2)
    assert len(github.emulator.calls_of("compare")) == 1
    github.emulator.clear()
    assert engine.stats(SINCE, UNTIL, github_asks=2) == last
    assert github.emulator.calls_of("compare") == []
    assert last.lead_times == 15  # every commit once, at its first completed deployment
