"""Answers to slash commands that arrive together: shared reads, never older than the command.

The bot talks to moto through the fault proxy, which holds one answer back while the test
changes things at the wire; every AWS call is counted at moto.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest

from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, BOB, CAROL, DEPLOYS, LocalStack
from tests.helpers import wait_until
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages, no_aws_writes

HELD = 2.0  # seconds an answer is held back: under botocore's 5 s read timeout


@pytest.fixture
def proxy(aws: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(aws.endpoint_url) as p:
        yield p


def test_a_status_answer_shows_a_deploy_that_started_before_the_command_arrived(
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """A status read in flight when a command arrives started before it: the command gets a
    read of its own, which sees what changed meanwhile."""
    bot = start_bot("http", AWS_ENDPOINT_URL=proxy.endpoint_url)
    # The first status read's DescribeServices: moto answers it at once (no deploy yet), and
    # the proxy holds that answer back, so the read is still in flight when the deploy starts.
    held = proxy.delay_answer("ecs", "DescribeServices", seconds=HELD)
    emulator.slash_command("/deploy-status", "", user=CAROL, channel=DEPLOYS, url=bot.events_url)
    wait_until(lambda: held.forwarded >= 1, 30, "moto's answer to the first status read")
    # A deploy starts at the wire, outside deploybot (the console's "Update service").
    settings = stack.settings
    ecs = boto3.client("ecs", endpoint_url=aws.endpoint_url, region_name=settings.aws_region)
    ecs.update_service(
        cluster=settings.ecs_cluster, service=settings.ecs_service, forceNewDeployment=True
    )
    emulator.slash_command("/deploy-status", "", user=BOB, channel=DEPLOYS, url=bot.events_url)
    before = emulator.wait_for(lambda: emulator.ephemerals(user=CAROL), what="status 1")[0]
    after = emulator.wait_for(lambda: emulator.ephemerals(user=BOB), what="status 2")[0]
    assert "*Rollout*\nnone in progress" in before.all_text  # read before the deploy
    assert "*Rollout*\nIN_PROGRESS" in after.all_text, after.all_text
    assert proxy.count("ecs", "DescribeServices") == 2  # one read each


def test_a_refused_tag_costs_one_shared_image_listing(
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    """/deploy of a tag ECR does not have is refused from one DescribeImages listing (which
    also names the recent tags); commands that arrive while a listing is in flight share the
    next one, never the one that started before them."""
    bot = start_bot("http", AWS_ENDPOINT_URL=proxy.endpoint_url)
    held = proxy.delay_answer("ecr", "DescribeImages", seconds=HELD)
    aws.requests.clear()
    emulator.slash_command("/deploy", "v9.9.9", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    wait_until(lambda: held.forwarded >= 1, 30, "moto's answer to the first listing")
    others = [
        threading.Thread(
            target=emulator.slash_command,
            args=("/deploy", "v9.9.9"),
            kwargs={"user": BOB, "channel": DEPLOYS, "url": bot.events_url},
        )
        for _ in range(10)
    ]
    for t in others:
        t.start()
    for t in others:
        t.join()
    answers = emulator.wait_for(
        lambda: (e := emulator.ephemerals()) and len(e) == 11 and e, what="eleven refusals"
    )
    assert all("No image tagged v9.9.9-ecr-ecs-fargate" in a.text for a in answers)
    assert all("v4.5.0-ecr-ecs-fargate" in a.text for a in answers)  # the recent tags
    assert aws.requests.count("ecr") == aws.requests.count("ecr", "DescribeImages") == 2
    assert aws.requests.count("ecs") == 0
    assert no_aws_writes(aws)
    assert bot_messages(emulator) == []
