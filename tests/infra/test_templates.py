"""The templates hold what the engine and operators rely on: names, schema, least privilege."""

from __future__ import annotations

import json
import math
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode

from bot.local.stack import DEPLOY_TABLE_SCHEMA
from bot.settings import Settings
from bot.targets import load_targets
from tests.infra.templates import (
    PRODUCTION_STACK,
    STAGING_STACK,
    TEMPLATES,
    TWO_STACKS,
    bot_task_role_actions,
    bot_task_role_statements,
    deploy_policy_id,
    deployments_table_schema,
    deployments_table_ttl_attribute,
    load_template,
    render,
    resolve_conditions,
    resource,
    resources_of_type,
    task_role_policies,
)
from tools.stack import DEPLOY_IMPORTS, HOST_IMPORTS

ENGINE_ACTIONS = {
    "ecs:DescribeServices",
    "ecs:UpdateService",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "ecs:DescribeTaskDefinition",
    "ecs:RegisterTaskDefinition",
    "ecs:TagResource",
    "ecr:DescribeImages",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",  # TransactWriteItems' ConditionChecks (the lock's)
    "dynamodb:BatchGetItem",  # stats: the settled records' briefs
    "iam:PassRole",
    # ECS's service deployments and the deployment alarms (#26, #27)
    "ecs:ListServiceDeployments",
    "ecs:DescribeServiceDeployments",
    "ecs:DescribeServiceRevisions",
    "ecs:StopServiceDeployment",
    "ecs:ContinueServiceDeployment",
    "cloudwatch:DescribeAlarms",  # the alarms checked before a deploy (bot/deploy/alarms.py)
    # The plan's checks of what a new revision needs (bot/deploy/plan_checks.py): metadata
    "iam:GetRole",
    "logs:DescribeLogGroups",
    "secretsmanager:DescribeSecret",
    "ssm:DescribeParameters",
    "ssm:GetParameter",  # its deploybot.toml, read again while it runs (bot/slack/reload.py)
    "elasticloadbalancing:DescribeListeners",  # the test listener's address (verify_path)
    "elasticloadbalancing:DescribeLoadBalancers",
}
# AWS offers no narrower resource for these (DescribeParameters: Service Authorization
# Reference, AWS Systems Manager; ELBv2's Describe*: Elastic Load Balancing V2; no resource type).
STAR_ONLY = {
    "ecs:DescribeTaskDefinition",
    "ecs:RegisterTaskDefinition",
    "ssm:DescribeParameters",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancers",
}
ARN = "arn:${AWS::Partition}"
REGION_ACCOUNT = "${AWS::Region}:${AWS::AccountId}"


def cluster_arn(stack: str) -> str:
    return f"{ARN}:ecs:{REGION_ACCOUNT}:cluster/{stack}"


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return load_template("service")


@pytest.fixture(scope="module")
def production(service: dict[str, Any]) -> dict[str, Any]:
    """service.yml as `make infra` makes it (no ENV): no RepositoryName."""
    return resolve_conditions(service, {})


@pytest.fixture(scope="module")
def staging(service: dict[str, Any]) -> dict[str, Any]:
    """service.yml as `make infra ENV=staging` makes it: the first stack's repository."""
    return resolve_conditions(service, {"RepositoryName": PRODUCTION_STACK})


@pytest.fixture(scope="module")
def bot() -> dict[str, Any]:
    return load_template("bot")


@pytest.mark.parametrize("name", ["service", "bot", "ci"])
def test_template_decodes_cleanly(name: str) -> None:
    template, problems = decode(str(TEMPLATES / f"{name}.yml"))
    assert problems == [], problems
    assert template is not None and template["AWSTemplateFormatVersion"] == "2010-09-09"


def test_deployments_table_has_the_engines_schema(bot: dict[str, Any]) -> None:
    assert deployments_table_schema() == DEPLOY_TABLE_SCHEMA
    assert deployments_table_ttl_attribute() == "expires_at"
    table = resource(bot, "DeploymentsTable")
    assert table["TableName"] == {"Fn::Sub": "${ServiceStackName}-deployments"}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert bot["Resources"]["DeploymentsTable"]["DeletionPolicy"] == "Retain"


def test_deployments_table_schema_is_accepted_by_dynamodb(moto_url: str) -> None:
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_url, region_name="eu-west-1")
    dynamodb.create_table(TableName="schema-check", **deployments_table_schema())
    dynamodb.update_time_to_live(
        TableName="schema-check",
        TimeToLiveSpecification={
            "AttributeName": deployments_table_ttl_attribute(),
            "Enabled": True,
        },
    )
    described = dynamodb.describe_table(TableName="schema-check")["Table"]
    assert described["KeySchema"] == deployments_table_schema()["KeySchema"]


def test_service_names_follow_the_stack_name(production: dict[str, Any]) -> None:
    # The bot's settings default ECS_CLUSTER, ECS_SERVICE and ECR_REPOSITORY to STACK_NAME.
    stack = {"Ref": "AWS::StackName"}
    assert resource(production, "Cluster")["ClusterName"] == stack
    assert resource(production, "Service")["ServiceName"] == stack
    assert resource(production, "Repository")["RepositoryName"] == stack
    assert resource(production, "TaskDefinition")["Family"] == stack


def test_without_env_the_service_stack_is_as_it_was(production: dict[str, Any]) -> None:
    """No RepositoryName: the stack owns its repository and every reference reads as before."""
    repository = production["Resources"]["Repository"]
    assert repository["Type"] == "AWS::ECR::Repository"
    assert repository["DeletionPolicy"] == repository["UpdateReplacePolicy"] == "Retain"
    (container,) = resource(production, "TaskDefinition")["ContainerDefinitions"]
    assert container["Image"] == {"Fn::Sub": "${Repository.RepositoryUri}:${ImageTag}"}
    (pull,) = [
        s
        for p in resource(production, "ExecutionRole")["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if s["Sid"] == "PullImage"
    ]
    assert pull["Resource"] == {"Fn::GetAtt": ["Repository", "Arn"]}
    assert production["Outputs"]["RepositoryUri"]["Value"] == {
        "Fn::GetAtt": ["Repository", "RepositoryUri"]
    }
    assert production["Outputs"]["RepositoryArn"]["Value"] == {"Fn::GetAtt": ["Repository", "Arn"]}


def test_staging_runs_images_of_the_first_stacks_repository(staging: dict[str, Any]) -> None:
    assert "Repository" not in staging["Resources"]
    shared = "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${RepositoryName}"
    (container,) = resource(staging, "TaskDefinition")["ContainerDefinitions"]
    assert container["Image"] == {"Fn::Sub": f"{shared}:${{ImageTag}}"}
    (pull,) = [
        s
        for p in resource(staging, "ExecutionRole")["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if s["Sid"] == "PullImage"
    ]
    repository_arn = f"{ARN}:ecr:{REGION_ACCOUNT}:repository/${{RepositoryName}}"
    assert render(pull["Resource"]) == repository_arn
    # The exports keep their names, so the bot imports staging's like production's.
    assert render(staging["Outputs"]["RepositoryUri"]["Value"]) == shared
    assert render(staging["Outputs"]["RepositoryArn"]["Value"]) == repository_arn
    assert {k for k, o in staging["Outputs"].items() if "Export" in o} == {
        k
        for k, o in resolve_conditions(load_template("service"), {})["Outputs"].items()
        if "Export" in o
    }


def test_bot_stack_defaults_to_the_settings_stack_name(bot: dict[str, Any]) -> None:
    default = Settings.model_fields["stack_name"].default
    assert bot["Parameters"]["ServiceStackName"]["Default"] == default


def test_service_rolls_back_through_the_circuit_breaker(production: dict[str, Any]) -> None:
    """By default (AutoRollback: tests/infra/test_alarms.py has the other way)."""
    deployment = resource(production, "Service")["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert deployment["MinimumHealthyPercent"] == 100


def test_service_spans_two_availability_zones(service: dict[str, Any]) -> None:
    subnets = resource(service, "Service")["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
    zones = [resource(service, s["Ref"])["AvailabilityZone"] for s in subnets]
    assert zones == [
        {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
        {"Fn::Select": [1, {"Fn::GetAZs": ""}]},
    ]


def test_service_container(production: dict[str, Any]) -> None:
    (container,) = resource(production, "TaskDefinition")["ContainerDefinitions"]
    assert container["Name"] == "hello-world"
    assert container["Image"] == {"Fn::Sub": "${Repository.RepositoryUri}:${ImageTag}"}
    assert container["PortMappings"] == [{"ContainerPort": 49000, "Protocol": "tcp"}]
    command = container["HealthCheck"]["Command"]
    assert command[0] == "CMD" and "curl" not in " ".join(command)
    assert "urllib.request.urlopen('http://127.0.0.1:49000/health'" in command[-1]


def test_service_port_is_open_only_to_allowed_ip(service: dict[str, Any]) -> None:
    (rule,) = resource(service, "ServiceSecurityGroup")["SecurityGroupIngress"]
    assert (rule["FromPort"], rule["ToPort"], rule["CidrIp"]) == (
        49000,
        49000,
        {"Ref": "AllowedIP"},
    )


def _imports(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"Fn::ImportValue"}:
            found.add(render(node["Fn::ImportValue"]))
        for value in node.values():
            found |= _imports(value)
    elif isinstance(node, list):
        for value in node:
            found |= _imports(value)
    return found


def test_service_exports_what_the_bot_imports(service: dict[str, Any]) -> None:
    exported = {
        render(o["Export"]["Name"]).removeprefix("${AWS::StackName}-")
        for o in resolve_conditions(service, {})["Outputs"].values()
        if "Export" in o
    }
    bot = load_template("bot", TWO_STACKS)
    imported = _imports(bot["Resources"])
    by_stack: dict[str, set[str]] = {}
    for name in imported:
        stack, suffix = next(
            (prefix, name.removeprefix(f"{prefix}-"))
            for prefix in ("${ServiceStackName}", STAGING_STACK, PRODUCTION_STACK)
            if name.startswith(f"{prefix}-")
        )
        assert suffix in exported, name
        by_stack.setdefault(stack, set()).add(suffix)
    # What tools/stack.py checks exists before it creates the bot's stack is what bot.yml
    # imports: from the stack it runs beside, and from every stack it deploys.
    assert by_stack == {
        "${ServiceStackName}": set(HOST_IMPORTS),
        PRODUCTION_STACK: set(DEPLOY_IMPORTS),
        STAGING_STACK: set(DEPLOY_IMPORTS),
    }


def test_bot_security_group_has_no_inbound_rule(bot: dict[str, Any]) -> None:
    assert "SecurityGroupIngress" not in resource(bot, "BotSecurityGroup")
    assert resources_of_type(bot, "AWS::EC2::SecurityGroupIngress") == {}
    egress = resource(bot, "BotSecurityGroup")["SecurityGroupEgress"]
    # HTTPS to Slack and AWS; HTTP to a blue/green service's test listener (verify_path).
    assert [(r["FromPort"], r["ToPort"]) for r in egress] == [(443, 443), (8080, 8080)]


def test_bot_service_runs_two_tasks_in_the_services_cluster(bot: dict[str, Any]) -> None:
    service = resource(bot, "BotService")
    assert service["DesiredCount"] == {"Ref": "DesiredCount"}
    count = bot["Parameters"]["DesiredCount"]
    assert (count["Default"], count["MinValue"], count["MaxValue"]) == (2, 0, 3)
    assert "AllowedValues" not in count
    assert service["Cluster"] == {"Fn::ImportValue": {"Fn::Sub": "${ServiceStackName}-ClusterName"}}


def test_bot_keeps_one_serving_through_its_own_update(bot: dict[str, Any]) -> None:
    """ECS starts the new bot tasks before it stops the old: never zero bots during an update."""
    deployment = resource(bot, "BotService")["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    default = bot["Parameters"]["DesiredCount"]["Default"]
    for desired in range(1, bot["Parameters"]["DesiredCount"]["MaxValue"] + 1):
        # ECS keeps at least ceil(desired * min%) healthy and runs at most floor(desired * max%)
        # (ECS developer guide, "Rolling update deployments"). Healthy bots never drop below
        # the count asked for, and there is room for each new task beside the old ones.
        lowest = math.ceil(desired * deployment["MinimumHealthyPercent"] / 100)
        highest = math.floor(desired * deployment["MaximumPercent"] / 100)
        assert lowest == desired, desired
        assert highest >= 2 * desired, desired
    assert default >= 2, "one task alone is a gap in service whenever it is replaced"
    # Each bot holds one Socket Mode connection; Slack allows an app ten (bot.yml says where).
    most = bot["Parameters"]["DesiredCount"]["MaxValue"] * deployment["MaximumPercent"] // 100
    assert most <= 10


@pytest.mark.parametrize("name", ["service", "bot"])
def test_task_definitions_declare_linux_amd64(name: str) -> None:
    """The images are built for linux/amd64 (release.yml's platforms); Fargate must run that."""
    template = load_template(name)
    (definition,) = resources_of_type(template, "AWS::ECS::TaskDefinition").values()
    assert definition["Properties"]["RuntimePlatform"] == {
        "OperatingSystemFamily": "LINUX",
        "CpuArchitecture": "X86_64",
    }


def test_bot_container_settings_are_settings_the_bot_reads(bot: dict[str, Any]) -> None:
    (container,) = resource(bot, "TaskDefinition")["ContainerDefinitions"]
    assert container["Name"] == "deploybot"
    assert "Command" not in container  # the image's CMD decides
    known = {str(f.validation_alias) for f in Settings.model_fields.values()}
    env = {e["Name"] for e in container["Environment"]}
    assert env == {
        "STACK_NAME",
        "AWS_REGION",
        "SLACK_CHANNEL",
        "DEPLOY_ALLOWED_USERS",
        "DEPLOY_ALLOWED_CHANNELS",
        "SLACK_TEAM_ID",
        "SLACK_DEPLOY_COMMAND",
        "SLACK_REDEPLOY_COMMAND",
        "SLACK_STATUS_COMMAND",
        "GITHUB_REPOSITORY",
        "DEPLOY_NOTIFY_REQUESTER",
        "DEPLOYBOT_CONFIG_PARAMETER",  # the same deploybot.toml, read again while it runs
    }
    config = next(e for e in container["Environment"] if e["Name"] == "DEPLOYBOT_CONFIG_PARAMETER")
    assert config["Value"] == {"Ref": "BotConfig"}
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    assert secrets == {
        **{
            key: {"Fn::Sub": f"${{SlackSecret}}:{key}::"}
            for key in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")
        },
        "GITHUB_TOKEN": {"Fn::Sub": "${GitHubSecret}:GITHUB_TOKEN::"},
        "DEPLOYBOT_CONFIG_TEXT": {
            "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
            ":parameter${BotConfig}"
        },
    }
    assert (env | set(secrets)) <= known
    assert "http://127.0.0.1:3000/healthz" in container["HealthCheck"]["Command"][-1]


def test_bot_task_role_grants_exactly_the_engines_actions() -> None:
    assert set(bot_task_role_actions()) == ENGINE_ACTIONS


def test_bot_task_role_statements_are_named_and_have_no_wildcard_actions() -> None:
    statements = bot_task_role_statements()
    sids = [s.get("Sid") for s in statements]
    assert all(sids) and len(set(sids)) == len(sids)
    for action in bot_task_role_actions():
        assert "*" not in action


def test_star_resources_only_where_aws_allows_nothing_narrower() -> None:
    for statement in bot_task_role_statements():
        resources = statement["Resource"]
        if "*" not in (resources if isinstance(resources, list) else [resources]):
            continue
        actions = set(
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if actions <= STAR_ONLY:
            continue
        # ListTasks has no task-level resource; the ecs:cluster condition narrows it instead.
        assert actions == {"ecs:ListTasks"}, statement["Sid"]
        assert render(statement["Condition"]["ArnEquals"]["ecs:cluster"]) == cluster_arn(
            PRODUCTION_STACK
        )


def test_bot_task_role_resources_are_the_named_ones() -> None:
    """Deploying two stacks: each per-stack action on exactly the two stacks' resources."""
    policies = task_role_policies(load_template("bot", TWO_STACKS))
    assert set(policies) == {
        "deploy-shared",
        deploy_policy_id(PRODUCTION_STACK),
        deploy_policy_id(STAGING_STACK),
    }
    shared = bot_task_role_actions(policies["deploy-shared"])
    for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchGetItem"):
        assert shared[f"dynamodb:{action}"] == ["${DeploymentsTable.Arn}"]
    assert shared["ecs:RegisterTaskDefinition"] == shared["ecs:DescribeTaskDefinition"] == ["*"]
    for stack in (PRODUCTION_STACK, STAGING_STACK):
        granted = bot_task_role_actions(policies[deploy_policy_id(stack)])
        assert set(granted) | set(shared) == ENGINE_ACTIONS
        service_arn = f"{ARN}:ecs:{REGION_ACCOUNT}:service/{stack}/{stack}"
        assert granted["ecs:DescribeServices"] == granted["ecs:UpdateService"] == [service_arn]
        assert granted["ecs:DescribeTasks"] == [f"{ARN}:ecs:{REGION_ACCOUNT}:task/{stack}/*"]
        assert granted["ecs:TagResource"] == [
            f"{ARN}:ecs:{REGION_ACCOUNT}:task-definition/{stack}:*"
        ]
        assert granted["ecr:DescribeImages"] == [f"ImportValue({stack}-RepositoryArn)"]
        assert granted["ecs:ListServiceDeployments"] == [service_arn]
        deployments = f"{ARN}:ecs:{REGION_ACCOUNT}:service-deployment/{stack}/{stack}/*"
        for action in (
            "ecs:DescribeServiceDeployments",
            "ecs:StopServiceDeployment",
            "ecs:ContinueServiceDeployment",
        ):
            assert granted[action] == [service_arn, deployments], action
        assert granted["ecs:DescribeServiceRevisions"] == [
            service_arn,
            f"{ARN}:ecs:{REGION_ACCOUNT}:service-revision/{stack}/{stack}/*",
        ]
        assert granted["cloudwatch:DescribeAlarms"] == [
            f"{ARN}:cloudwatch:{REGION_ACCOUNT}:alarm:{stack}-*"
        ]
        assert granted["iam:PassRole"] == [
            f"ImportValue({stack}-ExecutionRoleArn)",
            f"ImportValue({stack}-TaskRoleArn)",
        ]
        (list_tasks,) = [
            s for s in policies[deploy_policy_id(stack)] if s["Action"] == "ecs:ListTasks"
        ]
        assert render(list_tasks["Condition"]["ArnEquals"]["ecs:cluster"]) == cluster_arn(stack)


def test_each_stacks_policy_fits_iams_quota_whatever_the_name() -> None:
    """A managed policy holds 6,144 characters, whitespace not counted, and the inline ones
    of a role 10,240 together (IAM and AWS STS quotas): with stack names as long as bot.yml
    allows, and imported role ARNs as long as IAM allows, both fit."""
    account, region = "123456789012", "ap-southeast-2"
    longest = "s" * load_template("bot")["Parameters"]["ServiceStackName"]["MaxLength"]
    policies = task_role_policies(load_template("bot", {"DeployStackNames": longest}))
    table = f"arn:aws:dynamodb:{region}:{account}:table/{longest}-deployments"
    role_arn = f"arn:aws:iam::{account}:role/{'r' * 64}"  # role names: 64 characters at most

    def concrete(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Fn::ImportValue"}:
            return role_arn
        if isinstance(node, dict) and set(node) & {"Fn::Sub", "Fn::GetAtt", "Ref"}:
            text = render(node).replace("${DeploymentsTable.Arn}", table)
            for name, value in (("Partition", "aws"), ("Region", region), ("AccountId", account)):
                text = text.replace(f"${{AWS::{name}}}", value)
            return text
        if isinstance(node, dict):
            return {k: concrete(v) for k, v in node.items()}
        if isinstance(node, list):
            return [concrete(v) for v in node]
        return node

    def size(statements: list[dict[str, Any]]) -> int:
        document = {"Version": "2012-10-17", "Statement": concrete(statements)}
        return len(json.dumps(document, separators=(",", ":")))

    assert size(policies.pop("deploy-shared")) < 10_240
    ((_, per_stack),) = policies.items()
    assert size(per_stack) < 6_144


def _statement_for(action: str) -> dict[str, Any]:
    (statement,) = [
        s
        for s in bot_task_role_statements()
        if action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    return statement


def test_pass_role_only_to_ecs_tasks() -> None:
    condition = _statement_for("iam:PassRole")["Condition"]
    assert condition == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_tagging_only_while_registering() -> None:
    condition = _statement_for("ecs:TagResource")["Condition"]
    assert condition == {"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}}


def test_bot_task_role_actions_refuses_an_action_granted_twice() -> None:
    doubled = [*bot_task_role_statements(), {**_statement_for("ecs:ListTasks"), "Sid": "Again"}]
    with pytest.raises(ValueError, match="ecs:ListTasks is granted by more than one statement"):
        bot_task_role_actions(doubled)


def test_bot_command_parameters_keep_to_slacks_names(bot: dict[str, Any]) -> None:
    """Their defaults are the bot's, and the pattern is Slack's (bot/command_names.py)."""
    from bot.command_names import DEFAULT_COMMANDS, MAX_LENGTH, NAME_PATTERN

    for role in ("deploy", "redeploy", "status"):
        parameter = bot["Parameters"][f"Slack{role.capitalize()}Command"]
        assert parameter["Default"] == getattr(DEFAULT_COMMANDS, role)
        assert parameter["AllowedPattern"] == NAME_PATTERN.pattern
        assert parameter["MaxLength"] == MAX_LENGTH


def test_the_bot_config_parameter_starts_as_not_set(bot: dict[str, Any]) -> None:
    """bot.yml creates BotConfig holding a comment: the bot reads that as one target from its
    environment, so a stack with nothing put there starts as it always did."""
    value = resource(bot, "BotConfig")["Value"]
    targets = load_targets(Settings(_env_file=None, DEPLOYBOT_CONFIG_TEXT=value))  # type: ignore[call-arg]
    assert targets.source is None and targets.names == ("production",)
