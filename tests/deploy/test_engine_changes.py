"""What a deploy changes, where to look, and GitHub told: the engine against moto, the rollout
simulator and the GitHub stand-in (issue 17, points 1 to 4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.deploy.changes import render_text
from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.deploy.rollout import Outcome
from bot.local.simulator import RolloutSimulator
from bot.local.stack import fake_sha
from tests.conftest import GitHub, LocalStack
from tests.helpers import wait_until

ALICE = Requester("alice", "cli", "Alice")
V43, V44, V45 = (fake_sha(v)[:7] for v in ("v4.3.0", "v4.4.0", "v4.5.0"))


@pytest.fixture
def engine(stack: LocalStack, github: GitHub) -> Iterator[Engine]:
    eng = Engine(github.settings(stack.settings))
    yield eng
    eng.close()


def deploy(engine: Engine, tag: str) -> Outcome | None:
    record = engine.deploy(tag, ALICE)
    final = list(engine.watch(record))[-1]
    return final.outcome


def test_a_plan_says_what_it_changes_and_the_record_keeps_the_commits(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine, github: GitHub
) -> None:
    plan = engine.plan_deploy("v4.5.0", ALICE)
    change = plan.change
    assert change is not None and change.gap is None
    assert (change.direction.kind, change.direction.releases) == ("forward", 2)
    assert change.compare_url == f"https://github.com/octo-org/hello-world/compare/{V43}...{V45}"
    # The first ten (newest first) and a count: v4.4.0's three commits and v4.5.0's twelve.
    assert change.total_commits == 15 and len(change.commits) == 10
    assert change.commits[0].title == "release: v4.5.0" and change.more == 5
    assert (plan.commit, plan.previous_commit) == (V45, V43)
    assert "Forward 2 releases: v4.3.0 (" in render_text(change)
    # One compare, no GitHub writes: a plan only reads.
    assert [c.endpoint for c in github.emulator.calls] == ["compare"]

    record = engine.start(plan)
    assert (record.commit, record.previous_commit) == (V45, V43)
    assert list(engine.watch(record))[-1].outcome == Outcome.COMPLETED
    (kept,) = [r for r in engine.history(5) if r.id == record.id]
    assert (kept.commit, kept.previous_commit) == (V45, V43)
    assert engine.status().commit == V45

    # Going back is said as such: the commits are the ones it takes out.
    back = engine.plan_deploy("v4.3.0", ALICE).change
    assert back is not None and back.removes
    assert (back.direction.kind, back.direction.releases) == ("backward", 2)
    assert "Backward: this goes back 2 releases" in render_text(back)
    rollback = engine.plan_rollback(ALICE, of=record.id).change
    assert rollback is not None and rollback.direction.kind == "backward"
    # A redeploy changes nothing, and asks GitHub nothing.
    calls = len(github.emulator.calls_of("compare"))
    redeploy = engine.plan_redeploy(ALICE).change
    assert redeploy is not None and redeploy.direction.kind == "same"
    assert len(github.emulator.calls_of("compare")) == calls


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("drop", "GitHub could not be reached"),
        ("404", "GitHub answered 404 Not Found"),
        ("rate_limit", "GitHub's API rate limit is used up until"),
        ("429", "GitHub asked to slow down"),
        ("500", "GitHub had an error (HTTP 500)"),
    ],
)
def test_github_trouble_leaves_the_link_and_says_why(
    stack: LocalStack, engine: Engine, github: GitHub, fault: str, says: str
) -> None:
    emu = github.emulator
    if fault == "drop":
        emu.drop("compare", times=None)
    elif fault == "rate_limit":
        emu.rate_limit("compare", times=None)
    elif fault == "429":
        emu.rate_limit("compare", status=429, secondary=True, times=None)
    else:
        emu.fail("compare", status=int(fault), times=None)
    change = engine.plan_deploy("v4.4.0", ALICE).change
    assert change is not None and change.gap is not None
    assert change.compare_url and change.compare_url.endswith(f"{V43}...{V44}")
    assert says in change.gap.reason and not change.commits
    assert f"Commits not listed: {change.gap.reason}" in render_text(change)


def test_without_a_token_a_link_and_no_call(stack: LocalStack, github: GitHub) -> None:
    engine = Engine(github.settings(stack.settings, github_token=None))
    try:
        change = engine.plan_deploy("v4.4.0", ALICE).change
    finally:
        engine.close()
    assert change is not None and change.compare_url and change.gap is not None
    assert change.gap.reason == "GITHUB_TOKEN is not set"
    assert github.emulator.calls == []


def test_github_deployments_follow_each_rollout_to_its_outcome(
    stack: LocalStack, simulator: RolloutSimulator, github: GitHub
) -> None:
    """in_progress, then success or failure; a success makes the one it replaced inactive.
    The environment is the target's name."""
    engine = Engine(github.settings(stack.settings, deploy_target="staging"))
    emu = github.emulator
    try:
        assert deploy(engine, "v4.4.0") == Outcome.COMPLETED
        simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
        assert deploy(engine, "v4.5.0") == Outcome.ROLLED_BACK
        simulator.mark_healthy("v4.5.0-ecr-ecs-fargate")
        assert deploy(engine, "v4.5.0") == Outcome.COMPLETED
        assert engine.github_deployments.close(timeout=30)
    finally:
        engine.close()
    made = emu.deployments()
    assert [(d["sha"][:7], d["environment"]) for d in made] == [
        (V44, "staging"),
        (V45, "staging"),
        (V45, "staging"),
    ]
    assert all(d["payload"]["deploybot_deployment"].startswith("d-") for d in made)
    states = emu.states()
    first, failed, last = (states[d["id"]] for d in made)
    assert first == ["in_progress", "success", "inactive"]
    assert failed == ["in_progress", "failure"]
    assert last == ["in_progress", "success"]
    # The failure's status links to where to look (the stopped task's log stream).
    failure = emu.statuses(made[1]["id"])[-1]
    assert "/cloudwatch/home?region=eu-west-1#logsV2:log-groups" in failure["log_url"]
    assert "circuit breaker" in failure["description"] or "failed" in failure["description"]


def test_a_deployment_settled_by_another_process_is_found_by_its_payload(
    stack: LocalStack, simulator: RolloutSimulator, github: GitHub
) -> None:
    """`deploy --no-wait` creates the GitHub deployment and exits; whoever settles the record
    later (the bot, the next `status`) sets its outcome, and only that one process does."""
    settings = github.settings(stack.settings)
    starter = Engine(settings)
    try:
        record = starter.start(starter.plan_deploy("v4.4.0", ALICE), follow=False)
    finally:
        starter.close()  # drains what it had to tell GitHub
    emu = github.emulator
    (made,) = emu.deployments()
    assert emu.states()[made["id"]] == ["in_progress"]
    others = [Engine(settings), Engine(settings)]
    try:
        # A poll: the GitHub emulator's wait_for wakes on GitHub's changes, and this waits
        # on ECS finishing (it re-checked only at its timeout, 30 s later).
        wait_until(
            lambda: any(r.id == record.id and r.settled for e in others for r in e.history(5)),
            30,
            "the record settled by a later command",
        )
        for other in others:
            other.github_deployments.close(timeout=30)
    finally:
        for other in others:
            other.close()
    assert emu.states()[made["id"]] == ["in_progress", "success"]


def test_github_down_never_holds_a_deploy_back(
    stack: LocalStack, simulator: RolloutSimulator, github: GitHub
) -> None:
    github.emulator.drop("*", times=None)
    engine = Engine(github.settings(stack.settings))
    try:
        plan = engine.plan_deploy("v4.4.0", ALICE)
        assert plan.change is not None and plan.change.gap is not None
        assert deploy(engine, "v4.4.0") == Outcome.COMPLETED
        assert engine.github_deployments.close(timeout=30)
        told = list(engine.github_deployments.told)
    finally:
        engine.close()
    assert told and all("could not be reached" in t.problem for t in told)
    assert github.emulator.deployments() == []


def test_stopped_tasks_and_the_outcome_say_where_to_look(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
    record = engine.deploy("v4.5.0", ALICE)
    snaps = list(engine.watch(record))
    stopped = [t for s in snaps for t in s.stopped_tasks]
    assert stopped
    task = stopped[0]
    task_id = task.arn.rsplit("/", 1)[-1]
    # awslogs-stream-prefix "hello-world": the stream is prefix/container/task-id.
    assert task.log_url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#logsV2:log-groups/log-group/$252Fecs$252Fhello-world-ecr-ecs-fargate"
        f"/log-events/hello-world$252Fhello-world$252F{task_id}"
    )
    assert task.task_url.startswith("https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/")
    final = snaps[-1]
    assert final.outcome == Outcome.ROLLED_BACK and final.log_url
    # Kept with the record, so a message finished after a restart links it too.
    (kept,) = [r for r in engine.history(5) if r.id == record.id]
    assert kept.final is not None and kept.final.log_url == final.log_url
    assert engine.console_url == (
        "https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/hello-world-ecr-ecs-fargate"
        "/services/hello-world-ecr-ecs-fargate/deployments?region=eu-west-1"
    )
