"""Builds the Bolt AsyncApp and registers its listeners; it only wires."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.deploy.engine import Engine
from bot.fleet import Fleet
from bot.settings import Settings
from bot.slack import actions, auto, bolt_fixes, commands, guards, pausing
from bot.slack.context import BotContext, PooledAnswers
from bot.slack.workspace import Strangers


def web_client(settings: Settings) -> AsyncWebClient:
    """The Web API client at SLACK_API_URL, with slack_sdk's 429, 5xx and connection retries."""
    return AsyncWebClient(
        token=settings.secret("slack_bot_token"),
        base_url=settings.slack_api_base,
        timeout=15,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
        ],
    )


def build_app(
    settings: Settings,
    fleet: Fleet | Engine,
    *,
    socket_mode: bool,
    min_update_interval: float = 2.0,
) -> tuple[AsyncApp, BotContext]:
    """The Bolt app and its context. ``fleet``: every target's engine (an Engine alone is the
    fleet of its settings' targets, with it as its target's engine)."""
    bolt_fixes.install()
    client = web_client(settings)
    secret = settings.secret("slack_signing_secret")
    app = AsyncApp(
        client=client,
        signing_secret=secret,
        # In Socket Mode there are no HTTP requests to verify; in HTTP mode Bolt checks
        # X-Slack-Signature and the timestamp's age on every request.
        request_verification_enabled=not socket_mode,
        process_before_response=False,
        # CI's notice is posted with the bot's own token: its message_metadata_posted event
        # is the bot's "own" event, which Bolt drops by default. The bot subscribes to no
        # other event, and bot/slack/auto.py takes only that notice's type, posted by it.
        ignoring_self_events_enabled=False,
    )
    ctx = BotContext(
        settings=settings,
        fleet=fleet if isinstance(fleet, Fleet) else Fleet.around(fleet),
        client=client,
        min_update_interval=min_update_interval,
    )
    ctx.fleet.speak("slack")  # refusals suggest slash commands, under their configured names
    app.use(PooledAnswers(ctx))
    app.use(Strangers(ctx))  # every door: changes only from the bot's own workspace

    commands.register(app, ctx)
    actions.register(app, ctx)
    guards.register(app, ctx)
    pausing.register(app, ctx)
    auto.register(app, ctx)
    return app, ctx
