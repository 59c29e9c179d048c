"""Hints are computed, not written: every command a terminal's text suggests names the target
and is spelled as the door spells it (``deploybot --target X``; ``make … ENV=X`` when the
Makefile runs deploybot). In process (``bot.cli.main``) against moto's server and the rollout
simulator, with the ``fleet_stack``'s three targets."""

from __future__ import annotations

import re

import pytest

from bot.cli import main
from bot.command_names import CommandNames
from bot.deploy.records import Requester
from bot.fleet import Fleet
from bot.hints import VIA_VARIABLE, Hints
from bot.local.simulator import RolloutSimulator
from tests.bot.test_make import make
from tests.conftest import FleetStack
from tests.helpers import wait_until

# A slash command in a text: "/deploy", "/redeploy", "/deploy-status" (never a URL's path).
SLASH = re.compile(r"(?<![\w./-])/(re)?deploy\b")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``deploybot ARGV`` in process: its exit code and everything it printed, on one line
    (rich wraps at the terminal's width)."""
    code = main(list(argv))
    printed = capsys.readouterr()
    return code, " ".join((printed.out + printed.err).split())


def test_a_targets_refusals_and_notes_name_it_in_the_terminals_words(
    fleet_stack: FleetStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, said = run(capsys, "--target", "staging", "freeze", "release train")
    assert code == 0, said
    # Was "until `deploybot unfreeze`", which unfreezes production ("production is not frozen").
    assert "until `deploybot --target staging unfreeze`" in said, said

    code, said = run(capsys, "--target", "staging", "deploy", "v4.4.0")
    assert code == 2, said
    # Was "Once it is safe: /deploy unfreeze staging": Slack's words, in a terminal.
    assert said.endswith("Once it is safe: deploybot --target staging unfreeze"), said
    assert not SLASH.search(said), said

    assert run(capsys, "--target", "staging", "unfreeze")[0] == 0
    code, said = run(capsys, "--target", "staging", "abort")
    assert code == 2, said
    # Was "(`/deploy rollback staging`, `deploybot rollback`)": the latter rolls production back.
    assert "roll back (`deploybot --target staging rollback`)" in said, said
    assert not SLASH.search(said), said


def test_a_lock_refusal_names_the_targets_unlock(
    fleet_stack: FleetStack, capsys: pytest.CaptureFixture[str]
) -> None:
    staging = Fleet(fleet_stack.settings).engine("staging")
    taken, _ = staging.ledger.try_acquire(Requester("bob@laptop", "cli"), "v4.4.0", "d-held")
    assert taken
    code, said = run(capsys, "--target", "staging", "deploy", "v4.5.0")
    assert code == 2, said
    # Was "break a stale lock with `deploybot unlock`" (production's lock).
    assert "break a stale lock with `deploybot --target staging unlock`" in said, said


def test_status_under_make_says_make_deploy_with_env(
    fleet_stack: FleetStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VIA_VARIABLE, "make")  # as tools/explain-exit.sh runs deploybot
    code, said = run(capsys, "--target", "staging", "status")
    assert code == 0, said
    # Was "Recent images in ECR (make deploy TAG=…)": production's, whatever ENV= said.
    assert "Recent images in ECR (make deploy TAG=… ENV=staging)" in said, said
    code, said = run(capsys, "status")
    assert "Detail: make status ENV=NAME" in said, said


def test_abort_after_ecs_ended_it_names_the_targets_status(
    fleet_stack: FleetStack, simulator: RolloutSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "--target", "staging", "deploy", "v4.4.0", "--no-wait")[0] == 0
    wait_until(simulator.idle, 60, "the rollout's end in ECS")
    code, said = run(capsys, "--target", "staging", "abort")
    assert code == 2, said
    # Was "`deploybot status` shows what runs": production's status.
    assert said.endswith("`deploybot --target staging status` shows what runs."), said


def test_make_speaks_makes_words(fleet_stack: FleetStack) -> None:
    """The Makefile runs deploybot through tools/explain-exit.sh, which says so: the hints of
    `make freeze ENV=staging` are make's own."""
    frozen = make("freeze", "REASON=release train", "ENV=staging")
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    said = " ".join(frozen.stdout.split())
    assert "until `make unfreeze ENV=staging`" in said, said
    refused = make("deploy", "TAG=v4.4.0", "ENV=staging")
    assert refused.returncode == 2
    assert "Once it is safe: make unfreeze ENV=staging" in " ".join(refused.stderr.split())


def test_promote_after_a_breaker_rollback_says_what_would_work(
    fleet_stack: FleetStack, simulator: RolloutSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "--target", "staging", "deploy", "v4.4.0")[0] == 0
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    code, said = run(capsys, "--target", "staging", "deploy", "v4.5.0")
    assert code == 1, said

    code, said = run(capsys, "promote", "staging", "production")
    assert code == 2, said
    # Was "staging's last deployment (v4.5.0-…) did not complete", and no way on.
    assert said.endswith(
        "did not complete. It runs v4.4.0-ecr-ecs-fargate again: redeploy "
        "v4.4.0-ecr-ecs-fargate to staging (deploybot --target staging deploy "
        "v4.4.0-ecr-ecs-fargate), then promote (deploybot promote staging production)"
    ), said

    # The Promote button of v4.4.0's message (Slack's door): it no longer points at that
    # very message, it says what would work, in Slack's words under the configured names.
    fleet = Fleet(fleet_stack.settings)
    fleet.speak("slack")
    staging = fleet.target("staging")
    records = fleet.engine(staging).history(5)
    completed = next(r for r in records if r.tag.startswith("v4.4.0"))
    with pytest.raises(Exception) as refused:
        fleet.promotion(staging, of=completed.id, to="production")
    text = str(refused.value)
    assert "from its own message" not in text
    assert text.endswith(
        "staging runs v4.4.0-ecr-ecs-fargate again: redeploy v4.4.0-ecr-ecs-fargate to "
        "staging (`/deploy v4.4.0-ecr-ecs-fargate to staging`), then promote "
        "(`/deploy promote staging to production`)."
    ), text


@pytest.mark.parametrize(
    ("door", "expected"),
    [
        (
            "slack",
            [
                "/ship v4.4.0 to staging",
                "/reship staging",
                "/ship promote staging to production",
                "/ship rollback staging",
                "/ship abort staging",
                "/ship freeze staging REASON",
                "/ship unfreeze staging",
                "/ship unlock staging",
                "/ship-status staging",
                "/ship-status",
            ],
        ),
        (
            "cli",
            [
                "deploybot --target staging deploy v4.4.0",
                "deploybot --target staging redeploy",
                "deploybot promote staging production",
                "deploybot --target staging rollback",
                "deploybot --target staging abort",
                'deploybot --target staging freeze "REASON"',
                "deploybot --target staging unfreeze",
                "deploybot --target staging unlock",
                "deploybot --target staging status",
                "deploybot status",
            ],
        ),
        (
            "make",
            [
                "make deploy TAG=v4.4.0 ENV=staging",
                "make redeploy ENV=staging",
                "make promote FROM=staging TO=production",
                "make rollback ENV=staging",
                "make abort ENV=staging",
                'make freeze REASON="REASON" ENV=staging',
                "make unfreeze ENV=staging",
                "make unlock ENV=staging",
                "make status ENV=staging",
                "make status",
            ],
        ),
    ],
)
def test_each_door_spells_every_command_naming_the_target(door: str, expected: list[str]) -> None:
    hints = Hints.at(door, CommandNames("/ship", "/reship", "/ship-status"))  # type: ignore[arg-type]
    said = [
        hints.deploy("staging", "v4.4.0"),
        hints.redeploy("staging"),
        hints.promote("staging", "production"),
        hints.rollback("staging"),
        hints.abort("staging"),
        hints.freeze("staging"),
        hints.unfreeze("staging"),
        hints.unlock("staging"),
        hints.status("staging"),
        hints.status(),
    ]
    assert said == expected
    assert (
        Hints.cli().deploy("my target", "v1;rm") == "deploybot --target 'my target' deploy 'v1;rm'"
    )
