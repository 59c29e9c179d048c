"""``deploybot stats`` and ``deploybot history --since … --csv|--json`` in process
(``bot.cli.main``) against moto and the GitHub emulator: the four keys of a deployment made
through the CLI, every target's, the export of every record in a window (pages of a Query)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bot.cli import main
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome
from bot.deploy.stats import BANDS_REPORT
from bot.fleet import Fleet
from bot.local.aws import MotoServer
from bot.local.history import seed
from bot.local.simulator import RolloutSimulator
from bot.settings import Settings
from tests.bot.test_make import make
from tests.conftest import FleetStack, GitHub


def made(n: int, at: datetime, outcome: Outcome, **more: object) -> DeploymentRecord:
    fields: dict[str, object] = {
        "id": f"d-{n:05d}",
        "service": "s",
        "kind": "deploy",
        "tag": f"v1.{n}.0-ecr-ecs-fargate",
        "image": "",
        "task_definition": "",
        "previous_task_definition": "",
        "previous_tag": "",
        "ecs_deployment_id": "",
        "who": "U0ALICE",
        "who_display": "alice",
        "source": "slack",
        "reason": "",
        "started_at": at,
        "finished_at": at + timedelta(minutes=5),
        "outcome": outcome,
        "digest": f"sha256:{n:064x}",
        **more,
    }
    return DeploymentRecord(**fields)  # type: ignore[arg-type]


def fleet_seed(name: str, records: list[DeploymentRecord]) -> None:
    fleet = Fleet(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        seed(fleet.engine(name).ledger, records)
    finally:
        fleet.close()


def test_stats_of_a_deployment_made_through_the_cli_ask_github_once(
    fleet_stack: FleetStack,
    simulator: RolloutSimulator,
    github: GitHub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["deploy", "v4.4.0", "--yes", "--target", "staging"]) == 0
    capsys.readouterr()
    github.emulator.clear()
    # Kept as long as the table: a record has no TTL attribute (docs/OPERATIONS.md).
    fleet = Fleet(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        ledger = fleet.engine("staging").ledger
        (item,) = ledger.table.db.query(
            TableName=ledger.table.name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": ledger.keys.history()},
        )["Items"]
    finally:
        fleet.close()
    assert "expires_at" not in item and item["outcome"]["S"] == "COMPLETED"

    assert main(["stats", "--target", "staging", "--json"]) == 0
    (keys,) = json.loads(capsys.readouterr().out)["targets"]
    assert (keys["target"], keys["deployments"], keys["completed"]) == ("staging", 1, 1)
    # v4.3.0 → v4.4.0 shipped v4.4.0's three commits; their times are the emulator's.
    assert (keys["lead_time_source"], keys["lead_time_samples"]) == ("commits", 3)
    assert keys["change_failure_rate"] == 0.0 and keys["bands"]["change_failure_rate"] == "elite"
    assert keys["bands_report"] == BANDS_REPORT
    assert len(github.emulator.calls_of("compare")) == 1

    github.emulator.clear()
    assert main(["stats", "--target", "staging", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["target"], r["deployments"], r["lead_time_source"]) for r in rows] == [
        ("staging", "1", "commits")
    ]
    assert github.emulator.calls_of("compare") == []  # cached on the record

    assert main(["stats", "--target", "staging"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split("\t")[:3] == ["target", "deployments", "frequency"]
    row = lines[2].split("\t")
    assert row[0] == "staging" and row[4] == "0% (0 of 1) · elite", row
    assert "Lead time: from each commit (GitHub's compare) to the deployment's end." in lines
    assert f"Bands: {BANDS_REPORT}." in lines


def test_stats_of_every_target_say_the_push_time_stands_in_without_a_token(
    fleet_stack: FleetStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    now = datetime.now(UTC)

    def ago(days: float, hours: float = 0) -> datetime:
        return now - timedelta(days=days, hours=hours)

    fleet_seed(
        "production",
        [
            made(1, ago(10), Outcome.COMPLETED, image_pushed_at=ago(11)),
            made(2, ago(5), Outcome.ROLLED_BACK),
            made(3, ago(4), Outcome.COMPLETED, image_pushed_at=ago(4, 3)),
        ],
    )
    assert main(["stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_target = {line.split("\t")[0]: line.split("\t") for line in lines[2:5]}
    assert set(by_target) == {"staging", "production", "billing"}
    production = by_target["production"]
    assert production[1] == "3"
    assert production[4] == "33% (1 of 3) · low"
    assert production[5] == "24.0 h (1) · high"  # day -5's failure to day -4's completion
    assert by_target["billing"][1:3] == ["0", "0.0 a week · low"]
    assert any("from the image's push to ECR" in line for line in lines), lines


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["stats", "--since", "30x"], "is not a window"),
        (["stats", "--since", "2y"], "longer than the longest window"),
        (["stats", "--since", "2026-02-30"], "is not a date"),
        (["history", "--since", "soon", "--csv"], "is not a window"),
    ],
)
def test_a_bad_window_is_refused_with_what_to_give(
    fleet_stack: FleetStack, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert said in captured.err and captured.out == ""
    assert "Traceback" not in captured.err


def test_json_and_csv_together_are_refused(
    fleet_stack: FleetStack, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stats", "--json", "--csv"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_history_since_exports_every_record_of_the_window_page_by_page(
    fleet_stack: FleetStack, aws: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,100 deployments in the window: more than a page of the Query (500 items), so the
    export follows LastEvaluatedKey; the one before the window is left out."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records = [made(0, start - timedelta(hours=1), Outcome.COMPLETED)]
    records += [
        made(n, start + timedelta(hours=n), Outcome.FAILED if n % 10 == 0 else Outcome.COMPLETED,
             approved_by=("U0BOB", "U0CAROL") if n == 7 else (),
             break_glass="incident 42, hotfix" if n == 8 else "")
        for n in range(1, 1101)
    ]  # fmt: skip
    fleet_seed("production", records)
    aws.requests.clear()

    assert main(["history", "--target", "production", "--since", "2026-01-01", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1100
    assert [r["id"] for r in rows[:2]] == ["d-00001", "d-00002"]  # oldest first
    reads = Counter(r.operation for r in aws.requests if r.service == "dynamodb")
    assert reads["Scan"] == 0 and reads["Query"] >= 3, reads
    seventh, eighth, tenth = rows[6], rows[7], rows[9]
    assert seventh["approvals"] == "U0BOB;U0CAROL"
    assert eighth["break_glass"] == "incident 42, hotfix"  # the comma is quoted, not a column
    assert tenth["outcome"] == "FAILED"
    assert seventh["target"] == "production" and seventh["door"] == "slack"
    assert seventh["requester"] == "alice" and seventh["requester_id"] == "U0ALICE"
    assert seventh["started"] == "2026-01-01T07:00:00+00:00"
    assert seventh["ended"] == "2026-01-01T07:05:00+00:00" and seventh["duration_s"] == "300"

    assert main(["history", "--target", "production", "--since", "2026-02-15", "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert len(exported) == 1100 - (31 + 14) * 24 + 1  # from 2026-02-15 00:00 on (hour 1056)
    assert set(exported[0]) >= {"target", "id", "tag", "digest", "commit", "requester",
                                "door", "started", "ended", "outcome", "ecs_status",
                                "approvals", "break_glass"}  # fmt: skip


def test_make_stats_takes_env_and_since(fleet_stack: FleetStack) -> None:
    """The Makefile's door, as a real process: ENV= picks the target, SINCE= the window."""
    done = make("stats", "ENV=staging", "SINCE=7d")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t")[0] for line in done.stdout.splitlines()[2:] if "\t" in line]
    assert rows == ["staging"], done.stdout
    refused = make("stats", "SINCE=$(shell echo 30x)")
    assert refused.returncode == 2
    assert "is not a window" in refused.stderr
    assert "make: deploybot exited 2: refused before any change" in refused.stderr
