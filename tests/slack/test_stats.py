"""``/deploy stats [TARGET] [30d]`` through the Slack emulator: the four keys to the asker, the
chart shared in the channel with files.uploadV2 (a PNG that opens), bad windows refused, and a
refused upload said to the person."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.history import seed
from bot.local.slack_emulator import SlackEmulator
from bot.slack.commands import Words, parse
from tests.conftest import ALICE, BOB, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import AWS_WRITES


def deployment(n: int, days_ago: float, outcome: Outcome, kind: str = "deploy") -> DeploymentRecord:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    return DeploymentRecord(
        id=f"d-{n}",
        service="hello-world-ecr-ecs-fargate",
        kind=kind,
        tag=f"v4.{n}.0-ecr-ecs-fargate",
        image="",
        task_definition="",
        previous_task_definition="",
        previous_tag=f"v4.{n - 1}.0-ecr-ecs-fargate",
        ecs_deployment_id="",
        who=ALICE,
        who_display="alice",
        source="slack",
        reason="",
        started_at=at,
        finished_at=at + timedelta(minutes=8),
        outcome=outcome,
    )


# Eight changes over the last four weeks, two of them failed; a 90-day-old one outside.
HISTORY = [
    deployment(1, 90, Outcome.COMPLETED),
    deployment(2, 26, Outcome.COMPLETED),
    deployment(3, 22, Outcome.FAILED),
    deployment(4, 21, Outcome.COMPLETED),
    deployment(5, 15, Outcome.COMPLETED),
    deployment(6, 12, Outcome.ROLLED_BACK),
    deployment(7, 11, Outcome.COMPLETED),
    deployment(8, 5, Outcome.COMPLETED),
    deployment(9, 2, Outcome.COMPLETED),
]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("stats", Words("stats")),
        ("stats staging", Words("stats", target="staging")),
        ("stats 90d", Words("stats", window="90d")),
        ("stats staging 12w", Words("stats", target="staging", window="12w")),
        ("stats 12w staging", Words("stats", target="staging", window="12w")),
        ("STATS 7d", Words("stats", window="7d")),
        ("stats 7d 30d", Words("usage_stats")),
        ("stats staging production", Words("usage_stats")),
        ("stats for staging last 30d", Words("usage_stats")),
    ],
)
def test_the_stats_words_take_a_target_and_a_window_in_either_order(
    text: str, words: Words
) -> None:
    assert parse(text) == words


def test_deploy_stats_answers_the_numbers_and_shares_a_chart_that_opens(
    stack: LocalStack, aws: MotoServer, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    engine = Engine(stack.settings)
    seed(engine.ledger, HISTORY)
    engine.close()
    bot = start_bot("http")
    aws.requests.clear()

    assert emulator.slash_command(
        "/deploy", "stats", user=ALICE, channel=DEPLOYS, url=bot.events_url
    ).ok
    answer = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="the numbers")[0]
    text = answer.all_text
    # Six completed in 30 days: 1.4 a week; two of eight changes failed.
    assert "Four keys of production" in text, text
    assert "1.4 a week (6 completed)" in text, text
    assert "25% (2 of 8 changes)" in text, text
    assert "last 30 days" in text
    assert any(b.get("type") == "section" and b.get("fields") for b in answer.blocks)

    shared = emulator.wait_for(
        lambda: [m for m in emulator.messages(DEPLOYS) if m.files], what="the chart's message"
    )[0]
    assert f"<@{ALICE}> asked for the deployments per week of *production*" in shared.text
    (file,) = emulator.files()
    assert file.completed and file.channels == (DEPLOYS,)
    assert shared.files[0]["id"] == file.id and shared.files[0]["mimetype"] == "image/png"
    image = Image.open(io.BytesIO(file.data))
    image.load()  # decodes every byte: a truncated or corrupt PNG raises here
    assert image.format == "PNG" and image.size == (900, 450)
    assert "6 completed" not in (file.alt_txt or "") and "failed" in (file.alt_txt or "")
    assert [c.method for c in emulator.calls if c.method.startswith(("files.", "upload"))] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    # A read: one Query of the history by time range. The only writes are the briefs the
    # first stats keeps on the eight settled records it read (UpdateItem: what the next
    # stats reads instead of the whole records, bot/deploy/ledger.py); nothing else.
    assert aws.requests.count("dynamodb", "Scan") == 0
    assert aws.requests.count("dynamodb", "Query") >= 1
    assert aws.requests.count("dynamodb", "UpdateItem") == 8
    assert all(
        aws.requests.count(service, op) == 0
        for service, op in AWS_WRITES
        if (service, op) != ("dynamodb", "UpdateItem")
    )

    # A window that is none, and one too long: refused, saying how, nothing uploaded.
    emulator.clear()
    emulator.slash_command("/deploy", "stats 30x", user=BOB, channel=DEPLOYS, url=bot.events_url)
    emulator.slash_command("/deploy", "stats 2y", user=BOB, channel=DEPLOYS, url=bot.events_url)
    refusals = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=BOB)) and len(e) == 2 and e, what="two refusals"
    )
    said = sorted(r.all_text for r in refusals)
    assert "`2y` is longer than the longest window stats reads (365 days)" in said[0], said
    assert "`30x` is not a window: give a number of days, weeks or months" in said[1], said
    assert emulator.files() == []
    # The last 7 days, the window typed before the target's name.
    emulator.slash_command(
        "/deploy", "stats 7d production", user=BOB, channel=DEPLOYS, url=bot.events_url
    )
    week = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=BOB) if "Four keys" in e.all_text), None),
        what="the week's numbers",
    )
    assert "(2 completed)" in week.all_text and "last 7 days" in week.all_text
    emulator.wait_for(
        lambda: [m for m in emulator.messages(DEPLOYS) if m.files], what="the week's chart"
    )
    assert emulator.calls_of("files.completeUploadExternal", ok=False) == []

    # Slack refuses the upload (the app installed before files:write): the person is told
    # what to do; the numbers still came.
    emulator.clear()
    emulator.fail("files.getUploadURLExternal", status=200, error="missing_scope")
    emulator.slash_command("/deploy", "stats", user=BOB, channel=DEPLOYS, url=bot.events_url)
    said_now = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=BOB)) and len(e) == 2 and e, what="two answers"
    )
    assert "Four keys of production" in said_now[0].all_text, bot.output()[-3000:]
    assert "The chart was not shared: the app lacks the `files:write` scope" in said_now[1].all_text
    assert [m for m in emulator.messages(DEPLOYS) if m.files] == []

    # The upload host answers 500 to every try (slack_sdk retries 5xx): the person is told,
    # nothing is shared.
    emulator.clear()
    emulator.fail("upload", status=500, times=None)
    emulator.slash_command("/deploy", "stats", user=BOB, channel=DEPLOYS, url=bot.events_url)
    failed = emulator.wait_for(
        lambda: (e := emulator.ephemerals(user=BOB)) and len(e) == 2 and e, what="two answers"
    )
    assert "The chart was not shared: the upload to Slack failed; try again." in failed[1].text
    assert emulator.calls_of("files.completeUploadExternal") == []
    assert [m for m in emulator.messages(DEPLOYS) if m.files] == []
    assert "Traceback" not in bot.output()
