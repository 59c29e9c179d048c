"""What the terminal shows while it follows a rollout: a healthy rollout's bar is green, not
rich's default pink-red (its theme's ``bar.complete``, rgb(249,38,114)), which reads as a
failure; each stopped task is told once, in the command's words, not again as a raw log
record."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

from rich.console import Console

from bot.local.simulator import RolloutSimulator
from bot.terminal import rollout_progress
from tests.bot.test_cli import cli
from tests.conftest import LocalStack


def test_a_healthy_rollouts_bar_is_green() -> None:
    console = Console(
        file=io.StringIO(), record=True, force_terminal=True, color_system="truecolor", width=100
    )
    progress = rollout_progress(console)
    progress.add_task("rollout", total=3, completed=2, state="IN_PROGRESS", pending=1)
    console.print(progress.make_tasks_table(progress.tasks))
    drawn = console.export_text(styles=True)
    assert "2/3 running, 1 pending" in drawn
    assert "249;38;114" not in drawn, "rich's pink-red: a healthy rollout looks failed"
    assert "\x1b[32m━" in drawn, drawn  # green, filling


def test_each_stopped_task_is_told_once(stack: LocalStack, simulator: RolloutSimulator) -> None:
    """A real process: Python's last-resort log handler only acts where nothing else
    handles the records (pytest does, in process)."""
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    done = cli("deploy", "v4.5.0")
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout + done.stderr
    # Was also "task stopped: Essential container in task exited", raw, on stderr.
    assert "task stopped:" not in said, done.stderr
    stopped = re.findall(r"! task ([0-9a-f]{12}) stopped", said)
    assert stopped and len(stopped) == len(set(stopped)), said


def test_abort_speaks_of_releases_not_leases(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """Aborting a deployment whose follower died (SIGKILL; its lease lapsed): the abort takes
    the rollout over, and says what goes back, not how it took it over."""
    simulator.mark_slow("v4.4.0-ecr-ecs-fargate")
    env = {**os.environ, "DEPLOYBOT_USER": "operator@laptop", "LOCK_LEASE_SECONDS": "2"}
    follower = subprocess.Popen(
        [sys.executable, "-m", "bot", "deploy", "v4.4.0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    assert follower.stdout is not None
    while "Deploying" not in follower.stdout.readline():
        assert time.monotonic() < deadline, "the deploy did not start"
    follower.send_signal(signal.SIGKILL)  # the follower dies: its lease lapses unrenewed
    follower.wait(timeout=10)
    done = cli("abort", LOCK_LEASE_SECONDS="2")
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "putting v4.3.0-ecr-ecs-fargate back" in said
    # Was "took over from root@vm…, whose lease lapsed", raw, on stderr.
    assert "lease" not in said and "took over" not in said, said
