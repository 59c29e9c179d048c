"""The make targets an operator runs, as real processes against moto's server.

GNU make exits 2 whenever a recipe fails, whatever deploybot's code was: the targets say
deploybot's code and its meaning on stderr instead (docs/OPERATIONS.md, "exit codes").
"""

from __future__ import annotations

import os
import subprocess

from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DEPLOYBOT_USER": "make-user", "COLUMNS": "120", **env},
    )


def test_a_failed_rollout_says_deploybots_code_1(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    done = make("deploy", "TAG=v4.5.0")
    assert done.returncode == 2  # make's own code, whatever failed
    assert "make: deploybot exited 1: the rollout failed, or was rolled back" in done.stderr


def test_still_rolling_out_says_deploybots_code_3(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    done = make("deploy", "TAG=v4.4.0", ROLLOUT_TIMEOUT_SECONDS="1")
    assert done.returncode == 2
    assert "make: deploybot exited 3: still rolling out" in done.stderr


def test_a_refusal_says_deploybots_code_2(stack: LocalStack) -> None:
    done = make("deploy", "TAG=v9.9.9")
    assert done.returncode == 2
    assert "make: deploybot exited 2: refused before any change" in done.stderr


def test_make_status_lists_the_recent_tags_in_ecr(stack: LocalStack) -> None:
    """README pairs `make status` with `/deploy`'s list of recent tags."""
    done = make("status")
    assert done.returncode == 0, done.stderr
    assert "Recent images in ECR" in done.stdout
    listed = done.stdout[done.stdout.index("Recent images in ECR") :]
    for version in ("v4.5.0", "v4.4.0", "v4.3.0"):
        assert f"{version}-ecr-ecs-fargate" in listed
    assert "exited" not in done.stderr
