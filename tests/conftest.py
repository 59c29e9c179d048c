"""Shared fixtures: moto's server over HTTP, the local stack in it, and the rollout simulator."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest
from pydantic import SecretStr

from bot.local.aws import DEFAULT_REGION, FAKE_AWS_ENV, UNSAFE_AWS_VARS, MotoServer, aws_env
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.local.stack import StackInfo, add_service, create_stack, fake_sha
from bot.settings import Settings
from tests import aws_calls  # noqa: F401  (starts recording the engine's AWS calls)

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
BOT_TOKEN = "xoxb-test-bot-token-4f9a2c"
APP_TOKEN = "xapp-test-app-token-7d1e5b"
SIGNING_SECRET = "test-signing-secret-93bd0e"


# Every bot log of the session (tests/slack/conftest.py appends to it); the secrets test reads it.
BOT_LOG_FILE = os.path.join(tempfile.gettempdir(), "deploybot-test-logs.jsonl")
# These run after every other test: they check what the whole session did.
RUN_LAST = ("tests/slack/test_manifest.py", "tests/slack/test_logs.py")


@dataclass
class SlackRecord:
    """What the bot did to Slack during the session, test by test, from each ``emulator``."""

    methods: dict[str, set[str]] = field(default_factory=dict)  # test id -> Web API methods
    sent: list[str] = field(default_factory=list)  # messages, ephemerals, call params as JSON

    def add(self, test: str, emu: SlackEmulator) -> None:
        self.methods.setdefault(test, set()).update(c.method for c in emu.calls)
        snap = emu.snapshot()
        self.sent.append(json.dumps([snap["channels"], snap["ephemerals"], snap["calls"]]))


SLACK_RECORD = SlackRecord()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.path.exists(BOT_LOG_FILE):
        os.remove(BOT_LOG_FILE)  # a session reads only its own bots' logs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0]
        return RUN_LAST.index(module) + 1 if module in RUN_LAST else 0

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[SlackEmulator]:
    """The Slack emulator on 127.0.0.1, with alice and bob allowed to deploy in the tests.
    What the bot did to it is kept in SLACK_RECORD for the manifest and secrets tests."""
    emu = SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        signing_secret=SIGNING_SECRET,
        users={ALICE: "alice", BOB: "bob", CAROL: "carol"},
        channels={DEPLOYS: "deploys", RANDOM: "random"},
    )
    emu.start()
    yield emu
    SLACK_RECORD.add(request.node.nodeid, emu)
    emu.stop()


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
