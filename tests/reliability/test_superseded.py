"""Point 9 of issue 13: superseded is not rolled back, and ``make infra`` takes the deploy lock.

A deployment replaced by an UpdateService deploybot did not make (the console, ``make
infra``) used to be reported as "ECS's circuit breaker rolled the service back".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.deploy.rollout import Outcome
from bot.errors import LockHeld
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.reliability.conftest import report
from tools.stack import main as stack_main

pytestmark = pytest.mark.reliability
V44 = "v4.4.0-ecr-ecs-fargate"


def ecs(stack: LocalStack) -> Any:
    return boto3.client("ecs", endpoint_url=stack.info.endpoint_url, region_name="eu-west-1")


def wait_open_with_ecs_id(engine: Engine, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = engine.ledger.history(1)
        if records and records[0].open and records[0].ecs_deployment_id:
            return
        time.sleep(0.05)
    raise TimeoutError("no deployment under way")


def test_a_deployment_replaced_by_someone_elses_update_service_is_replaced_not_failed(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    engine = Engine(stack.settings)
    env = {**os.environ, "DEPLOYBOT_USER": "alice@laptop", "COLUMNS": "200"}
    alice = subprocess.Popen(
        [sys.executable, "-m", "bot", "deploy", "v4.4.0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_open_with_ecs_id(engine)
        # Someone in the console puts the stack's original revision back.
        theirs = ecs(stack).update_service(
            cluster=stack.settings.ecs_cluster,
            service=stack.settings.ecs_service,
            taskDefinition=stack.info.task_definition_arn,
        )["service"]["deployments"][0]["id"]
        simulator.slow_ticks = 2
        out, _ = alice.communicate(timeout=120)
    finally:
        if alice.poll() is None:
            alice.kill()
        engine.close()
    assert alice.returncode == 1, out
    assert f"replaced by ECS deployment {theirs} (not started by deploybot)" in out
    assert "circuit breaker" not in out and "rolled the service back" not in out
    assert "failed" not in out  # issue 29: nothing of it failed
    (record,) = Engine(stack.settings).ledger.history(1)
    assert record.outcome == Outcome.REPLACED and not record.rollback_tag
    assert record.outcome.label == "replaced"
    history = subprocess.run(
        [sys.executable, "-m", "bot", "history", "-n", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "replaced by ECS deployment" in history and "failed" not in history, history
    report("replaced by the console", outcome=record.outcome, **{"exit code": alice.returncode})


def test_replaced_by_another_deploybot_deployment_names_it(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """A deployment left "still rolling out" at its timeout keeps the lock; someone breaks
    it (`unlock`) and deploys over it: its record says REPLACED, by which deployment, and
    who started it."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    quick = Engine(stack.settings.model_copy(update={"rollout_timeout_seconds": 0.5}))
    engine = Engine(stack.settings)
    try:
        first = quick.deploy("v4.4.0", Requester("alice", "cli", "Alice"))
        assert list(quick.watch(first))[-1].outcome == Outcome.STILL_ROLLING_OUT
        with pytest.raises(LockHeld):
            engine.deploy("v4.5.0", Requester("bob", "cli", "Bob"))
        engine.unlock()
        second = engine.deploy("v4.5.0", Requester("bob", "cli", "Bob"))
        list(engine.watch(second))
        (_, replaced) = engine.history(2)
    finally:
        quick.close()
        engine.close()
    assert replaced.id == first.id and replaced.outcome == Outcome.REPLACED
    assert replaced.outcome_reason == (
        f"replaced by ECS deployment {second.ecs_deployment_id} "
        f"(deploybot deployment {second.id} of v4.5.0-ecr-ecs-fargate by Bob)"
    )


TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ImageTag:
    Type: String
Resources:
  Echo:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/echo"
      Type: String
      Value: !Ref ImageTag
"""


def test_make_infra_holds_the_deploy_lock_and_waits_for_no_rollout(
    stack: LocalStack, simulator: RolloutSimulator, tmp_path: Path
) -> None:
    template = tmp_path / "service.yml"
    template.write_text(TEMPLATE)
    engine = Engine(stack.settings)
    lines: list[str] = []
    seen_during: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if "creating change set" in line:  # mid-update: a deploy is refused, naming it
            try:
                engine.deploy("v4.5.0", Requester("bob", "cli"))
            except LockHeld as exc:
                seen_during.append(exc.message)

    def infra() -> int:
        argv = ["service", "--stack", stack.settings.stack_name, "--template", str(template)]
        return stack_main(argv, out=out, delay=0.05)

    try:
        # A live rollout: `make infra` is refused before any change.
        simulator.slow_ticks = 100_000
        simulator.mark_slow(V44)
        record = engine.deploy("v4.4.0", Requester("alice", "cli", "Alice"))
        assert infra() == 2
        assert "Deploys are locked" in lines[-1] and "Alice" in lines[-1]
        simulator.slow_ticks = 2
        assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
        # Free: it takes the lock, keeps the running tag (pinned by digest), releases the lock.
        lines.clear()
        assert infra() == 0, lines
        assert any(f"ImageTag={V44}" in line for line in lines)
        assert seen_during and "updating the infrastructure (`make infra`" in seen_during[0]
        assert engine.ledger.lock_item() is None
    finally:
        engine.close()
