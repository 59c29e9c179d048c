"""API economy of one three-task rollout with 1, 5 and 20 watchers, against per-watcher polling.

deploybot: ``Engine.deploy``, then the watchers: half of them Slack progress messages
(``ProgressMessage``, each its own message, updated at most every ``--min-interval`` s), half
``engine.watch`` iterated in threads. All share the service's one poller.

Baseline (the recipe without the bot, each watcher on its own): the deploy's four calls with
boto3 (describe-services, describe-task-definition, register-task-definition,
update-service), then every watcher polls DescribeServices at the same interval until the new
deployment is COMPLETED, as ``aws ecs wait services-stable`` per watcher would; the Slack
watchers chat.update their message after every poll.

AWS calls are counted by the moto server (server side); Slack calls by the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import Counter

import boto3
from slack_sdk import WebClient

from bench.lab import BOT_TOKEN, DEPLOYS, Lab, header
from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.settings import Settings
from bot.slack import messages
from bot.slack.app import web_client
from bot.slack.progress import ProgressMessage


def split(watchers: int) -> tuple[int, int]:
    """(Slack messages, engine.watch threads)."""
    slack = (watchers + 1) // 2
    return slack, watchers - slack


def run_deploybot(lab: Lab, engine: Engine, tag: str, watchers: int, min_interval: float) -> dict:
    n_slack, n_threads = split(watchers)
    lab.moto.requests.clear()
    lab.emulator.clear()
    polls_before = engine.poller.polls
    started = time.monotonic()
    record = engine.deploy(tag, Requester(who="bench", source="cli"))
    contents: list[str] = []

    def thread_watch(first: bool) -> None:
        for snap in engine.watch(record):
            if first:
                contents.append(repr(messages.progress(record, snap).as_kwargs()))

    threads = [
        threading.Thread(target=thread_watch, args=(i == 0,)) for i in range(max(n_threads, 1))
    ]
    # With no thread watcher the first thread still records the distinct contents; it is one
    # more watcher of the one poller, which adds no AWS call.
    for t in threads:
        t.start()

    async def slack_watchers() -> list[ProgressMessage]:
        slack_settings = Settings(  # type: ignore[call-arg]
            _env_file=None, slack_api_url=lab.emulator.api_url, slack_bot_token=BOT_TOKEN
        )
        client = web_client(slack_settings)
        progress = [
            ProgressMessage(client, engine, record, DEPLOYS, min_interval=min_interval)
            for _ in range(n_slack)
        ]
        for p in progress:
            await p.show_now(messages.progress(record, None))  # posts it, records its place
            p.updates = 0  # count the chat.update calls after the post
        await asyncio.gather(*(p.follow() for p in progress))
        return progress

    progress = asyncio.run(slack_watchers())
    for t in threads:
        t.join()
    duration = time.monotonic() - started
    reqs = [r for r in lab.moto.requests if r.service in ("ecs", "ecr", "dynamodb")]
    ops = Counter(f"{r.service}:{r.operation}" for r in reqs)
    distinct = len(dict.fromkeys(contents))
    return {
        "duration": duration,
        "polls": engine.poller.polls - polls_before,
        "describe_services": ops["ecs:DescribeServices"],
        "ops": ops,
        "updates": len(lab.emulator.calls_of("chat.update")),
        "messages": n_slack,
        "distinct": distinct,
        "total": sum(ops.values()),
        "per_message": [p.updates for p in progress],
    }


def run_baseline(lab: Lab, tag: str, watchers: int, poll: float) -> dict:
    n_slack, n_threads = split(watchers)
    settings = lab.settings
    assert settings is not None
    lab.moto.requests.clear()
    lab.emulator.clear()
    started = time.monotonic()
    ecs = boto3.client("ecs")
    svc = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
    td = ecs.describe_task_definition(taskDefinition=svc["services"][0]["taskDefinition"])[
        "taskDefinition"
    ]
    container = dict(td["containerDefinitions"][0])
    container["image"] = container["image"].rsplit(":", 1)[0] + ":" + tag
    new = ecs.register_task_definition(
        family=td["family"],
        taskRoleArn=td["taskRoleArn"],
        executionRoleArn=td["executionRoleArn"],
        networkMode=td["networkMode"],
        containerDefinitions=[container],
        requiresCompatibilities=td["requiresCompatibilities"],
        cpu=td["cpu"],
        memory=td["memory"],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(
        cluster=settings.ecs_cluster, service=settings.ecs_service, taskDefinition=new
    )
    slack = WebClient(token=BOT_TOKEN, base_url=lab.emulator.api_url)

    def watcher(with_slack: bool) -> None:
        client = boto3.client("ecs")
        ts = ""
        if with_slack:
            ts = slack.chat_postMessage(channel=DEPLOYS, text=f"Deploying {tag}")["ts"]
        while True:
            s = client.describe_services(
                cluster=settings.ecs_cluster, services=[settings.ecs_service]
            )["services"][0]
            primary = next(d for d in s["deployments"] if d["status"] == "PRIMARY")
            done = primary["taskDefinition"] == new and primary["rolloutState"] == "COMPLETED"
            if with_slack:
                slack.chat_update(
                    channel=DEPLOYS,
                    ts=ts,
                    text=f"{tag}: {primary['runningCount']}/{primary['desiredCount']} "
                    f"{primary['rolloutState']}",
                )
            if done:
                return
            time.sleep(poll)

    threads = [threading.Thread(target=watcher, args=(True,)) for _ in range(n_slack)]
    threads += [threading.Thread(target=watcher, args=(False,)) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    duration = time.monotonic() - started
    reqs = [r for r in lab.moto.requests if r.service in ("ecs", "ecr", "dynamodb")]
    ops = Counter(f"{r.service}:{r.operation}" for r in reqs)
    return {
        "duration": duration,
        "describe_services": ops["ecs:DescribeServices"],
        "ops": ops,
        "updates": len(lab.emulator.calls_of("chat.update")),
        "messages": n_slack,
        "total": sum(ops.values()),
    }


# The calls a deployment costs by how it ends (#26): deploybot's own, from the deploy to the
# record closed. ``--per-status`` runs one of each on one engine, a watcher of its own.
STATUS_OPS = (
    "ecs:DescribeServices",
    "ecs:ListServiceDeployments",
    "ecs:DescribeServiceRevisions",
    "ecs:DescribeServiceDeployments",
    "ecs:UpdateService",
    "ecs:StopServiceDeployment",
)


def _one(lab: Lab, engine: Engine, tag: str, fate: str, refused: bool) -> dict:
    """Deploy ``tag`` (``fate``: healthy, broken, or slow and aborted), follow it to its
    outcome, and count the AWS calls it cost."""
    sim = lab.simulator
    assert sim is not None
    full = f"{tag}-ecr-ecs-fargate"
    sim.mark_healthy(full)
    if fate == "broken":
        sim.mark_broken(full)
    elif fate == "aborted":
        sim.mark_slow(full)
    faults = getattr(lab.moto, "faults", None)
    if refused and faults is not None and hasattr(faults, "unimplement"):
        for op in (
            "ListServiceDeployments",
            "DescribeServiceDeployments",
            "DescribeServiceRevisions",
        ):
            faults.unimplement("ecs", op)
    lab.moto.requests.clear()
    polls_before = engine.poller.polls
    record = engine.deploy(tag, Requester(who="bench", source="cli"))
    if fate == "aborted":
        time.sleep(3 * lab.poll_seconds)  # a few polls into the rollout
        aborted = engine.abort(Requester(who="bench-abort", source="cli"))
        outcome, _ = engine.follow_abort(aborted)
    else:
        final = None
        for snap in engine.watch(record):
            final = snap
        outcome = final.outcome if final else None
    time.sleep(2 * lab.poll_seconds)  # the record closed, the last writes in
    if faults is not None:
        faults.clear()
    sim.mark_healthy(full)
    reqs = [r for r in lab.moto.requests if r.service in ("ecs", "ecr", "dynamodb")]
    ops = Counter(f"{r.service}:{r.operation}" for r in reqs)
    return {
        "outcome": outcome.value if outcome else "?",
        "polls": engine.poller.polls - polls_before,
        "ops": ops,
        "total": sum(ops.values()),
    }


def per_status(poll: float, step: float, refused: bool = False) -> list[tuple[str, dict]]:
    """One deployment of each ending, on one engine: completed, rolled back, aborted."""
    rows = []
    with Lab(poll_seconds=poll, step_seconds=step) as lab:
        engine = Engine(lab.settings)  # type: ignore[arg-type]
        try:
            for tag, fate in (("v4.4.0", "healthy"), ("v4.5.0", "broken"), ("v4.5.0", "aborted")):
                rows.append((fate, _one(lab, engine, tag, fate, refused)))
        finally:
            engine.close()
    return rows


def print_per_status(rows: list[tuple[str, dict]]) -> None:
    names = [op.split(":")[1] for op in STATUS_OPS]
    print(
        f"\n   {'deployment':10} {'outcome':12} {'polls':>5} "
        + " ".join(f"{n[:14]:>14}" for n in names)
        + f" {'AWS total':>9}"
    )
    for fate, row in rows:
        print(
            f"   {fate:10} {row['outcome']:12} {row['polls']:5} "
            + " ".join(f"{row['ops'][op]:14}" for op in STATUS_OPS)
            + f" {row['total']:9}"
        )
    for fate, row in rows:
        print(f"   {fate}: {dict(sorted(row['ops'].items()))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--poll", type=float, default=0.5, help="ROLLOUT_POLL_SECONDS")
    parser.add_argument("--step", type=float, default=0.5, help="simulator step, seconds")
    parser.add_argument(
        "--min-interval",
        type=float,
        default=0.2,
        help="progress messages' min update interval (production: 2 s at a 5 s poll)",
    )
    parser.add_argument(
        "--per-status",
        action="store_true",
        help="AWS calls of one deployment per ending (completed, rolled back, aborted)",
    )
    parser.add_argument(
        "--refused",
        action="store_true",
        help="with --per-status: the service-deployment operations refused (the fallback)",
    )
    args = parser.parse_args()
    if args.per_status:
        header(
            f"economy per status: one 3-task rollout each, poll {args.poll} s, simulator step "
            f"{args.step} s" + (", service-deployment reads refused" if args.refused else "")
        )
        print_per_status(per_status(args.poll, args.step, args.refused))
        return 0
    header(
        f"economy: one 3-task rollout, poll {args.poll} s, simulator step {args.step} s, "
        f"chat.update at most every {args.min_interval} s"
    )
    tags = ["v4.4.0", "v4.5.0"]
    with Lab(poll_seconds=args.poll, step_seconds=args.step) as lab:
        engine = Engine(lab.settings)  # type: ignore[arg-type]
        rows = []
        for i, watchers in enumerate((1, 5, 20)):
            ours = run_deploybot(lab, engine, tags[i % 2], watchers, args.min_interval)
            base = run_baseline(lab, tags[(i + 1) % 2] + "-ecr-ecs-fargate", watchers, args.poll)
            rows.append((watchers, ours, base))
        engine.close()
    print(
        "\n   per poll: DescribeServices after the deploy's own one, per poll interval of the"
        " rollout;\n   distinct: contents the message went through after it was posted"
    )
    print(
        f"\n   {'watchers':>8} {'who':10} {'secs':>5} {'DescSvc':>7} {'per poll':>8} "
        f"{'upd/msg':>8} {'distinct':>8} {'AWS total':>9}"
    )
    for watchers, ours, base in rows:
        intervals = ours["duration"] / args.poll
        b_intervals = base["duration"] / args.poll
        print(
            f"   {watchers:8} {'deploybot':10} {ours['duration']:5.1f} "
            f"{ours['describe_services']:7} "
            f"{(ours['describe_services'] - 1) / intervals:8.2f} "
            f"{ours['updates'] / max(ours['messages'], 1):8.1f} {ours['distinct']:8} "
            f"{ours['total']:9}"
        )
        print(
            f"   {watchers:8} {'baseline':10} {base['duration']:5.1f} "
            f"{base['describe_services']:7} "
            f"{(base['describe_services'] - 1) / b_intervals:8.2f} "
            f"{base['updates'] / max(base['messages'], 1):8.1f} {'-':>8} {base['total']:9}"
        )
    for watchers, ours, base in rows:
        print(
            f"   {watchers:2} watchers: deploybot {ours['polls']} polls, "
            f"{ours['describe_services']} DescribeServices (deploy's 1 + 1 per poll: "
            f"{ours['describe_services'] == ours['polls'] + 1}); updates per message "
            f"{ours['per_message']}; AWS ratio baseline/deploybot "
            f"{base['total'] / ours['total']:.2f}"
        )
        print(f"      deploybot by operation: {dict(sorted(ours['ops'].items()))}")
        print(f"      baseline by operation:  {dict(sorted(base['ops'].items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
