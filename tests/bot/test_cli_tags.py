"""Release tags keep their image (#24): ``deploybot deploy`` against moto and the simulator.

CI may push into the service's repository, whose tags are mutable (the moving ``v4.4-…`` and
``v4-…`` need that). Whoever re-points ``v4.4.0-…`` at another image (an ECR PutImage, as a
push does) must not have it shipped by the next ``deploy v4.4.0``."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from bot.cli import main
from bot.deploy.engine import Engine
from bot.deploy.records import short_digest
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.slack.helpers import running_release

V440 = "v4.4.0-ecr-ecs-fargate"


def repush(stack: LocalStack, tags: list[str]) -> str:
    """Point ``tags`` at a new image (another manifest), as a push by anyone with ECR write
    access would; returns its digest."""
    s = stack.settings
    layer = "sha256:" + hashlib.sha256(b"not what v4.4.0 was").hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": layer,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 1,
                    "digest": layer,
                }
            ],
        }
    )
    ecr = boto3.client("ecr", endpoint_url=s.aws_endpoint_url, region_name=s.aws_region)
    digest = ""
    for tag in tags:
        image = ecr.put_image(repositoryName=s.ecr_repository, imageManifest=manifest, imageTag=tag)
        digest = str(image["image"]["imageId"]["imageDigest"])
    return digest


def test_a_release_tag_that_names_another_image_is_refused_unless_allowed(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["deploy", V440]) == 0
    _, first = running_release(stack.settings)
    capsys.readouterr()
    moved = repush(stack, [V440, "v4.4-ecr-ecs-fargate"])
    assert moved != first
    updates = aws.requests.count("ecs", "UpdateService")

    assert main(["deploy", "v4.4.0"]) == 2
    err = capsys.readouterr().err
    deployed_on = Engine(stack.settings).ledger.tag_record(stack.settings.ecr_repository, V440)
    assert deployed_on is not None and deployed_on.digest == first
    assert f"{V440} now names a different image ({short_digest(moved)} since " in err, err
    assert (
        f"than the one deployed on {deployed_on.deployed_at:%Y-%m-%d} ({short_digest(first)}" in err
    ), err
    assert "--allow-moved-tag" in err and "Traceback" not in err
    assert aws.requests.count("ecs", "UpdateService") == updates
    assert running_release(stack.settings)[1] == first

    # The moving tag moved as it is meant to: deployed without a question.
    assert main(["deploy", "v4.4"]) == 0
    assert running_release(stack.settings)[1] == moved

    # Said on purpose: the tag's record moves, keeping what it named before.
    assert main(["deploy", "v4.4.0", "--allow-moved-tag"]) == 0
    now = Engine(stack.settings).ledger.tag_record(stack.settings.ecr_repository, V440)
    assert now is not None and now.digest == moved
    assert len(now.moves) == 1 and now.moves[0].startswith(f"{first} at ")
    assert main(["deploy", "v4.4.0"]) == 0  # what it names now is what was deployed
