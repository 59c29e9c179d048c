"""Builds the Bolt AsyncApp and registers its listeners; it only wires."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import mrkdwn
from bot.deploy.engine import Engine, Plan
from bot.deploy.errors import DeployError
from bot.deploy.ledger import DeploymentRecord, Requester
from bot.settings import Settings
from bot.slack import bolt_fixes
from bot.slack.access import Access
from bot.slack.progress import ProgressBoard, ProgressMessage, slack_problem

log = logging.getLogger("deploybot.slack")

Reply = Callable[..., Awaitable[Any]]


@dataclass
class BotContext:
    """What every listener needs: settings, the engine, the rules, the live messages."""

    settings: Settings
    engine: Engine
    client: AsyncWebClient
    access: Access
    board: ProgressBoard
    bot_name: str = "deploybot"  # the bot's Slack handle, from auth.test when Slack answered
    _reads: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # One lock check → post → start at a time in this process: a second /deploy sees the
    # first's lock and is refused before posting anything.
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def launch(
        self, plan: Callable[[], Plan], channel: str, reply: Reply
    ) -> DeploymentRecord | None:
        """Plan (refuse before anything), post the deployment's message, then start it.

        The message exists before any AWS write and the record carries its place: if Slack
        will not take the message, nothing is deployed and the person is told what to do."""
        checked = await asyncio.to_thread(plan)
        async with self._starting:
            # Another start may have taken the lock while this one planned: refuse before
            # posting anything (one cheap read when the holder is followed here).
            await asyncio.to_thread(self.engine.check_lock)
            try:
                progress = await self.board.open(checked, channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "cannot post in %s (%s): not deploying",
                    channel,
                    slack_problem(exc),
                    extra={"who": checked.requester.who, "tag": checked.tag},
                )
                await _safe_reply(reply, self._cannot_post(exc, checked))
                return None
            try:
                record = await asyncio.to_thread(self.engine.start, checked, progress.ref)
            except DeployError as exc:
                await _refused_after_post(progress, checked, exc.message)
                raise
            except BaseException:
                await _refused_after_post(
                    progress, checked, "deploybot failed before changing anything; see its logs"
                )
                raise
        self.board.follow(progress, record)
        return record

    def _cannot_post(self, exc: BaseException, plan: Plan) -> str:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        what = "Nothing was deployed"
        again = f"then run the command again ({plan.kind} {plan.tag})"
        if error == "not_in_channel":
            return (
                f"{what}: I am not in this channel, so nobody here could follow the rollout. "
                f"Invite me with `/invite @{self.bot_name}`, {again}."
            )
        if error in ("channel_not_found", "is_archived", "restricted_action"):
            return (
                f"{what}: I cannot post in this conversation ({error}; a DM or a private "
                f"channel I am not in). Use a channel I am in, or invite me with "
                f"`/invite @{self.bot_name}`, {again}."
            )
        return (
            f"{what}: Slack did not take the deployment's message ({slack_problem(exc)}). "
            "Try again in a moment."
        )

    async def read(self, key: str, fetch: Callable[[], Any]) -> Any:
        """Run the engine read ``fetch`` in a thread, shared by every caller asking for
        ``key`` while it runs: fifty people asking for the status at once cost one status read."""
        pending = self._reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(fetch))
            self._reads[key] = pending
            pending.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(pending)

    def run(
        self, job: Awaitable[Any], reply: Reply, what: str, who: Requester | None = None
    ) -> None:
        """Run ``job`` in the background: a listener acks and returns at once."""
        self.board.spawn(self._guard(job, reply, what, who), name=what)

    async def _guard(
        self, job: Awaitable[Any], reply: Reply, what: str, who: Requester | None
    ) -> None:
        extra = {"who": who.who, "source": who.source} if who else {}
        try:
            await job
        except DeployError as exc:
            log.info("%s refused: %s", what, exc.message, extra=extra)
            # The engine's words quote what people typed (tags, names): text, not mrkdwn.
            await _safe_reply(reply, mrkdwn.escape(exc.message))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what, extra=extra)
            await _safe_reply(
                reply,
                f"Something went wrong on deploybot's side while handling {what}; it is in the "
                "bot's logs. Nothing was changed unless a progress message says so.",
            )


async def _refused_after_post(progress: ProgressMessage, plan: Plan, reason: str) -> None:
    try:
        await progress.refused(plan, reason)
    except Exception:
        log.exception("could not mark the message refused")


async def _safe_reply(reply: Reply, text: str) -> None:
    try:
        await reply(text=text, response_type="ephemeral", replace_original=False)
    except Exception:
        log.exception("could not tell the user: %s", text)


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
    engine: Engine,
    *,
    socket_mode: bool,
    min_update_interval: float = 2.0,
) -> tuple[AsyncApp, BotContext]:
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
    )
    ctx = BotContext(
        settings=settings,
        engine=engine,
        client=client,
        access=Access.from_settings(settings),
        board=ProgressBoard(client, engine, min_interval=min_update_interval),
    )
    from bot.slack import actions, commands, guards

    commands.register(app, ctx)
    actions.register(app, ctx)
    guards.register(app, ctx)
    return app, ctx
