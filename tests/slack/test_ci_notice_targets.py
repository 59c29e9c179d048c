"""CI's notice knows the targets (#29): the workflow's notify step, run as release.yml writes
it, reads them (the repository's deploybot.toml, or the bot's SSM parameter), and every
button, confirm dialog and part of the body is computed for its own target: its service,
what it runs now, its commits. Against moto and the Slack emulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.slack_emulator import Message, SlackEmulator
from bot.local.stack import add_service
from tests.conftest import (
    BILLING_SERVICE,
    BOT_TOKEN,
    DEPLOYS,
    FLEET_TOML,
    STAGING_CLUSTER,
    STAGING_SERVICE,
    GitHub,
    LocalStack,
)
from tests.infra.templates import load_template, role_actions, role_statements
from tests.slack.test_ci_notice_and_rollback import notify

ROOT = Path(__file__).parents[2]
V45 = "v4.5.0-ecr-ecs-fargate"
STACK = "hello-world-ecr-ecs-fargate"
PARAMETER = f"/{STACK}-bot/deploybot.toml"  # cloudformation/bot.yml's BotConfig


@pytest.fixture
def config(stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Three targets that run three releases: production v4.3.0 (promotion only, after
    staging), staging v4.4.0, billing v4.5.0; their deploybot.toml, in no variable."""
    add_service(stack.info, stack.settings, cluster=STAGING_CLUSTER, service=STAGING_SERVICE,
                running="v4.4.0")  # fmt: skip
    add_service(stack.info, stack.settings, cluster=stack.settings.ecs_cluster,
                service=BILLING_SERVICE, running="v4.5.0")  # fmt: skip
    for name in ("DEPLOYBOT_CONFIG", "DEPLOYBOT_CONFIG_TEXT", "DEPLOY_TARGET"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "deploybot.toml"
    path.write_text(FLEET_TOML, encoding="utf-8")
    return path


def confirm_text(notice: Message, action_id: str) -> str:
    button = notice.button(action_id)
    assert button is not None, (
        f"no button {action_id}: {[b.get('action_id') for b in notice.buttons]}"
    )
    return str(button["confirm"]["text"]["text"])


def assert_per_target(notice: Message) -> None:
    """A button per target that takes images directly, each dialog and body part its own."""
    assert {b.get("action_id") for b in notice.buttons} == {
        "deploy_tag:staging",
        "deploy_tag:billing",
    }
    staging = confirm_text(notice, "deploy_tag:staging")
    assert staging.startswith(f"Deploy {V45} to staging ({STAGING_SERVICE})?\n"), staging
    assert re.search(r"Forward 1 release: v4\.4\.0 .*→ v4\.5\.0", staging), staging
    billing = confirm_text(notice, "deploy_tag:billing")
    assert billing.startswith(f"Deploy {V45} to billing ({STACK}/{BILLING_SERVICE})?\n"), billing
    assert "Same image" in billing, billing
    assert re.search(r"\*To staging:\* Forward 1 release: v4\.4\.0 .*→ v4\.5\.0", notice.all_text)
    assert "*billing* runs this image already." in notice.all_text
    # Production's service and what it runs (v4.3.0) are nowhere: it has no button here.
    assert "v4.3.0" not in str(notice.blocks), notice.all_text


def test_each_button_dialog_and_body_is_computed_for_its_own_target(
    config: Path, emulator: SlackEmulator
) -> None:
    """#29: the dialog of "Deploy to staging" said production's service and production's
    change ("Forward 2 releases: v4.3.0 → …")."""
    done = notify(emulator, "--tag", V45, DEPLOYBOT_CONFIG=str(config))
    assert done.returncode == 0, done.stderr
    (notice,) = emulator.messages(DEPLOYS)
    assert_per_target(notice)


# --- release.yml's notify step, as the YAML writes it --------------------------------------

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def evaluate(text: str, contexts: dict[str, Any]) -> str:
    """GitHub's ``${{ … }}`` in ``text``, for what release.yml uses: context paths
    (secrets.X, vars.X, steps.ID.outputs.X, env.X), 'literals' and ``a || b`` (the first
    truthy; GitHub's expressions syntax, "Operators"). Anything else fails the test."""

    def one(match: re.Match[str]) -> str:
        for part in match.group(1).split("||"):
            part = part.strip()
            if part.startswith("'") and part.endswith("'"):
                value: Any = part[1:-1]
            else:
                value = contexts
                for key in part.split("."):
                    if not isinstance(value, dict):
                        raise AssertionError(f"cannot evaluate {part!r} in {text!r}")
                    value = value.get(key, "")
            if value:
                return str(value)
        return ""

    return _EXPRESSION.sub(one, text)


def notify_step() -> tuple[dict[str, str], dict[str, str], str]:
    """The workflow's env, the notify step's env and its script, as release.yml has them."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    (step,) = [
        s
        for job in workflow["jobs"].values()
        for s in job["steps"]
        if "deploybot notify image-pushed" in s.get("run", "")
    ]
    assert "shell" not in step and "working-directory" not in step  # defaults, as below
    return workflow.get("env", {}), step.get("env", {}), step["run"]


def run_notify_step(
    workspace: Path,
    emulator: SlackEmulator,
    github: GitHub,
    tmp_path: Path,
    aws_endpoint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The step's script with GitHub's default shell on Linux, ``bash -e {0}`` (Workflow
    syntax, jobs.<job_id>.steps[*].shell), in the checkout, with the runner's variables (its
    GITHUB_API_URL: the GitHub emulator), the step's env evaluated, the role's credentials
    (moto's) and Slack's API at the emulator. `uv run` is the project's environment (the job
    ran `uv sync --locked --no-dev`). ``aws_endpoint``: AWS through the fault proxy."""
    workflow_env, step_env, script = notify_step()
    contexts = {
        "secrets": {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_CHANNEL": DEPLOYS},
        "vars": {},  # the repository sets none: deploybot's defaults
        "steps": {"tags": {"outputs": {"version": V45}}},
        "github": {"token": github.env["GITHUB_TOKEN"]},  # the job's token (contents: read)
    }
    env = {k: evaluate(str(v), contexts) for k, v in workflow_env.items()}
    contexts["env"] = env
    env |= {k: evaluate(str(v), contexts) for k, v in step_env.items()}
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "uv").write_text(
        '#!/bin/sh\n[ "$1" = run ] || { echo "only uv run here" >&2; exit 97; }\nshift\n'
        f'exec "{Path(sys.executable).parent}/$@"\n'
    )
    (shim / "uv").chmod(0o755)
    runner = {
        "PATH": f"{shim}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GITHUB_SHA": "abc1234def5678",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": github.env["GITHUB_REPOSITORY"],
        "GITHUB_API_URL": github.env["GITHUB_API_URL"],  # the runner's own variable
        "GITHUB_RUN_ID": "42",
        "GITHUB_WORKSPACE": str(workspace),
        "SLACK_API_URL": emulator.api_url,  # slack.com, here the emulator
    }
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}  # the role's, moto's
    if aws_endpoint:
        aws["AWS_ENDPOINT_URL"] = aws_endpoint
    (tmp_path / "step.sh").write_text(evaluate(script, contexts))
    return subprocess.run(
        ["bash", "-e", str(tmp_path / "step.sh")],
        cwd=workspace,
        env=aws | runner | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("source", ["the bot's parameter", "the repository's deploybot.toml"])
def test_the_workflows_notify_step_offers_a_button_per_target(
    source: str,
    config: Path,
    aws: MotoServer,
    emulator: SlackEmulator,
    github: GitHub,
    tmp_path: Path,
) -> None:
    """#29: run as release.yml runs it (SLACK_BOT_TOKEN, SLACK_CHANNEL, STACK_NAME and no
    targets), the notice had one "Deploy", to production."""
    workspace = tmp_path / "checkout"
    workspace.mkdir()
    if source == "the bot's parameter":
        ssm = boto3.client("ssm", endpoint_url=aws.endpoint_url, region_name=aws.region)
        ssm.put_parameter(Name=PARAMETER, Value=config.read_text(), Type="String")
    else:
        (workspace / "deploybot.toml").write_text(config.read_text())
    aws.requests.clear()
    done = run_notify_step(workspace, emulator, github, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (notice,) = emulator.messages(DEPLOYS)
    assert_per_target(notice)
    # Staging's commits (v4.4.0..v4.5.0), not production's (v4.3.0..v4.5.0: "greet by name").
    assert "feat: change 10" in confirm_text(notice, "deploy_tag:staging")
    assert "feat: change 10" in notice.all_text and "greet by name" not in str(notice.blocks)
    assert "abc1234def56" in notice.all_text and "actions/runs/42" in str(notice.blocks)
    # The parameter is read only when the repository has no deploybot.toml, with the one
    # action CI's role has on it (tests/infra/test_ci_role.py).
    read = 1 if source == "the bot's parameter" else 0
    assert aws.requests.count("ssm") == aws.requests.count("ssm", "GetParameter") == read


def test_without_the_parameter_the_step_says_so_and_offers_the_default(
    config: Path, aws: MotoServer, emulator: SlackEmulator, github: GitHub, tmp_path: Path
) -> None:
    """No deploybot.toml anywhere (one service): one Deploy, and stderr says why."""
    workspace = tmp_path / "checkout"
    workspace.mkdir()
    done = run_notify_step(workspace, emulator, github, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"no parameter {PARAMETER}" in done.stderr
    (notice,) = emulator.messages(DEPLOYS)
    assert [b.get("action_id") for b in notice.buttons] == ["deploy_tag"]
    dialog = confirm_text(notice, "deploy_tag")
    assert dialog.startswith(f"Deploy {V45} to {STACK}?\n") and "v4.3.0" in dialog, dialog


def test_with_only_what_cis_role_may_do_the_buttons_are_still_per_target(
    config: Path, aws: MotoServer, emulator: SlackEmulator, github: GitHub, tmp_path: Path
) -> None:
    """As CI runs it: its role (cloudformation/ci.yml) reads the bot's parameter and the
    freezes, and nothing of ECS. Whatever else the notice asks AWS is refused at the wire
    (AccessDeniedException from the fault proxy): the buttons are still one per target, each
    dialog naming its own service, without a change it could not read (never production's),
    and stderr says why. A role not updated yet (no GetParameter: `make ci-infra`) gets the
    environment's one Deploy, said on stderr."""
    ssm = boto3.client("ssm", endpoint_url=aws.endpoint_url, region_name=aws.region)
    ssm.put_parameter(Name=PARAMETER, Value=config.read_text(), Type="String")
    workspace = tmp_path / "checkout"
    workspace.mkdir()
    # What the notice asks AWS, from a run with every permission; the role's grants.
    aws.requests.clear()
    assert run_notify_step(workspace, emulator, github, tmp_path).returncode == 0
    asked = {f"{e.service}:{e.operation}" for e in aws.requests}
    granted = set(role_actions(role_statements(load_template("ci"), "ReleaseRole")))
    assert {"ssm:GetParameter", "dynamodb:GetItem"} <= asked & granted
    assert "ecs:DescribeServices" in asked - granted

    with FaultProxy(aws.endpoint_url) as proxy:
        for action in sorted(asked - granted):
            service, operation = action.split(":")
            proxy.refuse(service, operation)
        done = run_notify_step(workspace, emulator, github, tmp_path, proxy.endpoint_url)
        assert done.returncode == 0, done.stdout + done.stderr
        notice = emulator.messages(DEPLOYS)[-1]
        ids = [b.get("action_id") for b in notice.buttons]
        assert ids == ["deploy_tag:staging", "deploy_tag:billing"]
        staging = f"Deploy {V45} to staging ({STAGING_SERVICE})?"
        assert confirm_text(notice, "deploy_tag:staging") == staging
        billing = f"Deploy {V45} to billing ({STACK}/{BILLING_SERVICE})?"
        assert confirm_text(notice, "deploy_tag:billing") == billing
        assert "v4.3.0" not in str(notice.blocks) and "Forward" not in notice.all_text
        assert "the notice has no change summary for staging: AWS refused access" in done.stderr

        proxy.refuse("ssm", "GetParameter")  # the role before `make ci-infra`
        done = run_notify_step(workspace, emulator, github, tmp_path, proxy.endpoint_url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"the notice cannot read the targets in {PARAMETER}: AWS refused" in done.stderr
        notice = emulator.messages(DEPLOYS)[-1]
        assert [b.get("action_id") for b in notice.buttons] == ["deploy_tag"]
        assert confirm_text(notice, "deploy_tag") == f"Deploy {V45} to {STACK}?"
