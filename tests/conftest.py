"""Shared fixtures: moto's server over HTTP, the local stack in it, and the rollout simulator."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from pydantic import SecretStr

from bot.local.aws import DEFAULT_REGION, FAKE_AWS_ENV, UNSAFE_AWS_VARS, MotoServer, aws_env
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.local.stack import StackInfo, add_service, create_stack, fake_sha
from bot.settings import Settings
from tests.aws_calls import recorded, ungranted
from tests.slack.scopes import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, scope_problems, secrets_in

# Whatever the machine holds, no test can reach a real AWS account: fake keys, no profile.
os.environ.update(FAKE_AWS_ENV)
os.environ["AWS_REGION"] = DEFAULT_REGION
os.environ["AWS_DEFAULT_REGION"] = DEFAULT_REGION
for _name in UNSAFE_AWS_VARS:
    os.environ.pop(_name, None)
# GitHub Actions sets these itself: no test may reach the real GitHub or use CI's token.
for _name in ("GITHUB_REPOSITORY", "GITHUB_TOKEN", "GITHUB_API_URL"):
    os.environ.pop(_name, None)

# How fast the simulated ECS moves in tests, and how often the engine polls it.
SIMULATOR_STEP_SECONDS = 0.05
TEST_POLL_SECONDS = 0.05
TEST_TIMEOUT_SECONDS = 30


class LocalStack(NamedTuple):
    """The ``stack`` fixture: what create_stack made, and Settings pointing at it."""

    info: StackInfo
    settings: Settings


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session, on 127.0.0.1 and a free port."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The moto server, emptied (resources, request log, faults), with this process's AWS
    environment (and that of any child process) pointed at it."""
    moto_server.reset()
    for name, value in aws_env(moto_server.endpoint_url, moto_server.region).items():
        monkeypatch.setenv(name, value)
    for name in UNSAFE_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    return moto_server


@pytest.fixture
def stack(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """The stack created in moto (service running v4.3.0, v4.3.0/v4.4.0/v4.5.0 in ECR), and
    Settings for it with a fast poll; the same settings are in the environment for children."""
    monkeypatch.setenv("ROLLOUT_POLL_SECONDS", str(TEST_POLL_SECONDS))
    monkeypatch.setenv("ROLLOUT_TIMEOUT_SECONDS", str(TEST_TIMEOUT_SECONDS))
    for name in ("STACK_NAME", "ECS_CLUSTER", "ECS_SERVICE", "ECR_REPOSITORY", "DEPLOY_TABLE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    info = create_stack(aws.endpoint_url, settings)
    aws.requests.clear()  # tests count what happens after the stack exists
    return LocalStack(info=info, settings=settings)


# Three targets: staging in a cluster of its own; production (promotion only, after staging)
# and billing as two services of one cluster, the stack's. One repository for the three.
STAGING_CLUSTER = STAGING_SERVICE = "hello-world-ecr-ecs-fargate-staging"
BILLING_SERVICE = "hello-world-billing"
FLEET_TOML = """
[targets.staging]
cluster = "hello-world-ecr-ecs-fargate-staging"
service = "hello-world-ecr-ecs-fargate-staging"
repository = "hello-world-ecr-ecs-fargate"

[targets.production]
cluster = "hello-world-ecr-ecs-fargate"
service = "hello-world-ecr-ecs-fargate"
repository = "hello-world-ecr-ecs-fargate"
after = "staging"

[targets.billing]
cluster = "hello-world-ecr-ecs-fargate"
service = "hello-world-billing"
repository = "hello-world-ecr-ecs-fargate"
"""


class FleetStack(NamedTuple):
    """The ``fleet_stack`` fixture: the stack with staging and billing beside production, the
    deploybot.toml naming the three, and Settings reading it (also in the environment)."""

    info: StackInfo
    settings: Settings
    config: str  # the deploybot.toml's path


@pytest.fixture
def fleet_stack(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> FleetStack:
    """``stack`` plus two services: staging (its own cluster) and billing (production's
    cluster); DEPLOYBOT_CONFIG names a deploybot.toml of the three, production the default."""
    add_service(stack.info, stack.settings, cluster=STAGING_CLUSTER, service=STAGING_SERVICE)
    add_service(
        stack.info, stack.settings, cluster=stack.settings.ecs_cluster, service=BILLING_SERVICE
    )
    config = tmp_path_factory.mktemp("config") / "deploybot.toml"
    config.write_text(FLEET_TOML, encoding="utf-8")
    monkeypatch.setenv("DEPLOYBOT_CONFIG", str(config))
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return FleetStack(stack.info, settings, str(config))


@pytest.fixture
def simulator(aws: MotoServer) -> Iterator[RolloutSimulator]:
    """The rollout simulator on its own thread, a step every SIMULATOR_STEP_SECONDS."""
    sim = RolloutSimulator(aws, step_seconds=SIMULATOR_STEP_SECONDS)
    sim.start()
    yield sim
    sim.stop()


# The Slack side: people, channels and the (test-only) tokens the emulator and the bot share.
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
DEPLOYS, RANDOM = "C0DEPLOYS", "C0RANDOM"
# BOT_TOKEN, APP_TOKEN, SIGNING_SECRET: from tests/slack/scopes.py, beside the check for them.


# -- pytest-xdist: how `make test` (-n, --dist loadfile) shares the tests out ------------------
# Each test is a unit of its own, sent to whichever worker is free, except:
# - a module with a module- or class-scoped fixture (its own or its directory's conftest's) goes
#   whole to one worker, so the fixture is built once (read from the source, see _kept_whole);
# - tests that load the whole machine (Docker builds, the browser, bots killed at random
#   points) share one worker, one after the other: they never overlap each other.
# The units are handed out in collection order, that chain first (HEAVY_FIRST).
# Without -n (one process) none of this applies but the order.
ONE_AFTER_ANOTHER = "heavy"
HEAVY = (
    "tests/docker/",
    "tests/local/test_playground.py",
    "tests/reliability/test_faults.py::test_bot_killed_at_random_points_of_rollouts",
)
# The one-after-another chain is the longest: it starts first. The rest keep their order (the
# reliability and Slack tests, the most sensitive to load, come after the Docker builds).
HEAVY_FIRST = HEAVY
_ROOT = Path(__file__).resolve().parent.parent
_SHARED_SCOPE = re.compile(r"""scope\s*=\s*["'](module|class|package)["']""")


@functools.cache
def _kept_whole(module: str) -> bool:
    """Whether ``module`` (a path from the root) or a conftest.py above it within tests/
    declares a fixture of module, class or package scope."""
    path = _ROOT / module
    tests = _ROOT / "tests"
    sources = [path, *(d / "conftest.py" for d in path.parents if d.is_relative_to(tests))]
    return any(
        _SHARED_SCOPE.search(source.read_text(encoding="utf-8"))
        for source in sources
        if source.is_file()
    )


def unit_of(nodeid: str) -> str:
    """The unit of work ``nodeid`` is sent to a worker in (tests in one unit share a worker and
    run in collection order)."""
    if nodeid.startswith(HEAVY):
        return ONE_AFTER_ANOTHER
    module = nodeid.split("::", 1)[0]
    return module if _kept_whole(module) else nodeid


def _weight(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(HEAVY_FIRST) if nodeid.startswith(prefix)), 99)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _weight(item.nodeid))  # stable: the rest keep their order


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: -p no:xdist works
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With --dist loadfile, xdist's scheduler for scopes, with our units (``unit_of``) in
    collection order, instead of one unit per file in order of size."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # the collection's order: HEAVY_FIRST
    return Units(config, log)


# A test's figures (tests/reliability/conftest.py's ``report``) travel in its report's
# user_properties under this name, so they reach the summary from any xdist worker.
FIGURE = "figure"
_FIGURES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _FIGURES.extend(str(value) for name, value in report.user_properties if name == FIGURE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _calls_are_granted() -> Iterator[None]:
    """Every AWS call an in-process AwsClient makes during a test (its fixtures included) is
    one bot.yml's task role grants: least privilege, held test by test (tests/aws_calls.py)."""
    with recorded() as calls:
        yield
    assert ungranted(calls) == [], "the engine called these but bot.yml does not grant them"


def check_slack(emu: SlackEmulator) -> None:
    """What a test's bot did to Slack: each Web API method within the manifest's scopes, and
    no test token in any message, ephemeral or call's parameters."""
    problems = scope_problems(c.method for c in emu.calls)
    assert not problems, problems
    snap = emu.snapshot()
    sent = json.dumps([snap["channels"], snap["ephemerals"], snap["calls"]])
    assert not secrets_in(sent), f"{secrets_in(sent)} sent to Slack"


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    """The Slack emulator on 127.0.0.1, with alice and bob allowed to deploy in the tests.
    What the bot did to it is checked when the test ends (``check_slack``)."""
    emu = SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        signing_secret=SIGNING_SECRET,
        users={ALICE: "alice", BOB: "bob", CAROL: "carol"},
        channels={DEPLOYS: "deploys", RANDOM: "random"},
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
    check_slack(emu)


# -- GitHub -------------------------------------------------------------------------------------
# The history the stack's releases were built from: each release's last commit is named by the
# sha its image is tagged with (bot/local/stack.py's fake_sha), as CI would have tagged it.
GITHUB_HISTORY = {
    "v4.3.0": ["feat: hello on /", "release: v4.3.0"],
    "v4.4.0": ["feat: greet by name", "fix: <b>logs</b> & <!here>", "release: v4.4.0"],
    "v4.5.0": [*(f"feat: change {i}" for i in range(11)), "release: v4.5.0"],
}


class GitHub(NamedTuple):
    """The ``github`` fixture: the stand-in, and the settings that point the bot at it."""

    emulator: GitHubEmulator
    env: dict[str, str]  # GITHUB_REPOSITORY, GITHUB_TOKEN, GITHUB_API_URL

    def settings(self, settings: Settings, **more: object) -> Settings:
        return settings.model_copy(
            update={
                "github_repository": DEFAULT_REPOSITORY,
                "github_token": SecretStr(DEFAULT_TOKEN),
                "github_api_url": self.emulator.api_url,
                **more,
            }
        )


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHub]:
    """The GitHub stand-in with the releases' history; its settings are in the environment
    (for child processes) and in ``GitHub.settings`` (for an engine in this process)."""
    with GitHubEmulator() as emu:
        for version, messages in GITHUB_HISTORY.items():
            named: list[str | None] = [None] * (len(messages) - 1) + [fake_sha(version)]
            emu.add_commits(messages, named=named)
        env = {
            "GITHUB_REPOSITORY": DEFAULT_REPOSITORY,
            "GITHUB_TOKEN": DEFAULT_TOKEN,
            "GITHUB_API_URL": emu.api_url,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield GitHub(emu, env)
