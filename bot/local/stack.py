"""The local AWS stack: what cloudformation/service.yml and CI make, created in moto over HTTP.

ECR repository with CI's image pushes, ECS cluster, task definition, Fargate service with the
circuit breaker, their IAM roles, and deploybot's DynamoDB table. moto's CloudFormation drops
many ECS properties, so everything is a direct boto3 call against the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3

from bot.deploy.table import ATTRIBUTE_DEFINITIONS, KEY_SCHEMA, TTL_ATTRIBUTE
from bot.settings import Settings
from bot.tags import release_tags

SERVICE_CONTAINER = "hello-world"
SERVICE_PORT = 49000
TASK_CPU = "256"
TASK_MEMORY = "512"
DEFAULT_RELEASES = ("v4.3.0", "v4.4.0", "v4.5.0")

# deploybot's lock and history table, as create_table kwargs; cloudformation/bot.yml agrees.
DEPLOY_TABLE_SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": ATTRIBUTE_DEFINITIONS,
    "KeySchema": KEY_SCHEMA,
    "BillingMode": "PAY_PER_REQUEST",
}
DEPLOY_TABLE_TTL_ATTRIBUTE = TTL_ATTRIBUTE

_ECS_TASKS_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
_EXECUTION_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
_DAY = 86_400


@dataclass(frozen=True)
class Release:
    """One release as CI pushed it: four tags on one image."""

    version: str  # v4.4.0
    sha: str  # the fake commit, 40 hex digits
    tags: tuple[str, ...]  # release_tags order: full, minor, major, sha
    digest: str  # sha256:…

    @property
    def tag(self) -> str:
        """The full version tag, ``v4.4.0-ecr-ecs-fargate``."""
        return self.tags[0]


@dataclass(frozen=True)
class StackInfo:
    """What create_stack made, named the way AWS names it."""

    endpoint_url: str
    region: str
    account_id: str
    repository_uri: str
    cluster_arn: str
    service_arn: str
    task_definition_arn: str
    execution_role_arn: str
    task_role_arn: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    table_name: str
    releases: tuple[Release, ...]
    running_tag: str

    def image(self, tag: str) -> str:
        """The image URI of ``tag`` in the stack's repository."""
        return f"{self.repository_uri}:{tag}"

    def release(self, version: str) -> Release:
        """The release pushed for ``version`` (``v4.4.0``)."""
        for release in self.releases:
            if release.version == version:
                return release
        raise KeyError(version)


# boto3.client's credential arguments (aws_access_key_id, aws_secret_access_key,
# aws_session_token); None: the default account's fake ones.
Credentials = Mapping[str, str]
_DEFAULT_CREDENTIALS: Credentials = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}


def _client(
    service: str, endpoint_url: str, region: str, credentials: Credentials | None = None
) -> Any:
    # Explicit fake credentials: whatever the environment holds, these calls reach only moto.
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        **(credentials or _DEFAULT_CREDENTIALS),
    )


def assume_role(
    endpoint_url: str, role_arn: str, region: str, session: str = "stack-builder"
) -> Credentials:
    """Credentials of ``role_arn`` through STS AssumeRole: in moto, credentials of the role's
    account, whose resources are apart from the default account's ("Configure an account
    using STS": https://docs.getmoto.org/en/latest/docs/multi_account.html; the role need
    not exist). Another account's stack is built with them (``credentials=``)."""
    found = _client("sts", endpoint_url, region).assume_role(
        RoleArn=role_arn, RoleSessionName=session
    )["Credentials"]
    return {
        "aws_access_key_id": found["AccessKeyId"],
        "aws_secret_access_key": found["SecretAccessKey"],
        "aws_session_token": found["SessionToken"],
    }


def fake_sha(version: str) -> str:
    """A stable made-up commit sha for a release (40 hex digits)."""
    return hashlib.sha1(f"hello-world {version}".encode()).hexdigest()


def _manifest(version: str) -> str:
    """A Docker image manifest, the same for every push of ``version``, distinct across them."""

    def digest(part: str) -> str:
        return "sha256:" + hashlib.sha256(f"{version} {part}".encode()).hexdigest()

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": digest("config"),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 32654 + i,
                    "digest": digest(f"layer {i}"),
                }
                for i in range(3)
            ],
        },
        sort_keys=True,
    )


def _release_version(version: str, settings: Settings) -> str:
    """``v4.4.0`` from ``v4.4.0`` or ``v4.4.0-ecr-ecs-fargate``."""
    return version.removesuffix(settings.image_tag_suffix)


def push_image(
    endpoint_url: str,
    settings: Settings,
    version: str,
    *,
    sha: str | None = None,
    credentials: Credentials | None = None,
) -> Release:
    """Push ``version`` the way CI does: one image under its four tags, re-pointing the moving
    ``vX.Y`` and ``vX`` tags to it."""
    version = _release_version(version, settings)
    sha = sha or fake_sha(version)
    suffix = settings.image_tag_suffix
    tags = release_tags(f"refs/tags/{version}{suffix}", sha, suffix)
    ecr = _client("ecr", endpoint_url, settings.aws_region, credentials)
    manifest = _manifest(version)
    digest = ""
    for tag in tags:
        try:
            image = ecr.put_image(
                repositoryName=settings.ecr_repository, imageManifest=manifest, imageTag=tag
            )["image"]
        except ecr.exceptions.ImageAlreadyExistsException:
            # CI re-running a release pushes identical tags; ECR refuses them, CI goes on.
            image = ecr.batch_get_image(
                repositoryName=settings.ecr_repository, imageIds=[{"imageTag": tag}]
            )["images"][0]
        digest = image["imageId"]["imageDigest"]
    return Release(version=version, sha=sha, tags=tuple(tags), digest=digest)


def _backdate_pushes(account_id: str, settings: Settings, releases: list[Release]) -> None:
    """Spread the releases' pushedAt a day apart, oldest first, when moto runs in this process.

    ECR's pushedAt is whole seconds in moto, so releases pushed within one second would tie;
    a server in another process keeps its own (tied) times.
    """
    from moto.ecr.models import ecr_backends

    backend = ecr_backends[account_id][settings.aws_region]
    repository = backend.repositories.get(settings.ecr_repository)
    if repository is None:
        return
    by_digest = {release.digest: i for i, release in enumerate(releases)}
    newest = max((image.image_pushed_at for image in repository.images), default=0)
    for image in repository.images:
        position = by_digest.get(image.get_image_digest())
        if position is not None:
            image.image_pushed_at = newest - (len(releases) - 1 - position) * _DAY


def _network(
    endpoint_url: str, settings: Settings, credentials: Credentials | None = None
) -> tuple[list[str], list[str]]:
    ec2 = _client("ec2", endpoint_url, settings.aws_region, credentials)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(zones)
    ]
    group = ec2.create_security_group(
        GroupName=f"{settings.stack_name}-service",
        Description="hello-world tasks",
        VpcId=vpc,
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": SERVICE_PORT,
                "ToPort": SERVICE_PORT,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    return subnets, [group]


def _roles(
    endpoint_url: str, settings: Settings, credentials: Credentials | None = None
) -> tuple[str, str]:
    iam = _client("iam", endpoint_url, settings.aws_region, credentials)
    execution = iam.create_role(
        RoleName=f"{settings.stack_name}-execution",
        AssumeRolePolicyDocument=_ECS_TASKS_TRUST,
    )["Role"]["Arn"]
    # moto may not know AWS-managed policies; the role alone is enough locally.
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        iam.attach_role_policy(
            RoleName=f"{settings.stack_name}-execution", PolicyArn=_EXECUTION_POLICY
        )
    task = iam.create_role(
        RoleName=f"{settings.stack_name}-task", AssumeRolePolicyDocument=_ECS_TASKS_TRUST
    )["Role"]["Arn"]
    return execution, task


def create_deploy_table(endpoint_url: str, settings: Settings) -> str:
    """deploybot's DynamoDB table (DEPLOY_TABLE_SCHEMA, TTL on expires_at); its name."""
    dynamodb = _client("dynamodb", endpoint_url, settings.aws_region)
    dynamodb.create_table(TableName=settings.deploy_table, **DEPLOY_TABLE_SCHEMA)
    dynamodb.update_time_to_live(
        TableName=settings.deploy_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": DEPLOY_TABLE_TTL_ATTRIBUTE},
    )
    return settings.deploy_table


def _create_service(
    endpoint_url: str,
    settings: Settings,
    *,
    cluster: str,
    service: str,
    image: str,
    roles: tuple[str, str],
    network: tuple[Sequence[str], Sequence[str]],
    log_group: str,
    desired_count: int,
    credentials: Credentials | None = None,
) -> tuple[str, str, str]:
    """The cluster (made if missing), a task definition running ``image`` and the Fargate
    service with the circuit breaker: (cluster ARN, task definition ARN, service ARN)."""
    region = settings.aws_region
    execution_role, task_role = roles
    subnets, groups = network
    ecs = _client("ecs", endpoint_url, region, credentials)
    known = ecs.describe_clusters(clusters=[cluster])["clusters"]
    if known and known[0].get("status") == "ACTIVE":
        cluster_arn = known[0]["clusterArn"]
    else:
        cluster_arn = ecs.create_cluster(
            clusterName=cluster,
            settings=[{"name": "containerInsights", "value": "enabled"}],
        )["cluster"]["clusterArn"]
    task_definition_arn = ecs.register_task_definition(
        family=service,
        taskRoleArn=task_role,
        executionRoleArn=execution_role,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu=TASK_CPU,
        memory=TASK_MEMORY,
        runtimePlatform={"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        containerDefinitions=[
            {
                "name": SERVICE_CONTAINER,
                "image": image,
                "essential": True,
                "command": ["hello-world", "--bind", "0.0.0.0", "--port", str(SERVICE_PORT)],
                "portMappings": [
                    {"containerPort": SERVICE_PORT, "hostPort": SERVICE_PORT, "protocol": "tcp"}
                ],
                "environment": [
                    {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "STACK_NAME", "value": settings.stack_name},
                ],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": SERVICE_CONTAINER,
                    },
                },
            }
        ],
        tags=[{"key": "stack", "value": settings.stack_name}],
    )["taskDefinition"]["taskDefinitionArn"]
    service_arn = ecs.create_service(
        cluster=cluster,
        serviceName=service,
        taskDefinition=task_definition_arn,
        desiredCount=desired_count,
        launchType="FARGATE",
        platformVersion="LATEST",
        deploymentController={"type": "ECS"},
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": list(subnets),
                "securityGroups": list(groups),
                "assignPublicIp": "ENABLED",
            }
        },
        propagateTags="SERVICE",
        tags=[{"key": "stack", "value": settings.stack_name}],
    )["service"]["serviceArn"]
    return cluster_arn, task_definition_arn, service_arn


def add_service(
    stack: StackInfo,
    settings: Settings,
    *,
    cluster: str,
    service: str,
    running: str = "v4.3.0",
    desired_count: int = 3,
    credentials: Credentials | None = None,
) -> str:
    """Another environment's service in ``stack`` (another target: staging, billing…),
    running one of the stack's releases from the same repository, in ``cluster`` (made if
    missing: a second service of one cluster, or a cluster of its own). Its ARN.
    ``credentials``: those ``stack`` was made with (another account's)."""
    version = _release_version(running, settings)
    release = next((r for r in stack.releases if r.version == version), None)
    if release is None:
        raise ValueError(f"running={running!r} is not one of the stack's releases")
    _, _, service_arn = _create_service(
        stack.endpoint_url,
        settings,
        cluster=cluster,
        service=service,
        image=stack.image(release.tag),
        roles=(stack.execution_role_arn, stack.task_role_arn),
        network=(stack.subnets, stack.security_groups),
        log_group=f"/ecs/{settings.stack_name}",
        desired_count=desired_count,
        credentials=credentials,
    )
    return service_arn


def create_stack(
    endpoint_url: str,
    settings: Settings,
    *,
    releases: tuple[str, ...] | list[str] = DEFAULT_RELEASES,
    running: str = "v4.3.0",
    desired_count: int = 3,
    credentials: Credentials | None = None,
    pull_from: StackInfo | None = None,
    table: bool = True,
) -> StackInfo:
    """Create the stack in a fresh moto server: the service runs ``running``, settled.

    ``releases`` are pushed oldest first, as CI would have over time; ``running`` is one of
    them (bare ``v4.3.0`` or the full tag). Needs the server started by bot.local.aws (its ECS
    starts services settled, with one COMPLETED deployment and running = desired).

    Another account's stack (#30): ``credentials`` (``assume_role``'s) and ``settings``'
    region say where. With ``pull_from`` (a stack of another account) it has no repository of
    its own: its service runs ``pull_from``'s images (a cross-account pull); without, its
    repository holds the same images, as ECR replication would copy them. ``table=False``:
    no deploybot table (the table stays in the bot's account).
    """
    region = settings.aws_region
    sts = _client("sts", endpoint_url, region, credentials)
    account_id = sts.get_caller_identity()["Account"]

    if pull_from is None:
        ecr = _client("ecr", endpoint_url, region, credentials)
        repository_uri = ecr.create_repository(
            repositoryName=settings.ecr_repository,
            imageScanningConfiguration={"scanOnPush": True},
        )["repository"]["repositoryUri"]
        pushed = [
            push_image(endpoint_url, settings, version, credentials=credentials)
            for version in releases
        ]
        _backdate_pushes(account_id, settings, pushed)
    else:
        repository_uri = pull_from.repository_uri
        pushed = list(pull_from.releases)
    running_version = _release_version(running, settings)
    running_release = next((r for r in pushed if r.version == running_version), None)
    if running_release is None:
        raise ValueError(f"running={running!r} is not one of the releases {list(releases)}")

    execution_role, task_role = _roles(endpoint_url, settings, credentials)
    subnets, groups = _network(endpoint_url, settings, credentials)
    log_group = f"/ecs/{settings.stack_name}"
    _client("logs", endpoint_url, region, credentials).create_log_group(logGroupName=log_group)

    cluster_arn, task_definition_arn, service_arn = _create_service(
        endpoint_url,
        settings,
        cluster=settings.ecs_cluster,
        service=settings.ecs_service,
        image=f"{repository_uri}:{running_release.tag}",
        roles=(execution_role, task_role),
        network=(subnets, groups),
        log_group=log_group,
        desired_count=desired_count,
        credentials=credentials,
    )

    table_name = create_deploy_table(endpoint_url, settings) if table else ""
    return StackInfo(
        endpoint_url=endpoint_url,
        region=region,
        account_id=account_id,
        repository_uri=repository_uri,
        cluster_arn=cluster_arn,
        service_arn=service_arn,
        task_definition_arn=task_definition_arn,
        execution_role_arn=execution_role,
        task_role_arn=task_role,
        subnets=tuple(subnets),
        security_groups=tuple(groups),
        table_name=table_name,
        releases=tuple(pushed),
        running_tag=running_release.tag,
    )


def add_deployment_alarm(
    stack: StackInfo,
    settings: Settings,
    *,
    cluster: str | None = None,
    service: str | None = None,
    alarm_name: str | None = None,
    rollback: bool = True,
) -> str:
    """A CloudWatch alarm on the service's 5xx answers (OK) and the service's deployment alarms
    naming it, with ``rollback``, as service.yml's ``DeploymentConfiguration.Alarms``: ECS then
    bakes each rollout and rolls back when the alarm goes to ALARM (the simulator's
    ``bake_ticks``; ``mark_alarming`` fires it). Returns the alarm's name."""
    cluster = cluster or settings.ecs_cluster
    service = service or settings.ecs_service
    name = alarm_name or f"{service}-5xx"
    _client("cloudwatch", stack.endpoint_url, stack.region).put_metric_alarm(
        AlarmName=name,
        AlarmDescription=f"5xx answers of {service}",
        Namespace=f"{service}/access",
        MetricName="5xx",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
    )
    ecs = _client("ecs", stack.endpoint_url, stack.region)
    current = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    ecs.update_service(
        cluster=cluster,
        service=service,
        deploymentConfiguration={
            **current["deploymentConfiguration"],
            "alarms": {"alarmNames": [name], "enable": True, "rollback": rollback},
        },
    )
    return name


def set_deployment_strategy(
    stack: StackInfo,
    settings: Settings,
    strategy: str,
    *,
    cluster: str | None = None,
    service: str | None = None,
    bake_minutes: int = 1,
    canary_percent: float = 10.0,
    canary_bake_minutes: int = 2,
    linear_step_percent: float = 25.0,
    linear_step_bake_minutes: int = 1,
    pause_at: Sequence[str] = (),
    pause_timeout_minutes: int = 10,
    pause_timeout_action: str = "ROLLBACK",
) -> dict[str, Any]:
    """Give the service a deployment strategy (ROLLING, BLUE_GREEN, CANARY or LINEAR) as
    service.yml's ``Strategy`` parameter does, with PAUSE hooks at the ``pause_at`` stages (e.g.
    PRE_PRODUCTION_TRAFFIC_SHIFT, which ECS runs before each traffic shift step of a canary: at
    0% and again after the canary's bake). Minutes are ECS minutes: the simulator's
    ``minute_ticks`` steps each. Returns the deploymentConfiguration sent."""
    cluster = cluster or settings.ecs_cluster
    service = service or settings.ecs_service
    ecs = _client("ecs", stack.endpoint_url, stack.region)
    current = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    config: dict[str, Any] = {
        k: v
        for k, v in current["deploymentConfiguration"].items()
        if k not in ("canaryConfiguration", "linearConfiguration", "lifecycleHooks")
    }
    config["strategy"] = strategy
    if strategy != "ROLLING":
        config["bakeTimeInMinutes"] = bake_minutes
    if strategy == "CANARY":
        config["canaryConfiguration"] = {
            "canaryPercent": canary_percent,
            "canaryBakeTimeInMinutes": canary_bake_minutes,
        }
    if strategy == "LINEAR":
        config["linearConfiguration"] = {
            "stepPercent": linear_step_percent,
            "stepBakeTimeInMinutes": linear_step_bake_minutes,
        }
    if pause_at:
        config["lifecycleHooks"] = [
            {
                "targetType": "PAUSE",
                "lifecycleStages": list(pause_at),
                "timeoutConfiguration": {
                    "timeoutInMinutes": pause_timeout_minutes,
                    "action": pause_timeout_action,
                },
            }
        ]
    ecs.update_service(cluster=cluster, service=service, deploymentConfiguration=config)
    return config
