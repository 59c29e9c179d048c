"""Targets across AWS accounts and regions (#30): two moto "accounts" in two regions.

The bot's account is moto's default (123456789012) in eu-west-1, where the table and staging
live (tests/conftest.py's ``stack``). Production lives in account 222222222222, us-east-1,
built by the stack builder through credentials of a role there: moto's server maps the
credentials STS AssumeRole hands out to the role's account ("Configure an account using
STS": https://docs.getmoto.org/en/latest/docs/multi_account.html; the role need not exist).
Both accounts name their cluster and service alike, so a call that went to the wrong account
would find a service, just not the right one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.sts.models import sts_backends

from bot.clock import Clock
from bot.deploy.accounts import ImageNotPullable, lets_pull
from bot.deploy.aws import SESSION_NAME_MAX, session_name
from bot.deploy.records import DeploymentRecord, Requester
from bot.deploy.rollout import Outcome
from bot.fleet import Ask, Fleet
from bot.local.aws import MotoServer
from bot.local.faultproxy import FaultProxy
from bot.local.simulator import RolloutSimulator
from bot.local.stack import (
    Credentials,
    StackInfo,
    add_service,
    assume_role,
    create_stack,
    push_image,
)
from bot.rules import Action, Door
from bot.settings import Settings
from bot.targets import BadConfig, load_targets
from tests.aws_calls import TARGET_ROLES, needed, recorded
from tests.conftest import LocalStack
from tests.helpers import deploybot
from tests.infra.templates import bot_task_role_actions, bot_task_role_statements

OTHER_ACCOUNT, OTHER_REGION = "222222222222", "us-east-1"
ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/hello-world-ecr-ecs-fargate-deploybot"
EXTERNAL_ID = "deploybot-test-7f3a"
# A terminal's DEPLOYBOT_USER with characters STS refuses in a RoleSessionName.
WHO = Requester("jane doe/ops", "cli")
CLI = Ask.at(Door.CLI, WHO)
BILLING = "hello-world-billing"


class ShiftedClock(Clock):
    """The bot's clock, ``by`` ahead of the machine's."""

    def __init__(self, by: timedelta) -> None:
        self.by = by

    def now(self) -> datetime:
        return super().now() + self.by


@dataclass(frozen=True)
class TwoAccounts:
    settings: Settings  # the bot's, reading the deploybot.toml of the targets
    home: StackInfo  # the bot's account: staging's stack, the table
    other: StackInfo  # account 222222222222, us-east-1: production's stack
    other_settings: Settings
    credentials: Credentials  # the role's in the other account (the stack builder's)

    def client(self, service: str, other: bool = True) -> Any:
        if not other:
            return boto3.client(
                service, endpoint_url=self.home.endpoint_url, region_name=self.home.region
            )
        return boto3.client(
            service,
            endpoint_url=self.other.endpoint_url,
            region_name=OTHER_REGION,
            **self.credentials,
        )

    def running_image(self, other: bool = True) -> str:
        ecs = self.client("ecs", other)
        cluster = self.settings.ecs_cluster
        svc = ecs.describe_services(cluster=cluster, services=[self.settings.ecs_service])
        arn = svc["services"][0]["taskDefinition"]
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        return str(td["containerDefinitions"][0]["image"])


def two_accounts(
    stack: LocalStack,
    tmp_path: Path,
    *,
    pull: bool = False,
    releases: tuple[str, ...] = ("v4.3.0", "v4.4.0", "v4.5.0"),
    running: str = "v4.3.0",
    billing: bool = False,
    after: bool = True,
) -> TwoAccounts:
    """Production's stack in the other account: its own repository holding ``releases`` (as
    ECR replication would copy them), or with ``pull`` none, its service running the bot
    account's images (a cross-account pull). deploybot.toml: staging in the bot's account,
    production (``after = "staging"``) in the other; ``billing``: a second service there."""
    endpoint = stack.info.endpoint_url
    credentials = assume_role(endpoint, ROLE, OTHER_REGION)
    other_settings = stack.settings.model_copy(update={"aws_region": OTHER_REGION})
    other = create_stack(
        endpoint,
        other_settings,
        credentials=credentials,
        pull_from=stack.info if pull else None,
        releases=releases,
        running=running,
        table=False,
    )
    s = stack.settings
    repository = stack.info.repository_uri if pull else s.ecr_repository
    remote = (
        f'region = "{OTHER_REGION}"\nrole_arn = "{ROLE}"\nexternal_id = "{EXTERNAL_ID}"\n'
        f'repository = "{repository}"\n'
    )
    toml = (
        f'[targets.staging]\ncluster = "{s.ecs_cluster}"\nservice = "{s.ecs_service}"\n'
        f'repository = "{s.ecr_repository}"\n\n'
        f'[targets.production]\ncluster = "{s.ecs_cluster}"\nservice = "{s.ecs_service}"\n'
        + ('after = "staging"\n' if after else "")
        + f"{remote}\n"
    )
    if billing:
        add_service(
            other, other_settings, cluster=s.ecs_cluster, service=BILLING, credentials=credentials
        )
        toml += f'[targets.billing]\ncluster = "{s.ecs_cluster}"\nservice = "{BILLING}"\n{remote}'
    config = tmp_path / "deploybot.toml"
    config.write_text(toml, encoding="utf-8")
    settings = s.model_copy(update={"deploybot_config": config, "deploy_target": "staging"})
    return TwoAccounts(settings, stack.info, other, other_settings, credentials)


@pytest.fixture
def other_simulator(aws: MotoServer) -> Iterator[RolloutSimulator]:
    """ECS's rollouts in the other account and region (the ``simulator`` fixture: the bot's)."""
    sim = RolloutSimulator(aws, account_id=OTHER_ACCOUNT, region=OTHER_REGION, step_seconds=0.05)
    with sim:
        yield sim


def run(fleet: Fleet, target: str, action: Action, **kwargs: Any) -> DeploymentRecord:
    """Plan through the rules, start on the target's engine, follow to the end."""
    plan = fleet.plan(fleet.target(target), action, CLI, **kwargs)
    engine = fleet.engine(target)
    record = engine.start(plan)
    assert list(engine.watch(record)), "no snapshot"
    return engine.ledger.get(record.id) or record


def sessions() -> list[tuple[str, str, str]]:
    """(role, session name, external id) of every AssumeRole into the other account, as
    moto recorded them."""
    return [
        (r.role_arn, r.session_name, r.external_id)
        for r in sts_backends[OTHER_ACCOUNT]["aws"].assumed_roles
    ]


@pytest.mark.usefixtures("other_simulator")
def test_a_deploy_to_a_target_in_another_account_changes_that_accounts_service(
    stack: LocalStack,
    tmp_path: Path,
    simulator: RolloutSimulator,
) -> None:
    two = two_accounts(stack, tmp_path, after=False)
    release = two.other.release("v4.4.0")
    fleet = Fleet(two.settings)
    try:
        record = run(fleet, "production", Action.DEPLOY, tag="v4.4.0")
        history = fleet.engine("production").history(5)
    finally:
        fleet.close()
    assert record.outcome == Outcome.COMPLETED, record
    # The other account's service runs it, from its own repository, by digest; the service
    # of the same name in the bot's account still runs what it ran.
    assert two.running_image() == f"{two.other.repository_uri}@{release.digest}"
    assert two.running_image(other=False) == two.home.image(two.home.running_tag)
    # The change was made under a session named for its requester (sanitised for STS), the
    # loops' reads under "deploybot"; both with the role's external id.
    assert (ROLE, "deploybot-jane-doe-ops", EXTERNAL_ID) in sessions(), sessions()
    assert (ROLE, "deploybot", EXTERNAL_ID) in sessions(), sessions()
    # The table stays in the bot's account and region: the record is there, and the other
    # account has no table at all.
    assert [r.id for r in history][:1] == [record.id]
    assert two.client("dynamodb").list_tables()["TableNames"] == []


def test_status_reads_each_account_and_region_in_batches_of_its_own(
    stack: LocalStack, tmp_path: Path, aws: MotoServer
) -> None:
    """DescribeServices batches one account's and region's services: production and billing
    in the other account in one call, staging in the bot's in another, never mixed."""
    two = two_accounts(stack, tmp_path, running="v4.5.0", billing=True)
    fleet = Fleet(two.settings)
    try:
        fleet.statuses()  # the engines made, the roles assumed
        aws.requests.clear()
        statuses = {s.target.name: s for s in fleet.statuses()}
    finally:
        fleet.close()
    assert {name: s.error for name, s in statuses.items()} == dict.fromkeys(statuses, "")
    tags = {name: s.status.tag if s.status else "" for name, s in statuses.items()}
    assert tags == {
        "staging": "v4.3.0-ecr-ecs-fargate",
        "production": "v4.5.0-ecr-ecs-fargate",
        "billing": "v4.3.0-ecr-ecs-fargate",
    }
    assert aws.requests.count("ecs", "DescribeServices") == 2


def test_the_roles_credentials_are_refreshed_before_they_expire(
    stack: LocalStack, tmp_path: Path, aws: MotoServer
) -> None:
    """AssumeRole's credentials last an hour (moto's default, as AWS's): botocore refreshes
    them from 15 minutes before they expire, not on every call nor after they failed."""
    two = two_accounts(stack, tmp_path)
    aws.requests.clear()  # the stack builder's own AssumeRole
    clock = ShiftedClock(timedelta(0))
    fleet = Fleet(two.settings, clock=clock)
    try:
        fleet.statuses([fleet.target("production")])
        assert aws.requests.count("sts", "AssumeRole") == 1
        clock.by = timedelta(minutes=30)
        fleet.statuses([fleet.target("production")])
        assert aws.requests.count("sts", "AssumeRole") == 1, "refreshed too early"
        clock.by = timedelta(minutes=50)  # 10 minutes left
        status = fleet.statuses([fleet.target("production")])[0]
        assert aws.requests.count("sts", "AssumeRole") > 1, "not refreshed before expiring"
    finally:
        fleet.close()
    assert status.error == "" and status.status is not None


def _staging_runs_v4_4(fleet: Fleet) -> DeploymentRecord:
    done = run(fleet, "staging", Action.DEPLOY, tag="v4.4.0")
    assert done.outcome == Outcome.COMPLETED, done
    return done


@pytest.mark.usefixtures("other_simulator")
def test_promotion_into_a_replicated_repository_waits_for_the_digest_to_be_there(
    stack: LocalStack,
    tmp_path: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
) -> None:
    """ECR replication: the digest is resolved in the target account's repository; not
    there yet, the promotion is refused before any change, naming what to set up."""
    two = two_accounts(stack, tmp_path, releases=("v4.3.0",))
    before = two.running_image()
    fleet = Fleet(two.settings)
    try:
        staged = _staging_runs_v4_4(fleet)
        aws.requests.clear()
        with pytest.raises(ImageNotPullable) as refused:
            fleet.plan(fleet.target("production"), Action.PROMOTE, CLI, source="staging")
        assert aws.requests.count("ecs", "RegisterTaskDefinition") == 0
        assert aws.requests.count("ecs", "UpdateService") == 0
        assert two.running_image() == before
        # Replication copies the image (the same manifest: the same digest).
        push_image(
            stack.info.endpoint_url, two.other_settings, "v4.4.0", credentials=two.credentials
        )
        promoted = run(fleet, "production", Action.PROMOTE, source="staging")
    finally:
        fleet.close()
    message = refused.value.message
    for part in ("production", "222222222222", "us-east-1", "replication", "Nothing was changed"):
        assert part in message, message
    assert promoted.outcome == Outcome.COMPLETED and promoted.digest == staged.digest
    assert two.running_image() == f"{two.other.repository_uri}@{staged.digest}"


def _policy(*accounts: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "CrossAccountPull",
                    "Effect": "Allow",
                    "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                }
            ],
        }
    )


@pytest.mark.usefixtures("other_simulator")
def test_promotion_pulling_across_accounts_needs_the_repository_policy(
    stack: LocalStack,
    tmp_path: Path,
    aws: MotoServer,
    simulator: RolloutSimulator,
) -> None:
    """A cross-account pull: production's repository is the bot account's (by URI). The
    promotion is refused until that repository's policy lets account 222222222222 pull."""
    two = two_accounts(stack, tmp_path, pull=True)
    ecr = two.client("ecr", other=False)
    repository = stack.settings.ecr_repository
    refusals: list[str] = []
    fleet = Fleet(two.settings)
    try:
        staged = _staging_runs_v4_4(fleet)
        aws.requests.clear()
        for policy in (None, _policy("333333333333")):
            if policy:
                ecr.set_repository_policy(repositoryName=repository, policyText=policy)
            with pytest.raises(ImageNotPullable) as refused:
                fleet.plan(fleet.target("production"), Action.PROMOTE, CLI, source="staging")
            refusals.append(refused.value.message)
        assert aws.requests.count("ecs", "UpdateService") == 0
        assert two.running_image() == two.home.image(two.home.running_tag)
        ecr.set_repository_policy(
            repositoryName=repository, policyText=_policy("333333333333", OTHER_ACCOUNT)
        )
        promoted = run(fleet, "production", Action.PROMOTE, source="staging")
    finally:
        fleet.close()
    for message in refusals:
        assert "repository policy does not allow account 222222222222" in message, message
        assert "Nothing was changed" in message
    assert promoted.outcome == Outcome.COMPLETED
    assert two.running_image() == f"{two.home.repository_uri}@{staged.digest}"


# -- the pieces, without AWS ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("U0ALICE", "deploybot-U0ALICE"),
        ("jane@example.com", "deploybot-jane@example.com"),
        ("Jane Doe (ops) ✓", "deploybot-Jane-Doe--ops"),
        ("  ", "deploybot"),
        ("x" * 100, ("deploybot-" + "x" * 100)[:SESSION_NAME_MAX]),
    ],
)
def test_session_names_are_what_sts_accepts(who: str, expected: str) -> None:
    name = session_name(who)
    assert name == expected
    assert 2 <= len(name) <= SESSION_NAME_MAX


ROOT = f"arn:aws:iam::{OTHER_ACCOUNT}:root"


@pytest.mark.parametrize(
    ("statements", "allowed"),
    [
        ([{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "ecr:*"}], True),
        ([{"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "ecr:Batch*"}], False),
        (
            [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/exec"},
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                }
            ],
            True,
        ),
        (
            [
                {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
                {"Effect": "Deny", "Principal": {"AWS": ROOT}, "Action": "ecr:BatchGetImage"},
            ],
            False,
        ),
        (
            [{"Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "*"}],
            False,
        ),
    ],
)
def test_which_repository_policies_let_an_account_pull(
    statements: list[dict[str, Any]], allowed: bool
) -> None:
    assert lets_pull(json.dumps({"Statement": statements}), OTHER_ACCOUNT) is allowed


def test_account_keys_are_checked_with_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "deploybot.toml"
    config.write_text(
        '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
        'region = "Ireland"\nrole_arn = "arn:aws:iam::2222:user/me"\n'
        '[targets.staging]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
        'external_id = "x y"\n'
        '[targets.billing]\ncluster = "c"\nservice = "b"\n'
        'repository = "1111.dkr.ecr.eu-west-1.amazonaws.com/r"\n',
        encoding="utf-8",
    )
    settings = Settings(_env_file=None).model_copy(  # type: ignore[call-arg]
        update={"deploybot_config": config, "deploy_target": "production"}
    )
    with pytest.raises(BadConfig) as bad:
        load_targets(settings)
    shown = str(config)
    assert list(bad.value.problems) == [
        f"{shown}: targets.production.region: 'Ireland' is not an AWS region (e.g. us-east-1)",
        f"{shown}: targets.production.role_arn: 'arn:aws:iam::2222:user/me' is not an IAM role "
        "ARN (arn:aws:iam::222222222222:role/NAME: the TargetRoleArn output of "
        "cloudformation/target-role.yml in the target's account)",
        f"{shown}: targets.staging.external_id: set, but no role_arn to assume with it",
        f"{shown}: targets.billing.repository: '1111.dkr.ecr.eu-west-1.amazonaws.com/r' is "
        "neither a repository name nor its URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME)",
    ]


@pytest.mark.usefixtures("other_simulator")
def test_target_accounts_add_exactly_what_they_need_to_the_bot_role(
    stack: LocalStack,
    tmp_path: Path,
    simulator: RolloutSimulator,
) -> None:
    """bot.yml with TargetRoleArns grants two more actions than without (tests/infra/
    test_permissions.py holds the one-account role to the engine's calls): both are called by
    a promotion into another account that pulls from the bot's repository. (Every call here
    is also held against that role when the test ends: tests/conftest.py.)"""
    two = two_accounts(stack, tmp_path, pull=True)
    two.client("ecr", other=False).set_repository_policy(
        repositoryName=stack.settings.ecr_repository, policyText=_policy(OTHER_ACCOUNT)
    )
    with recorded() as calls:
        fleet = Fleet(two.settings)
        try:
            _staging_runs_v4_4(fleet)
            promoted = run(fleet, "production", Action.PROMOTE, source="staging")
        finally:
            fleet.close()
    assert promoted.outcome == Outcome.COMPLETED
    one_account = set(bot_task_role_actions())
    with_targets = set(bot_task_role_actions(bot_task_role_statements(TARGET_ROLES)))
    added = with_targets - one_account
    assert added == {"sts:AssumeRole", "ecr:GetRepositoryPolicy"}
    assert added <= needed(calls), "bot.yml grants these for target accounts, never called"


def test_a_role_the_bot_cannot_assume_is_said_in_one_line(
    stack: LocalStack, tmp_path: Path
) -> None:
    """STS refuses the AssumeRole (the role does not trust the bot, or wants another external
    id): `deploybot` says so naming the role, exit 2, no traceback; the bot's own account's
    targets are read as ever."""
    two = two_accounts(stack, tmp_path)
    with FaultProxy(stack.info.endpoint_url) as proxy:
        proxy.refuse(
            "sts",
            "AssumeRole",
            code="AccessDenied",
            status=403,
            message=f"User is not authorized to perform: sts:AssumeRole on resource: {ROLE}",
        )
        env = {
            "AWS_ENDPOINT_URL": proxy.endpoint_url,
            "DEPLOYBOT_CONFIG": str(two.settings.deploybot_config),
        }
        one = deploybot("--target", "production", "status", **env)
        every = deploybot("status", **env)
    assert one.returncode == 2, one
    said = one.stdout + one.stderr
    assert "Traceback" not in said and "Traceback" not in every.stdout + every.stderr
    assert ROLE in said and "cloudformation/target-role.yml" in said, said
    assert "staging" in every.stdout and "v4.3.0" in every.stdout, every


def test_a_target_in_another_region_of_the_bots_account_is_read_there(
    stack: LocalStack, tmp_path: Path, aws: MotoServer
) -> None:
    """`region` alone (no role): the bot's own credentials, that region's ECS and ECR, its
    own batch; the service named like staging's is another target (its lock, its history)."""
    # IAM is global: the west stack's roles need names of their own (stack_name's).
    west = stack.settings.model_copy(
        update={"aws_region": "us-west-2", "stack_name": "hello-world-west"}
    )
    create_stack(stack.info.endpoint_url, west, running="v4.5.0", table=False)
    s = stack.settings
    config = tmp_path / "deploybot.toml"
    config.write_text(
        f'[targets.staging]\ncluster = "{s.ecs_cluster}"\nservice = "{s.ecs_service}"\n'
        f'repository = "{s.ecr_repository}"\n\n'
        f'[targets.west]\ncluster = "{s.ecs_cluster}"\nservice = "{s.ecs_service}"\n'
        f'repository = "{s.ecr_repository}"\nregion = "us-west-2"\n',
        encoding="utf-8",
    )
    settings = s.model_copy(update={"deploybot_config": config, "deploy_target": "staging"})
    aws.requests.clear()
    fleet = Fleet(settings)
    try:
        tags = {t.target.name: t.status.tag if t.status else t.error for t in fleet.statuses()}
        scopes = {name: fleet.engine(name).aws.scope for name in ("staging", "west")}
    finally:
        fleet.close()
    assert tags == {"staging": "v4.3.0-ecr-ecs-fargate", "west": "v4.5.0-ecr-ecs-fargate"}
    assert scopes == {
        "staging": f"{s.ecs_cluster}/{s.ecs_service}",
        "west": f"bot/us-west-2/{s.ecs_cluster}/{s.ecs_service}",
    }
    assert aws.requests.count("sts", "AssumeRole") == 0
    assert aws.requests.count("ecs", "DescribeServices") == 2  # one batch per region
