"""The bot as a real process (``deploybot serve``), talking to the Slack emulator and moto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from bot.local.slack_emulator import SlackEmulator
from tests.conftest import (
    ALICE,
    APP_TOKEN,
    BOB,
    BOT_TOKEN,
    DEPLOYS,
    RANDOM,
    SIGNING_SECRET,
    LocalStack,
)
from tests.helpers import free_port, wait_http
from tests.slack.scopes import secrets_in

TEST_LEASE_SECONDS = 3.0  # LOCK_LEASE_SECONDS of the bots: the lock's and a follower's lease


@dataclass
class BotProcess:
    """A ``deploybot serve`` child process; ``restart`` and ``kill`` act on the real process."""

    mode: str
    env: dict[str, str]
    port: int
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str | None:
        return self.url + "/slack/events" if self.mode == "http" else None

    def start(self, emulator: SlackEmulator) -> None:
        args = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port"]
        args.append(str(self.port))
        if self.mode == "http":
            args.append("--http")
        opened = emulator.sockets_opened
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/healthz", timeout=30)
        if self.mode == "socket":  # its own connection, whoever else is connected
            emulator.wait_for(
                lambda: emulator.sockets_opened > opened and emulator.socket_connected,
                timeout=20,
                what="the bot's Socket Mode connection",
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


BotFactory = Callable[..., BotProcess]


def start_bots(start_bot: BotFactory, n: int, mode: str = "http", **env: str) -> list[BotProcess]:
    """``n`` bots started at once, their start-ups overlapping (seconds of imports each), for
    the tests of replicas where the order they start in is not what is tested. In Socket Mode
    each bot's own wait may be met by another's connection: wait for all ``n``
    (``emulator.wait_socket_connected(count=n)``)."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: start_bot(mode, **env), range(n)))


@pytest.fixture
def start_bot(
    stack: LocalStack, emulator: SlackEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotFactory]:
    started: list[BotProcess] = []

    def start(mode: str = "http", **env: str) -> BotProcess:
        full = dict(os.environ)
        full.update(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=emulator.api_url,
            SLACK_CHANNEL=DEPLOYS,
            DEPLOY_ALLOWED_USERS=f"{ALICE},{BOB}",
            DEPLOY_ALLOWED_CHANNELS=f"{DEPLOYS},{RANDOM}",
        )
        # A short follower lease: a bot killed mid-rollout is replaced by the next one (or
        # by itself, restarted) within a few seconds instead of two minutes.
        full["LOCK_LEASE_SECONDS"] = str(TEST_LEASE_SECONDS)
        full.update(env)
        log_dir = tmp_path_factory.mktemp("bot")
        bot = BotProcess(mode, full, free_port(), str(log_dir / "bot.log"))
        bot.start(emulator)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        if bot.proc is not None and bot.proc.poll() is None:
            bot.stop()
    for bot in started:
        check_log(bot)


def check_log(bot: BotProcess) -> None:
    """No test token in anything the bot logged (checked as each test's bots stop)."""
    found = secrets_in(bot.output())
    assert not found, f"{found} in the log of the bot on port {bot.port} ({bot.log_path})"
