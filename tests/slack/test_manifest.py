"""bot/slack/manifest.yml held against the code: commands and listeners, scopes and calls.

The scopes, both ways: every test's Web API calls are held against the manifest's scopes when it
ends (tests/slack/scopes.py, through the ``emulator`` fixture); here, a scripted run through every
declared command needs every scope the manifest declares, and no other.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from slack_bolt.async_app import AsyncApp

from bot.command_names import BUILT_INS, DEFAULT_COMMANDS, REFUSED_BUILT_INS, problem_with
from bot.deploy.engine import Engine
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.settings import Settings
from bot.slack.app import build_app
from bot.slack.manifest import render_manifest
from tests.conftest import (
    ALICE,
    APP_TOKEN,
    BOT_TOKEN,
    DEPLOYS,
    SIGNING_SECRET,
    LocalStack,
)
from tests.slack.conftest import BotFactory
from tests.slack.scopes import APP_LEVEL, COMMANDS_SCOPE, EVENT_SCOPES, MANIFEST, SCOPES


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(data, dict)
    return data


def declared_commands(manifest: dict[str, Any]) -> set[str]:
    return {c["command"] for c in manifest["features"]["slash_commands"]}


# Slack's rules for a command's name, restated from their sources (see bot/command_names.py): a
# leading "/", at most 32 characters with it, lowercase, no spaces, letters, digits, - and _.
def slack_takes(name: str) -> bool:
    return (
        name.startswith("/")
        and len(name) <= 32
        and name == name.lower()
        and " " not in name
        and re.fullmatch(r"/[a-z0-9][a-z0-9-]*", name) is not None
        and name not in REFUSED_BUILT_INS
    )


def test_the_manifest_file_is_what_deploybot_manifest_prints_for_the_defaults() -> None:
    assert MANIFEST.read_text() == render_manifest(DEFAULT_COMMANDS), (
        "regenerate it: SLACK_DEPLOY_COMMAND= ... deploybot manifest > bot/slack/manifest.yml"
    )


def test_declared_commands_are_names_slack_accepts(manifest: dict[str, Any]) -> None:
    """The failure of issue 19: a manifest declaring /status is refused whole by Slack."""
    commands = declared_commands(manifest)
    assert commands == set(DEFAULT_COMMANDS.all())
    for command in commands:
        assert slack_takes(command), command
        assert command not in BUILT_INS, f"{command} is one of Slack's built-in commands"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("/status", "built-in"),
        ("/remind", "built-in"),
        ("/help", "built-in"),
        ("status", "must start with '/'"),
        ("/Deploy", "lowercase"),
        ("/deploy now", "no spaces"),
        ("/d\u00e9ploy", "lowercase letters, digits"),
        ("/" + "x" * 32, "at most 32"),
        ("/-x", "lowercase letters, digits"),
        ("/deploy_staging", "no '_'"),
    ],
)
def test_names_slack_refuses_are_refused_with_a_reason(name: str, says: str) -> None:
    problem = problem_with(name)
    assert problem is not None and says in problem
    assert not slack_takes(name) or name in BUILT_INS


@pytest.mark.parametrize(
    "name", ["/deploy", "/deploy-status", "/deploy-staging", "/d2", "/" + "x" * 31]
)
def test_names_slack_takes_are_taken(name: str) -> None:
    assert problem_with(name) is None and slack_takes(name)


def deploybot(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=MANIFEST.parents[2],
    )


STAGING = {
    "SLACK_DEPLOY_COMMAND": "/deploy-staging",
    "SLACK_REDEPLOY_COMMAND": "/redeploy-staging",
    "SLACK_STATUS_COMMAND": "/deploy-staging-status",
}


def test_deploybot_manifest_declares_the_configured_names() -> None:
    done = deploybot("manifest", **STAGING)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert declared_commands(printed) == set(STAGING.values())
    assert printed["oauth_config"] == yaml.safe_load(MANIFEST.read_text())["oauth_config"]
    assert deploybot("manifest").stdout == MANIFEST.read_text()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SLACK_STATUS_COMMAND": "/status"}, "SLACK_STATUS_COMMAND: /status is one of Slack's"),
        ({"SLACK_DEPLOY_COMMAND": "/Deploy"}, "SLACK_DEPLOY_COMMAND: '/Deploy' is not a name"),
        ({"SLACK_REDEPLOY_COMMAND": "/deploy"}, "three different names"),
    ],
)
def test_a_name_slack_refuses_is_a_bad_configuration(env: dict[str, str], says: str) -> None:
    """Refused before a workspace is set up with it: `manifest` and `serve` exit 2."""
    for command in (["manifest"], ["serve", "--port", "9"]):
        done = deploybot(*command, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN, **env)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr
        assert done.stdout == ""


def test_manifest_keeps_to_slacks_schema(manifest: dict[str, Any]) -> None:
    """The limits of Slack's manifest schema (slackapi/manifest-schema, version 1)."""
    assert manifest["_metadata"]["major_version"] == 1
    assert set(manifest) <= {"_metadata", "display_information", "features", "oauth_config",
                             "settings"}  # fmt: skip
    info = manifest["display_information"]
    assert 1 <= len(info["name"]) <= 35 and 1 <= len(info["description"]) <= 140
    assert re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", info["background_color"])
    assert 1 <= len(manifest["features"]["bot_user"]["display_name"]) <= 80
    for command in manifest["features"]["slash_commands"]:
        assert set(command) <= {"command", "description", "usage_hint", "should_escape", "url"}
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", command["command"])
        assert 1 <= len(command["description"]) <= 2000
        assert 1 <= len(command.get("usage_hint", "x")) <= 1000
        assert command["should_escape"] is False  # the bot reads tags as typed
        assert "url" not in command  # Socket Mode: commands come over the socket
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"] == {"is_enabled": True}  # no request_url in Socket Mode
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False  # the secret holds long-lived tokens
    assert set(manifest["oauth_config"]["scopes"]) == {"bot"}  # no user scopes
    # The requester's DM (bot/slack/requester.py) needs the Messages tab: Slack refuses DMs
    # with messages_tab_disabled otherwise. Read-only: the bot reads no DMs (no im:history).
    assert manifest["features"]["app_home"] == {
        "home_tab_enabled": False,
        "messages_tab_enabled": True,
        "messages_tab_read_only_enabled": True,
    }


def test_every_declared_command_has_a_listener_and_back(
    manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What build_app registers through Bolt's public ``command`` and ``action``."""
    commands: list[str] = []
    actions: list[object] = []
    events: list[object] = []
    command, action, event = AsyncApp.command, AsyncApp.action, AsyncApp.event

    def record_command(self: AsyncApp, name: str, *args: Any, **kwargs: Any) -> Any:
        commands.append(name)
        return command(self, name, *args, **kwargs)

    def record_action(self: AsyncApp, constraints: object, *args: Any, **kwargs: Any) -> Any:
        actions.append(constraints)
        return action(self, constraints, *args, **kwargs)

    def record_event(self: AsyncApp, constraints: object, *args: Any, **kwargs: Any) -> Any:
        events.append(constraints)
        return event(self, constraints, *args, **kwargs)

    monkeypatch.setattr(AsyncApp, "command", record_command)
    monkeypatch.setattr(AsyncApp, "action", record_action)
    monkeypatch.setattr(AsyncApp, "event", record_event)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL="http://127.0.0.1:9/api/",  # nothing is called
    )
    build_app(settings, Engine(settings), socket_mode=True)
    assert len(commands) == len(set(commands))
    assert set(commands) == declared_commands(manifest)
    assert bool(actions) == manifest["settings"]["interactivity"]["is_enabled"]
    # The events the manifest subscribes to are those the bot listens to, and back.
    assert set(events) == set(manifest["settings"]["event_subscriptions"]["bot_events"])

    # Other names: the listeners follow the settings, as the manifest printed for them does.
    commands.clear()
    renamed = settings.model_copy(
        update={
            "slack_deploy_command": STAGING["SLACK_DEPLOY_COMMAND"],
            "slack_redeploy_command": STAGING["SLACK_REDEPLOY_COMMAND"],
            "slack_status_command": STAGING["SLACK_STATUS_COMMAND"],
        }
    )
    build_app(renamed, Engine(renamed), socket_mode=True)
    assert set(commands) == declared_commands(
        yaml.safe_load(render_manifest(renamed.slack_commands))
    )
    assert set(commands) == set(STAGING.values())


def test_a_bot_with_renamed_commands_answers_them_and_not_the_defaults(
    stack: LocalStack, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http", **STAGING)
    send = functools.partial(
        emulator.slash_command, user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    assert send("/deploy-status").status == 404
    assert send("/deploy").status == 404
    assert send("/deploy-staging-status").ok
    assert send("/deploy-staging", "help").ok
    help_ = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=ALICE) if "Usage" in e.all_text), None),
        what="the help of /deploy-staging",
    )
    assert "`/deploy-staging TAG`" in help_.all_text
    assert "`/deploy-staging-status`" in help_.all_text and "/deploy-status`" not in help_.all_text
    emulator.wait_for(
        lambda: any("v4.3.0-ecr-ecs-fargate" in e.all_text and "Usage" not in e.all_text
                    for e in emulator.ephemerals(user=ALICE)),
        what="the answer of /deploy-staging-status",
    )  # fmt: skip


def test_bot_scopes_are_exactly_what_the_bot_calls(
    manifest: dict[str, Any],
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    # The scripted part: each declared command is answered by a running bot, a command the
    # manifest does not declare is not (Bolt answers 404), and a /deploy runs to the end.
    # Alice deploys as a member of a user group (usergroups.list, usergroups.users.list).
    emulator.add_usergroup("S0DEPLOYERS", "deployers", [ALICE])
    bot = start_bot("http", DEPLOY_ALLOWED_USERS="S0DEPLOYERS")
    send = functools.partial(
        emulator.slash_command, user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    others = sorted(declared_commands(manifest) - {"/deploy"})
    assert send("/deploy", "v4.4.0").ok
    # Once the deploy holds the lock, /redeploy is answered with a refusal, /deploy-status with it.
    emulator.wait_for(lambda: emulator.messages(DEPLOYS), what="the progress message")
    for command in others:
        delivery = send(command)
        assert delivery.status == 200, (command, delivery)
    assert send("/undeclared").status == 404
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in emulator.messages(DEPLOYS)),
        timeout=60,
        what="the /deploy to finish",
    )
    emulator.wait_for(
        lambda: len(emulator.ephemerals(user=ALICE)) >= len(others), what="the other answers"
    )
    assert send("/deploy", "stats").ok  # the chart: files.uploadV2
    # The bot's first chart imports matplotlib: seconds of CPU, many more on a loaded machine.
    emulator.wait_for(
        lambda: [f for f in emulator.files() if f.completed],
        timeout=60,
        what="the stats chart's upload",
    )
    bot.stop()

    methods = {c.method for c in emulator.calls}
    unknown = methods - set(SCOPES)
    assert not unknown, f"add {sorted(unknown)} to tests/slack/scopes.py and the manifest"
    needed = set().union(*(SCOPES[m] for m in methods)) | {COMMANDS_SCOPE}
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert set(events) <= set(EVENT_SCOPES), "add the event's scopes to tests/slack/scopes.py"
    needed |= set().union(*(EVENT_SCOPES[e] for e in events))
    declared = set(manifest["oauth_config"]["scopes"]["bot"])
    if APP_LEVEL in needed:
        needed.discard(APP_LEVEL)
        assert manifest["settings"]["socket_mode_enabled"] is True
    assert declared - needed == set(), "declared bot scopes nothing uses"
    assert needed - declared == set(), "scopes the bot needs but the manifest does not declare"
    print(f"\nWeb API methods the bot called: {sorted(methods)}")
