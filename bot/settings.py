"""Every deploybot setting, in one pydantic-settings class read from the environment or .env."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.command_names import DEFAULT_COMMANDS, CommandNames

MAX_POLL_SECONDS = 300.0  # ECS moves in seconds; polling less often than this shows nothing
MAX_TIMEOUT_SECONDS = 86400.0  # a day: no rollout is worth watching longer
MAX_LEASE_SECONDS = 3600.0  # a crashed holder must not block deploys for more than an hour


class Settings(BaseSettings):
    """The contract of ../shared/DESIGN.md: names and defaults are what users rely on."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    aws_region: str = Field("eu-west-1", validation_alias="AWS_REGION")
    aws_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL")
    stack_name: str = Field("hello-world-ecr-ecs-fargate", validation_alias="STACK_NAME")
    ecs_cluster: str = Field("", validation_alias="ECS_CLUSTER")
    ecs_service: str = Field("", validation_alias="ECS_SERVICE")
    ecr_repository: str = Field("", validation_alias="ECR_REPOSITORY")
    deploy_table: str = Field("", validation_alias="DEPLOY_TABLE")
    image_tag_suffix: str = Field("-ecr-ecs-fargate", validation_alias="IMAGE_TAG_SUFFIX")
    # Every number has an upper bound and must be finite: ``inf`` or ``1e20`` seconds would
    # overflow timedelta deep in the engine instead of being refused here, by name.
    rollout_poll_seconds: float = Field(
        5.0, gt=0, le=MAX_POLL_SECONDS, allow_inf_nan=False, validation_alias="ROLLOUT_POLL_SECONDS"
    )
    rollout_timeout_seconds: float = Field(
        1800.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        validation_alias="ROLLOUT_TIMEOUT_SECONDS",
    )
    # How long AWS may go without answering a watch before it ends (exit 4, "lost sight"):
    # the deployment keeps the lock and its record stays open for any later command to settle.
    aws_lost_seconds: float = Field(
        60.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        validation_alias="AWS_LOST_SECONDS",
    )
    # How long a lock outlives its holder's last renewal; a crashed holder blocks no longer.
    lock_lease_seconds: float = Field(
        120.0,
        gt=0,
        le=MAX_LEASE_SECONDS,
        allow_inf_nan=False,
        validation_alias="LOCK_LEASE_SECONDS",
    )
    # How often the bot reads ECS for deployments started outside deploybot (the console,
    # CloudFormation) when nothing else has described the service meanwhile.
    outside_check_seconds: float = Field(
        60.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        validation_alias="OUTSIDE_CHECK_SECONDS",
    )

    # How long the members of the Slack user groups that deployers/approvers name are kept
    # before they are read again (bot/slack/groups.py): someone removed from a group loses
    # its rights within this time.
    slack_groups_seconds: float = Field(
        60.0, gt=0, le=3600, allow_inf_nan=False, validation_alias="SLACK_GROUPS_SECONDS"
    )

    # How often the running bot reads its configuration again (DEPLOYBOT_CONFIG's file, or
    # the SSM parameter DEPLOYBOT_CONFIG_PARAMETER names): bot/slack/reload.py.
    config_check_seconds: float = Field(
        60.0, gt=0, le=3600, allow_inf_nan=False, validation_alias="CONFIG_CHECK_SECONDS"
    )
    # The SSM parameter holding deploybot.toml (cloudformation/bot.yml's BotConfig): read at
    # start and every CONFIG_CHECK_SECONDS, so a change needs no restart.
    deploybot_config_parameter: str | None = Field(
        None, validation_alias="DEPLOYBOT_CONFIG_PARAMETER"
    )

    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SLACK_API_URL")
    slack_channel: str | None = Field(None, validation_alias="SLACK_CHANNEL")
    # The one workspace changes come from (bot/slack/workspace.py); unset: auth.test's team_id.
    slack_team_id: str | None = Field(
        None, pattern=r"^T[A-Z0-9]{2,30}$", validation_alias="SLACK_TEAM_ID"
    )
    deploy_allowed_users: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), validation_alias="DEPLOY_ALLOWED_USERS"
    )
    deploy_allowed_channels: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), validation_alias="DEPLOY_ALLOWED_CHANNELS"
    )

    # The slash commands' names, for a second install or an Enterprise Grid, where names are
    # resolved org-wide and two apps' /deploy collide (kirodotdev/KiroCrew PR #11398). Checked
    # against Slack's rules and built-ins (bot/command_names.py); `deploybot manifest` prints the
    # Slack app manifest that declares them.
    slack_deploy_command: str = Field(
        DEFAULT_COMMANDS.deploy, validation_alias="SLACK_DEPLOY_COMMAND"
    )
    slack_redeploy_command: str = Field(
        DEFAULT_COMMANDS.redeploy, validation_alias="SLACK_REDEPLOY_COMMAND"
    )
    slack_status_command: str = Field(
        DEFAULT_COMMANDS.status, validation_alias="SLACK_STATUS_COMMAND"
    )

    # Targets (bot/targets.py): DEPLOYBOT_CONFIG names a deploybot.toml of several targets and
    # their rules; without it the variables above are one target, named DEPLOY_TARGET, which
    # with a file names the default one. ECS_CONTAINER: the container that runs the image,
    # where a task has several (default: the one running ECR_REPOSITORY's image).
    deploybot_config: Path | None = Field(None, validation_alias="DEPLOYBOT_CONFIG")
    # The same file's text, for a container (bot.yml passes it from an SSM parameter); only
    # comments or blank is "not set".
    deploybot_config_text: str | None = Field(None, validation_alias="DEPLOYBOT_CONFIG_TEXT")
    deploy_target: str = Field("production", validation_alias="DEPLOY_TARGET")
    ecs_container: str | None = Field(None, validation_alias="ECS_CONTAINER")

    @field_validator(
        "deploybot_config", "deploybot_config_text", "deploy_target", "ecs_container", mode="before"
    )
    @classmethod
    def _empty_target_setting_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "":
            return "production" if info.field_name == "deploy_target" else None
        return value

    # GitHub (bot/github.py): with a repository, compare links; with a token too, commit lists
    # and GitHub deployments. GitHub Actions sets GITHUB_REPOSITORY and GITHUB_API_URL itself.
    github_repository: str | None = Field(None, validation_alias="GITHUB_REPOSITORY")
    github_token: SecretStr | None = Field(None, validation_alias="GITHUB_TOKEN")
    github_api_url: str = Field("https://api.github.com", validation_alias="GITHUB_API_URL")

    # Tell whoever started a deployment from Slack how it ended, in a DM (or an ephemeral in
    # the deployment's channel where the app's Messages tab is off).
    deploy_notify_requester: bool = Field(True, validation_alias="DEPLOY_NOTIFY_REQUESTER")

    @field_validator("github_repository", "github_token", "github_api_url", mode="before")
    @classmethod
    def _empty_github_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "":
            return "https://api.github.com" if info.field_name == "github_api_url" else None
        return value

    @field_validator("deploy_allowed_users", "deploy_allowed_channels", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("aws_endpoint_url", "slack_channel", "slack_team_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator(
        "slack_deploy_command", "slack_redeploy_command", "slack_status_command", mode="before"
    )
    @classmethod
    def _command_name(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _commands_slack_accepts(self) -> Settings:
        problems = self.slack_commands.problems()
        if problems:
            raise ValueError(
                "; ".join(f"SLACK_{role.upper()}_COMMAND: {why}" for role, why in problems.items())
            )
        return self

    @model_validator(mode="after")
    def _poll_well_inside_the_lease(self) -> Settings:
        # The poller renews the lock (and its follower lease) as it polls: with a poll interval
        # over a quarter of the lease, one slow or failed poll lets the lease lapse under a
        # live rollout.
        if self.rollout_poll_seconds * 4 > self.lock_lease_seconds:
            raise ValueError(
                f"ROLLOUT_POLL_SECONDS ({self.rollout_poll_seconds:g}) must be at most a quarter "
                f"of LOCK_LEASE_SECONDS ({self.lock_lease_seconds:g}): the lock is renewed "
                "between polls, so several polls must fit in one lease"
            )
        return self

    @model_validator(mode="after")
    def _derive_names(self) -> Settings:
        # Frozen model: fill the $STACK_NAME-derived defaults through object.__setattr__.
        for name in ("ecs_cluster", "ecs_service", "ecr_repository"):
            if not getattr(self, name):
                object.__setattr__(self, name, self.stack_name)
        if not self.deploy_table:
            object.__setattr__(self, "deploy_table", f"{self.stack_name}-deployments")
        return self

    def secret(self, name: str) -> str | None:
        """The plain value of a secret setting (``slack_bot_token`` …), or None if unset."""
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    @property
    def slack_commands(self) -> CommandNames:
        """The three slash commands' names, as one value."""
        return CommandNames(
            self.slack_deploy_command, self.slack_redeploy_command, self.slack_status_command
        )

    @property
    def slack_api_base(self) -> str:
        """SLACK_API_URL with the trailing slash slack_sdk expects."""
        return self.slack_api_url if self.slack_api_url.endswith("/") else self.slack_api_url + "/"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and .env), with ``overrides`` by field name on top."""
    return Settings(**overrides)  # the rest comes from the environment


def describe_errors(exc: ValidationError) -> str:
    """One line naming each bad variable and what it must be; never the values (secrets)."""
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"])  # empty for a rule across settings
        what = str(e["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {what}" if where else what)
    return "; ".join(problems)
