"""Points 1 and 2 of issue 13: rollbacks are explicit and idempotent, images are pinned by digest.

The engine against moto's server, the rollout simulator moving ECS; ``deploybot`` as a real
process where what an operator reads matters.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord, Requester, short_digest
from bot.deploy.rollout import Outcome
from bot.errors import ImageMissing, NoLongerRunning, NothingToRollBack
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack
from tests.slack.helpers import AWS_WRITES, running_release

ALICE = Requester("alice", "cli", "Alice")
BOB = Requester("bob", "cli", "Bob")
V43, V44, V45 = (f"v4.{n}.0-ecr-ecs-fargate" for n in (3, 4, 5))


@pytest.fixture
def engine(stack: LocalStack) -> Any:
    eng = Engine(stack.settings)
    yield eng
    eng.close()


def done(engine: Engine, record: DeploymentRecord) -> Outcome:
    final = list(engine.watch(record))[-1]
    assert final.outcome is not None
    return final.outcome


def writes(aws: MotoServer) -> int:
    return sum(aws.requests.count(service, op) for service, op in AWS_WRITES)


def ecr(stack: LocalStack) -> Any:
    return boto3.client("ecr", endpoint_url=stack.info.endpoint_url, region_name="eu-west-1")


def test_rollback_button_restores_what_ran_before_that_deployment_and_only_once(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engine: Engine
) -> None:
    """v4.4.0 → v4.5.0 → Rollback on v4.5.0's message → v4.4.0; the same button again is
    refused (it used to roll *forward* to v4.5.0), naming what runs and who put it there."""
    d1 = engine.deploy("v4.4.0", ALICE)
    assert done(engine, d1) == Outcome.COMPLETED
    d2 = engine.deploy("v4.5.0", BOB)
    assert done(engine, d2) == Outcome.COMPLETED
    back = engine.rollback(ALICE, of=d2.id)
    assert (back.kind, back.tag, back.rollback_of) == ("rollback", V44, d2.id)
    assert back.digest == stack.info.release("v4.4.0").digest
    assert done(engine, back) == Outcome.COMPLETED
    assert running_release(stack.settings) == (V44, stack.info.release("v4.4.0").digest)

    before = writes(aws)
    with pytest.raises(NoLongerRunning) as err:
        engine.rollback(BOB, of=d2.id)  # the same button, clicked again
    assert f"{d2.id} of {V45} is no longer what runs" in err.value.message
    assert _names(V44, back.digest, err.value.message)
    assert f"put there by Alice (rollback {back.id})" in err.value.message
    assert err.value.exit_code == 2
    assert writes(aws) == before  # nothing changed
    assert running_release(stack.settings)[0] == V44


def test_rollback_of_a_deployment_someone_deployed_over_is_refused(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engine: Engine
) -> None:
    d1 = engine.deploy("v4.4.0", ALICE)
    done(engine, d1)
    d2 = engine.deploy("v4.5.0", BOB)
    done(engine, d2)
    before = writes(aws)
    with pytest.raises(NoLongerRunning) as err:
        engine.rollback(ALICE, of=d1.id)  # v4.4.0's old message
    assert f"{V45} (" in err.value.message and f"Bob (deploy {d2.id})" in err.value.message
    assert writes(aws) == before


def test_deploy_rollback_never_toggles(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engine: Engine
) -> None:
    """`/deploy rollback` twice: back to v4.4.0, then nothing suitable (it used to go back to
    v4.5.0, the release just rolled back from)."""
    with pytest.raises(NothingToRollBack):
        engine.rollback(ALICE)
    done(engine, engine.deploy("v4.4.0", ALICE))
    done(engine, engine.deploy("v4.5.0", BOB))
    back = engine.rollback(ALICE)
    assert back.tag == V44
    assert done(engine, back) == Outcome.COMPLETED
    before = writes(aws)
    with pytest.raises(NothingToRollBack) as err:
        engine.rollback(BOB)
    assert "not already rolled back from" in err.value.message
    assert writes(aws) == before
    assert running_release(stack.settings)[0] == V44
    # A release deployed again after being rolled back from is a release like any other.
    done(engine, engine.deploy("v4.5.0", BOB))
    again = engine.rollback(ALICE)
    assert again.tag == V44
    done(engine, again)


def move_tag(stack: LocalStack, tag: str, seed: str) -> str:
    """CI pushes a new image under an existing tag (a moving tag, or a re-run release)."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": "sha256:" + seed * 64,
            },
            "layers": [],
        }
    )
    image = ecr(stack).put_image(
        repositoryName=stack.settings.ecr_repository, imageManifest=manifest, imageTag=tag
    )["image"]
    return str(image["imageId"]["imageDigest"])


def test_rollback_deploys_the_recorded_digest_even_after_the_tag_moved(
    stack: LocalStack, simulator: RolloutSimulator, engine: Engine
) -> None:
    d1 = engine.deploy("v4.4.0", ALICE)
    done(engine, d1)
    old = stack.info.release("v4.4.0").digest
    assert d1.digest == old
    moved = move_tag(stack, V44, "e")
    assert moved != old
    d2 = engine.deploy("v4.5.0", BOB)
    done(engine, d2)
    assert d2.previous_digest == old
    back = engine.rollback(ALICE, of=d2.id)
    assert back.digest == old and back.image.endswith(f"@{old}")
    done(engine, back)
    assert running_release(stack.settings) == (V44, old)  # not the image v4.4.0 names now


def test_an_image_gone_from_ecr_is_refused_before_any_change(
    stack: LocalStack, aws: MotoServer, simulator: RolloutSimulator, engine: Engine
) -> None:
    d1 = engine.deploy("v4.4.0", ALICE)
    done(engine, d1)
    d2 = engine.deploy("v4.5.0", BOB)
    done(engine, d2)
    gone = stack.info.release("v4.4.0")
    ecr(stack).batch_delete_image(
        repositoryName=stack.settings.ecr_repository, imageIds=[{"imageDigest": gone.digest}]
    )
    before = writes(aws)
    with pytest.raises(ImageMissing) as err:
        engine.rollback(ALICE, of=d2.id)
    assert "no longer in ECR" in err.value.message and V44 in err.value.message
    with pytest.raises(ImageMissing):
        engine.rollback(ALICE)  # `/deploy rollback` would go to v4.4.0 too
    with pytest.raises(ImageMissing):
        engine.deploy("v4.4.0", ALICE)
    assert writes(aws) == before
    assert engine.ledger.lock_item() is None
    # Redeploying an image ECR no longer has would start tasks that cannot pull it.
    ecr(stack).batch_delete_image(
        repositoryName=stack.settings.ecr_repository,
        imageIds=[{"imageDigest": stack.info.release("v4.5.0").digest}],
    )
    with pytest.raises(ImageMissing) as err:
        engine.redeploy(ALICE)
    assert "no longer in ECR" in err.value.message
    assert writes(aws) == before


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEPLOYBOT_USER": "operator@laptop", "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_status_and_history_show_tag_and_short_digest(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    digest = stack.info.release("v4.4.0").digest
    deployed = cli("deploy", "v4.4.0")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert short_digest(digest) in deployed.stdout
    status = cli("status")
    assert _names(V44, digest, status.stdout)
    assert "deployed by: operator@laptop" in status.stdout
    as_json = json.loads(cli("status", "--json").stdout)
    assert (as_json["tag"], as_json["digest"]) == (V44, digest)
    assert as_json["recent"][0]["digest"] == digest
    assert as_json["recent"][0]["previous_digest"] == stack.info.release("v4.3.0").digest
    history = cli("history")
    assert short_digest(digest) in history.stdout


def _names(tag: str, digest: str, text: str) -> bool:
    """``text`` names ``tag`` with its short digest: "TAG (sha256:…" or, with the image's
    commit known (issue 17), "TAG (abc1234, sha256:…"."""
    pattern = rf"{re.escape(tag)} \((\w+, )?{re.escape(short_digest(digest))}"
    return re.search(pattern, text) is not None
