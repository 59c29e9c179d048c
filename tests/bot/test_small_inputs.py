"""Small inputs to ``deploybot``: numbers out of bounds, rich markup in text, an unreachable AWS.

Every case runs the real ``deploybot`` process; the answer is exit 2 (or the outcome's own
code) with a message a person can act on, and never a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import pytest

from bot.cli import main
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.bot.test_cli import cli
from tests.conftest import SIMULATOR_STEP_SECONDS, LocalStack


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROLLOUT_POLL_SECONDS", "inf"),
        ("ROLLOUT_POLL_SECONDS", "1e20"),
        ("ROLLOUT_TIMEOUT_SECONDS", "nan"),
        ("ROLLOUT_TIMEOUT_SECONDS", "1e20"),
        ("LOCK_LEASE_SECONDS", "-inf"),
        ("LOCK_LEASE_SECONDS", "1e20"),
    ],
)
def test_numeric_settings_out_of_bounds_exit_2_naming_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert f"Bad configuration: {name}: " in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args", [("serve", "--http"), ("notify", "image-pushed", "--tag", "v4.4.0")]
)
def test_serve_and_notify_name_the_bad_setting_too(args: tuple[str, ...]) -> None:
    done = cli(*args, LOCK_LEASE_SECONDS="inf", SLACK_SIGNING_SECRET="s", SLACK_BOT_TOKEN="t")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "LOCK_LEASE_SECONDS" in done.stderr and "finite" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("history", "-n", "1e20"), "not a whole number"),
        (("history", "-n", "inf"), "not a whole number"),
        (("history", "-n", "99999999999999999999"), "not between 1 and 500"),
        (("history", "-n", "0"), "not between 1 and 500"),
        (("history", "-n", "\u0663"), "not a whole number"),  # ٣
        (("serve", "--http", "--port", "70000"), "not between 0 and 65535"),
        (("demo", "--port", "nan"), "not a whole number"),
    ],
)
def test_numeric_arguments_out_of_bounds_exit_2(
    args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_markup_in_a_tag_is_a_refusal_not_a_crash(stack: LocalStack, aws: MotoServer) -> None:
    done = cli("deploy", "[/bold]")
    assert done.returncode == 2, done.stderr
    assert "`[/bold]` is not an image tag" in done.stderr
    assert "Traceback" not in done.stderr
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0


def test_markup_in_names_and_reasons_prints_as_text(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    who = "[red]mallory[/red] [/x]"
    done = cli("deploy", "v4.4.0", "--reason", "[/bold] why", DEPLOYBOT_USER=who)
    assert done.returncode == 0, done.stdout + done.stderr
    history = cli("history", "-n", "5")
    assert history.returncode == 0, history.stderr
    assert "[red]mallory[/red]" in history.stdout and "[/x]" in history.stdout


@pytest.fixture
def slow_simulator(aws: MotoServer) -> Iterator[RolloutSimulator]:
    """v4.4.0's tasks stay PENDING for 40 steps: time to add an event to its rollout."""
    sim = RolloutSimulator(
        aws, step_seconds=SIMULATOR_STEP_SECONDS, slow=["v4.4.0-ecr-ecs-fargate"], slow_ticks=40
    )
    sim.start()
    yield sim
    sim.stop()


def test_an_ecs_event_with_markup_prints_as_text(
    stack: LocalStack, aws: MotoServer, slow_simulator: RolloutSimulator
) -> None:
    env = {**os.environ, "DEPLOYBOT_USER": "operator", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "deploy", "v4.4.0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ecs = boto3.client("ecs", endpoint_url=aws.endpoint_url, region_name=aws.region)
    settings = stack.settings
    deadline = time.monotonic() + 60
    while True:  # until our deployment is ECS's primary one
        svc = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
        if len(svc["services"][0]["deployments"]) > 1:
            break
        assert time.monotonic() < deadline and proc.poll() is None, "no deployment started"
        time.sleep(0.05)
    event = "(service x) target group [/x] is [bold]unhealthy[/bold] [link=http://e.x]here[/link]"
    slow_simulator.post_event(event)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert event in out
    assert "Traceback" not in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel accepts (listen backlog) and nobody ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("kind", "command"), [("refused", ("status",)), ("silent", ("deploy", "v4.4.0"))]
)
def test_unreachable_aws_fails_within_15_seconds(
    kind: str, command: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    port = _closed_port() if kind == "refused" else request.getfixturevalue("silent_port")
    started = time.monotonic()
    done = cli(*command, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Could not reach AWS" in done.stderr and "AWS_ENDPOINT_URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 15, f"took {took:.1f} s"


def test_throttling_is_still_retried_more_than_connection_errors(
    stack: LocalStack, aws: MotoServer
) -> None:
    # Three attempts of one call where a connection error gets two (CONNECTION_ATTEMPTS).
    aws.faults.throttle("ecs", "DescribeServices", times=2)
    done = cli("status")
    assert done.returncode == 0, done.stderr
    assert aws.requests.count("ecs", "DescribeServices", throttled=True) == 2
