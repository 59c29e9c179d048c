"""What the engine's reads cost at the wire: every AWS call counted by moto's request log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import boto3
import pytest

from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.errors import ImageMissing
from bot.local.aws import MotoServer
from tests.conftest import LocalStack

ALICE = Requester("alice", "cli", "Alice")


@pytest.fixture
def engine(stack: LocalStack) -> Iterator[Engine]:
    eng = Engine(stack.settings)
    yield eng
    eng.close()


def calls(aws: MotoServer) -> Counter[tuple[str, str]]:
    return Counter((r.service, r.operation) for r in aws.requests)


def test_a_tag_ecr_does_not_have_is_refused_from_one_describe_images(
    stack: LocalStack, aws: MotoServer, engine: Engine
) -> None:
    aws.requests.clear()
    with pytest.raises(ImageMissing) as refused:
        engine.plan_deploy("v9.9.9", ALICE)
    assert "No image tagged v9.9.9-ecr-ecs-fargate" in refused.value.message
    assert refused.value.recent[0] == "v4.5.0-ecr-ecs-fargate"  # named from the same listing
    assert calls(aws) == Counter({("ecr", "DescribeImages"): 1})


def test_a_plan_lists_the_repository_once(
    stack: LocalStack, aws: MotoServer, engine: Engine
) -> None:
    """The tag, the running image (not pinned here: its tag is looked up) and the change
    summary all come from one listing."""
    aws.requests.clear()
    plan = engine.plan_deploy("v4.4.0", ALICE)
    assert plan.digest == stack.info.release("v4.4.0").digest
    assert plan.current.digest == stack.info.release("v4.3.0").digest
    assert plan.change is not None
    assert calls(aws)[("ecr", "DescribeImages")] == 1
    assert calls(aws)[("ecs", "DescribeServices")] == 1


def test_the_list_of_images_reads_the_repository_beside_what_runs(
    stack: LocalStack, aws: MotoServer, engine: Engine
) -> None:
    """/deploy's list: the recent images and what each would change, from one listing, one
    history query and one DescribeServices (and the running revision, the first time)."""
    aws.requests.clear()
    images, changes = engine.recent_changes(5)
    assert images[0].tags[0] == "v4.5.0-ecr-ecs-fargate"
    assert set(changes) == {i.tags[0] for i in images}
    reads = {("ecr", "DescribeImages"): 1, ("dynamodb", "Query"): 1, ("ecs", "DescribeServices"): 1}
    assert calls(aws) == Counter({**reads, ("ecs", "DescribeTaskDefinition"): 1})
    aws.requests.clear()
    assert engine.recent_changes(5) == (images, changes)
    assert calls(aws) == Counter(reads)


def test_a_revision_is_described_once_and_a_new_one_at_once(
    stack: LocalStack, aws: MotoServer, engine: Engine
) -> None:
    """A task definition revision never changes: the second status does not describe it
    again; a service moved to another revision gets that one described."""
    first = engine.status(5)
    aws.requests.clear()
    again = engine.status(5)
    assert again.tag == first.tag
    assert calls(aws)[("ecs", "DescribeTaskDefinition")] == 0
    assert calls(aws)[("ecs", "DescribeServices")] == 1  # what runs is read every time
    settings = stack.settings
    ecs = boto3.client("ecs", endpoint_url=aws.endpoint_url, region_name=settings.aws_region)
    current = ecs.describe_task_definition(taskDefinition=first.task_definition)
    definition = current["taskDefinition"]
    container = dict(definition["containerDefinitions"][0])
    container["image"] = f"{stack.info.repository_uri}:v4.4.0-ecr-ecs-fargate"
    keep = ("family", "networkMode", "requiresCompatibilities", "cpu", "memory")
    revision = ecs.register_task_definition(
        **{k: definition[k] for k in keep if k in definition},
        executionRoleArn=definition["executionRoleArn"],
        containerDefinitions=[container],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(
        cluster=settings.ecs_cluster, service=settings.ecs_service, taskDefinition=revision
    )
    aws.requests.clear()
    moved = engine.status(5)
    assert moved.task_definition == revision
    assert moved.tag == "v4.4.0-ecr-ecs-fargate"
    assert calls(aws)[("ecs", "DescribeTaskDefinition")] == 1


def test_a_status_reads_the_history_beside_the_service_unless_a_record_is_open(
    stack: LocalStack, aws: MotoServer, engine: Engine
) -> None:
    """Nothing to judge: the history and the service are read side by side, one
    DescribeServices. An open record is only judged against a description read after the
    history (Engine._prepare): the service is described once more."""
    aws.requests.clear()
    engine.status(5)
    assert calls(aws)[("ecs", "DescribeServices")] == 1
    record = engine.start(engine.plan_deploy("v4.4.0", ALICE), follow=False)
    aws.requests.clear()
    st = engine.status(5)
    assert calls(aws)[("ecs", "DescribeServices")] == 2
    assert st.recent[0].id == record.id and st.rollout is not None
