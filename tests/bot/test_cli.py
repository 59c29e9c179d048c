"""``deploybot`` (and ``make``) as an operator runs it: real processes against moto's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "120", **env}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=full, capture_output=True, text=True, timeout=120
    )


def test_deploy_shows_progress_and_exits_0(stack: LocalStack, simulator: RolloutSimulator) -> None:
    done = cli("deploy", "v4.4.0-ecr-ecs-fargate", "--reason", "release day")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deploying v4.4.0-ecr-ecs-fargate" in done.stdout
    assert "has reached a steady state" in done.stdout  # ECS events as they come
    assert "✓ Deployed v4.4.0-ecr-ecs-fargate" in done.stdout
    status = json.loads(cli("status", "--json").stdout)
    assert status["tag"] == "v4.4.0-ecr-ecs-fargate" and status["lock"] is None
    assert status["recent"][0]["who"] == "operator@laptop"
    assert status["recent"][0]["reason"] == "release day"
    history = cli("history", "-n", "5")
    assert history.returncode == 0 and "completed" in history.stdout


@pytest.mark.parametrize("tag", ["v1;rm -rf /", "", "x" * 300, "v4.4.0\u00e9", "v9.9.9"])
def test_refusals_exit_2_and_change_nothing(stack: LocalStack, aws: MotoServer, tag: str) -> None:
    done = cli("deploy", tag)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert "v4.4.0" in done.stderr or "characters" in done.stderr
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
    assert aws.requests.count("dynamodb", "PutItem") == 0


def test_broken_image_exits_1_naming_the_rollback(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    done = cli("deploy", "v4.5.0")
    assert done.returncode == 1
    assert "circuit breaker" in done.stdout
    assert "rolled the service back to v4.3.0-ecr-ecs-fargate" in done.stdout
    assert "Essential container in task exited" in done.stdout


def test_still_rolling_out_at_the_timeout_exits_3(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    done = cli("deploy", "v4.4.0", ROLLOUT_TIMEOUT_SECONDS="1")
    assert done.returncode == 3
    assert "still rolling out" in done.stdout
    # ECS carries on: the lock stays with it until someone sees ECS end it (issue 29).
    assert json.loads(cli("status", "--json").stdout)["lock"]["tag"] == "v4.4.0-ecr-ecs-fargate"


def test_status_during_a_rollout_counts_each_releases_tasks_apart(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """Issue 29 (7): mid-rollout status said "v4.4.0 … tasks: 3/3 running, 3 pending" while
    the 3 running tasks were the old release's. Each release's tasks are counted apart."""
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    assert cli("deploy", "v4.4.0", "--no-wait").returncode == 0
    text = " ".join(cli("status").stdout.split())
    assert "rolling out v4.4.0-ecr-ecs-fargate" in text, text
    assert (
        "tasks: v4.4.0-ecr-ecs-fargate (new): 0/3 running, 3 pending; "
        "v4.3.0-ecr-ecs-fargate (old): 3 running" in text
    ), text
    assert "3/3 running, 3 pending" not in text


def test_two_processes_at_once_one_proceeds(stack: LocalStack, simulator: RolloutSimulator) -> None:
    # The winner's rollout stays in progress: a --no-wait deployment whose rollout has ended
    # no longer blocks the next one (issue 13), so the race must be against a live rollout.
    simulator.slow_ticks = 100_000
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(who: str) -> None:
        results[who] = cli("deploy", "v4.4.0", "--no-wait", DEPLOYBOT_USER=who)

    threads = [threading.Thread(target=run, args=(who,)) for who in ("ann", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 2]
    loser = next(r for r in results.values() if r.returncode == 2)
    winner = next(who for who, r in results.items() if r.returncode == 0)
    said = " ".join(loser.stderr.split())
    # Named as ECS shows it: rolling out (issue 29), or still starting.
    assert f"{winner} is deploying v4.4.0-ecr-ecs-fargate" in said or (
        "v4.4.0-ecr-ecs-fargate is still rolling out since" in said and f"by {winner}, ECS" in said
    ), said
    unlock = cli("unlock")
    assert unlock.returncode == 0 and f"It was {winner}'s" in unlock.stdout


def test_make_deploy_without_tag_says_how() -> None:
    done = subprocess.run(["make", "-s", "deploy"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Usage: make deploy TAG=" in done.stdout


def test_make_deploy_goes_through_the_same_engine(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    done = subprocess.run(
        ["make", "-s", "deploy", "TAG=v4.4.0-ecr-ecs-fargate"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DEPLOYBOT_USER": "make-user"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ Deployed v4.4.0-ecr-ecs-fargate" in done.stdout
    assert json.loads(cli("status", "--json").stdout)["recent"][0]["who"] == "make-user"
