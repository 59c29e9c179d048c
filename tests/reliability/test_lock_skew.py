"""Point 8 of issue 13: the lock cannot be stolen from a live rollout, whatever the clocks say.

Two real ``deploybot deploy`` processes, the second under ``faketime`` (Debian's libfaketime,
installed by .ci/steps/30-faketime.sh) with its clock minutes ahead; a poller whose lock was
broken under it; settings that would let a lease lapse between polls; and the DynamoDB calls
one refused or granted ``acquire`` costs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.errors import LockHeld
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.reliability.conftest import cli, report, wait_until

pytestmark = pytest.mark.reliability
V44, V45 = "v4.4.0-ecr-ecs-fargate", "v4.5.0-ecr-ecs-fargate"
FAKETIME = shutil.which("faketime")


def deploy_in_background(tag: str, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "DEPLOYBOT_USER": "alice@laptop", "COLUMNS": "160", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "deploy", tag],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def rolling_out(engine: Engine) -> bool:
    records = engine.ledger.history(1)
    return bool(records) and records[0].open and bool(records[0].ecs_deployment_id)


def skewed(offset: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert FAKETIME is not None
    # Only the wall clock is off, as on a machine whose clock drifted: the monotonic clock
    # (thread waits, intervals) is left alone, or libfaketime stalls timed waits.
    env = {
        **os.environ,
        "DEPLOYBOT_USER": "bob@fast-clock",
        "COLUMNS": "160",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    return subprocess.run(
        [FAKETIME, "-f", offset, sys.executable, "-m", "bot", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (.ci/steps/30-faketime.sh)")
def test_a_fast_clock_cannot_take_the_lock_from_a_live_rollout(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    simulator.slow_ticks = 100_000  # alice's rollout stays in progress until released below
    simulator.mark_slow(V44)
    engine = Engine(stack.settings)
    # Alice's watch outlasts bob's three tries (processes under faketime, slow on a loaded
    # machine): her deploy ends when her tasks start, not at the tests' 30 s timeout.
    alice = deploy_in_background("v4.4.0", ROLLOUT_TIMEOUT_SECONDS="180")
    try:
        wait_until(lambda: rolling_out(engine), 60, "alice's rollout under way")
        updates = aws.requests.count("ecs", "UpdateService")
        refused = {}
        for offset in ("+4m", "+6m", "-4m"):
            bob = skewed(offset, "deploy", "v4.5.0")
            refused[offset] = bob.returncode
            assert bob.returncode == 2, bob.stdout + bob.stderr
            assert "Deploys are locked" in bob.stderr and "alice@laptop" in bob.stderr
            assert "still rolling out" in bob.stderr
        assert aws.requests.count("ecs", "UpdateService") == updates  # bob changed nothing
        simulator.slow_ticks = 2  # alice's tasks start now
        out, _ = alice.communicate(timeout=120)
        assert alice.returncode == 0, out
        assert f"✓ Deployed {V44}" in out
        # Once alice's rollout is over, the same skewed clock deploys at once.
        bob = skewed("+4m", "deploy", "v4.5.0")
        assert bob.returncode == 0, bob.stdout + bob.stderr
        report(
            "lock under clock skew",
            **{f"exit code at {k}": v for k, v in refused.items()},
            **{"after the rollout": bob.returncode},
        )
    finally:
        if alice.poll() is None:
            alice.kill()
        engine.close()


def test_a_poller_whose_lock_was_broken_says_so_and_stops_claiming_it(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    engine = Engine(stack.settings)
    alice = deploy_in_background("v4.4.0", LOCK_LEASE_SECONDS="2")  # renewed every 0.7 s
    try:
        wait_until(lambda: rolling_out(engine), 60, "alice's rollout under way")
        broken = engine.unlock()
        assert broken is not None and broken.holder == "alice@laptop"
        # Several renewal periods: the lock is never put back by alice's poller.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert engine.ledger.lock_item() is None
            time.sleep(0.1)
        simulator.slow_ticks = 2
        out, _ = alice.communicate(timeout=120)
        assert alice.returncode == 0, out
        assert "lost the deploy lock" in out and "no longer claiming the lock" in out
        assert engine.ledger.lock_item() is None
    finally:
        if alice.poll() is None:
            alice.kill()
        engine.close()


def test_a_poll_interval_not_well_inside_the_lease_is_refused(stack: LocalStack) -> None:
    done = cli("status", ROLLOUT_POLL_SECONDS="40", LOCK_LEASE_SECONDS="120")
    assert done.returncode == 2
    assert "ROLLOUT_POLL_SECONDS (40) must be at most a quarter of LOCK_LEASE_SECONDS" in (
        done.stderr.replace("\n", " ")
    )
    assert "Traceback" not in done.stderr
    assert cli("status", ROLLOUT_POLL_SECONDS="30", LOCK_LEASE_SECONDS="120").returncode == 0


def dynamodb_calls(aws: MotoServer) -> int:
    return sum(aws.requests.count("dynamodb", op) for op in ("PutItem", "GetItem", "DeleteItem"))


def test_acquire_is_a_few_calls_never_a_spin(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator
) -> None:
    simulator.slow_ticks = 100_000
    simulator.mark_slow(V44)
    alice, bob = Engine(stack.settings), Engine(stack.settings)
    try:
        record = alice.deploy("v4.4.0", Requester("alice", "cli"))
        before = dynamodb_calls(aws)
        with pytest.raises(LockHeld):
            bob.acquire(Requester("bob", "cli"), V45, "d-bob")
        refused = dynamodb_calls(aws) - before
        assert refused <= 2  # the put that failed (it names the holder) and the holder's record
        simulator.slow_ticks = 2
        list(alice.watch(record))
        # A lock its holder failed to release, its record closed: taken over in one go.
        alice.ledger.try_acquire(Requester("alice", "cli"), V44, record.id, record.sort_key)
        before = dynamodb_calls(aws)
        lock = bob.acquire(Requester("bob", "cli"), V45, "d-bob")
        taken = dynamodb_calls(aws) - before
        assert lock.holder == "bob" and taken <= 4
        report("acquire", **{"DynamoDB calls refused": refused, "taken over": taken})
    finally:
        alice.close()
        bob.close()
