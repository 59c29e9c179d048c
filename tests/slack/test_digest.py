"""The weekly digest through two real bot replicas whose clocks (libfaketime) reach a target's
digest moment while they run: one of them posts last week's four keys and chart, once; a third
replica started later posts nothing more; targets without a digest get none."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.digest import parse_schedule
from bot.local.history import seed
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, DEPLOYS, FLEET_TOML, FleetStack
from tests.helpers import wait_until
from tests.slack.conftest import BotFactory

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
SCHEDULE = "Mon 09:00 Europe/Madrid"
LEAD = 25.0  # seconds of the bots' clocks between their start and the digest's moment


def deployment(n: int, at: datetime, outcome: Outcome) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"d-{n}",
        service="hello-world-ecr-ecs-fargate",
        kind="deploy",
        tag=f"v4.{n}.0-ecr-ecs-fargate",
        image="",
        task_definition="",
        previous_task_definition="",
        previous_tag="",
        ecs_deployment_id="",
        who=ALICE,
        who_display="alice",
        source="slack",
        reason="",
        started_at=at,
        finished_at=at + timedelta(minutes=6),
        outcome=outcome,
    )


def digests(emulator: SlackEmulator) -> list[str]:
    return [m.text for m in emulator.messages(DEPLOYS) if "Weekly digest" in m.all_text]


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed")
def test_two_replicas_post_a_targets_digest_once_and_others_none(
    fleet_stack: FleetStack,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    due = parse_schedule(SCHEDULE).next_due(now + timedelta(hours=1))
    # Last week: four completed, one rolled back; the week before: one more, not counted.
    engine = Engine(fleet_stack.settings)
    seed(
        engine.ledger,
        [
            deployment(1, due - timedelta(days=9), Outcome.COMPLETED),
            deployment(2, due - timedelta(days=6), Outcome.COMPLETED),
            deployment(3, due - timedelta(days=5), Outcome.ROLLED_BACK),
            deployment(4, due - timedelta(days=4), Outcome.COMPLETED),
            deployment(5, due - timedelta(days=2), Outcome.COMPLETED),
            deployment(6, due - timedelta(hours=3), Outcome.COMPLETED),
        ],
    )
    engine.close()
    config = tmp_path / "deploybot.toml"
    config.write_text(
        FLEET_TOML.replace('after = "staging"\n', f'after = "staging"\ndigest = "{SCHEDULE}"\n')
    )
    # The bots' wall clock reads LEAD seconds before the digest's moment when they start; their
    # monotonic clock (sleeps, timeouts) is left alone.
    offset = (due - timedelta(seconds=LEAD) - datetime.now(UTC)).total_seconds()
    clock = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": f"{offset:+.0f}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
        "DEPLOYBOT_CONFIG": str(config),
    }
    first, second = start_bot("http", **clock), start_bot("http", **clock)
    assert digests(emulator) == []  # not before its moment

    emulator.wait_for(lambda: digests(emulator), timeout=LEAD + 30, what="the weekly digest")
    (said,) = digests(emulator)
    assert said.startswith("Weekly digest of production: the four keys of last week"), said
    text = next(m for m in emulator.messages(DEPLOYS) if "Weekly digest" in m.all_text).all_text
    assert "4 completed" in text and "20% (1 of 5 changes)" in text, text
    chart = emulator.wait_for(
        lambda: [m for m in emulator.messages(DEPLOYS) if m.files], what="the digest's chart"
    )
    assert len(chart) == 1 and "Last week's deployments of *production*" in chart[0].text
    (file,) = emulator.files()
    Image.open(io.BytesIO(file.data)).load()  # a PNG that opens
    # The replica that did not post saw the claim taken; neither posts it again.
    wait_until(
        lambda: (
            sum("digest of production posted" in b.output() for b in (first, second)) == 1
            and sum("or another replica has it" in b.output() for b in (first, second)) == 1
        ),
        20,
        "one replica posting, the other seeing it taken",
    )
    third = start_bot("http", **clock)  # within the catch-up: it looks, and finds it posted
    wait_until(
        lambda: "or another replica has it" in third.output(), 20, "the third replica's look"
    )
    assert len(digests(emulator)) == 1
    assert len([m for m in emulator.messages(DEPLOYS) if m.files]) == 1
    assert all("staging" not in t and "billing" not in t for t in digests(emulator))
    assert all("Traceback" not in b.output() for b in (first, second, third))
