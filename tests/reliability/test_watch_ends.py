"""Points 6 and 7 of issue 13, and issue 19's "a timed-out deployment gets its real outcome".

A watch always ends (UNKNOWN, exit 4, when AWS stops answering), and a record nobody
follows any more (``--no-wait``, a timeout, a lost watch) is closed with what ECS did by the
next engine call that reads the service. ``deploybot`` runs in this process
(``bot.cli.main``), as an operator's command would: what ends is its watch, not a process.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import pytest

from bot.deploy.engine import Engine
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.helpers import deploybot
from tests.reliability.conftest import report, wait_until

pytestmark = pytest.mark.reliability
V44, V45 = "v4.4.0-ecr-ecs-fargate", "v4.5.0-ecr-ecs-fargate"
# The status command a CLI text points to (bot/hints.py names the target).
STATUS_HINT = re.compile(r"deploybot (--target \S+ )?status")


def cli(*args: str, timeout: float = 0, **env: str) -> subprocess.CompletedProcess[str]:
    """``deploybot ARGS`` as an operator runs it, in this process (``timeout``: pytest's)."""
    return deploybot(*args, DEPLOYBOT_USER="operator@laptop", COLUMNS="160", **env)


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
    assert STATUS_HINT.search(done.stdout), done.stdout
    assert newest(stack) == (None, True)  # open, for a later process to adopt

    proxy.clear()  # credentials renewed
    simulator.mark_healthy(V44)
    simulator.slow_ticks = 2  # its pending tasks start now
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert newest(stack) == (Outcome.COMPLETED, False)
    report(
        "expired credentials mid-rollout",
        **{"exit code": done.returncode, "watch ended after s": round(took, 1)},
        **{"outcome after status": "COMPLETED"},
    )


def test_aws_going_dark_mid_rollout_ends_the_watch_after_aws_lost_seconds_exit_4(
    stack: LocalStack, aws: MotoServer, proxy: FaultProxy, simulator: RolloutSimulator
) -> None:
    """Issue 29 (2): with AWS unreachable mid-rollout the watch used to wait out the whole
    ROLLOUT_TIMEOUT_SECONDS (30 minutes by default) before exit 4. Now it ends once AWS has
    not answered for AWS_LOST_SECONDS, says so once, and leaves the deployment open with the
    lock held: a deploy meanwhile is refused, and the next command records what ECS did."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)

    def dark_after_update() -> None:
        wait_until(lambda: aws.requests.count("ecs", "UpdateService") > 0, 60, "UpdateService")
        wait_until(lambda: aws.requests.count("ecs", "DescribeServices") > 2, 60, "a poll")
        # Every request swallowed, none applied: no answer at all.
        proxy.drop_answer("*", times=None, forward=False)

    dark = threading.Thread(target=dark_after_update, daemon=True)
    dark.start()
    started = time.monotonic()
    done = cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="900", AWS_LOST_SECONDS="3", timeout=100)
    took = time.monotonic() - started
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, out
    assert f"Lost sight of the rollout of {V44}" in done.stdout
    assert out.count("AWS has not answered for") == 1, out
    assert out.count("ECS may still be rolling out") == 1, out
    assert "could not record the outcome" not in out
    assert newest(stack) == (None, True)  # open, the lock held: for a later process to settle

    proxy.clear()  # AWS answers again; ECS rolled on meanwhile
    refused = cli("deploy", "v4.5.0")
    assert refused.returncode == 2 and f"{V44} is still rolling out" in refused.stderr
    simulator.slow_ticks = 2
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    assert cli("status").returncode == 0
    assert newest(stack) == (Outcome.COMPLETED, False)
    report(
        "AWS dark mid-rollout",
        **{"exit code": done.returncode, "watch ended after s": round(took, 1)},
        **{"AWS_LOST_SECONDS": 3, "ROLLOUT_TIMEOUT_SECONDS": 900},
    )


def test_a_no_wait_deployment_closes_itself_and_does_not_block_the_next(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    started = cli("deploy", "v4.4.0", "--no-wait")
    assert started.returncode == 0, started.stdout + started.stderr
    assert STATUS_HINT.search(started.stdout), started.stdout
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


def test_a_deployment_that_outlives_its_watch_keeps_the_lock_until_ecs_ends_it(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    """Issue 29 (1): exit 3 used to release the lock over the live rollout, and the next
    deploy went ahead over it. Now the lock stays until someone sees ECS end it: status says
    it is held, a deploy meanwhile is refused naming the rollout and changes nothing, and
    once ECS is done the next command records what ECS did (issue 19) and goes ahead."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    done = cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="1")
    assert done.returncode == 3, done.stdout + done.stderr
    (first,) = Engine(stack.settings).ledger.history(1)
    assert newest(stack) == (Outcome.STILL_ROLLING_OUT, True)
    assert "keeps the lock until ECS ends it" in done.stdout
    assert "the lock is released" not in done.stdout

    # Status says what runs (issue 29, 7): the old release's tasks apart from the new one's.
    text = " ".join(cli("status").stdout.split())
    assert f"rolling out {V44}" in text, text
    assert (
        f"tasks: {V44} (new): 0/3 running, 3 pending; v4.3.0-ecr-ecs-fargate (old): 3 running"
        in text
    )
    status = json.loads(cli("status", "--json").stdout)
    assert status["lock"] is not None and status["lock"]["deployment_id"] == first.id
    assert status["rollout"]["rollout_state"] == "IN_PROGRESS"
    assert [(t["tag"], t["new"], t["running"]) for t in status["tasks"]] == [
        (V44, True, 0),
        ("v4.3.0-ecr-ecs-fargate", False, 3),
    ]
    registered = aws.requests.count("ecs", "RegisterTaskDefinition")
    refused = cli("deploy", "v4.5.0")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"{V44} is still rolling out since {first.started_at:%H:%M} UTC ({first.id}" in said
    assert f"{first.ecs_deployment_id}), 0/3 running" in said
    assert "abort" in said and "unlock" not in said
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == registered  # nothing changed

    simulator.slow_ticks = 2
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    second = cli("deploy", "v4.5.0")
    assert second.returncode == 0, second.stdout + second.stderr
    history = Engine(stack.settings).ledger.history(2)
    assert [r.outcome for r in history] == [Outcome.COMPLETED, Outcome.COMPLETED]
