"""The release workflow holds no AWS key, runs from tags only, and matches CI's role and images.

Read as data (the YAML), beside actionlint and zizmor in `make lint-infra`, which check syntax
and injection; these check what the role's trust (cloudformation/ci.yml) and the task
definitions count on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import Settings
from tests.infra.templates import load_template

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "release.yml"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")
TAG_ONLY = "github.ref_type == 'tag'"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def docker(workflow: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = workflow["jobs"]["docker"]
    return job


def _steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def test_no_long_lived_aws_key_anywhere() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    for key in ("aws-access-key-id", "aws-secret-access-key", "aws-session-token", "AWS_SECRET"):
        assert key not in text


def test_the_docker_job_assumes_the_role_through_oidc(docker: dict[str, Any]) -> None:
    (step,) = _steps_using(docker, "aws-actions/configure-aws-credentials")
    assert PINNED.match(step["uses"]), "pin actions to a commit"
    assert step["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert step["with"]["aws-region"] == "${{ env.AWS_REGION }}"
    assert set(step["with"]) <= {"role-to-assume", "aws-region", "role-session-name"}


def test_only_the_docker_job_may_ask_for_an_oidc_token(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    holders = {
        name
        for name, job in workflow["jobs"].items()
        if job.get("permissions", {}).get("id-token") == "write"
    }
    assert holders == {"docker"}
    assert workflow["jobs"]["docker"]["permissions"] == {"contents": "read", "id-token": "write"}


def test_the_environment_and_tags_are_the_ones_the_role_trusts(
    workflow: dict[str, Any], docker: dict[str, Any]
) -> None:
    parameters = load_template("ci")["Parameters"]
    assert docker["environment"] == parameters["GitHubEnvironment"]["Default"]
    assert workflow["on"]["push"]["tags"] == [parameters["ReleaseTagPattern"]["Default"]]


def _runs_only_on_tags(jobs: dict[str, Any], name: str) -> bool:
    """A job runs only on tags if its `if` says so, or a job it needs does (skips cascade)."""
    job = jobs[name]
    needs = job.get("needs", [])
    needs = [needs] if isinstance(needs, str) else needs
    return TAG_ONLY in job.get("if", "") or any(_runs_only_on_tags(jobs, n) for n in needs)


def test_a_manual_dispatch_runs_from_tags_only(workflow: dict[str, Any]) -> None:
    assert "workflow_dispatch" in workflow["on"]
    jobs = workflow["jobs"]
    assert [name for name in jobs if not _runs_only_on_tags(jobs, name)] == []
    # The job with credentials says so itself, whatever it comes to need.
    assert TAG_ONLY in jobs["docker"]["if"]


def test_region_and_stack_come_from_variables_with_deploybots_defaults(
    workflow: dict[str, Any],
) -> None:
    env = workflow["env"]
    for name, field in (("AWS_REGION", "aws_region"), ("STACK_NAME", "stack_name")):
        default = Settings.model_fields[field].default
        assert env[name] == f"${{{{ vars.{name} || '{default}' }}}}", name


def test_images_go_to_the_two_repositories_the_role_may_push(docker: dict[str, Any]) -> None:
    (tags,) = [s for s in docker["steps"] if s.get("id") == "tags"]
    pushed = set(re.findall(r"\$\{REGISTRY\}/([^:\"]+):", tags["run"]))
    assert pushed == {"${STACK_NAME}", "${STACK_NAME}-bot"}


def test_every_image_is_built_for_linux_amd64_with_its_release(docker: dict[str, Any]) -> None:
    builds = _steps_using(docker, "docker/build-push-action")
    assert {b["with"]["file"] for b in builds} == {"docker/Dockerfile", "docker/bot.Dockerfile"}
    for build in builds:
        assert PINNED.match(build["uses"])
        assert build["with"]["platforms"] == "linux/amd64"
        args = dict(line.split("=", 1) for line in build["with"]["build-args"].splitlines())
        assert args == {
            "RELEASE_VERSION": "${{ steps.tags.outputs.version }}",
            "RELEASE_COMMIT": "${{ github.sha }}",
        }
