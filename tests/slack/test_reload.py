"""The configuration read again without a restart (issue 30 item 3): DEPLOYBOT_CONFIG's file or
the SSM parameter DEPLOYBOT_CONFIG_PARAMETER names, every CONFIG_CHECK_SECONDS and on
``/deploy reload``; a broken or restart-needing text refused, the old rules kept, the channel
told once. Real ``deploybot serve`` processes against the Slack emulator and moto."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, CAROL, DEPLOYS, LocalStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages

TABLE = """
[targets.production]
cluster = "hello-world-ecr-ecs-fargate"
service = "{service}"
repository = "hello-world-ecr-ecs-fargate"
deployers = {deployers}
{extra}
"""


def config(
    deployers: list[str], extra: str = "", service: str = "hello-world-ecr-ecs-fargate"
) -> str:
    quoted = "[" + ", ".join(f'"{d}"' for d in deployers) + "]"
    return TABLE.format(deployers=quoted, extra=extra, service=service)


def said(emulator: SlackEmulator, words: str) -> list[str]:
    return [m.text for m in bot_messages(emulator) if words in m.text]


def answer_to(emulator: SlackEmulator, user: str, count: int) -> str:
    return emulator.wait_for(
        lambda: (emulator.ephemerals(user=user)[count - 1 :] or [None])[0],
        timeout=20,
        what=f"answer {count} to {user}",
    ).text


@pytest.fixture
def file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "deploybot.toml"
    path.write_text(config([ALICE]), encoding="utf-8")
    for name in ("DEPLOYBOT_CONFIG_TEXT", "DEPLOY_TARGET", "DEPLOYBOT_CONFIG_PARAMETER"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_the_file_is_read_again_a_broken_one_refused_once_and_the_old_kept(
    file: Path,
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    bot = start_bot("http", DEPLOYBOT_CONFIG=str(file), CONFIG_CHECK_SECONDS="0.5")
    send = lambda user, text: emulator.slash_command(  # noqa: E731
        "/deploy", text, user=user, channel=DEPLOYS, url=bot.events_url
    )
    assert send(CAROL, "v4.4.0").ok
    assert "you may not deploy to production" in answer_to(emulator, CAROL, 1)

    # Carol added to the deployers: taken within a check, said once; Carol deploys.
    file.write_text(config([ALICE, CAROL]), encoding="utf-8")
    emulator.wait_for(lambda: said(emulator, "took its new configuration"), what="the news")
    assert send(CAROL, "v4.4.0").ok
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in bot_messages(emulator)),
        timeout=60,
        what="carol's deploy under the new rules",
    )

    # A broken file: refused, said once (however many checks), the old rules kept.
    file.write_text(config([ALICE], extra='windows = ["Mon-Thr 09:00-16:00 UTC"]'), "utf-8")
    emulator.wait_for(lambda: said(emulator, "refused its new configuration"), what="refusal")
    assert send(ALICE, "reload").ok  # a deployer asks: the reason, again, to them
    reason = answer_to(emulator, ALICE, 1)
    assert "refused the configuration" in reason and "no day 'Thr'" in reason, reason
    (refusal,) = said(emulator, "refused its new configuration")
    assert "targets.production.windows.0" in refusal and "no day 'Thr'" in refusal, refusal
    assert send(CAROL, "freeze production still a deployer").ok  # the old rules: Carol may
    emulator.wait_for(lambda: said(emulator, "froze"), what="carol's freeze")

    # A text a running bot cannot take (another service): refused, said why.
    file.write_text(config([ALICE], service="hello-world-billing"), encoding="utf-8")
    emulator.wait_for(lambda: said(emulator, "takes a restart"), what="the restart-needed refusal")
    assert "targets.production.service" in said(emulator, "takes a restart")[0]

    # /deploy reload: only a deployer.
    assert send(CAROL, "reload").ok
    assert "Only a deployer" not in answer_to(emulator, CAROL, 2)
    emulator.add_user("U0EVE", "eve")
    assert send("U0EVE", "reload").ok
    assert "Only a deployer of one of the targets" in answer_to(emulator, "U0EVE", 1)


def test_the_ssm_parameter_is_read_again_and_said_once_across_two_replicas(
    stack: LocalStack,
    aws: MotoServer,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "/hello-world-ecr-ecs-fargate-bot/deploybot.toml"
    ssm = boto3.client("ssm", endpoint_url=aws.endpoint_url, region_name=aws.region)
    ssm.put_parameter(Name=name, Value=config([ALICE]), Type="String")
    monkeypatch.delenv("DEPLOYBOT_CONFIG", raising=False)
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    env = dict(
        DEPLOYBOT_CONFIG_TEXT=config([ALICE]),  # what bot.yml passes at start
        DEPLOYBOT_CONFIG_PARAMETER=name,
        CONFIG_CHECK_SECONDS="0.5",
    )
    bots = [start_bot("http", **env) for _ in range(2)]
    emulator.request_urls = [b.events_url or "" for b in bots]
    ssm.put_parameter(Name=name, Value=config([ALICE, CAROL]), Type="String", Overwrite=True)
    emulator.wait_for(lambda: said(emulator, "took its new configuration"), what="the news")
    # Alice (a deployer before and after) asks each replica to read it at once (the emulator
    # alternates); then Carol, a deployer now, is one on both.
    for i in (1, 2):
        assert emulator.slash_command("/deploy", "reload", user=ALICE, channel=DEPLOYS).ok
        answer_to(emulator, ALICE, i)
    for i in (1, 2):
        assert emulator.slash_command("/deploy", "reload", user=CAROL, channel=DEPLOYS).ok
        assert "Only a deployer" not in answer_to(emulator, CAROL, i)
    (news,) = said(emulator, "took its new configuration")
    assert f"the SSM parameter {name}" in news
