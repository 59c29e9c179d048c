"""One target: an ECS service and the rules that guard it, as a value the engine and the rules take.

Where targets come from (deploybot.toml or the environment) is bot/targets.py, a layer above:
the engine, the rules and the doors get a ``Target``; only the fleet and the doors load them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import timedelta

from bot.digest import Schedule
from bot.settings import Settings
from bot.windows import Window

EVERYONE = "*"


@dataclass(frozen=True)
class ChannelSink:
    """``notify = [{channel = "#team-a", on = ["failed"]}]``: a Slack channel that hears these."""

    channel: str
    on: frozenset[str]


@dataclass(frozen=True)
class WebhookSink:
    """``webhooks = [{url = …, on = […], secret_env = "…"}]``: an HTTP endpoint that gets these
    as JSON; ``secret_env`` names the environment variable holding its secret (never the
    file); ``format``: deploybot's signed event, a Grafana annotation or a Datadog event."""

    url: str
    on: frozenset[str]
    secret_env: str
    format: str = "deploybot"


# An IAM role's ARN (``arn:aws:iam::222222222222:role/deploybot-target``): partition, account.
ROLE_ARN = re.compile(r"arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/[\w+=,.@/-]{1,512}")


# A repository named by its URI, as a task definition's image names it
# (``111111111111.dkr.ecr.eu-west-1.amazonaws.com/hello-world``): another account's (or
# region's) repository the target pulls from across accounts (ECR's registry URL format:
# https://docs.aws.amazon.com/AmazonECR/latest/userguide/Registries.html).
REPOSITORY_URI = re.compile(
    r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/((?:[a-z0-9._-]+/)*[a-z0-9._-]+)"
)


def repository_parts(repository: str) -> tuple[str | None, str | None, str]:
    """(account, region, name) of a repository URI; (None, None, name) for a bare name."""
    found = REPOSITORY_URI.fullmatch(repository)
    if found is None:
        return None, None, repository
    return found[1], found[2], found[3]


def account_of(role_arn: str) -> str | None:
    """The 12-digit account of an IAM role ARN, None when it is not one."""
    found = ROLE_ARN.fullmatch(role_arn)
    return found[2] if found else None


@dataclass(frozen=True)
class Target:
    """One ECS service and its rules. The rule fields are read by bot/rules.py only."""

    name: str
    cluster: str
    service: str
    repository: str
    container: str | None = None
    # Promotion only: the target takes images that completed on this one, nothing else.
    after: str | None = None
    deployers: frozenset[str] = frozenset()  # Slack user ids, or "*"; empty: nobody
    channels: frozenset[str] = frozenset()  # Slack channel ids; empty: any channel
    freeze_after_failure: bool = False
    approvals: int = 0
    approvers: tuple[str, ...] = ()
    approval_expiry_minutes: int = 30
    windows: tuple[Window, ...] = ()
    # How many deploys one person may have waiting in this target's queue (bot/deploy/guards.py).
    queue_limit: int = 3
    # When the weekly digest (last week's four keys and chart) goes to the target's channel;
    # None: never.
    digest: Schedule | None = None
    # CloudWatch alarms that must exist and not be in ALARM for a deploy to start (beside
    # those ECS watches for the service: bot/deploy/alarms.py).
    alarms: tuple[str, ...] = ()
    source: str | None = None  # the file it comes from; None: the environment
    # A deployment ECS pauses at a hook: the test listener's path the bot checks when the pause
    # begins (None: no check), and the listener's base URL when the bot cannot reach it by its
    # load balancer's DNS name (None: found from ECS and ELBv2).
    verify_path: str | None = None
    test_url: str | None = None
    # CI's notice of an image deploys it at once through the rules (bot/slack/auto.py).
    auto_deploy: bool = False
    # The members of the Slack user groups (S…) ``deployers`` and ``approvers`` name, as the
    # bot last read them (bot/slack/groups.py); empty where nothing was read.
    deployer_members: frozenset[str] = frozenset()
    approver_members: frozenset[str] = frozenset()
    # Who hears what happens to its deployments beside its channel (bot/notify.py).
    notify: tuple[ChannelSink, ...] = ()
    webhooks: tuple[WebhookSink, ...] = ()
    # Where the service lives when not beside the bot (#30): its region (None: AWS_REGION), and
    # the role its engine assumes there (None: the bot's own credentials), with the ExternalId
    # the role's trust policy asks for. The table stays in the bot's account and region.
    region: str | None = None
    role_arn: str | None = None
    external_id: str | None = None

    def settings(self, base: Settings) -> Settings:
        """``base`` pointing at this target's service: what its Engine is built from."""
        return base.model_copy(
            update={
                "ecs_cluster": self.cluster,
                "ecs_service": self.service,
                "ecr_repository": self.repository,
                "ecs_container": self.container,
                "deploy_allowed_users": self.deployers,
                "deploy_allowed_channels": self.channels,
                "deploy_target": self.name,
            }
        )

    @property
    def account(self) -> str | None:
        """The AWS account of ``role_arn`` (None without one: the bot's own)."""
        return account_of(self.role_arn) if self.role_arn else None

    def may_deploy(self, user: str) -> bool:
        """Whether ``user`` (a Slack user id) is one of the target's deployers, or a member
        of a user group they name."""
        return EVERYONE in self.deployers or user in self.deployers or user in self.deployer_members

    def may_approve(self, user: str) -> bool:
        return user in self.approvers or user in self.approver_members

    @property
    def groups(self) -> frozenset[str]:
        """The Slack user groups (``S…``) its deployers and approvers name."""
        return frozenset(g for g in (*self.deployers, *self.approvers) if g.startswith("S"))

    @property
    def rules(self) -> Target:
        """The target as configured, without what was read of its groups: two readings of
        one file compare equal whatever Slack said meanwhile."""
        return replace(self, deployer_members=frozenset(), approver_members=frozenset())

    def serves_channel(self, channel: str) -> bool:
        """Whether the target answers in ``channel``: listed, or no list at all."""
        return not self.channels or channel in self.channels

    @property
    def approval_expiry(self) -> timedelta:
        return timedelta(minutes=self.approval_expiry_minutes)

    @property
    def guarded(self) -> bool:
        """Whether any rule beyond who and where applies (for /status and help texts)."""
        return bool(self.after or self.approvals or self.windows or self.freeze_after_failure)
