"""Issue 31, 4: a randomized test of the whole lifecycle, judged from outside.

A seeded driver runs rounds. In each, several real ``deploybot`` processes do random deploys
(a healthy, a slow or a broken image, some with ``--no-wait``), redeploys, rollbacks and
aborts, some SIGKILLed at random moments, all through the fault proxy with random wire faults
(a dropped or reset answer, a DescribeServices delayed past the read timeout, expired
credentials for a while). A thread reads ECS all along, straight from moto. When the round's
processes are done and ECS is still, the invariants are checked from outside:

- no history record is left open once ECS shows no deployment in progress;
- the lock is free once nothing rolls out;
  (both but for a start whose process was killed between sending UpdateService and ECS
  showing its deployment: nobody may say it never started before NEVER_STARTED_AFTER)
- the task definition ECS runs is the one the newest settled record says runs;
- every ECS deployment is one a record accounts for (its own, its abort's restore, the
  circuit breaker's rollback of it), and never two deploybot-started deployments in
  progress at once (a rollback excepted);
- each process's exit code agrees with the history (0 completed; 1 failed, rolled back or
  aborted; 2 changed nothing; 3 and 4 only for a slow rollout, an abort or a faulted wire);
- no process outlives its timeout, and none prints a traceback.

The seed is printed (and in the failure's message): ``DEPLOYBOT_LIFECYCLE_SEED=N`` replays
its choices (the processes' timing is the machine's). ``DEPLOYBOT_LIFECYCLE_ROUNDS`` (2 by
default: CI) or ``DEPLOYBOT_LIFECYCLE_MINUTES`` make a soak run; its figures (operations,
kills, faults, breaks) are reported as every reliability test's are (tests/reliability/
conftest.py).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.reconcile import NEVER_STARTED_AFTER
from bot.deploy.records import CLOCK_SKEW, DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.errors import DeployError, LockHeld
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.reliability.conftest import report

pytestmark = pytest.mark.reliability

TIMEOUT = 20.0  # ROLLOUT_TIMEOUT_SECONDS of every process
LEASE = 8.0  # LOCK_LEASE_SECONDS of every process
# A process's longest life: its watch's timeout, an abort's own timeout after it, start-up.
PROCESS_LIMIT = 2 * TIMEOUT + 25
SLOW_TICKS = 50  # a slow image's tasks stay PENDING this many simulator steps (2.5 s)
V43, V44, V45 = "v4.3.0", "v4.4.0", "v4.5.0"
SUFFIX = "-ecr-ecs-fargate"
# The record a process started ("(deploy d-…, " in its first lines) or aborted ("Aborting
# deploy d-… of"), wherever a terminal's line wrapped; other ids it names (a lock's holder)
# are not its own.
_ID = re.compile(
    r"(?:\((?:deploy|redeploy|rollback|promote)|Aborting\s+\w+)\s+(d-\d{8}-\d{6}-[0-9a-f]{4})\b"
)


def _faults(proxy: FaultProxy) -> dict[str, Callable[[], object]]:
    """The wire faults a round may set (each hits once, or for a few seconds)."""
    return {
        "UpdateService answer dropped": lambda: proxy.drop_answer("ecs", "UpdateService"),
        "UpdateService reset": lambda: proxy.reset_answer("ecs", "UpdateService"),
        "UpdateService lost on its way": lambda: proxy.reset_answer(
            "ecs", "UpdateService", forward=False
        ),
        "DescribeServices past the read timeout": lambda: proxy.delay_answer(
            "ecs", "DescribeServices", seconds=6
        ),
        "DescribeServices reset x3": lambda: proxy.reset_answer("ecs", "DescribeServices", times=3),
        "credentials expired for 3 s": lambda: proxy.refuse(
            "*", code="ExpiredTokenException", for_seconds=3
        ),
        "DynamoDB UpdateItem answer dropped": lambda: proxy.drop_answer("dynamodb", "UpdateItem"),
        "DynamoDB PutItem reset": lambda: proxy.reset_answer("dynamodb", "PutItem"),
    }


@dataclass
class Op:
    """One ``deploybot`` process of a round."""

    kind: str  # deploy, deploy-no-wait, redeploy, rollback, abort
    args: list[str]
    at: float  # seconds after the round's start
    kill_after: float | None  # SIGKILLed this long after it started, if still running
    proc: subprocess.Popen[str] | None = None
    started: float = 0.0
    killed: bool = False
    outlived: bool = False
    out: str = ""
    err: str = ""

    @property
    def code(self) -> int | None:
        return None if self.proc is None else self.proc.returncode


@dataclass
class EcsWatch:
    """Reads ECS straight from moto every 50 ms: every deployment seen, and which were in
    progress together."""

    settings: Any
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    together: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        s = self.settings
        ecs = boto3.client("ecs", region_name=s.aws_region, endpoint_url=s.aws_endpoint_url)
        while not self.stop.wait(0.05):
            try:
                (service,) = ecs.describe_services(cluster=s.ecs_cluster, services=[s.ecs_service])[
                    "services"
                ]
            except Exception:  # moto busy: the next read
                continue
            going = set()
            for d in service.get("deployments", []):
                self.seen.setdefault(d["id"], d)
                if d.get("rolloutState") == "IN_PROGRESS":
                    going.add(d["id"])
            if len(going) > 1:
                self.together.append((time.time(), frozenset(going)))


@dataclass
class Figures:
    rounds: int = 0
    operations: int = 0
    kills: int = 0
    faults: int = 0
    breaks: list[str] = field(default_factory=list)


def _start(op: Op, env: dict[str, str]) -> None:
    op.proc = subprocess.Popen(
        [sys.executable, "-m", "bot", *op.args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    op.started = time.monotonic()


def _plan_round(rng: random.Random, names: list[str]) -> tuple[list[Op], list[str], str]:
    """The round's processes, its faults and v4.4.0's fate (v4.5.0 is always broken)."""
    ops: list[Op] = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(
            ["deploy", "deploy", "deploy", "deploy-no-wait", "redeploy", "rollback", "abort"]
        )
        if kind.startswith("deploy"):
            args = ["deploy", rng.choice([V43, V44, V44, V45, V45])]
            if kind == "deploy-no-wait":
                args.append("--no-wait")
        else:
            args = [kind]
        # An abort comes once something may be rolling out; the rest within 3 s of each other.
        at = round(rng.uniform(1.5, 5) if kind == "abort" else rng.uniform(0, 3), 2)
        kill = round(rng.uniform(0.3, 5), 2) if rng.random() < 0.3 else None
        ops.append(Op(kind, args, at, kill))
    faults = rng.sample(names, rng.randint(0, 2))
    fate = rng.choice(["healthy", "healthy", "slow"])
    return sorted(ops, key=lambda o: o.at), faults, fate


def _run_round(ops: list[Op], env: dict[str, str]) -> None:
    """Start each process at its time, kill at its time, wait for all (at most their limit)."""
    began = time.monotonic()
    pending = list(ops)
    while True:
        now = time.monotonic()
        while pending and now - began >= pending[0].at:
            _start(pending.pop(0), env)
        running = [o for o in ops if o.proc is not None and o.proc.poll() is None]
        for op in running:
            assert op.proc is not None
            age = now - op.started
            if op.kill_after is not None and age >= op.kill_after:
                op.proc.send_signal(signal.SIGKILL)
                op.killed = True
            elif age > PROCESS_LIMIT:
                op.proc.send_signal(signal.SIGKILL)
                op.outlived = True
        if not pending and not running:
            break
        time.sleep(0.05)
    for op in ops:
        assert op.proc is not None
        op.out, op.err = op.proc.communicate()


def _still(sim: RolloutSimulator, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sim.idle():
            return True
        time.sleep(0.1)
    return sim.idle()


def _expected_task_definition(records: list[DeploymentRecord]) -> tuple[str, str] | None:
    """(the task definition the newest settled record says runs, which record says so)."""
    settled = [
        r
        for r in records
        if r.finished_at is not None
        and r.outcome in (Outcome.COMPLETED, Outcome.ROLLED_BACK, Outcome.ABORTED)
    ]
    for r in sorted(settled, key=lambda r: r.finished_at or r.started_at, reverse=True):
        if r.outcome is Outcome.COMPLETED:
            return r.task_definition, r.id
        if r.outcome is Outcome.ROLLED_BACK and r.final and r.final.rollback_task_definition:
            return r.final.rollback_task_definition, r.id
        if r.outcome is Outcome.ABORTED and r.outcome_reason.endswith(" is back"):
            return r.previous_task_definition, r.id
    return None


def _read_after(
    stack: LocalStack,
) -> tuple[list[DeploymentRecord], LockHeld | None, dict[str, Any] | None, datetime]:
    """What an operator's `deploybot status` then `deploy` would meet, straight from moto:
    the records (reconciled), the lock (if held by a live holder), the service. A moto slow
    to answer on this loaded machine (the harness's own read timing out) is asked again."""
    for attempt in range(5):
        engine = Engine(stack.settings)
        try:
            engine.status()  # reconciles whatever nobody followed to its end (a killed follower)
            records = engine.ledger.history(200)
            held: LockHeld | None = None
            try:
                engine.check_lock()
            except LockHeld as exc:
                held = exc
            return records, held, engine.aws.describe_service(), engine.clock.now()
        except DeployError:
            if attempt == 4:
                raise
            time.sleep(2)
        finally:
            engine.close()
    raise AssertionError("unreachable")


def _unproven(record: DeploymentRecord, now: datetime) -> bool:
    """A start whose process was killed after sending UpdateService and before ECS showed
    its deployment (a lost answer, or a request lost on its way): ECS shows none, and no
    other process may say "never started" before NEVER_STARTED_AFTER (the longest the dead
    process's call could still land, by any clock: bot/deploy/reconcile.py). Open, and
    holding the lock, until then by design; a break after it."""
    return (
        record.open
        and not record.ecs_deployment_id
        and now - record.started_at < NEVER_STARTED_AFTER
    )


def _judge_round(
    n: int,
    ops: list[Op],
    faults: list[str],
    fate: str,
    stack: LocalStack,
    sim: RolloutSimulator,
    watch: EcsWatch,
    initial: set[str],
) -> list[str]:
    breaks: list[str] = []

    def broke(what: str) -> None:
        breaks.append(f"round {n}: {what}")

    for op in ops:
        said = op.out + op.err
        if op.outlived:
            broke(f"{' '.join(op.args)} outlived its timeout ({PROCESS_LIMIT:.0f} s)")
        if "Traceback" in said:
            broke(f"{' '.join(op.args)} printed a traceback: {op.err[-600:]}")
    if not _still(sim, 60):
        broke("ECS never settled")
        return breaks
    records, held, service, now = _read_after(stack)
    if held is not None:
        holder = next((r for r in records if r.id == held.deployment_id), None)
        if holder is None:
            # Its process was SIGKILLed between taking the lock and writing its record (the
            # soak's seed 247036231, round 70): nothing says it is dead, so nobody may take the
            # lock before its lease and CLOCK_SKEW have passed (Lock.lapsed); a break after.
            if now - held.since > timedelta(seconds=LEASE) + CLOCK_SKEW:
                broke(f"the lock is held by no record, past its lease: {held}")
        elif not _unproven(holder, now):
            broke(f"the lock is held with nothing rolling out: {held}")
    by_id = {r.id: r for r in records}
    assert service is not None
    for r in records:
        if r.open and not _unproven(r, now):
            broke(f"record {r.id} ({r.kind} of {r.tag}) left open with ECS still")
    expected = _expected_task_definition(records)
    if expected is not None and service["taskDefinition"] != expected[0]:
        broke(
            f"ECS runs {service['taskDefinition'].rsplit('/', 1)[-1]}, the newest settled "
            f"record ({expected[1]}) says {expected[0].rsplit('/', 1)[-1]}"
        )
    own = {r.ecs_deployment_id: r for r in records if r.ecs_deployment_id}
    accounted = set(initial) | set(own)
    for r in records:
        accounted.add(r.abort_ecs_deployment_id)
        if r.final is not None:
            accounted.add(r.final.rollback_deployment)
    for ecs_id, d in watch.seen.items():
        if ecs_id not in accounted:
            same = [
                f"{r.id} {r.kind} {r.outcome} ecs={r.ecs_deployment_id}"
                for r in records
                if r.task_definition == d["taskDefinition"]
            ]
            broke(
                f"ECS deployment {ecs_id} ({d['taskDefinition'].rsplit('/', 1)[-1]}, "
                f"{d.get('rolloutState')}, created {d.get('createdAt')}) is no record's; "
                f"records of its task definition: {same}"
            )
    for at, going in watch.together:
        ours = [own[i] for i in going if i in own] + [i for i in going if i not in accounted]
        if len(ours) > 1 and not any(
            isinstance(r, DeploymentRecord) and r.kind == "rollback" for r in ours
        ):
            names = [r.id if isinstance(r, DeploymentRecord) else r for r in ours]
            broke(f"two deploybot deployments in progress at once at {at:.1f}: {names}")
            break
    faulted = bool(faults)
    for op in ops:
        if op.killed or op.outlived:
            continue
        code, what = op.code, " ".join(op.args)
        found = _ID.search(op.out + op.err)
        record = by_id.get(found.group(1)) if found else None
        outcome = record.outcome if record else None
        if code == 0:
            if op.kind == "deploy-no-wait":
                continue
            wanted = Outcome.ABORTED if op.kind == "abort" else Outcome.COMPLETED
            if outcome is not wanted:
                broke(
                    f"{what} exited 0, its record {found and found.group(1)} says {outcome}: "
                    f"{op.out[-400:]}"
                )
        elif code == 1:
            if op.kind == "deploy-no-wait" or outcome not in (
                Outcome.FAILED,
                Outcome.ROLLED_BACK,
                Outcome.ABORTED,
            ):
                broke(f"{what} exited 1, its record {found and found.group(1)} says {outcome}")
        elif code == 2:
            if record is not None and op.kind != "abort" and outcome is not Outcome.NOT_STARTED:
                broke(f"{what} exited 2 (nothing changed), but its record says {outcome}")
        elif code == 3:
            if not (faulted or fate == "slow" or any(o.kind == "abort" for o in ops)):
                broke(f"{what} exited 3 with no slow rollout, abort or fault: {op.out[-300:]}")
        elif code == 4:
            if not faulted:
                broke(f"{what} exited 4 with no wire fault: {op.out[-300:]}")
        else:
            broke(f"{what} exited {code}: {op.err[-300:]}")
    return breaks


@pytest.fixture
def lifecycle_env(
    stack: LocalStack, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": proxy.endpoint_url,
        "ROLLOUT_TIMEOUT_SECONDS": str(TIMEOUT),
        "ROLLOUT_POLL_SECONDS": "0.25",
        "LOCK_LEASE_SECONDS": str(LEASE),
        "DEPLOYBOT_USER": "random@lifecycle",
        "COLUMNS": "160",
    }
    yield env


def test_random_lifecycle_keeps_its_invariants(
    stack: LocalStack,
    aws: MotoServer,
    proxy: FaultProxy,
    simulator: RolloutSimulator,
    lifecycle_env: dict[str, str],
) -> None:
    seed = int(os.environ.get("DEPLOYBOT_LIFECYCLE_SEED") or random.randrange(1 << 32))
    rounds = int(os.environ.get("DEPLOYBOT_LIFECYCLE_ROUNDS", "2"))
    minutes = float(os.environ.get("DEPLOYBOT_LIFECYCLE_MINUTES", "0"))
    print(f"lifecycle seed: {seed} (DEPLOYBOT_LIFECYCLE_SEED={seed} replays it)", flush=True)
    rng = random.Random(seed)
    simulator.slow_ticks = SLOW_TICKS
    simulator.mark_broken(V45 + SUFFIX)
    names = sorted(_faults(proxy))
    watch = EcsWatch(stack.settings)
    engine = Engine(stack.settings)
    try:
        raw = engine.aws.describe_service()
    finally:
        engine.close()
    assert raw is not None
    initial = {d["id"] for d in raw["deployments"]}
    reader = threading.Thread(target=watch.run, name="ecs-watch", daemon=True)
    reader.start()
    figures = Figures()
    began = time.monotonic()
    try:
        n = 0
        while n < rounds or time.monotonic() - began < minutes * 60:
            n += 1
            ops, faults, fate = _plan_round(rng, names)
            if fate == "slow":
                simulator.mark_slow(V44 + SUFFIX)
            else:
                simulator.mark_healthy(V44 + SUFFIX)
            table = _faults(proxy)
            for name in faults:
                table[name]()
            _run_round(ops, lifecycle_env)
            proxy.clear()
            breaks = _judge_round(n, ops, faults, fate, stack, simulator, watch, initial)
            figures.rounds = n
            figures.operations += len(ops)
            figures.kills += sum(o.killed for o in ops)
            figures.faults += len(faults)
            figures.breaks += breaks
            print(
                f"round {n}: {[' '.join(o.args) + f'={o.code}' for o in ops]} faults {faults} "
                f"v4.4.0 {fate}; {len(breaks)} breaks",
                flush=True,
            )
            for line in breaks:
                print("  BREAK " + line, flush=True)
    finally:
        watch.stop.set()
        reader.join(timeout=5)
    report(
        "random lifecycle",
        seed=seed,
        rounds=figures.rounds,
        operations=figures.operations,
        kills=figures.kills,
        faults=figures.faults,
        breaks=len(figures.breaks),
        minutes=round((time.monotonic() - began) / 60, 1),
    )
    assert not figures.breaks, f"seed {seed}:\n" + "\n".join(figures.breaks)
