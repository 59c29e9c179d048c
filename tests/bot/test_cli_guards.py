"""``deploybot freeze|unfreeze|abort`` and ``--break-glass`` against moto's server (and the
Slack emulator, where the break-glass is announced): in process (``bot.cli.main``), but for the
deploy an abort stops, a process of its own as a second operator's would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.deploy.engine import Engine
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import BOT_TOKEN, DEPLOYS, LocalStack
from tests.helpers import deploybot, wait_until
from tests.slack.helpers import bot_messages, running_tag


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return deploybot(*args, **{"DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "160", **env})


def status() -> dict[str, Any]:
    done = cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_freeze_refuses_deploys_until_unfreeze(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    frozen = cli("freeze", "incident 1234")
    assert frozen.returncode == 0, frozen.stderr
    assert "production is frozen" in frozen.stdout
    refused = cli("deploy", "v4.4.0")
    assert refused.returncode == 2
    assert "production is frozen by operator@laptop since" in refused.stderr
    assert "incident 1234" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("redeploy").returncode == 2
    assert cli("freeze", "again").returncode == 2
    assert status()["freeze"]["reason"] == "incident 1234"
    assert "frozen by operator@laptop" in cli("status").stdout
    lifted = cli("unfreeze")
    assert lifted.returncode == 0 and "no longer frozen" in lifted.stdout
    assert cli("unfreeze").returncode == 2
    assert cli("freeze", "   ").returncode == 2  # a freeze says why
    assert cli("deploy", "v4.4.0").returncode == 0
    assert running_tag(stack.settings) == "v4.4.0-ecr-ecs-fargate"


def test_abort_exits_1_for_the_deploy_and_0_for_the_abort(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    nothing = cli("abort")
    assert nothing.returncode == 2 and "Nothing is rolling out" in nothing.stderr
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.5.0-ecr-ecs-fargate")
    env = {**os.environ, "DEPLOYBOT_USER": "ann", "COLUMNS": "160"}
    deploying = subprocess.Popen(
        [sys.executable, "-m", "bot", "deploy", "v4.5.0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: status()["rollout"] is not None, 60, "the rollout to start")
        aborted = cli("abort", DEPLOYBOT_USER="ben")
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        assert "putting v4.3.0-ecr-ecs-fargate back" in aborted.stdout
        assert "✓ Aborted" in aborted.stdout
        out, err = deploying.communicate(timeout=120)
    finally:
        deploying.kill()
    assert deploying.returncode == 1, out + err
    assert "aborted" in out and "aborted by ben" in out
    assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
    last = status()["recent"][0]
    assert last["outcome"] == "ABORTED" and last["aborted_by"] == "ben"
    assert status()["lock"] is None


def _protected_config(tmp_path: Path, stack: LocalStack) -> str:
    s = stack.settings
    config = tmp_path / "deploybot.toml"
    config.write_text(
        f"""
[targets.production]
cluster = "{s.ecs_cluster}"
service = "{s.ecs_service}"
repository = "{s.ecr_repository}"
channels = ["{DEPLOYS}"]
approvals = 1
approvers = ["U0CARA"]
"""
    )
    return str(config)


def test_break_glass_deploys_a_protected_target_and_says_so_in_its_channel(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, tmp_path: Path
) -> None:
    """The terminal records the break-glass for the bot to announce (tests/slack/
    test_every_door.py): it posts nothing itself, even holding the bot's token."""
    env = {
        "DEPLOYBOT_CONFIG": _protected_config(tmp_path, stack),
        "SLACK_API_URL": emulator.api_url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
    }
    refused = cli("deploy", "v4.4.0", **env)
    assert refused.returncode == 2
    assert "production needs 1 approval from U0CARA" in refused.stderr
    assert "--break-glass" in refused.stderr
    assert cli("redeploy", **env).returncode == 2
    assert cli("deploy", "v4.4.0", "--break-glass", " ", **env).returncode == 2
    done = cli("deploy", "v4.4.0", "--break-glass", "site down <!channel>", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bypassed with --break-glass by operator@laptop" in done.stderr
    assert "The bot announces the break-glass in production's channel" in done.stdout
    assert bot_messages(emulator, DEPLOYS) == []
    engine = Engine(stack.settings)
    (news,) = engine.ledger.history_and_news(5)[1]
    engine.close()
    assert news.kind == "break-glass" and news.who == "operator@laptop"
    assert news.reason == "site down <!channel>" and "approval" in news.detail
    last = status()["recent"][0]
    assert last["break_glass"] == "site down <!channel>"
    assert last["bypassed"] and "approval" in last["bypassed"][0]


def test_make_freeze_unfreeze_abort_and_break_glass(
    stack: LocalStack, simulator: RolloutSimulator, tmp_path: Path
) -> None:
    from tests.bot.test_make_text import make

    marker = tmp_path / "x"
    assert make("freeze").returncode == 2  # a freeze says why
    reason = f"incident 7 $(touch {marker}) `touch {marker}`"
    frozen = make("freeze", f"REASON={reason}")
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    assert status()["freeze"]["reason"] == reason and not marker.exists()
    refused = make("deploy", "TAG=v4.4.0", f"BREAK_GLASS=now $(touch {marker})")
    assert refused.returncode == 2 and "is frozen" in refused.stderr  # break-glass is no unfreeze
    assert make("unfreeze").returncode == 0 and status()["freeze"] is None
    nothing = make("abort")
    assert nothing.returncode == 2 and "Nothing is rolling out" in nothing.stderr
    assert not marker.exists()


def test_the_cli_waits_behind_the_queue_unless_it_breaks_glass(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """A deploy queued in Slack goes first: the terminal's deploy is refused (exit 2) while
    it waits, and --break-glass goes ahead of it, on the record."""
    from bot.deploy.engine import Engine
    from bot.deploy.records import Requester, Via
    from bot.rules import Door

    engine = Engine(stack.settings)
    try:
        engine.enqueue(
            Requester("U0ANA", "slack", "ana"),
            tag="v4.4.0",
            via=Via(door=Door.BUTTON, channel=DEPLOYS),
        )
    finally:
        engine.close()
    refused = cli("deploy", "v4.5.0")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "1 deploy is queued for production; yours would be second" in refused.stderr
    assert "Deploy when free" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("redeploy").returncode == 2
    done = cli("deploy", "v4.5.0", "--break-glass", "hotfix first")
    assert done.returncode == 0, done.stdout + done.stderr
    last = status()["recent"][0]
    assert last["tag"] == "v4.5.0-ecr-ecs-fargate"
    assert any("ahead of the queue" in b for b in last["bypassed"]), last["bypassed"]
    assert [q["tag"] for q in status()["queue"]] == ["v4.4.0-ecr-ecs-fargate"]
