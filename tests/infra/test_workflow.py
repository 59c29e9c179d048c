"""The release workflow holds no AWS key, runs from tags only, and matches CI's role and images.

Read as data (the YAML), beside actionlint and zizmor in `make lint-infra`, which check syntax
and injection; these check what the role's trust (cloudformation/ci.yml) and the task
definitions count on.
"""

from __future__ import annotations

import hashlib
import json
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


# -- release tags keep their image (#24): the tagging step, run as written against moto ---------

SUFFIX = "-ecr-ecs-fargate"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
STEP = "Tag the images, refusing to move a release tag"
_OUTPUT = re.compile(r"\$\{\{\s*steps\.(\w+)\.outputs\.(\w+)\s*\}\}")


def _manifest(name: str) -> str:
    def blob(part: str) -> str:
        return "sha256:" + hashlib.sha256(f"{name} {part}".encode()).hexdigest()

    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1}
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": 1,
                "digest": blob("config"),
            },
            "layers": [{**layer, "digest": blob("layer")}],
        }
    )


def _build(ecr: Any, repository: str, name: str) -> str:
    """The build's push by digest: moto's PutImage wants a tag, so a scratch one stands in."""
    image = ecr.put_image(
        repositoryName=repository, imageManifest=_manifest(name), imageTag=f"build-{name}"
    )
    return str(image["image"]["imageId"]["imageDigest"])


def _named(ecr: Any, repository: str, tag: str) -> str | None:
    found = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag}])
    return next((str(i["imageId"]["imageDigest"]) for i in found["images"]), None)


def _run_tag_step(
    docker: dict[str, Any], outputs: dict[str, dict[str, str]], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """The step's script with GitHub's default shell (``bash -e``), its env's
    ``steps.*.outputs.*`` filled in, ``uv run`` the project's environment (the job ran
    ``uv sync``), and the role's credentials: moto's."""
    (step,) = [s for s in docker["steps"] if s.get("name") == STEP]
    env = {k: _OUTPUT.sub(lambda m: outputs[m[1]][m[2]], str(v)) for k, v in step["env"].items()}
    shim = cwd / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "uv").write_text(
        f'#!/bin/sh\n[ "$1" = run ] || exit 97\nshift\nexec "{Path(sys.executable).parent}/$@"\n'
    )
    (shim / "uv").chmod(0o755)
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=WORKFLOW.parents[2],
        env={**aws, **env, "PATH": f"{shim}:/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outputs(service: str, bot: str, tags: list[str]) -> dict[str, dict[str, str]]:
    """What the tags step and the two builds hand the step, as they would."""
    refs = {
        name: "\n".join(f"{REGISTRY}/{repo}:{t}" for t in tags)
        for name, repo in (("service", "app"), ("bot", "app-bot"))
    }
    return {
        "tags": {"version": tags[0], **refs},
        "service": {"digest": service},
        "bot": {"digest": bot},
    }


def test_the_tagging_step_refuses_to_move_a_release_tag(
    docker: dict[str, Any], aws: MotoServer, tmp_path: Path
) -> None:
    ecr = boto3.client("ecr")
    for repo in ("app", "app-bot"):
        ecr.create_repository(repositoryName=repo)
    v440 = ["v4.4.0", "v4.4", "v4", "sha-abc1234"]
    first = {repo: _build(ecr, repo, f"{repo} v4.4.0") for repo in ("app", "app-bot")}
    tags = [t + SUFFIX for t in v440]
    done = _run_tag_step(docker, _outputs(first["app"], first["app-bot"], tags), tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert {_named(ecr, "app", t) for t in tags} == {first["app"]}
    assert {_named(ecr, "app-bot", t) for t in tags} == {first["app-bot"]}
    again = _run_tag_step(docker, _outputs(first["app"], first["app-bot"], tags), tmp_path)
    assert again.returncode == 0, again.stderr + again.stdout  # a re-run of the same images

    # The same release rebuilt (a re-run, or someone pushing the tag again): another digest.
    rebuilt = _build(ecr, "app", "app v4.4.0 rebuilt")
    refused = _run_tag_step(docker, _outputs(rebuilt, first["app-bot"], tags), tmp_path)
    assert refused.returncode == 1
    assert (
        f"::error::app:v4.4.0{SUFFIX} names {first['app']} already; this release built {rebuilt}"
        in refused.stdout
    ), refused.stdout
    assert f"app:sha-abc1234{SUFFIX} names {first['app']}" in refused.stdout
    assert f"app:v4.4{SUFFIX} " not in refused.stdout  # moving tags may move
    assert {_named(ecr, "app", t) for t in tags} == {first["app"]}  # nothing was tagged

    # The next patch release moves the moving tags, as they are meant to.
    nxt = [t + SUFFIX for t in ("v4.4.1", "v4.4", "v4", "sha-def5678")]
    built = {repo: _build(ecr, repo, f"{repo} v4.4.1") for repo in ("app", "app-bot")}
    moved = _run_tag_step(docker, _outputs(built["app"], built["app-bot"], nxt), tmp_path)
    assert moved.returncode == 0, moved.stderr + moved.stdout
    assert {_named(ecr, "app", t) for t in nxt} == {built["app"]}
    assert _named(ecr, "app", tags[0]) == first["app"]  # v4.4.0 keeps its image
