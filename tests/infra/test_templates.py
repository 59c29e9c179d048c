"""The templates hold what the engine and operators rely on: names, schema, least privilege."""

from __future__ import annotations

import math
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode

from bot.local.stack import DEPLOY_TABLE_SCHEMA
from bot.settings import Settings
from tests.infra.templates import (
    TEMPLATES,
    bot_task_role_actions,
    bot_task_role_statements,
    deployments_table_schema,
    deployments_table_ttl_attribute,
    load_template,
    render,
    resource,
    resources_of_type,
)

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
    "iam:PassRole",
}
# AWS offers no narrower resource for these two.
STAR_ONLY = {"ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition"}
ARN = "arn:${AWS::Partition}"
CLUSTER_ARN = f"{ARN}:ecs:${{AWS::Region}}:${{AWS::AccountId}}:cluster/${{ServiceStackName}}"


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return load_template("service")


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


def test_service_names_follow_the_stack_name(service: dict[str, Any]) -> None:
    # The bot's settings default ECS_CLUSTER, ECS_SERVICE and ECR_REPOSITORY to STACK_NAME.
    stack = {"Ref": "AWS::StackName"}
    assert resource(service, "Cluster")["ClusterName"] == stack
    assert resource(service, "Service")["ServiceName"] == stack
    assert resource(service, "Repository")["RepositoryName"] == stack
    assert resource(service, "TaskDefinition")["Family"] == stack


def test_bot_stack_defaults_to_the_settings_stack_name(bot: dict[str, Any]) -> None:
    default = Settings.model_fields["stack_name"].default
    assert bot["Parameters"]["ServiceStackName"]["Default"] == default


def test_service_rolls_back_through_the_circuit_breaker(service: dict[str, Any]) -> None:
    deployment = resource(service, "Service")["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert deployment["MinimumHealthyPercent"] == 100


def test_service_spans_two_availability_zones(service: dict[str, Any]) -> None:
    subnets = resource(service, "Service")["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
    zones = [resource(service, s["Ref"])["AvailabilityZone"] for s in subnets]
    assert zones == [
        {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
        {"Fn::Select": [1, {"Fn::GetAZs": ""}]},
    ]


def test_service_container(service: dict[str, Any]) -> None:
    (container,) = resource(service, "TaskDefinition")["ContainerDefinitions"]
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


def test_service_exports_what_the_bot_imports(service: dict[str, Any], bot: dict[str, Any]) -> None:
    exported = {
        render(o["Export"]["Name"]).replace("${AWS::StackName}", "${ServiceStackName}")
        for o in service["Outputs"].values()
        if "Export" in o
    }
    imported: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"Fn::ImportValue"}:
                imported.add(render(node["Fn::ImportValue"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(bot["Resources"])
    assert imported, "bot.yml imports nothing from the service stack"
    assert imported <= exported
    assert {"${ServiceStackName}-ExecutionRoleArn", "${ServiceStackName}-TaskRoleArn"} <= imported


def test_bot_security_group_has_no_inbound_rule(bot: dict[str, Any]) -> None:
    assert "SecurityGroupIngress" not in resource(bot, "BotSecurityGroup")
    assert resources_of_type(bot, "AWS::EC2::SecurityGroupIngress") == {}
    egress = resource(bot, "BotSecurityGroup")["SecurityGroupEgress"]
    assert [(r["FromPort"], r["ToPort"]) for r in egress] == [(443, 443)]


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
        "SLACK_DEPLOY_COMMAND",
        "SLACK_REDEPLOY_COMMAND",
        "SLACK_STATUS_COMMAND",
    }
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    assert secrets == {
        key: {"Fn::Sub": f"${{SlackSecret}}:{key}::"}
        for key in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")
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
        assert render(statement["Condition"]["ArnEquals"]["ecs:cluster"]) == CLUSTER_ARN


def test_bot_task_role_resources_are_the_named_ones() -> None:
    granted = bot_task_role_actions()
    region_account = "${AWS::Region}:${AWS::AccountId}"
    service_arn = f"{ARN}:ecs:{region_account}:service/${{ServiceStackName}}/${{ServiceStackName}}"
    assert granted["ecs:DescribeServices"] == granted["ecs:UpdateService"] == [service_arn]
    assert granted["ecs:DescribeTasks"] == [
        f"{ARN}:ecs:{region_account}:task/${{ServiceStackName}}/*"
    ]
    assert granted["ecs:TagResource"] == [
        f"{ARN}:ecs:{region_account}:task-definition/${{ServiceStackName}}:*"
    ]
    assert granted["ecr:DescribeImages"] == [
        f"{ARN}:ecr:{region_account}:repository/${{ServiceStackName}}"
    ]
    for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"):
        assert granted[f"dynamodb:{action}"] == ["${DeploymentsTable.Arn}"]
    assert granted["iam:PassRole"] == [
        "ImportValue(${ServiceStackName}-ExecutionRoleArn)",
        "ImportValue(${ServiceStackName}-TaskRoleArn)",
    ]


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
    """Their defaults are the bot's, and the pattern is Slack's (bot/slack/names.py)."""
    from bot.slack.names import DEFAULT_COMMANDS, MAX_LENGTH, NAME_PATTERN

    for role in ("deploy", "redeploy", "status"):
        parameter = bot["Parameters"][f"Slack{role.capitalize()}Command"]
        assert parameter["Default"] == getattr(DEFAULT_COMMANDS, role)
        assert parameter["AllowedPattern"] == NAME_PATTERN.pattern
        assert parameter["MaxLength"] == MAX_LENGTH
