"""``deploybot continue [--rollback]`` on a deployment ECS paused at a hook, through the ECS
simulation (a blue/green service with a PAUSE hook after the test traffic shift) and a real test
listener (the hello service under uvicorn on 127.0.0.1, the target's ``test_url``): in process
(``bot.cli.main``), with two engines for two replicas where the once-only press is the point."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.deploy.engine import Engine
from bot.deploy.pausing import CONTINUE, DecidedAlready, Pause, PauseDecision
from bot.deploy.records import Requester, Via
from bot.deploy.rollout import Outcome
from bot.local.aws import MotoServer
from bot.local.listener import TestListener
from bot.local.simulator import RolloutSimulator
from bot.local.stack import add_deployment_alarm, set_deployment_strategy
from bot.rules import Door
from bot.settings import Settings
from bot.slack import messages
from service.app import Release
from tests.conftest import LocalStack
from tests.helpers import deploybot, wait_until
from tests.slack.helpers import running_tag

NEW, OLD = "v4.4.0-ecr-ecs-fargate", "v4.3.0-ecr-ecs-fargate"
STEP_SECONDS = 0.05
MINUTE_TICKS = 20  # an ECS minute is a second here: a pause of 30 minutes waits 30 s


def cli(*args: str, **env: str) -> Any:
    return deploybot(*args, **{"DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "200", **env})


@pytest.fixture
def listener(stack: LocalStack) -> Iterator[TestListener]:
    """The test listener, answering as the new release (as ECS's test traffic would)."""
    new = stack.info.release(NEW.removesuffix("-ecr-ecs-fargate"))
    with TestListener(Release(new.tag, new.sha)) as running:
        yield running


@pytest.fixture
def sim(aws: MotoServer) -> Iterator[RolloutSimulator]:
    simulator = RolloutSimulator(aws, step_seconds=STEP_SECONDS, minute_ticks=MINUTE_TICKS)
    simulator.start()
    yield simulator
    simulator.stop()


def configure(
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listener: TestListener,
    *,
    rules: str = "",
    timeout_minutes: int = 30,
) -> Settings:
    """The service blue/green, paused after its test traffic shift (the stack's hook), and a
    deploybot.toml whose target checks the test listener at /health."""
    set_deployment_strategy(
        stack.info,
        stack.settings,
        "BLUE_GREEN",
        bake_minutes=1,
        pause_at=["POST_TEST_TRAFFIC_SHIFT"],
        pause_timeout_minutes=timeout_minutes,
    )
    s = stack.settings
    path = tmp_path / "deploybot.toml"
    path.write_text(
        f"""
[targets.production]
cluster = "{s.ecs_cluster}"
service = "{s.ecs_service}"
repository = "{s.ecr_repository}"
verify_path = "/health"
test_url = "{listener.url}"
{rules}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("DEPLOYBOT_CONFIG", str(path))
    return Settings(_env_file=None)  # type: ignore[call-arg]


def engine_of(settings: Settings) -> Engine:
    from bot.targets import load_targets

    return Engine(settings, target=load_targets(settings).default)


def paused(engine: Engine, timeout: float = 60) -> Pause:
    found: list[Pause] = []

    def check() -> bool:
        pause = engine.paused()
        if pause is not None:
            found.append(pause)
        return bool(found)

    wait_until(check, timeout, "the deployment paused at its hook")
    return found[0]


def test_continue_from_a_terminal_completes_the_paused_deployment(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aws: MotoServer,
) -> None:
    settings = configure(stack, tmp_path, monkeypatch, listener)
    nothing = cli("continue", "--yes")
    assert nothing.returncode == 2 and "Nothing awaits a decision" in nothing.stderr
    started = cli("deploy", NEW, "--no-wait", "--yes")
    assert started.returncode == 0, started.stderr
    engine = engine_of(settings)
    try:
        pause = paused(engine)
        assert pause.shift.strategy == "BLUE_GREEN" and pause.hook.timeout_action == "ROLLBACK"
        assert pause.verification is not None and pause.verification.ok, pause.verification
        assert pause.verification.version == NEW
    finally:
        engine.close()
    done = cli("continue", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is paused: blue/green" in done.stdout and "200 in " in done.stdout
    assert f"{NEW} completed" in done.stdout
    assert running_tag(settings) == NEW
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 1
    [record] = json.loads(cli("history", "--json", "-n", "1").stdout)
    assert record["outcome"] == "COMPLETED"
    assert record["decisions"][0].startswith("Continue by operator@laptop (cli) at ")
    # The table and the export show it too, and Slack's history.
    assert "Continue by operator@laptop (cli) at" in cli("history", "-n", "1").stdout
    [row] = list(csv.DictReader(io.StringIO(cli("history", "--since", "1d", "--csv").stdout)))
    assert row["decisions"] == record["decisions"][0]
    engine = engine_of(settings)
    try:
        [last] = engine.history(1)
    finally:
        engine.close()
    [line] = messages.history_lines([last])
    assert "; ⏸️ Continue by operator@laptop (cli) at " in line, line


def test_continue_rollback_from_a_terminal_rolls_the_paused_deployment_back(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = configure(stack, tmp_path, monkeypatch, listener)
    assert cli("deploy", NEW, "--no-wait", "--yes").returncode == 0
    engine = engine_of(settings)
    try:
        paused(engine)
    finally:
        engine.close()
    back = cli("continue", "--rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "Roll back: asked ECS to roll back" in back.stdout
    assert running_tag(settings) == OLD
    [record] = json.loads(cli("history", "--json", "-n", "1").stdout)
    assert record["outcome"] == "ROLLED_BACK"
    assert record["decisions"][0].startswith("Roll back by operator@laptop (cli)")


def test_the_timeout_rolls_a_pause_nobody_decides_back(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aws: MotoServer,
) -> None:
    """The hook's timeout (2 ECS minutes: 2 s here, the simulator's minute_ticks) comes first:
    ECS rolls back by itself and the deployment ends rolled back; nobody was asked."""
    configure(stack, tmp_path, monkeypatch, listener, timeout_minutes=2)
    done = cli("deploy", NEW, "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is paused: blue/green" in done.stdout and "rolls back by itself at" in done.stdout
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 0
    [record] = json.loads(cli("history", "--json", "-n", "1").stdout)
    assert record["outcome"] == "ROLLED_BACK" and record["decisions"] == []


def test_the_terminal_needs_break_glass_where_continue_is_an_approval(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = 'approvals = 1\napprovers = ["U0CAROL"]'
    settings = configure(stack, tmp_path, monkeypatch, listener, rules=rules)
    why = "hotfix, approver away"
    assert cli("deploy", NEW, "--no-wait", "--yes", "--break-glass", why).returncode == 0
    engine = engine_of(settings)
    try:
        paused(engine)
    finally:
        engine.close()
    refused = cli("continue", "--yes")
    assert refused.returncode == 2
    assert "needs 1 approval to continue a paused deployment" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = cli("continue", "--yes", "--break-glass", why)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bypassed with --break-glass by operator@laptop" in done.stderr
    [record] = json.loads(cli("history", "--json", "-n", "1").stdout)
    assert "bypassed with --break-glass" in record["decisions"][0]


def test_a_red_check_asks_again_before_ecs_is_told(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aws: MotoServer,
) -> None:
    """The old release still answers on the test listener: shown red; off a terminal the
    second confirmation needs --yes, and nothing is asked of ECS without it."""
    old = stack.info.release(OLD.removesuffix("-ecr-ecs-fargate"))
    listener.answering(old.tag, old.sha)
    settings = configure(stack, tmp_path, monkeypatch, listener)
    assert cli("deploy", NEW, "--no-wait", "--yes").returncode == 0
    engine = engine_of(settings)
    try:
        pause = paused(engine)
        assert pause.verification is not None and pause.verification.verdict == "old"
    finally:
        engine.close()
    asked = cli("continue")  # off a terminal: the first question is not asked, the second is
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert f"the old release ({OLD}) still answers" in asked.stdout
    assert "Nothing was decided" in asked.stderr
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 0
    done = cli("continue", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert aws.requests.count("ecs", "ContinueServiceDeployment") == 1


def test_two_replicas_pressing_at_once_ask_ecs_once(
    stack: LocalStack,
    sim: RolloutSimulator,
    listener: TestListener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aws: MotoServer,
) -> None:
    """Two engines (two bot replicas), each pressed twice at the same moment (a double click
    reaching both): one ContinueServiceDeployment in moto's request log, one decision in the
    history, and the three others told who decided first."""
    settings = configure(stack, tmp_path, monkeypatch, listener)
    assert cli("deploy", NEW, "--no-wait", "--yes").returncode == 0
    replicas = [engine_of(settings), engine_of(settings)]
    try:
        pause = paused(replicas[0])
        start = threading.Barrier(4)
        results: list[PauseDecision | Exception] = []

        def press(engine: Engine, who: str) -> None:
            start.wait()
            try:
                results.append(
                    engine.decide_pause(
                        Requester(who, "slack", who),
                        CONTINUE,
                        via=Via(door=Door.CLI),
                        of=pause.record.id,
                        hook_id=pause.hook.hook_id,
                    )
                )
            except Exception as exc:
                results.append(exc)

        threads = [
            threading.Thread(target=press, args=(replicas[i % 2], f"U0PRESS{i}")) for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        decided = [r for r in results if isinstance(r, PauseDecision)]
        refused = [r for r in results if isinstance(r, DecidedAlready)]
        assert (len(decided), len(refused)) == (1, 3), results
        assert all(decided[0].decided.name in str(r) for r in refused)
        assert aws.requests.count("ecs", "ContinueServiceDeployment") == 1
        outcome, _ = replicas[1].follow_abort(decided[0].record)
        assert outcome is Outcome.COMPLETED
        [record] = replicas[1].history(1)
        assert len(record.decisions) == 1
    finally:
        for engine in replicas:
            engine.close()


@pytest.mark.parametrize(
    ("strategy", "share", "reached"),
    [("CANARY", 10.0, "canary (10% on"), ("LINEAR", 25.0, "step 1 of 4 (25% on")],
)
def test_an_alarm_at_a_step_is_reported_with_the_step_reached(
    stack: LocalStack,
    sim: RolloutSimulator,
    aws: MotoServer,
    strategy: str,
    share: float,
    reached: str,
) -> None:
    """A canary (10%) or a linear step (25% a step) followed step by step; the deployment
    alarm goes to ALARM while the new revision takes ``share`` of production traffic (its step
    bakes 30 ECS minutes): ECS rolls back, and the terminal says the step it reached."""
    import boto3

    alarm = add_deployment_alarm(stack.info, stack.settings)
    set_deployment_strategy(
        stack.info,
        stack.settings,
        strategy,
        canary_percent=10.0,
        canary_bake_minutes=30,
        linear_step_percent=25.0,
        linear_step_bake_minutes=30,
    )
    ecs = boto3.client("ecs", endpoint_url=aws.endpoint_url, region_name=aws.region)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws.endpoint_url, region_name=aws.region)
    s = stack.settings
    fired = threading.Event()

    def fire_at_the_step() -> None:
        def at_share() -> bool:
            listed = ecs.list_service_deployments(
                cluster=s.ecs_cluster, service=s.ecs_service, status=["IN_PROGRESS"]
            )["serviceDeployments"]
            if not listed:
                return False
            [sd] = ecs.describe_service_deployments(
                serviceDeploymentArns=[listed[0]["serviceDeploymentArn"]]
            )["serviceDeployments"]
            weight = (sd.get("targetServiceRevision") or {}).get("requestedProductionTrafficWeight")
            return weight == share

        wait_until(at_share, 60, f"{share}% of production traffic on the new revision")
        # The deploy's own poll reads it there too (it holds for the step's 30 minutes):
        # two more DescribeServiceDeployments after this test's last, which were the engine's.
        seen = aws.requests.count("ecs", "DescribeServiceDeployments")
        wait_until(
            lambda: aws.requests.count("ecs", "DescribeServiceDeployments") >= seen + 2,
            30,
            "the engine's reads of the step",
        )
        cloudwatch.set_alarm_state(
            AlarmName=alarm, StateValue="ALARM", StateReason="5xx answers of the canary"
        )
        fired.set()

    firing = threading.Thread(target=fire_at_the_step, daemon=True)
    firing.start()
    done = cli("deploy", NEW, "--yes")
    firing.join(timeout=60)
    assert fired.is_set()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{'canary' if strategy == 'CANARY' else 'linear, step 1 of 4'}: " in done.stdout, (
        done.stdout
    )
    assert f"reached {reached} {NEW}) before it ended." in done.stdout, done.stdout
    assert running_tag(stack.settings) == OLD
