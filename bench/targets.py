"""AWS calls per poll, and the status of every target, with 1, 5 and 20 targets.

deploybot: one process, one ``Fleet`` (bot/fleet.py) holding an engine per target. First
``Fleet.statuses()``, the status of every target as `/deploy-status` and `deploybot status`
show it (best of three, engines warm, nothing rolling out). Then every target rolls out at
once (a slow image, so all stay IN_PROGRESS through the window); each
engine's poller polls its own service, and bot/deploy/batch.py serves them from one
DescribeServices per cluster (ten services a call, the API's limit) per poll interval.

Baseline: a poll loop per service (one `aws ecs wait services-stable` or one single-target
bot per service), each calling DescribeServices for its own service every interval; and the
status of every target as one single-target status after another.

The targets sit in two clusters, 60 % in the stack's and the rest in a second one (1 target:
1 + 0; 5: 3 + 2; 20: 12 + 8, so the stack's cluster needs two calls of at most ten).
AWS calls are counted by the moto server.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter

import boto3

from bench.lab import Lab, header
from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.fleet import Ask, Fleet
from bot.local.stack import add_service, create_stack
from bot.rules import Action, Door
from bot.target import Target
from bot.targets import Targets

SECOND_CLUSTER = "hello-world-bench-second"
SLOW_TAG = "v4.4.0-ecr-ecs-fargate"


def layout(lab: Lab, n: int) -> Targets:
    """``n`` targets: the stack's service first, then services made here, in two clusters."""
    settings, info = lab.settings, lab.info
    assert settings is not None and info is not None
    first = math.ceil(n * 0.6)
    targets = [Target("t00", settings.ecs_cluster, settings.ecs_service, settings.ecr_repository)]
    for i in range(1, n):
        cluster = settings.ecs_cluster if i < first else SECOND_CLUSTER
        service = f"hello-world-bench-{i:02d}"
        add_service(info, settings, cluster=cluster, service=service, desired_count=2)
        targets.append(Target(f"t{i:02d}", cluster, service, settings.ecr_repository))
    return Targets(tuple(targets), "t00")


def fresh(lab: Lab) -> None:
    """An empty moto with the stack in it again: each run starts from the same world."""
    assert lab.settings is not None
    lab.moto.reset()
    lab.info = create_stack(lab.moto.endpoint_url, lab.settings)
    lab.moto.requests.clear()


def clusters_calls(targets: Targets) -> int:
    """DescribeServices calls one batched read of every target needs."""
    per: Counter[str] = Counter(t.cluster for t in targets)
    return sum(math.ceil(count / 10) for count in per.values())


def describe_calls(lab: Lab) -> int:
    return lab.moto.requests.count("ecs", "DescribeServices")


def run_deploybot(lab: Lab, targets: Targets, window: float) -> dict[str, float]:
    settings = lab.settings
    assert settings is not None and lab.simulator is not None
    lab.simulator.mark_slow(SLOW_TAG)
    fleet = Fleet(settings, targets)
    ask = Ask.at(Door.CLI, Requester("bench", "cli"))
    try:
        # The status of every target first, while no poller runs (their calls would count).
        fleet.statuses()  # the engines are made, their first reads done
        lab.moto.requests.clear()
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            rows = fleet.statuses()
            times.append(time.monotonic() - t0)
            assert all(r.status is not None for r in rows), [r.error for r in rows]
        status_ops = Counter(f"{r.service}:{r.operation}" for r in lab.moto.requests)

        for target in targets:
            plan = fleet.plan(target, Action.DEPLOY, ask, tag=SLOW_TAG)
            fleet.engine(target).start(plan)  # followed by the target's poller
        time.sleep(2 * lab.poll_seconds)  # every poller is polling
        lab.moto.requests.clear()
        polls = sum(e.poller.polls for e in fleet.built())
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        calls = describe_calls(lab)
        polls = sum(e.poller.polls for e in fleet.built()) - polls
        all_calls = len(lab.moto.requests)

    finally:
        fleet.close()
    intervals = elapsed / lab.poll_seconds
    return {
        "per_interval": calls / intervals,
        "polls_per_interval": polls / intervals,
        "aws_per_interval": all_calls / intervals,
        "status_s": min(times),
        "status_describe": status_ops["ecs:DescribeServices"] / 3,
        "status_calls": sum(status_ops.values()) / 3,
    }


def run_baseline(lab: Lab, targets: Targets, window: float) -> dict[str, float]:
    """A poll loop per service for ``window`` s, then each target's status one by one."""
    settings = lab.settings
    assert settings is not None
    stop = threading.Event()

    def loop(target: Target) -> None:
        ecs = boto3.client("ecs")
        while not stop.is_set():
            ecs.describe_services(cluster=target.cluster, services=[target.service])
            stop.wait(lab.poll_seconds)

    threads = [threading.Thread(target=loop, args=(t,)) for t in targets]
    lab.moto.requests.clear()
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(window)
    stop.set()
    elapsed = time.monotonic() - started
    for t in threads:
        t.join()
    calls = describe_calls(lab)

    engines = [Engine(t.settings(settings)) for t in targets]
    try:
        for engine in engines:
            engine.status(0)  # made and warmed as the fleet's are
        lab.moto.requests.clear()
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            for engine in engines:
                engine.status(0)
            times.append(time.monotonic() - t0)
        status_ops = Counter(f"{r.service}:{r.operation}" for r in lab.moto.requests)
    finally:
        for engine in engines:
            engine.close()
    intervals = elapsed / lab.poll_seconds
    return {
        "per_interval": calls / intervals,
        "polls_per_interval": calls / intervals,
        "aws_per_interval": calls / intervals,
        "status_s": min(times),
        "status_describe": status_ops["ecs:DescribeServices"] / 3,
        "status_calls": sum(status_ops.values()) / 3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="1,5,20")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--window", type=float, default=10.0, help="seconds of polling counted")
    args = parser.parse_args()
    header("AWS calls per poll and the status of every target (bench.targets)")
    print(
        f"   poll every {args.poll} s, {args.window} s counted; targets in two clusters "
        "(60 % / 40 %)"
    )
    rows = []
    with Lab(poll_seconds=args.poll, step_seconds=0.25) as lab:
        for n in [int(x) for x in args.targets.split(",")]:
            for who in ("deploybot", "baseline"):
                fresh(lab)
                targets = layout(lab, n)
                run = run_deploybot if who == "deploybot" else run_baseline
                result = run(lab, targets, args.window)
                rows.append((n, who, clusters_calls(targets), result))
                print(f"   {n} targets, {who}: done", flush=True)
    print()
    print(
        "| targets | who | DescribeServices per poll interval | (expected) | pollers' polls "
        "per interval | all AWS calls per interval | status of all: s | its DescribeServices "
        "| its AWS calls |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, who, expected, r in rows:
        print(
            f"| {n} | {who} | {r['per_interval']:.2f} | {expected if who == 'deploybot' else n} "
            f"| {r['polls_per_interval']:.2f} | {r['aws_per_interval']:.2f} "
            f"| {r['status_s']:.3f} | {r['status_describe']:.0f} | {r['status_calls']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
