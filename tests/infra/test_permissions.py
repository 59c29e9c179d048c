"""Least privilege, proven: the bot task role in bot.yml grants exactly what the engine calls.

The engine's AWS calls are recorded through botocore's ``before-call`` event hook (every
AwsClient registers it) while a scenario here walks every engine path, against a table created
from the template's own key schema; every other test's calls are held against the role when
that test ends (tests/aws_calls.py, tests/conftest.py).

With two targets (production and staging, two stacks, one repository, one table), each call
is also held against the role at resource level: botocore's ``before-parameter-build`` event
gives each call's parameters (cluster, service, repository, table, roles passed), which say
the ARN IAM would authorise, and the role's statements (bot.yml expanded for those stacks,
its imports resolved to the stacks' real roles) must allow it. The role for staging alone
must refuse production's service.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.session import get_session
from botocore.validate import validate_parameters

from bot.deploy.aws import AwsClient, read_parameter
from bot.deploy.engine import Engine
from bot.deploy.pausing import CONTINUE, Pause
from bot.deploy.plan_diff import as_registered
from bot.deploy.records import Requester, Via
from bot.deploy.table import ATTRIBUTE_DEFINITIONS, KEY_SCHEMA, TTL_ATTRIBUTE
from bot.errors import ImageMissing, NothingToRollBack
from bot.local.simulator import RolloutSimulator
from bot.local.stack import (
    SERVICE_CONTAINER,
    TASK_CPU,
    TASK_MEMORY,
    StackInfo,
    set_deployment_strategy,
)
from bot.rules import Door
from bot.settings import Settings
from bot.target import Target
from bot.targets import load_targets
from tests.aws_calls import (
    IAM_PREFIXES,
    NEEDS_NO_PERMISSION,
    TRANSACTION_ITEMS,
    granted,
    needed,
    recorded,
)
from tests.conftest import LocalStack
from tests.helpers import wait_until
from tests.infra.iam import identity_allows
from tests.infra.templates import (
    PRODUCTION_STACK,
    STAGING_STACK,
    bot_task_role_actions,
    bot_task_role_statements,
    deployments_table_schema,
    deployments_table_ttl_attribute,
    render,
)

WHO = Requester("permission-test", "cli")
# Granted in bot.yml for calls the walk below does not make (#27: the test listener's lookup,
# which the tests replace by test_url). Each one leaves this set once the walk makes it, and
# the exact test holds it then like every other action.
GRANTED_AHEAD = {
    # verify_path's lookup of the test listener; the tests give it as test_url instead.
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancers",
}
# AWS allows no narrower resource for these: every role allows them.
STAR_ONLY = {"elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeLoadBalancers"}
# Granted per service stack for #26/#27, on that stack's resources: a role for one stack
# refuses them on another's.
PER_STACK_NEW = {
    "ecs:ListServiceDeployments",
    "ecs:DescribeServiceDeployments",
    "ecs:DescribeServiceRevisions",
    "ecs:StopServiceDeployment",
    "ecs:ContinueServiceDeployment",
    "cloudwatch:DescribeAlarms",
}
TRUST = json.dumps(
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


def test_ledger_speaks_the_templates_key_schema() -> None:
    schema = deployments_table_schema()
    assert schema["KeySchema"] == KEY_SCHEMA
    assert sorted(schema["AttributeDefinitions"], key=str) == sorted(ATTRIBUTE_DEFINITIONS, key=str)
    assert deployments_table_ttl_attribute() == TTL_ATTRIBUTE


def _table_from_template(stack: LocalStack) -> None:
    db = boto3.client(
        "dynamodb", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
    )
    db.delete_table(TableName=stack.settings.deploy_table)
    db.create_table(TableName=stack.settings.deploy_table, **deployments_table_schema())
    db.update_time_to_live(
        TableName=stack.settings.deploy_table,
        TimeToLiveSpecification={
            "Enabled": True,
            "AttributeName": deployments_table_ttl_attribute(),
        },
    )


def _every_engine_path(engine: Engine, simulator: RolloutSimulator, info: StackInfo) -> None:
    try:
        with pytest.raises(NothingToRollBack):
            engine.rollback(WHO)
        with pytest.raises(ImageMissing):
            engine.deploy("v9.9.9", WHO)
        list(engine.watch(engine.deploy("v4.4.0", WHO)))
        simulator.mark_broken("v4.5.0-ecr-ecs-fargate")
        list(engine.watch(engine.deploy("v4.5.0", WHO)))  # stopped tasks: ListTasks etc.
        list(engine.watch(engine.redeploy(WHO)))
        engine.status()
        engine.history(5)
        engine.recent_images()
        engine.unlock()
        list(engine.watch(engine.deploy("v4.3.0", WHO)))
        list(engine.watch(engine.rollback(WHO)))  # back to v4.4.0
        until = datetime.now(UTC) + timedelta(minutes=1)
        for _ in range(2):  # the first writes each record's brief, the second reads them
            engine.stats(until - timedelta(days=30), until)
        _abort_in_flight(engine, simulator)
        _secrets_in_what_runs(engine.settings)
        engine.plan_deploy("v4.5.0", WHO)  # the plan's checks of the secrets: reads only
        _pause_and_continue(engine, simulator, info)  # last: the service stays blue/green
    finally:
        engine.close()


def _abort_in_flight(engine: Engine, simulator: RolloutSimulator) -> None:
    """A deploy stopped while ECS rolls it out: StopServiceDeployment (ROLLBACK)."""
    simulator.mark_slow("v4.3.0-ecr-ecs-fargate")
    watch = engine.watch(engine.deploy("v4.3.0", WHO))
    try:
        for snap in watch:
            if snap.ecs_status == "IN_PROGRESS":
                break
        aborted = engine.abort(WHO)
        engine.follow_abort(aborted)
    finally:
        watch.close()


def _pause_and_continue(engine: Engine, simulator: RolloutSimulator, info: StackInfo) -> None:
    """A blue/green deployment paused after its test traffic shift (service.yml's hook) and
    continued: ContinueServiceDeployment."""
    s = engine.settings
    ecs = boto3.client("ecs", endpoint_url=info.endpoint_url, region_name=info.region)

    def steady() -> bool:  # the revision the plan's step put in place has rolled out
        (service,) = ecs.describe_services(cluster=s.ecs_cluster, services=[s.ecs_service])[
            "services"
        ]
        return [d.get("rolloutState") for d in service["deployments"]] == ["COMPLETED"]

    wait_until(steady, 60, "the service steady before the blue/green deploy")
    set_deployment_strategy(
        info,
        s,
        "BLUE_GREEN",
        cluster=s.ecs_cluster,
        service=s.ecs_service,
        pause_at=["POST_TEST_TRAFFIC_SHIFT"],
    )
    simulator.mark_healthy("v4.3.0-ecr-ecs-fargate")
    record = engine.deploy("v4.3.0", WHO)
    found: list[Pause] = []

    def paused() -> bool:
        pause = engine.paused(record.id)
        found.extend([pause] if pause is not None else [])
        return bool(found)

    wait_until(paused, 60, "the blue/green deployment paused at its hook")
    decision = engine.decide_pause(
        WHO, CONTINUE, via=Via(door=Door.CLI), of=record.id, hook_id=found[0].hook.hook_id
    )
    engine.follow_abort(decision.record)


def _secrets_in_what_runs(settings: Settings) -> None:
    """The service moved (outside deploybot) to a revision whose container reads a Secrets
    Manager secret and an SSM parameter, both existing: a plan checks them."""
    region, url = settings.aws_region, settings.aws_endpoint_url
    ecs = boto3.client("ecs", endpoint_url=url, region_name=region)
    secret = boto3.client("secretsmanager", endpoint_url=url, region_name=region).create_secret(
        Name=f"{settings.ecs_service}/db", SecretString="hunter2"
    )["ARN"]
    boto3.client("ssm", endpoint_url=url, region_name=region).put_parameter(
        Name=f"/{settings.ecs_service}/token", Value="t0ken", Type="SecureString"
    )
    service = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
    live = ecs.describe_task_definition(taskDefinition=service["services"][0]["taskDefinition"])
    td = live["taskDefinition"]
    kwargs = as_registered(td)
    kwargs["containerDefinitions"] = [
        {
            **c,
            "secrets": [
                {"name": "DB_PASSWORD", "valueFrom": secret},
                {"name": "API_TOKEN", "valueFrom": f"/{settings.ecs_service}/token"},
            ],
        }
        for c in td["containerDefinitions"]
    ]
    arn = ecs.register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(
        cluster=settings.ecs_cluster, service=settings.ecs_service, taskDefinition=arn
    )


def test_the_bot_role_grants_exactly_what_the_engine_calls(
    stack: LocalStack, simulator: RolloutSimulator
) -> None:
    """Every engine path, walked here: what it needs is what bot.yml grants. (Each test's own
    calls are also held against the role when it ends: tests/conftest.py.)"""
    _table_from_template(stack)
    # A target with an alarm (deploybot.toml's alarms): each change reads it first.
    boto3.client(
        "cloudwatch", endpoint_url=stack.settings.aws_endpoint_url, region_name="eu-west-1"
    ).put_metric_alarm(
        AlarmName="hello-world-5xx",
        Namespace="hello-world",
        MetricName="5xx",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    s = stack.settings
    target = Target(
        s.deploy_target, s.ecs_cluster, s.ecs_service, s.ecr_repository, alarms=("hello-world-5xx",)
    )
    with recorded() as calls:
        _every_engine_path(Engine(stack.settings, target=target), simulator, stack.info)
        # The bot reads its deploybot.toml again (DEPLOYBOT_CONFIG_PARAMETER,
        # bot/slack/reload.py): none here is an answer too.
        read_parameter(s, f"/{s.stack_name}-bot/deploybot.toml")
    # A bot whose targets are all in its own account (no TargetRoleArns): tests/deploy/
    # test_accounts.py walks what targets in other accounts add.
    need, grant = needed(calls), set(bot_task_role_actions())
    assert sorted(need - grant) == [], "the engine calls these but bot.yml does not grant them"
    unused = grant - need - GRANTED_AHEAD
    assert sorted(unused) == [], "bot.yml grants these but the engine never calls them"


def test_what_is_granted_ahead_is_granted() -> None:
    """GRANTED_AHEAD names only actions bot.yml grants (a name left behind there is a typo)."""
    assert sorted(GRANTED_AHEAD - granted()) == []


# --- two targets, at resource level -------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One AWS call as the engine made it: the signing name, the operation, its parameters."""

    service: str
    operation: str
    params: dict[str, Any]


class Recorder:
    """botocore's before-parameter-build event, on a session given to the engine's AwsClient."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def session(self, region: str) -> boto3.session.Session:
        session = boto3.session.Session(region_name=region)
        session.events.register("before-parameter-build", self._record)
        return session

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.signing_name or model.service_model.endpoint_prefix
        service = IAM_PREFIXES.get(service, service)
        self.calls.append(Call(str(service), str(model.name), json.loads(json.dumps(params))))


@dataclass(frozen=True)
class Authorised:
    """One thing IAM authorises for a call: an action on a resource, with condition keys."""

    action: str
    resource: str
    context: dict[str, str]


# The parameter naming the resource, for the actions on a service deployment or revision.
SERVICE_DEPLOYMENT_ACTIONS = {
    "ecs:DescribeServiceDeployments": "serviceDeploymentArns",
    "ecs:StopServiceDeployment": "serviceDeploymentArn",
    "ecs:ContinueServiceDeployment": "serviceDeploymentArn",
    "ecs:DescribeServiceRevisions": "serviceRevisionArns",
}


def _what_iam_checks(call: Call, region: str, account: str) -> Iterator[Authorised]:
    """The (action, resource, condition keys) IAM evaluates for ``call``, per the Service
    Authorization Reference (resource types and condition keys of ECS, ECR, DynamoDB)."""
    arn = f"arn:aws:{{}}:{region}:{account}:{{}}"
    p, action = call.params, f"{call.service}:{call.operation}"

    def cluster_of(name: str) -> str:
        return name if name.startswith("arn:") else arn.format("ecs", f"cluster/{name}")

    if action in NEEDS_NO_PERMISSION:
        # IAM checks nothing (tests/aws_calls.py cites STS's reference). The caller's ARN is
        # asked once per process, so whether a test sees the call depends on which tests ran
        # before it in the same worker.
        return
    if action == "dynamodb:TransactWriteItems":
        for item in p["TransactItems"]:
            ((kind, op),) = item.items()
            table = arn.format("dynamodb", f"table/{op['TableName']}")
            yield Authorised(TRANSACTION_ITEMS[kind], table, {})
    elif action == "dynamodb:BatchGetItem":  # authorised per table it names
        for name in p["RequestItems"]:
            yield Authorised(action, arn.format("dynamodb", f"table/{name}"), {})
    elif call.service == "dynamodb":
        yield Authorised(action, arn.format("dynamodb", f"table/{p['TableName']}"), {})
    elif action == "ecr:DescribeImages":
        yield Authorised(action, arn.format("ecr", f"repository/{p['repositoryName']}"), {})
    elif action in ("ecs:DescribeServices", "ecs:UpdateService"):
        cluster = p["cluster"].rsplit("/", 1)[-1]
        names = p["services"] if action == "ecs:DescribeServices" else [p["service"]]
        for name in names:
            service = name.rsplit("/", 1)[-1]
            resource = arn.format("ecs", f"service/{cluster}/{service}")
            yield Authorised(action, resource, {"ecs:cluster": cluster_of(p["cluster"])})
    elif action == "ecs:ListTasks":
        yield Authorised(action, "*", {"ecs:cluster": cluster_of(p["cluster"])})
    elif action == "ecs:DescribeTasks":
        for task in p["tasks"]:
            assert task.startswith("arn:"), task
            yield Authorised(action, task, {"ecs:cluster": cluster_of(p["cluster"])})
    elif action == "ecs:ListServiceDeployments":
        cluster = p["cluster"].rsplit("/", 1)[-1]
        service = p["service"].rsplit("/", 1)[-1]
        resource = arn.format("ecs", f"service/{cluster}/{service}")
        yield Authorised(action, resource, {"ecs:cluster": cluster_of(p["cluster"])})
    elif action in SERVICE_DEPLOYMENT_ACTIONS:
        # On the deployment (or revision) and on its service, both required; the ARN names
        # the cluster and the service: service-deployment/CLUSTER/SERVICE/ID.
        key = SERVICE_DEPLOYMENT_ACTIONS[action]
        for named in p[key] if isinstance(p[key], list) else [p[key]]:
            assert named.startswith("arn:"), named
            _, cluster, service, _ = named.split(":", 5)[5].split("/")
            context = {"ecs:cluster": cluster_of(cluster)}
            yield Authorised(action, named, context)
            yield Authorised(action, arn.format("ecs", f"service/{cluster}/{service}"), context)
    elif action == "cloudwatch:DescribeAlarms":
        # On each alarm named; without names, on every alarm ("*"), which the role refuses.
        for name in p.get("AlarmNames") or ["*"]:
            alarm = "*" if name == "*" else arn.format("cloudwatch", f"alarm:{name}")
            yield Authorised(action, alarm, {})
    elif action in STAR_ONLY or action == "ecs:DescribeTaskDefinition":
        yield Authorised(action, "*", {})
    elif action == "ecs:RegisterTaskDefinition":
        yield Authorised(action, "*", {})
        if p.get("tags"):
            family = arn.format("ecs", f"task-definition/{p['family']}:1")
            yield Authorised(
                "ecs:TagResource", family, {"ecs:CreateAction": "RegisterTaskDefinition"}
            )
        for role in filter(None, (p.get("executionRoleArn"), p.get("taskRoleArn"))):
            yield Authorised(
                "iam:PassRole", role, {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
            )
    # The plan's checks (bot/deploy/plan_checks.py).
    elif action == "iam:GetRole":
        yield Authorised(action, f"arn:aws:iam::{account}:role/{p['RoleName']}", {})
    elif action == "logs:DescribeLogGroups":
        yield Authorised(action, arn.format("logs", "log-group:*"), {})
    elif action == "secretsmanager:DescribeSecret":
        secret = p["SecretId"]
        resource = secret if secret.startswith("arn:") else arn.format("secretsmanager", secret)
        yield Authorised(action, resource, {})
    elif action == "ssm:DescribeParameters":
        yield Authorised(action, "*", {})
    else:
        raise AssertionError(f"no IAM model for {action}: add it here and to bot.yml's role")


def _concrete_statements(
    stacks: list[str], region: str, account: str, exports: dict[str, str], table: str
) -> list[dict[str, Any]]:
    """bot.yml's role for ``stacks``, every resource a real ARN (imports resolved)."""

    def value(node: Any) -> Any:
        if isinstance(node, list):
            return [value(v) for v in node]
        if isinstance(node, dict) and set(node) == {"Fn::ImportValue"}:
            return exports[render(node["Fn::ImportValue"])]
        if isinstance(node, dict) and set(node) & {"Fn::Sub", "Fn::GetAtt", "Ref"}:
            text = render(node).replace("${DeploymentsTable.Arn}", table)
            # BotConfig's Ref is the parameter's name (AWS::SSM::Parameter's return values).
            text = text.replace("${BotConfig}", f"/{PRODUCTION_STACK}-bot/deploybot.toml")
            for name, real in (("Partition", "aws"), ("Region", region), ("AccountId", account)):
                text = text.replace(f"${{AWS::{name}}}", real)
            assert "${" not in text, text
            return text
        if isinstance(node, dict):
            return {k: value(v) for k, v in node.items()}
        return node

    statements = bot_task_role_statements({"DeployStackNames": ",".join(stacks)})
    return [value(statement) for statement in statements]


def _staging_beside(stack: LocalStack) -> tuple[str, str]:
    """The staging stack's service in its own cluster, running production's image from the
    same repository (what `make infra ENV=staging` makes); its execution and task roles."""
    info, region = stack.info, stack.info.region
    iam = boto3.client("iam", endpoint_url=info.endpoint_url, region_name=region)
    execution = iam.create_role(
        RoleName=f"{STAGING_STACK}-execution", AssumeRolePolicyDocument=TRUST
    )
    task = iam.create_role(RoleName=f"{STAGING_STACK}-task", AssumeRolePolicyDocument=TRUST)
    ecs = boto3.client("ecs", endpoint_url=info.endpoint_url, region_name=region)
    ecs.create_cluster(clusterName=STAGING_STACK)
    definition = ecs.register_task_definition(
        family=STAGING_STACK,
        taskRoleArn=task["Role"]["Arn"],
        executionRoleArn=execution["Role"]["Arn"],
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu=TASK_CPU,
        memory=TASK_MEMORY,
        containerDefinitions=[
            {"name": SERVICE_CONTAINER, "image": info.image(info.running_tag), "essential": True}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(
        cluster=STAGING_STACK,
        serviceName=STAGING_STACK,
        taskDefinition=definition,
        desiredCount=2,
        launchType="FARGATE",
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": list(info.subnets),
                "securityGroups": list(info.security_groups),
                "assignPublicIp": "ENABLED",
            }
        },
    )
    return execution["Role"]["Arn"], task["Role"]["Arn"]


def _two_targets(stack: LocalStack, tmp_path: Path) -> dict[str, Settings]:
    """deploybot.toml with production and staging, loaded as the bot loads it; each target's
    settings (one table for both)."""
    config = tmp_path / "deploybot.toml"
    tables = [
        f'[targets.{name}]\ncluster = "{s}"\nservice = "{s}"\nrepository = "{PRODUCTION_STACK}"\n'
        for name, s in (("staging", STAGING_STACK), ("production", PRODUCTION_STACK))
    ]
    config.write_text("".join(tables) + 'after = "staging"\n')
    base = stack.settings.model_copy(update={"deploybot_config": config})
    targets = load_targets(base)
    return {target.name: target.settings(base) for target in targets}


def test_the_bot_role_covers_two_targets_and_only_them(
    stack: LocalStack, simulator: RolloutSimulator, tmp_path: Path
) -> None:
    _table_from_template(stack)
    execution, task = _staging_beside(stack)
    settings = _two_targets(stack, tmp_path)
    assert settings["staging"].deploy_table == settings["production"].deploy_table

    calls: dict[str, list[Call]] = {}
    for name in ("staging", "production"):
        recorder = Recorder()
        target = settings[name]
        aws = AwsClient(target, recorder.session(target.aws_region))
        _every_engine_path(Engine(target, aws=aws), simulator, stack.info)
        calls[name] = recorder.calls
    # The staging engine touched staging's service only, and production's its own.
    for name, stack_name in (("staging", STAGING_STACK), ("production", PRODUCTION_STACK)):
        clusters = {c.params["cluster"] for c in calls[name] if "cluster" in c.params}
        assert clusters == {stack_name}, (name, clusters)

    info = stack.info
    repository = f"arn:aws:ecr:{info.region}:{info.account_id}:repository/{PRODUCTION_STACK}"
    exports = {
        f"{PRODUCTION_STACK}-ExecutionRoleArn": info.execution_role_arn,
        f"{PRODUCTION_STACK}-TaskRoleArn": info.task_role_arn,
        f"{PRODUCTION_STACK}-RepositoryArn": repository,
        f"{STAGING_STACK}-ExecutionRoleArn": execution,
        f"{STAGING_STACK}-TaskRoleArn": task,
        f"{STAGING_STACK}-RepositoryArn": repository,  # the shared one
    }
    table = f"arn:aws:dynamodb:{info.region}:{info.account_id}:table/{info.table_name}"

    def denied(stacks: list[str], name: str) -> set[str]:
        statements = _concrete_statements(stacks, info.region, info.account_id, exports, table)
        return {
            f"{a.action} {a.resource}"
            for call in calls[name]
            for a in _what_iam_checks(call, info.region, info.account_id)
            if not identity_allows(statements, a.action, a.resource, a.context)
        }

    both = [PRODUCTION_STACK, STAGING_STACK]
    assert denied(both, "production") == set()
    assert denied(both, "staging") == set()
    # Least privilege: a role for staging alone may not touch production's service, cluster,
    # tasks or roles; the repository and the table are shared, and two actions are "*" only.
    refused = {line.split(" ")[0] for line in denied([STAGING_STACK], "production")}
    called = {
        a.action
        for call in calls["production"]
        for a in _what_iam_checks(call, info.region, info.account_id)
    }
    assert refused == {
        "ecs:DescribeServices",
        "ecs:UpdateService",
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "ecs:TagResource",
        "iam:PassRole",
        "iam:GetRole",  # the plan's check of the stack's roles
    } | (PER_STACK_NEW & called)
    assert denied([STAGING_STACK], "staging") == set()


# --- the calls granted ahead, at resource level, before the engine makes them ---------------


def _ahead_calls(stack: str, region: str, account: str) -> list[Call]:
    """One call of each action granted ahead, on ``stack``'s service, shaped as botocore's
    model says (validated against it, so a misspelt parameter fails here)."""
    base = f"arn:aws:ecs:{region}:{account}"
    deployment = f"{base}:service-deployment/{stack}/{stack}/r9i43YFjvgF_xlg7m2eJ1"
    revision = f"{base}:service-revision/{stack}/{stack}/4980306466373577095"
    calls = [
        Call("ecs", "ListServiceDeployments", {"cluster": stack, "service": stack}),
        Call("ecs", "DescribeServiceDeployments", {"serviceDeploymentArns": [deployment]}),
        Call("ecs", "StopServiceDeployment", {"serviceDeploymentArn": deployment}),
        Call(
            "ecs",
            "ContinueServiceDeployment",
            {"serviceDeploymentArn": deployment, "hookId": "ecs-pause-1", "action": "CONTINUE"},
        ),
        Call("ecs", "DescribeServiceRevisions", {"serviceRevisionArns": [revision]}),
        Call("cloudwatch", "DescribeAlarms", {"AlarmNames": [f"{stack}-5xx"]}),
        Call(
            "elasticloadbalancing",
            "DescribeListeners",
            {
                "ListenerArns": [
                    f"arn:aws:elasticloadbalancing:{region}:{account}:listener/app/lb/1/2"
                ]
            },
        ),
        Call(
            "elasticloadbalancing",
            "DescribeLoadBalancers",
            {
                "LoadBalancerArns": [
                    f"arn:aws:elasticloadbalancing:{region}:{account}:loadbalancer/app/lb/1"
                ]
            },
        ),
    ]
    botocore = get_session()
    for call in calls:
        name = "elbv2" if call.service == "elasticloadbalancing" else call.service
        model = botocore.get_service_model(name).operation_model(call.operation)
        validate_parameters(call.params, model.input_shape)
    return calls


def test_the_calls_granted_ahead_are_allowed_on_their_stack_only() -> None:
    region, account = "eu-west-1", "123456789012"
    exports = {
        f"{stack}-{name}": f"arn:aws:iam::{account}:role/{stack}-{name}"
        for stack in (PRODUCTION_STACK, STAGING_STACK)
        for name in ("ExecutionRoleArn", "TaskRoleArn", "RepositoryArn")
    }
    table = f"arn:aws:dynamodb:{region}:{account}:table/t"

    def denied(stacks: list[str], target: str) -> set[str]:
        statements = _concrete_statements(stacks, region, account, exports, table)
        return {
            a.action
            for call in _ahead_calls(target, region, account)
            for a in _what_iam_checks(call, region, account)
            if not identity_allows(statements, a.action, a.resource, a.context)
        }

    both = [PRODUCTION_STACK, STAGING_STACK]
    assert denied(both, PRODUCTION_STACK) == denied(both, STAGING_STACK) == set()
    assert denied([STAGING_STACK], STAGING_STACK) == set()
    assert denied([STAGING_STACK], PRODUCTION_STACK) == PER_STACK_NEW
    # An alarm outside the stack's names, or DescribeAlarms naming none, is refused.
    statements = _concrete_statements([PRODUCTION_STACK], region, account, exports, table)
    for params in ({"AlarmNames": ["someone-elses-alarm"]}, {}):
        (check,) = _what_iam_checks(Call("cloudwatch", "DescribeAlarms", params), region, account)
        assert not identity_allows(statements, check.action, check.resource, check.context)
