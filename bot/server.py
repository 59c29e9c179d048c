"""The bot as a server: HTTP mode (POST /slack/events) or Socket Mode; /healthz and /readyz.

Socket Mode is the default (the bot runs on Fargate with no public endpoint). /healthz is the
liveness the container health checks use: 200 while the process, its event loop and the
engine's follower work, whatever Slack does, since a restart cannot bring Slack back and would
interrupt every rollout the bot follows; its body says whether Slack is connected. /readyz is
503 while the socket is down, for whatever should wait for a bot that can hear Slack.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from bot import logs, mrkdwn
from bot.deploy.engine import Engine
from bot.errors import DeployError
from bot.exit_codes import ExitCode
from bot.fleet import Fleet
from bot.http_guard import BodyLimit, slack_refusal
from bot.notify import Notifier
from bot.settings import Settings, describe_errors, load_settings
from bot.slack import digest, guards
from bot.slack.announce import channel_of
from bot.slack.app import build_app
from bot.slack.groups import Groups, config_problem
from bot.slack.reload import ConfigWatch
from bot.slack.requester import RequesterNotices

log = logging.getLogger("deploybot.server")


def missing_settings(settings: Settings, socket_mode: bool) -> list[str]:
    needed = ["slack_bot_token", "slack_app_token" if socket_mode else "slack_signing_secret"]
    return [name.upper() for name in needed if settings.secret(name) is None]


def create_app(
    settings: Settings,
    *,
    socket_mode: bool,
    engine: Engine | None = None,
    min_update_interval: float = 2.0,
    fleet: Fleet | None = None,
) -> FastAPI:
    """The FastAPI app of the bot; in Socket Mode it also owns the socket's lifetime.
    ``fleet``: every target's engine (default: the settings' targets); ``engine``: a single
    target's engine made elsewhere (the fleet is then built around it)."""
    if fleet is None:
        fleet = Fleet.around(engine) if engine is not None else Fleet(settings)
    bolt, ctx = build_app(
        settings, fleet, socket_mode=socket_mode, min_update_interval=min_update_interval
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        socket: AsyncSocketModeHandler | None = None
        connecting: asyncio.Task[None] | None = None
        if socket_mode:
            # Its aiohttp session must be made inside the running loop. Each replica opens its
            # own connection and Slack sends each envelope to one of the app's open connections
            # (bolt-python #448, #1071); on Slack's {"type": "disconnect"} (a refresh or a
            # warning) slack_sdk opens a new one by itself (socket_mode/async_client.py), and
            # meanwhile Slack sends to the other replicas' connections.
            socket = AsyncSocketModeHandler(bolt, app_token=settings.secret("slack_app_token"))
            app.state.socket = socket
            connecting = asyncio.create_task(_connect(socket))
        try:
            auth = await ctx.client.auth_test()
            log.info("connected to Slack as %s", auth.get("user"), extra={"team": auth.get("team")})
            ctx.bot_name = str(auth.get("user") or ctx.bot_name)
            ctx.learn_home(auth.data if isinstance(auth.data, dict) else {})
        except SlackApiError as exc:
            log.error("Slack rejected the bot token: %s", exc.response.get("error"))
        except Exception as exc:  # Slack unreachable: the bot stays up and posts once it answers
            log.error("could not reach Slack at %s: %s", settings.slack_api_base, exc)
        # The members of the user groups deployers/approvers name, before the first request
        # (within seconds: Slack slow, the loop reads them again), then every
        # SLACK_GROUPS_SECONDS.
        groups = Groups(ctx)
        ctx.groups = groups
        try:
            await asyncio.wait_for(groups.read(), timeout=10)
        except Exception as exc:
            log.warning("Slack's user groups not read yet: %s", exc or "timeout")
        # Each target's supervisor runs its loops (AWS only: open deployments followed,
        # those nobody follows adopted, the queue's turns) in the background, and the Slack
        # board and the queue's messages render what it says (Slack, when it answers): the
        # bot serves at once, whatever AWS and Slack do.
        # Often enough to see a replica's lapsed follower lease within a third of a lease.
        every = min(6 * settings.rollout_poll_seconds, settings.lock_lease_seconds / 3)
        following = []
        notices = []

        async def say(channel: str, text: str) -> None:
            await ctx.client.chat_postMessage(channel=channel, text=mrkdwn.escape(text))

        # Who hears what (a target's notify and webhooks), from each supervisor's events.
        notifier = Notifier(lambda: ctx.fleet.targets, ctx.fleet.engine, say)
        for target in ctx.fleet.targets:
            for hook in target.webhooks:
                if not os.environ.get(hook.secret_env):
                    await config_problem(
                        ctx,
                        f"targets.{target.name}.webhooks: {hook.secret_env} is not set in the "
                        f"bot's environment, so nothing is sent to {hook.url}",
                    )
        for target, board in ctx.boards():
            supervisor = ctx.fleet.supervisor(target)
            notifier.watch(target.name, supervisor.engine)
            board.fallback_channel = channel_of(settings, target)
            board.subscribe(supervisor)
            # The requester's DM, at the outcome (once, whatever the replicas).
            notice = RequesterNotices(ctx.client, supervisor.engine, board.where)
            notice.subscribe(supervisor)
            notices.append(notice)
            guards.render_queue(ctx, target, supervisor)
            following.append(
                asyncio.create_task(
                    supervisor.run(
                        pass_every=max(1.0, every),
                        outside_every=settings.outside_check_seconds,
                        queue_every=max(1.0, 6 * settings.rollout_poll_seconds),
                    )
                )
            )
        # The weekly digests of the targets that have one (one replica posts each).
        following.append(asyncio.create_task(digest.digests_forever(ctx)))
        following.append(asyncio.create_task(groups.forever()))
        # The configuration read again every CONFIG_CHECK_SECONDS (and on /deploy reload).
        ctx.watch = ConfigWatch(ctx)
        following.append(asyncio.create_task(ctx.watch.forever()))
        try:
            yield
        finally:
            for task in following:
                task.cancel()
            if connecting is not None:
                connecting.cancel()
            if socket is not None:
                await socket.close_async()
            for notice in notices:
                await notice.close()
            await notifier.close()
            await ctx.close()
            await asyncio.to_thread(fleet.close)

    # Only POST /slack/events and GET /healthz are served (DESIGN.md): no OpenAPI, no docs.
    app = FastAPI(
        title="deploybot", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.add_middleware(BodyLimit)
    app.state.ctx = ctx
    app.state.socket = None
    handler = AsyncSlackRequestHandler(bolt)

    async def slack_state() -> str:
        if not socket_mode:
            return "http"  # Slack calls in; nothing to be connected
        socket: AsyncSocketModeHandler | None = app.state.socket
        return "connected" if socket and await socket.client.is_connected() else "disconnected"

    @app.get("/healthz")
    async def healthz() -> Response:
        # Answering at all shows the process and its event loop work; the follower is the
        # engine's poller thread, which closes records and releases locks. Slack's state is
        # reported, never judged: a Slack outage must not make ECS replace the task.
        follower = fleet.health()
        body = {
            "status": "ok" if follower.ok else "follower stuck",
            "mode": "socket" if socket_mode else "http",
            "slack": await slack_state(),
            "following": follower.following,
            "follower_alive": follower.alive,
            "seconds_since_follower_pass": follower.seconds_since_pass,
        }
        return JSONResponse(body, status_code=200 if follower.ok else 503)

    @app.get("/readyz")
    async def readyz() -> Response:
        slack = await slack_state()
        if slack == "disconnected":
            return JSONResponse({"status": "socket not connected", "slack": slack}, 503)
        return JSONResponse({"status": "ready", "slack": slack})

    if not socket_mode:
        verifier = SignatureVerifier(settings.secret("slack_signing_secret") or "-")

        @app.post("/slack/events")
        async def slack_events(request: Request) -> Response:
            refused = slack_refusal(verifier, await request.body(), request.headers)
            if refused is not None:
                return PlainTextResponse(refused[1], status_code=refused[0])
            return await handler.handle(request)

    return app


async def _connect(socket: AsyncSocketModeHandler) -> None:
    """Open the socket, retrying with backoff while Slack cannot be reached; slack_sdk's
    client reconnects by itself once it has connected."""
    delay = 1.0
    while True:
        try:
            await socket.connect_async()
            log.info("Socket Mode connected")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Socket Mode connection failed (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


# Allocations between two collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the answers' path, once the bot is built.

    What the bot holds for its whole life (boto3's service models, Bolt, FastAPI: some 130,000
    objects) was traversed by every full collection: under a burst of slash commands one took
    64-125 ms, every request in flight waiting behind it, and the collections of all
    generations cost 0.7 ms a request (BENCHMARKS.md, "Slash commands under a burst"). ``gc.freeze``
    moves what exists now to a permanent generation that collections skip ("to speed up
    collection", https://docs.python.org/3/library/gc.html#gc.freeze); a larger youngest
    generation makes collections rarer. Garbage left from start-up is collected first."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def serve(http: bool, host: str, port: int) -> int:
    """``deploybot serve``: run until SIGTERM or Ctrl-C."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"deploybot: bad configuration: {describe_errors(exc)}", file=sys.stderr)
        return ExitCode.REFUSED
    logs.setup(
        secrets=filter(
            None,
            (
                settings.secret("slack_bot_token"),
                settings.secret("slack_app_token"),
                settings.secret("slack_signing_secret"),
                settings.secret("github_token"),
            ),
        ),
        service=f"{settings.ecs_cluster}/{settings.ecs_service}",
    )
    missing = missing_settings(settings, socket_mode=not http)
    if missing:
        print(
            f"deploybot: set {' and '.join(missing)} to serve "
            f"({'HTTP' if http else 'Socket'} Mode).",
            file=sys.stderr,
        )
        return ExitCode.REFUSED
    try:
        # deploybot.toml is read here: a mistake stops the bot before it serves, naming the
        # file and the key of each problem.
        app = create_app(settings, socket_mode=not http)
    except DeployError as exc:
        print(f"deploybot: bad configuration:\n{exc.message}", file=sys.stderr)
        return ExitCode.REFUSED
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown; a no-op handler makes that exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    settle_garbage_collector()
    uvicorn.Server(config).run()
    return ExitCode.OK
