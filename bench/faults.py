"""Reliability under faults: per fault class, deployments run with the fault injected at the wire.

Each run is a fresh stack in moto (the rollout simulator moving ECS) and a real
``deploybot`` process: ``deploybot deploy`` through the fault proxy for the AWS faults, the
bot (``deploybot serve --http``) with the Slack emulator failing for the Slack faults. A run
counts as correct when the outcome (exit code, history, what Slack shows) is what ECS did;
then the table is read straight from DynamoDB: records left open, locks left held.

    uv run --frozen python -m bench.faults [--runs 3] [--only 'TEXT|TEXT'] [--code DIR]

Prints one Markdown row per fault class: fault, runs, outcomes correct, records left open,
locks left held (the rows of BENCHMARKS.md's reliability table). ``--code DIR`` runs the
``deploybot`` processes from another checkout (the baseline: ``git archive main | tar -x -C
DIR``); the harness, the faults and the counting stay this checkout's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3

from bench.lab import ALICE, BOT_TOKEN, DEPLOYS, SIGNING_SECRET, Child, header
from bot.deploy.engine import Engine
from bot.deploy.rollout import Outcome
from bot.local.aws import DEFAULT_REGION, UNSAFE_AWS_VARS, MotoServer, aws_env
from bot.local.faultproxy import FaultProxy
from bot.local.net import free_port
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.local.stack import StackInfo, add_deployment_alarm, create_stack
from bot.settings import Settings

V44 = "v4.4.0-ecr-ecs-fargate"
STEP = 0.1  # simulator step: a healthy three-task rollout in about a second
CODE: dict[str, str] = {}  # PYTHONPATH for the deploybot processes (--code)


@dataclass
class Run:
    """One run's world: moto with a fresh stack, the proxy in front, the emulator."""

    moto: MotoServer
    proxy: FaultProxy
    simulator: RolloutSimulator
    emulator: SlackEmulator
    settings: Settings
    info: StackInfo

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "AWS_ENDPOINT_URL": self.proxy.endpoint_url, **CODE, **env}
        full["DEPLOYBOT_USER"] = "bench@faults"
        try:
            return subprocess.run(
                [sys.executable, "-m", "bot", *args],
                env=full,
                capture_output=True,
                text=True,
                timeout=90,
                cwd=CODE.get("PYTHONPATH"),
            )
        except subprocess.TimeoutExpired as exc:  # a watch that never ends
            print(f"   `deploybot {' '.join(args)}` did not end within {exc.timeout:.0f} s")
            return subprocess.CompletedProcess(exc.cmd, -9, "", "")

    def engine(self) -> Engine:
        return Engine(self.settings)

    def newest(self) -> Outcome | None:
        engine = self.engine()
        try:
            records = engine.ledger.history(1)
            return records[0].outcome if records else None
        finally:
            engine.close()

    def wait(self, predicate: Callable[[], bool], timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def after_update_service(self, then: Callable[[], object]) -> threading.Thread:
        def go() -> None:
            if self.wait(lambda: self.moto.requests.count("ecs", "UpdateService") > 0):
                then()

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        return thread

    def start_bot(self, **env: str) -> Child:
        port = free_port()
        full = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.proxy.endpoint_url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.emulator.api_url,
            "SLACK_CHANNEL": DEPLOYS,
            "DEPLOY_ALLOWED_USERS": ALICE,
            **CODE,
            **env,
        }
        args = [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1"]
        child = Child([*args, "--port", str(port)], full, port)
        if CODE:
            child.cwd = Path(CODE["PYTHONPATH"])
        return child.start()

    def final_message(self, words: str, timeout: float = 90) -> bool:
        try:
            self.emulator.wait_for(
                lambda: any(
                    words in m.all_text for m in self.emulator.messages(DEPLOYS) if m.bot_id
                ),
                timeout=timeout,
            )
        except TimeoutError:
            return False
        return True


# -- the fault classes: each runs one deployment under its fault; True when it ended right --


def lost_answer(run: Run) -> bool:
    run.proxy.drop_answer("ecs", "UpdateService", times=1)
    run.proxy.refuse("ecs", "UpdateService", code="AccessDeniedException")
    done = run.cli("deploy", "v4.4.0")
    return done.returncode == 0 and run.newest() == Outcome.COMPLETED


def reset_then_expired(run: Run) -> bool:
    run.proxy.reset_answer("ecs", "UpdateService", times=1)
    run.proxy.refuse("ecs", "UpdateService", code="ExpiredTokenException")
    done = run.cli("deploy", "v4.4.0")
    return done.returncode == 0 and run.newest() == Outcome.COMPLETED


def lost_before_ecs(run: Run) -> bool:
    run.proxy.reset_answer("ecs", "UpdateService", times=1, forward=False)
    run.proxy.refuse("ecs", "UpdateService", code="AccessDeniedException")
    done = run.cli("deploy", "v4.4.0")
    nothing = run.moto.requests.count("ecs", "UpdateService") == 0
    return done.returncode == 2 and nothing and run.newest() in (None, Outcome.NOT_STARTED)


def ledger_denied(run: Run) -> bool:
    run.proxy.refuse("dynamodb", "UpdateItem", code="AccessDeniedException", times=1)
    done = run.cli("deploy", "v4.4.0")
    return done.returncode == 0 and run.newest() == Outcome.COMPLETED


def throttled_update(run: Run) -> bool:
    run.proxy.refuse("ecs", "UpdateService", code="ThrottlingException", times=3)
    done = run.cli("deploy", "v4.4.0")
    return done.returncode == 0 and run.newest() == Outcome.COMPLETED


def credentials_expire(run: Run) -> bool:
    """Every AWS call fails once UpdateService went through: UNKNOWN (exit 4) at the timeout;
    then, credentials renewed, `deploybot status` records what ECS did."""
    run.simulator.slow_ticks = 100_000
    run.simulator.mark_slow(V44)
    run.after_update_service(lambda: run.proxy.refuse("*", code="ExpiredTokenException"))
    done = run.cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="3")
    lost = done.returncode == 4 and run.newest() is None
    run.proxy.clear()
    run.simulator.slow_ticks = 2
    run.wait(run.simulator.idle)
    status = run.cli("status")
    return lost and status.returncode == 0 and run.newest() == Outcome.COMPLETED


def replaced(run: Run) -> bool:
    run.simulator.slow_ticks = 100_000
    run.simulator.mark_slow(V44)
    ecs = boto3.client("ecs", endpoint_url=run.moto.endpoint_url, region_name=DEFAULT_REGION)

    def console_update() -> None:
        run.wait(lambda: bool(run.engine().ledger.history(1)[0].ecs_deployment_id))
        ecs.update_service(
            cluster=run.settings.ecs_cluster,
            service=run.settings.ecs_service,
            taskDefinition=run.info.task_definition_arn,
        )
        run.simulator.slow_ticks = 2

    run.after_update_service(console_update)
    done = run.cli("deploy", "v4.4.0")
    words = "not started by deploybot" in done.stdout and "circuit breaker" not in done.stdout
    return done.returncode == 1 and words and run.newest() == Outcome.FAILED


def no_wait_then_deploy(run: Run) -> bool:
    first = run.cli("deploy", "v4.4.0", "--no-wait")
    run.wait(run.simulator.idle)
    second = run.cli("deploy", "v4.5.0")
    engine = run.engine()
    try:
        outcomes = [r.outcome for r in engine.ledger.history(2)]
    finally:
        engine.close()
    return (first.returncode, second.returncode) == (0, 0) and outcomes == [Outcome.COMPLETED] * 2


def timed_out(run: Run) -> bool:
    run.simulator.slow_ticks = 30
    run.simulator.mark_slow(V44)
    done = run.cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="1")
    run.wait(run.simulator.idle)
    history = run.cli("history", "-n", "1")
    return done.returncode == 3 and run.newest() == Outcome.COMPLETED and history.returncode == 0


def slack_down_mid_rollout(run: Run) -> bool:
    run.simulator.step_seconds = 0.3
    bot = run.start_bot()
    try:
        run.emulator.slash_command(
            "/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.url + "/slack/events"
        )
        posted = run.final_message("Deploying v4.4.0")
        run.emulator.fail_for(600, "*", drop=True)
        closed = run.wait(lambda: run.newest() == Outcome.COMPLETED)

        def failed() -> int:
            return len(run.emulator.calls_of("chat.update", ok=False))

        # The outage outlasts slack_sdk's own retries (three) of the final update.
        before = failed()
        run.wait(lambda: failed() >= before + 4)
        run.emulator.clear_faults()
        return posted and closed and run.final_message("✅ Deployed")
    finally:
        run.emulator.clear_faults()
        run.simulator.step_seconds = STEP
        bot.stop()


def not_in_channel(run: Run) -> bool:
    run.emulator.remove_bot(DEPLOYS)
    bot = run.start_bot()
    try:
        run.moto.requests.clear()
        run.emulator.slash_command(
            "/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.url + "/slack/events"
        )
        answer = run.emulator.wait_for(lambda: run.emulator.ephemerals(user=ALICE), timeout=60)
        nothing = run.moto.requests.count("ecs", "UpdateService") == 0 and run.newest() is None
        return "/invite" in answer[0].text and nothing
    finally:
        run.emulator.add_bot(DEPLOYS)
        bot.stop()


# The service-deployment operations deploybot reads (#26).
SD_READS = ("ListServiceDeployments", "DescribeServiceDeployments", "DescribeServiceRevisions")


def reads_refused(run: Run, code: str = "AccessDeniedException", status: int = 400) -> bool:
    """The role lacks the service-deployment reads (or the endpoint answers them 5xx): the
    outcome is judged from DescribeServices as before; a broken image is still rolled back."""
    for op in SD_READS:
        run.proxy.refuse("ecs", op, code=code, status=status)
    run.simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    before = sum(run.proxy.count("ecs", op) for op in SD_READS)  # the proxy's log is the bench's
    done = run.cli("deploy", "v4.5.0")
    asked = sum(run.proxy.count("ecs", op) for op in SD_READS) - before
    # Asked once (not retried, not again at every poll); the old code asks nothing.
    return done.returncode == 1 and run.newest() == Outcome.ROLLED_BACK and asked <= 1


def reads_answer_500(run: Run) -> bool:
    return reads_refused(run, code="InternalFailure", status=500)


def stop_refused(run: Run) -> bool:
    """Abort while StopServiceDeployment is refused (AccessDenied): the previous task
    definition goes back with UpdateService; ABORTED, v4.3.0 runs, the abort exits 0."""
    run.simulator.slow_ticks = 100_000
    run.simulator.mark_slow(V44)
    run.proxy.refuse("ecs", "StopServiceDeployment", code="AccessDeniedException")
    started = run.cli("deploy", "v4.4.0", "--no-wait")
    run.wait(lambda: bool(run.engine().ledger.history(1)[0].ecs_deployment_id))
    aborted = run.cli("abort")  # v4.3.0 goes back (healthy); v4.4.0's tasks stay pending
    run.simulator.slow_ticks = 2
    ecs = boto3.client("ecs", endpoint_url=run.moto.endpoint_url, region_name=DEFAULT_REGION)
    service = ecs.describe_services(
        cluster=run.settings.ecs_cluster, services=[run.settings.ecs_service]
    )["services"][0]
    back = service["taskDefinition"] == run.info.task_definition_arn
    return (
        (started.returncode, aborted.returncode) == (0, 0)
        and "is back" in aborted.stdout
        and run.newest() == Outcome.ABORTED
        and back
    )


def start_put_unanswered(run: Run, after: int) -> bool:
    """A PutItem of the start (``after``=0: the history record; 1: the release tag's image)
    applied by DynamoDB, its answer held past the client's read timeout: read back, the
    deploy goes on."""
    run.proxy.delay_answer("dynamodb", "PutItem", seconds=7, after=after)
    done = run.cli("deploy", "v4.4.0")
    return done.returncode == 0 and run.newest() == Outcome.COMPLETED


def record_put_unanswered(run: Run) -> bool:
    return start_put_unanswered(run, after=0)


def tag_put_unanswered(run: Run) -> bool:
    return start_put_unanswered(run, after=1)


def last_read_unanswered(run: Run) -> bool:
    """The start's last read before UpdateService (the record read back for an abort) gets no
    answer: refused (exit 2), ECS never asked, no record left open, the lock free."""
    run.proxy.delay_answer("dynamodb", "GetItem", seconds=7, after=4)
    done = run.cli("deploy", "v4.4.0")
    nothing = run.moto.requests.count("ecs", "UpdateService") == 0
    engine = run.engine()
    try:
        gone = engine.ledger.history(1) == []  # no record of a start ECS never heard of
    finally:
        engine.close()
    return done.returncode == 2 and nothing and gone


def alarm_in_the_bake(run: Run) -> bool:
    """A healthy image whose 5xx alarm fires while ECS bakes it: ECS rolls back; failed
    (exit 1), ROLLED_BACK, the alarm named."""
    alarm = add_deployment_alarm(run.info, run.settings)
    run.simulator.bake_ticks = 10
    run.simulator.mark_alarming(V44)
    done = run.cli("deploy", "v4.4.0")
    said = f"rolled back: alarm {alarm} went to ALARM" in done.stdout
    return done.returncode == 1 and said and run.newest() == Outcome.ROLLED_BACK


def rollback_fails(run: Run) -> bool:
    """A broken image whose rollback fails too (ECS: ROLLBACK_FAILED): failed (exit 1), never
    "rolled back", saying the service may be down."""
    run.simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    run.after_update_service(lambda: run.simulator.mark_broken("v4.3.0-ecr-ecs-fargate"))
    done = run.cli("deploy", "v4.5.0")
    loud = "may be down" in done.stdout + done.stderr
    return done.returncode == 1 and loud and run.newest() == Outcome.FAILED


FAULTS: dict[str, Callable[[Run], bool]] = {
    "UpdateService answer dropped after ECS applied it, retry AccessDenied": lost_answer,
    "UpdateService connection reset after ECS applied it, retry ExpiredToken": reset_then_expired,
    "UpdateService lost before ECS, retry AccessDenied (provably nothing changed)": lost_before_ecs,
    "AccessDenied on the ledger write after UpdateService": ledger_denied,
    "UpdateService throttled 3 times": throttled_update,
    "every AWS call fails mid-rollout (expired credentials), then `status`": credentials_expire,
    "replaced by a console UpdateService mid-rollout": replaced,
    "`--no-wait`, then the next deploy": no_wait_then_deploy,
    "timed out (still rolling out), then `history`": timed_out,
    "Slack connections dropped mid-rollout": slack_down_mid_rollout,
    "bot not in the channel at /deploy": not_in_channel,
    "service-deployment reads refused (AccessDenied), a broken image": reads_refused,
    "service-deployment reads answered HTTP 500, a broken image": reads_answer_500,
    "StopServiceDeployment refused (AccessDenied) at an abort": stop_refused,
    "the history record's PutItem applied, its answer past the read timeout": record_put_unanswered,
    "the release tag's PutItem applied, its answer past the read timeout": tag_put_unanswered,
    "the start's last read before UpdateService unanswered": last_read_unanswered,
    "a 5xx alarm fires while ECS bakes a healthy image": alarm_in_the_bake,
    "a broken image whose rollback fails too (ROLLBACK_FAILED)": rollback_fails,
}


def leftovers(settings: Settings) -> tuple[int, int]:
    """(records left open, locks left held), read straight from the table."""
    engine = Engine(settings)
    try:
        records = engine.ledger.history(50)
        return sum(r.open for r in records), int(engine.ledger.lock_item() is not None)
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per fault class (default 3)")
    parser.add_argument(
        "--only", default="", help="only fault classes containing this text (several: a|b)"
    )
    parser.add_argument("--code", default="", help="run deploybot from this checkout instead")
    args = parser.parse_args()
    if args.code:
        CODE["PYTHONPATH"] = os.path.abspath(args.code)
    header("reliability under faults")
    for name in UNSAFE_AWS_VARS:
        os.environ.pop(name, None)
    rows = []
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy:
        os.environ.update(aws_env(moto.endpoint_url, DEFAULT_REGION))
        os.environ["ROLLOUT_POLL_SECONDS"] = "0.05"
        os.environ["ROLLOUT_TIMEOUT_SECONDS"] = "60"
        emulator = SlackEmulator(
            bot_token=BOT_TOKEN,
            signing_secret=SIGNING_SECRET,
            users={ALICE: "alice"},
            channels={DEPLOYS: "deploys"},
        ).start()
        try:
            for fault, body in FAULTS.items():
                if args.only and not any(part in fault for part in args.only.split("|")):
                    continue
                correct = still_open = held = 0
                for _ in range(args.runs):
                    moto.reset()
                    proxy.clear()
                    emulator.clear()
                    settings = Settings(_env_file=None)  # type: ignore[call-arg]
                    info = create_stack(moto.endpoint_url, settings)
                    with RolloutSimulator(moto, step_seconds=STEP) as simulator:
                        run = Run(moto, proxy, simulator, emulator, settings, info)
                        try:
                            ok = body(run)
                        except Exception as exc:  # a run that breaks is a wrong outcome
                            print(f"   {fault}: {type(exc).__name__}: {exc}")
                            ok = False
                        proxy.clear()
                        opened, locked = leftovers(settings)
                    correct += ok
                    still_open += opened
                    held += locked
                rows.append((fault, args.runs, correct, still_open, held))
                print(f"   {fault}: {correct}/{args.runs} correct", flush=True)
        finally:
            emulator.stop()
    print("\n| fault | runs | outcomes correct | records left open | locks left held |")
    print("|---|---|---|---|---|")
    for fault, runs, correct, opened, held in rows:
        print(f"| {fault} | {runs} | {correct} | {opened} | {held} |")
    return 0 if all(r[2] == r[1] and r[3] == r[4] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
