"""``deploybot`` off a terminal (a pipe, a file, CI's log): complete lines, ``--json`` for
history, ``--target`` before or after the command. In process (``bot.cli.main``): the
terminal is what is tested here, not the process boundary."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from bot.local.simulator import RolloutSimulator
from tests.conftest import FleetStack

V44 = "v4.4.0-ecr-ecs-fargate"


def test_history_and_status_print_complete_lines_off_a_terminal(
    fleet_stack: FleetStack,
    simulator: RolloutSimulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 80 columns in a pipe, rich's tables cut ids, dates and outcomes ("d-20261…",
    "comple…") and pad every line; off a terminal each row is one whole line."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("DEPLOYBOT_USER", "operator-with-a-long-name@build-host.example.com")
    # --target after the command, as people type it (#29: "unrecognized arguments").
    assert main(["deploy", "v4.4.0", "--yes", "--target", "staging"]) == 0
    capsys.readouterr()

    assert main(["history", "--target", "staging", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert (record["tag"], record["outcome"]) == (V44, "COMPLETED")

    assert main(["history", "--target", "staging"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "Last 1 deployments"
    assert lines[1].split("\t") == [
        "started (UTC)", "id", "kind", "tag (digest)", "who", "from", "outcome", "took"
    ]  # fmt: skip
    row = lines[2].split("\t")
    who = "operator-with-a-long-name@build-host.example.com"
    # The declared name, and beside it the AWS identity of the credentials (moto's).
    assert row[1] == record["id"] and row[4] == f"{who} · arn:aws:sts::123456789012:user/moto"
    # deploybot's outcome, and beside it ECS's own word on the service deployment (#26).
    assert row[3].startswith(f"{V44} · ") and row[6] == "completed · ECS: SUCCESSFUL", row
    assert row[0] == record["started_at"][:19].replace("T", " ")
    assert "…" not in text and all(line == line.rstrip() for line in lines)

    # The same --target before the command; status's detail and every target's table.
    assert main(["--target", "staging", "status"]) == 0
    text = capsys.readouterr().out
    (line,) = [line for line in text.splitlines() if f"\t{record['id']}\t" in line]
    assert line.split("\t")[6] == "completed · ECS: SUCCESSFUL" and "…" not in line
    assert any(len(line) > 80 for line in text.splitlines())  # not wrapped at 80 either
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    header = "target\tservice\ttag (digest)\ttasks\trollout\tlock"
    assert header in text.splitlines() and "…" not in text, text


def test_target_after_the_command_wins_and_a_wrong_one_names_the_known(
    fleet_stack: FleetStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", "production", "history", "--target", "billing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["history", "--target", "stagin"]) == 2
    assert "no target named 'stagin'" in capsys.readouterr().err
