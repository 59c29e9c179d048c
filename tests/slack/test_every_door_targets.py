"""A terminal's deployment is shown in its target's own channel (issue 29, item 5), not in
SLACK_CHANNEL when the target does not answer there. tests/slack/test_every_door.py has the
rest: one replica posts it, once."""

from __future__ import annotations

import pytest

from bot import cli
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import DEPLOYS, FLEET_TOML, RANDOM, FleetStack
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages

V44 = "v4.4.0-ecr-ecs-fargate"
OPERATOR = "operator@laptop"


def test_a_terminal_deploy_is_shown_in_its_targets_own_channel(
    fleet_stack: FleetStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staging answers in #random only: the old bot showed a terminal's staging deploy in
    SLACK_CHANNEL (#deploys), a channel staging does not serve. Now in staging's own."""
    config = FLEET_TOML.replace(
        "[targets.production]", f'channels = ["{RANDOM}"]\n\n[targets.production]', 1
    )
    monkeypatch.delenv("DEPLOYBOT_CONFIG", raising=False)
    monkeypatch.setenv("DEPLOYBOT_CONFIG_TEXT", config)
    monkeypatch.setenv("DEPLOYBOT_USER", OPERATOR)
    start_bot("http")
    assert cli.main(["--target", "staging", "deploy", "v4.4.0", "--yes", "--no-wait"]) == 0
    shown = emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator, RANDOM) if "✅" in m.all_text), None),
        timeout=60,
        what="staging's deploy, completed, in #random",
    )
    assert f"Deployed {V44} to staging" in shown.all_text and OPERATOR in shown.all_text
    assert bot_messages(emulator, DEPLOYS) == []
