"""``make`` passes what people type to deploybot as text: no shell and no make ever runs it.

Real ``make`` runs against moto's server; each hostile value tries to create a marker file,
and the test checks that none exists afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.bot.test_cli import cli
from tests.conftest import LocalStack

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEPLOYBOT_USER": "make-user", "COLUMNS": "200"}
    return subprocess.run(
        ["make", "-s", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def hostile(marker: Path) -> list[str]:
    """Ways a value could run ``touch marker`` if a shell or make interpreted it."""
    return [
        f'v4"; touch {marker}; echo "',
        f"v4'; touch {marker}; echo '",
        f"v4 $(touch {marker})",
        f"v4 `touch {marker}`",
        f"$(shell touch {marker})",
        f"v4 && touch {marker}",
    ]


def test_a_hostile_tag_is_just_a_bad_tag(
    stack: LocalStack, aws: MotoServer, tmp_path: Path
) -> None:
    marker = tmp_path / "x"
    ways = hostile(marker)
    for tag in (ways[0], ways[3], ways[4]):  # quotes, backticks, make's $(shell): each is slow
        done = make("deploy", f"TAG={tag}")
        assert done.returncode == 2, tag + done.stdout + done.stderr  # make's own error status
        assert "is not an image tag" in done.stderr, done.stderr
        assert not marker.exists(), tag
    assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
    assert aws.requests.count("dynamodb", "PutItem") == 0


def test_a_tag_like_an_option_is_a_tag(stack: LocalStack, aws: MotoServer) -> None:
    done = make("deploy", "TAG=--help")
    assert done.returncode == 2
    assert "`--help` is not an image tag" in done.stderr


def test_a_hostile_reason_is_recorded_as_typed(
    stack: LocalStack, simulator: RolloutSimulator, tmp_path: Path
) -> None:
    marker = tmp_path / "y"
    reason = " ".join(hostile(marker)) + " -x $HOME"
    done = make("deploy", "TAG=v4.4.0", f"REASON={reason}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists()
    recent = json.loads(cli("status", "--json").stdout)["recent"][0]
    assert recent["reason"] == reason and recent["who"] == "make-user"


def test_infra_and_demo_values_are_text_too(aws: MotoServer, tmp_path: Path) -> None:
    marker = tmp_path / "z"
    for value in hostile(marker)[::4]:  # one for the shell, one for make: each run is slow
        # The stacks do not exist in moto: each run fails, and none runs the marker's touch.
        make("bot-infra", f"TAG={value}", f"PARAMS=A=1 {value}")
        make("infra", f"TAG={value}", f"ALLOWED_IP={value}", f"PARAMS={value}")
        done = make("demo", f"DEMO_PORT={value}")
        assert done.returncode == 2 and "not a whole number" in done.stderr
        assert not marker.exists(), value
