"""``deploybot stats`` over 1,000 deployments against moto and the GitHub emulator (issue 28).

A year of history on one target (deploys a little more than twice a day, some failed, rolled
back or aborted, with rollbacks and redeploys after them), each deploy shipping two commits of
the emulator's history. Measured:

- the first ``stats`` over the year (cold) and the next ones until GitHub has been asked about
  every completed deploy once (at most 100 a call), the commits' times written on the records;
- every later one (warm): in process (``Engine.stats``) and as the command a person runs
  (``deploybot stats --since 365d``, a process each time), with the AWS and GitHub calls each
  makes: one Query's pages, no Scan, no GitHub.

    uv run --frozen python -m bench.stats [--deployments 1000] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from bench.lab import header, mean_sd
from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.local.aws import DEFAULT_REGION, UNSAFE_AWS_VARS, MotoServer, aws_env
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.local.history import seed
from bot.local.stack import create_stack
from bot.settings import Settings

WINDOW = timedelta(days=365)


def history(shas: list[str], count: int, now: datetime) -> list[DeploymentRecord]:
    """``count`` deployments over the year before ``now``: every 20th deploy fails, every
    25th is rolled back by ECS, every 50th aborted; every 30th completed one is followed by
    a rollback the next hour, every 40th by a redeploy."""
    step = WINDOW / (count + 1)
    records: list[DeploymentRecord] = []
    deploys = 0
    at = now - WINDOW + step
    while len(records) < count:
        deploys += 1
        outcome = (
            Outcome.FAILED
            if deploys % 20 == 0
            else Outcome.ROLLED_BACK
            if deploys % 25 == 0
            else Outcome.ABORTED
            if deploys % 50 == 0
            else Outcome.COMPLETED
        )
        base, head = shas[2 * (deploys - 1)], shas[2 * deploys]
        rec = _record(len(records), "deploy", at, outcome, base[:7], head[:7])
        records.append(rec)
        at += step
        if outcome is Outcome.COMPLETED and len(records) < count:
            if deploys % 30 == 0:
                records.append(_record(len(records), "rollback", at, Outcome.COMPLETED, "", ""))
                at += step
            elif deploys % 40 == 0:
                records.append(_record(len(records), "redeploy", at, Outcome.COMPLETED, "", ""))
                at += step
    return records


def _record(
    n: int, kind: str, at: datetime, outcome: Outcome, base: str, head: str
) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"d-bench-{n:05d}",
        service="hello-world-ecr-ecs-fargate",
        kind=kind,
        tag=f"v5.{n}.0-ecr-ecs-fargate",
        image="",
        task_definition="",
        previous_task_definition="",
        previous_tag="",
        ecs_deployment_id="",
        who="U0ALICE",
        who_display="alice",
        source="slack",
        reason="",
        started_at=at,
        finished_at=at + timedelta(minutes=6),
        outcome=outcome,
        digest=f"sha256:{n:064x}",
        commit=head or None,
        previous_commit=base or None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    header(f"deploybot stats over {args.deployments:,} deployments (a year, one target)")

    moto = MotoServer()
    moto.start()
    emulator = GitHubEmulator().start()
    try:
        for name in UNSAFE_AWS_VARS:
            os.environ.pop(name, None)
        os.environ.update(aws_env(moto.endpoint_url, DEFAULT_REGION))
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        create_stack(moto.endpoint_url, settings)
        shas = emulator.add_commits([f"change {i}" for i in range(2 * args.deployments + 2)])
        github = {
            "GITHUB_REPOSITORY": DEFAULT_REPOSITORY,
            "GITHUB_TOKEN": DEFAULT_TOKEN,
            "GITHUB_API_URL": emulator.api_url,
        }
        os.environ.update(github)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        now = datetime.now(UTC)
        records = history(shas, args.deployments, now)
        engine = Engine(settings)
        try:
            seed(engine.ledger, records)
            until = now + timedelta(minutes=1)
            since = until - WINDOW

            def measured(label: str) -> tuple[float, int]:
                moto.requests.clear()
                emulator.clear()
                start = time.perf_counter()
                keys = engine.stats(since, until)
                took = time.perf_counter() - start
                calls = Counter(f"{r.service}:{r.operation}" for r in moto.requests.entries())
                asked = len(emulator.calls_of("compare"))
                print(
                    f"   {label:<28} {took:7.3f} s   deployments {keys.deployments}, "
                    f"lead times {keys.lead_times} ({keys.lead_time_source}), "
                    f"CFR {keys.change_failure_rate:.1%}   AWS {dict(calls)}   "
                    f"GitHub compare {asked}"
                )
                return took, asked

            _, asked = measured("first (cold)")
            filling = 1
            while asked:  # at most STATS_GITHUB_ASKS deployments asked a call
                _, asked = measured(f"filling, call {filling + 1}")
                filling += 1
            print(f"   GitHub asked about every deployment once, over {filling} calls")
            warm = [measured(f"warm, run {i + 1}")[0] for i in range(args.runs)]
            mean, sd = mean_sd(warm)
            print(f"   Engine.stats warm: {mean:.3f} s ± {sd:.3f} over {args.runs} runs")

            for window in ("365d", "1d"):  # the year; a day (the process's own cost)
                cli = []
                for _ in range(max(3, args.runs // 2)):
                    start = time.perf_counter()
                    done = subprocess.run(
                        [sys.executable, "-m", "bot", "stats", "--since", window],
                        capture_output=True,
                        text=True,
                        env=dict(os.environ),
                        check=False,
                    )
                    cli.append(time.perf_counter() - start)
                    assert done.returncode == 0, done.stderr
                mean, sd = mean_sd(cli)
                print(
                    f"   `deploybot stats --since {window}` (a process each): "
                    f"{mean:.3f} s ± {sd:.3f}"
                )
                print("   " + done.stdout.strip().splitlines()[2])
        finally:
            engine.close()

    finally:
        emulator.stop()
        moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
