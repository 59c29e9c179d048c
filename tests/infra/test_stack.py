"""tools/stack.py against moto over HTTP: the running tag is kept, change sets create and update."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.infra.templates import load_template
from tools.stack import (
    StackRefused,
    deploy_stack_names,
    environment_stack,
    image_tag_of,
    main,
    parse_assignments,
    running_image_tag,
    service_parameters,
)

REGION = "eu-west-1"
REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/svc"

# A stand-in for service.yml with the same parameters: moto's CloudFormation drops
# most ECS properties, so the test watches an SSM parameter that echoes them instead.
TINY_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ImageTag:
    Type: String
  AllowedIP:
    Type: String
  DesiredCount:
    Type: Number
    Default: 2
Resources:
  Echo:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/echo"
      Type: String
      Value: !Sub "${ImageTag} ${AllowedIP} ${DesiredCount}"
Outputs:
  Echo:
    Value: !Sub "${ImageTag} ${AllowedIP}"
"""


def _client(name: str, url: str):  # type: ignore[no-untyped-def]
    return boto3.client(name, endpoint_url=url, region_name=REGION)


def _run_service(url: str, stack: str, tag: str) -> None:
    """What a deploy leaves behind: the stack-named service on a revision with ``tag``."""
    ecs = _client("ecs", url)
    ecs.create_cluster(clusterName=stack)
    revision = ecs.register_task_definition(
        family=stack,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {"name": "sidecar", "image": "public.ecr.aws/docker/library/busybox:1.36"},
            {"name": "hello-world", "image": f"{REPO}:{tag}", "essential": True},
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    existing = ecs.describe_services(cluster=stack, services=[stack])["services"]
    if existing and existing[0]["status"] == "ACTIVE":
        ecs.update_service(cluster=stack, service=stack, taskDefinition=revision)
    else:
        ec2 = _client("ec2", url)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=stack, Description="svc", VpcId=vpc)["GroupId"]
        ecs.create_service(
            cluster=stack,
            serviceName=stack,
            taskDefinition=revision,
            desiredCount=2,
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [subnet],
                    "securityGroups": [group],
                    "assignPublicIp": "ENABLED",
                }
            },
        )


def test_image_tag_of() -> None:
    assert image_tag_of(f"{REPO}:v4.4.0-ecr-ecs-fargate") == "v4.4.0-ecr-ecs-fargate"
    assert image_tag_of("localhost:5000/svc:sha-abc1234") == "sha-abc1234"
    with pytest.raises(StackRefused, match="no tag"):
        image_tag_of("localhost:5000/svc")
    with pytest.raises(StackRefused, match="digest"):
        image_tag_of(f"{REPO}@sha256:{'0' * 64}")


def test_parse_assignments() -> None:
    assert parse_assignments(["AllowedIP=198.51.100.7/32", "SlackChannel="]) == {
        "AllowedIP": "198.51.100.7/32",
        "SlackChannel": "",
    }
    with pytest.raises(StackRefused, match="KEY=VALUE"):
        parse_assignments(["AllowedIP"])


def test_running_tag_follows_the_services_current_revision(moto_url: str) -> None:
    ecs = _client("ecs", moto_url)
    assert running_image_tag(ecs, "svc", "svc", "hello-world") is None  # no cluster
    _run_service(moto_url, "svc", "v1.0.0-ecr-ecs-fargate")
    assert running_image_tag(ecs, "svc", "svc", "hello-world") == "v1.0.0-ecr-ecs-fargate"
    _run_service(moto_url, "svc", "v1.1.0-ecr-ecs-fargate")  # the bot deployed since
    assert running_image_tag(ecs, "svc", "svc", "hello-world") == "v1.1.0-ecr-ecs-fargate"
    with pytest.raises(StackRefused, match="no container 'web'"):
        running_image_tag(ecs, "svc", "svc", "web")


def test_service_parameters(moto_url: str) -> None:
    ecs = _client("ecs", moto_url)
    lines: list[str] = []
    with pytest.raises(StackRefused, match="TAG="):
        service_parameters(ecs, "svc", out=lines.append)
    assert service_parameters(ecs, "svc", "v1.0.0-ecr-ecs-fargate", out=lines.append) == {
        "ImageTag": "v1.0.0-ecr-ecs-fargate"
    }
    _run_service(moto_url, "svc", "v1.1.0-ecr-ecs-fargate")
    given = {"AllowedIP": "198.51.100.7/32"}
    assert service_parameters(ecs, "svc", None, given, out=lines.append) == {
        "AllowedIP": "198.51.100.7/32",
        "ImageTag": "v1.1.0-ecr-ecs-fargate",
    }
    assert service_parameters(ecs, "svc", "v0.9.0-ecr-ecs-fargate", out=lines.append) == {
        "ImageTag": "v0.9.0-ecr-ecs-fargate"
    }
    assert any("v1.1.0-ecr-ecs-fargate runs now" in line for line in lines)


def test_make_infra_keeps_the_running_tag_through_updates(moto_url: str, tmp_path: Path) -> None:
    template = tmp_path / "service.yml"
    template.write_text(TINY_TEMPLATE)
    ssm = _client("ssm", moto_url)
    cfn = _client("cloudformation", moto_url)
    lines: list[str] = []

    def infra(*args: str) -> int:
        argv = ["service", "--stack", "svc", "--template", str(template), *args]
        return main(argv, out=lines.append, delay=0.05)

    def stack_parameters() -> dict[str, str]:
        (stack,) = cfn.describe_stacks(StackName="svc")["Stacks"]
        return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}

    def echo() -> str:
        return str(ssm.get_parameter(Name="/svc/echo")["Parameter"]["Value"])

    # First creation with no service and no tag: refused before any change.
    assert infra("AllowedIP=198.51.100.7/32") == 2
    assert "TAG=" in lines[-1]
    assert cfn.list_stacks()["StackSummaries"] == []

    assert infra("--tag", "v1.0.0-ecr-ecs-fargate", "AllowedIP=198.51.100.7/32") == 0
    assert echo() == "v1.0.0-ecr-ecs-fargate 198.51.100.7/32 2"
    assert "svc: created" in lines
    assert any("Add      Echo" in line for line in lines)  # the change set, printed
    assert any("CREATE_COMPLETE" in line and "AWS::CloudFormation::Stack" in line for line in lines)

    # The bot deploys v1.1.0; an infra update (here: DesiredCount) keeps it and AllowedIP.
    # (moto does not re-render resources on an update: the stack's parameters tell.)
    _run_service(moto_url, "svc", "v1.1.0-ecr-ecs-fargate")
    lines.clear()
    assert infra("DesiredCount=3") == 0
    assert stack_parameters() == {
        "ImageTag": "v1.1.0-ecr-ecs-fargate",
        "AllowedIP": "198.51.100.7/32",
        "DesiredCount": "3",
    }
    assert "svc: updated" in lines
    assert not any("CREATE_COMPLETE" in line for line in lines)  # old events stay unprinted
    assert any("UPDATE_COMPLETE" in line for line in lines)

    lines.clear()
    assert infra() == 0
    assert lines[-1] == "svc: no changes"

    assert infra("NoSuchParameter=1") == 2
    assert "declares no parameter NoSuchParameter" in lines[-1]


def test_bot_stack_needs_a_tag_on_first_creation(moto_url: str) -> None:
    lines: list[str] = []
    assert main(["bot"], out=lines.append, delay=0.05) == 2
    assert "TAG=" in lines[-1]


def test_make_infra_with_the_real_service_template(moto_url: str) -> None:
    """service.yml itself through moto's CloudFormation, then a bot deploy, then `make infra`."""
    stack = "hello-world-ecr-ecs-fargate"
    cfn, ecs = _client("cloudformation", moto_url), _client("ecs", moto_url)
    lines: list[str] = []
    first = ["service", "--tag", "v1.0.0-ecr-ecs-fargate", "AllowedIP=198.51.100.7/32"]
    assert main(first, out=lines.append, delay=0.05) == 0, lines
    assert running_image_tag(ecs, stack, stack, "hello-world") == "v1.0.0-ecr-ecs-fargate"

    # What the engine does: the current revision with the image swapped, then update_service.
    (service,) = ecs.describe_services(cluster=stack, services=[stack])["services"]
    current = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    definition = current["taskDefinition"]
    containers = definition["containerDefinitions"]
    for container in containers:
        if container["name"] == "hello-world":
            container["image"] = container["image"].replace("v1.0.0", "v1.1.0")
    revision = ecs.register_task_definition(
        family=definition["family"],
        containerDefinitions=containers,
        networkMode=definition["networkMode"],
        requiresCompatibilities=definition.get("requiresCompatibilities", ["FARGATE"]),
        cpu=definition.get("cpu", "256"),
        memory=definition.get("memory", "512"),
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=stack, service=stack, taskDefinition=revision)

    lines.clear()
    assert main(["service", "DesiredCount=3"], out=lines.append, delay=0.05) == 0, lines
    assert "keeping the image that runs now: ImageTag=v1.1.0-ecr-ecs-fargate" in lines
    (described,) = cfn.describe_stacks(StackName=stack)["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    # What was given, and every other parameter at its default: among them RepositoryName ""
    # (no ENV: the stack owns its repository, as it always did) and Strategy ROLLING.
    defaults = {
        name: str(spec["Default"])
        for name, spec in load_template("service")["Parameters"].items()
        if "Default" in spec
    }
    assert parameters == defaults | {
        "ImageTag": "v1.1.0-ecr-ecs-fargate",
        "AllowedIP": "198.51.100.7/32",
        "DesiredCount": "3",
    }
    assert (parameters["RepositoryName"], parameters["Strategy"]) == ("", "ROLLING")


def test_bot_stack_before_the_service_stack_is_refused_naming_it(moto_url: str) -> None:
    lines: list[str] = []
    assert main(["bot", "--tag", "v0.1.0-ecr-ecs-fargate"], out=lines.append, delay=0.05) == 2
    assert lines[-1].startswith("error: no stack exports hello-world-ecr-ecs-fargate-VpcId, ")
    assert "hello-world-ecr-ecs-fargate-ExecutionRoleArn" in lines[-1]
    assert lines[-1].endswith(
        "create the service stacks first (make infra, make infra ENV=staging)"
    )
    assert _client("cloudformation", moto_url).list_stacks()["StackSummaries"] == []


def _export_stand_in(url: str, stack: str, names: tuple[str, ...]) -> None:
    """A stack exporting ``stack-NAME`` for each name: what service.yml exports, minus the rest."""
    outputs = "".join(
        f"  {n}: {{Value: {stack}-{n}-value, Export: {{Name: {stack}-{n}}}}}\n" for n in names
    )
    _client("cloudformation", url).create_stack(
        StackName=stack,
        TemplateBody=f"Resources: {{Log: {{Type: AWS::Logs::LogGroup}}}}\nOutputs:\n{outputs}",
    )


def test_the_bot_stack_checks_every_stack_it_may_deploy(moto_url: str) -> None:
    host = ("VpcId", "ClusterName", "PublicSubnetA", "PublicSubnetB")
    deploys = ("RepositoryArn", "ExecutionRoleArn", "TaskRoleArn")
    _export_stand_in(moto_url, "svc", host + deploys)
    lines: list[str] = []
    argv = ["bot", "--service-stack", "svc", "--tag", "v0.1.0-ecr-ecs-fargate"]
    assert main([*argv, "DeployStackNames=svc,svc-staging"], out=lines.append) == 2
    assert lines[-1] == (
        "error: no stack exports svc-staging-RepositoryArn, svc-staging-ExecutionRoleArn, "
        "svc-staging-TaskRoleArn yet: create the service stacks first (make infra, make infra "
        "ENV=staging)"
    )
    assert main([*argv, "DeployStackNames= , "], out=lines.append) == 2
    assert lines[-1] == "error: DeployStackNames is empty: name the service stacks to deploy"


def test_the_bot_stack_deploys_the_stack_beside_it_unless_told(moto_url: str) -> None:
    cfn = _client("cloudformation", moto_url)
    assert deploy_stack_names(cfn, "svc-bot", "svc", {}) == ["svc"]
    assert deploy_stack_names(cfn, "svc-bot", "svc", {"DeployStackNames": "a, b"}) == ["a", "b"]
    # An existing bot stack keeps the list it was given. (String, not CommaDelimitedList,
    # in this stand-in: moto answers a list parameter as a Python list's repr, where
    # CloudFormation answers the text given, "svc,svc-staging".)
    cfn.create_stack(
        StackName="svc-bot",
        TemplateBody=(
            "Parameters: {DeployStackNames: {Type: String}}\n"
            "Resources: {Log: {Type: AWS::Logs::LogGroup}}\n"
        ),
        Parameters=[{"ParameterKey": "DeployStackNames", "ParameterValue": "svc,svc-staging"}],
    )
    assert deploy_stack_names(cfn, "svc-bot", "svc", {}) == ["svc", "svc-staging"]


@pytest.mark.parametrize(
    ("env", "stack", "parameters"),
    [
        ("", "svc", {}),
        ("production", "svc", {}),
        ("staging", "svc-staging", {"RepositoryName": "svc"}),
        ("qa-2", "svc-qa-2", {"RepositoryName": "svc"}),
    ],
)
def test_environment_stacks(env: str, stack: str, parameters: dict[str, str]) -> None:
    assert environment_stack("svc", env, out=lambda _: None) == (stack, parameters)


@pytest.mark.parametrize("env", ["Staging", "staging; rm -rf /", "-x", "2nd", "a" * 21, "st_aging"])
def test_bad_environment_names_are_refused(env: str) -> None:
    with pytest.raises(StackRefused, match=r"is not an environment name.*\(e\.g\. ENV=staging\)"):
        environment_stack("svc", env)


def test_make_infra_env_staging_with_the_real_service_template(moto_url: str) -> None:
    """`make infra ENV=staging` after `make infra`: a second stack, the first one's images."""
    base, staging = "hello-world-ecr-ecs-fargate", "hello-world-ecr-ecs-fargate-staging"
    cfn, ecs = _client("cloudformation", moto_url), _client("ecs", moto_url)
    lines: list[str] = []
    first = ["service", "--tag", "v1.0.0-ecr-ecs-fargate", "AllowedIP=198.51.100.7/32"]
    assert main(first, out=lines.append, delay=0.05) == 0, lines
    assert main(["service", "--env", "staging", *first[1:]], out=lines.append, delay=0.05) == 0
    (described,) = cfn.describe_stacks(StackName=staging)["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    assert parameters["RepositoryName"] == base
    listed = cfn.list_stack_resources(StackName=staging)["StackResourceSummaries"]
    resources = {r["LogicalResourceId"] for r in listed}
    assert "Repository" not in resources and {"Cluster", "Service", "TaskDefinition"} <= resources
    (service,) = ecs.describe_services(cluster=staging, services=[staging])["services"]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    (container,) = definition["taskDefinition"]["containerDefinitions"]
    repository = _client("ecr", moto_url).describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repository] == [base]  # still one repository
    assert container["image"] == f"{repository[0]['repositoryUri']}:v1.0.0-ecr-ecs-fargate"
    # The first stack is as it was: it owns the repository.
    base_resources = cfn.list_stack_resources(StackName=base)["StackResourceSummaries"]
    assert "Repository" in {r["LogicalResourceId"] for r in base_resources}
    # A later `make infra ENV=staging` keeps staging's running image, like the first stack's.
    lines.clear()
    assert (
        main(["service", "--env", "staging", "DesiredCount=1"], out=lines.append, delay=0.05) == 0
    )
    assert "keeping the image that runs now: ImageTag=v1.0.0-ecr-ecs-fargate" in lines


def test_make_infra_passes_env_as_one_argument(tmp_path: Path) -> None:
    """ENV reaches tools/stack.py untouched by the shell, and only ENV given to make counts."""
    root = Path(__file__).resolve().parents[2]
    witness = tmp_path / "pwned"
    # RUN: instead of uv, print the command line's arguments as JSON.
    show = "python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"

    def infra(*args: str, **env: str) -> list[str]:
        done = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-s",
                "-C",
                str(root),
                "infra",
                f"RUN={show}",
                "UV=true",
                *args,
            ],
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return list(json.loads(done.stdout.splitlines()[-1]))

    hostile = f"staging; touch {witness}; `touch {witness}` \"quoted\" 'single' *"
    assert infra(f"ENV={hostile}") == ["python", "-m", "tools.stack", "service", "--env", hostile]
    assert not witness.exists()
    assert infra("ENV=staging", "TAG=v1.0.0")[4:] == ["--env", "staging", "--tag=v1.0.0"]
    # sh reads ENV from the environment as its startup file: that one is not an environment.
    assert infra(ENV="/home/someone/.shrc") == [
        "python",
        "-m",
        "tools.stack",
        "service",
        "--env",
        "",
    ]


def test_github_secret_writes_the_token_where_the_bot_stack_says(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m tools.stack github-secret` puts GITHUB_TOKEN into the secret named by the
    bot stack's GitHubSecretArn output; without the variable, or without the output, it
    refuses and writes nothing."""
    secrets = _client("secretsmanager", moto_url)
    arn = secrets.create_secret(Name="svc-bot/github", SecretString='{"GITHUB_TOKEN": ""}')["ARN"]
    lines: list[str] = []
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    cfn = _client("cloudformation", moto_url)
    old_bot = "Resources: {Log: {Type: AWS::Logs::LogGroup}}\n"  # a bot stack from before
    cfn.create_stack(StackName="svc-bot", TemplateBody=old_bot)
    assert main(["github-secret", "--service-stack", "svc"], out=lines.append) == 2
    assert lines[-1] == "error: set GITHUB_TOKEN in the environment first"
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_example")
    assert main(["github-secret", "--service-stack", "svc"], out=lines.append) == 2
    assert lines[-1] == ("error: stack svc-bot has no GitHubSecretArn output; run make bot-infra")
    assert json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"]) == {
        "GITHUB_TOKEN": ""
    }

    cfn.create_stack(
        StackName="svc2-bot",
        TemplateBody=(
            "Resources: {Log: {Type: AWS::Logs::LogGroup}}\n"
            f"Outputs: {{GitHubSecretArn: {{Value: '{arn}'}}}}\n"
        ),
    )
    assert main(["github-secret", "--service-stack", "svc2"], out=lines.append) == 0, lines
    assert lines[-1].startswith("wrote GITHUB_TOKEN to arn:aws:secretsmanager:")
    assert json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"]) == {
        "GITHUB_TOKEN": "ghp_example"
    }


def test_bot_config_puts_a_file_the_bot_would_accept(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m tools.stack bot-config FILE` reads the file as the bot will and puts it into
    the parameter bot.yml passes as DEPLOYBOT_CONFIG_TEXT; a file the bot would refuse, or one
    too big for the parameter, is refused and nothing is written."""
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    ssm = _client("ssm", moto_url)
    name = "/svc-bot/deploybot.toml"
    placeholder = "# deploybot.toml: put the file\n"
    ssm.put_parameter(Name=name, Value=placeholder, Type="String")
    _client("cloudformation", moto_url).create_stack(
        StackName="svc-bot",
        TemplateBody=(
            "Resources: {Log: {Type: AWS::Logs::LogGroup}}\n"
            f"Outputs: {{BotConfigParameter: {{Value: '{name}'}}}}\n"
        ),
    )
    example = Path(__file__).parents[2] / "deploybot.example.toml"
    lines: list[str] = []
    argv = ["bot-config", "--service-stack", "svc"]

    bad = tmp_path / "bad.toml"
    bad.write_text("[targets.production]\ncluster = 'c'\nservice = 's'\nrepository = 'r'\n"
                   "after = 'stagin'\n")  # fmt: skip
    assert main([*argv, str(bad)], out=lines.append) == 2
    assert lines[-1].startswith(f"error: the bot would refuse it:\n{bad}: ")
    assert "no target named 'stagin'" in lines[-1]
    big = tmp_path / "big.toml"
    big.write_text(example.read_text() + "#" * 4096)
    assert main([*argv, str(big)], out=lines.append) == 2
    assert "the bot's parameter holds 4096" in lines[-1]
    assert main([*argv, str(tmp_path / "none.toml")], out=lines.append) == 2
    assert lines[-1].startswith("error: cannot read ")
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == placeholder

    assert main([*argv, str(example)], out=lines.append) == 0, lines
    assert lines[-1].startswith(f"wrote {example} (staging, production; default production) to")
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == example.read_text()


def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A shell without AWS credentials: none in the environment, no files, no instance role."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize(
    "argv",
    [
        ["service", "--tag", "v1.0.0-ecr-ecs-fargate"],  # make infra
        ["bot", "--tag", "v1.0.0-ecr-ecs-fargate"],  # make bot-infra
        ["ci", "GitHubRepository=octo-org/deploybot"],  # make ci-infra
        ["slack-secret"],
        ["delete", "--stack", "svc"],
        ["bot-config", str(Path(__file__).parents[2] / "deploybot.example.toml")],
    ],
)
def test_without_credentials_every_command_says_so_in_one_line_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As deploybot does (#29: a raw NoCredentialsError traceback and exit 1 before)."""
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    lines: list[str] = []
    assert main(argv, out=lines.append, delay=0.05) == 2
    assert lines == [
        "error: No AWS credentials found. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY."
    ]


def test_bot_config_reads_only_its_file_and_every_problem_under_its_name(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shell's DEPLOYBOT_CONFIG (OPERATIONS.md exports it) and DEPLOYBOT_CONFIG_TEXT are
    not read; the problems of the file come in one reading, named by its path; a deployer
    that is a name, not a Slack id, is refused with the hint to use ids. Nothing is written."""
    example = Path(__file__).parents[2] / "deploybot.example.toml"
    monkeypatch.setenv("DEPLOYBOT_CONFIG", str(example))
    monkeypatch.setenv("DEPLOYBOT_CONFIG_TEXT", "[targets.other]\n")
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    bad = tmp_path / "deploybot.toml"
    bad.write_text(
        "[targets.staging]\ncluster = 'c-staging'\nservice = 's'\nrepository = 'r'\n"
        "approvals = 'one'\ndeployers = ['somebody']\n"
        "[targets.production]\ncluster = 'c'\nservice = 's'\nrepository = 'r'\n"
        "after = 'stagin'\nwindows = ['Mon-Thr 09:00-16:00 Europe/Madrid']\n"
    )
    lines: list[str] = []
    assert main(["bot-config", "--service-stack", "svc", str(bad)], out=lines.append) == 2
    (said,) = lines
    assert said.split("\n") == [
        "error: the bot would refuse it:",
        f"{bad}: targets.staging.approvals: Input should be 0, 1 or 2 (got 'one')",
        f"{bad}: targets.staging.deployers.0: 'somebody' is not a Slack user id: use ids, not "
        "names (U…, from their profile → ⋮ → Copy member ID)",
        f"{bad}: targets.production.windows.0: window 'Mon-Thr 09:00-16:00 Europe/Madrid': no "
        "day 'Thr' (days are Mon Tue Wed Thu Fri Sat Sun)",
        f"{bad}: targets.production.after: no target named 'stagin' (known: staging, production)",
    ]
    assert _client("ssm", moto_url).describe_parameters()["Parameters"] == []


def test_an_unreachable_endpoint_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials, but nothing answers at AWS_ENDPOINT_URL: one line, exit 1."""
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_MAX_ATTEMPTS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    assert main(["delete", "--stack", "svc"], out=lines.append, delay=0.05) == 1
    (line,) = lines
    assert line.startswith("error: could not reach AWS: Could not connect to the endpoint URL")
