"""Where to look: AWS console URLs of a task's log stream, a task, a service's deployments.

Pure functions of ARNs, the region and the task definition; nothing here calls AWS. The
console's URL shapes are not an API: each builder names where its shape comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Arn:
    """``arn:partition:service:region:account:resource``."""

    partition: str
    service: str
    region: str
    account: str
    resource: str  # "task/cluster/id", "service/cluster/name", …

    @property
    def path(self) -> list[str]:
        return self.resource.split("/")


@dataclass(frozen=True)
class LogLink:
    """A container's CloudWatch Logs stream (or its group, when the stream cannot be named)."""

    container: str
    group: str
    stream: str | None  # None: no awslogs-stream-prefix, so ECS names no predictable stream
    region: str
    url: str


def parse_arn(arn: str) -> Arn | None:
    """The parts of an ARN; None if it is not one."""
    parts = arn.strip().split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not all(parts[i] for i in (1, 2, 5)):
        return None
    return Arn(parts[1], parts[2], parts[3], parts[4], parts[5])


def console_base(region: str, partition: str | None = None) -> str:
    """``https://{region}.console.aws.amazon.com``, in the region's partition.

    AWS's own ECS deploy action picks the China console for cn- regions
    (aws-actions/amazon-ecs-deploy-task-definition, index.js: "console.amazonaws.cn" for
    regions starting with "cn", else "console.aws.amazon.com").
    """
    partition = partition or _partition_of(region)
    if partition == "aws-cn":
        host = "console.amazonaws.cn"
    elif partition == "aws-us-gov":
        host = "console.amazonaws-us-gov.com"
    else:
        host = "console.aws.amazon.com"
    return f"https://{region}.{host}"


def _partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


# -- CloudWatch Logs ------------------------------------------------------------------------


def cloudwatch_escape(name: str) -> str:
    """A log group or stream name as the CloudWatch console's ``#logsV2:`` fragment wants it:
    percent-encoded twice, then every ``%`` written ``$`` ("/" → "$252F", "[" → "$255B",
    "$" → "$2524"). Nothing is left unencoded but letters, digits and "-", "_", ".", "~".

    The console documents no URL scheme; this is the encoding its own links use (Lambda's
    "View CloudWatch logs" link to ``/aws/lambda/f`` and ``2024/01/01/[$LATEST]…``), as
    worked out in the Stack Overflow question "Is there a way to generate the AWS Console
    URLs for CloudWatch Log Group filters?" (copy read at newbedev.com/is-there-a-way-to-
    generate-the-aws-console-urls-for-cloudwatch-log-group-filters): "It is the standard URI
    percent encoding but applied twice", with "$" in place of "%".
    """
    return quote(quote(name, safe=""), safe="").replace("%", "$")


def cloudwatch_log_group_url(region: str, group: str) -> str:
    """The console page of a log group (its streams)."""
    return (
        f"{console_base(region)}/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{cloudwatch_escape(group)}"
    )


def cloudwatch_log_stream_url(region: str, group: str, stream: str) -> str:
    """The console page of one log stream's events."""
    return f"{cloudwatch_log_group_url(region, group)}/log-events/{cloudwatch_escape(stream)}"


def cloudwatch_alarm_url(region: str, name: str) -> str:
    """The console page of a CloudWatch alarm: ``…/cloudwatch/home?region=R#alarmsV2:alarm/NAME``,
    the name percent-encoded once (the shape of the console's own alarm links; "/", "#" and
    spaces in a name would otherwise end the fragment's path)."""
    return (
        f"{console_base(region)}/cloudwatch/home?region={region}"
        f"#alarmsV2:alarm/{quote(name, safe='')}"
    )


def awslogs_stream_name(prefix: str, container: str, task_id: str) -> str:
    """``prefix/container-name/task-id``: "If you specify a prefix with this option, then the
    log stream takes the following format: prefix-name/container-name/ecs-task-id"
    (Amazon ECS Developer Guide, "Send Amazon ECS logs to CloudWatch", awslogs-stream-prefix;
    the prefix is required on Fargate)."""
    return f"{prefix}/{container}/{task_id}"


def task_log_link(
    task_definition: Mapping[str, Any],
    task_arn: str,
    container: str | None = None,
    region: str | None = None,
) -> LogLink | None:
    """The log stream of ``container`` (None: the first container that logs to CloudWatch)
    in the task ``task_arn``, from the task definition's ``logConfiguration``.

    ``task_definition`` is DescribeTaskDefinition's ``taskDefinition``. The region is the
    container's ``awslogs-region``, else ``region``, else the task ARN's. None when the
    container does not use the awslogs driver or names no log group.
    """
    for link in task_log_links(task_definition, task_arn, region):
        if container is None or link.container == container:
            return link
    return None


def task_log_links(
    task_definition: Mapping[str, Any], task_arn: str, region: str | None = None
) -> tuple[LogLink, ...]:
    """The log link of every container of the task that logs to CloudWatch Logs."""
    arn = parse_arn(task_arn)
    task = task_id(task_arn)
    links: list[LogLink] = []
    for definition in task_definition.get("containerDefinitions") or []:
        config = definition.get("logConfiguration") or {}
        options = config.get("options") or {}
        group = options.get("awslogs-group")
        if config.get("logDriver") != "awslogs" or not group:
            continue
        name = str(definition.get("name", ""))
        where = options.get("awslogs-region") or region or (arn.region if arn else "")
        if not where:
            continue
        prefix = options.get("awslogs-stream-prefix")
        if prefix and task:
            stream = awslogs_stream_name(str(prefix), name, task)
            url = cloudwatch_log_stream_url(str(where), str(group), stream)
        else:
            stream, url = None, cloudwatch_log_group_url(str(where), str(group))
        links.append(LogLink(name, str(group), stream, str(where), url))
    return tuple(links)


# -- ECS --------------------------------------------------------------------------------------


def task_id(task_arn: str) -> str:
    """The task's id, the last part of its ARN (``…:task/cluster/0123abcd…`` or the older
    ``…:task/0123abcd…``); a bare id is returned as it is."""
    return task_arn.strip().rsplit("/", 1)[-1] if task_arn.strip() else ""


def ecs_service_deployments_url(
    service_arn: str, cluster: str | None = None, region: str | None = None
) -> str | None:
    """The service's Deployments tab in the ECS console (v2).

    Shape from AWS's own deploy action: "Watch this deployment's progress in the Amazon ECS
    console: https://${region}.${consoleHostname}/ecs/v2/clusters/${clusterName}/services/
    ${service}/deployments?region=${region}" (aws-actions/amazon-ecs-deploy-task-definition,
    index.js); the tab is the one "Viewing Amazon ECS service deployments" (Amazon ECS
    Developer Guide) opens: cluster, service, Deployments.

    A service ARN of the older format (``service/name``) names no cluster: pass ``cluster``.
    None when the ARN cannot be read.
    """
    arn = parse_arn(service_arn)
    if arn is None or arn.service != "ecs" or arn.path[0] != "service":
        return None
    path = arn.path
    cluster = path[1] if len(path) == 3 else cluster
    where = region or arn.region
    if not cluster or not where:
        return None
    return service_deployments_url(where, cluster, path[-1], arn.partition)


def service_deployments_url(
    region: str, cluster: str, service: str, partition: str | None = None
) -> str:
    """The same Deployments tab, from the names a deploybot target is configured with (no
    ARN needed: the console's path holds only the cluster's and the service's names)."""
    return (
        f"{console_base(region, partition)}/ecs/v2/clusters/{quote(cluster, safe='')}"
        f"/services/{quote(service, safe='')}/deployments?region={region}"
    )


def ecs_task_url(
    task_arn: str, cluster: str | None = None, region: str | None = None
) -> str | None:
    """A task's page in the ECS console (v2): ``/ecs/v2/clusters/{cluster}/tasks/{id}/
    configuration?region=…``, the console's own path for a task (the same cluster-scoped
    tree as the service URL above). None when the ARN cannot be read."""
    arn = parse_arn(task_arn)
    if arn is None or arn.service != "ecs" or arn.path[0] != "task":
        return None
    path = arn.path
    cluster = path[1] if len(path) == 3 else cluster
    where = region or arn.region
    if not cluster or not where:
        return None
    return (
        f"{console_base(where, arn.partition)}/ecs/v2/clusters/{quote(cluster, safe='')}"
        f"/tasks/{quote(path[-1], safe='')}/configuration?region={where}"
    )
