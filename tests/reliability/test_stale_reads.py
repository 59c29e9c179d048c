"""A read of ECS older than the history it is judged with must never settle a live rollout.

Found with two bot replicas: a /redeploy whose DescribeServices was answered just before
alice's deploy reached ECS read the history just after, when alice's record already named
its ECS deployment. Judged against the older read, that deployment was "missing", so alice's
live rollout was closed as "replaced", her lock taken over, and the redeploy ran over it.

Here the fault is put on the wire: bob's ``deploybot`` (a real process) talks to moto
through the fault proxy, which answers his first DescribeServices a few seconds late (moto
answered it at once, before alice's deploy); alice deploys straight to moto meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.reliability.conftest import report, wait_until

pytestmark = pytest.mark.reliability
V44 = "v4.4.0-ecr-ecs-fargate"
LATE = 3.0  # how late bob's first DescribeServices is answered


@pytest.mark.parametrize(
    "command",
    [("status",), ("redeploy",), ("deploy", "v4.5.0"), ("rollback",)],
    ids=" ".join,
)
def test_a_service_read_older_than_the_history_never_settles_a_live_rollout(
    command: tuple[str, ...],
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    simulator: RolloutSimulator,
) -> None:
    simulator.slow_ticks = 100_000  # alice's rollout stays in progress
    simulator.mark_slow(V44)
    proxy.delay_answer("ecs", "DescribeServices", seconds=LATE, times=1)
    bob = subprocess.Popen(
        [sys.executable, "-m", "bot", *command],
        env={**os.environ, "DEPLOYBOT_USER": "bob@laptop", "COLUMNS": "160"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    alice = Engine(stack.settings)  # straight to moto, not through the proxy
    try:
        wait_until(
            lambda: proxy.count("ecs", "DescribeServices", "delay") == 1,
            60,
            "bob's DescribeServices to reach moto",
        )
        asked = time.monotonic()
        started = alice.start(
            alice.plan_deploy("v4.4.0", Requester("alice@laptop", "cli")), follow=False
        )
        # The fault is only there if alice's deploy reached ECS before bob had his answer.
        assert time.monotonic() - asked < LATE, "alice's deploy took longer than the delay"
        assert started.ecs_deployment_id
        out, _ = bob.communicate(timeout=120)

        (record,) = alice.ledger.history(1)
        lock = alice.ledger.lock_item()
        report(
            f"stale DescribeServices, then `deploybot {' '.join(command)}`",
            **{
                "exit code": bob.returncode,
                "alice's record open": record.open,
                "alice's lock held": lock is not None and lock.deployment_id == started.id,
            },
        )
        assert record.id == started.id and record.open, (record, out)
        assert lock is not None and lock.deployment_id == started.id, out
        assert aws.requests.count("ecs", "UpdateService") == 1, out  # alice's only
        assert "replaced by" not in out and "not started" not in out, out
        if command[0] != "status":
            assert bob.returncode == 2, out
            assert "Deploys are locked" in out and "alice@laptop" in out, out
        else:
            assert bob.returncode == 0, out
    finally:
        if bob.poll() is None:
            bob.kill()
        alice.close()
