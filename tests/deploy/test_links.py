"""Console URLs against the shapes AWS's own links take, from a task definition moto returns."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.deploy.links import (
    awslogs_stream_name,
    cloudwatch_escape,
    cloudwatch_log_group_url,
    cloudwatch_log_stream_url,
    console_base,
    ecs_service_deployments_url,
    ecs_task_url,
    parse_arn,
    task_id,
    task_log_link,
    task_log_links,
)
from tests.conftest import LocalStack

TASK = "0123456789abcdef0123456789abcdef"
ACCOUNT = "123456789012"


# -- the CloudWatch console's encoding -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        # A log group as the Lambda console links it.
        (
            "/aws/lambda/fp_rewards_api_rewards_redeem_post",
            "$252Faws$252Flambda$252Ffp_rewards_api_rewards_redeem_post",
        ),
        # A Lambda log stream: "/", "[", "$", "]" as the console writes them.
        ("2020/03/22/[$LATEST]0123abcd", "2020$252F03$252F22$252F$255B$2524LATEST$255D0123abcd"),
        # The table worked out from a console URL (Stack Overflow, see bot/deploy/links.py).
        (",", "$252C"),
        ("=", "$253D"),
        ("!", "$2521"),
        ('"', "$2522"),
        ("|", "$257C"),
        # What stays as it is.
        ("ecs-task_1.log~", "ecs-task_1.log~"),
    ],
)
def test_cloudwatch_escape_matches_the_consoles_links(name: str, escaped: str) -> None:
    assert cloudwatch_escape(name) == escaped


@given(st.text(min_size=1, max_size=60))
def test_cloudwatch_escape_decodes_back_and_leaves_no_separator(name: str) -> None:
    escaped = cloudwatch_escape(name)
    assert unquote(unquote(escaped.replace("$", "%"))) == name
    assert not set(escaped) & set("/?#%&= :[]")


def test_log_stream_url_shape() -> None:
    url = cloudwatch_log_stream_url("eu-west-1", "/ecs/app", "web/web/" + TASK)
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#logsV2:log-groups/log-group/$252Fecs$252Fapp/log-events/web$252Fweb$252F" + TASK
    )
    split = urlsplit(url)
    assert (split.query, split.fragment.split("/")[0]) == ("region=eu-west-1", "logsV2:log-groups")
    assert cloudwatch_log_group_url("eu-west-1", "/ecs/app") == url.split("/log-events/")[0]


def test_stream_name_is_prefix_container_task() -> None:
    assert awslogs_stream_name("hello-world", "web", TASK) == f"hello-world/web/{TASK}"


# -- from the task definition moto returns --------------------------------------------------


def test_the_log_stream_of_a_task_of_the_stack(stack: LocalStack) -> None:
    info = stack.info
    ecs = boto3.client("ecs", endpoint_url=info.endpoint_url, region_name=info.region)
    task_definition = ecs.describe_task_definition(taskDefinition=info.task_definition_arn)[
        "taskDefinition"
    ]
    cluster = stack.settings.ecs_cluster
    task_arn = f"arn:aws:ecs:{info.region}:{info.account_id}:task/{cluster}/{TASK}"
    link = task_log_link(task_definition, task_arn)
    assert link is not None
    assert (link.container, link.group, link.region) == (
        "hello-world",
        f"/ecs/{stack.settings.stack_name}",
        info.region,
    )
    assert link.stream == f"hello-world/hello-world/{TASK}"
    assert link.url == (
        f"https://{info.region}.console.aws.amazon.com/cloudwatch/home?region={info.region}"
        f"#logsV2:log-groups/log-group/$252Fecs$252F{stack.settings.stack_name}"
        f"/log-events/hello-world$252Fhello-world$252F{TASK}"
    )
    assert task_log_link(task_definition, task_arn, container="other") is None
    assert ecs_service_deployments_url(info.service_arn) == (
        f"https://{info.region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}"
        f"/services/{stack.settings.ecs_service}/deployments?region={info.region}"
    )
    assert ecs_task_url(task_arn) == (
        f"https://{info.region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}"
        f"/tasks/{TASK}/configuration?region={info.region}"
    )


def _definition(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"containerDefinitions": list(containers)}


def _awslogs(name: str, **options: str) -> dict[str, Any]:
    return {"name": name, "logConfiguration": {"logDriver": "awslogs", "options": options}}


def test_log_links_of_every_container_that_logs_to_cloudwatch() -> None:
    task_arn = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/prod/{TASK}"
    definition = _definition(
        {"name": "sidecar", "logConfiguration": {"logDriver": "awsfirelens", "options": {}}},
        _awslogs("app", **{"awslogs-group": "/ecs/app", "awslogs-stream-prefix": "ecs"}),
        # Logs in another region than the task's: the container's awslogs-region wins.
        _awslogs(
            "audit",
            **{
                "awslogs-group": "audit",
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "a",
            },
        ),
        # No prefix: ECS names no predictable stream (only Fargate requires one): the group.
        _awslogs("legacy", **{"awslogs-group": "/legacy"}),
        {"name": "silent"},
    )
    links = {link.container: link for link in task_log_links(definition, task_arn)}
    assert set(links) == {"app", "audit", "legacy"}
    assert links["app"].stream == f"ecs/app/{TASK}"
    assert links["audit"].url.startswith(
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#"
    )
    assert links["legacy"].stream is None
    assert links["legacy"].url == cloudwatch_log_group_url("eu-west-1", "/legacy")
    assert task_log_link(definition, task_arn).container == "app"  # type: ignore[union-attr]
    assert task_log_link(definition, task_arn, container="sidecar") is None
    assert task_log_link({}, task_arn) is None


# -- ECS console -----------------------------------------------------------------------------


def test_ecs_urls_from_older_arns_need_the_cluster() -> None:
    old_service = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/web"
    assert ecs_service_deployments_url(old_service) is None
    assert ecs_service_deployments_url(old_service, cluster="prod") == (
        "https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/prod/services/web/deployments"
        "?region=eu-west-1"
    )
    old_task = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/{TASK}"
    assert task_id(old_task) == TASK
    assert ecs_task_url(old_task) is None
    assert ecs_task_url(old_task, cluster="prod") == (
        f"https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/prod/tasks/{TASK}"
        "/configuration?region=eu-west-1"
    )


@pytest.mark.parametrize(
    ("region", "partition", "base"),
    [
        ("eu-west-1", "aws", "https://eu-west-1.console.aws.amazon.com"),
        ("cn-north-1", "aws-cn", "https://cn-north-1.console.amazonaws.cn"),
        ("us-gov-west-1", "aws-us-gov", "https://us-gov-west-1.console.amazonaws-us-gov.com"),
    ],
)
def test_partitions_have_their_own_console(region: str, partition: str, base: str) -> None:
    assert console_base(region) == base
    service = f"arn:{partition}:ecs:{region}:{ACCOUNT}:service/prod/web"
    assert (ecs_service_deployments_url(service) or "").startswith(f"{base}/ecs/v2/clusters/prod/")
    assert cloudwatch_log_group_url(region, "g").startswith(f"{base}/cloudwatch/home?region=")


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "not an arn",
        "arn:aws:ecs:eu-west-1:123456789012",
        f"arn:aws:iam::{ACCOUNT}:role/x",
        f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/prod",
    ],
)
def test_unreadable_arns_give_no_url(arn: str) -> None:
    assert ecs_service_deployments_url(arn) is None
    assert ecs_task_url(arn) is None


def test_names_are_encoded_in_paths() -> None:
    arn = parse_arn(f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/my cluster/web")
    assert arn is not None and arn.path == ["service", "my cluster", "web"]
    url = ecs_service_deployments_url(f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/my cluster/web")
    assert url is not None and "/clusters/my%20cluster/" in url
