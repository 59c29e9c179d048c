"""``deploybot notify image-pushed``: CI's notice to SLACK_CHANNEL, with a Deploy button.

The notice says what deploying the image would change and which of its buttons' targets are
frozen, as far as this process may read them (AWS credentials that reach ECS, ECR and the
deployments table); what it may not read is said on stderr, and the notice goes without it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.deploy.changes import ChangeSummary
from bot.deploy.engine import Engine
from bot.deploy.errors import DeployError
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


def change_for_notice(settings: Settings, tag: str) -> ChangeSummary | None:
    """What deploying ``tag`` would change from what runs now, when this process may read
    the service and ECR (and GitHub); None, said on stderr, when it may not: CI's role
    (cloudformation/ci.yml) pushes images and reads nothing of ECS."""
    engine: Engine | None = None
    try:
        engine = Engine(settings)
        return engine.change_to(tag)
    except DeployError as exc:
        print(f"deploybot: the notice has no change summary: {exc.message}", file=sys.stderr)
        return None
    finally:
        if engine is not None:
            engine.close()


def frozen_for_notice(settings: Settings, targets: Targets, names: Sequence[str]) -> dict[str, str]:
    """The targets among ``names`` that are frozen now, each with its freeze in Slack's words
    ("production is frozen by @ana since 14:02: incident 1234"); a freeze this process may not
    read (CI's role reads the table's freeze items only: cloudformation/ci.yml) is said on
    stderr and left out, as the button's refusal will say it when clicked."""
    fleet = Fleet(settings, targets)
    frozen: dict[str, str] = {}
    try:
        for name in names:
            target = targets.get(name)
            try:
                freeze = fleet.engine(target).guards.current_freeze()
            except DeployError as exc:
                print(
                    f"deploybot: the notice cannot say whether {name} is frozen: {exc.message}",
                    file=sys.stderr,
                )
                continue
            if freeze is not None:
                frozen[name] = describe_freeze(target, freeze, now=fleet.clock.now(), slack=True)
    finally:
        fleet.close()
    return frozen


def notify_image_pushed(tag: str, sha: str | None, run_url: str | None) -> int:
    """Post the notice; exit 0 without Slack settings (CI without secrets stays green)."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"deploybot: bad configuration: {describe_errors(exc)}", file=sys.stderr)
        return 2
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
        return 0
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
    try:
        targets = load_targets(settings)
    except DeployError as exc:
        print(f"deploybot: bad configuration:\n{exc.message}", file=sys.stderr)
        return 2
    service = f"{settings.ecs_cluster}/{settings.ecs_service}"
    # Several targets: a button per target that takes images directly; those with `after`
    # get theirs on the source target's final message (a Promote button). What it changes:
    # from what the default target runs.
    direct = [t.name for t in targets.direct()] if len(targets) > 1 else []
    change = change_for_notice(settings, tag)
    frozen = frozen_for_notice(settings, targets, direct or [targets.default.name])
    msg = messages.image_pushed(
        tag,
        sha,
        run_url,
        service,
        change,
        targets=direct,
        frozen=frozen,
        commands=settings.slack_commands,
    )
    try:
        resp = client.chat_postMessage(channel=settings.slack_channel, **msg.as_kwargs())
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown_error"))
        hint = _HINTS.get(error, "Slack refused the notice ({error}).")
        # Whatever Slack (or a proxy in between) echoes back, the token is not printed.
        text = hint.format(channel=settings.slack_channel, error=error)
        print(f"deploybot: {redact(text, [token])}", file=sys.stderr)
        return 2
    except OSError as exc:
        text = f"could not reach Slack at {settings.slack_api_base}: {exc}"
        print(f"deploybot: {redact(text, [token])}", file=sys.stderr)
        return 2
    print(
        f"Posted the image-pushed notice for {tag} to {settings.slack_channel} (ts {resp['ts']})."
    )
    return 0
