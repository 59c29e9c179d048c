"""The bot's logs: one deployment followed by one filter; no token or secret anywhere.

Every test's bot logs (tests/slack/conftest.py) and what its bots sent to Slack (the
``emulator`` fixture) are grepped for the test tokens when it ends; here, the worst cases: a
Slack that echoes the token into its error, tokens Slack rejects, and what the CLI prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bot.deploy.engine import Engine
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import (
    ALICE,
    DEPLOYS,
    LocalStack,
)
from tests.slack.conftest import BotFactory
from tests.slack.scopes import (
    BAD_APP_TOKEN,
    BAD_BOT_TOKEN,
    BOT_TOKEN,
    SECRETS,
    secrets_in,
)

SERVICE = "hello-world-ecr-ecs-fargate/hello-world-ecr-ecs-fargate"


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of the bot's output, parsed; a line that is not a JSON object fails."""
    lines = []
    for text in output.splitlines():
        if text.strip():
            line = json.loads(text)
            assert isinstance(line, dict) and {"ts", "level", "message"} <= set(line), text
            lines.append(line)
    return lines


def deploybot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = secrets_in(done.stdout + done.stderr)
    assert not found, f"{found} printed by deploybot {' '.join(args)}"
    return done


def test_one_deployment_is_followed_end_to_end_by_its_id(
    stack: LocalStack, simulator: RolloutSimulator, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in emulator.messages(DEPLOYS)),
        timeout=60,
        what="the deploy to finish",
    )
    assert bot.stop() == 0
    record = Engine(stack.settings).history(1)[0]  # the id, from the history table
    lines = json_lines(bot.output())  # stdout and stderr: every line is JSON
    ours = [line for line in lines if line.get("deployment_id") == record.id]
    messages = [line["message"] for line in ours]
    assert len(ours) >= 4, messages
    assert messages[0] == "deploy of v4.4.0-ecr-ecs-fargate started by alice"
    assert any(m.startswith("progress message posted") for m in messages), messages
    assert any(m.startswith("rollout IN_PROGRESS") for m in messages), messages
    # The outcome, then the requester told of it (bot/slack/requester.py), the same id on both.
    done = next(i for i, m in enumerate(messages) if m.startswith("deployment completed"))
    assert ours[done]["outcome"] == "COMPLETED"
    assert messages[done + 1 :] == ["told the requester in a DM"], messages
    for line in ours:
        assert line["service"] == SERVICE, line
        assert line["tag"] == "v4.4.0-ecr-ecs-fargate", line
        assert line["who"] == ALICE, line
        assert line["source"] == "slack", line
    print(f"\n{len(ours)} of {len(lines)} log lines carry {record.id}: {messages}")


class _EchoingSlack(BaseHTTPRequestHandler):
    """A Slack that puts the caller's token into its error: the worst case for a log line."""

    tokens: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        type(self).tokens.append(token)
        body = json.dumps({"ok": False, "error": f"invalid_auth for token {token}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_slack() -> Iterator[tuple[str, list[str]]]:
    """Its Web API base URL, and the tokens it received."""
    tokens: list[str] = []
    handler = type("Handler", (_EchoingSlack,), {"tokens": tokens})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/", tokens
    server.shutdown()
    server.server_close()


def test_a_token_slack_echoes_into_an_error_is_redacted(
    stack: LocalStack, start_bot: BotFactory, echoing_slack: tuple[str, list[str]]
) -> None:
    url, received = echoing_slack
    bot = start_bot("http", SLACK_API_URL=url)
    deadline = time.monotonic() + 20
    while "Slack rejected the bot token" not in bot.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    bot.stop()
    assert BOT_TOKEN in received  # the token did go into the error Slack sent back
    rejected = [
        line for line in json_lines(bot.output()) if "rejected the bot token" in line["message"]
    ]
    assert rejected, bot.output()
    assert rejected[0]["message"].endswith("invalid_auth for token [redacted]")
    assert BOT_TOKEN not in bot.output()

    notified = deploybot(
        "notify", "image-pushed", "--tag", "v4.4.0-ecr-ecs-fargate",
        env={"SLACK_API_URL": url, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_CHANNEL": DEPLOYS},
    )  # fmt: skip
    assert notified.returncode == 2
    assert "invalid_auth for token [redacted]" in notified.stderr
    assert BOT_TOKEN not in notified.stdout + notified.stderr


def test_rejected_tokens_are_not_printed_or_logged(
    stack: LocalStack, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    notified = deploybot(
        "notify", "image-pushed", "--tag", "v4.4.0-ecr-ecs-fargate",
        env={"SLACK_API_URL": emulator.api_url, "SLACK_BOT_TOKEN": BAD_BOT_TOKEN,
             "SLACK_CHANNEL": DEPLOYS},
    )  # fmt: skip
    assert notified.returncode == 2
    assert "invalid_auth" in notified.stderr
    assert BAD_BOT_TOKEN not in notified.stdout + notified.stderr

    # HTTP mode with a bad bot token: it serves, says Slack rejected the token, and a
    # request signed with the real secret is refused (the bot's secret is another).
    bot = start_bot("http", SLACK_BOT_TOKEN=BAD_BOT_TOKEN, SLACK_SIGNING_SECRET=BAD_APP_TOKEN)
    delivery = emulator.slash_command(
        "/deploy-status", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    assert delivery.status == 401
    bot.stop()
    assert any("rejected the bot token" in line["message"] for line in json_lines(bot.output()))

    # Socket Mode with a bad app token: slack_sdk keeps trying, and says so.
    log_path = bot.log_path + ".socket"
    env = {**bot.env, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": BAD_APP_TOKEN}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(bot.port), "--host", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with open(log_path, encoding="utf-8") as f:
                    if "Failed to connect" in f.read():
                        break
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    with open(log_path, encoding="utf-8") as f:
        output = f.read()
    failed = [line for line in json_lines(output) if "invalid_auth" in line["message"]]
    assert failed, output
    for secret in SECRETS:
        assert secret not in output
