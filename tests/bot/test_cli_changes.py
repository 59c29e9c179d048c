"""``deploybot`` shows what a deploy changes and asks first in a terminal; prints where to look.

Real processes against moto, the rollout simulator and the GitHub stand-in; the question is
answered through a pseudo-terminal, as a person at a keyboard would (issue 17).
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.stack import fake_sha
from tests.bot.test_cli import cli
from tests.conftest import GitHub, LocalStack

V43, V44 = fake_sha("v4.3.0")[:7], fake_sha("v4.4.0")[:7]
QUESTION = (
    "Deploy v4.4.0-ecr-ecs-fargate on hello-world-ecr-ecs-fargate/hello-world-ecr-ecs-fargate?"
)


def in_a_terminal(args: list[str], answer: str | None, timeout: float = 120) -> tuple[int, str]:
    """Run ``deploybot ARGS`` on a pseudo-terminal; type ``answer`` once it asks."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "200"},
        close_fds=True,
    )
    os.close(child)
    seen = b""
    answered = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/n]" in seen:
                os.write(main, f"{answer}\n".encode())
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


def test_deploy_prints_the_change_and_without_a_terminal_does_not_ask(
    stack: LocalStack, simulator: RolloutSimulator, github: GitHub
) -> None:
    done = cli("deploy", "v4.4.0")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"Forward 1 release: v4.3.0 ({V43}) → v4.4.0 ({V44})" in out
    assert f"https://github.com/octo-org/hello-world/compare/{V43}...{V44}" in out
    assert "3 commits, newest first:" in out and "release: v4.4.0 (alice)" in out
    assert "[y/n]" not in out
    # The commit of every image named: the start line, the status, the history.
    assert f"({V44}, sha256:" in out
    assert f"({V44}, sha256:" in cli("status").stdout
    assert V44 in cli("history").stdout


def test_github_unreachable_the_deploy_goes_on_with_the_link(
    stack: LocalStack, simulator: RolloutSimulator, github: GitHub
) -> None:
    github.emulator.drop("*", times=None)
    done = cli("deploy", "v4.4.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"compare/{V43}...{V44}" in done.stdout
    assert "Commits not listed: GitHub could not be reached" in done.stdout
    assert "✓ Deployed v4.4.0-ecr-ecs-fargate" in done.stdout


def test_in_a_terminal_it_asks_and_no_changes_nothing(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, github: GitHub
) -> None:
    code, seen = in_a_terminal(["deploy", "v4.4.0"], answer="n")
    assert code == 2, seen
    assert "release: v4.4.0" in seen and QUESTION in seen
    assert "Not started: nothing was changed." in seen
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
    assert aws.requests.count("ecs", "UpdateService") == 0

    code, seen = in_a_terminal(["deploy", "v4.4.0", "--yes"], answer=None)
    assert code == 0, seen
    assert "[y/n]" not in seen and "✓ Deployed v4.4.0-ecr-ecs-fargate" in seen


def test_a_failure_prints_where_to_look(stack: LocalStack, simulator: RolloutSimulator) -> None:
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    done = cli("deploy", "v4.5.0", COLUMNS="400")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "logs: https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1" in out
    assert "task: https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/" in out
    assert (
        "logs of the last stopped task: https://eu-west-1.console.aws.amazon.com/cloudwatch/" in out
    )
    assert (
        "deployments in the ECS console: https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/"
        "hello-world-ecr-ecs-fargate/services/hello-world-ecr-ecs-fargate/deployments"
        "?region=eu-west-1" in out
    )
