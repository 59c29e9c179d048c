"""Issue 24 at the terminal's door: a freeze written while ``deploybot deploy`` prepares the
deploy (its plan's DescribeServices answered late by the fault proxy, after the plan read
no freeze) refuses it when the lock is taken: exit 2, no lock, nothing sent to ECS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.reliability.conftest import report, wait_until
from tests.slack.helpers import running_tag

pytestmark = pytest.mark.reliability


def test_a_freeze_while_the_cli_prepares_refuses_its_deploy(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, proxy: FaultProxy
) -> None:
    engine = Engine(stack.settings)  # straight to moto: another operator's terminal
    try:
        proxy.delay_answer("ecs", "DescribeServices", seconds=3.0)
        deploying = subprocess.Popen(
            [sys.executable, "-m", "bot", "deploy", "v4.4.0", "--yes"],
            env={**os.environ, "DEPLOYBOT_USER": "ann", "COLUMNS": "160"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(
                lambda: proxy.count("ecs", "DescribeServices", action="delay") >= 1,
                60,
                "the plan's DescribeServices",
            )
            frozen = engine.freeze(Requester("ben", "cli"), "incident 9")
            out, err = deploying.communicate(timeout=120)
        finally:
            deploying.kill()
        assert deploying.returncode == 2, out + err
        said = (
            f"production was frozen by ben at {frozen.since:%H:%M:%S} UTC while this was "
            "being prepared"
        )
        assert said in " ".join(err.split()), err
        assert "Traceback" not in err
        assert aws.requests.count("ecs", "UpdateService") == 0
        assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
        assert engine.ledger.lock_item() is None and engine.history(1) == []
        assert running_tag(stack.settings) == "v4.3.0-ecr-ecs-fargate"
        report("freeze between plan and start (CLI)", runs=1, refused=1, deployed=0)
    finally:
        engine.close()
