"""What the Slack-side tests read back: the running tag in moto, the bot's messages."""

from __future__ import annotations

import boto3

from bot.deploy.reads import TAG_KEY, split_image
from bot.local.aws import MotoServer
from bot.local.slack_emulator import Message, SlackEmulator
from bot.settings import Settings
from tests.conftest import DEPLOYS

AWS_WRITES = (
    ("ecs", "RegisterTaskDefinition"),
    ("ecs", "UpdateService"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("dynamodb", "DeleteItem"),
)


def running_release(settings: Settings) -> tuple[str, str]:
    """(tag, digest) the service's current task definition runs, read from moto: the digest
    the image is pinned to (or "") and the tag deploybot names it by (its revision's
    ``deploybot:tag``), else the image's own tag."""
    ecs = boto3.client("ecs", endpoint_url=settings.aws_endpoint_url, region_name="eu-west-1")
    svc = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
    td = ecs.describe_task_definition(
        taskDefinition=svc["services"][0]["taskDefinition"], include=["TAGS"]
    )
    _, tag, digest = split_image(td["taskDefinition"]["containerDefinitions"][0]["image"])
    named = {t["key"]: t["value"] for t in td.get("tags", [])}.get(TAG_KEY)
    return named or tag, digest


def running_tag(settings: Settings) -> str:
    """The image tag the service's current task definition runs, read from moto."""
    return running_release(settings)[0]


def bot_messages(emulator: SlackEmulator, channel: str = DEPLOYS) -> list[Message]:
    return [m for m in emulator.messages(channel) if m.bot_id]


def final_message(emulator: SlackEmulator, words: str, timeout: float = 30) -> Message:
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if words in m.all_text), None),
        timeout=timeout,
        what=f"a bot message saying {words!r}",
    )


def no_aws_writes(aws: MotoServer) -> bool:
    return all(aws.requests.count(service, op) == 0 for service, op in AWS_WRITES)


def has_button(message: Message, action_id: str) -> bool:
    return any(b.get("action_id") == action_id for b in message.buttons)
