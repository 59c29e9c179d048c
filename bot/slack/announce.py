"""What the bot says in a target's channel about changes made through another door.

A terminal records what it did (a freeze, an unfreeze, an abort, a ``--break-glass``) in the
table (``News``); the bot reads it there and says it here, so no laptop needs the bot's Slack
token. An ECS deployment no record explains (the console, CloudFormation) is said as such.
"""

from __future__ import annotations

from bot.command_names import CommandNames
from bot.deploy.records import News
from bot.deploy.rollout import EcsDeployment, revision_of
from bot.mrkdwn import escape as esc
from bot.mrkdwn import link
from bot.settings import Settings
from bot.target import Target


def channel_of(settings: Settings, target: Target) -> str | None:
    """Where a target's news goes: SLACK_CHANNEL when the target answers there, else the
    first of the target's channels."""
    if settings.slack_channel and target.serves_channel(settings.slack_channel):
        return settings.slack_channel
    return sorted(target.channels)[0] if target.channels else None


def _who(news: News) -> str:
    """The declared name, and what AWS said the caller is: a terminal's name is self-declared
    (DEPLOYBOT_USER), its AWS identity is not."""
    who = f"*{esc(news.who)}*"
    return f"{who} (AWS `{esc(news.aws_identity)}`)" if news.aws_identity else who


def news_text(news: News, target: str, commands: CommandNames) -> str:
    """The channel's sentence for ``news`` about ``target``."""
    name = f"*{esc(target)}*"
    who = _who(news)
    if news.kind == "freeze":
        return (
            f"🧊 {who} froze {name} from a terminal: {esc(news.reason)}. Deploys, redeploys "
            f"and promotions are refused until `{commands.deploy} unfreeze {esc(target)}`; "
            "rollback and abort still work."
        )
    if news.kind == "freeze-after-failure":
        return (
            f"🧊 {name} is frozen after a failure: {esc(news.reason)}. Deploys, redeploys and "
            f"promotions are refused until `{commands.deploy} unfreeze {esc(target)}`; "
            "rollback and abort still work."
        )
    if news.kind == "unfreeze":
        return f"☀️ {who} unfroze {name} from a terminal ({esc(news.reason)})."
    if news.kind == "abort":
        return (
            f"🛑 {who} stopped `{esc(news.deployment_id)}` of `{esc(news.tag)}` on {name} "
            f"from a terminal: `{esc(news.detail)}` goes back now."
        )
    if news.kind == "break-glass":
        return (
            f":rotating_light: {who} used --break-glass on {name}: {esc(news.detail)} "
            f"(deployment `{esc(news.deployment_id)}`). Reason: {esc(news.reason)}."
        )
    return f"{who} changed {name} from a terminal: {esc(news.kind)} {esc(news.detail)}".strip()


def outside_text(deployment: EcsDeployment, image: str, target: str, console_url: str) -> str:
    """An ECS deployment on ``target`` that deploybot did not start."""
    runs = f"`{esc(image)}` ({esc(revision_of(deployment.task_definition))})"
    if not image:
        runs = f"`{esc(revision_of(deployment.task_definition))}`"
    state = deployment.rollout_state or deployment.status
    return (
        f"⚠️ An ECS deployment started *outside deploybot* on *{esc(target)}*: "
        f"`{esc(deployment.id)}` runs {runs}, {esc(state.lower())} "
        f"({deployment.running}/{deployment.desired} running). deploybot's history does not "
        f"have it (the console, CloudFormation, the AWS CLI?); the service's deployments: "
        f"{link(console_url, 'ECS console')}."
    )
