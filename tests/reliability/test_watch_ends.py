"""Points 6 and 7 of issue 13, and issue 19's "a timed-out deployment gets its real outcome".

A watch always ends (UNKNOWN, exit 4, when AWS stops answering), and a record nobody
follows any more (``--no-wait``, a timeout, a lost watch) is closed with what ECS did by the
next engine call that reads the service. ``deploybot`` runs as a real process throughout.
"""

from __future__ import annotations

import threading
import time

import pytest

from bot.deploy.engine import Engine
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.reliability.conftest import cli, report, wait_until

pytestmark = pytest.mark.reliability
V44, V45 = "v4.4.0-ecr-ecs-fargate", "v4.5.0-ecr-ecs-fargate"


def newest(stack: LocalStack) -> tuple[Outcome | None, bool]:
    """(outcome, lock held) read straight from the table, without reconciling."""
    engine = Engine(stack.settings)
    try:
        (last,) = engine.ledger.history(1)
        return last.outcome, engine.ledger.lock_item() is not None
    finally:
        engine.close()


def test_expired_credentials_mid_rollout_end_the_watch_unknown_exit_4(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """Every AWS call fails from just after UpdateService: the old code never exited. Now the
    watch ends at the rollout timeout with exit 4, the record stays open, and the next
    `deploybot status` (credentials renewed) records what ECS did and frees the lock."""
    simulator.mark_slow(V44)  # still rolling out when the credentials expire

    def expire_after_update() -> None:
        wait_until(lambda: aws.requests.count("ecs", "UpdateService") > 0, 60, "UpdateService")
        proxy.refuse("*", code="ExpiredTokenException", message="The security token expired")

    expiry = threading.Thread(target=expire_after_update, daemon=True)
    expiry.start()
    started = time.monotonic()
    done = cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="4", timeout=90)
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 4, out
    assert f"Lost sight of the rollout of {V44}" in done.stdout
    assert "ExpiredTokenException" in out and "ECS may still be rolling out" in done.stdout
    assert "deploybot --target production status" in done.stdout
    assert newest(stack) == (None, True)  # open, for a later process to adopt

    proxy.clear()  # credentials renewed
    simulator.mark_healthy(V44)
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert newest(stack) == (Outcome.COMPLETED, False)
    report(
        "expired credentials mid-rollout",
        **{"exit code": done.returncode, "watch ended after s": round(took, 1)},
        **{"outcome after status": "COMPLETED"},
    )


def test_a_no_wait_deployment_closes_itself_and_does_not_block_the_next(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    started = cli("deploy", "v4.4.0", "--no-wait")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "`deploybot --target production status`" in started.stdout
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    # The lock's lease (120 s) has not run out, and nobody followed the rollout: the next
    # deploy reconciles the open record with ECS, closes it and takes the lock.
    second = cli("deploy", "v4.5.0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"✓ Deployed {V45}" in second.stdout
    history = cli("history", "-n", "2").stdout
    assert history.count("completed") == 2, history


def test_status_closes_a_finished_no_wait_deployment(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    assert cli("deploy", "v4.4.0", "--no-wait").returncode == 0
    assert newest(stack) == (None, True)
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    status = cli("status")
    assert "lock: free" in status.stdout, status.stdout
    assert newest(stack) == (Outcome.COMPLETED, False)


def test_a_timed_out_deployment_gets_its_real_outcome_in_history(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """Issue 19: exit 3's record used to keep "still rolling out" after ECS finished."""
    simulator.mark_slow(V44)
    done = cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="1")
    assert done.returncode == 3, done.stdout + done.stderr
    assert newest(stack) == (Outcome.STILL_ROLLING_OUT, False)
    simulator.mark_healthy(V44)
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    history = cli("history", "-n", "1")
    assert "completed" in history.stdout and "still rolling out" not in history.stdout
    assert newest(stack) == (Outcome.COMPLETED, False)
