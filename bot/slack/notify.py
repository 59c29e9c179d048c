"""``deploybot notify image-pushed``: CI's notice to SLACK_CHANNEL, with a Deploy button
per target that takes images directly.

The targets: DEPLOYBOT_CONFIG (the repository's deploybot.toml) or DEPLOYBOT_CONFIG_TEXT,
else the SSM parameter ``--config-parameter`` names (the bot's, which CI's role may read),
else the environment's one target. The notice carries message metadata (an event the bot
receives: targets with ``auto_deploy`` deploy the image at once, bot/slack/auto.py). For
each, the notice says what deploying the image there
would change (its service, what it runs now, its commits) and whether it is frozen, as far
as this process may read them (AWS credentials that reach ECS, ECR and the deployments
table); what it may not read is said on stderr, and the notice goes without it.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.deploy.aws import read_parameter
from bot.deploy.changes import ChangeSummary
from bot.errors import DeployError
from bot.exit_codes import ExitCode
from bot.fleet import Fleet
from bot.logs import redact
from bot.rules import describe_freeze
from bot.settings import Settings, describe_errors, load_settings
from bot.slack import messages
from bot.targets import Targets, load_targets

_HINTS = {
    "invalid_auth": "Slack rejected SLACK_BOT_TOKEN (invalid_auth): check the token in CI's "
    "secrets.",
    "not_authed": "Slack got no token: set SLACK_BOT_TOKEN.",
    "account_inactive": "The bot's token belongs to a deactivated app or workspace.",
    "token_revoked": "SLACK_BOT_TOKEN was revoked: put a fresh token in CI's secrets.",
    "channel_not_found": "Slack does not know SLACK_CHANNEL {channel}: use the channel's id "
    "(C…) and invite the bot to it.",
    "not_in_channel": "The bot is not in {channel}: invite it (`/invite @deploybot`).",
    "is_archived": "Channel {channel} is archived.",
}


def targets_parameter(settings: Settings, name: str) -> str | None:
    """deploybot.toml from the SSM parameter ``name`` (the bot's: cloudformation/bot.yml's
    BotConfig, which CI's role may read: cloudformation/ci.yml); None, said on stderr, when
    it cannot be read, and the notice goes with the targets of the environment."""
    try:
        text = read_parameter(settings, name)
    except DeployError as exc:
        print(f"deploybot: the notice cannot read the targets in {name}: {exc.message}",
              file=sys.stderr)  # fmt: skip
        return None
    if text is None:
        print(f"deploybot: no parameter {name}; the notice goes to the environment's target",
              file=sys.stderr)  # fmt: skip
    return text


def image_notice(
    settings: Settings, targets: Targets, tag: str, sha: str | None, run_url: str | None
) -> messages.Message:
    """CI's notice for ``tag``: a button per target that takes images directly (several
    targets) or one Deploy (one), each with what deploying there would change from what
    runs there, and the freezes of those targets, as far as this process may read them
    (AWS credentials that reach ECS, ECR and the deployments table; CI's role reads only
    the freezes: cloudformation/ci.yml). What it may not read is said on stderr, and that
    target's part of the notice goes without it."""
    chosen = targets.direct() if len(targets) > 1 else [targets.default]
    offers: list[messages.NoticeTarget] = []
    frozen: dict[str, str] = {}
    fleet = Fleet(settings, targets)
    try:
        for target in chosen:
            engine = fleet.engine(target)
            change: ChangeSummary | None = None
            try:
                change = engine.change_to(tag)
            except DeployError as exc:
                print(f"deploybot: the notice has no change summary for {target.name}: "
                      f"{exc.message}", file=sys.stderr)  # fmt: skip
            offers.append(
                messages.NoticeTarget(
                    name=target.name if len(targets) > 1 else "",
                    service=f"{target.cluster}/{target.service}",
                    change=change,
                    auto=target.auto_deploy,
                )
            )
            try:
                freeze = engine.current_freeze()
            except DeployError as exc:
                print(f"deploybot: the notice cannot say whether {target.name} is frozen: "
                      f"{exc.message}", file=sys.stderr)  # fmt: skip
                continue
            if freeze is not None:
                now = fleet.clock.now()
                frozen[target.name] = describe_freeze(target, freeze, now=now, slack=True)
    finally:
        fleet.close()
    return messages.image_pushed(
        tag, sha, run_url, offers, frozen=frozen, commands=settings.slack_commands
    )


def notify_image_pushed(
    tag: str, sha: str | None, run_url: str | None, config_parameter: str | None = None
) -> int:
    """Post the notice; exit 0 without Slack settings (CI without secrets stays green).
    ``config_parameter``: the SSM parameter holding the targets (deploybot.toml), read when
    neither DEPLOYBOT_CONFIG nor DEPLOYBOT_CONFIG_TEXT is set."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"deploybot: bad configuration: {describe_errors(exc)}", file=sys.stderr)
        return ExitCode.REFUSED
    token = settings.secret("slack_bot_token")
    if not token or not settings.slack_channel:
        missing = [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", token),
                ("SLACK_CHANNEL", settings.slack_channel),
            )
            if not value
        ]
        print(f"deploybot: no Slack notice for {tag}: {' and '.join(missing)} not set.")
        return ExitCode.OK
    channel = settings.slack_channel
    client = WebClient(
        token=token,
        base_url=settings.slack_api_base,
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
    where = ""
    unset = settings.deploybot_config is None and settings.deploybot_config_text is None
    if config_parameter and unset:
        toml = targets_parameter(settings, config_parameter)
        settings = settings.model_copy(update={"deploybot_config_text": toml})
        where = f" (the targets in {config_parameter})" if toml is not None else ""
    try:
        targets = load_targets(settings)
    except DeployError as exc:
        print(f"deploybot: bad configuration{where}:\n{exc.message}", file=sys.stderr)
        return ExitCode.REFUSED
    msg = image_notice(settings, targets, tag, sha, run_url)
    try:
        resp = client.chat_postMessage(
            channel=channel, metadata=messages.notice_metadata(tag, sha, run_url), **msg.as_kwargs()
        )
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown_error"))
        hint = _HINTS.get(error, "Slack refused the notice ({error}).")
        # Whatever Slack (or a proxy in between) echoes back, the token is not printed.
        text = hint.format(channel=channel, error=error)
        print(f"deploybot: {redact(text, [token])}", file=sys.stderr)
        return ExitCode.REFUSED
    except OSError as exc:
        text = f"could not reach Slack at {settings.slack_api_base}: {exc}"
        print(f"deploybot: {redact(text, [token])}", file=sys.stderr)
        return ExitCode.REFUSED
    print(f"Posted the image-pushed notice for {tag} to {channel} (ts {resp['ts']}).")
    return ExitCode.OK
