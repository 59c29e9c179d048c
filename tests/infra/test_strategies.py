"""service.yml's Strategy: ROLLING is the stack as it was; BLUE_GREEN, CANARY and LINEAR put a
load balancer in front, shift traffic between two target groups and pause for a Continue."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.infra.templates import load_template, render, resolve_conditions, resource
from tools.stack import main

PROGRESSIVE = ["BLUE_GREEN", "CANARY", "LINEAR"]
# What the load balancer adds, and only the progressive strategies have.
LOAD_BALANCING = {
    "LoadBalancerSecurityGroup",
    "TestListenerFromBot",
    "ServiceFromLoadBalancer",
    "LoadBalancer",
    "BlueTargetGroup",
    "GreenTargetGroup",
    "ProductionListener",
    "ProductionListenerRule",
    "TestListener",
    "TestListenerRule",
    "LoadBalancerInfrastructureRole",
}


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return load_template("service")


def _made(service: dict[str, Any], **parameters: str) -> dict[str, Any]:
    return resolve_conditions(service, parameters)


def _deployment(template: dict[str, Any]) -> dict[str, Any]:
    return dict(resource(template, "Service")["DeploymentConfiguration"])


def test_rolling_is_the_stack_as_it_was(service: dict[str, Any]) -> None:
    """No load balancer, no hook, no traffic settings: the ECS service of before #27."""
    for made in (
        _made(service),
        _made(service, Strategy="ROLLING", PauseStage="POST_SCALE_UP", BotIP="198.51.100.9/32"),
    ):
        assert not LOAD_BALANCING & set(made["Resources"])
        ecs = resource(made, "Service")
        assert "LoadBalancers" not in ecs and "HealthCheckGracePeriodSeconds" not in ecs
        deployment = _deployment(made)
        assert deployment["Strategy"] == {"Ref": "Strategy"}
        assert not {"LifecycleHooks", "CanaryConfiguration", "LinearConfiguration"} & set(
            deployment
        )
        assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (100, 200)
        assert not {"ProductionUrl", "TestListenerUrl"} & set(made["Outputs"])
    assert service["Parameters"]["Strategy"]["Default"] == "ROLLING"


@pytest.mark.parametrize("strategy", PROGRESSIVE)
def test_progressive_strategies_put_the_service_behind_two_target_groups(
    service: dict[str, Any], strategy: str
) -> None:
    made = _made(service, Strategy=strategy)
    assert set(made["Resources"]) >= LOAD_BALANCING - {"TestListenerFromBot"}
    (balanced,) = resource(made, "Service")["LoadBalancers"]
    assert balanced["ContainerName"] == "hello-world" and balanced["ContainerPort"] == 49000
    assert balanced["TargetGroupArn"] == {"Ref": "BlueTargetGroup"}
    assert balanced["AdvancedConfiguration"] == {
        "AlternateTargetGroupArn": {"Ref": "GreenTargetGroup"},
        "ProductionListenerRule": {"Ref": "ProductionListenerRule"},
        "TestListenerRule": {"Ref": "TestListenerRule"},
        "RoleArn": {"Fn::GetAtt": ["LoadBalancerInfrastructureRole", "Arn"]},
    }
    # The tasks' port, health checked on /health, by IP (awsvpc).
    for group in ("BlueTargetGroup", "GreenTargetGroup"):
        properties = resource(made, group)
        assert (properties["TargetType"], properties["Port"]) == ("ip", 49000)
        assert properties["HealthCheckPath"] == "/health"
    # Each listener's rule forwards every path, all to blue at first: ECS moves the weights.
    for listener, port in (("ProductionListener", 80), ("TestListener", 8080)):
        assert resource(made, listener)["Port"] == port
        rule = resource(made, f"{listener}Rule")
        assert rule["ListenerArn"] == {"Ref": listener}
        (action,) = rule["Actions"]
        assert action["Type"] == "forward"
        assert action["ForwardConfig"]["TargetGroups"] == [
            {"TargetGroupArn": {"Ref": "BlueTargetGroup"}, "Weight": 100},
            {"TargetGroupArn": {"Ref": "GreenTargetGroup"}, "Weight": 0},
        ]
    assert (
        render(made["Outputs"]["TestListenerUrl"]["Value"])
        == "http://${LoadBalancer.DNSName}:8080/"
    )


@pytest.mark.parametrize("strategy", PROGRESSIVE)
def test_both_listeners_answer_allowed_ip_only(service: dict[str, Any], strategy: str) -> None:
    made = _made(service, Strategy=strategy)
    rules = resource(made, "LoadBalancerSecurityGroup")["SecurityGroupIngress"]
    assert [(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in rules] == [
        (80, 80, {"Ref": "AllowedIP"}),
        (8080, 8080, {"Ref": "AllowedIP"}),
    ]
    # The tasks admit the load balancer beside AllowedIP, on their port only.
    extra = resource(made, "ServiceFromLoadBalancer")
    assert extra["GroupId"] == {"Ref": "ServiceSecurityGroup"}
    assert extra["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert (extra["FromPort"], extra["ToPort"]) == (49000, 49000)
    assert resource(made, "LoadBalancer")["Scheme"] == "internet-facing"
    assert "TestListenerFromBot" not in made["Resources"]  # no BotIP: AllowedIP alone
    bot = resource(
        _made(service, Strategy=strategy, BotIP="198.51.100.9/32"), "TestListenerFromBot"
    )
    assert bot["GroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert (bot["FromPort"], bot["ToPort"], bot["CidrIp"]) == (8080, 8080, {"Ref": "BotIP"})
    # The bot's own group lets it out to that port (bot.yml).
    egress = resource(load_template("bot"), "BotSecurityGroup")["SecurityGroupEgress"]
    assert (8080, 8080, "0.0.0.0/0") in [(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in egress]


def test_the_infrastructure_role_is_ecs_with_awss_policy_for_load_balancers(
    service: dict[str, Any],
) -> None:
    role = resource(_made(service, Strategy="BLUE_GREEN"), "LoadBalancerInfrastructureRole")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert [render(arn) for arn in role["ManagedPolicyArns"]] == [
        "arn:${AWS::Partition}:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
    ]
    assert "Policies" not in role


@pytest.mark.parametrize(
    ("strategy", "stage"),
    [
        ("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT"),
        ("LINEAR", "POST_TEST_TRAFFIC_SHIFT"),
        # ECS invokes it before every traffic-shift step: before the canary, and after it.
        ("CANARY", "PRE_PRODUCTION_TRAFFIC_SHIFT"),
    ],
)
def test_each_deployment_pauses_and_rolls_back_when_nobody_answers(
    service: dict[str, Any], strategy: str, stage: str
) -> None:
    (hook,) = _deployment(_made(service, Strategy=strategy))["LifecycleHooks"]
    assert hook == {
        "TargetType": "PAUSE",
        "LifecycleStages": [stage],
        "TimeoutConfiguration": {
            "TimeoutInMinutes": {"Ref": "PauseTimeoutInMinutes"},
            "Action": "ROLLBACK",
        },
    }


def test_the_pause_can_move_or_go(service: dict[str, Any]) -> None:
    moved = _deployment(_made(service, Strategy="CANARY", PauseStage="POST_TEST_TRAFFIC_SHIFT"))
    assert moved["LifecycleHooks"][0]["LifecycleStages"] == [{"Ref": "PauseStage"}]
    assert "LifecycleHooks" not in _deployment(_made(service, Strategy="CANARY", PauseStage="NONE"))
    # Only the stages ECS accepts a PAUSE hook at ("Pause hooks for Amazon ECS service
    # deployments"): never TEST_TRAFFIC_SHIFT or PRODUCTION_TRAFFIC_SHIFT.
    allowed = set(service["Parameters"]["PauseStage"]["AllowedValues"]) - {"DEFAULT", "NONE"}
    assert allowed == {
        "POST_SCALE_UP",
        "POST_TEST_TRAFFIC_SHIFT",
        "PRE_PRODUCTION_TRAFFIC_SHIFT",
        "POST_PRODUCTION_TRAFFIC_SHIFT",
    }


def test_canary_and_linear_settings_go_to_their_strategy_only(service: dict[str, Any]) -> None:
    canary = _deployment(_made(service, Strategy="CANARY"))
    assert canary["CanaryConfiguration"] == {
        "CanaryPercent": {"Ref": "CanaryPercent"},
        "CanaryBakeTimeInMinutes": {"Ref": "CanaryBakeTimeInMinutes"},
    }
    assert "LinearConfiguration" not in canary
    linear = _deployment(_made(service, Strategy="LINEAR"))
    assert linear["LinearConfiguration"] == {
        "StepPercent": {"Ref": "LinearStepPercent"},
        "StepBakeTimeInMinutes": {"Ref": "LinearStepBakeTimeInMinutes"},
    }
    assert "CanaryConfiguration" not in linear
    blue_green = _deployment(_made(service, Strategy="BLUE_GREEN"))
    assert not {"CanaryConfiguration", "LinearConfiguration"} & set(blue_green)
    # Every strategy keeps the alarm and the bake time (#26).
    for made in (canary, linear, blue_green):
        assert made["Alarms"]["AlarmNames"] == [{"Ref": "ServerErrorsAlarm"}]
        assert made["BakeTimeInMinutes"] == {"Ref": "BakeTimeInMinutes"}


def test_the_settings_keep_to_ecss_ranges(service: dict[str, Any]) -> None:
    """The parameters' bounds are the schema's (cfn-lint's bundled AWS::ECS::Service)."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("eu-west-1", "AWS::ECS::Service").schema
    definitions = schema["definitions"]
    bounds = {
        "CanaryPercent": definitions["CanaryConfiguration"]["properties"]["CanaryPercent"],
        "CanaryBakeTimeInMinutes": definitions["CanaryConfiguration"]["properties"][
            "CanaryBakeTimeInMinutes"
        ],
        "LinearStepPercent": definitions["LinearConfiguration"]["properties"]["StepPercent"],
        "LinearStepBakeTimeInMinutes": definitions["LinearConfiguration"]["properties"][
            "StepBakeTimeInMinutes"
        ],
        "PauseTimeoutInMinutes": definitions["HookTimeoutConfig"]["properties"]["TimeoutInMinutes"],
        "BakeTimeInMinutes": definitions["DeploymentConfiguration"]["properties"][
            "BakeTimeInMinutes"
        ],
    }
    for name, spec in bounds.items():
        parameter = service["Parameters"][name]
        assert (parameter["MinValue"], parameter["MaxValue"]) == (
            spec["minimum"],
            spec["maximum"],
        ), name
    strategies = definitions["DeploymentConfiguration"]["properties"]["Strategy"]["enum"]
    assert sorted(service["Parameters"]["Strategy"]["AllowedValues"]) == sorted(strategies)
    hook = definitions["DeploymentLifecycleHook"]["properties"]
    assert "PAUSE" in hook["TargetType"]["enum"]
    assert "ROLLBACK" in definitions["HookTimeoutConfig"]["properties"]["Action"]["enum"]


def test_make_infra_canary_through_cloudformation(moto_url: str) -> None:
    """`make infra PARAMS="Strategy=CANARY"` through moto's CloudFormation: the load balancer,
    its listeners and rules, the target groups. (moto's change sets give the stack no
    outputs: the test listener's address is held by the static test above.)"""
    lines: list[str] = []
    argv = ["service", "--tag", "v1.0.0-ecr-ecs-fargate", "AllowedIP=198.51.100.7/32"]
    assert main([*argv, "Strategy=CANARY"], out=lines.append, delay=0.05) == 0, lines
    elb = boto3.client("elbv2", region_name="eu-west-1")
    (balancer,) = elb.describe_load_balancers()["LoadBalancers"]
    assert balancer["Scheme"] == "internet-facing"
    listeners = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert sorted(listener["Port"] for listener in listeners) == [80, 8080]
    groups = elb.describe_target_groups()["TargetGroups"]
    assert len(groups) == 2 and {g["TargetType"] for g in groups} == {"ip"}
    for listener in listeners:
        rules = elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
        (forward,) = [r for r in rules if not r["IsDefault"]]
        weights = {
            t["TargetGroupArn"]: t["Weight"]
            for t in forward["Actions"][0]["ForwardConfig"]["TargetGroups"]
        }
        assert sorted(weights.values()) == [0, 100] and set(weights) == {
            g["TargetGroupArn"] for g in groups
        }
    # Back to ROLLING is an update like any other (moto's change sets keep the resources a
    # false condition drops, so what goes is held by test_rolling_is_the_stack_as_it_was).
    assert main(["service", "Strategy=ROLLING"], out=lines.append, delay=0.05) == 0, lines
    assert "keeping the image that runs now: ImageTag=v1.0.0-ecr-ecs-fargate" in lines
