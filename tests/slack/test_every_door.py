"""Every change, from any door, is seen in the target's channel (issue 29, item 5).

Two bot replicas (real ``deploybot serve`` processes, HTTP mode) share one table for the whole
module; the terminal is ``bot.cli.main`` in this process, with no Slack token, against the
same moto server. Each thing a terminal (or the ECS console) does is said once in #deploys by
one of the two replicas, and the terminal's AWS identity (STS GetCallerIdentity's ARN, which
moto answers) is recorded beside the name it declared.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from bot import cli
from bot.deploy.engine import Engine
from bot.deploy.reconcile import ECS_CLOCK_SLACK
from bot.local.aws import UNSAFE_AWS_VARS, MotoServer, aws_env
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.local.stack import create_stack, fake_sha
from bot.settings import Settings
from tests.conftest import (
    ALICE,
    APP_TOKEN,
    BOB,
    BOT_TOKEN,
    CAROL,
    DEPLOYS,
    GITHUB_HISTORY,
    RANDOM,
    SIGNING_SECRET,
    TEST_POLL_SECONDS,
    check_slack,
)
from tests.helpers import free_port, wait_until
from tests.slack.conftest import TEST_LEASE_SECONDS, BotProcess, check_log
from tests.slack.helpers import bot_messages, running_tag

V44, V45 = "v4.4.0-ecr-ecs-fargate", "v4.5.0-ecr-ecs-fargate"
# moto's answer to GetCallerIdentity for its default credentials.
MOTO_ARN = "arn:aws:sts::123456789012:user/moto"
OPERATOR = "operator@laptop"


@dataclass
class World:
    settings: Settings
    moto: MotoServer
    simulator: RolloutSimulator
    emulator: SlackEmulator
    github: GitHubEmulator
    bots: list[BotProcess]
    # What ``announced`` saw and ``settle`` has yet to check: (words, the message's ts, when
    # first seen).
    pending: list[tuple[str, str, float]] = field(default_factory=list)


@pytest.fixture(scope="module")
def world(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One stack, one Slack emulator, one GitHub emulator and two bot replicas for the module
    (no test here kills a bot); the terminal's environment has no Slack token."""
    mp = pytest.MonkeyPatch()
    moto_server.reset()
    env = {
        **aws_env(moto_server.endpoint_url, moto_server.region),
        "ROLLOUT_POLL_SECONDS": str(TEST_POLL_SECONDS),
        "ROLLOUT_TIMEOUT_SECONDS": "120",
        "DEPLOYBOT_USER": OPERATOR,
        "COLUMNS": "200",
        "SLACK_CHANNEL": DEPLOYS,
        # The terminal's lease as the bots': they judge it by it (a lease not renewed within
        # their own LOCK_LEASE_SECONDS has lapsed).
        "LOCK_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
    }
    for name, value in env.items():
        mp.setenv(name, value)
    for name in (
        *UNSAFE_AWS_VARS,
        "STACK_NAME",
        "ECS_CLUSTER",
        "ECS_SERVICE",
        "ECR_REPOSITORY",
        "DEPLOY_TABLE",
        "DEPLOYBOT_CONFIG",
        "DEPLOYBOT_CONFIG_TEXT",
        "SLACK_BOT_TOKEN",
        "SLACK_API_URL",
    ):
        mp.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    create_stack(moto_server.endpoint_url, settings)
    simulator = RolloutSimulator(moto_server, step_seconds=0.05)
    simulator.start()
    emulator = SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        signing_secret=SIGNING_SECRET,
        users={ALICE: "alice", BOB: "bob", CAROL: "carol"},
        channels={DEPLOYS: "deploys", RANDOM: "random"},
    )
    emulator.start()
    github = GitHubEmulator()
    github.start()
    for version, commits in GITHUB_HISTORY.items():
        named: list[str | None] = [None] * (len(commits) - 1) + [fake_sha(version)]
        github.add_commits(commits, named=named)
    github_env = {
        "GITHUB_REPOSITORY": DEFAULT_REPOSITORY,
        "GITHUB_TOKEN": DEFAULT_TOKEN,
        "GITHUB_API_URL": github.api_url,
    }
    for name, value in github_env.items():
        mp.setenv(name, value)
    bot_env = {
        **os.environ,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": emulator.api_url,
        "DEPLOY_ALLOWED_USERS": f"{ALICE},{BOB}",
        "DEPLOY_ALLOWED_CHANNELS": f"{DEPLOYS},{RANDOM}",
        "LOCK_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
        "OUTSIDE_CHECK_SECONDS": "1",
    }
    bots = [
        BotProcess("http", bot_env, free_port(), str(tmp_path_factory.mktemp("bot") / "bot.log"))
        for _ in range(2)
    ]
    try:
        with ThreadPoolExecutor(len(bots)) as pool:  # their start-ups overlap
            list(pool.map(lambda bot: bot.start(emulator), bots))
        yield World(settings, moto_server, simulator, emulator, github, bots)
    finally:
        for bot in bots:
            if bot.proc is not None:
                bot.stop()
        simulator.stop()
        emulator.stop()
        github.stop()
        mp.undo()
    for bot in bots:
        check_log(bot)
    check_slack(emulator)


def said(world: World, words: str) -> list[Any]:
    return [m for m in bot_messages(world.emulator) if words in m.all_text]


PASSES = 3 * 1.0  # a few of the replicas' passes (a second each)


def said_once(world: World, words: str, timeout: float = 60) -> Any:
    """The one bot message saying ``words``: waited for, then a few of the replicas' passes
    later still the only one (with what ``announced`` saw before it: ``settle``). For a
    deployment's message, whose words change as it rolls out."""
    found = announced(world, words, timeout)
    settle(world)
    return world.emulator.message(found.ts)  # as it is now, those passes later


def announced(world: World, words: str, timeout: float = 60) -> Any:
    """The first bot message saying ``words``, waited for; checked to be the only one a few
    passes later by the next ``said_once`` or ``settle``. For what is said once and never
    changes (a terminal's freeze, unfreeze, break-glass, abort): its passes overlap the
    test's next steps instead of being waited out one by one."""
    wait_until(lambda: said(world, words), timeout, f"a bot message saying {words!r}")
    found = said(world, words)[0]
    world.pending.append((words, found.ts, time.monotonic()))
    return found


def settle(world: World) -> None:
    """PASSES after the last message seen, each message seen still the only one saying
    its words (a later one seen, "unfroze …" after "froze …", is not counted twice)."""
    if not world.pending:
        return
    time.sleep(max(0.0, max(seen for *_, seen in world.pending) + PASSES - time.monotonic()))
    for words, ts, _ in world.pending:
        others = {t for _, t, _ in world.pending if t != ts}
        found = [m for m in said(world, words) if m.ts not in others]
        assert len(found) == 1, [m.all_text for m in found]
    world.pending.clear()


@pytest.fixture(autouse=True)
def _nothing_pending(world: World) -> None:
    world.pending.clear()  # a failed test's leftovers


def in_background(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(cli.main(argv)), daemon=True)
    thread.start()
    return thread, code


def open_record(settings: Settings, done: Callable[[Any], bool]) -> Any:
    engine = Engine(settings)
    try:
        return next((r for r in engine.ledger.history(5) if done(r)), None)
    finally:
        engine.close()


def test_a_terminal_deploy_is_posted_and_followed_to_its_end_by_one_replica(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old bot left a deploy a terminal followed to that terminal: the channel never saw
    it. Now one replica posts it while it rolls out, shows ECS's counts, and its outcome."""
    world.simulator.slow_ticks = 100_000
    world.simulator.mark_slow(V44)
    thread, code = in_background(["deploy", "v4.4.0", "--yes", "--reason", "release day"])
    try:
        rolling = said_once(world, "Deploying v4.4.0")
        assert "followed by operator@laptop's terminal" in rolling.all_text
        assert "operator@laptop" in rolling.all_text and MOTO_ARN in rolling.all_text
    finally:
        world.simulator.mark_healthy(V44)
        world.simulator.slow_ticks = 2
        thread.join(120)
    assert code == [0]
    final = announced(world, f"Deployed {V44}")  # final: its words stay
    assert final.ts == rolling.ts and "Completed in" in final.all_text
    # Who: the declared name and the AWS identity, in the history and on GitHub.
    capsys.readouterr()
    assert cli.main(["history", "-n", "1"]) == 0
    shown = capsys.readouterr().out
    assert OPERATOR in shown and MOTO_ARN in shown, shown
    (made,) = [d for d in world.github.deployments() if d["payload"].get("tag") == V44]
    assert made["payload"]["aws_identity"] == MOTO_ARN
    assert made["payload"]["who"] == OPERATOR and MOTO_ARN in made["description"]
    assert said(world, "outside deploybot") == []  # its own deployment is no stranger
    # A rollback from the terminal (of a next release): a deployment too, shown the same way.
    assert cli.main(["deploy", "v4.5.0", "--yes"]) == 0
    assert cli.main(["rollback", "--yes", "--reason", "back for now"]) == 0
    back = said_once(world, "back for now")
    assert "rollback `d-" in back.all_text and "Completed in" in back.all_text


def protected(settings: Settings) -> str:
    """deploybot.toml text: the bots' one target, as a terminal that knows its approval rule."""
    s = settings
    return f"""
[targets.production]
cluster = "{s.ecs_cluster}"
service = "{s.ecs_service}"
repository = "{s.ecr_repository}"
channels = ["{DEPLOYS}"]
approvals = 1
approvers = ["{CAROL}"]
"""


def test_terminal_freeze_unfreeze_abort_and_break_glass_are_announced_once(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old terminal posted only a break-glass, and only with the bot's token ("! Not
    announced in Slack" without it); freezes, unfreezes and aborts were never said. Now the
    terminal records them, with no Slack token, and the bot says each once."""
    assert "SLACK_BOT_TOKEN" not in os.environ
    assert cli.main(["freeze", "incident 1234"]) == 0
    frozen = announced(world, "froze *production* from a terminal")
    assert "incident 1234" in frozen.text and MOTO_ARN in frozen.text
    assert "*operator@laptop*" in frozen.text
    assert cli.main(["unfreeze"]) == 0
    lifted = announced(world, "unfroze *production* from a terminal")
    assert "incident 1234" in lifted.text and MOTO_ARN in lifted.text
    out = capsys.readouterr()
    assert "Not announced" not in out.err + out.out
    assert "The bot announces the freeze in production's channel" in out.out

    before = running_tag(world.settings)
    world.simulator.slow_ticks = 100_000
    world.simulator.mark_slow(V45)
    argv = ["deploy", "v4.5.0", "--yes", "--no-wait", "--break-glass", "site down <!channel>"]
    with monkeypatch.context() as m:  # past production's approval, as an operator would
        m.setenv("DEPLOYBOT_CONFIG_TEXT", protected(world.settings))
        assert cli.main(argv) == 0
    glass = announced(world, "used --break-glass on *production*")
    assert "site down &lt;!channel&gt;" in glass.text and MOTO_ARN in glass.text
    assert "approval" in glass.text  # the rule it went past
    # Followed by a replica (nobody else follows a --no-wait deploy): its own message.
    said_once(world, "Deploying v4.5.0")
    wait_until(
        lambda: open_record(world.settings, lambda r: r.open and r.ecs_deployment_id),
        60,
        "the deployment to reach ECS",
    )
    try:
        assert cli.main(["abort"]) == 0
    finally:
        world.simulator.mark_healthy(V45)
        world.simulator.slow_ticks = 2
    stopped = announced(world, f"from a terminal: `{before}` goes back now")
    assert V45 in stopped.text and MOTO_ARN in stopped.text
    said_once(world, "Deployment of v4.5.0-ecr-ecs-fargate aborted")
    assert said(world, "outside deploybot") == []


def freezing(settings: Settings) -> str:
    """deploybot.toml text: the bots' one target, frozen by any failure of its deploys."""
    s = settings
    return f"""
[targets.production]
cluster = "{s.ecs_cluster}"
service = "{s.ecs_service}"
repository = "{s.ecr_repository}"
channels = ["{DEPLOYS}"]
freeze_after_failure = true
"""


def test_a_terminal_deploy_rolled_back_and_its_freeze_are_shown_and_no_stranger(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal's deploy the circuit breaker rolls back, on a target that freezes after a
    failure: the freeze the terminal's process made was said nowhere. Now it is announced, the
    deploy's message shows the rollback, and ECS's rollback deployment is not taken for one
    started outside deploybot."""
    before = running_tag(world.settings)
    world.simulator.mark_broken(V45)
    try:
        with monkeypatch.context() as m:
            m.setenv("DEPLOYBOT_CONFIG_TEXT", freezing(world.settings))
            assert cli.main(["deploy", "v4.5.0", "--yes"]) == 1
            frozen = announced(world, "*production* is frozen after a failure")
            assert V45 in frozen.text and "rolled back" in frozen.text
            assert cli.main(["unfreeze"]) == 0
    finally:
        world.simulator.mark_healthy(V45)
    failed = said_once(world, f"❌ Deployment of {V45} failed")
    assert "circuit breaker rolled the service back" in failed.all_text
    assert before in failed.all_text
    announced(world, "unfroze *production* from a terminal (frozen by deploybot")
    # The breaker's deployment, judged by the replicas' passes once old enough for it (its
    # record was read before it was made): still nobody calls it a stranger.
    record = open_record(world.settings, lambda r: r.tag == V45)
    assert record is not None and record.final is not None
    rollback = record.final.rollback_deployment
    ecs = boto3.client(
        "ecs", endpoint_url=world.moto.endpoint_url, region_name=world.settings.aws_region
    )
    (service,) = ecs.describe_services(
        cluster=world.settings.ecs_cluster, services=[world.settings.ecs_service]
    )["services"]
    (made,) = [d for d in service["deployments"] if d["id"] == rollback]
    judged = made["createdAt"].timestamp() + ECS_CLOCK_SLACK.total_seconds() + 3 * 1.0
    time.sleep(max(0.0, judged - time.time()))
    assert said(world, "outside deploybot") == []
    settle(world)


def test_an_ecs_deployment_started_outside_deploybot_is_reported_once(world: World) -> None:
    """The console's "Update service" (here at the wire, as the console sends it): the old bot
    said nothing. Now one replica reports it, as such."""
    settings = world.settings
    ecs = boto3.client("ecs", endpoint_url=world.moto.endpoint_url, region_name=settings.aws_region)
    made = ecs.update_service(
        cluster=settings.ecs_cluster, service=settings.ecs_service, forceNewDeployment=True
    )["service"]["deployments"][0]["id"]
    report = said_once(world, "outside deploybot")
    assert made in report.text and "*production*" in report.text
    assert running_tag(settings) in report.text  # what it runs
