"""Issue 31, 2-4: an abort is its own short watch that follows ECS, and reads ECS before it
marks anything.

ECS moves only when a test ticks the rollout simulator (no simulator thread here): what ECS
shows while the abort waits is exactly what the test made it show. ``deploybot`` runs as real
processes where the process boundary is the point (a SIGKILLed follower, two processes
following one deployment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from bot.cli import main
from bot.clock import Clock
from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord, Requester
from bot.deploy.rollout import Outcome
from bot.errors import NothingToAbort
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.deploy.test_guards import engine_for, target_of
from tests.helpers import wait_until
from tests.reliability.conftest import cli, report, through
from tests.slack.helpers import running_tag

pytestmark = pytest.mark.reliability
V43 = "v4.3.0-ecr-ecs-fargate"
OPERATOR = Requester("operator@laptop", "cli")


@pytest.fixture
def ecs(aws: MotoServer) -> RolloutSimulator:
    """The rollout simulator, moved by the test alone (``ecs.tick()``)."""
    return RolloutSimulator(aws)


def start(*args: str, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "160", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.communicate()


def newest(stack: LocalStack) -> tuple[DeploymentRecord | None, bool]:
    """(the newest record, is the lock held), read from the table."""
    engine = Engine(stack.settings)
    try:
        last = next(iter(engine.ledger.history(1)), None)
        return last, engine.ledger.lock_item() is not None
    finally:
        engine.close()


def started_in_ecs(stack: LocalStack) -> bool:
    last, _ = newest(stack)
    return last is not None and bool(last.ecs_deployment_id)


def abort_asked(aws: MotoServer) -> bool:
    """The abort asked ECS to put v4.3.0 back: StopServiceDeployment(ROLLBACK) since #26, or
    UpdateService with the previous task definition (a second one, after the deploy's)."""
    return (
        aws.requests.count("ecs", "StopServiceDeployment", throttled=False) >= 1
        or aws.requests.count("ecs", "UpdateService") == 2
    )


def restore(ecs: RolloutSimulator) -> None:
    """Let ECS finish what it is doing (the restore), a step at a time."""
    for _ in range(400):
        if ecs.idle():
            return
        ecs.tick()
        time.sleep(0.02)
    raise AssertionError("ECS never settled")


def settled(stack: LocalStack) -> tuple[Outcome | None, bool, bool, str]:
    last, locked = newest(stack)
    assert last is not None
    return last.outcome, last.open, locked, running_tag(stack.settings)


def test_an_abort_takes_over_from_a_killed_follower_and_exits_once_the_image_is_back(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    processes: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deploy's process is SIGKILLed after its UpdateService; its follower lease (120 s)
    outlives it. The old abort waited on that lease, reading DynamoDB only, and exited 3
    ("still putting v4.3.0 back") at its timeout though ECS had put it back at once."""
    monkeypatch.setenv("LOCK_LEASE_SECONDS", "120")
    monkeypatch.setenv("ROLLOUT_TIMEOUT_SECONDS", "60")
    deploying = start("deploy", "v4.5.0")
    processes.append(deploying)
    wait_until(lambda: aws.requests.count("ecs", "UpdateService") == 1, 60, "the deploy's call")
    wait_until(lambda: started_in_ecs(stack), 30, "the ECS deployment id recorded")
    deploying.send_signal(signal.SIGKILL)
    deploying.communicate()
    aborting = start("abort", DEPLOYBOT_USER="ben")
    processes.append(aborting)
    wait_until(lambda: abort_asked(aws), 60, "the abort's call")
    began = time.monotonic()
    restore(ecs)
    out, err = aborting.communicate(timeout=20)
    took = time.monotonic() - began
    assert aborting.returncode == 0, out + err
    assert f"Aborted: {V43} is back" in out, out
    assert "Traceback" not in err
    assert settled(stack) == (Outcome.ABORTED, False, False, V43)
    report(
        "abort after its follower was SIGKILLed", **{"seconds after ECS was done": round(took, 1)}
    )


def test_an_abort_of_a_rollout_older_than_the_timeout_follows_the_restore_to_its_end(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    processes: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Started with --no-wait longer ago than ROLLOUT_TIMEOUT_SECONDS. The old abort counted
    its timeout from that start: exit 1 within a second ("still rolling out after 8 s"),
    the record left STILL_ROLLING_OUT and the lock released while ECS was restoring."""
    monkeypatch.setenv("ROLLOUT_TIMEOUT_SECONDS", "8")
    started = cli("deploy", "v4.5.0", "--no-wait")
    assert started.returncode == 0, started.stdout + started.stderr
    record, _ = newest(stack)
    assert record is not None
    time.sleep(max(0.0, 8.5 - (time.time() - record.started_at.timestamp())))
    aborting = start("abort")
    processes.append(aborting)
    wait_until(lambda: abort_asked(aws), 60, "the abort's call")
    # ECS restores (the test holds it there): the abort waits, the lock held, the record open.
    time.sleep(1.5)
    assert aborting.poll() is None, aborting.communicate()
    last, locked = newest(stack)
    assert last is not None and last.open and locked, last
    restore(ecs)
    out, err = aborting.communicate(timeout=20)
    assert aborting.returncode == 0, out + err
    assert f"Aborted: {V43} is back" in out, out
    assert settled(stack) == (Outcome.ABORTED, False, False, V43)


def test_the_deploys_own_watch_keeps_the_lock_until_the_restore_ends(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    processes: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The deploy's process follows its rollout; it is aborted; the restore outlasts what
    was left of the deploy's timeout. The old follower closed STILL_ROLLING_OUT at the
    deploy's timeout (exit 3) and released the lock with ECS still restoring.

    The deploy's watch follows the restore for a timeout of its own counted from when it saw
    the abort (14 s here): the abort comes 7 s or more into the deploy, so the restore, held
    by the test past the deploy's own 14 s, ends well within that window (5 s before it at
    the least). (Aborted at once, the restore ended about a second before the window did: the
    test passed or failed with the machine's speed.) The abort runs in this process
    (`bot.cli.main`, a second watcher of its own): what is tested is the deploy's process; an
    abort's own process, started under load beside a deploy polling every 0.05 s, took up to
    13 s to reach AWS, which a timeout this short could not wait for."""
    deploying = start("deploy", "v4.5.0", ROLLOUT_TIMEOUT_SECONDS="14")
    processes.append(deploying)
    wait_until(lambda: aws.requests.count("ecs", "UpdateService") == 1, 60, "the deploy's call")
    record, _ = newest(stack)
    assert record is not None
    time.sleep(max(0.0, 7.0 - (time.time() - record.started_at.timestamp())))
    monkeypatch.setenv("ROLLOUT_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("DEPLOYBOT_USER", "operator@laptop")
    codes: list[int] = []
    aborting = threading.Thread(target=lambda: codes.append(main(["abort"])), daemon=True)
    aborting.start()
    wait_until(lambda: abort_asked(aws), 60, "the abort's call")
    age = time.time() - record.started_at.timestamp()
    assert age < 12, f"the abort came {age:.0f} s after the deploy, too near its timeout"
    # Past the deploy's own timeout, ECS still restoring.
    time.sleep(max(0.0, 15.0 - age))
    assert deploying.poll() is None, deploying.communicate()
    last, locked = newest(stack)
    assert last is not None and last.open and locked, last
    restore(ecs)
    aborting.join(timeout=20)
    out, err = capsys.readouterr()
    assert codes == [0], out + err
    assert f"Aborted: {V43} is back" in out, out
    dout, derr = deploying.communicate(timeout=20)
    assert deploying.returncode == 1, dout + derr
    assert "aborted" in dout
    assert settled(stack) == (Outcome.ABORTED, False, False, V43)


class SlowClock(Clock):
    """The clock of a machine 2 minutes behind (within CLOCK_SKEW): its wall time only.
    (libfaketime, as tests/reliability/test_lock_skew.py uses it, makes Python's time.sleep
    fail with EINVAL, which the abort's watch calls; this engine's clock is driven instead.)"""

    def now(self) -> datetime:
        return super().now() - timedelta(minutes=2)


def test_an_abort_from_a_slow_clock_does_not_cut_the_deploys_watch_short(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    processes: list[subprocess.Popen[str]],
) -> None:
    """The abort comes from a machine whose clock is 2 minutes behind: its ``aborted_at`` is
    2 minutes old by the deploy's clock. The deploy's watch counted its window for the
    restore from it, so it ended at its own timeout all the same: closed STILL_ROLLING_OUT,
    exit 3, while ECS was still putting v4.3.0 back."""
    deploying = start("deploy", "v4.5.0", ROLLOUT_TIMEOUT_SECONDS="12")
    processes.append(deploying)
    wait_until(lambda: aws.requests.count("ecs", "UpdateService") == 1, 60, "the deploy's call")
    wait_until(lambda: started_in_ecs(stack), 30, "the ECS deployment id recorded")
    record, _ = newest(stack)
    assert record is not None
    # 6 s or more into the deploy: the deploy's window for the restore, counted from the
    # abort by its own clock, ends 6 s or more after its own timeout.
    time.sleep(max(0.0, 6.0 - (time.time() - record.started_at.timestamp())))
    aborter = Engine(stack.settings, clock=SlowClock())
    try:
        aborted = aborter.abort(Requester("ben@slow-clock", "cli"))
    finally:
        aborter.close()
    assert aborted.id == record.id and aborted.aborted_at is not None
    assert aborted.aborted_at < record.started_at
    age = time.time() - record.started_at.timestamp()
    assert age < 11, f"the abort came {age:.0f} s after the deploy, too near its timeout"
    # Past the deploy's own timeout, ECS still restoring.
    time.sleep(max(0.0, 13.0 - age))
    assert deploying.poll() is None, deploying.communicate()
    last, locked = newest(stack)
    assert last is not None and (last.outcome, locked) == (None, True), last
    restore(ecs)
    dout, derr = deploying.communicate(timeout=20)
    assert deploying.returncode == 1, dout + derr
    assert "aborted" in dout
    assert settled(stack) == (Outcome.ABORTED, False, False, V43)


def test_an_abort_after_the_circuit_breaker_failed_it_records_the_rollback(
    stack: LocalStack, ecs: RolloutSimulator
) -> None:
    """The breaker failed the deployment and ECS rolls back; nobody has polled since. The old
    abort marked it ABORTED without reading ECS, so freeze_after_failure never fired. Since
    #26 the outcome is ECS's word once it is done (ROLLBACK_SUCCESSFUL): the abort is refused
    while ECS rolls back, and the record closes rolled back when ECS has."""
    engine = engine_for(stack, target_of(stack, freeze_after_failure=True))
    other = engine_for(stack, target_of(stack, freeze_after_failure=True))
    try:
        ecs.mark_broken("v4.5.0-ecr-ecs-fargate")
        record = engine.start(engine.plan_deploy("v4.5.0", OPERATOR), follow=False)
        for _ in range(200):
            ecs.tick()
            service = engine.aws.describe_service()
            assert service is not None
            ours = [d for d in service["deployments"] if d["id"] == record.ecs_deployment_id]
            if ours and ours[0].get("rolloutState") == "FAILED":
                break
        else:
            raise AssertionError("the circuit breaker never tripped")
        with pytest.raises(NothingToAbort, match="the circuit breaker was already rolling back"):
            other.abort(OPERATOR)
        restore(ecs)  # ECS finishes its rollback
        (last,) = other.history(1, leave_followed=True)
        assert (last.id, last.outcome, last.aborted_by) == (record.id, Outcome.ROLLED_BACK, "")
        freeze = other.status().freeze
        assert freeze is not None and freeze.deployment == record.id
    finally:
        engine.close()
        other.close()


def test_an_abort_of_a_start_proven_never_started_exits_2(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by the randomized lifecycle test: a `--no-wait` deploy's UpdateService is lost on
    its way; an abort comes while that process is still proving it never started. The old
    abort printed "✗ not started" and exited 1 (failed, rolled back, aborted); nothing
    changed, so 2."""
    proxy.reset_answer("ecs", "UpdateService", times=1, forward=False)
    engine = Engine(through(stack.settings, proxy))
    try:
        plan = engine.plan_deploy("v4.5.0", OPERATOR)
        starting = threading.Thread(target=engine.start, args=(plan,), kwargs={"follow": False})
        starting.start()
        wait_until(lambda: any(p.operation == "UpdateService" for p in proxy.log), 30, "its call")
        code = main(["abort"])
        starting.join(timeout=60)
    finally:
        engine.close()
    said = capsys.readouterr()
    assert code == 2, said.out + said.err
    assert "not started" in said.out, said.out
    assert settled(stack)[:3] == (Outcome.NOT_STARTED, False, False)
    assert aws.requests.count("ecs", "UpdateService") == 1  # the abort's, no deployment


def test_an_abort_between_the_deploys_record_and_its_updateservice_stays_aborted(
    stack: LocalStack,
    aws: MotoServer,
    ecs: RolloutSimulator,
    proxy: FaultProxy,
    processes: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by the randomized lifecycle soak (seed 247036231, round 17: 'DynamoDB PutItem
    reset', the deploy's record put, written but answered late, its retry backing off). The
    deploy's record is written, its answer not yet back: the deploy has not sent its
    UpdateService. An abort then finds the record open (no ECS deployment yet), marks it
    aborted and puts v4.3.0 back (ECS already runs it); the deploy, once its put is answered,
    sent its UpdateService all the same: v4.5.0 rolled out after the abort said it was back
    (both processes said "aborted; v4.3.0 is back"); in the soak, an ECS deployment no record
    owns once the circuit breaker rolled the broken image back. Now the deploy reads its
    record before asking ECS and stands down.

    The abort runs in this process (`bot.cli.main`): it must mark the record within the 4 s
    the put's answer is held, and a second process's start-up alone took most of that on
    this loaded machine (the abort then came after the UpdateService, a case of its own)."""
    monkeypatch.setenv("DEPLOYBOT_USER", "ben")
    monkeypatch.setenv("ROLLOUT_TIMEOUT_SECONDS", "20")
    proxy.delay_answer(
        "dynamodb", "PutItem", seconds=4
    )  # the record's put (the lock: a transaction)
    deploying = start("deploy", "v4.5.0", ROLLOUT_TIMEOUT_SECONDS="20")
    processes.append(deploying)
    wait_until(lambda: newest(stack)[0] is not None, 60, "the deploy's record written")
    assert aws.requests.count("ecs", "UpdateService") == 0
    codes: list[int] = []
    aborting = threading.Thread(target=lambda: codes.append(main(["abort"])))
    aborting.start()
    wait_until(lambda: aws.requests.count("ecs", "UpdateService") >= 1, 60, "the abort's call")
    time.sleep(5)  # the deploy's put answered: what it does then
    restore(ecs)
    aborting.join(timeout=40)
    said = capsys.readouterr()
    out, err = said.out, said.err
    dout, derr = deploying.communicate(timeout=40)
    assert "Traceback" not in err + derr
    restore(ecs)
    assert running_tag(stack.settings) == V43, (out, dout)
    assert aws.requests.count("ecs", "UpdateService") == 1, (
        "the deploy started its rollout after it was aborted",
        out,
        dout,
    )
    # Nothing changed: the deploy stands down (2), the abort reads that (2), the lock is free.
    assert deploying.returncode == 2, dout + derr
    assert "before ECS was asked" in dout + derr, dout + derr
    assert codes == [2], out + err
    assert settled(stack) == (Outcome.NOT_STARTED, False, False, V43)
